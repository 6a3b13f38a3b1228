"""Numerical code paths: pin the choices that move float results between x86 CPUs, and record them.

Why (measured, reports/code-paths.md): the same commit gives different LS-4 toy counts on an Intel
Xeon and an AMD EPYC, and different counts again on the AMD machine with `MKL_CBWR=COMPATIBLE`. Two
libraries choose their kernels by the CPU they run on:
  * oneMKL (BLAS/LAPACK behind torch's matmul, bmm, einsum, linalg.qr on CPU) dispatches on the ISA
    and vendor. Its conditional-numerical-reproducibility (CNR) branch `MKL_CBWR=COMPATIBLE` (SSE2,
    no rcpps/rsqrtps) is the only fixed branch MKL supports on both Intel and non-Intel CPUs; any
    other named branch (AVX2, AVX512) silently becomes AUTO on AMD (MKL developer guide; measured
    here: MKL_CBWR=AVX2 reads back as AUTO on an AMD EPYC).
  * ATen's own vectorised kernels (elementwise, reductions) are compiled per ISA and picked from
    `ATEN_CPU_CAPABILITY` or else the best the CPU has (avx512 on most Xeons, avx2 on AMD Zen 2/3);
    e.g. addcmul contracts to an FMA in the avx2 kernel and not in the default one.
`pin_code_paths` sets `MKL_CBWR=COMPATIBLE` and, on CPUs that have AVX2 + FMA, `ATEN_CPU_CAPABILITY=avx2`
(the widest kernel set every current x86 server CPU runs), unless the user set them: an explicit value
is respected and recorded as the user's. Both variables are read lazily (MKL at its first call, ATen
at its first dispatched kernel), so setting os.environ after `import torch` but before the first
tensor op works (measured); spawned workers inherit it. Set too late, they are silently ignored:
`code_path_record` therefore reads back what is in force (mkl_cbwr_get, get_cpu_capability) instead of
trusting the environment, and `pin_code_paths` reports `in_force: False` when they disagree.

Not pinned: thread counts (the suite sets them per test), oneDNN (no float64 path here; it has its own
ISA dispatch, `ONEDNN_MAX_CPU_ISA`), libm/SLEEF transcendental kernels, and anything on CUDA.
"""
from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path
from typing import MutableMapping

__all__ = ["PINS", "MKL_BRANCHES", "pin_code_paths", "code_path_record", "session_code_path", "cpu_info",
           "mkl_branch", "code_path_key"]

# variable -> value the suite pins it to when the user has not set it
PINS = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}

# mkl_cbwr.h named constants (oneMKL developer reference, "Named Constants for CNR Control")
MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 5: "SSE3", 6: "SSSE3",
                7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512",
                13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_MKL_CBWR_BRANCH = 1  # mkl_cbwr_get(MKL_CBWR_BRANCH): the branch part of the CNR setting
_LAST_PIN: dict | None = None  # what this process's pin_code_paths() call did (for the report header)
_SET_HERE: dict[str, str] = {}  # variables this process pinned in os.environ (a later call is not "the user")


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """{'model', 'vendor', 'flags'} of this CPU (flags: the ISA extensions that pick kernels)."""
    text = ""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        pass
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    wanted = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512vl", "avx512bw", "avx512dq", "amx_tile")
    return {"model": fields.get("model name") or platform.processor() or platform.machine(),
            "vendor": fields.get("vendor_id", ""), "flags": [f for f in wanted if f in flags]}


def _mkl_lib():
    """libtorch_cpu with MKL linked in statically (its service functions are exported), or None."""
    import torch
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        path = Path(torch.__file__).parent / "lib" / name
        if path.exists():
            try:
                lib = ctypes.CDLL(str(path))
                lib.mkl_serv_cbwr_get
                return lib
            except (OSError, AttributeError):
                return None
    return None


def mkl_branch() -> dict:
    """The MKL CNR branch in force ('COMPATIBLE', 'AUTO', 'BRANCH_OFF' = CNR off, ...) and the branch
    AUTO picks on this CPU; {'branch': None} when MKL's service functions are not reachable.
    Reading it initialises MKL's CNR state: after this call, MKL_CBWR changes have no effect."""
    lib = _mkl_lib()
    if lib is None:
        return {"branch": None, "auto_branch": None}
    return {"branch": MKL_BRANCHES.get(lib.mkl_serv_cbwr_get(_MKL_CBWR_BRANCH), "?"),
            "auto_branch": MKL_BRANCHES.get(lib.mkl_serv_cbwr_get_auto_branch(), "?")}


