"""Jastrzebski et al. 2019 ("On the Relation Between the Sharpest Directions of DNN Loss and the SGD
Step Length") — the λ_max-trajectory claims on trained networks.

SD-1 §3.1, Fig. 2: "the spectral norm of the Hessian (λ_max) ... grows in the early phase of training
     ... reaches a peak and then decreases or stabilises." Per seed ln(λ_peak/λ_0), t_peak/T and
     λ_final/λ_peak, λ_peak the max over checkpoints t ≤ T/2; intersection–union of three sign tests
     (> ln 2, < 0.5, < 1.1) on the median seed. A seed still rising at its last checkpoint, or whose
     Lanczos did not converge at λ_0, λ_peak or λ_final, is no evidence either way (flagged).
SD-2 §3.1, Fig. 3: "the peak of λ_max is lower for a larger learning rate and for a smaller batch size."
     Per seed the OLS slopes of ln λ_peak on ln η (3 lrs at batch 32) and on ln S (3 batches at lr
     0.03); sign tests: lr slope < 0 and batch slope > 0. Every grid point runs the same gradient-flow
     time τ = η·steps.
SD-7 App. E, Fig. 16: "larger momentum ... lowers the peak of λ_max." Paired by seed: ln λ_peak(m=0.9) −
     ln λ_peak(m=0) < 0 at equal lr (the momentum arm also sampled on its own time scale).

cpu tier (registry 2026-12-01, reports/sd-cpu-tier-study.md): MLP 40-128-128-10 relu without BN on 1,000
MNIST-1D rows, constant-lr SGD, λ_max by Lanczos on 200 fixed rows. Every setting is read from
claims/registry.toml. Negative control of each claim: the same recipe on a linear model under
½‖Wx − onehot‖², whose Hessian is constant along training — it must not come out replicated.
gpu tier (registry SD-1 cases.gpu, 2026-12-02): the same tests on a 10,000-row MNIST-1D conv net and, when
the data directory has CIFAR-10, the paper's SimpleCNN and ResNet-32 without BN on a 10,000-image subset
(each case runs the claims it lists); benchmarks/gpu_sd.sh runs them in timed stages.
"""
from __future__ import annotations

import math

import numpy as np

from core import plots
from core.harness import check_claim, check_control, claim_of
from core.landscape.peaks import peaks as trajectory_peaks
from core.plots_sd import lambda_trajectories, peak_vs_grid
from core.registry import load_registry
from fixtures.cases import figure_tag
from fixtures.sd import claim_points, parametrize_sd, point_name, sd_case


def pytest_generate_tests(metafunc):
    parametrize_sd(metafunc)  # (tier, case): the cpu case and every gpu case that runs the claim


# ---------------------------------------------------------------- per-seed numbers
def _peaks(sd_runs, claim_id: str, tier: str, case: str | None, *, control: bool = False) -> dict[tuple, list]:
    """(lr, batch, momentum) -> the claim's seeds' `Peak`s (control: the linear-model twin's)."""
    claim, prefix = claim_of(claim_id), "control: " if control else ""
    tol, n = claim_of("SD-1").setting("lanczos_tol"), claim.seeds[tier]
    points = claim_points(load_registry(), tier)[claim_id]
    runs = sd_runs(tier, case, [prefix + point_name(p) for p in points])
    return {p: trajectory_peaks(runs[prefix + point_name(p)], n, tol=tol) for p in points}


def _flags(by_point: dict[tuple, list]) -> list[str]:
    return [f"{point_name(p)}: seed {s} {pk.flag.replace('_', ' ')}" for p, pks in by_point.items()
            for s, pk in enumerate(pks) if pk.flag]


def _slope(x: list[float], peaks: list) -> float:
    """OLS slope Σ(u − ū)(v − v̄)/Σ(u − ū)² of v = ln λ_peak on u = ln x over one seed's grid points
    (NaN if any point is no evidence). Centred explicitly so that equal λ_peak give exactly 0: a
    least-squares solver returns ±1e-17 there, and a sign test would count that rounding as a sign
    (the linear-model control did: 10 of 10 "slopes" −9.6e-18)."""
    if not all(pk.ok for pk in peaks):
        return math.nan
    u, v = np.log(np.asarray(x, dtype=float)), np.log([pk.lam_peak for pk in peaks])
    du, dv = u - u.mean(), v - v.mean()
    return float((du * dv).sum() / (du * du).sum())


