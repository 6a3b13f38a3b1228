"""The n-wedge surrogate landscape and its probes (Fort & Jastrzebski 2019, §3.2–§3.3, §4.2–§4.3).

Surrogate (§3.2): "sort the components of P based on their absolute value, take the D − n smallest
values, take a square root of the sum of their squares" — the L2 distance to the nearest of the
C(D, n) axis-aligned n-wedges (coordinate n-planes through the origin):

    L_toy(P) = ‖P_S‖₂,   S(P) = indices of the D − n smallest |P_j|   (the short set).

Gradient: ∇L = P_S / L on S, 0 elsewhere. At ties |P_i| = |P_j| across the boundary of S, torch.topk
picks one index set and the gradient is that piece's, one element of the Clarke subdifferential (L is
continuous there); at L = 0 it is 0, the minimum-norm subgradient. ½L² is smooth on each piece with
Hessian diag(1_S): eigenvalue 1 per short (pinned) coordinate, 0 per long one.

The optimisation probes that run on this landscape (projected descent, random subspaces, tunnels,
m-connectors, barriers) work on any flat-vector loss and live in core/connectors.py. Here, batched
(float64, explicit generators):
  * `pinned_count`, `smoothed_hessian` + `short_direction_count`: short directions (Fig. 4).
  * `well_probe`: loss rise along random unit directions at radii a ("circular well", §3.3).

Analytic gradients (`wedge_grad`, `bowl_grad`) feed `connectors.descend` and `connectors.segments_grad`
without autograd: the m-connector objective evaluates L_toy at (m + 1)·41 points per centre and step,
and selecting the D − n smallest |P_j| there dominated the cost (torch.topk ~4 µs a row).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from core.connectors import LossFn, Scratch

__all__ = ["bowl_grad", "bowl_loss", "coefficient_of_variation", "pinned_count", "project_to_wedge",
           "random_unit", "short_direction_count", "smallest_indicator", "smoothed_hessian", "wedge_grad",
           "wedge_half_sq", "wedge_loss", "wedge_mask", "well_probe"]

_F64 = torch.float64


# ---------------------------------------------------------------- landscapes
def _short_idx(P: Tensor, n: int) -> Tensor:
    """Indices [..., D − n] of the D − n smallest |P_j| (no gradient flows through the choice)."""
    D = P.shape[-1]
    if not isinstance(n, int) or not 0 <= n <= D:
        raise ValueError(f"wedge: n={n!r}; allowed: an int with 0 <= n <= D = {D}")
    return P.detach().abs().topk(D - n, dim=-1, largest=False).indices


def wedge_loss(P: Tensor, n: int) -> Tensor:
    """L_toy(P) for P [..., D] -> [...] (Fort §3.2). vector_norm's backward gives 0 at L = 0."""
    return torch.linalg.vector_norm(P.gather(-1, _short_idx(P, n)), dim=-1)


def wedge_half_sq(P: Tensor, n: int) -> Tensor:
    """½ L_toy(P)² = ½ Σ_{j∈S(P)} P_j², [..., D] -> [...]; Hessian diag(1_S) on each piece."""
    return 0.5 * P.gather(-1, _short_idx(P, n)).square().sum(-1)


def wedge_mask(P: Tensor, n: int) -> Tensor:
    """bool [..., D]: True on S(P), the D − n coordinates the nearest wedge pins to 0."""
    return torch.zeros(P.shape, dtype=torch.bool, device=P.device).scatter_(-1, _short_idx(P, n), True)


def project_to_wedge(P: Tensor, n: int) -> Tensor:
    """The nearest wedge point of P [..., D]: its D − n smallest-|.| coordinates set to 0 (L_toy = 0)."""
    return P.masked_fill(wedge_mask(P, n), 0.0)


def bowl_loss(P: Tensor, *, centre: Tensor, curvature: Tensor) -> Tensor:
    """Control landscape sqrt(Σ_j κ_j (P_j − c_j)²): one bowl (its square is a quadratic) with
    minimum set {P : P_j = c_j wherever κ_j > 0}; 1-homogeneous like L_toy, so thresholds keep units.
    κ = 1 everywhere: isotropic bowl; κ = 1 on D − n coordinates, 0 elsewhere: a single n-wedge."""
    return torch.linalg.vector_norm(curvature.sqrt() * (P - centre), dim=-1)


def smallest_indicator(P: Tensor, k: int, scratch: Scratch | None = None) -> Tensor:
    """[..., D] 0/1 (P's dtype): 1 on the k smallest |P_j| of each row, the set that
    topk(|P|, k, largest=False) picks, so `wedge_grad` selects exactly what `wedge_loss` does.

    Fast path, float32 arithmetic only (comparisons to bool are ~4x slower on CPU): k times,
    sign(b − min b) is 0 on the row minimum (every copy of it), 1 elsewhere, and b ← b / sign sends the
    minimum to inf (0/0 = nan if it is 0); the k removed entries are then the infinite ones. Rounding
    to float32 is monotone (a < b ⇒ fl(a) <= fl(b)), so a row that removed exactly k entries has every
    other |P_j| strictly above them in float64 too. Other rows (float32 ties, zeros, nan) use topk."""
    D = P.shape[-1]
    if not isinstance(k, int) or not 0 <= k <= D:
        raise ValueError(f"smallest_indicator: k={k!r}; allowed: an int with 0 <= k <= D = {D}")
    if k in (0, D):
        return torch.full(P.shape, float(k == D), dtype=P.dtype)
    ws = scratch or Scratch()
    b = ws.get("abs", P.shape, torch.float32).copy_(P.detach()).abs_()
    sign = ws.get("sign", P.shape, torch.float32)
    for _ in range(k):
        b.div_(torch.sub(b, b.amin(-1, keepdim=True), out=sign).sign_())
    ind = ws.get("ind", P.shape, P.dtype).copy_(  # 1 exactly where b = inf
        torch.sub(b, torch.finfo(b.dtype).max, out=sign).clamp_(0.0, 1.0))
    bad = ind.sum(-1) != k
    if bool(bad.any()):
        rows = P.detach()[bad].abs()
        ind[bad] = torch.zeros_like(rows).scatter_(-1, rows.topk(k, dim=-1, largest=False).indices, 1.0)
    return ind


