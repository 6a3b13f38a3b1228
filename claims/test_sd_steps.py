"""Jastrzebski et al. 2019 ("On the Relation Between the Sharpest Directions of DNN Loss and the SGD
Step Length") — the SGD step along the sharpest direction after the λ_max peak.

SD-3 §3.2, Fig. 4 (right): "We find that E[L(θ(t) − αηg̃₁(t))] − L(θ(t)) increases relative to L(θ(t))
     for α > 1, and decreases for α < 1" — "the typical step-size of SGD is 'too large' with respect to
     the curvature in the top eigenvector direction". Per seed of SD-1's runs: the mean over
     n_eval_checkpoints checkpoints from t_peak to T and n_minibatches mini-batches of the training batch
     size of (L(θ − αηg̃₁e₁) − L(θ))/L(θ), g̃₁ = ⟨g_S, e₁⟩, η the training lr, L on all the training rows
     (core/landscape/alpha_step.py). Intersection–union of sign tests on the median seed: > 0 for
     α = 2 and α = 4, < 0 for α = 0.5, and (revision 2026-12-01) the seed's median η·κ₁ > 1, κ₁ the
     curvature of L along e₁: the three signs alone also hold for a step that is not too large for the
     curvature but noisy (below), and the constant-Hessian control replicated them. The original
     three-part rule is decided beside the revised one (secondary). 10 seeds; a seed SD-1 flags is no evidence; a
     checkpoint whose e₁ does not converge is left out of its seed's mean and counted.

cpu tier: SD-1's point (MLP 40-128-128-10 relu on 1,000 MNIST-1D rows, SGD lr 0.1, batch 128) and its
stored checkpoint parameters; e₁ by Lanczos (k = 1, lanczos_tol, at most 2·lanczos_iters steps, cold
start) of SD-1's Hessian function (its 200 fixed rows). Seed s's checkpoint j (its j-th distinct pick)
draws its mini-batches from torch.Generator(minibatch_seed + n_eval_checkpoints·s + j): each batch the
first S rows of a fresh randperm of the training rows. Every setting is read from claims/registry.toml.
Negative control: the linear-model twin under ½‖Wx − onehot‖², whose Hessian is constant (ηλ ≈ 0.97 < 1:
the full-batch step along e₁ does not overshoot).
Beside the per-α means, per seed (medians over its checkpoints): |g̃₁|, ηλ₁ (SD-1's Hessian rows), ηκ₁ with
κ₁ = e₁ᵀ∇²L e₁ on the evaluation rows, and mean(g̃₁²)/g₁² with g₁ = ⟨∇L, e₁⟩ there. By the expansion in
core/landscape/alpha_step.py the three signs read 1 < ηκ₁·mean(g̃₁²)/g₁² < 4 at a checkpoint: these
columns say whether an overshoot comes from curvature (ηκ₁ > 1) or from mini-batch noise; the first is
the revised rule's fourth part.
"""
from __future__ import annotations

import math

import torch

from core.harness import check_claim, check_control, claim_of
from core.plots_sd import alpha_step_curves
from fixtures.cases import figure_tag
from fixtures.sd import parametrize_sd, sd_case
from fixtures.sd_probes import sd3_point, sd3_seeds



def pytest_generate_tests(metafunc):
    parametrize_sd(metafunc)  # (tier, case): the cpu case and every gpu case that runs the claim


# ---------------------------------------------------------------- per-seed numbers (fixtures/sd_probes.py)
def _part(alpha: float) -> str:
    return f"alpha_{alpha:g}".replace(".", "_")  # the registry's part names: alpha_2, alpha_4, alpha_0_5


