"""SWA's flat side, judged around each line's own minimum (He, Huang, Yuan 2019, §6.1, Fig. 8; AV-10).

He et al. compare the loss rise on the two sides of w_SGD along u_inter = (w_SWA − w_SGD)/D,
D = ‖w_SWA − w_SGD‖, and along mixed directions v = (u_inter + u_rand)/‖·‖. That reading assumes that
w_SGD sits at the bottom of every such line. When it does not, the side of w_SGD that faces the line's
minimum descends first and the comparison reports where w_SGD is, not which side is flatter: an exactly
symmetric valley with w_SGD on one side of its minimum and w_SWA on the other comes out "SWA on the flat
side" every time (`probes.flat_side_comparison`, the originally registered probe, kept unchanged).
This probe judges the flat side around each line's own minimiser instead (a = at_minimum_frac):

  (i)  u_inter line  L(l) = L(w_SGD + l·u_inter), l = λ·D, λ on a uniform grid over `line_range`
       (the authors' λ ∈ [−2, 3]: w_SGD at 0, w_SWA at D). l* = the grid argmin of L. w_SGD is "at the
       line's minimum" iff |l*| ≤ a·D. With s = D − l* (from the line's minimum to w_SWA):
           rise_SWA = L(l* + s) − L(l*),   rise_opp = L(l* − s) − L(l*)     (linear interpolation)
           log ratio = ln(rise_opp / rise_SWA) if both rises > rise_floor, else no evidence (flagged).
  (ii) each mixed direction v has its own grid minimiser l*_v on radius_factor·D·[−1, 1] (n_points).
       |l*_v| > a·D: the direction counts `no_evidence_fraction` (½: no evidence either way). Else the
       Definition-1 flat side (asymmetry.py, window (r_frac·R, R), R = radius_factor·D) of the line
       re-centred at w_SGD + l*_v·v is compared with SWA's side, sign(⟨w_SWA − w_SGD, v⟩ − l*_v);
       a non-valley line still has a flatter side and counts. Fraction = mean over the directions.
  A seed whose w_SGD is not at the u_inter line's minimum gives no evidence either way: its log ratio
  is `no_evidence_log_ratio` and its fraction `no_evidence_fraction`, whatever (ii) found.

The re-centred lines need no scan of their own: the search grid is extended by ⌈a·D/h⌉ points (h its
spacing) on each side, so every admissible re-centred grid l*_v + [−R, R] is a slice of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from core.landscape import directions as dirs
from core.landscape.asymmetry import asymmetry_index
from core.landscape.scan import scan_lines

__all__ = ["FlatSideAtMinimum", "flat_side_at_minimum"]

Params = Mapping[str, Tensor]
_TOL = 1e-9  # relative slack for grid-point comparisons (|l*| = a·D exactly counts as at the minimum)


@dataclass(frozen=True)
class FlatSideAtMinimum:
    """AV-10 at the lines' own minima for one seed; distances l in weight-space units along unit directions."""

    distance: Tensor  # [] D = ‖w_SWA − w_SGD‖
    line_steps: Tensor  # [s] l = λ·D along u_inter (w_SGD at 0, w_SWA at D)
    line_losses: Tensor  # [s] train loss along u_inter
    l_star: Tensor  # [] grid argmin l* of line_losses
    at_minimum: Tensor  # [] bool: |l*| ≤ at_minimum_frac·D
    rise_swa: Tensor  # [] L(l* + s) − L(l*), s = D − l*; nan if l* − s leaves the grid
    rise_opposite: Tensor  # [] L(l* − s) − L(l*); nan if l* − s leaves the grid
    rises_ok: Tensor  # [] bool: both rises > rise_floor
    log_ratio: Tensor  # [] per-seed value: ln(rise_opp/rise_SWA), or no_evidence_log_ratio (flagged)
    mixed_steps: Tensor  # [m] extended search grid along each mixed direction (distance from w_SGD)
    mixed_losses: Tensor  # [n_random, m] train loss on it
    l_star_dir: Tensor  # [n_random] grid argmin l*_v within radius_factor·D·[−1, 1]
    dir_at_minimum: Tensor  # [n_random] bool: |l*_v| ≤ at_minimum_frac·D
    c: Tensor  # [n_random] Definition-1 index of the re-centred line; nan where not at the minimum
    flat_side: Tensor  # [n_random] ±1 flat side of the re-centred line along v; 0 where not at the minimum
    swa_side: Tensor  # [n_random] ±1: sign(⟨w_SWA − w_SGD, v⟩ − l*_v)
    swa_on_flat_side: Tensor  # [n_random] bool (False where not at the minimum)
    direction_value: Tensor  # [n_random] 1.0 / 0.0, or no_evidence_fraction where not at the minimum
    fraction: Tensor  # [] per-seed value: mean of direction_value, or no_evidence_fraction (seed flagged)