def _mkl_version() -> str | None:
    import torch
    for line in torch.__config__.show().splitlines():
        if "Math Kernel Library Version" in line:
            return line.split("Version", 1)[1].strip().split(" for ")[0]
    return None


def code_path_record(env: MutableMapping[str, str] | None = None, sources: dict | None = None) -> dict:
    """What decides the float results of this process: CPU, ISA capability ATen dispatches to, MKL
    branch in force, thread counts, library versions, and the code-path variables with their source
    ('user' = set before the suite ran, 'pinned' = set by pin_code_paths, 'unset')."""
    import torch
    env = os.environ if env is None else env
    sources = sources or {}
    cpu = cpu_info()
    return {"cpu": cpu["model"], "cpu_vendor": cpu["vendor"], "cpu_flags": cpu["flags"],
            "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl": mkl_branch() | {"available": torch.backends.mkl.is_available(), "version": _mkl_version()},
            "mkldnn_available": torch.backends.mkldnn.is_available(),
            "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                        **{k: env.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}},
            "env": {k: {"value": env.get(k), "source": sources.get(k, "user" if env.get(k) else "unset")}
                    for k in PINS},
            "versions": {"torch": str(torch.__version__), "python": platform.python_version()}}


def pin_code_paths(env: MutableMapping[str, str] | None = None, *, pins: dict | None = None,
                   cpuinfo: str | Path = "/proc/cpuinfo", record: bool = True) -> dict:
    """Set each of `pins` (default PINS) in `env` (default os.environ) unless the user already set it
    to a non-empty value; return {'set': {var: value set by us}, 'user': {var: user value},
    'skipped': {var: why}, 'record': code_path_record(...), 'in_force': bool}.

    Call it before torch runs its first kernel (MKL and ATen latch their choice then); it imports
    torch but runs no kernel. ATEN_CPU_CAPABILITY=avx2 is skipped on a CPU without AVX2 + FMA (the
    default capability is then the only one available anyway). `in_force` is False when a pinned
    value did not take effect (pinned too late): results are still valid, only not pinned."""
    env = os.environ if env is None else env
    pins = dict(PINS if pins is None else pins)
    flags = set(cpu_info(cpuinfo)["flags"])
    out = {"set": {}, "user": {}, "skipped": {}}
    for var, value in pins.items():
        ours = env is os.environ and _SET_HERE.get(var) == env.get(var)   # a repeat call sees its own pin
        if env.get(var) and not ours:
            out["user"][var] = env[var]
        elif var == "ATEN_CPU_CAPABILITY" and value == "avx2" and not {"avx2", "fma"} <= flags:
            out["skipped"][var] = "CPU lacks AVX2/FMA"
        else:
            env[var] = value
            out["set"][var] = value
            if env is os.environ:
                _SET_HERE[var] = value
    out["sources"] = {k: "pinned" for k in out["set"]} | {k: "user" for k in out["user"]}
    if record:
        out["record"] = code_path_record(env, out["sources"])
        out["in_force"] = _in_force(out["record"], out["set"])
        if env is os.environ:
            global _LAST_PIN
            _LAST_PIN = out
    return out


def session_code_path() -> dict:
    """The report's session-header entry: `code_path_record` now (threads as the session set them)
    plus whether pin_code_paths ran in this process and took effect. Call it when the header is written."""
    pin = _LAST_PIN
    rec = code_path_record(os.environ, pin["sources"] if pin else None)
    rec["pinned"] = pin is not None
    rec["pin_in_force"] = None if pin is None else _in_force(rec, pin["set"])
    return rec


def _in_force(rec: dict, pinned: dict) -> bool:
    """Did the values we set take effect (read back from MKL and ATen)?"""
    ok = True
    if "MKL_CBWR" in pinned and rec["mkl"]["branch"] is not None:
        ok &= rec["mkl"]["branch"] == pinned["MKL_CBWR"].split(",")[0].upper()
    if "ATEN_CPU_CAPABILITY" in pinned:
        ok &= rec["aten_cpu_capability"].lower() == pinned["ATEN_CPU_CAPABILITY"].lower()
    return bool(ok)


def code_path_key(*, threads: bool = True) -> str:
    """The parts of the code path in force that change numbers, as one string for cache keys: the MKL
    branch and ATen kernel set read back (not the environment), and the intra-op thread count unless the
    computation fixes its own (training runs on fixtures.build.BUILD_THREADS)."""
    rec = code_path_record()
    key = f"mkl={(rec.get('mkl') or {}).get('branch')};aten={rec.get('aten_cpu_capability')}"
    return key + (f";threads={(rec.get('threads') or {}).get('intra_op')}" if threads else "")