def _sd1_data(pks: list) -> tuple[dict, dict]:
    ok = [pk for pk in pks if pk.ok]
    data = {"growth": {"values": [pk.growth for pk in ok]},
            "peak_in_first_half": {"values": [pk.position for pk in ok]},
            "final_vs_peak": {"values": [pk.final_ratio for pk in ok]}}
    per_seed = {"lambda_0": [pk.lam0 for pk in pks], "lambda_peak": [pk.lam_peak for pk in pks],
                "t_peak_over_T": [pk.t_peak / pk.T for pk in pks], "lambda_final": [pk.lam_final for pk in pks],
                "ln_growth": [pk.growth if pk.ok else math.nan for pk in pks],
                "no_evidence": [float(not pk.ok) for pk in pks]}  # why: the record's flags
    return data, per_seed


def _sd2_data(by_point: dict[str, list]) -> tuple[dict, dict]:
    pts = list(by_point)
    lr_pts, b_pts = pts[:3], pts[3:]
    n = len(next(iter(by_point.values())))
    lr_s = [_slope([p[0] for p in lr_pts], [by_point[p][s] for p in lr_pts]) for s in range(n)]
    b_s = [_slope([p[1] for p in b_pts], [by_point[p][s] for p in b_pts]) for s in range(n)]
    data = {"lr_slope": {"values": [v for v in lr_s if math.isfinite(v)]},
            "batch_slope": {"values": [v for v in b_s if math.isfinite(v)]}}
    per_seed = {"lr_slope": lr_s, "batch_slope": b_s,
                **{f"lambda_peak {point_name(p)}": [pk.lam_peak if pk.ok else math.nan for pk in by_point[p]] for p in pts}}
    return data, per_seed


def _sd7_data(by_point: dict[str, list]) -> tuple[dict, dict]:
    m0, m9 = by_point.values()
    both = [(a, b) for a, b in zip(m9, m0) if a.ok and b.ok]
    data = {"a": [math.log(a.lam_peak) for a, _ in both], "b": [math.log(b.lam_peak) for _, b in both]}
    names = [point_name(p) for p in by_point]
    per_seed = {f"lambda_peak {names[0]}": [pk.lam_peak if pk.ok else math.nan for pk in m0],
                f"lambda_peak {names[1]}": [pk.lam_peak if pk.ok else math.nan for pk in m9],
                "ln_difference": [math.log(a.lam_peak / b.lam_peak) if a.ok and b.ok else math.nan
                                  for a, b in zip(m9, m0)]}
    return data, per_seed


# ---------------------------------------------------------------- the claims
def test_sd1_lambda_max_peaks_early(request, sd_runs, figure_dir, tier, case):
    by_point = _peaks(sd_runs, "SD-1", tier, case)
    data, per_seed = _sd1_data(next(iter(by_point.values())))
    check_claim(request, "SD-1", tier=tier, case=_case(tier, case, by_point), data=data, per_seed=per_seed,
                n_used=len(data["growth"]["values"]), flags=_flags(by_point),
                figures=_trajectory_figures(sd_runs, figure_dir, "SD-1", tier, case, by_point))


def test_sd1_control_constant_hessian(request, sd_runs, tier, case):
    by_point = _peaks(sd_runs, "SD-1", tier, case, control=True)
    data, per_seed = _sd1_data(next(iter(by_point.values())))
    check_control(request, "SD-1", tier=tier, case=f"control: linear model, quadratic loss ({_case(tier, case, by_point)})",
                  data=data, per_seed=per_seed, n_used=len(data["growth"]["values"]))


def test_sd2_peak_lower_for_larger_lr_and_smaller_batch(request, sd_runs, figure_dir, tier, case):
    by_point = _peaks(sd_runs, "SD-2", tier, case)
    data, per_seed = _sd2_data(by_point)
    check_claim(request, "SD-2", tier=tier, case=_case(tier, case, by_point), data=data, per_seed=per_seed,
                n_used=min(len(d["values"]) for d in data.values()), flags=_flags(by_point),
                figures=_sd2_figures(sd_runs, figure_dir, tier, case, by_point))


def test_sd2_control_constant_hessian(request, sd_runs, tier, case):
    by_point = _peaks(sd_runs, "SD-2", tier, case, control=True)
    data, per_seed = _sd2_data(by_point)
    check_control(request, "SD-2", tier=tier, case=f"control: linear model, quadratic loss ({_case(tier, case, by_point)})",
                  data=data, per_seed=per_seed, n_used=min(len(d["values"]) for d in data.values()))


