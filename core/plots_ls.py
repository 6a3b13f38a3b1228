"""Large-Scale-Structure figures on networks (Fort & Jastrzebski 2019, Figs. 1, 3–6): they take computed
arrays and never compute."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.plots import COLORS, new_figure, save

__all__ = ["line_vs_tunnel", "label_agreement", "connector_barriers", "short_directions", "radial_widths", "cyclic_snapshots"]


def _per_pair(ax, t, rows, color: str, label: str) -> None:
    """One thin line per pair (rows [P, T]) and their median thick, labelled (`{n}`: the number of pairs)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=float))
    for row in rows:
        ax.plot(t, row, color=color, lw=0.5, alpha=0.35)
    ax.plot(t, np.median(rows, axis=0), color=color, lw=2, label=label.format(n=len(rows)))


def line_vs_tunnel(path, t: np.ndarray, linear: np.ndarray, tunnel: np.ndarray, *, tau_high: float,
                   tau_low: float | None = None,
                   title="Train loss along the line and the tunnel (Figs. 1, 3 left)") -> Path:
    """Per pair (rows of linear/tunnel [P, T]) the train loss along the straight line A→B and along the
    hyperplane tunnel, t the position; thin lines per pair, the median thick; the wall threshold and
    the low-path threshold (median pair's τ_low) above the endpoints' mean, on a log y-axis so that
    both are readable."""
    fig, ax = new_figure(title, "position t along A → B", "train loss (nats)")
    _per_pair(ax, t, linear, COLORS["sharp"], "linear path (median of {n} pairs)")
    _per_pair(ax, t, tunnel, COLORS["a"], "tunnel (median of {n} pairs)")
    ends = 0.5 * (np.median(np.asarray(linear)[:, 0]) + np.median(np.asarray(linear)[:, -1]))
    ax.axhline(ends + tau_high, color=COLORS["ref"], ls=":", lw=1, label="endpoints + τ_high (a wall is above)")
    if tau_low is not None:
        ax.axhline(ends + tau_low, color=COLORS["flat"], ls="--", lw=1, label="endpoints + τ_low (a low path stays below)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return save(fig, path)


def label_agreement(path, t: np.ndarray, agree_a: np.ndarray, agree_b: np.ndarray, *,
                    title="Test-label agreement along the tunnel (Fig. 3 right)") -> Path:
    """Per pair, the fraction of test inputs whose predicted label equals endpoint A's and endpoint B's
    at every tunnel point; the halves are split at t = ½."""
    fig, ax = new_figure(title, "position t along the tunnel A → B", "agreement with the endpoint's labels")
    _per_pair(ax, t, agree_a, COLORS["a"], "with A (median)")
    _per_pair(ax, t, agree_b, COLORS["b"], "with B (median)")
    ax.axvline(0.5, color=COLORS["ref"], ls=":", lw=1)
    ax.legend(fontsize=8)
    return save(fig, path)


def connector_barriers(path, by_m: dict[int, Sequence[float]], low: dict[int, Sequence[float]], *,
                       title="m-connector barriers (§4.3)") -> Path:
    """Per m, each set's connector barrier (max over its segments) against its τ_low (a connector below
    its own τ_low is low-loss); log y."""
    fig, ax = new_figure(title, "m (the connector joins m + 1 optima)", "barrier (nats)")
    for k, (m, vals) in enumerate(by_m.items()):
        x = np.full(len(vals), float(m)) + np.linspace(-0.15, 0.15, len(vals))
        ax.plot(x, vals, "o", color=COLORS["a"], ms=4, label="connector barrier" if k == 0 else None)
        ax.plot(x, low[m], "_", color=COLORS["sharp"], ms=10, label="its τ_low" if k == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(list(by_m), [str(m) for m in by_m])
    ax.legend(fontsize=8)
    return save(fig, path)


def short_directions(path, by_m: dict[float, Sequence[tuple[float, float]]], *,
                     title="Short directions vs position and m (Fig. 4)") -> Path:
    """Per m, each connector's count of eigenvalues above the threshold at its middle (filled) and the
    mean count at its optima (open), joined per connector."""
    fig, ax = new_figure(title, "m (m = 1: the tunnel's midpoint)", "eigenvalues above 0.1 × λ_max of the optima")
    for k, (m, pairs) in enumerate(sorted(by_m.items())):
        x = np.full(len(pairs), float(m)) + np.linspace(-0.15, 0.15, len(pairs))
        mid, ends = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        for xi, a, b in zip(x, mid, ends):
            ax.plot([xi, xi], [b, a], color=COLORS["ref"], lw=0.6)
        ax.plot(x, mid, "o", color=COLORS["a"], ms=5, label="middle of the connector" if k == 0 else None)
        ax.plot(x, ends, "o", mfc="none", color=COLORS["b"], ms=5, label="its optima (mean)" if k == 0 else None)
    ax.set_xticks(sorted(by_m), [f"{m:g}" for m in sorted(by_m)])
    ax.legend(fontsize=8)
    return save(fig, path)


def radial_widths(path, by_part: dict[str, tuple[Sequence[str], np.ndarray]], *,
                  title="Radial tunnel width vs hyper-parameter (Fig. 5)") -> Path:
    """Per hyper-parameter (by_part: label -> (its three grid values as text, widths [S, 3] in degrees)),
    one thin line per seed over the grid positions and the median thick."""
    fig, ax = new_figure(title, "grid position (values in the legend)", "mean angular width (degrees)")
    colors = [COLORS["a"], COLORS["b"], COLORS["flat"], COLORS["sharp"]]
    for color, (label, (values, widths)) in zip(colors, by_part.items()):
        _per_pair(ax, np.arange(3), widths, color, f"{label}: {' → '.join(values)} (median of {{n}} seeds)")
    ax.set_xticks([0, 1, 2], ["low", "middle", "high"])
    ax.legend(fontsize=7)
    return save(fig, path)


def cyclic_snapshots(path, arms: dict[str, dict[str, np.ndarray]], *,
                     title="Snapshots, their weight average and their ensemble (Fig. 6)") -> Path:
    """Per arm (label -> {"snapshots" [S, n], "average" [S], "ensemble" [S]} test accuracies in pp): every
    snapshot (small), the mean snapshot, the weight average and the prediction average per seed."""
    fig, ax = new_figure(title, "cyclic lr arm", "test accuracy (pp)")
    for k, (arm, acc) in enumerate(arms.items()):
        snaps = np.asarray(acc["snapshots"], dtype=float)
        jitter = np.linspace(-0.08, 0.08, len(snaps))
        ax.plot(np.repeat(k - 0.25 + jitter, snaps.shape[1]), snaps.ravel(), ".", color=COLORS["ref"], ms=2,
                label="each snapshot" if k == 0 else None)
        ax.plot(k - 0.25 + jitter, snaps.mean(1), "o", color=COLORS["a"], ms=4, label="mean snapshot" if k == 0 else None)
        ax.plot(k + jitter, acc["average"], "s", color=COLORS["flat"], ms=4, label="weight average (SWA)" if k == 0 else None)
        ax.plot(k + 0.25 + jitter, acc["ensemble"], "^", color=COLORS["b"], ms=4,
                label="prediction average" if k == 0 else None)
    ax.set_xticks(range(len(arms)), list(arms))
    ax.legend(fontsize=8)
    return save(fig, path)
