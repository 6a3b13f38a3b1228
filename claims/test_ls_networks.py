"""Fort & Jastrzebski 2019 ("Large Scale Structure of Neural Network Loss Landscapes") — tunnels and
m-connectors between independently initialised optima of real networks.

LS-5 §4.2, Figs. 1, 3: "the linear path between independently initialised optima crosses a high-loss
     wall", while the tunnel built on hyperplanes normal to it "is a low-loss point itself" everywhere.
     Per pair: success iff the linear barrier > τ_high and the tunnel barrier ≤ τ_low_abs + τ_low_rel ×
     mean endpoint train loss (barrier = max train loss along the path − mean of its endpoints', at 41
     points per segment, so a tunnel low only at its optimised points fails). Existence: replicated iff
     the Clopper–Pearson lower bound of the success rate > 0.5 (α_i = 0.05/16), refuted iff its upper
     bound < 0.5. 10 disjoint pairs.
LS-6 §4.2, Fig. 3 (middle, right): along the tunnel the deviations from the line cluster by half, and
     the predicted labels change on one half and stay on the other. Per pair: aligned iff the mean
     within-half cosine > cos_in in both halves and the mean cross-half |cosine| < cos_cross; labels iff
     ≥ 80% of the change of test-label agreement with the far endpoint happens on one half (the pair
     oriented so that A's half carries more of it). Intersection–union of two existence tests (α 0.05).
LS-7 §4.3: "low-loss m-connectors join m + 1 independently initialised optima, up to m = 10." Per set:
     success iff the connector's barrier (max over its m + 1 segments centre → optimum) ≤ τ_low. Per
     m ∈ {2, 5, 10} existence over 10 disjoint sets; intersection–union over m.

LS-8 §4.3, Fig. 4: "there are more short directions in the middle of a connector than at its endpoints,
     and more for larger m." Per connector (m = 1: the tunnel's midpoint; m = 2, 5, 10: the centre; 5 each):
     count = #{top-60 Hessian eigenvalues > 0.1 × mean λ_max over its optima}. Intersection–union of a
     sign test on the median connector of centre count − mean endpoint count (> 0) and an exact
     Spearman trend of the centre count on m (increasing), α 0.05.

LS-9 §4.4, Fig. 5: "higher learning rate → wider tunnels … a larger batch size leads to narrower tunnel",
     L2 and dropout widen them "up to a point". Per seed and hyper-parameter: OLS slope of the mean
     angular width (the angle of a norm-preserving rotation towards a random direction at which the
     train loss first exceeds 1 nat, mean of 20 directions) on grid position 0, 1, 2. Intersection–union
     of sign tests on the median seed: lr, L2, dropout slopes > 0, batch slope < 0 (α 0.05, 5 seeds).
LS-10 §4.5, Fig. 6: "for high maximum learning rates during cyclical snapshotting … the average
     configuration performs worse than a single snapshot"; "for a low learning rate … their average
     performs well"; prediction averaging gains more over weight averaging at high lr. Per seed (its base
     optimum, 5 cosine-restart cycles of SGD-momentum, a snapshot per cycle): acc(weight average) − mean
     acc(snapshots) < 0 at high lr, ≥ −1 pp at low lr, and (ensemble − weight average) larger at high
     than at low lr; intersection–union of sign tests (α 0.003125, 10 seeds).

cpu tier (registry 2026-12-01, reports/ls-cpu-tier-study.md): a pool of 110 independently initialised
40-128-128-10 tanh MLPs, constant-lr Adam on 1,000 MNIST-1D rows (fixtures/ls.py); hyperplane points and
centres by projected Adam on mini-batch gradients (core/connectors.py, core/netloss.py). Negative
controls, which must not come out replicated: the same evaluation with the hyperplane points or the
centres NOT optimised (the straight line posing as a tunnel; the barycentre as the centre); for LS-8 the
middle replaced by one of the connector's own optima (a point with the endpoints' curvature); for LS-9
the measured widths put in a random order along each grid (fixtures/ls_training.py has the recipes);
for LS-10 a second low-lr arm posing as the high one (no wedge change).

gpu tier (registry LS-5 cases, 2026-12-02; benchmarks/gpu_ls.sh runs it in one 10-minute script): one
pool per case, trained on CUDA — mnist1d-large (offline: 10,000 MNIST-1D rows, the tanh MLP 40-256-256-10;
every claim), cifar10-simplecnn (Fort's SimpleCNN on 2,000 CIFAR-10 rows; LS-5, LS-6) and
fashion-mnist-simplecnn (the same CNN on Fashion-MNIST; LS-8, as Fort's Fig. 4). Every test runs per
(tier, case) where the case's `claims` list the claim; a case whose dataset is not on disk skips with
core.data.DatasetNotFound's message, and the pytest plugin skips gpu tests without CUDA.
"""
from __future__ import annotations