def test_sd7_momentum_lowers_the_peak(request, sd_runs, figure_dir, tier, case):
    by_point = _peaks(sd_runs, "SD-7", tier, case)
    data, per_seed = _sd7_data(by_point)
    check_claim(request, "SD-7", tier=tier, case=_case(tier, case, by_point), data=data, per_seed=per_seed,
                n_used=len(data["a"]), flags=_flags(by_point),
                figures=_sd7_figures(sd_runs, figure_dir, tier, case, by_point, per_seed))


def test_sd7_control_constant_hessian(request, sd_runs, tier, case):
    by_point = _peaks(sd_runs, "SD-7", tier, case, control=True)
    data, per_seed = _sd7_data(by_point)
    check_control(request, "SD-7", tier=tier, case=f"control: linear model, quadratic loss ({_case(tier, case, by_point)})",
                  data=data, per_seed=per_seed, n_used=len(data["a"]))


def _case(tier: str, case: str | None, by_point) -> str:
    return f"{sd_case(tier, case).name} " + ", ".join(map(point_name, by_point))


# ---------------------------------------------------------------- figures (descriptive)
def _curves(art, n: int, lr: float) -> tuple[np.ndarray, np.ndarray]:
    return art["steps"].double().numpy() * lr, art["lam"][:n, :, 0].numpy()


def _trajectory_figures(sd_runs, figure_dir, claim_id, tier, case, by_point) -> list:
    runs, out, tag = sd_runs(tier, case, [point_name(p) for p in by_point]), [], figure_tag(tier, case)
    for p, pks in by_point.items():
        lr, name = p[0], point_name(p)
        x, lam = _curves(runs[name], len(pks), lr)
        marks = [(pk.t_peak * lr, pk.lam_peak) for pk in pks if pk.ok]
        out.append(lambda_trajectories(
            figure_dir / f"{claim_id}_{tag}_{name.replace(' ', '_').replace('=', '')}_lambda.png", {name: (x, lam)},
            peaks=marks, half=pks[0].T * lr / 2, bound=2 / lr,
            title=f"{claim_id}: λ_max per seed along training, {name} (Fig. 2)"))
    return out


def _sd2_figures(sd_runs, figure_dir, tier, case, by_point) -> list:
    pts, tag = list(by_point), figure_tag(tier, case)
    runs = sd_runs(tier, case, [point_name(p) for p in pts])
    figs = []
    for sub, i, key, label in ((pts[:3], 0, "lr", "learning rate η (batch fixed)"),
                               (pts[3:], 1, "b", "batch size S (lr fixed)")):
        peaks = np.array([[pk.lam_peak if pk.ok else np.nan for pk in by_point[p]] for p in sub]).T
        figs.append(peak_vs_grid(figure_dir / f"SD-2_{tag}_peak_vs_{key}.png", [p[i] for p in sub], peaks,
                                 xlabel=label, title=f"SD-2: λ_peak per seed against {label} (Fig. 3)"))
        groups = {point_name(p): _curves(runs[point_name(p)], len(by_point[p]), p[0]) for p in sub}
        figs.append(lambda_trajectories(figure_dir / f"SD-2_{tag}_trajectories_{key}.png", groups,
                                        title=f"SD-2: λ_max along training across {label}"))
    return figs


def _sd7_figures(sd_runs, figure_dir, tier, case, by_point, per_seed) -> list:
    names, tag = [point_name(p) for p in by_point], figure_tag(tier, case)
    runs = sd_runs(tier, case, names)
    groups = {point_name(p): _curves(runs[point_name(p)], len(pks), p[0]) for p, pks in by_point.items()}
    return [lambda_trajectories(figure_dir / f"SD-7_{tag}_trajectories.png", groups,
                                title="SD-7: λ_max along training, momentum 0 vs 0.9 (Fig. 16)"),
            plots.paired_seeds(figure_dir / f"SD-7_{tag}_peaks.png", per_seed[f"lambda_peak {names[1]}"],
                               per_seed[f"lambda_peak {names[0]}"], ("momentum 0.9", "momentum 0"),
                               ylabel="λ_peak", title="SD-7: λ_peak per seed (paired)")]
