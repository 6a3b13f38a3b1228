"""Jastrzebski et al. 2019 ("On the Relation Between the Sharpest Directions of DNN Loss and the SGD
Step Length") — the claims that change the SGD step inside the sharpest directions.

SD-4 §3.3, Fig. 5: restarted after the peak, "taking gradient paths only along the top eigenvalue
     direction ... decreases the spectral norm" but "increases the loss"; removing that component, "the
     spectral norm continues to increase" while "the loss is reduced in a similar manner as by vanilla
     SGD"; rescaling it by γ < 1 sharpens and γ > 1 flattens. Per seed, paired with vanilla SGD from
     the same checkpoint and the same mini-batches: six one-sided sign tests, intersection–union.
SD-5 §4, Table 1: "Nudged SGD with γ = 0.01 ... finds a region that is an order of magnitude sharper
     ... with similar or better generalization". Per seed at the best-validation checkpoint:
     log10(λ_max(γ=0.01)/λ_max(γ=1)) with lower bound > 1 (refuted if upper < log10 3), and test
     accuracy non-inferior by 1 pp; intersection–union.
SD-6 §4, Table 1: γ = 10 reaches a wider minimum without better accuracy: ln λ_max(γ=10) − ln λ_max(γ=1)
     < 0 and accuracy difference < +0.5 pp (sign tests), intersection–union.

cpu tier (registry 2026-12-01): SD-1's network and data (MLP 40-128-128-10 relu, no BN, 1,000 MNIST-1D
rows), λ_max by Lanczos on SD-1's 200 fixed Hessian rows; SD-4 restarts SD-1's own runs at their peak
checkpoint; SD-5/6 train from initialisation at lr 0.01 with the plateau schedule (core/nudged.py).
Negative controls: SD-4 on the linear model under ½‖Wx − onehot‖² (its Hessian is constant: no
variant can move λ_max); SD-5/SD-6 on "γ = 1 late vs γ = 1 at its best epoch" — the same optimiser,
only training time differs, which is what a sharper-because-later checkpoint would look like.
gpu tier: the same tests on each SD-1 gpu case that lists the claim (registry SD-1 cases.gpu).
"""
from __future__ import annotations

import math

import numpy as np

from core import plots
from core.harness import check_claim, check_control, claim_of
from core.plots_sd import lambda_trajectories
from fixtures.cases import figure_tag
from fixtures.sd import parametrize_sd, sd_case



def pytest_generate_tests(metafunc):
    parametrize_sd(metafunc)  # (tier, case): the cpu case and every gpu case that runs the claim

SD4_PARTS = {  # part -> (variant a, variant b or "start", quantity)
    "top_only_flattens": ("top_only", "vanilla", "lam"), "top_only_loss_higher": ("top_only", "vanilla", "loss"),
    "no_top_sharpens": ("no_top", "vanilla", "lam"), "no_top_loss_decreases": ("no_top", "start", "loss"),
    "gamma_small_sharpens": ("gamma_small", "vanilla", "lam"),
    "gamma_large_flattens": ("gamma_large", "vanilla", "lam")}


# ---------------------------------------------------------------- SD-4: per-seed numbers
def _restart_values(spec, art) -> dict[str, list[float]]:
    """variant -> per restarted seed: ln λ_max at the end ("lam:<v>") and mean loss over the last 10%
    of steps on the Hessian rows ("loss:<v>"); NaN for a diverged member or an unconverged λ_max."""
    V, tol = len(spec.variants), spec.config.final_tol
    lam, res = art["final_lam"][:, 0].view(-1, V), art["final_residual"][:, 0].view(-1, V)
    loss = art["tail_loss"].double().view(-1, V)
    ok = [[st == "ok" for st in art["member_status"][i * V:(i + 1) * V]] for i in range(len(spec.seeds))]
    out = {"loss:start": art["start_loss"].double().view(-1, V)[:, 0].tolist()}
    for j, (v, _, _) in enumerate(spec.variants):
        out[f"lam:{v}"] = [math.log(float(lam[i, j])) if ok[i][j] and float(res[i, j]) <= tol else math.nan
                           for i in range(len(spec.seeds))]
        out[f"loss:{v}"] = [float(loss[i, j]) if ok[i][j] else math.nan for i in range(len(spec.seeds))]
    return out


