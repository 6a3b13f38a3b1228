"""How far numbers move between numerical code paths (MKL CNR branch, ATen ISA capability, threads).

    python benchmarks/code_paths.py sweep ls4 DIR [--variants a,b,...]   # one subprocess per variant
    python benchmarks/code_paths.py sweep mlp DIR
    python benchmarks/code_paths.py compare DIR [--reference NAME=claims.json ...]

`run ls4|mlp OUT.json [--threads N] [--pin]` is one measurement in this process: LS-4's toy
computation (claims/test_ls_toy.py::_ls4('wedge'): per-replicate counts and barriers) or one short
cpu-tier training run (MNIST-1D MLP with BN, the cpu recipe cut to 6 epochs: final weights, losses).
`--pin` calls core.numerics.pin_code_paths() inside the process (after `import torch`, before the
first kernel) instead of taking the variables from the environment. Results: reports/code-paths.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (environment overrides, torch intra-op threads, pin inside the process)
VARIANTS = {
    "default": ({}, 1, False),
    "default_t2": ({}, 2, False),
    "cbwr_avx2": ({"MKL_CBWR": "AVX2"}, 1, False),
    "cbwr_compatible": ({"MKL_CBWR": "COMPATIBLE"}, 1, False),
    "cbwr_compatible_t2": ({"MKL_CBWR": "COMPATIBLE"}, 2, False),
    "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, 1, False),
    "cbwr_compatible_aten_default": ({"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}, 1, False),
    "pinned_in_process": ({}, 1, True),
    "pinned_in_process_t2": ({}, 2, True),
}
CLEARED = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_ls4() -> dict:
    from claims.test_ls_toy import _ls4
    r = _ls4("wedge")
    return {"m": r["m"].tolist(), "count": r["count"].tolist(), "barrier": r["barrier"].tolist(),
            "means": r["means"].tolist(), "digest": _digest([r["count"], r["barrier"]])}


def run_mlp(epochs: int = 6) -> dict:
    import torch
    from core.train import evaluate, train
    from fixtures.build import load_data, make_model
    from fixtures.specs import CPU_DATA, CPU_RECIPE, CPU_WIDTHS, RunSpec, kw
    cfg = dataclasses.replace(CPU_RECIPE, epochs=epochs, swa_start_epoch=epochs - 1, checkpoint_epochs=())
    spec = RunSpec("mnist1d", CPU_DATA, "mlp", kw(bn=True, widths=CPU_WIDTHS), cfg, 0)
    data = load_data(spec)
    model = make_model(spec, data)
    t0 = time.perf_counter()
    res = train(model, data, cfg, generator=torch.Generator().manual_seed(spec.train_seed))
    wall = time.perf_counter() - t0
    te = evaluate(model, data.test)
    params = [p for _, p in sorted(res.params.items())]
    return {"train_wall_s": wall, "train_loss": res.history["train_loss"], "test_loss": te["loss"],
            "test_acc": te["acc"], "digest": _digest(params),
            "first_param": params[0].flatten()[:4].tolist()}


def cmd_run(args) -> None:
    if args.pin:  # before any kernel: this is what the suite's entry points do
        from core.numerics import pin_code_paths
        pin_code_paths()
    import torch
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = run_ls4() if args.what == "ls4" else run_mlp()
    out["wall_s"] = time.perf_counter() - t0
    from core.numerics import code_path_record
    out["code_path"] = code_path_record()
    Path(args.out).write_text(json.dumps(out))


def cmd_sweep(args) -> None:
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for name in (args.variants.split(",") if args.variants else VARIANTS):
        env_over, threads, pin = VARIANTS[name]
        env = {k: v for k, v in os.environ.items() if k not in CLEARED} | env_over
        out = outdir / f"{args.what}-{name}.json"
        cmd = [sys.executable, __file__, "run", args.what, str(out), "--threads", str(threads)] + (["--pin"] if pin else [])
        t0, c0 = time.perf_counter(), _children_cpu()
        subprocess.run(cmd, env=env, cwd=ROOT, check=True)
        wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
        rec = json.loads(out.read_text()) | {"process_wall_s": wall, "cpu_s": cpu}
        out.write_text(json.dumps(rec))
        print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU (user+sys, workers included)", flush=True)


def _children_cpu() -> float:
    """user + sys seconds of finished child processes and the children they waited for."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _reference(path: str) -> dict:
    """LS-4 toy record (not the control) of a claims.json -> {'count', 'barrier'}."""
    for c in json.loads(Path(path).read_text())["claims"]:
        if c["id"] == "LS-4" and "control" not in c["case"]:
            return {"count": c["per_seed"]["count"], "barrier": c["per_seed"]["max_segment_barrier"],
                    "verdict": c["verdict"]}
    raise ValueError(f"{path}: no LS-4 toy record")


def cmd_compare(args) -> None:
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(args.outdir).glob("*.json"))}
    runs |= {name: _reference(path) for name, path in (r.split("=", 1) for r in args.reference)}
    names = list(runs)
    for key in ("count", "barrier", "digest"):
        have = [n for n in names if key in runs[n]]
        if len(have) < 2:
            continue
        print(f"\n{key}: differing entries (rows vs columns)")
        print("| | " + " | ".join(have) + " |")
        for a in have:
            cells = []
            for b in have:
                x, y = runs[a][key], runs[b][key]
                cells.append(str(int(x != y)) if key == "digest" else str(sum(u != v for u, v in zip(x, y))))
            print(f"| {a} | " + " | ".join(cells) + " |")
    print("\n| run | wall s | CPU s | extra |")
    for n in names:
        r = runs[n]
        extra = (f"means {['%.2f' % m for m in r['means']]}" if "means" in r else
                 f"test_loss {r.get('test_loss')} acc {r.get('test_acc')}" if "test_loss" in r else r.get("verdict", ""))
        cp = r.get("code_path", {})
        print(f"| {n} | {r.get('wall_s', float('nan')):.1f} | {r.get('cpu_s', float('nan')):.1f} | {extra} | {cp.get('mkl', {}).get('branch')} "
              f"{cp.get('aten_cpu_capability')} t={cp.get('threads', {}).get('intra_op')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("what", choices=["ls4", "mlp"])
    r.add_argument("out")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--pin", action="store_true")
    s = sub.add_parser("sweep")
    s.add_argument("what", choices=["ls4", "mlp"])
    s.add_argument("outdir")
    s.add_argument("--variants", default="")
    c = sub.add_parser("compare")
    c.add_argument("outdir")
    c.add_argument("--reference", action="append", default=[])
    args = p.parse_args()
    {"run": cmd_run, "sweep": cmd_sweep, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    main()
