"""Sharpest-Directions figures (Jastrzebski et al. 2019): they take computed arrays and never compute."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.plots import COLORS, new_figure, save

__all__ = ["lambda_trajectories", "peak_vs_grid", "alpha_step_curves"]

_CYCLE = ("#1f5fa8", "#c8432b", "#2e8b57", "#b8860b", "#6a3d9a", "#555555")


def lambda_trajectories(path, groups: dict[str, tuple[np.ndarray, np.ndarray]], *, peaks=None,
                        half: float | None = None, bound: float | None = None,
                        title="λ_max along training (Fig. 2)", xlabel="η · steps",
                        ylabel="λ_max (top Hessian eigenvalue)", logy: bool = False) -> Path:
    """Fig. 2 (bottom) / Fig. 3: λ_max per seed against training time, one colour per group
    ({label: (x [C], λ [S, C])}), thin lines per seed and the median thick; `peaks` [(x, λ)] marks
    each seed's λ_peak; `half` the T/2 line of the peak definition; `bound` the 2/η stability line.
    Also Fig. 5's per-variant curves of λ_max or the loss along a restart (`ylabel`; `logy` for a log
    y-axis, where one variant's transient spike would flatten the others)."""
    fig, ax = new_figure(title, xlabel, ylabel)
    if logy:
        ax.set_yscale("log")
    for k, (label, (x, lam)) in enumerate(groups.items()):
        color = _CYCLE[k % len(_CYCLE)]
        lam = np.atleast_2d(np.asarray(lam, dtype=float))
        for row in lam:
            ax.plot(x, row, color=color, lw=0.5, alpha=0.35)
        ax.plot(x, np.nanmedian(lam, axis=0), color=color, lw=2, label=f"{label} (median of {len(lam)})")
    for xp, lp in peaks or ():
        ax.plot([xp], [lp], marker="v", color=COLORS["ref"], ms=4)
    if half is not None:
        ax.axvline(half, color=COLORS["ref"], ls=":", lw=1, label="T/2 (peak searched before)")
    if bound is not None:
        ax.axhline(bound, color=COLORS["sharp"], ls="--", lw=1, label="2/η")
    ax.legend(fontsize=7)
    return save(fig, path)


def peak_vs_grid(path, x: Sequence[float], peaks: np.ndarray, *, xlabel: str,
                 title="λ_peak against the grid (Fig. 3)") -> Path:
    """Fig. 3: λ_peak per seed (rows of `peaks` [S, G], NaN = no evidence) at the grid values `x`,
    log-log, one grey line per seed and the median thick: the claim's per-seed slope is visible."""
    peaks = np.atleast_2d(np.asarray(peaks, dtype=float))
    fig, ax = new_figure(title, xlabel, "λ_peak")
    for row in peaks:
        ax.plot(x, row, color=COLORS["ref"], lw=0.8, alpha=0.6, marker="o", ms=3)
    ax.plot(x, np.nanmedian(peaks, axis=0), color=COLORS["a"], lw=2.2, marker="D", label="median")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(x), [f"{v:g}" for v in x])
    ax.legend(fontsize=8)
    return save(fig, path)


def alpha_step_curves(path, alphas: Sequence[float], changes: np.ndarray, *, rule_alphas: Sequence[float] = (),
                      linthresh: float = 1e-3, title="Loss change of the SGD step along e₁, rescaled by α (Fig. 4 right)") -> Path:
    """Fig. 4 (right): per seed the mean relative loss change (L(θ − αηg̃₁e₁) − L(θ))/L(θ) after the peak
    against α (log x), one grey line per seed (rows of `changes` [S, A]) and the median thick; the zero
    line separates "raises the loss" from "lowers it", dotted lines mark the α the rule decides on. The
    y axis is symmetric-log (linear within ±`linthresh`): the α = 4 changes are ~100× the α = 0.5 ones."""
    changes = np.atleast_2d(np.asarray(changes, dtype=float))
    fig, ax = new_figure(title, "α (multiple of the SGD step along e₁)", "(L(θ − αηg̃₁e₁) − L(θ)) / L(θ)")
    for row in changes:
        ax.plot(alphas, row, color=COLORS["ref"], lw=0.8, alpha=0.6, marker="o", ms=3)
    ax.plot(alphas, np.nanmedian(changes, axis=0), color=COLORS["a"], lw=2.2, marker="D",
            label=f"median of {len(changes)} seeds")
    ax.axhline(0.0, color=COLORS["sharp"], ls="--", lw=1)
    for a in rule_alphas:
        ax.axvline(a, color=COLORS["ref"], ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.set_xticks(list(alphas), [f"{v:g}" for v in alphas])
    ax.set_xticks([], minor=True)  # log-axis minor labels would overprint the α labels
    ax.legend(fontsize=8)
    return save(fig, path)
