"""Batched connector evaluation and constrained optimisation vs per-point loops (issue 9, part 4).

    python benchmarks/bench_connectors.py --threads 1 --repeats 3

Model and data: the LS cpu tier's network (registry LS-5: 40-128-128-10 tanh MLP, 23k parameters) on its
1,000 MNIST-1D training rows; two random initialisations as the endpoints (timing does not depend on
training). Contenders, measured interleaved (every repeat runs each once, so machine load hits all alike):

  path evaluation — the train loss at every point of a 20-segment path, 41 points per segment (801
  points, as LS-5 evaluates every tunnel):
    batched     core.netloss.NetLoss.loss on all points at once (vmapped functional_call, chunked)
    loop-full   per point: load the point into the live model (torch.nn.utils.vector_to_parameters),
                one forward over all rows under no_grad (the strongest plain loop)
    loop-tool   per point: the same, but the rows in mini-batches of 128 with a `.item()` per batch
                (how loss-landscapes / Li et al.'s evaluation loops do it)
  constrained optimisation — one projected step of all 19 hyperplane points of a tunnel (LS-5: each
  point's gradient on its own 128-row mini-batch, projected onto its hyperplane):
    batched     NetLoss.minibatch_grad on [19, D] and one batched projection
    loop        per point: vector_to_parameters, forward + backward on its mini-batch, project
Loops time --loop-points points (a prefix) and are reported as points (or point-steps) per second.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def _setup(n_segments: int, per_segment: int):
    from core.connectors import polyline_points
    from core.models import build_model
    from core.netloss import net_loss
    from fixtures.ls import _pool_net, ls_pool_spec
    pool = ls_pool_spec("cpu")
    model, data = _pool_net(pool)
    ends = [build_model(pool.model, num_classes=data.num_classes, input_shape=tuple(data.input_shape), seed=s,
                        **dict(pool.model_kwargs)) for s in (0, 1)]
    net = net_loss(model, dict(ends[0].named_parameters()), data.train.x, data.train.y)
    a, b = (net.flatten({k: v.detach() for k, v in m.named_parameters()}) for m in ends)
    t = torch.arange(n_segments + 1, dtype=a.dtype)[:, None] / n_segments
    nodes = (a + t * (b - a))[None]  # [1, n_segments + 1, D]
    points = polyline_points(nodes, per_segment)[0]  # [P, D]
    return model, data, net, points, a, b


def _loop_path(model, data, points, rows_per_batch: int | None) -> float:
    with torch.no_grad():
        total = 0.0
        for p in points:
            vector_to_parameters(p, model.parameters())
            if rows_per_batch is None:
                total += float(F.cross_entropy(model(data.train.x), data.train.y))
                continue
            for lo in range(0, len(data.train.y), rows_per_batch):
                total += F.cross_entropy(model(data.train.x[lo:lo + rows_per_batch]), data.train.y[lo:lo + rows_per_batch],
                                         reduction="sum").item()
    return total


def _project(g: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    return g - (g @ normal)[..., None] * normal


def _loop_step(model, data, hyper, normal, batches) -> torch.Tensor:
    out = []
    for p, idx in zip(hyper, batches):
        vector_to_parameters(p, model.parameters())
        model.zero_grad()
        F.cross_entropy(model(data.train.x[idx]), data.train.y[idx]).backward()
        out.append(_project(parameters_to_vector(g.grad for g in model.parameters()), normal))
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-points", type=int, default=80)
    args = ap.parse_args()
    from core.numerics import pin_code_paths
    pin_code_paths()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, data, net, points, a, b = _setup(20, 41)
    model.train(False)
    for p in model.parameters():
        p.requires_grad_(True)
    normal = (b - a) / (b - a).norm()
    hyper = a + torch.arange(1, 20, dtype=a.dtype)[:, None] / 20 * (b - a)  # the 19 hyperplane points
    grad = net.minibatch_grad(128, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    n_loop = min(args.loop_points, len(points))
    rates: dict[str, list[float]] = {k: [] for k in ("path batched", "path loop-full", "path loop-tool",
                                                     "step batched", "step loop")}
    for _ in range(args.repeats):
        t = time.perf_counter()
        with torch.no_grad():
            net.loss(points)
        rates["path batched"].append(len(points) / (time.perf_counter() - t))
        for name, rows in (("path loop-full", None), ("path loop-tool", 128)):
            t = time.perf_counter()
            _loop_path(model, data, points[:n_loop], rows)
            rates[name].append(n_loop / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(5):
            _project(grad(hyper), normal)
        rates["step batched"].append(5 * len(hyper) / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(5):
            _loop_step(model, data, hyper, normal, [torch.randperm(1000, generator=gen)[:128] for _ in hyper])
        rates["step loop"].append(5 * len(hyper) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}, "
          f"{len(points)} path points ({n_loop} per loop), 19 hyperplane points x 5 steps")
    for k, v in med.items():
        print(f"  {k:16s} {v:10.1f} points/s")
    print(f"  path: batched / loop-full = {med['path batched'] / med['path loop-full']:.2f}x, "
          f"/ loop-tool = {med['path batched'] / med['path loop-tool']:.2f}x")
    print(f"  step: batched / loop = {med['step batched'] / med['step loop']:.2f}x")


if __name__ == "__main__":
    main()