def _sd4_data(values: dict[str, list[float]]) -> tuple[dict, list[str]]:
    data, dropped = {}, []
    for part, (a, b, q) in SD4_PARTS.items():
        xa, xb = values[f"{q}:{a}"], values["loss:start" if b == "start" else f"{q}:{b}"]
        pairs = [(u, w) for u, w in zip(xa, xb) if math.isfinite(u) and math.isfinite(w)]
        data[part] = {"a": [u for u, _ in pairs], "b": [w for _, w in pairs]}
        if len(pairs) < len(xa):
            dropped.append(f"{part}: {len(xa) - len(pairs)} pair(s) dropped (diverged or unconverged λ_max)")
    return data, dropped


def _sd4_per_seed(spec, values) -> dict[str, list[float]]:
    per_seed = {"seed": [float(s) for s in spec.seeds],
                "restart step": [float(spec.parent.config.checkpoints[i]) for i in spec.restart_index]}
    per_seed.update({k.replace("lam:", "ln λ_max ").replace("loss:", "loss "): v for k, v in values.items()})
    return per_seed


def _sd4(request, sd_restarts, tier, case, *, control: bool):
    spec, art = sd_restarts(tier, control=control, case=case)
    values = _restart_values(spec, art)
    data, dropped = _sd4_data(values)
    return spec, art, data, _sd4_per_seed(spec, values), dropped


def test_sd4_restarted_variants_move_lambda_max_as_predicted(request, sd_restarts, figure_dir, tier, case):
    spec, art, data, per_seed, dropped = _sd4(request, sd_restarts, tier, case, control=False)
    check_claim(request, "SD-4", tier=tier, case=f"{sd_case(tier, case).name} restarted at the SD-1 peak ({spec.parent.name})",
                data=data, per_seed=per_seed, n_used=min(len(d["a"]) for d in data.values()), flags=dropped,
                figures=_sd4_figures(figure_dir, figure_tag(tier, case), spec, art))


def test_sd4_control_constant_hessian(request, sd_restarts, tier, case):
    spec, _, data, per_seed, _ = _sd4(request, sd_restarts, tier, case, control=True)
    check_control(request, "SD-4", tier=tier, case=f"control: linear model, quadratic loss ({spec.parent.name})",
                  data=data, per_seed=per_seed, n_used=min(len(d["a"]) for d in data.values()))


# ---------------------------------------------------------------- SD-5, SD-6: per-seed numbers
def _arm(art, n: int, *, at: str = "best") -> dict[str, list[float]]:
    """Per seed of one γ arm: λ_max and ‖H‖_F(top-5) = sqrt(Σ λ_i²) at `at` ("best": the best-val-acc
    epoch; "last": the end), test accuracy there in pp; NaN where diverged or λ_max unconverged."""
    key = "final" if at == "best" else "last"
    lam, res = art[f"{key}_lam"][:n], art[f"{key}_residual"][:n, 0]
    tol = claim_of("SD-1").setting("lanczos_tol")
    ok = [st == "ok" and float(r) <= tol for st, r in zip(art["member_status"][:n], res)]
    acc = art["best_test_acc"][:n] if at == "best" else art["last_test_acc"][:n]
    nan = math.nan
    return {"lam": [float(lam[i, 0]) if ok[i] else nan for i in range(n)],
            "frob": [float(lam[i].pow(2).sum().sqrt()) if ok[i] else nan for i in range(n)],
            "acc": [100 * float(acc[i]) if ok[i] else nan for i in range(n)],
            "epoch": [float(art["best_epoch"][i]) if at == "best" else float(art["stopped_epoch"][i]) for i in range(n)]}