import numpy as np
import torch

from core.harness import check_claim, check_control, claim_of
from core.plots import cosine_matrix
from core.plots_ls import (connector_barriers, cyclic_snapshots, label_agreement, line_vs_tunnel, radial_widths,
                           short_directions)
from fixtures.cases import figure_tag, parametrize_cases
from fixtures.ls import CPU_CASE, ls_cases
from fixtures.ls_training import radial_grid

STRUCTURE, HYPER = ("structure",), ("hyper",)  # fixtures.ls.LS_GROUPS: LS-5 … LS-8's artifacts; LS-9's and LS-10's


def pytest_generate_tests(metafunc):
    """(tier, case) of each claim test at collection: the cpu case and each gpu case that runs the claim."""
    parametrize_cases(metafunc, "LS", lambda: ls_cases("gpu"), CPU_CASE)


def _label(case: str) -> str:
    """The records' case label: "<case> pool" (cpu: "mnist1d-mlp-tanh pool", as before there were cases)."""
    return f"{case} pool"


def _figure(figure_dir, claim_id: str, tier: str, case: str, what: str):
    """<claim>_<tier>_<what>.png at cpu (one case: the names the cpu reports have), with the case at gpu."""
    return figure_dir / f"{claim_id}_{figure_tag(tier, case)}_{what}.png"


# ---------------------------------------------------------------- per-pair and per-set numbers
def _tau_low(claim, end_losses: torch.Tensor) -> torch.Tensor:
    """τ_low_abs + τ_low_rel × mean endpoint train loss, per unit ([U, E] -> [U])."""
    st = claim.settings
    return float(st["tau_low_abs"]) + float(st["tau_low_rel"]) * end_losses.double().mean(-1)


def _excluded(art: dict, key: str) -> list[str]:
    return [f"{key} {k}: {s} — no evidence either way (dropped, counted)"
            for k, s in enumerate(art.get(f"{key}_status", [])) if s != "ok"]


def _ls5(art: dict) -> tuple[list[bool], dict]:
    """Per pair: the LS-5 success and its columns."""
    claim = claim_of("LS-5")
    lin, tun = art["linear_barrier"].double(), art["tunnel_barrier"].double()
    low = _tau_low(claim, art["end_losses"])
    ok = ((lin > float(claim.settings["tau_high"])) & (tun <= low)).tolist()
    return ok, {"success": [float(o) for o in ok], "linear_barrier": lin.tolist(), "tunnel_barrier": tun.tolist(),
                "tau_low": low.tolist(), "endpoint_mean_loss": art["end_losses"].double().mean(-1).tolist(),
                "tunnel_max_loss": art["tunnel_losses"].double().amax(-1).tolist(),
                "distance": art["distance"].double().tolist(), "pair": [float(k) for k in art["kept"]]}


