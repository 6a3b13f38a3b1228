"""Asymmetry of a direction from its loss line (He, Huang, Yuan 2019, Definition 1).

Definition 1 (paper §3.1): given p > 0, r̄ > r > 0, c > 1, a unit direction u is (r̄, r, p, c)-asymmetric
at w if d/dl L̂(w + l·u) < p and d/dl L̂(w − l·u) > c·p for all l ∈ (r, r̄).

This module turns that existential definition into a number per direction, computed from a loss
line L(l) = L̂(w + l·u) sampled on a uniform grid symmetric about 0 (CLAIMS.md, He et al. section):

    outward slopes   s₊(l) = d/dl L(+l),   s₋(l) = d/dl L(−l)      (finite differences, l > 0)
    window           (r, R) with r = r_frac·R (R = the grid's max |l| unless given)
    flat side        the side with the smaller mean outward slope on the window
    index            c_u = min s_sharp / max s_flat   (the largest c for which some p works)
    valley           max s_flat > 0; otherwise "not a valley along u" (loss falls on the flat side):
                     c_u = nan and the direction is counted separately, never as asymmetric
    asymmetric       valley and c_u > c_threshold (CLAIMS: 2)

Slopes are forward differences between neighbouring grid points, reported at their midpoints
m_j = l_j + h/2; a difference enters the window iff its whole interval [l_j, l_{j+1}] lies in [r, R].
By the mean-value theorem each difference is a slope attained inside the window, and the slopes of a
piecewise-linear line with kinks on grid points are exact.

`radius_for_rise` is the per-direction R rule (one scale-free rule for every direction family): the
smallest l > 0 at which the loss on the side that rises faster has gone up by Δ above L(0).

Shapes: steps [s]; losses [..., s]; every result is batched over the leading dims "...".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AsymmetryResult", "asymmetry_index", "outward_slopes", "radius_for_rise"]

_GRID_RTOL = 1e-6  # relative tolerance (units of the grid spacing h) for "uniform" and "symmetric"


@dataclass(frozen=True)
class AsymmetryResult:
    """Definition-1 asymmetry of a batch of directions; every field is a tensor over the batch dims."""

    c: Tensor  # [...] c_u = min s_sharp / max s_flat on the window; nan where not a valley
    flat_side: Tensor  # [...] int64: +1 if the +u side is the flat one, −1 if the −u side is
    is_valley: Tensor  # [...] bool: window non-empty and max s_flat > 0
    asymmetric: Tensor  # [...] bool: is_valley and c > c_threshold
    p: Tensor  # [...] max outward slope on the flat side over the window (Definition 1's p, attained)
    q: Tensor  # [...] min outward slope on the sharp side over the window (= c·p when a valley)
    R: Tensor  # [...] outer radius r̄ of the window (loss-line units of l)
    r: Tensor  # [...] inner radius r_frac·R
    has_window: Tensor  # [...] bool: R finite and at least one grid interval inside [r, R]
    slopes: Tensor  # [..., 2, m] outward slopes: [..., 0, :] along +u, [..., 1, :] along −u
    mids: Tensor  # [m] distance |l| at which each slope is taken (interval midpoints)
    window: Tensor  # [..., m] bool: interval inside [r, R]
    c_threshold: float  # a direction is asymmetric iff c > c_threshold


def _check_grid(steps: Tensor) -> float:
    """Validate a uniform, increasing grid symmetric about 0; return its spacing h."""
    if not isinstance(steps, Tensor) or steps.dim() != 1 or steps.numel() < 4:
        shape = tuple(steps.shape) if isinstance(steps, Tensor) else type(steps).__name__
        raise ValueError(f"steps must be a 1-D tensor with at least 4 points; got {shape}")
    st = steps.detach().to(torch.float64).cpu()
    if not torch.isfinite(st).all():
        raise ValueError(f"steps must be finite; got {st.tolist()}")
    d = st.diff()
    h = float(d.mean())
    if h <= 0 or (d - h).abs().max() > _GRID_RTOL * h * 10:
        raise ValueError(f"steps must be a uniform increasing grid; got spacings {d.unique().tolist()[:5]}")
    asym = float((st + st.flip(0)).abs().max())
    if asym > _GRID_RTOL * h * 10:
        raise ValueError(
            f"steps must be symmetric about 0 (steps[k] == -steps[-1-k]); got {st[0]:.6g}..{st[-1]:.6g} "
            f"(max |steps + flip(steps)| = {asym:.3g})"
        )
    return h


def _check_losses(steps: Tensor, losses: Tensor) -> None:
    """Validate losses [..., s] against steps [s]: matching last dim, floating, finite."""
    if not isinstance(losses, Tensor) or losses.dim() < 1 or losses.shape[-1] != steps.shape[0]:
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"losses must have shape [..., {steps.shape[0]}] (last dim = len(steps)); got {shape}")
    if not losses.is_floating_point():
        raise ValueError(f"losses must be a floating tensor; got dtype {losses.dtype}")
    bad = ~torch.isfinite(losses)
    if bad.any():
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"losses contain {int(bad.sum())} non-finite values (first at index {first})")


def outward_slopes(steps: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """Outward slopes on both sides of l = 0 by forward differences.

    s₊(m_j) = (L(l_{j+1}) − L(l_j)) / h and s₋(m_j) = (L(−l_{j+1}) − L(−l_j)) / h for the grid's
    non-negative points l_j (odd grids include l = 0; even grids start at h/2), m_j = l_j + h/2.
    Returns (slopes [..., 2, m], mids [m]).
    """
    h = _check_grid(steps)
    _check_losses(steps, losses)
    s = steps.shape[0]
    pos = losses[..., s // 2 :]  # L(l) for l ≥ 0 (or ≥ h/2), increasing distance
    neg = losses[..., : (s + 1) // 2].flip(-1)  # L(−l), same distances
    slopes = torch.stack([pos.diff(dim=-1), neg.diff(dim=-1)], dim=-2) / h
    dist = steps[s // 2 :].to(losses.dtype)
    mids = (dist[:-1] + dist[1:]) / 2
    return slopes, mids


def _window(mids: Tensor, h: float, r: Tensor, R: Tensor) -> Tensor:
    """Intervals [m − h/2, m + h/2] inside [r, R] (tolerance 1e-6·h); r, R [...] -> mask [..., m]."""
    tol = _GRID_RTOL * h
    lo = (mids - h / 2) >= (r.unsqueeze(-1) - tol)
    hi = (mids + h / 2) <= (R.unsqueeze(-1) + tol)
    return lo & hi & torch.isfinite(R).unsqueeze(-1)


def _outer_radius(steps: Tensor, R, batch: torch.Size, like: Tensor) -> Tensor:
    """R as a tensor over the batch; None -> grid max. Finite R must lie in (0, max|l|]; inf/nan -> no window."""
    lmax = float(steps.abs().max())
    if R is None:
        return torch.full(batch, lmax, dtype=like.dtype, device=like.device)
    Rt = torch.as_tensor(R, dtype=like.dtype, device=like.device)
    fin = Rt[torch.isfinite(Rt)]
    if fin.numel() and (fin.min() <= 0 or fin.max() > lmax * (1 + _GRID_RTOL)):
        raise ValueError(f"R must lie in (0, {lmax:.6g}] (the grid's max |l|) or be non-finite; got {Rt.tolist()}")
    try:
        return torch.broadcast_to(Rt, batch).clone()
    except RuntimeError:
        raise ValueError(f"R must broadcast to the batch shape {tuple(batch)}; got shape {tuple(Rt.shape)}") from None


def asymmetry_index(
    steps: Tensor,
    losses: Tensor,
    *,
    r_frac: float = 0.3,
    R: float | Tensor | None = None,
    c_threshold: float = 2.0,
) -> AsymmetryResult:
    """Definition-1 asymmetry index of each loss line (He et al. 2019 §3.1; CLAIMS.md "Asymmetry of u").

    steps [s]: uniform grid symmetric about 0; losses [..., s]: L(w + l·u) on that grid.
    r_frac ∈ (0, 1): inner radius r = r_frac·R. R: outer radius r̄ (float, or tensor broadcastable to
    the batch dims, e.g. from `radius_for_rise`); None = the grid's max |l|; a non-finite entry means
    "no window" (has_window False, c nan, not a valley, not asymmetric).
    """
    if not (isinstance(r_frac, (int, float)) and 0.0 < float(r_frac) < 1.0):
        raise ValueError(f"r_frac must lie in the open interval (0, 1); got {r_frac!r}")
    if not (isinstance(c_threshold, (int, float)) and c_threshold > 0):
        raise ValueError(f"c_threshold must be a positive number; got {c_threshold!r}")
    h = _check_grid(steps)
    slopes, mids = outward_slopes(steps, losses)
    batch = losses.shape[:-1]
    R_t = _outer_radius(steps, R, batch, losses)
    r_t = r_frac * R_t
    window = _window(mids, h, r_t, R_t).expand(*batch, mids.shape[0])
    n_in = window.sum(-1)
    mean = (slopes * window.unsqueeze(-2)).sum(-1) / n_in.clamp(min=1).unsqueeze(-1)  # [..., 2]
    plus_flat = mean[..., 0] <= mean[..., 1]  # ties (perfectly symmetric lines) call +u flat
    flat = torch.where(plus_flat.unsqueeze(-1), slopes[..., 0, :], slopes[..., 1, :])
    sharp = torch.where(plus_flat.unsqueeze(-1), slopes[..., 1, :], slopes[..., 0, :])
    p = torch.where(window, flat, -torch.inf).amax(-1)
    q = torch.where(window, sharp, torch.inf).amin(-1)
    has_window = n_in > 0
    is_valley = has_window & (p > 0)
    c = torch.where(is_valley, q / torch.where(is_valley, p, 1.0), torch.nan)
    return AsymmetryResult(
        c=c,
        flat_side=torch.where(plus_flat, 1, -1).to(torch.int64),
        is_valley=is_valley,
        asymmetric=is_valley & (c > c_threshold),
        p=torch.where(has_window, p, torch.nan),
        q=torch.where(has_window, q, torch.nan),
        R=R_t,
        r=r_t,
        has_window=has_window,
        slopes=slopes,
        mids=mids,
        window=window,
        c_threshold=float(c_threshold),
    )


def _first_crossing(dist: Tensor, rise: Tensor, delta: float) -> Tensor:
    """Smallest distance where rise [..., n] (rise[..., 0] = 0) reaches delta, linearly interpolated; inf if never."""
    hit = rise >= delta
    j = hit.to(torch.int64).argmax(-1).clamp(min=1)  # first hit index (≥ 1 since rise[0] = 0 < delta)
    r1 = rise.gather(-1, j.unsqueeze(-1)).squeeze(-1)
    r0 = rise.gather(-1, (j - 1).unsqueeze(-1)).squeeze(-1)
    d0, d1 = dist[j - 1], dist[j]
    frac = (delta - r0) / (r1 - r0)  # r0 < delta ≤ r1 at the first hit, so 0 < frac ≤ 1
    at = d0 + frac * (d1 - d0)
    return torch.where(hit.any(-1), at, torch.inf)


def radius_for_rise(steps: Tensor, losses: Tensor, delta: float) -> Tensor:
    """Per-direction outer radius R: the smallest l > 0 with max(L(l), L(−l)) − L(0) ≥ Δ.

    That is the first distance at which the faster-rising ("steeper") side's loss rise above L(0)
    reaches Δ, linearly interpolated between grid points. Scale-free across direction families: it
    depends on the loss, not on the norm convention of u. Needs 0 on the grid (odd length).

    Returns R [...] (same dtype as losses). Never reached within the grid on either side -> +inf
    ("flat within the scan"); `asymmetry_index` then reports has_window False for that direction.
    """
    _check_grid(steps)
    _check_losses(steps, losses)
    if steps.shape[0] % 2 != 1:
        raise ValueError(f"radius_for_rise needs l = 0 on the grid (odd number of steps); got {steps.shape[0]}")
    if not (isinstance(delta, (int, float)) and 0.0 < float(delta) < float("inf")):
        raise ValueError(f"delta must be a positive finite number; got {delta!r}")
    s = steps.shape[0]
    l0 = losses[..., s // 2 : s // 2 + 1]
    dist = steps[s // 2 :].to(losses.dtype)
    rise_pos = losses[..., s // 2 :] - l0
    rise_neg = losses[..., : s // 2 + 1].flip(-1) - l0
    cross = torch.stack([_first_crossing(dist, rise_pos, delta), _first_crossing(dist, rise_neg, delta)])
    return cross.amin(0)
