"""Projected descent, tunnels and m-connectors on any flat-vector loss (Fort & Jastrzebski 2019, §3.3,
§4.2–§4.3).

A loss here is a callable on points P [..., D] -> [...], batched over every leading dim (a toy
landscape, or a network's loss as a function of its flattened parameters). Every probe optimises
many independent rows (subspaces, hyperplanes, centres) in one batch.

Projected descent (`descend`, `minimize`): on the affine set A = {x : (x − o) ⟂ u_k, k = 1..K}
(o the origin, u_k orthonormal normals) every step is followed by the re-projection

    x ← Π(x − η_t d_t),   Π(x) = x − Σ_k ((x − o)·u_k) u_k     (`affine_projector`),

d_t = g_t for GD, the bias-corrected Adam direction m̂/√(v̂ + ε²) for Adam (Kingma & Ba 2015). Adam's
elementwise scaling would carry the iterate off a hyperplane, so the iterate itself is projected,
not only the gradient: the step taken is the linear projection of d_t, and the iterate stays on A up
to rounding. The optimiser state is not projected: m, v are the plain Adam moments of the full-space
gradients, so the gradient's component normal to A still shapes the per-coordinate scaling √v̂, while
Π removes every motion off A at each step. Fort §4.2: "minimize the training loss, constraining the
gradients to lie within".

Random subspaces (§3.3, as in Li et al. 2018 and Fort & Scherlis 2018): P = θM + P0, θ ∈ R^d optimised
from 0 (`minimize_in_subspace`).

Barrier of a path with losses ℓ_0..ℓ_T (CLAIMS.md, Fort section):  max_t ℓ_t − ½(ℓ_0 + ℓ_T)  (`barrier`).

Tunnel (§4.2 steps 1–4; Fig. 3): divide the line A→B at fractions t_k; at each put up the (D − 1)-dim
hyperplane {x : (x − (A + t_k(B − A)))·(B − A) = 0} normal to the line, start at its intersection
with the line and minimise on it by projected descent; the tunnel is A → optimised points → B
(`build_tunnel`); the points' deviations from the line and their cosines give Fig. 3's two halves.

m-connector (§4.3): for m + 1 optima o_0..o_m, the centre is optimised on the (D − m)-dim affine
subspace through the hull point b = mean_i o_i (the barycentre, inside their convex hull) orthogonal
to span(o_i − b) = span(o_i − o_0), i = 1..m (orthonormal basis by QR); the connector is the m + 1
segments centre → o_i, each with its barrier (`build_connector`). The objective is a function:
the centre's own loss (§4.3 read literally) or the mean loss over the segments (`segments_objective`;
analytic gradient `segments_grad` for ragged batches, `build_connectors`, split over processes by
`build_connectors_split`).

Works in the points' dtype and on their device; the random samplers return float64 from the CPU
generator given.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Connector", "GradFn", "LossFn", "OptimConfig", "Scratch", "Tunnel", "affine_projector", "barrier",
           "build_connector", "build_connectors", "build_connectors_split", "build_tunnel",
           "centre_objective", "cosine_matrix", "descend", "half_alignment", "minimize",
           "minimize_in_subspace", "polyline_losses", "polyline_points", "random_gaussian_rows", "random_orthonormal",
           "random_subspaces", "segments_grad", "segments_objective"]

LossFn = Callable[[Tensor], Tensor]  # [..., D] -> [...], batched over every leading dim
GradFn = Callable[[Tensor], Tensor]  # [..., D] -> [..., D]: the gradient of Σ loss over the leading dims
_F64 = torch.float64


class Scratch:
    """Reusable temporaries for the gradient hot loops. CPU tensors of a few MB that are freed and
    allocated again every step go back to the OS (glibc) and are page-faulted anew each time: 21 s of
    a 60 s LS-4 run was system time before this. A tensor that a function returns from a Scratch is
    a view of its buffer, valid until that Scratch's next use."""

    def __init__(self):
        self._bufs: dict[str, Tensor] = {}

    def __getstate__(self):
        # A pickled Scratch (sent to another process) starts empty: torch would otherwise pass the
        # buffers as shared memory, and two processes would write into the same temporaries.
        return {"_bufs": {}}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
        numel, buf = math.prod(shape), self._bufs.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
            buf = self._bufs[name] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)


