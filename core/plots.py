"""Figures for the claim reports: they take computed arrays and a path, and never compute.

Each function mirrors one figure of the papers (named in its docstring), draws it with one shared
style, saves a PNG at `DPI` and returns the path. Figures are built as bare
`matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot, so there is no global
figure registry to leak into (nothing to close) and no GUI backend is ever touched.
Writes are atomic (temp file + `os.replace`), so a report never embeds a half-written PNG.
Topic-specific figures live in `core/plots_<topic>.py` and may reuse `new_figure`/`save`.
"""
from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.atomic import atomic_write

__all__ = [
    "DPI", "new_figure", "save",
    "loss_along_direction", "toy_transition", "cosine_matrix", "valley_1d_with_average",
    "count_vs_m", "well_profile", "shift_curves", "neighbour_band", "segment_profile",
    "flat_side_curves", "flat_side_at_minimum", "random_rays", "threshold_sensitivity",
    "threshold_sensitivity_by",
]

DPI = 110                      # dots per inch of the saved PNGs
FIGSIZE = (5.2, 3.6)           # inches; one column of a report page
COLORS = {"train": "#1f5fa8", "test": "#c8432b", "a": "#1f5fa8", "b": "#c8432b",
          "flat": "#2e8b57", "sharp": "#b8860b", "ref": "#555555"}
TITLE_CHARS = 60  # characters per title line at FIGSIZE and fontsize 10
VERDICT_CODES = {"refuted": -1, "inconclusive": 0, "insufficient_n": 0, "replicated": 1}


def new_figure(title: str, xlabel: str, ylabel: str, *, figsize=FIGSIZE):
    """One figure with one axis in the suite's style -> (fig, ax)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(textwrap.fill(title, TITLE_CHARS), fontsize=10)  # long titles wrap, never clip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.5)
    return fig, ax


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as PNG to `path` atomically (parent dirs created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write(path, buf.getvalue())


def _np(v) -> np.ndarray:
    """A float array from a list, an array or a tensor on any device (CUDA, requiring grad)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu()
    return np.asarray(v, dtype=float)


def _arrays(**named) -> list[np.ndarray]:
    """Inputs as float arrays whose last axes agree; the error names the bad argument."""
    arrays = {k: _np(v) for k, v in named.items()}
    first = next(iter(arrays))
    n = arrays[first].shape[-1:]
    for name, a in arrays.items():
        if a.shape[-1:] != n:
            raise ValueError(f"plots: {name} has shape {a.shape}, its last axis must match "
                             f"{first} ({n[0] if n else 0} points)")
    return list(arrays.values())


def loss_along_direction(path, steps, losses, *, slopes=None, r=None, R=None,
                         title="Loss along a random direction") -> Path:
    """He et al. Fig. 2: L(w + l u) against l; curves [s] or [k, s].

    slopes = (s_plus, s_minus): mean outward slopes on (r, R) of the + and − side; the flatter one
    is drawn green, the sharper one gold, as tangent segments anchored at l = ±r on the mean curve.
    """
    steps, losses = _arrays(steps=steps, losses=losses)
    curves = np.atleast_2d(losses)
    fig, ax = new_figure(title, "step l along u", "loss")
    for c in curves:
        ax.plot(steps, c, color=COLORS["train"], lw=1.4 if len(curves) == 1 else 0.6,
                alpha=1.0 if len(curves) == 1 else 0.4)
    mean = curves.mean(axis=0)
    if len(curves) > 1:
        ax.plot(steps, mean, color=COLORS["train"], lw=2.0, label="mean")
    if r is not None and R is not None:
        for sign in (1, -1):
            ax.axvspan(sign * r, sign * R, color=COLORS["ref"], alpha=0.08)
    if slopes is not None and r is not None and R is not None:
        _mark_slopes(ax, steps, mean, slopes, r, R)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper center")
    return save(fig, path)


def _mark_slopes(ax, steps, mean, slopes, r, R) -> None:
    s_plus, s_minus = (float(s) for s in slopes)
    flat_sign = 1 if s_plus <= s_minus else -1
    for sign, s in ((1, s_plus), (-1, s_minus)):
        l0 = sign * r
        x = np.array([l0, sign * R])
        y = np.interp(l0, steps, mean) + s * np.abs(x - l0)
        side = "flat" if sign == flat_sign else "sharp"
        ax.plot(x, y, color=COLORS[side], lw=2, ls="--", label=f"{side} side slope {s:.3g}")


