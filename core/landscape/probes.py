"""He et al. 2019 probes on real networks, built on batched scans (`scan.py`) and Definition 1 (`asymmetry.py`).

Every probe is a pure function of parameter dicts; stochastic ones take a `torch.Generator`. Each returns
a frozen dataclass of tensors (batched over directions / neighbours / rays): one number per unit is
reduced to one number per seed by the claim modules, never here. Scan options are shared by all probes:
`bn` ("eval" | "recompute"), `ref_x` (reference rows for recomputed BN, default the train x), `loss`
("ce" or a per-example callable) and `scan_kw` (chunk, batch_size, ref_batch_size, vectorize; scan.py).

    asymmetry_survey        §3.2, Def. 1: R per direction and rise scale, asymmetry index c_u (AV-1, AV-1b, AV-2)
    shift_gap               §4.2, Def. 3 / Assumption 1 along a line (AV-3)
    neighbour_asymmetry     §4.2, Assumption 2: perpendicular neighbours keep the asymmetry (AV-4)
    segment_profile         §6.1, Fig. 7: loss on the segment between two solutions (AV-8; Fort barriers)
    flat_side_comparison    §6.1, Fig. 8: SWA is on the flat side of SGD, judged at w_SGD (AV-10 as first
                            registered; the revised probe, judged at each line's minimum, is flat_side.py)
    random_ray_width        §6.2, Fig. 10: width along random rays (AV-11)
    profile_correlation     §5.2, Fig. 6: profile stabilisation during training (AV-12)
    profile_change          AV-12, descriptive: flat side and argmin of each checkpoint profile vs the final one
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from core.landscape import directions as dirs
from core.landscape.asymmetry import asymmetry_index, radius_for_rise
from core.landscape.scan import scan_lines, scan_lines_from

__all__ = [
    "SurveyResult", "asymmetry_survey", "ShiftGap", "shift_gap", "NeighbourResult", "neighbour_asymmetry",
    "SegmentProfile", "segment_profile", "FlatSideResult", "flat_side_comparison", "RayWidthResult",
    "random_ray_width", "profile_correlation", "ProfileChange", "profile_change", "ROUNDING",
]

Params = Mapping[str, Tensor]


def _kw(bn: str, ref_x, loss, scan_kw: Mapping[str, Any] | None) -> dict:
    return dict(bn=bn, ref_x=ref_x, loss=loss, **(scan_kw or {}))


def _positive(name: str, value) -> float:
    if not (isinstance(value, (int, float)) and 0 < float(value) < float("inf")):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


def _count(name: str, value, least: int, odd: bool = False) -> int:
    if not isinstance(value, int) or value < least or (odd and value % 2 == 0):
        raise ValueError(f"{name} must be {'an odd' if odd else 'an'} int ≥ {least}; got {value!r}")
    return value


def _one(p: Params) -> dict[str, Tensor]:
    return {k: v.unsqueeze(0) for k, v in p.items()}


def _like(p: Params) -> tuple[torch.device, torch.dtype]:
    t = next(iter(p.values()))
    return t.device, t.dtype


# ---------------------------------------------------------------- §3.2, Definition 1: survey

@dataclass(frozen=True)
class SurveyResult:
    """Definition-1 asymmetry of k directions at w over S rise scales Δ (the R rule's delta_rise).

    Combined fields ([k]) describe each direction's own window: the smallest Δ of the pre-registered
    set at which it is asymmetric, else the reference scale (the single delta_rise of the original rule).
    Per-scale fields are [S, k] over `deltas`. `original_*` is the originally registered rule: Δ =
    delta_rise only, no centre guard.
    """

    asymmetric: Tensor  # [k] bool: asymmetric at ≥ 1 Δ of the set (valley, centred, c_u > c_threshold, R found)
    scale_index: Tensor  # [k] int64: index into deltas of the direction's window; −1: not asymmetric anywhere
    c: Tensor  # [k] c_u on the direction's window; nan: not a valley or no rise
    is_valley: Tensor  # [k] bool: max flat-side slope > 0 (and R found), direction's window
    centred: Tensor  # [k] bool: the fine line's minimum lies in |l| < r_frac·R, direction's window
    flat_side: Tensor  # [k] int ±1: +u or −u is the flat side, direction's window
    R: Tensor  # [k] radius of the direction's window (units of l); inf where no rise within range
    no_rise: Tensor  # [k] bool: the steeper side never rose by Δ within r_search_max (direction's window)
    steps: Tensor  # [k, n_points] fine grid l = t·R of the direction's window (R → r_search_max if no rise)
    losses: Tensor  # [k, n_points] train loss on that grid
    test_losses: Tensor | None  # [k, n_points] test loss on the same grid (if x_test given)
    deltas: Tensor  # [S] rise scales computed (nats, increasing): the set ∪ {delta_rise}
    in_set: Tensor  # [S] bool: Δ belongs to the pre-registered set (decides `asymmetric`)
    reference: Tensor  # [] int64: index into deltas of delta_rise (the original rule's single scale)
    c_s: Tensor  # [S, k] c_u per scale (nan: not a valley or no rise)
    R_s: Tensor  # [S, k] R per scale (inf: no rise)
    asymmetric_s: Tensor  # [S, k] bool: asymmetric at that scale, centre guard included
    centred_s: Tensor  # [S, k] bool: w at the bottom of the fine line at that scale
    is_valley_s: Tensor  # [S, k] bool
    no_rise_s: Tensor  # [S, k] bool
    original_asymmetric: Tensor  # [k] bool: Δ = delta_rise, no centre guard (the original rule)
    original_c: Tensor  # [k] c_u at Δ = delta_rise
    coarse_steps: Tensor  # [2m+1] geometric search grid (±, with 0)
    coarse_losses: Tensor  # [k, 2m+1]
    directions: dict  # name -> [k, ...] the unit directions probed


def _radius_on_grid(dist: Tensor, losses: Tensor, delta: float) -> Tensor:
    """`radius_for_rise` on a non-uniform grid ±dist (dist[0] = 0): crossing found in index space, then
    mapped back piecewise-linearly, which is the same as interpolating linearly in l."""
    m = dist.shape[0] - 1
    idx = torch.arange(-m, m + 1, dtype=losses.dtype, device=losses.device)
    r_idx = radius_for_rise(idx, losses, delta)
    finite = torch.isfinite(r_idx)
    j = r_idx.where(finite, 0.0).floor().clamp(0, m - 1).long()
    d = dist.to(losses.dtype)
    at = d[j] + (r_idx.where(finite, 0.0) - j) * (d[j + 1] - d[j])
    return torch.where(finite, at, torch.inf)


def _scales(delta_rise: float, delta_rise_scales) -> tuple[list[float], list[bool]]:
    """The Δ to compute (the set ∪ {delta_rise}, increasing) and which of them belong to the set."""
    given = [delta_rise] if delta_rise_scales is None else list(delta_rise_scales)
    if not given:
        raise ValueError(f"delta_rise_scales must name at least one scale; got {delta_rise_scales!r}")
    want = {_positive("delta_rise_scales entry", v) for v in given}
    if len(want) != len(given):
        raise ValueError(f"delta_rise_scales must be distinct; got {list(delta_rise_scales)}")
    deltas = sorted(want | {delta_rise})
    return deltas, [d in want for d in deltas]


def _pick(per_scale: Tensor, sel: Tensor) -> Tensor:
    """per_scale [S, k, ...] -> [k, ...]: row sel[j] of direction j."""
    idx = sel.view(1, -1, *([1] * (per_scale.dim() - 2))).expand(1, *per_scale.shape[1:])
    return per_scale.gather(0, idx).squeeze(0)


def _centred(t: Tensor, fine: Tensor, r_frac: float) -> Tensor:
    """Centre guard: the fine line's grid minimiser lies inside |t| < r_frac (t = l/R), so w is at the
    bottom along u; else a side 'rises' only after descending to a minimum elsewhere (not Definition 1's case)."""
    return t[fine.argmin(-1)].abs() < r_frac * (1 - 1e-9)


def asymmetry_survey(model, params: Params, buffers: Params, x: Tensor, y: Tensor, *, family, k: int,
                     generator: torch.Generator, delta_rise: float, delta_rise_scales=None, r_frac: float = 0.3,
                     c_threshold: float = 2.0, n_points: int = 61, r_search_max: float,
                     r_search_points: int = 24, r_search_min: float | None = None, bn: str = "eval",
                     ref_x=None, loss="ce", x_test=None, y_test=None, scan_kw=None) -> SurveyResult:
    """He et al. §3.2 with Definition 1 on k random directions of `family` (a name or a sampler).

    R rule (pre-registered, scale-free, same for every family): R_Δ(u) = smallest l > 0 with
    max(L(w + l·u), L(w − l·u)) − L(w) ≥ Δ, searched on one coarse geometric grid
    l ∈ ±geomspace(r_search_min, r_search_max, r_search_points) ∪ {0} (default r_search_min =
    r_search_max/1000), linearly interpolated, for every Δ of delta_rise_scales ∪ {delta_rise}
    (None: delta_rise alone). Per Δ a fine uniform grid of n_points (odd) on [−R_Δ, R_Δ] (all scales in
    one batched scan) and the index c_u on the window (r_frac·R_Δ, R_Δ). Definition 1 is existential
    over (r̄, r, p, c): a direction is asymmetric iff it is so at ≥ 1 Δ of the set, counting a scale only
    where w is at the bottom of the fine line (`_centred`). "No rise within r_search_max" at a scale:
    c = nan, never asymmetric there (its fine grid spans ±r_search_max, for figures only).
    """
    delta, rmax = _positive("delta_rise", delta_rise), _positive("r_search_max", r_search_max)
    deltas, in_set = _scales(delta, delta_rise_scales)
    rmin = rmax / 1000 if r_search_min is None else _positive("r_search_min", r_search_min)
    if rmin >= rmax:
        raise ValueError(f"r_search_min must be < r_search_max; got {rmin} ≥ {rmax}")
    m, n = _count("r_search_points", r_search_points, 2), _count("n_points", n_points, 5, odd=True)
    kw = _kw(bn, ref_x, loss, scan_kw)
    device, dtype = _like(params)
    u = dirs.sample_directions(params, family, k, generator=generator)
    dist = torch.cat([torch.zeros(1, dtype=torch.float64),
                      torch.logspace(math.log10(rmin), math.log10(rmax), m, dtype=torch.float64)])
    coarse = torch.cat([-dist[1:].flip(0), dist]).to(device=device, dtype=dtype)
    coarse_l = scan_lines(model, params, buffers, u, coarse, x, y, **kw)
    R = torch.stack([_radius_on_grid(dist.to(device), coarse_l, dl) for dl in deltas])  # [S, k]
    no_rise = ~torch.isfinite(R)
    t = torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device=device)
    u_scaled = _scaled_per_scale(u, torch.where(no_rise, rmax, R))
    fine = scan_lines(model, params, buffers, u_scaled, t.to(dtype), x, y, **kw).view(len(deltas), k, n)
    a = asymmetry_index(t, fine, r_frac=r_frac, c_threshold=c_threshold)  # c is scale-free: t-units suffice
    centred = _centred(t, fine, r_frac)
    asym_s = a.asymmetric & ~no_rise & centred
    first, sel, ref = _windows(asym_s, in_set, deltas.index(delta))
    test = None if x_test is None else _pick(scan_lines(model, params, buffers, u_scaled, t.to(dtype), x_test,
                                                        y_test, **kw).view(len(deltas), k, n), sel)
    c_s, valley_s = torch.where(no_rise, torch.nan, a.c), a.is_valley & ~no_rise
    R_eff = torch.where(no_rise, rmax, R)
    return SurveyResult(
        asymmetric=first >= 0, scale_index=first, c=_pick(c_s, sel), is_valley=_pick(valley_s, sel),
        centred=_pick(centred, sel), flat_side=_pick(a.flat_side, sel), R=_pick(R, sel),
        no_rise=_pick(no_rise, sel), steps=t.view(1, -1) * _pick(R_eff, sel).view(-1, 1).double(),
        losses=_pick(fine, sel), test_losses=test, deltas=torch.tensor(deltas, dtype=torch.float64),
        in_set=torch.tensor(in_set), reference=torch.tensor(ref), c_s=c_s, R_s=R, asymmetric_s=asym_s,
        centred_s=centred, is_valley_s=valley_s, no_rise_s=no_rise,
        original_asymmetric=a.asymmetric[ref] & ~no_rise[ref], original_c=c_s[ref],
        coarse_steps=coarse, coarse_losses=coarse_l, directions=u)


def _scaled_per_scale(u: Params, R_eff: Tensor) -> dict[str, Tensor]:
    """Directions u [k, ...] scaled by each scale's radius R_eff [S, k] -> [S·k, ...] (scale-major), so
    one scan on t ∈ [−1, 1] covers every scale's fine grid l = t·R_Δ."""
    S = R_eff.shape[0]
    return {kk: v.repeat(S, *([1] * (v.dim() - 1))) * R_eff.flatten().to(v.dtype).view(-1, *([1] * (v.dim() - 1)))
            for kk, v in u.items()}


def _windows(asym_s: Tensor, in_set: list[bool], ref: int) -> tuple[Tensor, Tensor, int]:
    """Per direction: the smallest scale of the set at which it is asymmetric (−1: none) and the scale
    whose window describes it (that one, else the reference scale `ref`)."""
    S = asym_s.shape[0]
    hit = asym_s & torch.tensor(in_set, device=asym_s.device).view(-1, 1)
    first = torch.where(hit, torch.arange(S, device=asym_s.device).view(-1, 1), S).amin(0)
    first = torch.where(first < S, first, -1)
    return first, torch.where(first >= 0, first, ref), ref


# ---------------------------------------------------------------- §4.2, Definition 3: shift gap

@dataclass(frozen=True)
class ShiftGap:
    """Definition-3 shift gap along lines, batched over the leading dims "..." of the loss arrays.

    `log_ratio` is the revised per-direction value (a horizontal shift must beat no shift AND the best
    vertical rescaling, and must overlap); `original_log_ratio` is ln(ξ_δ*/ξ_0), the rule as first
    registered. Flagged lines (no overlap, or ξ_0 at rounding level) carry their no-evidence value.
    """

    deltas: Tensor  # [d] candidate shifts (units of steps)
    xi: Tensor  # [..., d] ξ_δ = max_{|l| ≤ inner} |L′(l + δ) − L̂(l)|
    xi0: Tensor  # [...] ξ_0
    delta_star: Tensor  # [...] argmin_δ ξ_δ
    xi_star: Tensor  # [...] ξ_δ*
    rescales: Tensor  # [a] candidate vertical factors of the test curve about its minimum
    a_star: Tensor  # [...] argmin_a of the rescaling gap
    xi_rescaled: Tensor  # [...] ξ_a* = min_a max_{|l| ≤ inner} |a(L − min L) + min L̂ − L̂|
    window_range: Tensor  # [...] max − min of L̂ on the inner window (the overlap scale, nats)
    overlaps: Tensor  # [...] bool: ξ_δ* ≤ overlap_frac × window_range ('overlap almost perfectly')
    degenerate: Tensor  # [...] bool: ξ_0 ≤ 1e-12 × the train line's range (no gap to explain)
    flagged: Tensor  # [...] bool: degenerate or not overlapping
    ratio: Tensor  # [...] ln(ξ_δ* / min(ξ_0, ξ_a*)), both floored at rounding level
    log_ratio: Tensor  # [...] revised value: ratio; max(ratio, 0) if no overlap; nan if degenerate
    original_log_ratio: Tensor  # [...] ln(ξ_δ*/ξ_0) (≤ 0 when 0 is a candidate; the original rule)


ROUNDING = 1e-12  # relative to a curve's range: gaps below this are rounding, not evidence


def _interp(steps: Tensor, values: Tensor, q: Tensor) -> Tensor:
    """Linear interpolation of values [..., s] on increasing steps [s] at query points q [m] -> [..., m]."""
    s = steps.shape[0]
    j = (torch.searchsorted(steps, q, right=True) - 1).clamp(0, s - 2)
    w = (q - steps[j]) / (steps[j + 1] - steps[j])
    return values[..., j] * (1 - w) + values[..., j + 1] * w


def _check_shift_inputs(steps: Tensor, train: Tensor, test: Tensor, deltas, inner, rescales, overlap_frac):
    if steps.dim() != 1 or steps.numel() < 3 or not (steps.diff() > 0).all():
        raise ValueError(f"steps must be an increasing 1-D grid of ≥ 3 points; got {tuple(steps.shape)}")
    if train.shape != test.shape or train.shape[-1] != steps.shape[0]:
        raise ValueError(f"train {tuple(train.shape)} and test {tuple(test.shape)} must both be [..., {steps.shape[0]}]")
    inner, frac = _positive("inner", inner), _positive("overlap_frac", overlap_frac)
    deltas = torch.as_tensor(deltas, dtype=torch.float64, device=steps.device).flatten()
    a = torch.as_tensor(rescales, dtype=torch.float64, device=steps.device).flatten()
    if a.numel() < 1 or not bool((a > 0).all() & torch.isfinite(a).all()):
        raise ValueError(f"rescales must be ≥ 1 positive finite factors; got {a.tolist()}")
    reach, tol = inner + float(deltas.abs().max()), 1e-6 * float(steps[-1] - steps[0])  # tol: float32 δ grids
    if float(steps[0]) > -reach + tol or float(steps[-1]) < reach - tol:
        raise ValueError(f"inner + max|δ| = {reach:.4g} leaves the grid [{float(steps[0]):.4g}, {float(steps[-1]):.4g}]")
    return inner, frac, deltas, a


def shift_gap(steps: Tensor, train: Tensor, test: Tensor, *, deltas: Tensor, inner: float, rescales: Tensor,
              overlap_frac: float) -> ShiftGap:
    """He et al. §4.2, Definition 3 along a line (Assumption 1, Fig. 3), with the revised AV-3 nulls.

    L′ = test − min_l test + min_l train (minima over the scanned line: the vertical offset removed);
    ξ_δ = max over grid points |l| ≤ inner of |L′(l + δ) − L̂(l)|, L′ linearly interpolated on the grid;
    δ* = argmin_δ ξ_δ over `deltas`. A test curve equal to the train curve shifted right by δ₀
    (test(l) = train(l − δ₀)) gives δ* = δ₀ and ξ_δ* = 0. Every l + δ must stay on the grid:
    inner + max|δ| ≤ max|l|.

    A shift must beat a vertical rescaling too (a steeper test curve is not a shifted one, yet a shift
    towards the flat side trades the sharp-side error for a smaller flat-side one):
    ξ_a* = min over `rescales` a of max_{|l| ≤ inner} |a(L(l) − min L) + min L̂ − L̂(l)| (a = 1 is ξ_0);
    ratio = ln(ξ_δ*/min(ξ_0, ξ_a*)), each gap floored at ROUNDING × the train line's range. It must
    overlap: ξ_δ* ≤ overlap_frac × the range of L̂ on the window, else the line is flagged and its value
    is max(ratio, 0) (no overlap is evidence against Assumption 1, never for it; this also keeps a
    mirrored curve, which a shift partly undoes, from reading as a shift). ξ_0 at rounding level
    (test = train up to an offset): nan, flagged — there is no gap for a shift to explain.
    """
    steps = steps.to(torch.float64)
    inner, frac, deltas, a = _check_shift_inputs(steps, train, test, deltas, inner, rescales, overlap_frac)
    train, test = train.to(torch.float64), test.to(torch.float64)
    lprime = test - test.amin(-1, keepdim=True) + train.amin(-1, keepdim=True)
    win = steps.abs() <= inner * (1 + 1e-9)
    lw, target = steps[win], train[..., win]
    q = (lw.unsqueeze(0) + deltas.unsqueeze(1)).clamp(steps[0], steps[-1])  # [d, m]; clamp: rounding only
    shifted = _interp(steps, lprime, q.flatten()).unflatten(-1, q.shape)  # [..., d, m]
    xi = (shifted - target.unsqueeze(-2)).abs().amax(-1)
    xi0 = (lprime[..., win] - target).abs().amax(-1)
    best = xi.argmin(-1)
    xi_star = xi.gather(-1, best.unsqueeze(-1)).squeeze(-1)
    rise = (test - test.amin(-1, keepdim=True))[..., win]  # [..., m]
    fit = a.view(-1, 1) * rise.unsqueeze(-2) + train.amin(-1, keepdim=True).unsqueeze(-1)  # [..., a, m]
    xi_a_all = (fit - target.unsqueeze(-2)).abs().amax(-1)
    best_a = xi_a_all.argmin(-1)
    xi_a = xi_a_all.gather(-1, best_a.unsqueeze(-1)).squeeze(-1)
    floor = ROUNDING * (train.amax(-1) - train.amin(-1))
    degenerate = xi0 <= floor
    w_range = target.amax(-1) - target.amin(-1)
    overlaps = xi_star <= frac * w_range
    ratio = torch.log(xi_star.maximum(floor).clamp_min(1e-300) /
                      torch.minimum(xi0, xi_a).maximum(floor).clamp_min(1e-300))
    value = torch.where(overlaps, ratio, ratio.clamp_min(0.0))
    return ShiftGap(deltas=deltas, xi=xi, xi0=xi0, delta_star=deltas[best], xi_star=xi_star, rescales=a,
                    a_star=a[best_a], xi_rescaled=xi_a, window_range=w_range, overlaps=overlaps,
                    degenerate=degenerate, flagged=degenerate | ~overlaps, ratio=ratio,
                    log_ratio=torch.where(degenerate, torch.nan, value),
                    original_log_ratio=torch.log(xi_star / xi0))


# ---------------------------------------------------------------- §4.2, Assumption 2: neighbours

@dataclass(frozen=True)
class NeighbourResult:
    """Asymmetry of one direction u at w (reference) and at n perpendicular neighbours w + v − ⟨v,u⟩u."""

    steps: Tensor  # [s] grid on [−R, R]
    ref_losses: Tensor  # [s] loss along u at w
    ref_c: Tensor  # [] c_u at w
    ref_flat_side: Tensor  # [] ±1 flat side at w
    losses: Tensor  # [n, s] loss along u at each neighbour
    c: Tensor  # [n]
    flat_side: Tensor  # [n]
    asymmetric: Tensor  # [n] bool (valley and c > c_threshold)
    centred: Tensor  # [n] bool: the neighbour's own line minimum lies in |l| < r_frac·R
    keeps: Tensor  # [n] bool: same flat side as at w, asymmetric, and centred (neighbour_centre_rule)
    fraction: Tensor  # [] mean of keeps
    n_not_centred: Tensor  # [] int64: neighbours flagged 'not at its line's minimum' (never a success)
    l_min: Tensor  # [n] grid minimiser of each neighbour's line (units of l)
    ref_centred: Tensor  # [] bool: the line through w itself has its minimum in |l| < r_frac·R
    original_keeps: Tensor  # [n] bool: flat side kept and asymmetric, no centre rule (as first registered)
    original_fraction: Tensor  # [] mean of original_keeps
    v_norm: Tensor  # [n] ‖v‖ ≤ R′ (before projection)


def neighbour_asymmetry(model, params: Params, buffers: Params, u: Params, R: float, x: Tensor, y: Tensor, *,
                        n_neighbours: int, generator: torch.Generator, radius: float | None = None,
                        n_points: int = 61, r_frac: float = 0.3, c_threshold: float = 2.0, bn: str = "eval",
                        ref_x=None, loss="ce", scan_kw=None) -> NeighbourResult:
    """He et al. §4.2, Assumption 2 (Fig. 4): v uniform in the ball B(R′) (R′ = `radius`, default R),
    i.e. v = R′·U^{1/D}·g/‖g‖ with g Gaussian, U ~ U[0,1), D = number of coordinates; neighbour
    w′ = w + v − ⟨v,u⟩u; the loss along u at w′ on n_points of [−R, R]; Definition-1 index at each.
    `keeps` = the neighbour's flat side equals the one at w, c > c_threshold, and (centre rule) the
    minimum of the neighbour's own line lies inside |l| < r_frac·R: Definition 1 is about a valley
    centred at the point, and a neighbour off its line's minimum (a curved valley floor) sees a
    descent-then-rise that reads as asymmetry even in a symmetric valley. Such neighbours are counted
    (`n_not_centred`) and are never a success. `original_*`: the rule without the centre condition.
    u: one unit direction.
    """
    R = _positive("R", float(R))
    rad = R if radius is None else _positive("radius", radius)
    n = _count("n_neighbours", n_neighbours, 1)
    _count("n_points", n_points, 5, odd=True)
    u = dirs.normalize(u)
    device, dtype = _like(params)
    g = dirs.sample_directions(params, "gauss", n, generator=generator)  # uniform on the unit sphere
    D = sum(v.numel() for v in params.values())
    U = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    r = (rad * U ** (1.0 / D)).to(device=device, dtype=dtype)
    v = {kk: t * r.view(-1, *([1] * (t.dim() - 1))) for kk, t in g.items()}
    shift = dirs.orthogonal_component(v, u, batch_dims=1)
    origins = {kk: torch.cat([params[kk].unsqueeze(0), params[kk].unsqueeze(0) + shift[kk]]) for kk in params}
    t = torch.linspace(-R, R, n_points, dtype=torch.float64, device=device)
    L = scan_lines_from(model, origins, buffers, _one(u), t.to(dtype), x, y, **_kw(bn, ref_x, loss, scan_kw))
    a = asymmetry_index(t, L, r_frac=r_frac, c_threshold=c_threshold)
    centred = _centred(t / R, L, r_frac)  # [n + 1]
    original = (a.flat_side[1:] == a.flat_side[0]) & a.asymmetric[1:]
    keeps = original & centred[1:]
    return NeighbourResult(steps=t, ref_losses=L[0], ref_c=a.c[0], ref_flat_side=a.flat_side[0], losses=L[1:],
                           c=a.c[1:], flat_side=a.flat_side[1:], asymmetric=a.asymmetric[1:], centred=centred[1:],
                           keeps=keeps, fraction=keeps.double().mean(), n_not_centred=(~centred[1:]).sum(),
                           l_min=t[L[1:].argmin(-1)], ref_centred=centred[0], original_keeps=original,
                           original_fraction=original.double().mean(), v_norm=r)


# ---------------------------------------------------------------- §6.1, Fig. 7: segment profile

@dataclass(frozen=True)
class SegmentProfile:
    """Loss along (1−t)a + t·b, t ∈ [0, 1]."""

    t: Tensor  # [n]
    train: Tensor  # [n]
    test: Tensor | None  # [n]
    train_acc: Tensor | None  # [n] (loss "ce" only)
    test_acc: Tensor | None  # [n]
    bump: Tensor  # [] max interior train loss − max(endpoints)  (He Fig. 7: ≤ τ means "no bump")
    barrier: Tensor  # [] max train loss − mean(endpoints)  (Fort & Jastrzebski's barrier)
    test_bump: Tensor | None  # [] bump of the test curve


def _bump(L: Tensor) -> Tensor:
    return L[1:-1].amax() - torch.maximum(L[0], L[-1])


def segment_profile(model, a: Params, b: Params, buffers: Params, x: Tensor, y: Tensor, *, n_points: int = 41,
                    bn: str = "eval", ref_x=None, loss="ce", x_test=None, y_test=None, scan_kw=None) -> SegmentProfile:
    """He et al. §6.1, Fig. 7 (AV-8): train (and test) loss at n_points of (1−t)a + t·b = a + t(b − a);
    bump = max over interior points − max(L(a), L(b)); barrier (Fort) = max over all − mean(L(a), L(b)).
    With bn="recompute" each point gets its own BN statistics (the buffers then only fill the rest)."""
    n = _count("n_points", n_points, 3)
    device, dtype = _like(a)
    t = torch.linspace(0.0, 1.0, n, dtype=dtype, device=device)
    ab = _one(dirs.sub(b, a))
    kw = _kw(bn, ref_x, loss, scan_kw)
    acc = loss == "ce"

    def run(xx, yy):
        out = scan_lines_from(model, _one(a), buffers, ab, t, xx, yy, with_acc=acc, **kw)
        return (out[0][0], out[1][0]) if acc else (out[0], None)

    train, train_acc = run(x, y)
    test, test_acc = run(x_test, y_test) if x_test is not None else (None, None)
    return SegmentProfile(t=t, train=train, test=test, train_acc=train_acc, test_acc=test_acc, bump=_bump(train),
                          barrier=train.amax() - (train[0] + train[-1]) / 2,
                          test_bump=None if test is None else _bump(test))


# ---------------------------------------------------------------- §6.1, Fig. 8: flat side of SWA

@dataclass(frozen=True)
class FlatSideResult:
    """SWA vs SGD along u_inter and along (u_inter + u_rand)/‖·‖ (He et al. §6.1, Fig. 8)."""

    distance: Tensor  # [] ‖w_swa − w_sgd‖
    loss_sgd: Tensor  # [] L(w_sgd)
    rise_swa: Tensor  # [] L(w_sgd + D·u_inter) − L(w_sgd)  (= the SWA point)
    rise_opposite: Tensor  # [] L(w_sgd − D·u_inter) − L(w_sgd)
    log_ratio: Tensor  # [] log(rise_opposite / rise_swa); nan unless both rises > 0
    steps: Tensor  # [s] grid on [−radius, radius] around w_sgd
    inter_losses: Tensor  # [s] loss along u_inter
    random_losses: Tensor  # [n_random, s] loss along each mixed direction
    c: Tensor  # [n_random] Definition-1 index at w_sgd
    is_valley: Tensor  # [n_random]
    flat_side: Tensor  # [n_random] ±1
    swa_side: Tensor  # [n_random] ±1: sign of ⟨w_swa − w_sgd, direction⟩
    swa_on_flat_side: Tensor  # [n_random] bool
    fraction: Tensor  # [] mean of swa_on_flat_side over all n_random directions


def flat_side_comparison(model, w_sgd: Params, w_swa: Params, buffers: Params, x: Tensor, y: Tensor, *,
                         n_random: int, generator: torch.Generator, n_points: int = 41, radius_factor: float = 2.0,
                         r_frac: float = 0.3, c_threshold: float = 2.0, bn: str = "eval", ref_x=None, loss="ce",
                         scan_kw=None, family="gauss") -> FlatSideResult:
    """He et al. §6.1, Fig. 8 (AV-10). With D = ‖w_swa − w_sgd‖, u_inter = (w_swa − w_sgd)/D:
    (i) rises at distance D from w_sgd: on the SWA side (the SWA point itself) and on the opposite
    side, log(rise_opposite / rise_swa) > 0 when SWA sits on the flatter side;
    (ii) n_random directions (u_inter + u_rand)/‖·‖, u_rand a unit direction of `family` (a name or a
    sampler; He: Gaussian): Definition-1 flat side at w_sgd on a grid of n_points over
    [−radius_factor·D, radius_factor·D], compared with the side on which w_swa lies. `fraction` counts every direction (a non-valley direction still has a flatter side)."""
    _count("n_random", n_random, 1)
    _count("n_points", n_points, 5, odd=True)
    kw = _kw(bn, ref_x, loss, scan_kw)
    device, dtype = _like(w_sgd)
    d = dirs.sub(w_swa, w_sgd)
    D = dirs.norm(d)
    if not D > 0:
        raise ValueError("w_swa equals w_sgd: the SGD→SWA direction is undefined")
    u_inter = {kk: v / D for kk, v in d.items()}
    three = torch.stack([-D, torch.zeros_like(D), D])
    L3 = scan_lines(model, w_sgd, buffers, _one(u_inter), three, x, y, **kw)[0]
    rise_swa, rise_opp = L3[2] - L3[1], L3[0] - L3[1]
    both = (rise_swa > 0) & (rise_opp > 0)
    log_ratio = torch.where(both, torch.log(rise_opp.clamp_min(1e-300) / rise_swa.clamp_min(1e-300)), torch.nan)
    u_rand = dirs.sample_directions(w_sgd, family, n_random, generator=generator)
    mixed = dirs.normalize({kk: u_inter[kk].unsqueeze(0) + v for kk, v in u_rand.items()}, batch_dims=1)
    t = torch.linspace(-1.0, 1.0, n_points, dtype=torch.float64, device=device) * radius_factor * D.double()
    L = scan_lines(model, w_sgd, buffers, {kk: torch.cat([u_inter[kk].unsqueeze(0), v]) for kk, v in mixed.items()},
                   t.to(dtype), x, y, **kw)
    a = asymmetry_index(t, L[1:], r_frac=r_frac, c_threshold=c_threshold)
    swa_side = torch.where(dirs.dot(_one(d), mixed, batch_dims=1) >= 0, 1, -1).to(torch.int64)
    on_flat = a.flat_side == swa_side
    return FlatSideResult(distance=D, loss_sgd=L3[1], rise_swa=rise_swa, rise_opposite=rise_opp, log_ratio=log_ratio,
                          steps=t, inter_losses=L[0], random_losses=L[1:], c=a.c, is_valley=a.is_valley,
                          flat_side=a.flat_side, swa_side=swa_side, swa_on_flat_side=on_flat,
                          fraction=on_flat.double().mean())


# ---------------------------------------------------------------- §6.2, Fig. 10: random-ray width

@dataclass(frozen=True)
class RayWidthResult:
    """Width along rays w + l·v, l ≥ 0."""

    widths: Tensor  # [k] first l with L(w + l·v) − L(w) ≥ delta_rise (interpolated); inf if censored
    censored: Tensor  # [k] bool: no such l ≤ max_dist
    mean_width: Tensor  # [] mean over rays, censored rays counted as max_dist (then a lower bound)
    steps: Tensor  # [s] distances 0..max_dist
    losses: Tensor  # [k, s]
    weight_norm: Tensor  # [] ‖w‖ over every parameter tensor (descriptive: see relative_mean_width)
    relative_mean_width: Tensor  # [] mean_width / ‖w‖ (descriptive; the registered width is raw distance)


def random_ray_width(model, params: Params, buffers: Params, x: Tensor, y: Tensor, *, directions: Params,
                     delta_rise: float, max_dist: float, n_points: int = 51, bn: str = "eval", ref_x=None,
                     loss="ce", scan_kw=None) -> RayWidthResult:
    """He et al. §6.2, Fig. 10 (AV-11), after Izmailov et al.'s rays: per unit direction v the distance
    where train loss first rises by delta_rise above L(w), linear interpolation on n_points of [0, max_dist].
    (Computed with `radius_for_rise` on the ray mirrored into a symmetric line, whose two sides coincide.)
    On a quadratic L(w + l·v) = L(w) + κl²/2 the width is sqrt(2Δ/κ).

    The width is a raw weight-space distance, so on a scale-invariant landscape (layers followed by
    BN) the same function at c·w is c times wider: `weight_norm` and `relative_mean_width` are reported
    beside it so a norm difference between two solutions can be told from a wider basin (descriptive)."""
    delta, dmax = _positive("delta_rise", delta_rise), _positive("max_dist", max_dist)
    n = _count("n_points", n_points, 3)
    device, dtype = _like(params)
    steps = torch.linspace(0.0, dmax, n, dtype=torch.float64, device=device)
    L = scan_lines(model, params, buffers, directions, steps.to(dtype), x, y, **_kw(bn, ref_x, loss, scan_kw))
    sym_steps = torch.cat([-steps[1:].flip(0), steps])
    width = radius_for_rise(sym_steps, torch.cat([L[:, 1:].flip(-1), L], dim=-1), delta)
    censored = ~torch.isfinite(width)
    mean = torch.where(censored, dmax, width).mean()
    w_norm = dirs.norm(params).to(mean.dtype)
    return RayWidthResult(widths=width, censored=censored, mean_width=mean, steps=steps, losses=L,
                          weight_norm=w_norm, relative_mean_width=mean / w_norm)


# ---------------------------------------------------------------- §5.2, Fig. 6: profile stabilisation

def profile_correlation(profiles_t: Tensor, profile_final: Tensor) -> Tensor:
    """He et al. §5.2, Fig. 6 (AV-12): Pearson correlation over the grid between the loss profile along a
    fixed direction at each checkpoint, profiles_t [..., T, s], and the final profile [..., s] -> [..., T]."""
    if profiles_t.shape[-1] != profile_final.shape[-1] or profiles_t.dim() < 2:
        raise ValueError(f"profiles_t must be [..., T, s] and profile_final [..., s]; got "
                         f"{tuple(profiles_t.shape)} and {tuple(profile_final.shape)}")
    a = profiles_t.double() - profiles_t.double().mean(-1, keepdim=True)
    b = (profile_final.double() - profile_final.double().mean(-1, keepdim=True)).unsqueeze(-2)
    return (a * b).sum(-1) / (a.square().sum(-1) * b.square().sum(-1)).sqrt()


@dataclass(frozen=True)
class ProfileChange:
    """What a correlation cannot see (AV-12, descriptive): per checkpoint, whether the Definition-1 flat
    side along the fixed direction is the final one, and how far the profile's minimum moved."""

    flat_side: Tensor  # [..., T] ±1 flat side of each checkpoint profile on the window (r_frac·R, R)
    final_flat_side: Tensor  # [...] ±1 flat side of the final profile
    same_flat_side: Tensor  # [..., T] bool
    argmin_shift: Tensor  # [..., T] |argmin profile_t − argmin final| (units of steps)


def profile_change(steps: Tensor, profiles_t: Tensor, profile_final: Tensor, *, r_frac: float = 0.3) -> ProfileChange:
    """Flat side (Definition 1's window, `asymmetry_index`) and grid argmin of each checkpoint profile
    [..., T, s] against the final one [..., s], on the symmetric uniform grid steps [s]."""
    if profiles_t.shape[-1] != profile_final.shape[-1] or profiles_t.shape[-1] != steps.shape[-1]:
        raise ValueError(f"profiles_t {tuple(profiles_t.shape)}, profile_final {tuple(profile_final.shape)} and "
                         f"steps {tuple(steps.shape)} must share the last dim")
    steps = steps.to(torch.float64)
    side_t = asymmetry_index(steps, profiles_t.double(), r_frac=r_frac).flat_side
    side_f = asymmetry_index(steps, profile_final.double(), r_frac=r_frac).flat_side
    shift = (steps[profiles_t.argmin(-1)] - steps[profile_final.argmin(-1)].unsqueeze(-1)).abs()
    return ProfileChange(flat_side=side_t, final_flat_side=side_f, same_flat_side=side_t == side_f.unsqueeze(-1),
                         argmin_shift=shift)
