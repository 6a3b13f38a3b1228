"""Points per second of batched 1-D loss scans vs the per-point loops common loss-landscape tools run.

    python benchmarks/bench_scan.py                      # defaults: 256 points, eval-mode BN
    python benchmarks/bench_scan.py --bn recompute       # BN statistics recomputed at every point
    python benchmarks/bench_scan.py --threads 1          # one thread: stable on a shared machine
    python benchmarks/bench_scan.py --sweep              # scan only: grid of (vectorize, chunk, rows)

Model and data (--model): "mlp" (default) is the cpu tier's AV network, `core.models` "mlp" 40-128-128-10
with BN (23k parameters, fixtures/specs.py CPU_WIDTHS); "cnn1d" the 1-D CNN with BN (10.8k parameters).
MNIST-1D from `core.data`, --n-train rows (default 1,000: the cpu tier's fixed evaluation subset,
registry eval_fraction 0.25 of 4,000); the same points (k random `paper` lines × steps) for all.
Contenders, measured interleaved (repeat r runs every contender once) so machine load hits all alike:
  batched       core.landscape.scan.scan_lines with its defaults: on CPU the points of a chunk one by one
                through functional_call, rows in cache-sized blocks, inference mode (vmap on accelerators)
  batched-vmap  the same forced to vmap over chunks of --chunk points (default 16)
  loop-tool   per point: copy the weights into the live model's parameters (Li et al.'s
              `net_plotter.set_weights`), eval(), evaluate the data in mini-batches of --loop-batch rows
              with a `.item()` per batch (their `evaluation.eval_loss`; PyHessian loops the same way)
  loop-full   per point: model.load_state_dict, one forward over all rows under inference_mode
              (the strongest plain loop: no Python per batch, no autograd)
  loss_landscapes (optional anchor, PyPI `loss-landscapes`): `random_line` with its `Loss` metric as
              documented (in-place weight updates, one full-data forward per point, autograd on;
              normalization="model" because its "filter" option divides by zero on zero-init BN β)
With --bn recompute every loop point runs `torch.optim.swa_utils.update_bn` over the train rows first.
Loops time --loop-points points (a prefix of the same points); the rate is points per second.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import update_bn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from core.data import load_dataset  # noqa: E402
from core.landscape.directions import sample_directions  # noqa: E402
from core.landscape.scan import line_points, scan_lines  # noqa: E402
from core.models import build_model  # noqa: E402
from fixtures.specs import CPU_WIDTHS  # noqa: E402

__all__ = ["BenchConfig", "main"]


@dataclass(frozen=True)
class BenchConfig:
    points: int = 256  # total scan points of the batched path (lines × steps)
    steps: int = 32  # points per line
    loop_points: int = 32  # points timed for each loop contender
    loop_batch: int = 128  # rows per forward in loop-tool (Li et al.'s default batch size)
    chunk: int | None = None  # points per vmap call (None: scan.py's memory plan)
    batch_size: int | None = None  # rows per forward in the batched path (None: memory plan)
    repeats: int = 3  # interleaved repetitions; medians are reported
    bn: str = "eval"  # "eval" | "recompute"
    n_train: int = 1000  # MNIST-1D rows evaluated per point (the cpu tier's eval subset)
    model: str = "mlp"  # "mlp" (the cpu-tier AV network) | "cnn1d"
    threads: int | None = None  # torch.set_num_threads (None: torch's default)
    seed: int = 0


def setup(cfg: BenchConfig):
    data = load_dataset("mnist1d", seed=cfg.seed, n_train=cfg.n_train)
    extra = {"widths": CPU_WIDTHS} if cfg.model == "mlp" else {}
    model = build_model(cfg.model, num_classes=data.num_classes, input_shape=data.input_shape, seed=cfg.seed,
                        bn=True, **extra).eval()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    k = max(1, cfg.points // cfg.steps)
    dirs = sample_directions(params, "paper", k, generator=torch.Generator().manual_seed(cfg.seed))
    steps = torch.linspace(-1.0, 1.0, cfg.steps)
    return model, params, buffers, dirs, steps, data.train.x, data.train.y


def _point(params, dirs, steps, i: int) -> dict:
    origins = {n: v.unsqueeze(0) for n, v in params.items()}
    return {n: v[0] for n, v in line_points(origins, dirs, steps, torch.tensor([i])).items()}


def loop_tool(model, params, buffers, dirs, steps, x, y, cfg) -> torch.Tensor:
    """Li et al.-style: set weights in place, eval(), mini-batches with .item() per batch."""
    net, out = copy.deepcopy(model), []
    for i in range(cfg.loop_points):
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(_point(params, dirs, steps, i)[name])
        if cfg.bn == "recompute":
            update_bn([x], net)
        net.eval()
        total = 0.0
        with torch.no_grad():
            for j in range(0, x.shape[0], cfg.loop_batch):
                xb, yb = x[j:j + cfg.loop_batch], y[j:j + cfg.loop_batch]
                total += F.cross_entropy(net(xb), yb).item() * xb.shape[0]
        out.append(total / x.shape[0])
    return torch.tensor(out, dtype=torch.float64)


def loop_full(model, params, buffers, dirs, steps, x, y, cfg) -> torch.Tensor:
    """load_state_dict per point, one full-data forward under inference_mode."""
    net, out = copy.deepcopy(model), []
    for i in range(cfg.loop_points):
        net.load_state_dict({**buffers, **_point(params, dirs, steps, i)})
        if cfg.bn == "recompute":
            update_bn([x], net)
        with torch.inference_mode():
            out.append(F.cross_entropy(net.eval()(x), y))
    return torch.stack(out).double()


def batched(model, params, buffers, dirs, steps, x, y, cfg) -> torch.Tensor:
    """scan_lines with its defaults (on CPU: points one by one, cache-sized row blocks)."""
    return scan_lines(model, params, buffers, dirs, steps, x, y, bn=cfg.bn, chunk=cfg.chunk,
                      batch_size=cfg.batch_size).flatten()


def batched_vmap(model, params, buffers, dirs, steps, x, y, cfg) -> torch.Tensor:
    """scan_lines forced to vmap over chunks of --chunk points (default 16; the accelerator strategy)."""
    return scan_lines(model, params, buffers, dirs, steps, x, y, bn=cfg.bn, chunk=cfg.chunk or 16,
                      batch_size=cfg.batch_size, vectorize=True).flatten()


def anchor_loss_landscapes(model, params, buffers, dirs, steps, x, y, cfg):
    """The PyPI `loss-landscapes` package as documented; None if it is not installed."""
    try:
        import loss_landscapes
        from loss_landscapes.metrics import Loss
    except ImportError:
        return None
    if cfg.bn == "recompute":
        return None  # the package has no BN recomputation
    torch.manual_seed(cfg.seed)  # the package draws its direction from the global RNG
    return torch.as_tensor(loss_landscapes.random_line(model.eval(), Loss(F.cross_entropy, x, y), distance=1.0,
                                                       steps=cfg.loop_points, normalization="model",  # 'filter' divides by 0
                                                       deepcopy_model=True))  # on the zero-init BN β


def _timed(fn, *args):
    """(wall seconds, CPU seconds of this process, output): CPU time is less sensitive to other load."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, out