def toy_transition(path, d_values, success_rates, ci_lo, ci_hi, *, d_crit,
                   title="Optimisation on random d-dim subspaces") -> Path:
    """Fort & Jastrzebski §3.3: success rate (with Clopper–Pearson interval) against subspace dim d;
    the predicted transition d = D − n is the dashed line."""
    d, rate, lo, hi = _arrays(d_values=d_values, success_rates=success_rates, ci_lo=ci_lo,
                              ci_hi=ci_hi)
    fig, ax = new_figure(title, "subspace dimension d", "fraction reaching zero loss")
    ax.errorbar(d, rate, yerr=[rate - lo, hi - rate], fmt="o-", color=COLORS["train"], capsize=3)
    ax.axvline(d_crit, color=COLORS["ref"], ls="--", label=f"D − n = {d_crit:g}")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    return save(fig, path)


def cosine_matrix(path, cos, *, title="Cosines between path deviations") -> Path:
    """Fort & Jastrzebski Fig. 3 (middle): pairwise cosine similarities, colour scale fixed to
    [−1, 1] so blocks are comparable across figures."""
    cos = _np(cos)
    if cos.ndim != 2 or cos.shape[0] != cos.shape[1]:
        raise ValueError(f"plots: cos must be a square matrix, got shape {cos.shape}")
    fig, ax = new_figure(title, "point along the path", "point along the path",
                         figsize=(4.6, 4.0))
    im = ax.imshow(cos, vmin=-1, vmax=1, cmap="coolwarm", interpolation="nearest")
    ax.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.85, label="cosine")
    return save(fig, path)


def valley_1d_with_average(path, w_grid, loss, iterates_hist, wbar, *,
                           title="SGD averaging on a 1-D asymmetric valley") -> Path:
    """He et al. Fig. 5: the valley L(w), the histogram of the SGD iterates (right axis), the
    minimum w = 0 and the average w̄ (which Theorem 2 puts on the flat side)."""
    w, loss = _arrays(w_grid=w_grid, loss=loss)
    fig, ax = new_figure(title, "w", "loss")
    ax.plot(w, loss, color=COLORS["train"], lw=1.6, label="L(w)")
    ax2 = ax.twinx()
    ax2.hist(_np(iterates_hist).ravel(), bins=40, color=COLORS["ref"],
             alpha=0.25)
    ax2.set_ylabel("iterates (count)")
    ax.set_zorder(ax2.get_zorder() + 1)  # curve and legend above the histogram
    ax.patch.set_visible(False)
    ax.axvline(0.0, color=COLORS["ref"], ls=":", label="minimum")
    ax.axvline(float(wbar), color=COLORS["flat"], lw=2, label=f"average w̄ = {float(wbar):.3g}")
    ax.legend(fontsize=8, loc="upper center")
    return save(fig, path)


def count_vs_m(path, m, counts_mean, lo, hi, *,
               title="Short directions in the middle of an m-connector") -> Path:
    """Fort & Jastrzebski Fig. 4 (middle): number of short directions against m, mean with CI."""
    m, mean, lo, hi = _arrays(m=m, counts_mean=counts_mean, lo=lo, hi=hi)
    fig, ax = new_figure(title, "m (optima joined − 1)", "short directions")
    ax.errorbar(m, mean, yerr=[mean - lo, hi - mean], fmt="o-", color=COLORS["train"], capsize=3)
    return save(fig, path)


def well_profile(path, radii, rise_mean, rise_lo, rise_hi, *,
                 title="Loss rise around a wedge point") -> Path:
    """Fort & Jastrzebski §3.3 ("circular well"): loss rise against radius, mean over directions
    with the across-direction spread as a band."""
    radii, mean, lo, hi = _arrays(radii=radii, rise_mean=rise_mean, rise_lo=rise_lo,
                                  rise_hi=rise_hi)
    fig, ax = new_figure(title, "radius", "loss rise")
    ax.fill_between(radii, lo, hi, color=COLORS["train"], alpha=0.25, lw=0)
    ax.plot(radii, mean, color=COLORS["train"], lw=1.6)
    return save(fig, path)


