"""He, Huang, Yuan 2019 ("Asymmetric Valleys") — toy-tier claims AV-5, AV-6, AV-7.

AV-5 — §4.1, Theorem 1 (proof in App. B): "For any l ∈ ℝ^k, if Assumption 1 holds for R = ‖l‖₂,
  Assumption 2 holds for R' = ‖δ̄‖₂ + ‖l‖₂, and 4ξ/((c_i−1)p_i) < l_i ≤ max{r̄ − δ̄_i, δ̄_i − r}, then
  E_δ L(ŵ*) − E_δ L(ŵ* + Σ_i l_i u^i) ≥ Σ_i (c_i − 1) l_i p_i/2 − 2kξ > 0."
  Statistic: per generated separable valley, the exact expected gain over all 2^d shifts minus the
  bound, and the bound. Threshold: every case gain − bound > −1e-9 and bound > 0 (deterministic law,
  intersection–union of two toy tolerances). Replicates: 200 generated cases (d = 1..8, 25 each).
  The premise is drawn with min{·,·} (what the proof needs); the printed max{·,·} is reported as
  supporting. Negative control: the same valleys made symmetric (c = 1).
AV-6 — §5.1, Theorem 2 and Fig. 5: "If we run SGD on this one dimensional function, it will stay at
  the flat side for more iterations as the magnitude of the gradient on this side is much smaller.
  Therefore, the average of the locations is biased towards the flat side."
  Statistic: per independent SGD run, the iterate average w̄ after burn-in. Threshold: mean w̄ > 0
  (one-sided t) at c = 20 AND mean w̄ within ±0.02 of 0 (TOST) on the symmetric valley c = 1.
  Replicates: 200 runs per valley. Supporting: w̄ increases with c (Spearman). Negative control: the
  rule fed with the symmetric valley's runs, where the claimed bias is absent.
AV-7 — §3.2 / App. A: "in Appendix A we show that asymmetric valleys exist in a simple 2 layer network
  with only 2 parameters." Statistic: per seed, 1 if any of 20 `paper` directions has Definition-1
  index c_u > 2. Threshold: Clopper–Pearson lower bound of the per-seed rate > 0.5. Replicates: 50
  seeds (0–49), per variant: the authors' setup (30 GD steps, scan centred on SWA — not converged)
  and a converged variant (scan centred on the GD solution). Negative control: the quadratic
  (second-order) surrogate of each seed's loss at its GD solution, a symmetric landscape.

Every setting, threshold and count comes from claims/registry.toml (`claim_of(id).settings`).
"""
from __future__ import annotations

import functools

import pytest
import torch

from core.harness import check_claim, check_control, claim_of
from core.landscape.asymmetry import asymmetry_index
from core.plots import loss_along_direction, valley_1d_with_average
from core.toys import twoparam as tp
from core.toys import valleys as vl

pytestmark = pytest.mark.toy


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


# ---------------------------------------------------------------- AV-5: Theorem 1
def _perturbation(name: str, d: int):
    """Registry perturbation name -> e(w) (the sine one seeded by d + 1000, away from the case streams)."""
    if name == "none":
        return None
    if name == "adversarial":
        return vl.adversarial_perturbation
    if name == "sine":
        return vl.sine_perturbation(d, generator=_gen(1000 + d))
    raise ValueError(f"AV-5 perturbation {name!r}; known: none, adversarial, sine")


@functools.lru_cache(maxsize=None)
def _av5(condition: str, perturbation: str, symmetric: bool = False) -> dict[str, torch.Tensor]:
    """Exact gain and bound of every pre-registered case (cases of dimension d from Generator(d)); cached."""
    s = claim_of("AV-5").settings
    out = {"gain": [], "bound": [], "d": []}
    for d in s["d_values"]:
        cases = vl.random_cases(s["cases_per_d"], d, generator=_gen(d), condition=condition,
                                xi_frac=s["xi_frac"], tight=s["tight"])
        cases = vl.symmetric_control(cases) if symmetric else cases
        out["gain"].append(vl.expected_gain(cases, _perturbation(perturbation, d)))
        out["bound"].append(vl.theorem1_bound(cases))
        out["d"].append(torch.full((s["cases_per_d"],), float(d), dtype=torch.float64))
    return {k: torch.cat(v) for k, v in out.items()}


def _av5_row(condition: str, perturbation: str) -> dict:
    r = _av5(condition, perturbation)
    slack = r["gain"] - r["bound"]
    return {"condition": condition, "perturbation": perturbation, "cases": int(slack.numel()),
            "gain_below_bound": int((slack <= -1e-9).sum()), "gain_not_positive": int((r["gain"] <= 0).sum()),
            "min_gain_minus_bound": float(slack.min()), "min_gain": float(r["gain"].min())}