def run(cfg: BenchConfig) -> dict:
    args = setup(cfg)
    n_batched = next(iter(args[3].values())).shape[0] * cfg.steps
    contenders = {"batched": (batched, n_batched), "batched-vmap": (batched_vmap, n_batched),
                  "loop-tool": (loop_tool, cfg.loop_points),
                  "loop-full": (loop_full, cfg.loop_points), "loss_landscapes": (anchor_loss_landscapes, cfg.loop_points)}
    batched(*args, BenchConfig(**{**cfg.__dict__, "points": cfg.steps}))  # warm-up (allocator, vmap)
    rates, cpu, outs = {k: [] for k in contenders}, {k: [] for k in contenders}, {}
    for _ in range(cfg.repeats):
        for name, (fn, n) in contenders.items():
            if name not in rates:
                continue
            dt, ct, out = _timed(fn, *args, cfg)
            if out is None:
                rates.pop(name), cpu.pop(name)
                continue
            rates[name].append(n / dt)
            cpu[name].append(n / ct)
            outs[name] = out
    ref = outs["loop-full"]
    diff = max(float((outs[k][:cfg.loop_points] - ref).abs().max()) for k in ("batched", "batched-vmap", "loop-tool"))
    return {"rates": rates, "cpu_rates": cpu, "max_abs_diff": diff, "n_batched": n_batched}


