"""core.numerics: the pinned code path gives bit-identical numbers where it should, and verdicts never
depend on the code path.

A small fixed computation that goes through the suite's numerics (float64 Adam on the n-wedge with
QR/einsum/matmul through MKL and ATen's vectorised elementwise and reduction kernels, as LS-4 does;
float32 MLP SGD with BN through MKL sgemm, as the cpu tier does) runs in subprocesses under several
code paths. Asserted:
  (a) with pin_code_paths() the numbers are bit-identical whether the pin comes from the environment
      before Python starts or from inside the process after `import torch` (the entry points pin
      in-process), and the float64 connector also across torch thread counts 1/2. The float32 MLP is
      compared at one thread count only: its bits move with the thread count even on the pinned path
      (measured, reports/code-paths.md), which is why the suite fixes threads (--torch-threads 1,
      BUILD_THREADS = 1) and the code-path record reports them;
  (b) unpinned code paths (MKL CNR off, MKL_CBWR=AVX2 (= AUTO on non-Intel CPUs), ATen default
      kernels) may move the numbers, but the verdicts of rules fed those numbers agree with the
      pinned run's;
  (c) the probe is sensitive: some unpinned path moves the bits (else (a) would prove nothing).
Run `python core/tests/test_numerics.py` to print the probe's record under the current environment.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------- the probe (runs in a subprocess)
def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _connector_probe() -> dict:
    """LS-4 in miniature: optima on a D = 30, n = 26 wedge, m-connectors for m = 1..4, 6 each."""
    import torch
    from core import connectors as C
    from core.toys import wedge as W
    D, n, reps, ms, g = 30, 26, 6, (1, 2, 3, 4), torch.Generator().manual_seed(404)
    grad = functools.partial(W.wedge_grad, n=n, scratch=C.Scratch())
    starts = [torch.randn(reps, m + 1, D, generator=g, dtype=torch.float64) for m in ms]
    optima = C.descend(grad, torch.cat([x.reshape(-1, D) for x in starts]), C.OptimConfig(steps=150, lr=0.05))
    groups = [o.reshape(x.shape) for o, x in zip(optima.split([x.shape[0] * x.shape[1] for x in starts]), starts)]
    cons = C.build_connectors(groups, loss_fn=functools.partial(W.wedge_loss, n=n), points_per_segment=21,
                              segment_grad=C.segments_grad(grad, 21), config=C.OptimConfig(steps=200, lr=0.01))
    centres = torch.cat([c.centre for c in cons])
    counts = W.pinned_count(centres, 1e-3).double()
    return {"m": [float(m) for m in ms for _ in range(reps)], "count": counts.tolist(),
            "barrier": torch.cat([c.barriers.amax(-1) for c in cons]).tolist(), "digest": _digest([centres])}


def _mlp_probe() -> dict:
    """cpu tier in miniature: MLP 40-64(BN)-10, SGD momentum 0.9, L2 3e-4, 20 steps of batch 128."""
    import torch
    import torch.nn.functional as F
    from core.models import build_model
    g = torch.Generator().manual_seed(7)
    x = torch.randn(512, 40, generator=g)
    y = (x @ torch.randn(40, 10, generator=g)).argmax(-1)
    model = build_model("mlp", num_classes=10, input_shape=(40,), seed=0, bn=True, widths=(64,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    losses = []
    for step in range(20):
        idx = torch.randperm(512, generator=g)[:128]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"losses": losses, "digest": _digest([p for p in model.parameters()])}


def probe(threads: int, pin: bool) -> dict:
    if pin:
        from core.numerics import pin_code_paths
        pin_code_paths()
    import torch
    torch.set_num_threads(threads)
    out = {"connector": _connector_probe(), "mlp": _mlp_probe()}
    from core.numerics import code_path_record
    rec = code_path_record()
    out["path"] = {"mkl": rec["mkl"]["branch"], "aten": rec["aten_cpu_capability"], "threads": threads}
    return out


# ---------------------------------------------------------------- running it under code paths
# name -> (environment, torch threads, pin inside the process). OMP_WAIT_POLICY=PASSIVE only stops idle
# OpenMP threads spinning (3x the wall time on 2 busy cores, measured); it does not change results.
PINNED = {"pin_t1": ({}, 1, True), "pin_t2": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2, True),
          "pin_exported": ({"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}, 1, False)}
UNPINNED = {"default": ({}, 1, False), "cbwr_avx2": ({"MKL_CBWR": "AVX2"}, 1, False),
            "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, 1, False)}
TIMEOUT_S = 600  # generous: on 2 cores shared with other jobs one probe measured 6 s CPU but 45 s wall


def _start(env_over: dict, threads: int, pin: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | env_over
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = [sys.executable, __file__, "--threads", str(threads)] + (["--pin"] if pin else [])
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def results() -> dict:
    """Every variant's probe record; the subprocesses run at once (each is one small process)."""
    _needs_x86_mkl()
    procs = {name: _start(*spec) for name, spec in {**PINNED, **UNPINNED}.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, f"{name}: {stderr[-2000:]}"
        out[name] = json.loads(stdout.strip().splitlines()[-1])
    return out


def _needs_x86_mkl():
    from core.numerics import cpu_info
    import torch
    if not torch.backends.mkl.is_available() or not {"avx2", "fma"} <= set(cpu_info()["flags"]):
        pytest.skip("the pins need torch with MKL on an x86 CPU with AVX2/FMA")


def _verdicts(r: dict) -> dict:
    """Rules fed the probe's numbers (the rule types LS-4 and the cpu tier use)."""
    import numpy as np
    from core import stats
    c, losses = r["connector"], np.asarray(r["mlp"]["losses"])
    return {"count_trend": stats.trend(c["m"], c["count"], alpha=0.01).verdict,
            "mlp_loss_falls": stats.toy_tolerance(losses[:5].mean() - losses[-5:], alpha=0.01, threshold=0.0).verdict}


def test_pinned_path_is_bit_identical(results):
    runs = {k: results[k] for k in PINNED}
    for name, r in runs.items():
        assert (r["path"]["mkl"], r["path"]["aten"]) == ("COMPATIBLE", "AVX2"), (name, r["path"])
    for part, names in (("connector", list(PINNED)), ("mlp", ["pin_t1", "pin_exported"])):
        digests = {k: runs[k][part]["digest"] for k in names}
        assert len(set(digests.values())) == 1, f"{part}: pinned runs differ: {digests}"


def test_verdicts_agree_across_code_paths(results):
    ref = _verdicts(results["pin_t1"])
    assert ref == {"count_trend": "replicated", "mlp_loss_falls": "replicated"}, ref
    for name in list(PINNED) + list(UNPINNED):
        assert _verdicts(results[name]) == ref, name


def test_probe_is_sensitive_to_code_path(results):
    pinned = results["pin_t1"]
    moved = [k for k in UNPINNED if results[k]["connector"]["digest"] != pinned["connector"]["digest"]
             or results[k]["mlp"]["digest"] != pinned["mlp"]["digest"]]
    assert moved, "no unpinned code path moved the probe's bits: the identity test above would be vacuous"


# ---------------------------------------------------------------- pin_code_paths itself (in-process, no kernels)
def test_pin_sets_unset_variables_and_records_them(tmp_path):
    from core.numerics import PINS, pin_code_paths
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: sse4_2 avx fma avx2 avx512f\n")
    env = {"PATH": "/bin"}
    out = pin_code_paths(env, cpuinfo=cpuinfo, record=False)
    assert out["set"] == PINS and out["user"] == {} and {k: env[k] for k in PINS} == PINS


def test_pin_respects_explicit_user_values(tmp_path):
    from core.numerics import code_path_record, pin_code_paths
    env = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": ""}
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: avx fma avx2\n")
    out = pin_code_paths(env, cpuinfo=cpuinfo, record=False)
    assert env["MKL_CBWR"] == "AVX2" and out["user"] == {"MKL_CBWR": "AVX2"}
    assert out["set"] == {"ATEN_CPU_CAPABILITY": "avx2"}  # empty counts as unset
    rec = code_path_record(env, {"MKL_CBWR": "user", "ATEN_CPU_CAPABILITY": "pinned"})
    assert rec["env"] == {"MKL_CBWR": {"value": "AVX2", "source": "user"},
                          "ATEN_CPU_CAPABILITY": {"value": "avx2", "source": "pinned"}}


def test_pin_skips_avx2_capability_without_avx2(tmp_path):
    from core.numerics import pin_code_paths
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: sse2 sse4_2 avx\n")
    env: dict = {}
    out = pin_code_paths(env, cpuinfo=cpuinfo, record=False)
    assert "ATEN_CPU_CAPABILITY" not in env and "ATEN_CPU_CAPABILITY" in out["skipped"]
    assert env["MKL_CBWR"] == "COMPATIBLE"


def test_record_has_the_session_header_fields():
    from core.numerics import code_path_record
    rec = code_path_record({"MKL_CBWR": "COMPATIBLE"}, {"MKL_CBWR": "pinned"})
    assert {"cpu", "cpu_vendor", "cpu_flags", "aten_cpu_capability", "mkl", "threads", "env", "versions"} <= set(rec)
    assert {"branch", "auto_branch", "version"} <= set(rec["mkl"])
    assert rec["env"]["MKL_CBWR"] == {"value": "COMPATIBLE", "source": "pinned"}
    assert rec["env"]["ATEN_CPU_CAPABILITY"]["source"] == "unset"
    json.dumps(rec)  # goes into claims.json as is


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pin", action="store_true")
    a = p.parse_args()
    print(json.dumps(probe(a.threads, a.pin)))


def test_code_path_record_is_plain_data_an_artifact_can_store(tmp_path):
    """Artifacts carry the record and are loaded with torch.load(weights_only=True): every value must be
    a plain str/int/float/bool/None/list/dict (a TorchVersion made every cached artifact 'corrupt')."""
    import torch
    from core.numerics import code_path_record
    rec = code_path_record()

    def plain(v):
        if isinstance(v, dict):
            return all(type(k) is str and plain(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)
    assert plain(rec), rec
    torch.save({"code_path": rec}, tmp_path / "a.pt")
    assert torch.load(tmp_path / "a.pt", weights_only=True)["code_path"] == rec


def test_a_repeated_pin_still_reports_pinned_not_user(monkeypatch):
    """conftest pins once; a later call in the same process (a test, a CLI entry) must not file the
    process's own pin under 'user' in the report header."""
    from core import numerics as N
    for var in N.PINS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(N, "_SET_HERE", {})
    first = N.pin_code_paths(record=False)
    second = N.pin_code_paths(record=False)
    assert first["sources"] == second["sources"] and set(second["sources"].values()) <= {"pinned"}
    monkeypatch.setenv("MKL_CBWR", "AVX2")                      # the user's own value stays theirs
    assert N.pin_code_paths(record=False)["sources"]["MKL_CBWR"] == "user"