def _pairs(x: dict, y: dict, key: str) -> tuple[list[float], list[float]]:
    both = [(a, b) for a, b in zip(x[key], y[key]) if math.isfinite(a) and math.isfinite(b)]
    return [a for a, _ in both], [b for _, b in both]


def _sd5_data(new: dict, ref: dict) -> tuple[dict, dict]:
    """sharper: per seed λ(γ)/λ(1) (the rule takes log10); accuracy: acc(γ) − acc(1) in pp (same seeds)."""
    a, b = _pairs(new, ref, "lam")
    fa, fb = _pairs(new, ref, "frob")
    aa, ab = _pairs(new, ref, "acc")
    data = {"sharper": {"ratios": [u / w for u, w in zip(a, b)]},
            "accuracy": {"values": [u - w for u, w in zip(aa, ab)]}}
    return data, {"frobenius_ratio": {"ratios": [u / w for u, w in zip(fa, fb)]}}


def _sd6_data(new: dict, ref: dict) -> dict:
    a, b = _pairs(new, ref, "lam")
    aa, ab = _pairs(new, ref, "acc")
    return {"wider": {"a": [math.log(u) for u in a], "b": [math.log(w) for w in b]},
            "no_accuracy_gain": {"a": aa, "b": ab}}


def _arm_table(arms: dict[str, dict]) -> dict[str, list[float]]:
    return {f"{col} {name}": vals for name, arm in arms.items()
            for col, vals in (("λ_max", arm["lam"]), ("‖H‖_F top-5", arm["frob"]), ("test acc pp", arm["acc"]),
                              ("epoch", arm["epoch"]))}


def _nsgd_arms(sd_nsgd, claim_id: str, tier: str, case: str | None):
    claim, ref_g = claim_of(claim_id), claim_of("SD-5").setting("gamma_ref")
    n, arms = claim.seeds[tier], sd_nsgd(tier, case)
    return n, arms[claim.setting("gamma")], arms[ref_g]


def test_sd5_nsgd_small_gamma_is_sharper_and_no_worse(request, sd_nsgd, figure_dir, tier, case):
    n, (spec, art), (_, ref_art) = _nsgd_arms(sd_nsgd, "SD-5", tier, case)
    new, ref = _arm(art, n), _arm(ref_art, n)
    data, supporting = _sd5_data(new, ref)
    check_claim(request, "SD-5", tier=tier, case=f"{sd_case(tier, case).name} NSGD γ={spec.gamma:g} vs γ=1, K={spec.config.k}",
                data=data, per_seed=_arm_table({f"γ={spec.gamma:g}": new, "γ=1": ref}), supporting_data=supporting,
                n_used=len(data["sharper"]["ratios"]), flags=_arm_flags(art, ref_art, n),
                figures=_nsgd_figures(figure_dir, figure_tag(tier, case), "SD-5", {f"γ={spec.gamma:g}": art, "γ=1": ref_art}, n))


def test_sd5_control_training_time_alone(request, sd_nsgd, tier, case):
    n, _, (_, ref_art) = _nsgd_arms(sd_nsgd, "SD-5", tier, case)
    late, best = _arm(ref_art, n, at="last"), _arm(ref_art, n)
    data, _ = _sd5_data(late, best)
    check_control(request, "SD-5", tier=tier, case=_control_case(tier, case),
                  data=data, per_seed=_arm_table({"γ=1 last": late, "γ=1 best": best}),
                  n_used=len(data["sharper"]["ratios"]))


def test_sd6_nsgd_large_gamma_is_wider_without_better_accuracy(request, sd_nsgd, figure_dir, tier, case):
    n, (spec, art), (_, ref_art) = _nsgd_arms(sd_nsgd, "SD-6", tier, case)
    new, ref = _arm(art, n), _arm(ref_art, n)
    data = _sd6_data(new, ref)
    check_claim(request, "SD-6", tier=tier, case=f"{sd_case(tier, case).name} NSGD γ={spec.gamma:g} vs γ=1, K={spec.config.k}",
                data=data, per_seed=_arm_table({f"γ={spec.gamma:g}": new, "γ=1": ref}),
                n_used=len(data["wider"]["a"]), flags=_arm_flags(art, ref_art, n),
                figures=_nsgd_figures(figure_dir, figure_tag(tier, case), "SD-6", {f"γ={spec.gamma:g}": art, "γ=1": ref_art}, n))