def sweep(cfg: BenchConfig, rows=(128, 256, 512, 1000, 4000), modes=((False, 16), (True, 4), (True, 16))) -> None:
    """scan_lines only: rows per forward × (vectorize, chunk); CPU-time rates, interleaved repeats."""
    args = setup(cfg)
    grid = [(v, c, r) for v, c in modes for r in rows]
    rates = {g: [] for g in grid}
    batched(*args, BenchConfig(**{**cfg.__dict__, "points": cfg.steps}))
    for rep in range(cfg.repeats):
        for v, c, r in grid:
            fn = batched_vmap if v else batched
            dt, ct, out = _timed(fn, *args, BenchConfig(**{**cfg.__dict__, "chunk": c, "batch_size": r}))
            rates[(v, c, r)].append(out.numel() / ct)  # CPU time: robust to other users of the machine
            if rep == cfg.repeats - 1:
                print(f"vectorize={v!s:>5} chunk={c:>3} rows={r:>5}: median {statistics.median(rates[(v, c, r)]):7.2f} "
                      f"points/CPU-s  {[round(a, 2) for a in rates[(v, c, r)]]}", flush=True)


def keep_heap_pages() -> str:
    """Stop glibc from mmap-ing (and unmapping) every large tensor: on the 2-core box a 4,000-row forward
    otherwise spent ~58 of ~107 ms per point in page faults (system time), which punished the
    full-data contenders for the allocator, not for their method. Same effect as MALLOC_MMAP_THRESHOLD_."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 2**30) and libc.mallopt(-1, 2**30)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
        return "glibc mmap threshold 1 GiB" if ok else "mallopt refused"
    except OSError:
        return "not glibc: allocator untouched"


def _parse(argv) -> tuple[BenchConfig, bool]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = BenchConfig()
    ap.add_argument("--points", type=int, default=d.points)
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--loop-points", type=int, default=d.loop_points)
    ap.add_argument("--loop-batch", type=int, default=d.loop_batch)
    ap.add_argument("--chunk", type=int, default=d.chunk)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--bn", choices=("eval", "recompute"), default=d.bn)
    ap.add_argument("--n-train", type=int, default=d.n_train)
    ap.add_argument("--model", choices=("mlp", "cnn1d"), default=d.model)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--glibc-mmap", action="store_true", help="leave glibc's large-allocation mmap on")
    ap.add_argument("--sweep", action="store_true", help="scan_lines only, over a (vectorize, chunk, rows) grid")
    a = vars(ap.parse_args(argv))
    flags = a.pop("sweep"), a.pop("glibc_mmap")
    return BenchConfig(**a), flags


def main(argv=None) -> None:
    cfg, (do_sweep, glibc_mmap) = _parse(argv)
    alloc = "glibc defaults" if glibc_mmap else keep_heap_pages()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{alloc}; {cfg.model}+BN on MNIST-1D ({cfg.n_train} rows), bn={cfg.bn}")
    if do_sweep:
        return sweep(cfg)
    res = run(cfg)
    for label, key in (("wall clock", "rates"), ("CPU time of this process", "cpu_rates")):
        _report(label, res[key])
    if "loss_landscapes" not in res["rates"]:
        why = ("it has no BN recomputation" if cfg.bn == "recompute"
               else "package not importable; pip install loss-landscapes")
        print(f"loss_landscapes: skipped ({why})")
    print(f"max |batched − loop| on shared points: {res['max_abs_diff']:.2e}")


def _report(label: str, rates: dict) -> None:
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"-- points per second, {label} (median of {len(rates['batched'])} interleaved repeats)")
    for name, v in rates.items():
        print(f"{name:>16}: {med[name]:8.2f}   per repeat {[round(a, 2) for a in v]}")
    for name in (k for k in med if k != "batched"):
        per = [b / o for b, o in zip(rates["batched"], rates[name])]
        print(f"{'batched / ' + name:>28}: {med['batched'] / med[name]:5.2f}x   per repeat {[round(r, 2) for r in per]}")


if __name__ == "__main__":
    main()