def test_av5_theorem1_toy(request):
    s = claim_of("AV-5").settings
    main = _av5(s["condition"], s["perturbation"])
    printed = _av5(s["condition_reported"], s["perturbation"])
    rows = [_av5_row(c, p) for c in (s["condition"], s["condition_reported"])
            for p in (s["perturbation"], *s["perturbations_reported"])]
    check_claim(
        request, "AV-5", tier="toy",
        case=f"{main['gain'].numel()} separable valleys, d in {list(s['d_values'])}, premise {s['condition']}, "
             f"xi_frac {s['xi_frac']}, {s['perturbation']} perturbation",
        data={"gain_exceeds_bound": {"values": (main["gain"] - main["bound"]).tolist()},
              "bound_positive": {"values": main["bound"].tolist()}},
        per_seed={k: v.tolist() for k, v in main.items()},
        tables={"premise_x_perturbation": rows},
        supporting_data={"printed_max_premise": {"values": (printed["gain"] - printed["bound"]).tolist()}},
    )


def test_av5_toy_negative_control(request):
    s = claim_of("AV-5").settings
    sym = _av5(s["condition"], s["perturbation"], symmetric=True)
    check_control(
        request, "AV-5", tier="toy", case="control: the same valleys made symmetric (c = 1)",
        data={"gain_exceeds_bound": {"values": (sym["gain"] - sym["bound"]).tolist()},
              "bound_positive": {"values": sym["bound"].tolist()}},
        per_seed={k: v.tolist() for k, v in sym.items()},
    )
    assert (sym["gain"] <= 0).all(), "a symmetric valley must show no expected gain from a bias"


# ---------------------------------------------------------------- AV-6: Theorem 2
def _sgd_config(c: float) -> vl.SGDValleyConfig:
    s = claim_of("AV-6").settings
    return vl.SGDValleyConfig(a_plus=s["a_plus"], c=c, eta=s["eta"], nu=s["nu"], steps=s["steps"],
                              burn_in=s["burn_in"], w0_low=s["w0_low"], w0_high=s["w0_high"])


def _av6_runs() -> dict[float, vl.SGDValleyResult]:
    """One simulation per distinct c (claim, null and trend grid share it); seed = rank of c."""
    s = claim_of("AV-6").settings
    cs = sorted({float(c) for c in (s["c"], s["c_null"], *s["c_grid"])})
    return {c: vl.simulate_sgd_valley(_sgd_config(c), s["runs"], generator=_gen(i), keep=4)
            for i, c in enumerate(cs)}


def _av6_figure(path, c: float, res: vl.SGDValleyResult):
    it = res.iterates
    lo, hi = float(it.min()), float(it.max())
    pad = 0.2 * (hi - lo)
    w = torch.linspace(lo - pad, hi + pad, 401, dtype=torch.float64)
    return valley_1d_with_average(path, w.numpy(), vl.sgd_valley_loss(w, _sgd_config(c)).numpy(),
                                  it.numpy(), float(res.wbar.mean()),
                                  title=f"AV-6: SGD on a 1-D asymmetric valley (c = {c:g})")


def test_av6_theorem2_toy(request, toy_memo, figure_dir):
    s = claim_of("AV-6").settings
    runs = toy_memo(("_av6_runs",), _av6_runs)  # disk memo: fixtures/toys.py
    bias, null = runs[float(s["c"])].wbar, runs[float(s["c_null"])].wbar
    grid = [float(c) for c in s["c_grid"]]
    fig = _av6_figure(figure_dir / "AV-6_toy_valley.png", float(s["c"]), runs[float(s["c"])])
    check_claim(
        request, "AV-6", tier="toy",
        case=f"piecewise-linear valley c = {s['c']:g} vs symmetric c = {s['c_null']:g}, {s['runs']} runs each",
        data={"bias": {"values": bias.tolist()}, "symmetric_null": {"values": null.tolist()}},
        per_seed={"wbar_c": bias.tolist(), "wbar_c_null": null.tolist()},
        figures=[fig],
        tables={"mean_wbar_by_c": [{"c": c, "mean_wbar": float(runs[c].wbar.mean()),
                                    "sd_wbar": float(runs[c].wbar.std())} for c in grid]},
        supporting_data={"bias_grows_with_c": {
            "x": [c for c in grid for _ in range(s["runs"])],
            "y": torch.cat([runs[c].wbar for c in grid]).tolist()}},
    )


def test_av6_toy_negative_control(request, toy_memo):
    s = claim_of("AV-6").settings
    null = toy_memo(("_av6_runs",), _av6_runs)[float(s["c_null"])].wbar
    check_control(
        request, "AV-6", tier="toy", case=f"control: the bias part fed the symmetric valley (c = {s['c_null']:g})",
        data={"bias": {"values": null.tolist()}, "symmetric_null": {"values": null.tolist()}},
        per_seed={"wbar": null.tolist()},
    )


