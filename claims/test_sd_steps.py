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
import statistics

import pytest
import torch

from core.data import load_dataset
from core.ensemble import _hessian_loss
from core.harness import check_claim, check_control, claim_of
from core.hessian import LanczosConfig, top_eigenpairs
from core.landscape.alpha_step import AlphaStepConfig, alpha_step, minibatch_rows, pick_checkpoints, seed_mean
from core.landscape.peaks import peaks as trajectory_peaks
from core.memo import DiskMemo
from core.models import build_model
from core.plots_sd import alpha_step_curves
from core.registry import load_registry
from fixtures.sd import claim_points, point_name, sd_specs

pytestmark = pytest.mark.cpu
TIER = "cpu"


# ---------------------------------------------------------------- per-seed numbers
def _point(control: bool = False) -> str:
    return ("control: " if control else "") + point_name(claim_points(load_registry(), TIER)["SD-1"][0])


def _prober(spec):
    """at(params, s, j) -> (AlphaStep or None where e₁ did not converge, λ₁) for the spec's run."""
    claim, sd1, cfg = claim_of("SD-3"), claim_of("SD-1"), spec.config
    data = load_dataset(spec.dataset, **dict(spec.dataset_kwargs))
    model = build_model(spec.model, num_classes=data.num_classes, input_shape=tuple(data.input_shape), seed=0,
                        **dict(spec.model_kwargs))
    x, y = data.train.x, data.train.y
    hessian = _hessian_loss(model, data, cfg)  # SD-1's Hessian function, as its trajectories used
    lanczos = LanczosConfig(k=1, tol=sd1.setting("lanczos_tol"), max_iter=2 * sd1.setting("lanczos_iters"))
    probe = AlphaStepConfig(tuple(claim.setting("alphas_reported")), cfg.lr)
    base, n_eval, n_mb = claim.setting("minibatch_seed"), claim.setting("n_eval_checkpoints"), claim.setting("n_minibatches")

    def at(params, s: int, j: int):
        eig = top_eigenpairs(hessian, params, lanczos, hvp="reverse-cached")
        if not bool(eig.converged[0]):
            return None, float(eig.eigenvalues[0])
        batches = minibatch_rows(len(y), n_mb, cfg.batch_size, torch.Generator().manual_seed(base + n_eval * s + j))
        return alpha_step(model, params, eig.eigenvector_dicts()[0], x, y, batches, probe,
                          criterion=cfg.criterion, l2=cfg.weight_decay), float(eig.eigenvalues[0])
    return at


def _seed(art, s: int, pk, at, lr: float, n_eval: int) -> dict:
    """One seed: the probe at its picks after the peak, reduced (NaN/None where it is no evidence)."""
    if not pk.ok:
        return {"means": None, "eta_t": [], "left_out": 0, "coincident": 0, "g1": math.nan, "eta_lam": math.nan,
                "eta_kappa": math.nan, "noise": math.nan, "flag": f"seed {s} excluded: SD-1 flags it {pk.flag.replace('_', ' ')}"}
    picks, coincident = pick_checkpoints(art["steps"].tolist(), pk.t_peak, pk.T, n_eval)
    steps, lams = zip(*(at({k: v[s, i] for k, v in art["params_at"].items()}, s, j) for j, i in enumerate(picks)))
    means, left_out = seed_mean(steps)
    kept = [(st, lam) for st, lam in zip(steps, lams) if st is not None]  # λ₁ of an unconverged e₁ is a lower bound
    med = lambda f: statistics.median(float(f(st, lam)) for st, lam in kept) if kept else math.nan  # noqa: E731
    return {"means": means, "eta_t": [lr * int(art["steps"][i]) for i in picks], "left_out": left_out,
            "coincident": coincident, "flag": "",
            "g1": statistics.median(torch.cat([st.g1 for st, _ in kept]).abs().tolist()) if kept else math.nan,
            "eta_lam": med(lambda st, lam: lr * lam), "eta_kappa": med(lambda st, lam: lr * st.curvature),
            "noise": med(lambda st, lam: st.g1.pow(2).mean() / st.g1_full.pow(2))}


# what decides the per-seed records: a change to any of these recomputes them (core/memo.py)
PROBE_CODE = ("core/landscape/alpha_step.py", "core/landscape/peaks.py", "core/hessian.py", "core/models.py",
              "core/data.py", "claims/test_sd_steps.py")


def _probe_run(sd_runs, fixture_cache, control: bool = False) -> list[dict]:
    """Per-seed records of SD-3's seeds on SD-1's point or its control twin, memoised on disk (the
    claim's probe costs ~15-35 s on a shared 2-core machine), keyed by the run's artifact key, the
    probe's code and the SD-1/SD-3 registry entries."""
    name = _point(control)
    spec = sd_specs(TIER)[name]
    memo = DiskMemo(fixture_cache.root, code=PROBE_CODE, namespace="probes", registry_scope=("SD-1", "SD-3"),
                    inputs=(TIER, name, fixture_cache.key(spec)))
    return memo(("SD-3", name), lambda: _compute(spec, sd_runs(TIER)[name]))


def _compute(spec, art) -> list[dict]:
    claim = claim_of("SD-3")
    pks = trajectory_peaks(art, claim.seeds[TIER], tol=claim_of("SD-1").setting("lanczos_tol"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets on shared cores: one intra-op thread (fixtures/sd.py builds so too)
    try:
        at, n_eval = _prober(spec), claim.setting("n_eval_checkpoints")
        seeds = [_seed(art, s, pk, at, spec.config.lr, n_eval) for s, pk in enumerate(pks)]
    finally:
        torch.set_num_threads(old)
    return seeds


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


def _case(control: bool = False) -> str:
    what = "control: linear model, quadratic loss" if control else "mnist1d-mlp-relu"
    return f"{what} {_point()}, {claim_of('SD-3').setting('n_eval_checkpoints')} checkpoints t_peak..T"


# ---------------------------------------------------------------- the claim
def test_sd3_sgd_step_too_large_along_e1(request, sd_runs, fixture_cache, figure_dir):
    seeds = _probe_run(sd_runs, fixture_cache)
    data, per_seed, flags = _sd3_data(seeds)
    original = {k: v for k, v in data.items() if k in claim_of("SD-3").original_rule["parts"]}
    check_claim(request, "SD-3", tier=TIER, case=_case(), data=data, per_seed=per_seed, original_data=original,
                n_used=len(next(iter(data.values()))["values"]), flags=flags,
                figures=_figures(figure_dir, seeds))


def test_sd3_control_constant_hessian(request, sd_runs, fixture_cache):
    data, per_seed, _ = _sd3_data(_probe_run(sd_runs, fixture_cache, control=True))
    check_control(request, "SD-3", tier=TIER, case=_case(control=True), data=data, per_seed=per_seed,
                  n_used=len(next(iter(data.values()))["values"]))


# ---------------------------------------------------------------- figure (descriptive)
def _figures(figure_dir, seeds: list[dict]) -> list:
    claim, used = claim_of("SD-3"), [r["means"] for r in seeds if r["means"] is not None]
    if not used:
        return []  # no seed is evidence: nothing to draw
    return [alpha_step_curves(figure_dir / f"SD-3_{TIER}_alpha_steps.png", claim.setting("alphas_reported"),
                              torch.stack(used).numpy(), rule_alphas=claim.setting("alphas"),
                              title=f"SD-3: relative loss change of the step −αηg̃₁e₁ after the peak, per seed ({_point()})")]