def test_sd6_control_training_time_alone(request, sd_nsgd, tier, case):
    n, _, (_, ref_art) = _nsgd_arms(sd_nsgd, "SD-6", tier, case)
    late, best = _arm(ref_art, n, at="last"), _arm(ref_art, n)
    data = _sd6_data(late, best)
    check_control(request, "SD-6", tier=tier, case=_control_case(tier, case),
                  data=data, per_seed=_arm_table({"γ=1 last": late, "γ=1 best": best}), n_used=len(data["wider"]["a"]))


def _control_case(tier: str, case: str | None) -> str:
    """The control's case label (the cpu tier's as first reported; a gpu case names its network)."""
    label = "control: γ=1 at its last epoch vs γ=1 at its best-val epoch"
    return label if case is None else f"{label} ({case})"


def _arm_flags(art, ref_art, n: int) -> list[str]:
    tol = claim_of("SD-1").setting("lanczos_tol")
    out = []
    for label, a in (("γ arm", art), ("γ=1 arm", ref_art)):
        for s in range(n):
            if a["member_status"][s] != "ok":
                out.append(f"{label} seed {s}: {a['member_status'][s]}")
            elif float(a["final_residual"][s, 0]) > tol:
                out.append(f"{label} seed {s}: λ_max unconverged (residual {float(a['final_residual'][s, 0]):.2g})")
    return out


# ---------------------------------------------------------------- figures (descriptive)
def _sd4_figures(figure_dir, tag: str, spec, art) -> list:
    """Fig. 5: per variant, λ_max (the per-step e₁ Lanczos) and the loss on the Hessian rows along the
    restart, per seed and the median (vanilla SGD computes no e₁, so it has no λ curve)."""
    V, lr = len(spec.variants), spec.config.lr
    names = [v for v, _, _ in spec.variants]
    x_lam = art["refresh_step"].double().numpy() * lr
    x_loss = np.arange(art["rows_loss"].shape[1]) * lr
    lam = {v: (x_lam, art["refresh_lam"][j::V, :, 0].numpy()) for j, v in enumerate(names)
           if art["refresh_lam"][j::V].isfinite().any()}
    loss = {v: (x_loss, art["rows_loss"][j::V].double().numpy()) for j, v in enumerate(names)}
    stem = figure_dir / f"SD-4_{tag}"
    return [lambda_trajectories(f"{stem}_restart_lambda.png", lam, xlabel="η · steps since the restart", logy=True,
                                title="SD-4: λ_max along the restart, per variant (Fig. 5)"),
            lambda_trajectories(f"{stem}_restart_loss.png", loss, xlabel="η · steps since the restart", logy=True,
                                ylabel="loss on the Hessian rows", title="SD-4: loss along the restart (Fig. 5)")]


def _nsgd_figures(figure_dir, tag: str, claim_id: str, arts: dict[str, dict], n: int) -> list:
    names, arms = list(arts), {k: _arm(a, n) for k, a in arts.items()}
    lam = {k: np.array(arm["lam"]) for k, arm in arms.items()}
    acc = {k: np.array(arm["acc"]) for k, arm in arms.items()}
    return [plots.paired_seeds(figure_dir / f"{claim_id}_{tag}_lambda.png", lam[names[0]], lam[names[1]], names,
                               ylabel="λ_max at the best-val epoch", title=f"{claim_id}: λ_max per seed (Table 1)"),
            plots.paired_seeds(figure_dir / f"{claim_id}_{tag}_accuracy.png", acc[names[0]], acc[names[1]], names,
                               ylabel="test accuracy (%)", title=f"{claim_id}: test accuracy per seed (Table 1)")]