def _sd3_data(seeds: list[dict]) -> tuple[dict, dict, list[str]]:
    claim = claim_of("SD-3")
    reported, alphas, n_eval = claim.setting("alphas_reported"), claim.setting("alphas"), claim.setting("n_eval_checkpoints")
    missing = [a for a in alphas if a not in reported]
    if missing:
        raise ValueError(f"SD-3: rule alphas {missing} are not among alphas_reported {reported}")
    used = [r for r in seeds if r["means"] is not None]
    data = {_part(a): {"values": [float(r["means"][reported.index(a)]) for r in used]} for a in alphas}
    data["curvature_too_large"] = {"values": [r["eta_kappa"] for r in used]}  # revision 2026-12-01
    col = lambda f: [f(r) if r["means"] is not None else math.nan for r in seeds]  # noqa: E731
    per_seed = {**{f"mean ΔL/L alpha={a:g}": col(lambda r, k=k: float(r["means"][k])) for k, a in enumerate(reported)},
                **{f"η·t checkpoint {j}": [r["eta_t"][j] if j < len(r["eta_t"]) else math.nan for r in seeds]
                   for j in range(n_eval)},
                "e1 left out": [float(r["left_out"]) for r in seeds], "median |g̃₁|": [r["g1"] for r in seeds],
                "median η·λ₁ (Hessian rows)": [r["eta_lam"] for r in seeds],
                "median η·κ₁ (eval rows)": [r["eta_kappa"] for r in seeds],
                "median mean(g̃₁²)/g₁²": [r["noise"] for r in seeds]}
    return data, per_seed, _flags(seeds, n_eval)


def _flags(seeds: list[dict], n_eval: int) -> list[str]:
    out = [r["flag"] for r in seeds if r["flag"]]
    out += [f"seed {s}: {r['coincident']} of {n_eval} checkpoint picks coincide (probed once)"
            for s, r in enumerate(seeds) if r["coincident"]]
    out += [f"seed {s}: e₁ unconverged at {r['left_out']} checkpoint(s), left out"
            + (" — no checkpoint left: no evidence" if r["means"] is None else "")
            for s, r in enumerate(seeds) if r["left_out"]]
    return out


def _case(tier: str, case: str | None, control: bool = False) -> str:
    what = "control: linear model, quadratic loss" if control else sd_case(tier, case).name
    where = f" ({case})" if control and case is not None else ""
    return f"{what}{where} {sd3_point(tier=tier)}, {claim_of('SD-3').setting('n_eval_checkpoints')} checkpoints t_peak..T"


# ---------------------------------------------------------------- the claim
def test_sd3_sgd_step_too_large_along_e1(request, sd_runs, fixture_cache, figure_dir, tier, case):
    seeds = sd3_seeds(sd_runs, fixture_cache, tier=tier, case=case)
    data, per_seed, flags = _sd3_data(seeds)
    original = {k: v for k, v in data.items() if k in claim_of("SD-3").original_rule["parts"]}
    check_claim(request, "SD-3", tier=tier, case=_case(tier, case), data=data, per_seed=per_seed, original_data=original,
                n_used=len(next(iter(data.values()))["values"]), flags=flags,
                figures=_figures(figure_dir, figure_tag(tier, case), tier, seeds))


def test_sd3_control_constant_hessian(request, sd_runs, fixture_cache, tier, case):
    data, per_seed, _ = _sd3_data(sd3_seeds(sd_runs, fixture_cache, control=True, tier=tier, case=case))
    check_control(request, "SD-3", tier=tier, case=_case(tier, case, control=True), data=data, per_seed=per_seed,
                  n_used=len(next(iter(data.values()))["values"]))


# ---------------------------------------------------------------- figure (descriptive)
def _figures(figure_dir, tag: str, tier: str, seeds: list[dict]) -> list:
    claim, used = claim_of("SD-3"), [r["means"] for r in seeds if r["means"] is not None]
    if not used:
        return []  # no seed is evidence: nothing to draw
    return [alpha_step_curves(figure_dir / f"SD-3_{tag}_alpha_steps.png", claim.setting("alphas_reported"),
                              torch.stack(used).numpy(), rule_alphas=claim.setting("alphas"),
                              title=f"SD-3: relative loss change of the step −αηg̃₁e₁ after the peak, per seed ({sd3_point(tier=tier)})")]