def shift_curves(path, l, train, test_shifted, delta, *,
                 title="Train and shifted test loss (Assumption 1)") -> Path:
    """He et al. Fig. 3: train loss L̂(w + l u) and the test curve shifted by δ (dashed)."""
    l, train, test = _arrays(l=l, train=train, test_shifted=test_shifted)
    fig, ax = new_figure(title, "step l along u", "loss")
    ax.plot(l, train, color=COLORS["train"], lw=1.6, label="train")
    ax.plot(l, test, color=COLORS["test"], lw=1.6, ls="--", label=f"test, shifted δ = {float(delta):.3g}")
    ax.legend(fontsize=8)
    return save(fig, path)


def neighbour_band(path, l, mean, std, *,
                   title="Loss along u at perpendicular neighbours (Assumption 2)") -> Path:
    """He et al. Fig. 4: mean ± one std of the loss along u over neighbours w* + v."""
    l, mean, std = _arrays(l=l, mean=mean, std=std)
    fig, ax = new_figure(title, "step l along u", "loss")
    ax.fill_between(l, mean - std, mean + std, color=COLORS["train"], alpha=0.25, lw=0)
    ax.plot(l, mean, color=COLORS["train"], lw=1.6, label="mean ± std")
    ax.legend(fontsize=8)
    return save(fig, path)


def segment_profile(path, t, train, test, *,
                    title="Segment from SWA (t=0) to SGD from SWA (t=1)") -> Path:
    """He et al. Fig. 7: train loss (left axis) and test loss (right axis) along the segment."""
    t, train, test = _arrays(t=t, train=train, test=test)
    fig, ax = new_figure(title, "t", "train loss")
    ax.plot(t, train, color=COLORS["train"], lw=1.6)
    ax.tick_params(axis="y", colors=COLORS["train"])
    ax2 = ax.twinx()
    ax2.plot(t, test, color=COLORS["test"], lw=1.6, ls="--")
    ax2.set_ylabel("test loss", color=COLORS["test"])
    ax2.tick_params(axis="y", colors=COLORS["test"])
    return save(fig, path)


def flat_side_curves(path, l, curves, labels: Sequence[str], *,
                     title="Loss along SGD→SWA directions") -> Path:
    """He et al. Fig. 8: one loss curve per direction (rows of `curves`), w_SGD at l = 0."""
    l, curves = _arrays(l=l, curves=curves)
    curves = np.atleast_2d(curves)
    if len(labels) != len(curves):
        raise ValueError(f"plots: {len(labels)} labels for {len(curves)} curves")
    fig, ax = new_figure(title, "distance from w_SGD", "train loss")
    for c, label in zip(curves, labels):
        ax.plot(l, c, lw=1.2, label=label)
    ax.axvline(0.0, color=COLORS["ref"], ls=":")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)


def flat_side_at_minimum(path, line_l, line_loss, mixed_l, mixed_losses, *, l_star: float, distance: float,
                         l_star_dir=None, title="Loss along SGD→SWA directions, judged at the line's minimum") -> Path:
    """He et al. Fig. 8 with the line's own minimum marked: the u_inter line (thick; w_SGD at 0, w_SWA
    at `distance`), the mixed directions (thin, on their own grid mixed_l), the minimiser l* and the
    comparison points l* ± (distance − l*); l_star_dir [n] marks each mixed line's minimiser."""
    line_l, line_loss = _arrays(line_l=line_l, line_loss=line_loss)
    mixed_l, mixed = _arrays(mixed_l=mixed_l, mixed_losses=mixed_losses)
    fig, ax = new_figure(title, "distance from w_SGD", "train loss")
    for c in np.atleast_2d(mixed):
        ax.plot(mixed_l, c, color=COLORS["ref"], lw=0.6, alpha=0.45)
    ax.plot(line_l, line_loss, color=COLORS["train"], lw=1.8, label="u_inter")
    s = distance - l_star
    ax.axvline(0.0, color=COLORS["ref"], ls=":", label="w_SGD")
    ax.axvline(distance, color=COLORS["flat"], ls="--", lw=1.0, label="w_SWA")
    ax.axvline(l_star, color=COLORS["test"], lw=1.2, label="l* (line minimum)")
    ax.axvline(l_star - s, color=COLORS["sharp"], ls="--", lw=1.0, label="l* − (D − l*)")
    if l_star_dir is not None:
        y0 = float(np.nanmin(mixed))
        ax.plot(_np(l_star_dir), np.full(len(_np(l_star_dir)), y0), "|", color=COLORS["ref"], ms=8,
                label="mixed-line minima")
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)