def wedge_grad(P: Tensor, n: int, rows: int = 4096, scratch: Scratch | None = None) -> Tensor:
    """∇L_toy(P) = P_S / L on S(P), 0 elsewhere and at L = 0 (what autograd of `wedge_loss` gives),
    [..., D] -> [..., D], `rows` rows at a time (temporaries stay a few MB)."""
    if not isinstance(n, int) or not 0 <= n <= P.shape[-1]:
        raise ValueError(f"wedge: n={n!r}; allowed: an int with 0 <= n <= D = {P.shape[-1]}")
    flat, ws = P.reshape(-1, P.shape[-1]), scratch or Scratch()
    if flat.shape[0] <= rows:
        return _wedge_grad_rows(flat, n, ws).view(P.shape)
    out = torch.empty_like(flat)
    for i in range(0, flat.shape[0], rows):
        out[i:i + rows] = _wedge_grad_rows(flat[i:i + rows], n, ws)
    return out.view(P.shape)


def _wedge_grad_rows(P: Tensor, n: int, ws: Scratch) -> Tensor:
    short = torch.mul(P, smallest_indicator(P, P.shape[-1] - n, ws), out=ws.get("short", P.shape, P.dtype))
    L = torch.linalg.vector_norm(short, dim=-1, keepdim=True)
    return short.mul_(torch.where(L > 0, 1 / L, 0.0))


def bowl_grad(P: Tensor, *, centre: Tensor, curvature: Tensor, scratch: Scratch | None = None) -> Tensor:
    """∇ of `bowl_loss`: κ ⊙ (P − c) / L, 0 at L = 0, [..., D] -> [..., D] (`scratch` unused)."""
    r = curvature * (P - centre)
    L = bowl_loss(P, centre=centre, curvature=curvature)[..., None]
    return torch.where(L > 0, r / L, 0.0)


# ---------------------------------------------------------------- short directions (Fig. 4; LS-4)
def pinned_count(P: Tensor, zero_tol: float) -> Tensor:
    """#{j : |P_j| < zero_tol}, [..., D] -> [...]: the short directions of a point of the wedge
    landscape (§3.1: on one wedge the D − n pinned coordinates; on an intersection, the union)."""
    return (P.abs() < zero_tol).sum(-1)


def smoothed_hessian(fn: Callable[[Tensor], Tensor], P: Tensor, *, sigma: float, samples: int,
                     generator: torch.Generator) -> Tensor:
    """H̄_σ(P) = E_ξ ∇²fn(P + σξ), ξ ~ N(0, I), from `samples` draws; P [B, D] -> [B, D, D].
    `fn` maps one point [D] to a scalar (torch.func.hessian, vmapped). σ = 0: the plain Hessian.
    ½L_toy² is piecewise quadratic, so its pointwise Hessian diag(1_S) cannot see nearby wedges;
    averaging over a ball of radius ~σ can (near an intersection more coordinates get weight)."""
    k = samples if sigma > 0 else 1
    xi = torch.randn(k, *P.shape, generator=generator, dtype=P.dtype)
    pts = (P + sigma * xi).reshape(-1, P.shape[-1])
    return torch.func.vmap(torch.func.hessian(fn))(pts).reshape(k, *P.shape, P.shape[-1]).mean(0)


def short_direction_count(H: Tensor, reference_top, frac: float) -> Tensor:
    """#{eigenvalues of H [..., D, D] > frac · reference_top} -> [...] (Fort Fig. 4 counts Hessian
    eigenvalues above a threshold; reference = e.g. the top eigenvalue at the optima, scale-free)."""
    if not 0 < frac <= 1:
        raise ValueError(f"short_direction_count: frac={frac}; allowed 0 < frac <= 1")
    eig = torch.linalg.eigvalsh(H)
    return (eig > frac * torch.as_tensor(reference_top, dtype=eig.dtype)[..., None]).sum(-1)


# ---------------------------------------------------------------- the "circular well" (§3.3; LS-3)
def random_unit(shape: tuple[int, ...], D: int, *, generator: torch.Generator) -> Tensor:
    """Uniform random unit vectors [*shape, D] (normalised Gaussians)."""
    v = torch.randn(*shape, D, generator=generator, dtype=_F64)
    return v / v.norm(dim=-1, keepdim=True)


def well_probe(loss_fn: LossFn, P0: Tensor, radii, directions: int, *,
               generator: torch.Generator) -> Tensor:
    """rise[b, k, r] = L(P0_b + a_r v_bk) − L(P0_b) along `directions` random unit v per point P0 [B, D]."""
    a = torch.as_tensor(radii, dtype=P0.dtype)
    v = random_unit((P0.shape[0], directions), P0.shape[-1], generator=generator)
    return loss_fn(P0[:, None, None] + a[:, None] * v[:, :, None]) - loss_fn(P0)[:, None, None]


def coefficient_of_variation(rise: Tensor) -> Tensor:
    """std (ddof = 1) / mean across directions (dim −2) of rise [..., K, R] -> [..., R]."""
    return rise.std(-2) / rise.mean(-2).abs().clamp_min(torch.finfo(rise.dtype).tiny)
