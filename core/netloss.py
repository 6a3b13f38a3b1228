"""A network's training loss as a function of its flattened parameters, for core/connectors.py.

core/connectors.py works on any loss of points P [..., D] -> [...] (batched over every leading dim)
and any gradient GradFn P [..., D] -> [..., D]. For a network f(x; θ) with parameters θ ∈ R^D and
rows (x_i, y_i), i = 1..N, a point P is one θ, laid out as the concatenation of the flattened
parameter tensors in the params dict's order (`flatten`; `unflatten` is the inverse, as views):

    L(P) = (1/N) Σ_i CE(f(x_i; P), y_i)                       `loss`     (full batch, the probes' loss)
    ∇L(P)                                                     `grad`     (full batch, deterministic)
    L_B(P) = (1/|B|) Σ_{i∈B} CE(f(x_i; P), y_i), ∇L_B(P)      `minibatch_loss`, `minibatch_grad`

The network is called through `torch.func.functional_call` on a private eval-mode copy (dropout off)
and `vmap`ped over the points, so a batch of points costs one batched forward. Models with buffers
(BatchNorm running statistics) are refused: their loss depends on the statistics too, and
recomputing them per point (Fort's BN nets) is not implemented here.

Memory stays bounded: a forward holds at most `chunk` (points × data rows) at a time; with N > chunk
the data are split into blocks of `chunk` rows, one point at a time. Gradients are per chunk, so
their graphs are freed chunk by chunk; `loss` keeps the graph of all chunks only when called with
autograd on (as core.connectors.minimize does).

Mini-batches (registry LS-5/LS-7 `*_batch_size`): each point (row of the flattened leading dims)
draws its own batches, without replacement within an epoch: a fresh random permutation of the N rows
per point per epoch, cut into ⌊N/B⌋ batches of B rows (the last N mod B rows of a permutation are
skipped, so every batch has B rows). So the points of one call are independent replicates, like the
seeds of core/ensemble.py. A stream serves a fixed number of points (core.connectors.descend calls it
with the same shape every step); a call with another number is refused.

Predictions: `logits` gives f(x'; P) [..., N', C], `predict` the argmax labels [..., N'] on any rows x', `accuracy` their agreement
with labels y', `agreement` the fraction of rows on which two points predict the same label (registry
LS-6: test-label agreement with the far endpoint along a tunnel). Computation is in the points' dtype
(rows cast once per dtype); nothing returns a Python number per point.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from core.hessian import ParamLayout

__all__ = ["NetLoss", "net_loss"]

CHUNK = 2 ** 14  # points × data rows per vmapped forward (cnn1d 32 channels: ~250 MB of activations)


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


# ---------------------------------------------------------------- construction and validation
def net_loss(model: nn.Module, params, x: Tensor, y: Tensor, *, chunk: int = CHUNK) -> "NetLoss":
    """The loss of `model` on rows (x [N, ...], y [N] int64) as a function of flat parameter vectors laid
    out like `params` ({name: tensor}, the model's parameter names and shapes, any order)."""
    buffers = [n for n, _ in model.named_buffers()]
    _require(not buffers, f"net_loss: the model has buffers ({', '.join(buffers)}; BatchNorm?); their "
                          "statistics would have to be recomputed per point, which is not implemented")
    want = {n: tuple(p.shape) for n, p in model.named_parameters()}
    got = {n: tuple(p.shape) for n, p in params.items()}
    _require(want == got, f"net_loss: params {got} do not match the model's parameters {want}")
    _require(isinstance(chunk, int) and chunk >= 1, f"net_loss: chunk={chunk!r}; allowed: an int >= 1")
    module = copy.deepcopy(model).eval()  # eval: dropout off; the caller's model is never touched
    layout = ParamLayout.of(params)
    out = NetLoss(module, layout, x, y, chunk)
    with torch.no_grad():
        flat = layout.flatten({n: p.detach() for n, p in params.items()})
        out._check_rows(x, y, flat)
    return out


@dataclass(frozen=True, eq=False)
class NetLoss:
    """L(P) of one network on fixed rows (module docstring). Build with `net_loss`."""

    module: nn.Module  # private eval-mode copy; only its structure is used (functional_call)
    layout: ParamLayout  # names and shapes of the params dict; D = layout.dim
    x: Tensor  # [N, ...] input rows
    y: Tensor  # [N] int64 labels
    chunk: int = CHUNK  # points × data rows per vmapped forward
    _x_as: dict = field(default_factory=dict, repr=False, compare=False)  # x cast per dtype, once

    @property
    def dim(self) -> int:
        return self.layout.dim

    def flatten(self, params) -> Tensor:
        """{name: [*shape]} -> [D] (one concatenation: a copy)."""
        return self.layout.flatten(params)

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """[..., D] -> {name: [..., *shape]}, views of `vec` (gradients flow back to it)."""
        self._check_points(vec)
        return self.layout.unflatten(vec)

    def on(self, x: Tensor, y: Tensor) -> "NetLoss":
        """The same network on other rows (e.g. the test split), validated like `net_loss`."""
        out = replace(self, x=x, y=y, _x_as={})
        with torch.no_grad():
            out._check_rows(x, y, torch.zeros(self.dim, dtype=x.dtype if x.is_floating_point() else torch.float32))
        return out

    def _check_points(self, P: Tensor) -> None:
        _require(P.dim() >= 1 and P.shape[-1] == self.dim and P.is_floating_point(),
                 f"points of shape {tuple(P.shape)}, dtype {P.dtype}; allowed: floating [..., D = {self.dim}]")

    def _check_rows(self, x: Tensor, y: Tensor, flat: Tensor) -> None:
        _require(y.dtype == torch.int64 and y.dim() == 1 and x.dim() >= 1 and len(x) == len(y) >= 1,
                 f"rows: x {tuple(x.shape)}, y {tuple(y.shape)} {y.dtype}; allowed: x [N, ...], int64 y [N], N >= 1")
        try:
            out = functional_call(self.module, self.layout.unflatten(flat.to(x.dtype)), (x[:1],))
        except RuntimeError as e:
            raise ValueError(f"rows: x of shape {tuple(x.shape)} does not fit the model ({e})") from None
        c = out.shape[-1]
        _require(out.dim() == 2 and bool((y >= 0).all() and (y < c).all()),
                 f"rows: labels span {int(y.min())}..{int(y.max())}; allowed: 0..{c - 1} (the model's outputs)")

    def _xs(self, dtype: torch.dtype) -> Tensor:
        if dtype not in self._x_as:
            self._x_as[dtype] = self.x.to(dtype)
        return self._x_as[dtype]

    # ------------------------------------------------------------ batched forward
    def _logits(self, P: Tensor, x: Tensor, shared: bool) -> Tensor:
        """f(x; P_r) for points P [R, D]: x [n, ...] shared by all points -> [R, n, C], or x [R, n, ...]
        one set of rows per point -> [R, n, C]."""
        forward = vmap(lambda p, xx: functional_call(self.module, p, (xx,)), in_dims=(0, None if shared else 0))
        return forward(self.layout.unflatten(P), x)

    def _ce_sum(self, P: Tensor, x: Tensor, y: Tensor, shared: bool) -> Tensor:
        """Σ over rows of CE for each point, [R] (y [n] shared, or [R, n])."""
        out = self._logits(P, x, shared)
        yy = y.expand(out.shape[0], -1) if shared else y
        return F.cross_entropy(out.flatten(0, 1), yy.flatten(), reduction="none").view(out.shape[:2]).sum(1)

    def _blocks(self) -> tuple[int, int]:
        """(points per chunk, data rows per block) with their product <= chunk."""
        rows = min(len(self.y), self.chunk)
        return max(1, self.chunk // rows), rows

    def _full_sum(self, P: Tensor) -> Tensor:
        """Σ_i CE(f(x_i; P_r), y_i) over all N rows for points P [R, D] -> [R]."""
        per, rows = self._blocks()
        x = self._xs(P.dtype)
        parts = []
        for lo in range(0, P.shape[0], per):
            p = P[lo:lo + per]
            parts.append(sum(self._ce_sum(p, x[i:i + rows], self.y[i:i + rows], True)
                             for i in range(0, len(self.y), rows)))
        return torch.cat(parts)

    # ------------------------------------------------------------ full-batch loss and gradient
    def loss(self, P: Tensor) -> Tensor:
        """L(P) = (1/N) Σ_i CE(f(x_i; P), y_i) for points P [..., D] -> [...] (differentiable)."""
        self._check_points(P)
        flat = P.reshape(-1, self.dim)
        return (self._full_sum(flat) / len(self.y)).view(P.shape[:-1])

    __call__ = loss

    def grad(self, P: Tensor, scratch=None) -> Tensor:
        """∇L(P) for points P [..., D] -> [..., D] (the gradient of Σ L over the leading dims), one chunk
        of points at a time. `scratch` is accepted for core.connectors.segments_grad and ignored."""
        self._check_points(P)
        flat = P.detach().reshape(-1, self.dim)
        per, _ = self._blocks()
        out = torch.cat([self._grad_chunk(flat[lo:lo + per], lambda p: self._full_sum(p) / len(self.y))
                         for lo in range(0, flat.shape[0], per)])
        return out.view(P.shape)

    @staticmethod
    def _grad_chunk(p: Tensor, f) -> Tensor:
        with torch.enable_grad():
            p = p.detach().requires_grad_(True)
            return torch.autograd.grad(f(p).sum(), p)[0]

    # ------------------------------------------------------------ mini-batches
    def minibatch_loss(self, batch_size: int, generator: torch.Generator):
        """A LossFn P [..., D] -> [...]: each call, every point's loss on its own next mini-batch of
        `batch_size` rows (module docstring), differentiable. E.g. the objective of
        core.connectors.build_connector: `objective=lambda c, optima: netloss.minibatch_loss(128, g)(c)`
        (build the LossFn once, outside the lambda)."""
        stream = _Batches(len(self.y), batch_size, generator, self.y.device)

        def loss(P: Tensor) -> Tensor:
            self._check_points(P)
            flat = P.reshape(-1, self.dim)
            idx = stream.next(flat.shape[0])
            per = max(1, self.chunk // batch_size)
            x = self._xs(P.dtype)
            parts = [self._ce_sum(flat[lo:lo + per], x[idx[lo:lo + per]], self.y[idx[lo:lo + per]], False)
                     for lo in range(0, flat.shape[0], per)]
            return (torch.cat(parts) / batch_size).view(P.shape[:-1])
        return loss

    def minibatch_grad(self, batch_size: int, generator: torch.Generator):
        """A GradFn P [..., D] -> [..., D] for core.connectors.descend: every point's ∇L_B on its own next
        mini-batch B of `batch_size` rows (module docstring); accepts and ignores `scratch`."""
        stream = _Batches(len(self.y), batch_size, generator, self.y.device)

        def grad(P: Tensor, scratch=None) -> Tensor:
            self._check_points(P)
            flat = P.detach().reshape(-1, self.dim)
            idx = stream.next(flat.shape[0])
            per = max(1, self.chunk // batch_size)
            x = self._xs(P.dtype)
            out = [self._grad_chunk(flat[lo:lo + per], lambda p, i=idx[lo:lo + per]:
                                    self._ce_sum(p, x[i], self.y[i], False) / batch_size)
                   for lo in range(0, flat.shape[0], per)]
            return torch.cat(out).view(P.shape)
        return grad

    # ------------------------------------------------------------ predictions
    def logits(self, P: Tensor, x: Tensor | None = None) -> Tensor:
        """f(x'; P) for points P [..., D] on rows x' (default: this loss's x) -> [..., N', C], no grad."""
        self._check_points(P)
        x = self._xs(P.dtype) if x is None else x.to(P.dtype)
        flat = P.detach().reshape(-1, self.dim)
        rows = min(len(x), self.chunk)
        per = max(1, self.chunk // rows)
        with torch.no_grad():
            out = torch.cat([torch.cat([self._logits(flat[lo:lo + per], x[i:i + rows], True)
                                        for i in range(0, len(x), rows)], dim=1)
                             for lo in range(0, flat.shape[0], per)])
        return out.view(*P.shape[:-1], len(x), out.shape[-1])

    def predict(self, P: Tensor, x: Tensor | None = None) -> Tensor:
        """argmax_c f(x'; P)_c for points P [..., D] on rows x' (default: this loss's x) -> [..., N'] int64."""
        return self.logits(P, x).argmax(-1)

    def accuracy(self, P: Tensor, x: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        """Fraction of rows (default: this loss's) whose predicted label is y, for points P [..., D] -> [...]."""
        _require((x is None) == (y is None), "accuracy: give both x and y, or neither")
        y = self.y if y is None else y
        return (self.predict(P, x) == y).to(P.dtype).mean(-1)

    def agreement(self, P: Tensor, ref: Tensor, x: Tensor | None = None) -> Tensor:
        """Fraction of rows on which P [..., D] and ref (broadcastable to P) predict the same label -> [...]."""
        return (self.predict(P, x) == self.predict(ref, x)).to(P.dtype).mean(-1)


class _Batches:
    """Per-point mini-batch indices [R, B]: each of the R points walks its own random permutations of
    the N rows, ⌊N/B⌋ batches per permutation (module docstring)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device):
        _require(isinstance(batch_size, int) and 1 <= batch_size <= n,
                 f"batch_size={batch_size!r}; allowed: an int in 1..{n} (the rows)")
        self.n, self.b, self.g, self.device = n, batch_size, generator, device
        self.order: Tensor | None = None
        self.at = 0

    def next(self, points: int) -> Tensor:
        if self.order is not None and self.order.shape[0] != points:
            raise ValueError(f"mini-batch stream: called for {points} points after {self.order.shape[0]}; "
                             "allowed: the same number every call (build one stream per optimisation)")
        if self.order is None or self.at + self.b > self.n:
            order = torch.rand(points, self.n, generator=self.g, device=self.g.device).argsort(-1)
            self.order, self.at = order.to(self.device), 0
        self.at += self.b
        return self.order[:, self.at - self.b:self.at]
