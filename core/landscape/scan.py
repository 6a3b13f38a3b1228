"""Batched loss evaluation at many parameter points: 1-D line scans L(w + l·u) and arbitrary point sets.

Every function here is pure: the model only supplies the forward computation. Parameters come from a
dict (`torch.func.functional_call`); points are stacked [c, ...] and evaluated chunk by chunk, with
rows of data in blocks. The live model is never touched: a private deep copy (eval mode: dropout off)
runs the forwards, and its BatchNorm layers are re-routed so the normalisation statistics can come
from reference data per point.

Vectorisation (`vectorize=`): True evaluates a chunk of points in one `torch.func.vmap` call (the
accelerator strategy: one kernel per layer for c points instead of c small ones). False evaluates the
chunk's points one after another through the same pure function. None (default) = vmap on an
accelerator, one by one on CPU: measured on the cpu tier's cnn1d (benchmarks/README.md), vmap turns
each conv into a grouped conv that oneDNN runs ~1.6-2x slower per point than c dense convs, and a
100-wide MLP at 4,000 rows gained nothing either; on CPU what pays is a cache-sized row block (~1.4x
vs. all 4,000 rows in one forward). Both strategies give the same numbers (tested).

BN handling (`bn=`):
  "eval"       running statistics as given in `buffers` (the same for every point).
  "recompute"  at every point, statistics recomputed from reference rows `ref_x` (default the train
               x), as He et al. did (PROTOCOLS.md: `update_bn` at each scan point):
               pass 1 ("collect") runs the point's forward on ref_x in batches of `ref_batch_size`
               rows (default: all rows in one batch); each BN layer normalises with the batch's mean
               and biased variance (train-mode behaviour, which decides the statistics of later
               layers) and records mean and UNBIASED variance; the records are averaged with equal
               weight per batch (momentum=None cumulative average). Pass 2 evaluates x in eval mode
               with these statistics as the point's running stats.
               This equals exactly `torch.optim.swa_utils.update_bn(batches of ref_x, copy)` followed
               by eval-mode evaluation of the copy (including its unbiased running_var convention),
               except that dropout is off in pass 1 (update_bn runs train mode, so dropout fires).
               With one batch, the statistics are the full-ref_x statistics of every layer. (A variant
               normalising the evaluated rows with the biased variance would differ by a factor
               n/(n−1) inside the square root: relative 1/(2n), 1e-4 at n = 4,000.)

Loss: "ce" (mean cross-entropy) or a callable (outputs [n, ...], targets [n]) -> per-example losses [n];
the mean over the rows is returned, accumulated in float64. Memory: on an accelerator, chunk × rows ×
activations ≈ _GPU_MEM_GB; on CPU, rows × activations ≈ _CPU_BLOCK_MB per forward.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "BN_MODES", "LossFn", "scan_points", "scan_points_loss_acc", "scan_lines", "scan_lines_loss_acc",
    "scan_lines_from", "line_points",
]

BN_MODES = ("eval", "recompute")
LossFn = Callable[[Tensor, Tensor], Tensor]  # (outputs [n, ...], targets [n]) -> per-example loss [n]
_ACT_SAFETY = 3.0  # activation-memory factor over the summed leaf-module outputs (temporaries, vmap reshapes)
_GPU_MEM_GB = 1.5  # GiB of activations + stacked params per vmapped chunk on an accelerator
_CPU_BLOCK_MB = 64.0  # MiB of (safety-inflated) activations per CPU forward: ~480 rows of cnn1d (bench sweep best)
_CPU_CHUNK = 16  # points built at once on CPU (memory only; they are evaluated one by one)


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out, y, reduction="none")


def _take(a, i: int):
    return {k: v[i] for k, v in a.items()} if isinstance(a, Mapping) else a[i]


def _stack(outs: list):
    """Stack a list of equally-structured outputs (tensors or nested tuples of tensors) along a new dim 0."""
    if isinstance(outs[0], Tensor):
        return torch.stack(outs)
    return tuple(_stack(list(z)) for z in zip(*outs))


def _batched(fn: Callable, in_dims: tuple, vectorize: bool) -> Callable:
    """vmap(fn, in_dims) or its one-point-at-a-time equivalent (same inputs, same stacked outputs)."""
    if vectorize:
        return vmap(fn, in_dims=in_dims)

    def each(*args):
        lead = next(a for a, d in zip(args, in_dims) if d == 0)
        n = next(iter(lead.values())).shape[0] if isinstance(lead, Mapping) else lead.shape[0]
        return _stack([fn(*(_take(a, i) if d == 0 else a for a, d in zip(args, in_dims))) for i in range(n)])
    return each


# ---------------------------------------------------------------- private probe copy of the model

def _bn_forward(m: _BatchNorm, probe: "_Probe", name: str, inp: Tensor) -> Tensor:
    """BN forward of the probe copy: running stats ("eval") or batch stats, recorded ("collect").

    Native kernels (3-4x faster on CPU than composing the arithmetic); in "collect" the biased batch
    variance is recovered from the kernel's saved 1/sqrt(var + eps) (relative error ~1e-7 in var + eps).
    """
    if probe.mode != "collect" and m.running_mean is not None:
        return F.batch_norm(inp, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    out, mean, invstd = torch.native_batch_norm(inp, m.weight, m.bias, None, None, True, 0.0, m.eps)
    if probe.mode == "collect":
        n = inp.numel() // inp.shape[1]
        var = invstd.pow(-2) - m.eps  # train-mode normalisation uses the biased variance
        probe.records[name] = (mean, var * (n / max(n - 1, 1)))  # running_var is stored unbiased
    return out


class _Probe:
    """An eval-mode deep copy of the model whose BN layers obey `mode` (see module docstring)."""

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(model).eval()
        self.mode, self.records = "eval", {}
        self.bn_names = []
        for name, m in self.module.named_modules():
            if isinstance(m, _BatchNorm):
                m.forward = functools.partial(_bn_forward, m, self, name)
                if m.running_mean is not None:
                    self.bn_names.append(name)

    def forward(self, p: Mapping, static: Mapping, stats: Mapping, x: Tensor) -> Tensor:
        return functional_call(self.module, (p, static, stats), (x,))

    def _collect_one(self, p: Mapping, static: Mapping, x: Tensor) -> tuple:
        self.mode, self.records = "collect", {}
        try:
            functional_call(self.module, (p, static), (x,))
            missing = [n for n in self.bn_names if n not in self.records]
            if missing:
                raise ValueError(f"BN layers {missing} did not run in the forward; bn='recompute' needs every "
                                 f"BN layer with running stats to be used")
            return tuple(self.records[n] for n in self.bn_names)
        finally:
            self.mode, self.records = "eval", {}

    def collect(self, P: Mapping, static: Mapping, ref_x: Tensor, rows: int, vectorize: bool) -> dict[str, Tensor]:
        """Per-point BN statistics from ref_x (pass 1): {'<bn>.running_mean': [c, C], ...}."""
        total, n_batches = None, 0
        collect_one = _batched(self._collect_one, (0, None, None), vectorize)
        for xb in ref_x.split(rows):
            rec = collect_one(P, static, xb)
            total = rec if total is None else tuple((a[0] + b[0], a[1] + b[1]) for a, b in zip(total, rec))
            n_batches += 1
        out = {}
        for name, (m, v) in zip(self.bn_names, total):
            out[f"{name}.running_mean"], out[f"{name}.running_var"] = m / n_batches, v / n_batches
        return out


# ---------------------------------------------------------------- validation and plan

def _check(model, params, buffers, x, y, bn, loss) -> LossFn:
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}; got {bn!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module; got {type(model).__name__}")
    known = {n for n, _ in model.named_parameters()}
    extra = [n for n in params if n not in known]
    if extra:
        raise ValueError(f"params has names the model does not have: {extra[:5]}; model params: {sorted(known)[:5]}...")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must have the same, non-zero number of rows; got {x.shape[0]} and {y.shape[0]}")
    if loss == "ce":
        return _cross_entropy
    if callable(loss):
        return loss
    raise ValueError(f"loss must be 'ce' or a callable (outputs, targets) -> per-example losses; got {loss!r}")


def _row_bytes(probe: _Probe, p: Mapping, buffers: Mapping, x: Tensor) -> float:
    """Bytes of leaf-module outputs per data row for one point (measured on 2 rows), times a safety factor."""
    total = 0

    def hook(_m, _inp, out):
        nonlocal total
        if isinstance(out, Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in probe.module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        probe.forward(p, buffers, {}, x[:2])
    finally:
        for h in handles:
            h.remove()
    return _ACT_SAFETY * total / min(2, x.shape[0])


@dataclass(frozen=True)
class _Plan:
    chunk: int  # points built (and, vectorised, evaluated) together
    rows: int  # data rows per forward
    ref_rows: int  # reference rows per BN-statistics batch
    vectorize: bool  # vmap over the chunk, or evaluate its points one by one


def _plan(probe, p1, buffers, x, ref_x, n_points, *, chunk, batch_size, ref_batch_size, vectorize) -> _Plan:
    """Rows and chunk from a memory target: GPU ≈ _GPU_MEM_GB per vmapped chunk; CPU ≈ _CPU_BLOCK_MB per forward."""
    for key, v in (("chunk", chunk), ("batch_size", batch_size), ("ref_batch_size", ref_batch_size)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{key} must be None or an int ≥ 1; got {v!r}")
    vec = x.device.type != "cpu" if vectorize is None else bool(vectorize)
    row = _row_bytes(probe, p1, buffers, x)
    budget = _GPU_MEM_GB * 2**30 if vec else _CPU_BLOCK_MB * 2**20
    rows = batch_size or int(min(x.shape[0], max(1, budget // max(row, 1.0))))
    if chunk is None:
        pbytes = sum(t.numel() * t.element_size() for t in p1.values())
        chunk = int(max(1, budget // (pbytes + rows * row))) if vec else _CPU_CHUNK
    return _Plan(min(chunk, n_points), rows, ref_batch_size or ref_x.shape[0], vec)


# ---------------------------------------------------------------- core evaluation

def _evaluate(model, point_chunks: Callable[[int], Iterator[dict]], n_points: int, first: Mapping,
              buffers, x, y, *, bn, ref_x, loss, chunk, batch_size, ref_batch_size, vectorize, with_acc):
    """Mean loss (and accuracy) at n_points points produced chunk by chunk; returns float64 tensors [n]."""
    loss_fn = _check(model, first, buffers, x, y, bn, loss)
    probe = _Probe(model)
    buffers = dict(buffers)
    ref_x = x if ref_x is None else ref_x
    recompute = bn == "recompute" and bool(probe.bn_names)
    static = {k: v for k, v in buffers.items()
              if not (recompute and k.rsplit(".", 1)[-1] in ("running_mean", "running_var"))}
    with torch.inference_mode():
        plan = _plan(probe, first, buffers, x, ref_x, n_points, chunk=chunk, batch_size=batch_size,
                     ref_batch_size=ref_batch_size, vectorize=vectorize)
        losses, accs = [], []
        for P in point_chunks(plan.chunk):
            stats = probe.collect(P, static, ref_x, plan.ref_rows, plan.vectorize) if recompute else {}
            fwd = _batched(probe.forward, (0, None, 0 if stats else None, None), plan.vectorize)
            l_sum, hits = 0.0, 0.0
            for xb, yb in zip(x.split(plan.rows), y.split(plan.rows)):
                out = fwd(P, static, stats, xb)  # [c, rows, ...]
                cc = out.shape[0]
                per = loss_fn(out.flatten(0, 1), yb.repeat(cc, *([1] * (yb.dim() - 1))))
                l_sum = l_sum + per.view(cc, -1).double().sum(1)
                if with_acc:
                    hits = hits + (out.argmax(-1) == yb).double().sum(1)
            losses.append(l_sum / x.shape[0])
            accs.append(hits / x.shape[0] if with_acc else None)
    loss_t = torch.cat(losses).clone()  # clone: leave inference mode's tensors behind
    return (loss_t, torch.cat(accs).clone()) if with_acc else loss_t


def _points_of(stacked: Mapping[str, Tensor]):
    n = next(iter(stacked.values())).shape[0]
    first = {k: v[0] for k, v in stacked.items()}
    return n, first, lambda c: ({k: v[i:i + c] for k, v in stacked.items()} for i in range(0, n, c))


def scan_points(model: nn.Module, stacked_params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
                x: Tensor, y: Tensor, *, bn: str = "eval", ref_x: Tensor | None = None,
                loss: str | LossFn = "ce", chunk: int | None = None, batch_size: int | None = None,
                ref_batch_size: int | None = None, vectorize: bool | None = None) -> Tensor:
    """Mean loss at each of n stacked parameter sets (dict name -> [n, *shape]) -> float64 [n].

    chunk: points per group (None: plan); batch_size: data rows per forward (None: plan);
    ref_batch_size: reference rows per BN-statistics batch (None: all of ref_x in one batch);
    vectorize: vmap over the chunk (None: on accelerators only; see the module docstring).
    """
    n, first, chunks = _points_of(stacked_params)
    return _evaluate(model, chunks, n, first, buffers, x, y, bn=bn, ref_x=ref_x, loss=loss, chunk=chunk,
                     batch_size=batch_size, ref_batch_size=ref_batch_size, vectorize=vectorize, with_acc=False)


def scan_points_loss_acc(model, stacked_params, buffers, x, y, *, bn="eval", ref_x=None, loss="ce", chunk=None,
                         batch_size=None, ref_batch_size=None, vectorize=None) -> tuple[Tensor, Tensor]:
    """`scan_points` plus top-1 accuracy (argmax of the last output dim == y): (loss [n], acc [n])."""
    n, first, chunks = _points_of(stacked_params)
    return _evaluate(model, chunks, n, first, buffers, x, y, bn=bn, ref_x=ref_x, loss=loss, chunk=chunk,
                     batch_size=batch_size, ref_batch_size=ref_batch_size, vectorize=vectorize, with_acc=True)


# ---------------------------------------------------------------- lines

def line_points(origins: Mapping[str, Tensor], directions: Mapping[str, Tensor], steps: Tensor,
                idx: Tensor) -> dict[str, Tensor]:
    """Points origin_j + steps[i]·direction_j for flat indices idx = j·s + i; origins/directions [k or 1, ...]."""
    s = steps.shape[0]
    line, step = idx // s, idx % s
    out = {}
    for name, o in origins.items():
        d = directions[name]
        oi = line if o.shape[0] > 1 else torch.zeros_like(line)
        di = line if d.shape[0] > 1 else torch.zeros_like(line)
        st = steps.to(device=d.device, dtype=d.dtype)[step].view(-1, *([1] * (d.dim() - 1)))
        out[name] = o[oi] + st * d[di]
    return out


def _line_setup(origins, directions, steps):
    if not isinstance(steps, Tensor) or steps.dim() != 1 or steps.numel() == 0 or not torch.isfinite(steps).all():
        raise ValueError(f"steps must be a non-empty finite 1-D tensor; got {steps!r}")
    if set(origins) != set(directions):
        raise ValueError(f"directions must cover exactly the params' names; missing "
                         f"{sorted(set(origins) - set(directions))[:5]}, extra {sorted(set(directions) - set(origins))[:5]}")
    k = max(next(iter(origins.values())).shape[0], next(iter(directions.values())).shape[0])
    for name, o in origins.items():
        d = directions[name]
        if o.shape[0] not in (1, k) or d.shape[0] not in (1, k) or o.shape[1:] != d.shape[1:]:
            raise ValueError(f"'{name}': origin {tuple(o.shape)} and direction {tuple(d.shape)} must be "
                             f"[k or 1, *shape] with the same shape (k = {k})")
    n = k * steps.shape[0]
    device = next(iter(origins.values())).device
    first = {kk: v[0] for kk, v in line_points(origins, directions, steps, torch.zeros(1, dtype=torch.long,
                                                                                       device=device)).items()}

    def chunks(c):
        return (line_points(origins, directions, steps, torch.arange(i, min(i + c, n), device=device))
                for i in range(0, n, c))
    return k, n, first, chunks


def scan_lines_from(model, origins, buffers, directions, steps, x, y, *, bn="eval", ref_x=None, loss="ce",
                    chunk=None, batch_size=None, ref_batch_size=None, vectorize=None, with_acc=False):
    """Loss along k lines origin_j + l·direction_j, origins and directions stacked [k or 1, ...] -> [k, s].

    With with_acc=True returns (loss [k, s], acc [k, s]). Points are built chunk by chunk (never all
    k·s parameter sets at once).
    """
    k, n, first, chunks = _line_setup(origins, directions, steps)
    out = _evaluate(model, chunks, n, first, buffers, x, y, bn=bn, ref_x=ref_x, loss=loss, chunk=chunk,
                    batch_size=batch_size, ref_batch_size=ref_batch_size, vectorize=vectorize, with_acc=with_acc)
    s = steps.shape[0]
    return (out[0].view(k, s), out[1].view(k, s)) if with_acc else out.view(k, s)


def scan_lines(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor],
               directions: Mapping[str, Tensor], steps: Tensor, x: Tensor, y: Tensor, *, bn: str = "eval",
               ref_x: Tensor | None = None, loss: str | LossFn = "ce", chunk: int | None = None,
               batch_size: int | None = None, ref_batch_size: int | None = None,
               vectorize: bool | None = None) -> Tensor:
    """Mean loss L(params + steps[i]·directions[j]) for every direction j and step i -> float64 [k, s]."""
    origins = {kk: v.unsqueeze(0) for kk, v in params.items()}
    return scan_lines_from(model, origins, buffers, directions, steps, x, y, bn=bn, ref_x=ref_x, loss=loss,
                           chunk=chunk, batch_size=batch_size, ref_batch_size=ref_batch_size, vectorize=vectorize)


def scan_lines_loss_acc(model, params, buffers, directions, steps, x, y, *, bn="eval", ref_x=None, loss="ce",
                        chunk=None, batch_size=None, ref_batch_size=None, vectorize=None) -> tuple[Tensor, Tensor]:
    """`scan_lines` plus top-1 accuracy: (loss [k, s], acc [k, s])."""
    origins = {kk: v.unsqueeze(0) for kk, v in params.items()}
    return scan_lines_from(model, origins, buffers, directions, steps, x, y, bn=bn, ref_x=ref_x, loss=loss,
                           chunk=chunk, batch_size=batch_size, ref_batch_size=ref_batch_size, vectorize=vectorize,
                           with_acc=True)