# ---------------------------------------------------------------- AV-7: the 2-parameter network
def _tp_config(variant: str, loss_mode: str | None = None) -> tp.TwoParamConfig:
    s = claim_of("AV-7").settings
    if s["family"] != "paper":
        raise ValueError(f"AV-7 family {s['family']!r}: the toy implements the `paper` family only")
    v = s[variant]
    return tp.TwoParamConfig(n_per_class=v["n_per_class"], class_mean=v["class_mean"], lr=v["lr"],
                             steps=v["steps"], center=v["center"], scan_scale=v["scan_scale"],
                             scan_half=v["scan_half"], n_directions=s["k_directions"],
                             loss_mode=loss_mode or s["loss_mode"])


def _av7_index(steps, losses):
    """Definition 1 on the fixed window (r_frac·R, R) with R = the scan's max |l| (registry `window`)."""
    s = claim_of("AV-7").settings
    return asymmetry_index(steps, losses, r_frac=s["r_frac"], c_threshold=s["c_threshold"])


def _seeds() -> list[int]:
    return list(range(claim_of("AV-7").seeds["toy"]))


def _av7_figure(path, run: tp.TwoParamRun, a, variant: str):
    """Seed 0, direction 0 (the authors' own direction for seed 0) with its mean window slopes."""
    w = a.window[0, 0]
    slopes = a.slopes[0, 0][:, w].mean(-1)
    return loss_along_direction(path, run.steps.numpy(), run.losses[0, 0].numpy(), slopes=slopes.tolist(),
                                r=float(a.r[0, 0]), R=float(a.R[0, 0]),
                                title=f"AV-7 {variant}: seed 0, authors' direction, c = {float(a.c[0, 0]):.3g}")


def _separable(x: torch.Tensor, n: int) -> torch.Tensor:
    """Per seed: the classes are linearly separable, so the logistic loss has no finite minimiser."""
    return x[:, :n].min(-1).values > x[:, n:].max(-1).values


@pytest.mark.parametrize("variant", claim_of("AV-7").settings["variants"])
def test_av7_twoparam_toy(request, figure_dir, variant):
    s = claim_of("AV-7").settings
    run = tp.run_twoparam(_seeds(), _tp_config(variant))
    a = _av7_index(run.steps, run.losses)
    alt = _av7_index(run.steps, tp.scan_lines(run.center, run.draws.directions, run.steps, run.draws.x,
                                              run.draws.y, s["loss_mode_reported"]))
    sep = _separable(run.draws.x, s[variant]["n_per_class"])
    fig = _av7_figure(figure_dir / f"AV-7_toy_{variant}.png", run, a, variant)
    check_claim(
        request, "AV-7", tier="toy", case=f"{variant}: {s[variant]['steps']} GD steps, lr {s[variant]['lr']}, "
                                          f"scan centred on {s[variant]['center']}",
        data={"successes": a.asymmetric.any(-1).tolist()},
        per_seed={"any_asymmetric": a.asymmetric.any(-1).double().tolist(),
                  "prevalence": a.asymmetric.double().mean(-1).tolist(),
                  "not_a_valley": (~a.is_valley).double().mean(-1).tolist(),
                  "max_c": torch.nan_to_num(a.c, nan=float("-inf")).amax(-1).tolist(),
                  "grad_norm_at_end": run.path.grad_norm.tolist(),
                  "separable": sep.double().tolist()},
        figures=[fig],
        tables={"loss_modes": [
            {"loss_mode": mode, "seed_rate": float(x.asymmetric.any(-1).double().mean()),
             "direction_prevalence": float(x.asymmetric.double().mean()),
             "not_a_valley": float((~x.is_valley).double().mean())}
            for mode, x in ((s["loss_mode"], a), (s["loss_mode_reported"], alt))],
            "convergence": [{"separable_seeds": int(sep.sum()),
                             "median_grad_norm": float(run.path.grad_norm.median()),
                             "max_grad_norm_non_separable": float(run.path.grad_norm[~sep].max())}]},
    )


def test_av7_toy_negative_control(request):
    """Quadratic surrogate ½(θ−θ*)ᵀH(θ−θ*) at each seed's converged GD solution: every line is even."""
    cfg = _tp_config("converged")
    run = tp.run_twoparam(_seeds(), cfg)
    hess = tp.bce_hessian(run.center, run.draws.x)
    q = tp.quadratic_lines(run.center, run.center, hess, run.draws.directions, run.steps)
    a = _av7_index(run.steps, q)
    check_control(
        request, "AV-7", tier="toy", case="control: quadratic surrogate at the converged GD solution",
        data={"successes": a.asymmetric.any(-1).tolist()},
        per_seed={"any_asymmetric": a.asymmetric.any(-1).double().tolist(),
                  "max_c": torch.nan_to_num(a.c, nan=float("-inf")).amax(-1).tolist()},
    )