# ---------------------------------------------------------------- optimiser
@dataclass(frozen=True)
class OptimConfig:
    """Batched Adam or plain GD with a step-size schedule over a fixed step budget."""

    method: str = "adam"  # "adam" | "gd"
    steps: int = 3000  # optimiser steps (count)
    lr: float = 0.01  # initial step size (units of P or θ per step for Adam)
    schedule: str = "cosine"  # "cosine" (PyTorch CosineAnnealingLR, to 0) | "constant"
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decays (PyTorch defaults)
    eps: float = 1e-8  # Adam denominator floor (gradient units; PyTorch default)

    def __post_init__(self):
        ok = (self.method in ("adam", "gd") and self.schedule in ("cosine", "constant")
              and isinstance(self.steps, int) and self.steps >= 1 and self.lr > 0)
        if not ok:
            raise ValueError(f"OptimConfig: method={self.method!r}, schedule={self.schedule!r}, "
                             f"steps={self.steps!r}, lr={self.lr!r}; allowed: method 'adam'|'gd', "
                             f"schedule 'cosine'|'constant', int steps >= 1, lr > 0")

    def lr_at(self, t: int) -> float:
        """Step size of step t = 0..steps−1: lr·½(1 + cos(π t / steps)) for "cosine"."""
        return self.lr * (0.5 * (1 + math.cos(math.pi * t / self.steps)) if self.schedule == "cosine" else 1.0)