def random_rays(path, l, curves_a, curves_b, labels: Sequence[str] = ("SWA", "SGD"), *,
                title="Train loss along random rays") -> Path:
    """He et al. Fig. 10: rays from two solutions (rows of curves_a / curves_b), thin lines, the
    mean of each thick."""
    l, a, b = _arrays(l=l, curves_a=curves_a, curves_b=curves_b)
    fig, ax = new_figure(title, "distance along the ray", "train loss")
    for curves, color, label in ((a, COLORS["a"], labels[0]), (b, COLORS["b"], labels[1])):
        curves = np.atleast_2d(curves)
        for c in curves:
            ax.plot(l, c, color=color, lw=0.5, alpha=0.35)
        ax.plot(l, curves.mean(axis=0), color=color, lw=2, label=f"{label} (mean)")
    ax.legend(fontsize=8)
    return save(fig, path)


def paired_seeds(path, a, b, labels: Sequence[str] = ("a", "b"), *, ylabel="value",
                 title="Paired by seed") -> Path:
    """Per-seed pairs as a slope graph (one grey line per seed, arm means marked): the unit of a
    paired claim is the seed, so the figure shows every seed, not only the mean difference."""
    a, b = _arrays(a=a, b=b)
    fig, ax = new_figure(title, "", ylabel)
    for ya, yb in zip(a, b):
        ax.plot([0, 1], [ya, yb], color=COLORS["ref"], lw=0.8, alpha=0.6, marker="o", ms=3)
    ax.plot([0, 1], [a.mean(), b.mean()], color=COLORS["a"], lw=2.2, marker="D", label="mean")
    ax.set_xticks([0, 1], list(labels))
    ax.set_xlim(-0.3, 1.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def threshold_sensitivity(path, thresholds, verdict_codes, *, chosen=None,
                          title="Verdict against the threshold") -> Path:
    """The suite's own sensitivity analysis: the verdict as a function of a threshold.
    verdict_codes: verdict strings or codes −1 (refuted), 0 (inconclusive), +1 (replicated);
    `chosen` marks the pre-registered threshold."""
    codes = [VERDICT_CODES[v] if isinstance(v, str) else v for v in verdict_codes]
    x, codes = _arrays(thresholds=thresholds, verdict_codes=codes)
    fig, ax = new_figure(title, "threshold", "verdict")
    ax.step(x, codes, where="mid", color=COLORS["train"], lw=1.8)
    ax.set_yticks([-1, 0, 1], ["refuted", "inconclusive", "replicated"])
    ax.set_ylim(-1.4, 1.4)
    if chosen is not None:
        ax.axvline(float(chosen), color=COLORS["ref"], ls="--", label="pre-registered")
        ax.legend(fontsize=8)
    return save(fig, path)


def threshold_sensitivity_by(path, thresholds, verdicts_by_label, *, chosen=None,
                             title="Verdict against the threshold") -> Path:
    """`threshold_sensitivity` for several variants at once ({label: verdict strings or codes per
    threshold}), each curve nudged vertically so that equal verdicts stay visible."""
    n = len(verdicts_by_label)
    fig, ax = new_figure(title, "threshold", "verdict")
    for k, (label, verdicts) in enumerate(verdicts_by_label.items()):
        codes = [VERDICT_CODES[v] if isinstance(v, str) else v for v in verdicts]
        x, codes = _arrays(thresholds=thresholds, verdict_codes=codes)
        nudge = 0.12 * (k - (n - 1) / 2) / max(n - 1, 1)
        ax.step(x, codes + nudge, where="mid", lw=1.5, label=label)
    ax.set_yticks([-1, 0, 1], ["refuted", "inconclusive", "replicated"])
    ax.set_ylim(-1.4, 1.4)
    if chosen is not None:
        ax.axvline(float(chosen), color=COLORS["ref"], ls="--", label="pre-registered")
    ax.legend(fontsize=7)
    return save(fig, path)