def _interp(steps: Tensor, values: Tensor, q: Tensor) -> Tensor:
    """values [s] on increasing steps [s], linearly interpolated at q [] (q inside [steps[0], steps[-1]])."""
    j = (torch.searchsorted(steps, q.reshape(1), right=True) - 1).clamp(0, steps.shape[0] - 2)[0]
    w = (q - steps[j]) / (steps[j + 1] - steps[j])
    return values[j] * (1 - w) + values[j + 1] * w


def _check(line_range, line_points, n_random, n_points, radius_factor, at_minimum_frac, no_evidence_fraction):
    lo, hi = (float(v) for v in line_range)
    a = float(at_minimum_frac)
    if not 0.0 < a < 1.0:
        raise ValueError(f"at_minimum_frac must lie in (0, 1); got {at_minimum_frac!r}")
    if not (lo <= -(1.0 + 2.0 * a) and hi >= 1.0):  # l* − s = 2l* − D ≥ −(1 + 2a)·D must stay on the line
        raise ValueError(f"line_range must contain [−(1 + 2·at_minimum_frac), 1] = [{-(1 + 2 * a)}, 1]; got {line_range!r}")
    if not isinstance(line_points, int) or line_points < 3:
        raise ValueError(f"line_points must be an int ≥ 3; got {line_points!r}")
    if not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random must be an int ≥ 1; got {n_random!r}")
    if not isinstance(n_points, int) or n_points < 5 or n_points % 2 == 0:
        raise ValueError(f"n_points must be an odd int ≥ 5; got {n_points!r}")
    if not (isinstance(radius_factor, (int, float)) and radius_factor > a):
        raise ValueError(f"radius_factor must be a number > at_minimum_frac = {a}; got {radius_factor!r}")
    if not 0.0 <= float(no_evidence_fraction) <= 1.0:
        raise ValueError(f"no_evidence_fraction must lie in [0, 1]; got {no_evidence_fraction!r}")
    return lo, hi, a


def _inter_line(L: Tensor, steps: Tensor, D: Tensor, a: float, rise_floor: float, no_evidence: float):
    """Part (i) on the scanned u_inter line: l*, the at-minimum flag, both rises and the per-seed log ratio."""
    j = L.argmin()
    l_star = steps[j]
    at_min = l_star.abs() <= a * D * (1 + _TOL)
    q = 2 * l_star - D  # l* − s with s = D − l*
    inside = q >= steps[0] - _TOL * D
    base = L[j]
    rise_swa = _interp(steps, L, D) - base
    rise_opp = torch.where(inside, _interp(steps, L, q.clamp_min(steps[0])) - base, torch.nan)
    rise_swa = torch.where(inside, rise_swa, torch.nan)
    ok = inside & (rise_swa > rise_floor) & (rise_opp > rise_floor)
    ratio = torch.log(rise_opp.clamp_min(1e-300) / rise_swa.clamp_min(1e-300))
    log_ratio = torch.where(at_min & ok, ratio, torch.full_like(ratio, no_evidence))
    return l_star, at_min, rise_swa, rise_opp, ok, log_ratio


def _mixed_grid(D: Tensor, n_points: int, radius_factor: float, a: float):
    """Search grid j·h, |j| ≤ half + ext (h = 2·radius_factor·D/(n_points − 1)): the search proper is
    |j| ≤ half; ext = ⌈a·D/h⌉ extra points per side hold every re-centred grid of an at-minimum line."""
    half = (n_points - 1) // 2
    ext = math.ceil(a * half / radius_factor - _TOL)
    h = radius_factor * D.double() / half
    j = torch.arange(-(half + ext), half + ext + 1, dtype=torch.float64, device=D.device)
    return j * h, half, ext, h


