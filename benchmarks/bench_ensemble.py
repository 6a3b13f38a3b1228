"""Seed-ensemble SGD (core.ensemble, stacked and vmapped) vs training the seeds one after another with
torch.optim.SGD — what the SD fixtures use vs what a user would write. Same model, data, steps, lr.

    python benchmarks/bench_ensemble.py                  # 10 seeds, batch 32 and 128, 1 thread
    python benchmarks/bench_ensemble.py --seeds 5 --steps 300

Model: core.models "mlp" 40-128-128-10 relu without BN (the SD cpu tier's network, 23,050 parameters);
data: 1,000 MNIST-1D rows (registry SD-1 n_train). Both contenders run the same epochs per seed, one
permutation per epoch from the seed's generator; the ensemble's curvature measurement (step 0 and the
end only) cancels in a difference of two run lengths. The code path is pinned as in the suite
(core.numerics.pin_code_paths). Contenders interleaved, median of --repeats.
"""
from __future__ import annotations

import argparse
import statistics
import time


def _stacked(models_fn, data, batch: int, epochs: int, gens_fn) -> float:
    """Seconds of `epochs` epochs of core.ensemble.train_ensemble's SGD: the run with 2·epochs minus
    the run with `epochs` (both measure curvature only at step 0 and the end: that cost cancels)."""
    import math
    from core.ensemble import EnsembleConfig, train_ensemble
    per_epoch = math.ceil(len(data.train) / batch)

    def run(e):
        cfg = EnsembleConfig(lr=0.03, batch_size=batch, epochs=e, checkpoints=(0, e * per_epoch))
        t0 = time.perf_counter()
        train_ensemble(models_fn(), data, cfg, gens_fn())
        return time.perf_counter() - t0
    return run(2 * epochs) - run(epochs)


def _sequential(models_fn, data, batch: int, epochs: int, gens_fn) -> float:
    """The same epochs, seed after seed, with torch.optim.SGD on each live model."""
    import torch
    from core.data import batches
    t0 = time.perf_counter()
    for model, g in zip(models_fn(), gens_fn()):
        opt = torch.optim.SGD(model.parameters(), lr=0.03)
        for _ in range(epochs):
            for x, y in batches(data.train, batch, generator=g):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of 1,000 rows timed per seed")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from core.numerics import pin_code_paths
    pin_code_paths()
    import torch
    from core.data import load_dataset
    from core.models import build_model
    torch.set_num_threads(1)
    data = load_dataset("mnist1d", n_train=1000, n_test=100, seed=0)

    def models():
        return [build_model("mlp", num_classes=10, input_shape=(40,), seed=s, widths=(128, 128), bn=False)
                for s in range(args.seeds)]

    def gens():
        return [torch.Generator().manual_seed(s) for s in range(args.seeds)]
    print(f"{args.seeds} seeds x {args.epochs} epochs, 1 thread, pinned code path; median of {args.repeats}")
    print("| batch | stacked (s) | sequential (s) | speed-up | ms per seed-step stacked / sequential |")
    print("|---|---|---|---|---|")
    for b in args.batches:
        st, sq = [], []
        for _ in range(args.repeats):
            st.append(_stacked(models, data, b, args.epochs, gens))
            sq.append(_sequential(models, data, b, args.epochs, gens))
        a, q = statistics.median(st), statistics.median(sq)
        per = 1e3 / (args.seeds * args.epochs * -(-len(data.train) // b))
        print(f"| {b} | {a:.2f} | {q:.2f} | {q / a:.2f}x | {a * per:.3f} / {q * per:.3f} |", flush=True)


if __name__ == "__main__":
    main()