def minimize(loss_fn: LossFn, x0: Tensor, config: OptimConfig,
             project: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Minimise Σ loss_fn(x) over x [..., D] from x0 with autograd gradients (see `descend`)."""
    def grad(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(loss_fn(x).sum(), x)[0]
    return descend(grad, x0, config, project)


def descend(grad_fn: GradFn, x0: Tensor, config: OptimConfig,
            project: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Minimise from x0 [..., D] given the gradient grad_fn(x) of the summed loss; rows are independent
    (both methods are elementwise).

    "gd": x ← x − η_t g. "adam" (Kingma & Ba): m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
    x ← x − η_t m̂/√(v̂ + ε²). Then x ← project(x) if given: projected GD/Adam (Adam's elementwise
    scaling would leave a hyperplane, so the iterate itself is projected, not only the gradient).
    """
    x, state = x0.detach().clone(), None
    for t in range(config.steps):
        g = grad_fn(x)
        with torch.no_grad():
            if config.method == "adam":
                g, state = _adam_direction(g, state, t + 1, config)
            x = x.detach() - config.lr_at(t) * g
            x = project(x) if project is not None else x
    return x.detach()


def _adam_direction(g: Tensor, state, t: int, config: OptimConfig):
    """Bias-corrected Adam direction m̂/√(v̂ + ε²) and the updated (m, v)."""
    (b1, b2), (m, v) = config.betas, state or (torch.zeros_like(g), torch.zeros_like(g))
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    # ε inside the root: rsqrt, because sqrt on tiny float64 tensors is pathologically slow with
    # several intra-op threads on a busy CPU (measured ~1 ms a call on 2 shared cores)
    return m / (1 - b1 ** t) * torch.rsqrt(v / (1 - b2 ** t) + config.eps ** 2), (m, v)


# ---------------------------------------------------------------- random subspaces (§3.3, LS-1)
def random_orthonormal(batch: int, k: int, D: int, *, generator: torch.Generator) -> Tensor:
    """[batch, k, D] float64 with orthonormal rows, Haar-distributed (QR of a Gaussian, sign-corrected)."""
    if not 0 <= k <= D:
        raise ValueError(f"random_orthonormal: k={k}; allowed 0 <= k <= D = {D}")
    q, r = torch.linalg.qr(torch.randn(batch, D, k, generator=generator, dtype=_F64))
    return (q * torch.sgn(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)).transpose(-1, -2)


def random_gaussian_rows(batch: int, k: int, D: int, *, generator: torch.Generator) -> Tensor:
    """[batch, k, D] float64 with i.i.d. N(0, 1/D) entries (rows have norm ≈ 1, nearly orthogonal)."""
    return torch.randn(batch, k, D, generator=generator, dtype=_F64) / math.sqrt(D)


def random_subspaces(D: int, dims, per_dim: int, *, generator: torch.Generator,
                     basis=random_orthonormal) -> tuple[Tensor, Tensor, Tensor]:
    """`per_dim` random affine subspaces θM + P0 for each d in `dims`, as one batch.

    Returns (P0 [B, D] ~ N(0, I), M [B, d_max, D] from `basis`, d [B]). Rows d..d_max−1 of M are
    zero: those θ coordinates get zero gradient and never move, so several d share one optimisation.
    """
    d_max, Ps, Ms = max(dims), [], []
    for d in dims:
        M = basis(per_dim, d, D, generator=generator)
        Ms.append(torch.cat([M, M.new_zeros(per_dim, d_max - d, D)], dim=1))
        Ps.append(torch.randn(per_dim, D, generator=generator, dtype=_F64))
    return torch.cat(Ps), torch.cat(Ms), torch.tensor(list(dims)).repeat_interleave(per_dim)


def minimize_in_subspace(loss_fn: LossFn, P0: Tensor, M: Tensor, config: OptimConfig) -> Tensor:
    """Optimise θ [B, d] from 0 for loss_fn(θM + P0) (Fort §3.3); returns the final P [B, D]."""
    def to_p(th: Tensor) -> Tensor:
        return P0 + torch.einsum("bd,bdD->bD", th, M)
    return to_p(minimize(lambda th: loss_fn(to_p(th)), P0.new_zeros(M.shape[:2]), config))


# ---------------------------------------------------------------- paths and barriers
def affine_projector(origin: Tensor, normals: Tensor) -> Callable[[Tensor], Tensor]:
    """x ↦ x − Σ_k ((x − origin)·u_k) u_k: projection onto {x : (x − origin) ⟂ every u_k}.
    origin [..., D]; normals [..., K, D] with orthonormal rows (broadcast against x [..., D])."""
    def project(x: Tensor) -> Tensor:
        coef = torch.einsum("...kD,...D->...k", normals, x - origin)
        return x - torch.einsum("...k,...kD->...D", coef, normals)
    return project


def polyline_losses(loss_fn: LossFn, nodes: Tensor, points_per_segment: int) -> Tensor:
    """Loss along the polyline through nodes [..., K, D] at `points_per_segment` evenly spaced points
    per segment (ends included, shared nodes once) -> [..., (K − 1)(p − 1) + 1]."""
    if points_per_segment < 2:
        raise ValueError(f"polyline_losses: points_per_segment={points_per_segment}; allowed >= 2")
    return torch.cat([loss_fn(_segment_points(nodes, points_per_segment)), loss_fn(nodes[..., -1:, :])], dim=-1)


def polyline_points(nodes: Tensor, points_per_segment: int) -> Tensor:
    """The points `polyline_losses` evaluates, [..., (K − 1)(p − 1) + 1, D] (ends included, shared nodes once)."""
    return torch.cat([_segment_points(nodes, points_per_segment), nodes[..., -1:, :]], dim=-2)


def _segment_points(nodes: Tensor, p: int) -> Tensor:
    """p − 1 evenly spaced points per segment of the polyline nodes [..., K, D], each segment's start
    included and its end left to the next: [..., (K − 1)(p − 1), D]."""
    t = torch.linspace(0, 1, p, dtype=nodes.dtype, device=nodes.device)[:-1, None]
    a, b = nodes[..., :-1, None, :], nodes[..., 1:, None, :]
    return (a + t * (b - a)).flatten(-3, -2)


def barrier(losses: Tensor) -> Tensor:
    """max along the path − mean of its two endpoint losses (CLAIMS.md, Fort section): [..., T] -> [...]."""
    return losses.amax(-1) - 0.5 * (losses[..., 0] + losses[..., -1])


# ---------------------------------------------------------------- tunnels (§4.2, Fig. 3; LS-2)
@dataclass(frozen=True)
class Tunnel:
    """Tunnels between B pairs of optima through k hyperplane points."""

    fractions: Tensor  # [k] position t of each hyperplane along the line A→B (0 < t < 1)
    nodes: Tensor  # [B, k + 2, D] A, the optimised hyperplane points, B
    deviations: Tensor  # [B, k, D] point − (A + t(B − A)); normal to the line by construction
    cos: Tensor  # [B, k, k] cosines between the deviations (Fig. 3 middle)
    linear_losses: Tensor  # [B, (k + 1)(p − 1) + 1] loss along the straight line A→B
    tunnel_losses: Tensor  # [B, (k + 1)(p − 1) + 1] loss along A → points → B


def _optimise(loss_fn: LossFn, x0: Tensor, config: OptimConfig | None, project, descent_grad: GradFn | None) -> Tensor:
    """Projected descent from x0 on loss_fn's autograd gradient, or on `descent_grad` when given;
    config None: no optimisation (x0 itself: the unoptimised controls of the LS claims)."""
    if config is None:
        return x0.detach().clone()
    if descent_grad is None:
        return minimize(loss_fn, x0, config, project)
    return descend(descent_grad, x0, config, project)


def build_tunnel(loss_fn: LossFn, a: Tensor, b: Tensor, *, fractions, config: OptimConfig | None,
                 points_per_segment: int, descent_grad: GradFn | None = None) -> Tunnel:
    """Fort §4.2: divide the line A→B ([B, D] each) at `fractions`; at each, put up the (D − 1)-dim
    hyperplane normal to the line, start at its intersection with the line and minimise with projected
    GD/Adam; connect the optimised points by straight segments. The k hyperplanes form one batch.
    The line is sampled at the same resolution as the tunnel (p points per 1/(k+1) of its length).
    descent_grad: the gradient the optimiser follows (e.g. a network's mini-batch gradient,
    core.netloss) when it is not that of loss_fn, which then only evaluates the paths. config None:
    the points stay where they start, on the line (a control)."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"build_tunnel: a {tuple(a.shape)}, b {tuple(b.shape)}; allowed: both [B, D]")
    t = torch.as_tensor(fractions, dtype=a.dtype, device=a.device)
    if t.dim() != 1 or not bool(((t > 0) & (t < 1)).all()):
        raise ValueError(f"build_tunnel: fractions={t.tolist()}; allowed: a 1-D list inside (0, 1)")
    u = b - a
    u = (u / u.norm(dim=-1, keepdim=True))[:, None, None, :]  # [B, 1, 1, D]: one normal per pair
    start = a[:, None] + t[:, None] * (b - a)[:, None]  # [B, k, D] points on the line
    points = _optimise(loss_fn, start, config, affine_projector(start, u), descent_grad)
    dev = points - start
    nodes = torch.cat([a[:, None], points, b[:, None]], dim=1)
    line = polyline_losses(loss_fn, torch.stack([a, b], 1), len(t) * (points_per_segment - 1) + points_per_segment)
    return Tunnel(t, nodes, dev, cosine_matrix(dev), line, polyline_losses(loss_fn, nodes, points_per_segment))


def cosine_matrix(vectors: Tensor) -> Tensor:
    """Pairwise cosines of vectors [..., k, D] -> [..., k, k] (a zero vector has cosine 0 with all)."""
    unit = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)
    return unit @ unit.transpose(-1, -2)


def half_alignment(cos: Tensor, fractions) -> tuple[Tensor, Tensor, Tensor]:
    """Fig. 3 summaries of cos [..., k, k]: (within_first, within_second, across) = mean cosine over
    distinct pairs with t < ½, the same with t > ½, and mean |cosine| over pairs across the halves.
    A point at t = ½ belongs to neither half."""
    t = torch.as_tensor(fractions, dtype=cos.dtype, device=cos.device)
    lo, hi = t < 0.5, t > 0.5
    if lo.sum() < 2 or hi.sum() < 2:
        raise ValueError(f"half_alignment: fractions={t.tolist()}; need >= 2 points in each half")
    off = ~torch.eye(len(t), dtype=torch.bool, device=cos.device)
    within = [cos[..., m[:, None] & m[None] & off].mean(-1) for m in (lo, hi)]
    return within[0], within[1], cos[..., lo[:, None] & hi[None]].abs().mean(-1)


# ---------------------------------------------------------------- m-connectors (§4.3; LS-4, LS-7)
@dataclass(frozen=True)
class Connector:
    """m-connectors joining B sets of m + 1 optima."""

    hull_point: Tensor  # [B, D] the barycentre of the optima (the centre's start)
    normals: Tensor  # [B, m, D] orthonormal basis of span(optima − hull point)
    centre: Tensor  # [B, D] optimised centre, on hull_point + span(...)^⊥ (dim D − m)
    segment_losses: Tensor  # [B, m + 1, p] loss along centre → optimum i
    barriers: Tensor  # [B, m + 1] barrier of each segment


Objective = Callable[[Tensor, Tensor], Tensor]  # (centre [B, D], optima [B, m+1, D]) -> [B]


def centre_objective(loss_fn: LossFn) -> Objective:
    """The centre's own loss (Fort §4.3 read literally: optimise the point on its hyperplane)."""
    return lambda centre, optima: loss_fn(centre)


def segments_objective(loss_fn: LossFn, points_per_segment: int) -> Objective:
    """Mean loss over the p points of each segment centre → o_i (the connector's own loss)."""
    return lambda centre, optima: polyline_losses(
        loss_fn, torch.stack([centre[:, None].expand_as(optima), optima], 2), points_per_segment).mean((-1, -2))


def build_connector(loss_fn: LossFn, optima: Tensor, *, objective: Objective | None, config: OptimConfig | None,
                    points_per_segment: int, descent_grad: GradFn | None = None) -> Connector:
    """Fort §4.3: from the barycentre b of optima [B, m + 1, D], minimise `objective` over the
    (D − m)-dim affine subspace b + span(o_i − b)^⊥ (projected GD/Adam); the connector is the m + 1
    segments centre → o_i. span(o_i − b) = span(o_i − o_0), i = 1..m, whose QR gives the basis.
    descent_grad: the centre's gradient the optimiser follows instead of the objective's (e.g. the
    centre's mini-batch gradient, core.netloss; the objective is then unused). config None: the centre
    stays at the barycentre (a control)."""
    hull, normals = _hull_and_normals(optima, "build_connector")
    centre = _optimise(lambda c: objective(c, optima), hull, config, affine_projector(hull, normals), descent_grad)
    return _connector(loss_fn, optima, hull, normals, centre, points_per_segment)


def _hull_and_normals(optima: Tensor, who: str) -> tuple[Tensor, Tensor]:
    """Barycentre [B, D] and orthonormal basis [B, m, D] of span(o_i − o_0) (QR)."""
    if optima.dim() != 3 or optima.shape[1] < 2:
        raise ValueError(f"{who}: optima shape {tuple(optima.shape)}; allowed [B, m + 1, D], m >= 1")
    return optima.mean(1), torch.linalg.qr((optima[:, 1:] - optima[:, :1]).transpose(1, 2))[0].transpose(1, 2)


def _connector(loss_fn: LossFn, optima: Tensor, hull: Tensor, normals: Tensor, centre: Tensor, p: int) -> Connector:
    seg = polyline_losses(loss_fn, torch.stack([centre[:, None].expand_as(optima), optima], 2), p)
    return Connector(hull, normals, centre, seg, barrier(seg))


SegmentGrad = Callable[[Tensor, Tensor, Tensor], Tensor]  # (centres [B, D], optima [S, D], owner [S]) -> [B, D]


def segments_grad(point_grad: Callable[..., Tensor], points_per_segment: int, support: Tensor | None = None,
                  rows: int = 4096) -> SegmentGrad:
    """Analytic ∇ of `segments_objective` for ragged sets: optimum i [S, D] belongs to centre owner[i].

    F_b(C) = 1/(n_b p) Σ_{owner(i) = b} Σ_{k=0}^{p−1} L(C + t_k (o_i − C)), t_k = k/(p − 1), n_b segments:
    ∇F_b = [n_b ∇L(C) + Σ_i Σ_{k=1}^{p−2} (1 − t_k) ∇L(P_ik)] / (n_b p). The k = 0 point is C itself
    (evaluated once), the k = p − 1 point is o_i (independent of C). Points are built as in
    `polyline_losses` (C + t (o − C), up to rounding), `rows` at a time, and only on `support`, the
    coordinates L depends on (point_grad then takes and returns [..., len(support)]; the gradient is 0
    elsewhere). point_grad(P) -> ∇L(P), P [..., D'], must also accept a keyword `scratch`, this
    function's `Scratch` for its temporaries (it may ignore it). Works in the centres' dtype and device."""
    if points_per_segment < 2:
        raise ValueError(f"segments_grad: points_per_segment={points_per_segment}; allowed >= 2")
    inner = points_per_segment - 2  # the points strictly inside a segment
    per, ws = max(1, rows // max(1, inner)), Scratch()

    def _points(a: Tensor, d: Tensor, t: Tensor) -> Tensor:  # [s, p − 2, D'] C + t (o − C), into a reused buffer
        out = ws.get("points", (a.shape[0], inner, a.shape[-1]), a.dtype, a.device)
        return torch.addcmul(a[:, None], t[:, None], d[:, None], out=out)

    def on_support(x: Tensor) -> Tensor:
        return x if support is None else x[..., support]

    def back(g: Tensor, like: Tensor) -> Tensor:
        return g if support is None else torch.zeros_like(like).index_copy_(-1, support, g)

    def grad(centre: Tensor, optima: Tensor, owner: Tensor) -> Tensor:
        t = torch.linspace(0, 1, points_per_segment, dtype=centre.dtype, device=centre.device)[1:-1]
        w = 1 - t  # [p − 2]: w @ G sums (1 − t_k) G_k over the points
        a = centre[owner]
        a, d = on_support(a), on_support(optima - a)
        acc = torch.cat([w @ point_grad(_points(a[i:i + per], d[i:i + per], t), scratch=ws)
                         for i in range(0, a.shape[0], per)])
        n_b = torch.bincount(owner, minlength=centre.shape[0]).to(centre.dtype)[:, None]
        g = torch.zeros_like(centre).index_add_(0, owner, back(acc, optima))
        return (g + n_b * back(point_grad(on_support(centre)), centre)) / (n_b * points_per_segment)
    return grad


def build_connectors(groups: list[Tensor], *, loss_fn: LossFn, segment_grad: SegmentGrad, config: OptimConfig,
                     points_per_segment: int, pad_to: int = 0) -> list[Connector]:
    """`build_connector` for several groups of optima [B_g, m_g + 1, D] at once (ragged m), with the
    analytic gradient `segment_grad` (from `segments_grad`) of the segments objective. Each centre's
    projector gets zero rows up to the largest m, or `pad_to` if larger (they project nothing); rows
    stay independent."""
    if not groups:
        raise ValueError("build_connectors: groups=[]; allowed: a non-empty list of [B_g, m_g + 1, D] tensors")
    parts = [_hull_and_normals(o, "build_connectors") for o in groups]
    m_max = max([pad_to] + [nm.shape[1] for _, nm in parts])
    hull = torch.cat([h for h, _ in parts])
    normals = torch.cat([torch.cat([nm, nm.new_zeros(nm.shape[0], m_max - nm.shape[1], nm.shape[2])], 1)
                         for _, nm in parts])
    flat = torch.cat([o.reshape(-1, o.shape[-1]) for o in groups])
    sizes = torch.tensor([o.shape[1] for o in groups for _ in o], device=hull.device)
    owner = torch.arange(hull.shape[0], device=hull.device).repeat_interleave(sizes)
    centre = descend(lambda c: segment_grad(c, flat, owner), hull, config, affine_projector(hull, normals))
    out, i = [], 0
    for o, (h, nm) in zip(groups, parts):
        out.append(_connector(loss_fn, o, h, nm, centre[i:i + o.shape[0]], points_per_segment))
        i += o.shape[0]
    return out


def build_connectors_split(groups: list[Tensor], *, loss_fn: LossFn, point_grad: Callable[..., Tensor],
                           support: Tensor | None, config: OptimConfig, points_per_segment: int,
                           processes: int = 2) -> list[Connector]:
    """`build_connectors` with the groups shared out over `processes` spawned worker processes.

    Rows (centres) are independent and every part pads its projectors to the same largest m, so
    each centre sees the same arithmetic as in one process (tested: identical centres). Why: the
    objective's hot loop is many small row-wise ops that torch's intra-op threads do not speed up
    (measured), while two processes on two cores each run at full speed. `loss_fn` and
    `point_grad` must be picklable (module functions or functools.partial of them)."""
    if processes <= 1 or len(groups) < 2:
        return build_connectors(groups, loss_fn=loss_fn, config=config, points_per_segment=points_per_segment,
                                segment_grad=segments_grad(point_grad, points_per_segment, support))
    import concurrent.futures
    import multiprocessing
    shares = _balanced_shares([o.shape[0] * o.shape[1] for o in groups], processes)
    job = {"loss_fn": loss_fn, "point_grad": point_grad, "support": support, "config": config,
           "points_per_segment": points_per_segment, "pad_to": max(o.shape[1] - 1 for o in groups)}
    ctx = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    with concurrent.futures.ProcessPoolExecutor(len(shares), mp_context=ctx) as pool:
        futures = [pool.submit(_connectors_worker, [groups[i] for i in share], job) for share in shares]
        results = [f.result() for f in futures]
    out: list[Connector | None] = [None] * len(groups)
    for share, cons in zip(shares, results):
        for i, c in zip(share, cons):
            out[i] = c
    return out


def _balanced_shares(sizes: list[int], k: int) -> list[list[int]]:
    """Indices split into min(k, n) non-empty lists of near-equal total size (largest first, greedy)."""
    k = min(k, len(sizes))
    shares, totals = [[] for _ in range(k)], [0] * k
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        j = totals.index(min(totals))
        shares[j].append(i)
        totals[j] += sizes[i]
    return [sorted(s) for s in shares]


def _connectors_worker(groups: list[Tensor], job: dict) -> list[Connector]:
    torch.set_num_threads(1)
    return build_connectors(groups, loss_fn=job["loss_fn"], config=job["config"],
                            points_per_segment=job["points_per_segment"], pad_to=job["pad_to"],
                            segment_grad=segments_grad(job["point_grad"], job["points_per_segment"],
                                                       job["support"]))
