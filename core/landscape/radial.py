"""Angular width of the radial low-loss tunnel around an optimum (Fort & Jastrzebski 2019, §4.4, Fig. 5).

Fort §4.4: starting at an optimum w, rotate it towards a random direction at fixed norm and record the
angle at which a high loss is hit. With ŵ = w/‖w‖ and v a unit Gaussian direction orthogonalised
against w (registry LS-9 `rotation`),

    w(θ) = ‖w‖ (cos θ · ŵ + sin θ · v),   θ ∈ [0°, θ_max],

so ‖w(θ)‖ = ‖w‖ at every θ: the width measures direction, never the weight norm (a loss that depends
on ‖w‖ alone never rises along the rotation, and its width is censored at θ_max: the norm-only control).
The width along one direction is the smallest θ at which the train loss exceeds `level`, linearly
interpolated between the two grid angles around the crossing; a direction that never exceeds it gets
θ_max and is flagged censored. The probe's value is the mean width over the directions.

Every point of every direction is one row of a single batched loss call (`loss_fn`: points [..., D]
-> [...], e.g. core.netloss.NetLoss.loss), so K directions × T angles cost one vmapped evaluation.
With `chunk` = c the grid is walked in blocks of c angles instead, each block evaluated (one call)
only for the directions that have not yet crossed `level`: the width is the same first crossing on
the same grid, at the cost of the angles up to it (a trained MLP's widths of ~30° of 90: a third);
the losses past a direction's crossing block stay NaN.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RadialWidth", "rotation_directions", "radial_width"]


@dataclass(frozen=True)
class RadialWidth:
    theta: Tensor       # [T] degrees, the grid
    losses: Tensor      # [K, T] train loss along each rotation (NaN past a crossing when scanned in chunks)
    width: Tensor       # [K] degrees: first crossing of `level` (θ_max where censored)
    censored: Tensor    # [K] bool: never above `level` up to θ_max
    mean_width: Tensor  # [] degrees, the mean over the K directions
    level: float        # nats


def rotation_directions(w: Tensor, k: int, *, generator: torch.Generator) -> Tensor:
    """k unit Gaussian directions orthogonalised against w (Gram–Schmidt in fp64), [k, D] in w's dtype."""
    if w.dim() != 1 or not bool(torch.isfinite(w).all()) or float(w.norm()) == 0.0:
        raise ValueError("rotation_directions: w must be a finite, nonzero flat vector [D]")
    if k < 1 or w.numel() < 2:
        raise ValueError(f"rotation_directions: need k >= 1 directions and D >= 2, got k={k}, D={w.numel()}")
    w_hat = (w.double() / w.double().norm()).cpu()
    g = torch.randn(k, w.numel(), generator=generator, dtype=torch.float64)
    v = g - (g @ w_hat)[:, None] * w_hat[None]
    return (v / v.norm(dim=1, keepdim=True)).to(device=w.device, dtype=w.dtype)


def radial_width(loss_fn: Callable[[Tensor], Tensor], w: Tensor, directions: Tensor, *, level: float,
                 theta_max: float = 90.0, theta_points: int = 91, chunk: int | None = None) -> RadialWidth:
    """Width in degrees of the low-loss region along the rotations of w towards each direction
    (module docstring). directions: [K, D], each orthogonal to w (`rotation_directions`); chunk:
    angles per block of the early-stopped scan (None: the whole grid in one call)."""
    if theta_points < 2 or not 0 < theta_max <= 180:
        raise ValueError(f"radial_width: need theta_points >= 2 and 0 < theta_max <= 180, got "
                         f"{theta_points}, {theta_max}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"radial_width: chunk must be >= 1 angles or None, got {chunk}")
    if directions.dim() != 2 or directions.shape[1] != w.numel():
        raise ValueError(f"radial_width: directions must be [K, {w.numel()}], got {list(directions.shape)}")
    off = (directions.double() @ w.double()).abs().max() / w.double().norm()
    if float(off) > 1e-4:
        raise ValueError(f"radial_width: directions are not orthogonal to w (max |<v, ŵ>| = {float(off):.2e})")
    theta = torch.linspace(0.0, theta_max, theta_points, dtype=torch.float64)
    rad = theta * (math.pi / 180.0)
    norm, w_hat = w.double().norm(), w.double() / w.double().norm()
    v = directions.double() / directions.double().norm(dim=1, keepdim=True)

    def rows(k: Tensor, a: Tensor) -> Tensor:  # w(θ_a) towards directions k: [|k|, |a|, D]
        return norm * (torch.cos(rad[a])[None, :, None] * w_hat[None, None] + torch.sin(rad[a])[None, :, None] * v[k][:, None])
    losses = torch.full((v.shape[0], theta_points), math.nan, dtype=torch.float64)
    live = torch.arange(v.shape[0])
    step = theta_points if chunk is None else chunk
    with torch.no_grad():
        for lo in range(0, theta_points, step):
            a = torch.arange(lo, min(lo + step, theta_points))
            block = loss_fn(rows(live, a).to(w.dtype)).double().cpu()  # [K_live, |a|]
            losses[live[:, None], a[None]] = block
            live = live[~(block > float(level)).any(1)]
            if not len(live):
                break
    width, censored = _first_crossing(theta, losses, float(level))
    return RadialWidth(theta, losses, width, censored, width.mean(), float(level))


def _first_crossing(theta: Tensor, losses: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Per row: the smallest θ with loss > level, linearly interpolated on the segment where it first
    crosses (θ_0 if the start is already above it); θ_max and censored where it never does."""
    above = losses > level
    censored = ~above.any(dim=1)
    j = torch.where(censored, torch.zeros_like(censored, dtype=torch.long), above.long().argmax(dim=1))
    i = (j - 1).clamp(min=0)
    l0, l1 = losses.gather(1, i[:, None])[:, 0], losses.gather(1, j[:, None])[:, 0]
    t0, t1 = theta[i], theta[j]
    frac = torch.where(j > 0, ((level - l0) / (l1 - l0)).clamp(0.0, 1.0), torch.zeros_like(l0))
    width = torch.where(censored, theta[-1].expand_as(l0), t0 + frac * (t1 - t0))
    return width, censored