def _recentred(L: Tensor, grid: Tensor, half: int, ext: int, h: Tensor, a: float, D: Tensor, **def1):
    """Part (ii) per mixed direction: l*_v, the at-minimum flag and Definition 1 on the re-centred slice."""
    central = L[:, ext: ext + 2 * half + 1]
    jv = central.argmin(-1) - half  # grid index of l*_v (0 = w_SGD)
    l_star = grid[jv + half + ext]
    at_min = l_star.abs() <= a * D.double() * (1 + _TOL)
    start = (jv.clamp(-ext, ext) + ext).unsqueeze(-1)  # slice start; clamped rows are masked below
    window = L.gather(-1, start + torch.arange(2 * half + 1, device=L.device))
    t = torch.arange(-half, half + 1, dtype=torch.float64, device=L.device) * h
    return l_star, at_min, asymmetry_index(t, window.double(), **def1)


def flat_side_at_minimum(model, w_sgd: Params, w_swa: Params, buffers: Params, x: Tensor, y: Tensor, *,
                         n_random: int, generator: torch.Generator, line_range: Sequence[float] = (-2.0, 3.0),
                         line_points: int = 201, n_points: int = 41, radius_factor: float = 2.0,
                         r_frac: float = 0.3, c_threshold: float = 2.0, at_minimum_frac: float = 0.25,
                         rise_floor: float = 1e-4, no_evidence_log_ratio: float = 0.0,
                         no_evidence_fraction: float = 0.5, family="gauss", bn: str = "eval", ref_x=None,
                         loss="ce", scan_kw=None) -> FlatSideAtMinimum:
    """He et al. §6.1, Fig. 8 (AV-10), each line judged around its own minimum (module docstring).

    u_rand: n_random unit directions of `family` (a name or a sampler; He et al. do not name one).
    Scan options as in probes.py: bn ("eval" | "recompute"), ref_x, loss ("ce" or per-example callable),
    scan_kw (chunk, batch_size, ref_batch_size, vectorize). Two batched scans: line_points along u_inter,
    n_random × (n_points + 2·ext) along the mixed directions.
    """
    lo, hi, a = _check(line_range, line_points, n_random, n_points, radius_factor, at_minimum_frac,
                       no_evidence_fraction)
    kw = dict(bn=bn, ref_x=ref_x, loss=loss, **(scan_kw or {}))
    dtype = next(iter(w_sgd.values())).dtype
    d = dirs.sub(w_swa, w_sgd)
    D = dirs.norm(d).double()
    if not D > 0:
        raise ValueError("w_swa equals w_sgd: the SGD→SWA direction is undefined")
    u_inter = {k: (v / D).to(dtype) for k, v in d.items()}
    lam = torch.linspace(lo, hi, line_points, dtype=torch.float64, device=D.device)
    lam = torch.where(lam.abs() < _TOL * (hi - lo) / (line_points - 1), 0.0, lam)  # w_SGD itself, not 5e-17 off
    steps = lam * D
    line = scan_lines(model, w_sgd, buffers, {k: v.unsqueeze(0) for k, v in u_inter.items()}, steps.to(dtype),
                      x, y, **kw)[0]
    l_star, at_min, rise_swa, rise_opp, ok, log_ratio = _inter_line(line, steps, D, a, rise_floor,
                                                                    no_evidence_log_ratio)
    u_rand = dirs.sample_directions(w_sgd, family, n_random, generator=generator)
    mixed = dirs.normalize({k: u_inter[k].unsqueeze(0) + v for k, v in u_rand.items()}, batch_dims=1)
    grid, half, ext, h = _mixed_grid(D, n_points, float(radius_factor), a)
    L = scan_lines(model, w_sgd, buffers, mixed, grid.to(dtype), x, y, **kw)
    l_v, at_v, def1 = _recentred(L, grid, half, ext, h, a, D, r_frac=r_frac, c_threshold=c_threshold)
    swa_side = torch.where(dirs.dot({k: v.unsqueeze(0) for k, v in d.items()}, mixed, batch_dims=1).double()
                           >= l_v, 1, -1).to(torch.int64)
    on_flat = at_v & (def1.flat_side == swa_side)
    value = torch.where(at_v, on_flat.double(), float(no_evidence_fraction))
    fraction = torch.where(at_min, value.mean(), value.new_tensor(float(no_evidence_fraction)))
    return FlatSideAtMinimum(
        distance=D, line_steps=steps, line_losses=line, l_star=l_star, at_minimum=at_min, rise_swa=rise_swa,
        rise_opposite=rise_opp, rises_ok=ok, log_ratio=log_ratio, mixed_steps=grid, mixed_losses=L,
        l_star_dir=l_v, dir_at_minimum=at_v, c=torch.where(at_v, def1.c, torch.nan),
        flat_side=torch.where(at_v, def1.flat_side, 0), swa_side=swa_side, swa_on_flat_side=on_flat,
        direction_value=value, fraction=fraction)