def _label_share(art: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair: the share of the change of agreement with the far endpoint that happens on the near
    half, in the orientation where that share is larger, and the total change 1 − agree(A, B)."""
    t, a, b = art["t"], art["agree_a"].double(), art["agree_b"].double()
    mid = int(torch.argmin((t - 0.5).abs()))
    total = 1.0 - b[:, 0]  # agreement with B rises from agree(A, B) at A to 1 at B
    share_ab = (b[:, mid] - b[:, 0]) / total.clamp_min(1e-12)
    share_ba = (a[:, mid] - a[:, -1]) / total.clamp_min(1e-12)
    return torch.maximum(share_ab, share_ba), total


def _ls6(art: dict) -> tuple[dict, dict]:
    st = claim_of("LS-6").settings
    w1, w2, x = art["within_first"].double(), art["within_second"].double(), art["across"].double()
    aligned = (w1 > float(st["cos_in"])) & (w2 > float(st["cos_in"])) & (x < float(st["cos_cross"]))
    share, total = _label_share(art)
    labels = (share >= float(st["label_change_share"])) & (total >= float(st["min_total_change"]))
    data = {"aligned": {"successes": aligned.tolist()}, "labels": {"successes": labels.tolist()}}
    return data, {"aligned": aligned.double().tolist(), "labels": labels.double().tolist(),
                  "within_first_half": w1.tolist(), "within_second_half": w2.tolist(), "across_halves": x.tolist(),
                  "label_change_share": share.tolist(), "label_total_change": total.tolist(),
                  "pair": [float(k) for k in art["kept"]]}


def _ls7(runs: dict, *, control: bool = False) -> tuple[dict, dict, dict, list[str]]:
    """Per m: successes, per-set columns, the barriers and τ_low for the figure, and exclusion flags."""
    claim = claim_of("LS-7")
    data, cols, fig, flags = {}, {}, {}, []
    for m in claim.settings["m_grid"]:
        art = runs[f"connector {'control: ' if control else ''}m={m}"]
        low = _tau_low(claim, art["end_losses"])
        ok = (art["barrier"].double() <= low).tolist()
        data[f"m_{m}"] = {"successes": ok}
        cols |= {f"m={m} success": [float(o) for o in ok], f"m={m} barrier": art["barrier"].double().tolist(),
                 f"m={m} tau_low": low.tolist(), f"m={m} centre loss": art["centre_loss"].double().tolist(),
                 f"m={m} barycentre loss": art["hull_loss"].double().tolist()}
        fig[m] = (art["barrier"].double().tolist(), low.tolist())
        flags += [f"m={m} " + f for f in _excluded(art, "set")]
    return data, cols, fig, flags


def _ls8(art: dict, *, control: bool = False) -> tuple[dict, dict, list[str]]:
    """Per connector: the centre's and the mean endpoint's count of eigenvalues above fraction × mean
    λ_max over its optima (control: the middle replaced by the set's first optimum)."""
    st = claim_of("LS-8").settings
    k, frac = int(st["lanczos_k"]), float(st["fraction"])
    ms, mid, ends, flags = [], [], [], []
    for u in art["units"]:
        thr = frac * float(u["ends"][:, 0].mean())
        lam, res = (u["ends"][0], u["end_residuals"][0]) if control else (u["middle"], u["middle_residuals"])
        c_mid, c_ends = int((lam > thr).sum()), (u["ends"] > thr).sum(-1).double()
        ms.append(float(u["m"]))
        mid.append(float(c_mid))
        ends.append(float(c_ends.mean()))
        if c_mid == k or bool((c_ends == k).any()):
            flags.append(f"m={u['m']} set {u['index']}: a count equals lanczos_k = {k} (censored)")
        if bool(((res > 0.01) & (lam > thr)).any()):
            flags.append(f"m={u['m']} set {u['index']}: an eigenvalue above the threshold is unconverged (count may read low)")
    data = {"middle_vs_endpoints": {"a": mid, "b": ends}, "increasing_with_m": {"x": ms, "y": mid}}
    return data, {"m": ms, "middle_count": mid, "mean_endpoint_count": ends,
                  "difference": [a - b for a, b in zip(mid, ends)]}, flags


def _ols_slope(y: torch.Tensor) -> torch.Tensor:
    """OLS slope of y [S, G] on grid position 0 .. G − 1, per row (registry LS-9 `slope`)."""
    x = torch.arange(y.shape[1], dtype=torch.float64)
    x = x - x.mean()
    return ((y - y.mean(1, keepdim=True)) * x).sum(1) / (x * x).sum()


def _ls9_widths(art: dict, tier: str, *, permuted: bool = False, revised: bool = True) -> dict[str, torch.Tensor]:
    """Per rule part: the mean widths [S, 3] in grid order. revised (registry LS-9 revision 2026-12-01):
    an optimum whose train loss already exceeds the level at θ = 0 has no width (NaN, its seed drops out
    of that slope) instead of 0°. permuted: each seed's three in its registered random order (the control)."""
    st, out = claim_of("LS-9").settings, {}
    for i, (part, names) in enumerate(radial_grid(tier).items()):
        w = torch.stack([art["points"][n]["mean_width"] for n in names], 1)
        if revised:
            start = torch.stack([art["points"][n]["start_loss"] for n in names], 1)
            w = w.masked_fill(start > float(st["level"]), float("nan"))
        if permuted:
            gens = [torch.Generator().manual_seed(int(st["direction_seed"]) + 1000 * (i + 1) + s) for s in range(len(w))]
            w = torch.stack([row[torch.randperm(3, generator=g)] for row, g in zip(w, gens)])
        out[part] = w
    return out


def _ls9(art: dict, tier: str, *, permuted: bool = False, revised: bool = True) -> tuple[dict, dict, list[str]]:
    """Per part: the per-seed slopes (a seed without a width at some grid point dropped, counted), the
    per-seed columns (widths and each optimum's train loss at θ = 0) and flags."""
    data, cols, flags = {}, {}, []
    level = float(claim_of("LS-9").settings["level"])
    widths = _ls9_widths(art, tier, permuted=permuted, revised=revised)
    for i, (part, names) in enumerate(radial_grid(tier).items()):
        w = widths[part]
        slope, keep = _ols_slope(w), w.isfinite().all(1)
        data[part] = {"values": slope[keep].tolist()}
        cols[f"{part} slope (deg/step)"] = slope.tolist()
        # the grid point's own value of the varied hyper-parameter (its name's i-th field, e.g. "lr=0.003")
        cols |= {f"{part} width @{n.split()[i]}": w[:, j].tolist() for j, n in enumerate(names)}
        if not permuted:
            cols |= {f"{part} start loss @{n.split()[i]}": art["points"][n]["start_loss"].tolist() for n in names}
        for n in names:
            p = art["points"][n]
            bad = [s for s, st in enumerate(p["seed_status"]) if st != "ok"]
            high = [s for s in range(len(p["start_loss"])) if revised and s not in bad
                    and float(p["start_loss"][s]) > level]
            flags += [f"{part} {n.split()[i]}: seed {s}: {p['seed_status'][s]} — dropped (counted)" for s in bad]
            if high:
                flags.append(f"{part} {n.split()[i]}: seeds {high} start above the level (train loss "
                             f"{min(float(p['start_loss'][s]) for s in high):.2f}–{max(float(p['start_loss'][s]) for s in high):.2f} "
                             f"nats at θ = 0: no optimum, no width) — dropped (counted)")
            if int(p["censored"].sum()):
                flags.append(f"{part} {n.split()[i]}: {int(p['censored'].sum())} directions never exceed the level "
                             "(width θ_max)")
    return data, cols, flags


def _ls10(runs: dict, *, control: bool = False) -> tuple[dict, dict, list[str]]:
    """Per seed: acc(WA) − mean acc(snapshots) at high and low lr, and the ensemble's advantage over WA."""
    high, low = runs["cyclic control" if control else "cyclic high"], runs["cyclic low"]
    gap = lambda a: (a["average_acc"] - a["snapshot_acc"].mean(-1)).double()  # noqa: E731
    adv = lambda a: (a["ensemble_acc"] - a["average_acc"]).double()  # noqa: E731
    keep = gap(high).isfinite() & gap(low).isfinite()
    flags = [f"seed {s}: high {high['seed_status'][s]}, low {low['seed_status'][s]} — dropped (counted)"
             for s in (~keep).nonzero().flatten().tolist()]
    data = {"swa_fails_high": {"values": gap(high)[keep].tolist()}, "swa_works_low": {"values": gap(low)[keep].tolist()},
            "ensemble_gap": {"a": adv(high)[keep].tolist(), "b": adv(low)[keep].tolist()}}
    cols = {"high: WA − mean snapshot (pp)": gap(high).tolist(), "low: WA − mean snapshot (pp)": gap(low).tolist(),
            "high: ensemble − WA (pp)": adv(high).tolist(), "low: ensemble − WA (pp)": adv(low).tolist(),
            "high: mean snapshot acc": high["snapshot_acc"].mean(-1).tolist(), "high: WA acc": high["average_acc"].tolist(),
            "low: mean snapshot acc": low["snapshot_acc"].mean(-1).tolist(), "low: WA acc": low["average_acc"].tolist(),
            "high: WA train loss": high["average_train_loss"].tolist(), "low: WA train loss": low["average_train_loss"].tolist()}
    return data, cols, flags


# ---------------------------------------------------------------- the claims
def test_ls5_tunnel_through_the_linear_wall(request, ls_runs, figure_dir, tier, case):
    art = ls_runs(tier, case, STRUCTURE)["tunnel claim"]
    ok, cols = _ls5(art)
    check_claim(request, "LS-5", tier=tier, case=_label(case), data={"successes": ok}, per_seed=cols,
                flags=_excluded(art, "pair"), figures=_ls5_figures(figure_dir, art, tier, case))


def test_ls5_control_unoptimised_tunnel(request, ls_runs, tier, case):
    """The hyperplane points left on the line: the 'tunnel' is the linear path and crosses its wall."""
    ok, cols = _ls5(ls_runs(tier, case, STRUCTURE)["tunnel control"])
    check_control(request, "LS-5", tier=tier, case=f"control: hyperplane points not optimised ({_label(case)})",
                  data={"successes": ok}, per_seed=cols)


def test_ls6_tunnel_halves_and_labels(request, ls_runs, figure_dir, tier, case):
    art = ls_runs(tier, case, STRUCTURE)["tunnel claim"]
    data, cols = _ls6(art)
    check_claim(request, "LS-6", tier=tier, case=_label(case), data=data, per_seed=cols, flags=_excluded(art, "pair"),
                figures=_ls6_figures(figure_dir, art, tier, case))


def test_ls6_control_unoptimised_tunnel(request, ls_runs, tier, case):
    """The straight line posing as a tunnel: its 'deviations' are zero, so they cannot cluster by half."""
    data, cols = _ls6(ls_runs(tier, case, STRUCTURE)["tunnel control"])
    check_control(request, "LS-6", tier=tier, case=f"control: hyperplane points not optimised ({_label(case)})",
                  data=data, per_seed=cols)


def test_ls7_low_loss_m_connectors(request, ls_runs, figure_dir, tier, case):
    data, cols, fig, flags = _ls7(ls_runs(tier, case, STRUCTURE))
    path = _figure(figure_dir, "LS-7", tier, case, "barriers")
    check_claim(request, "LS-7", tier=tier, case=_label(case), data=data, per_seed=cols, flags=flags,
                figures=[connector_barriers(path, {m: v[0] for m, v in fig.items()}, {m: v[1] for m, v in fig.items()},
                                            title=f"LS-7 {_label(case)}: m-connector barriers per set vs τ_low")])


def test_ls7_control_unoptimised_centre(request, ls_runs, tier, case):
    """The centre left at the barycentre of the optima (not optimised): the connector crosses the walls."""
    data, cols, _, _ = _ls7(ls_runs(tier, case, STRUCTURE), control=True)
    check_control(request, "LS-7", tier=tier, case=f"control: centre not optimised ({_label(case)})", data=data,
                  per_seed=cols)


def test_ls8_more_short_directions_mid_connector(request, ls_runs, figure_dir, tier, case):
    data, cols, flags = _ls8(ls_runs(tier, case, STRUCTURE)["spectra"])
    check_claim(request, "LS-8", tier=tier, case=_label(case), data=data, per_seed=cols, flags=flags,
                figures=[_ls8_figure(figure_dir, cols, tier, case)])


def test_ls8_control_middle_is_an_optimum(request, ls_runs, tier, case):
    """The middle replaced by one of the set's own optima: no excess of short directions by construction."""
    data, cols, _ = _ls8(ls_runs(tier, case, STRUCTURE)["spectra"], control=True)
    check_control(request, "LS-8", tier=tier, case=f"control: middle replaced by an optimum ({_label(case)})",
                  data=data, per_seed=cols)


def test_ls9_radial_tunnel_width_vs_hyperparameters(request, ls_runs, figure_dir, tier, case):
    art = ls_runs(tier, case, HYPER)["radial"]
    data, cols, flags = _ls9(art, tier)
    check_claim(request, "LS-9", tier=tier, case=_label(case), data=data, per_seed=cols, flags=flags,
                original_data=_ls9(art, tier, revised=False)[0], figures=[_ls9_figure(figure_dir, art, tier, case)])


def test_ls9_control_grid_order_permuted(request, ls_runs, tier, case):
    """The same widths in a random order along each grid: no link to the hyper-parameter is left."""
    data, cols, _ = _ls9(ls_runs(tier, case, HYPER)["radial"], tier, permuted=True)
    check_control(request, "LS-9", tier=tier, case=f"control: grid order permuted ({_label(case)})", data=data,
                  per_seed=cols)


def test_ls10_swa_fails_at_high_cyclic_lr(request, ls_runs, figure_dir, tier, case):
    runs = ls_runs(tier, case, HYPER)
    data, cols, flags = _ls10(runs)
    check_claim(request, "LS-10", tier=tier, case=_label(case), data=data, per_seed=cols, flags=flags,
                figures=[_ls10_figure(figure_dir, runs, tier, case)])


def test_ls10_control_low_lr_posing_as_high(request, ls_runs, tier, case):
    """A second low-lr arm in the high arm's place: its snapshots stay in one wedge, so SWA cannot fail."""
    data, cols, _ = _ls10(ls_runs(tier, case, HYPER), control=True)
    check_control(request, "LS-10", tier=tier, case=f"control: a low-lr arm posing as the high one ({_label(case)})",
                  data=data, per_seed=cols)


# ---------------------------------------------------------------- figures (descriptive)
def _ls5_figures(figure_dir, art, tier: str, case: str) -> list:
    tau_low = float(_tau_low(claim_of("LS-5"), art["end_losses"]).median())
    return [line_vs_tunnel(_figure(figure_dir, "LS-5", tier, case, "paths"), art["t"].numpy(), art["linear_losses"].numpy(),
                           art["tunnel_losses"].numpy(), tau_high=float(claim_of("LS-5").settings["tau_high"]),
                           tau_low=tau_low,
                           title=f"LS-5 {_label(case)}: train loss along the line and the tunnel, per pair")]


def _ls6_figures(figure_dir, art, tier: str, case: str) -> list:
    return [cosine_matrix(_figure(figure_dir, "LS-6", tier, case, "cosines"), np.asarray(art["cos"][0]),
                          title=f"LS-6 {_label(case)}, pair 0: cosines between the tunnel points' deviations"),
            label_agreement(_figure(figure_dir, "LS-6", tier, case, "labels"), art["t"].numpy(), art["agree_a"].numpy(),
                            art["agree_b"].numpy(), title=f"LS-6 {_label(case)}: test-label agreement along the tunnel")]


def _ls8_figure(figure_dir, cols, tier: str, case: str) -> str:
    by_m: dict[float, list] = {}
    for m, a, b in zip(cols["m"], cols["middle_count"], cols["mean_endpoint_count"]):
        by_m.setdefault(m, []).append((a, b))
    return short_directions(_figure(figure_dir, "LS-8", tier, case, "short_directions"), by_m,
                            title=f"LS-8 {_label(case)}: short directions mid-connector vs at its optima (Fig. 4)")


def _ls9_figure(figure_dir, art, tier: str, case: str) -> str:
    widths, labels = _ls9_widths(art, tier), {"lr_wider": "lr", "l2_wider": "L2", "dropout_wider": "dropout",
                                        "batch_narrower": "batch"}
    grid = radial_grid(tier)
    by_part = {labels[p]: ([n.split()[i].split("=")[1] for n in grid[p]], widths[p].numpy())
               for i, p in enumerate(grid)}
    return radial_widths(_figure(figure_dir, "LS-9", tier, case, "widths"), by_part,
                         title=f"LS-9 {_label(case)}: radial tunnel width per seed vs lr, L2, dropout, batch (Fig. 5)")


def _ls10_figure(figure_dir, runs, tier: str, case: str) -> str:
    arms = {f"{k} (lr_max {runs[f'cyclic {k}']['lr_max']:g})": {"snapshots": runs[f"cyclic {k}"]["snapshot_acc"].numpy(),
                                                                 "average": runs[f"cyclic {k}"]["average_acc"].numpy(),
                                                                 "ensemble": runs[f"cyclic {k}"]["ensemble_acc"].numpy()}
            for k in ("high", "low")}
    return cyclic_snapshots(_figure(figure_dir, "LS-10", tier, case, "snapshots"), arms,
                            title=f"LS-10 {_label(case)}: snapshots, weight average and ensemble per seed (Fig. 6)")
