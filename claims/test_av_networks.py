"""He, Huang, Yuan 2019 ("Asymmetric Valleys") — the claims on trained networks.

AV-1  §3.2: "we can *always* find asymmetric directions with certain specification (r̄, r, p, c)
      with c > 2, which means all the solutions that SGD found are located in asymmetric valleys."
      Per seed: any of K = 20 `paper` directions with Definition-1 index c_u > 2 on (0.3R_Δ, R_Δ) at one
      Δ of the pre-registered rise scales, as a valley centred at w (the single 1-nat scale without
      the centre guard is the original rule, decided beside). Replicated iff every seed is and the
      Clopper–Pearson lower bound of the rate > 0.5 (α_i = 0.05/16). 10 seeds. AV-1b, AV-2, AV-3, AV-4
      and AV-12 use the same survey; a direction's window is that of the smallest Δ at which it is asymmetric.
AV-1b §3.2: "we can find an asymmetric direction ... with decent probability." Per-seed prevalence;
      replicated iff the lower bound of the mean > 0.1. Reported per direction family.
AV-2  §6 / App. H: "batch normalization seems to be a major cause for asymmetric valleys." Paired
      by seed: prevalence(BN) − prevalence(no BN) > 0 (one-sided t).
AV-3  §4.2, Fig. 3: "after applying a horizontal shift δ = 0.4 to the test loss, the two curves overlap
      almost perfectly ... ξ_{δ=0.4} = 0.03, which is much lower than ξ_{δ=0} = 0.22." Per seed: median
      over asymmetric directions of ln(ξ_δ*/min(ξ_0, ξ_a*)) (the shift must beat the best vertical
      rescaling ξ_a* too; a shift that does not overlap counts max(ratio, 0)); replicated iff the upper
      bound < ln 0.5, refuted iff the lower bound > ln 0.9. ln(ξ_δ*/ξ_0) is the original rule's data.
AV-4  §4.2, Fig. 4: "we verified that u is (4, 2, 0.1, 5.22)-asymmetric with respect to all neighboring
      points." 100 neighbours w* + v − ⟨v,u⟩u, v ∈ B(R); per seed the fraction keeping the sharp side
      with c_u > 2 and their own line's minimum inside |l| < 0.3R (neighbour_centre_rule; without it:
      the original rule's data); replicated iff the lower bound of the median > 0.8.
AV-8  §6.1, Fig. 7: "there is no 'bump' between these two solutions." SWA ↔ SGD-from-SWA, train loss
      with BN recomputed at 41 points; per seed bump ≤ τ_abs + τ_rel·max(endpoints); CP bound > 0.5.
AV-9  §6.1, Table 1: "although the biased SWA solution has higher training loss than the solution
      found by SGD, it indeed yields lower test loss." Paired by seed, intersection–union of the two
      one-sided tests. SGD-from-SWA follows a pre-registered FIXED rule (lr 1% of base, fixed epochs),
      not the authors' keep-if-it-fits selection (PROTOCOLS.md), which is reported beside, labelled.
AV-10 §6.1, Fig. 8: "SWA has a bias on the flat side compared with the SGD solution." Per seed
      ln(rise_opposite/rise_SWA) > 0 AND the fraction of 10 directions u_inter + u_rand with SWA on the
      flatter side > 0.5 (intersection–union), each line judged around its own minimum; a seed whose
      w_SGD is not at the u_inter line's minimum is no evidence either way. The originally registered
      probe (judged at w_SGD) is decided beside it by the original rule.
AV-11 §6.2, Fig. 10: along random Gaussian rays SWA looks wider than SGD although both share a basin.
      Per seed mean width over 20 rays (rise of 1 nat); paired SWA − SGD > 0. Width is a raw distance:
      the weight norms and width/‖w‖ are reported beside it, with a norm-matched row (descriptive).
AV-12 §5.2, Fig. 6: "after the first 40 epochs, the projected loss surfaces becomes relatively stable."
      Per seed: min over checkpoints from 40% of training of corr(profile_t, profile_final) > 0.9.
      Controls: the final profile translated by +R/2, by −R/2, and mirrored; beside the verdict, per
      seed, whether each checkpoint keeps the final Definition-1 flat side and how far the argmin moved.

Every setting comes from claims/registry.toml. Each claim has a negative control — a landscape or a
pairing where the claim is false — that must not come out replicated.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core import plots, stats
from core.harness import check_control, claim_case, claim_of
from core.landscape.asymmetry import asymmetry_index
from core.landscape.probes import profile_change, profile_correlation, shift_gap
from core.registry import load_registry
from fixtures import av_probes as probe
from fixtures.av_probes import AV_PROBES, TRANSLATIONS, flat_side_data, original_flat_side_data, shift_gap_settings
from fixtures.specs import tier as tier_cases

ROBUSTNESS_SEEDS = 3   # other direction families run on the first 3 seeds only (descriptive table;
# compute budget of the cpu tier: a Definition-1 survey is ~1,900 forward passes), never the verdict
CPU_BN, CPU_NOBN = "mnist1d-mlp-bn", "mnist1d-mlp-nobn"
ARMS = ("swa", "sgd_from_swa")  # the roles AV-8 ... AV-11 compare


def _cases():
    cpu = [pytest.param("cpu", CPU_BN, marks=pytest.mark.cpu, id=f"cpu-{CPU_BN}")]
    gpu = [pytest.param("gpu", c.name, marks=pytest.mark.gpu, id=f"gpu-{c.name}")
           for c in tier_cases("gpu") if not c.name.endswith("nobn")]
    return cpu + gpu


CASES = _cases()
PAIRS = [pytest.param("cpu", CPU_BN, CPU_NOBN, marks=pytest.mark.cpu, id="cpu-mnist1d-mlp"),
         pytest.param("gpu", "mnist1d-large-cnn1d-bn", "mnist1d-large-cnn1d-nobn",
                      marks=pytest.mark.gpu, id="gpu-mnist1d-large-cnn1d")]


@pytest.fixture
def case_of(request, trained, figure_dir):
    """case_of(claim_id, tier, case) -> ClaimCase over the case's trained ensemble (AV probe scope)."""
    return lambda claim_id, tier, case: claim_case(request, claim_id, tier, case,
                                                   trained(tier, case, AV_PROBES), figure_dir)


# ---------------------------------------------------------------- shared helpers

def _family_seeds(claim, family, seeds):
    """All seeds for the family the verdict uses; the first ROBUSTNESS_SEEDS for the others."""
    return seeds if family == claim.settings.get("family", "paper") else seeds[:ROBUSTNESS_SEEDS]


def _prevalence(net, i, family, claim, *, original=False) -> float:
    """Fraction of the K directions asymmetric at some scale of the set (original: Δ = delta_rise
    alone, no centre guard — the rule as first registered)."""
    s = probe.survey(net, i, family, claim)
    return float((s.original_asymmetric if original else s.asymmetric).double().mean())


def _scale_label(delta: float) -> str:
    return f"delta_{float(delta):g}"


def _scale_columns(surveys) -> dict:
    """Per-seed, per-scale columns: the largest c_u among centred valleys, and the fraction of
    directions whose fine line's minimum is off w ('w not at the line's minimum', never asymmetric)."""
    out = {}
    for q, d in enumerate(surveys[0].deltas.tolist()):
        ok = [s.is_valley_s[q] & s.centred_s[q] for s in surveys]
        out[f"max_c_{_scale_label(d)}"] = [float(torch.where(m, torch.nan_to_num(s.c_s[q], nan=0.0), 0.0).max())
                                          for s, m in zip(surveys, ok)]
        out[f"not_centred_{_scale_label(d)}"] = [float((~s.centred_s[q]).double().mean()) for s in surveys]
    return out


def _max_c(s) -> float:
    """Largest c_u over the pre-registered scales among centred valleys (0 if none)."""
    ok = s.is_valley_s & s.centred_s & s.in_set.to(s.c_s.device).view(-1, 1)
    return float(torch.where(ok, torch.nan_to_num(s.c_s, nan=0.0), 0.0).max())


def _family_row(claim, family, values, rule=None) -> dict:
    """A robustness-table row: the claim's own rule (or `rule`) applied to another family's data."""
    alpha = load_registry().alpha_for(claim.id)
    res = stats.decide(rule or claim.rule, alpha, values)
    return {"family": family, "n": res.n, "estimate": round(res.estimate, 4),
            "ci": [round(res.ci[0], 4), round(res.ci[1], 4)], "verdict": res.verdict,
            "used_for_verdict": family == claim.settings.get("family", "paper")}


def _slopes(steps, losses, r_frac):
    """Mean outward slopes (s₊, s₋) on the window, for the Fig. 2 style figure."""
    a = asymmetry_index(steps, losses, r_frac=r_frac)
    w = a.window.double()
    return [float((a.slopes[k] * w).sum() / w.sum()) for k in (0, 1)], float(a.r), float(a.R)


def _seed_ids(c, seeds) -> list[float]:
    return [float(c.net.seeds[i].seed) for i in seeds]


# ---------------------------------------------------------------- AV-1, AV-1b, AV-2

@pytest.mark.parametrize("tier,case", CASES)
def test_av1_every_sgd_solution_is_an_asymmetric_valley(case_of, tier, case):
    c = case_of("AV-1", tier, case)
    claim, net, seeds, fam = c.claim, c.net, c.seeds(), c.claim.settings["family"]
    rows = [_family_row(claim, f, {"successes": [bool(probe.survey(net, i, f, claim).asymmetric.any())
                                                 for i in _family_seeds(claim, f, seeds)]})
            for f in claim.settings["families_reported"]]
    paper = [probe.survey(net, i, fam, claim) for i in seeds]
    any_asym = [bool(s.asymmetric.any()) for s in paper]
    original = [bool(s.original_asymmetric.any()) for s in paper]
    sens_rows, sens_fig = _c_sensitivity(claim, paper, c.figure("c_sensitivity"), case)
    c.check(data={"successes": any_asym}, original_data={"successes": original},
            per_seed={"any_asymmetric": [float(a) for a in any_asym],
                      "any_asymmetric_original": [float(a) for a in original],
                      "max_c": [_max_c(s) for s in paper],
                      "max_c_original": [float(torch.nan_to_num(s.original_c, nan=0.0).max()) for s in paper],
                      "prevalence": [float(s.asymmetric.double().mean()) for s in paper], **_scale_columns(paper)},
            figures=[_av1_figure(c, paper[0], net.seeds[seeds[0]].seed), sens_fig],
            tables={"direction families (AV-1 rule per family)": rows,
                    "BN recomputed vs eval (first seeds)": _bn_recompute_rows(net, claim, seeds),
                    "threshold and scale sensitivity (descriptive, not the rule)": sens_rows})


def _av1_figure(c, s0, seed):
    """He et al. Fig. 2 for the first seed: its first asymmetric direction (largest c_u if none), on
    that direction's own window (the smallest scale at which it is asymmetric)."""
    asym = torch.nonzero(s0.asymmetric).flatten()
    j = int(asym[0]) if asym.numel() else int(torch.nan_to_num(s0.c, nan=-1.0).argmax())
    q = int(s0.scale_index[j]) if asym.numel() else int(s0.reference)
    slopes, r, R = _slopes(torch.linspace(-1, 1, s0.losses.shape[-1], dtype=torch.float64),
                           s0.losses[j].double().cpu(), float(c.claim.settings["r_frac"]))
    kind = "asymmetric" if asym.numel() else "largest c_u, not asymmetric"
    return plots.loss_along_direction(
        c.figure("direction"), s0.steps[j], s0.losses[j], slopes=slopes, r=r * float(s0.R[j]), R=R * float(s0.R[j]),
        title=f"AV-1 {c.case} seed {seed} ({kind}): c_u = {float(s0.c[j]):.2f} at Δ = "
              f"{float(s0.deltas[q]):g} nat{'' if bool(s0.centred[j]) else ' (w NOT at the line minimum)'}")


SENSITIVITY_C = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # descriptive grid


def _found_at(s, thr: float, variant) -> bool:
    """Any direction asymmetric at c threshold thr: at one scale index (centre guard), over the
    pre-registered set ("set"), or by the original rule ("original": Δ = delta_rise, no guard)."""
    above = (torch.nan_to_num(s.c_s, nan=-1.0) > thr) & s.is_valley_s
    if variant == "original":
        return bool(((torch.nan_to_num(s.original_c, nan=-1.0) > thr) & s.is_valley_s[int(s.reference)]).any())
    guarded = above & s.centred_s
    if variant == "set":
        return bool((guarded & s.in_set.to(guarded.device).view(-1, 1)).any())
    return bool(guarded[variant].any())


def _c_sensitivity(claim, surveys, path, case):
    """CLAIMS.md "sensitivity of every threshold-based claim": AV-1's rule re-applied with other c
    thresholds, at each single scale Δ, over the pre-registered set, and by the original rule
    (descriptive; the verdict uses the pre-registered c and scale set only)."""
    alpha = load_registry().alpha_for(claim.id)
    variants = {f"Δ = {d:g} nat": q for q, d in enumerate(surveys[0].deltas.tolist())}
    variants["scale set (the rule)"] = "set"
    variants[f"original (Δ = {float(claim.settings['delta_rise']):g} nat, no centre guard)"] = "original"
    rows, curves = [], {label: [] for label in variants}
    for thr in SENSITIVITY_C:
        for label, variant in variants.items():
            ok = [_found_at(s, thr, variant) for s in surveys]
            res = stats.decide(claim.rule, alpha, {"successes": ok})
            rows.append({"c_threshold": thr, "scale": label, "seeds_with_a_direction": sum(ok), "of": len(ok),
                         "verdict": res.verdict})
            curves[label].append(res.verdict)
    fig = plots.threshold_sensitivity_by(path, SENSITIVITY_C, curves, chosen=float(claim.settings["c_threshold"]),
                                         title=f"AV-1 {case}: verdict vs the c_u threshold, per rise scale Δ")
    return rows, fig


def _bn_recompute_rows(net, claim, seeds) -> list[dict]:
    """CLAIMS.md: the cpu tier may use eval-mode BN if it reports the recomputed variant too."""
    n = int(claim.settings.get("bn_recompute_report_seeds", 1))
    rows = []
    for i in seeds[:n]:
        for bn in ("eval", "recompute"):
            s = probe.survey(net, i, claim.settings["family"], claim, bn=bn)
            rows.append({"seed": net.seeds[i].seed, "bn": bn, "asymmetric": int(s.asymmetric.sum()),
                         "asymmetric_original": int(s.original_asymmetric.sum()), "of": int(s.c.numel()),
                         "max_c": round(_max_c(s), 3)})
    return rows


@pytest.mark.parametrize("tier,case", CASES)
def test_av1_control_quadratic_landscape(case_of, tier, case):
    c = case_of("AV-1", tier, case)
    found = [bool(probe.control_survey(c.net, s).asymmetric.any()) for s in range(int(c.claim.seeds[tier]))]
    c.control("least-squares quadratic", data={"successes": found}, per_seed={"any_asymmetric": [float(f) for f in found]})


@pytest.mark.parametrize("tier,case", CASES)
def test_av1b_random_directions_asymmetric_with_decent_probability(case_of, tier, case):
    c = case_of("AV-1b", tier, case)
    claim, net, seeds, fam = c.claim, c.net, c.seeds(), c.claim.settings["family"]
    prev = {f: [_prevalence(net, i, f, claim) for i in _family_seeds(claim, f, seeds)]
            for f in claim.settings["families_reported"]}
    original = [_prevalence(net, i, fam, claim, original=True) for i in seeds]
    c.check(data={"values": prev[fam]}, original_data={"values": original},
            per_seed={**{f"prevalence_{f}": v for f, v in prev.items()}, f"prevalence_{fam}_original": original},
            tables={"direction families (AV-1b rule per family)": [_family_row(claim, f, {"values": v})
                                                                   for f, v in prev.items()]})


@pytest.mark.parametrize("tier,case", CASES)
def test_av1b_control_quadratic_landscape(case_of, tier, case):
    c = case_of("AV-1b", tier, case)
    prev = [float(probe.control_survey(c.net, s).asymmetric.double().mean()) for s in range(int(c.claim.seeds[tier]))]
    c.control("least-squares quadratic", data={"values": prev}, per_seed={"prevalence": prev})


def _paired_seeds(c_bn, c_nobn) -> list[int]:
    return [i for i in c_bn.seeds() if i in c_nobn.seeds()]


@pytest.mark.parametrize("tier,case_bn,case_nobn", PAIRS)
def test_av2_batchnorm_causes_asymmetry(case_of, tier, case_bn, case_nobn):
    c, c_nobn = case_of("AV-2", tier, case_bn), case_of("AV-2", tier, case_nobn)
    claim, bn, nobn, seeds, fam = c.claim, c.net, c_nobn.net, _paired_seeds(c, c_nobn), c.claim.settings["family"]
    prev = {f: ([_prevalence(bn, i, f, claim) for i in _family_seeds(claim, f, seeds)],
                [_prevalence(nobn, i, f, claim) for i in _family_seeds(claim, f, seeds)])
            for f in claim.settings["families_reported"]}
    a, b = prev[fam]
    orig = [[_prevalence(n, i, fam, claim, original=True) for i in seeds] for n in (bn, nobn)]
    max_c = [[_max_c(probe.survey(n, i, fam, claim)) for i in seeds] for n in (bn, nobn)]
    fig = plots.paired_seeds(c.figure("bn_vs_nobn"), *max_c, ("BN", "no BN"),
                             ylabel="largest c_u (centred valleys, any scale)",
                             title=f"AV-2 {tier}: largest Definition-1 index per seed, BN vs no BN")
    c = claim_case(c.request, "AV-2", tier, f"{case_bn} vs {case_nobn}", bn, c.figure_dir)
    c.check(data={"a": a, "b": b}, original_data={"a": orig[0], "b": orig[1]},
            per_seed={"prevalence_bn": a, "prevalence_nobn": b, "prevalence_bn_original": orig[0],
                      "prevalence_nobn_original": orig[1], "max_c_bn": max_c[0], "max_c_nobn": max_c[1]},
            figures=[fig], tables={"direction families (AV-2 rule per family)": [
                _family_row(claim, f, {"a": x, "b": y}) for f, (x, y) in prev.items()]})


@pytest.mark.parametrize("tier,case_bn,case_nobn", PAIRS)
def test_av2_control_arms_swapped(request, case_of, tier, case_bn, case_nobn):
    """The claim read backwards ("removing BN causes asymmetry"): must not come out replicated."""
    c, c_nobn = case_of("AV-2", tier, case_bn), case_of("AV-2", tier, case_nobn)
    seeds, fam = _paired_seeds(c, c_nobn), c.claim.settings["family"]
    a = [_prevalence(c_nobn.net, i, fam, c.claim) for i in seeds]
    b = [_prevalence(c.net, i, fam, c.claim) for i in seeds]
    check_control(request, "AV-2", tier=tier, case=f"control: arms swapped ({case_nobn} vs {case_bn})",
                  data={"a": a, "b": b}, per_seed={"prevalence_nobn": a, "prevalence_bn": b})


# ---------------------------------------------------------------- AV-3: shifted test curve

def _shift_gaps(net, i, family, *, mirror=False, only_asymmetric=True):
    """He Def. 3 along each line with the revised nulls (best rescaling, overlap; registry AV-3
    rescale_rule, ratio_rule, overlap_rule): ξ_δ, δ*, ξ_a*, the revised value and the original
    ln(ξ_δ*/ξ_0); mirror: the test curve reflected l -> −l."""
    scans = probe.line_scans(net, i, family, only_asymmetric)
    if scans is None:
        return None
    t, train, test = scans
    gap = shift_gap(t, train, test.flip(-1) if mirror else test, **shift_gap_settings(claim_of("AV-3").settings))
    return gap, t, train, test


def _seed_median(values) -> float:
    """Median over a seed's directions, skipping no-value (nan: ξ_0 at rounding level) directions;
    nan if none has a value (the seed then contributes nothing)."""
    return float(torch.nanmedian(values)) if bool(torch.isfinite(values).any()) else math.nan


def _gap_summaries(net, seeds, family, mirror=False, only_asymmetric=True) -> dict[int, dict]:
    """Per seed with a line: the revised and original per-seed medians and the flag counts."""
    out = {}
    for i in seeds:
        g = _shift_gaps(net, i, family, mirror=mirror, only_asymmetric=only_asymmetric)
        if g is None:
            continue
        gap = g[0]
        out[i] = {"revised": _seed_median(gap.log_ratio), "original": _seed_median(gap.original_log_ratio),
                  "n_directions": int(gap.log_ratio.numel()), "no_overlap": int((~gap.overlaps).sum()),
                  "degenerate": int(gap.degenerate.sum()),
                  "median_a_star": float(gap.a_star.median()), "median_delta_star": float(gap.delta_star.median())}
    return out


def _finite(summary, which="revised") -> dict[int, float]:
    """{seed index: per-seed median} of the revised (or original) value; seeds without a value dropped."""
    return {i: v[which] for i, v in summary.items() if math.isfinite(v[which])}


def _av3_flags(net, summary) -> list[str]:
    return [f"seed {net.seeds[i].seed}: {v['no_overlap']}/{v['n_directions']} directions whose best shift does not "
            f"overlap (value max(ratio, 0)), {v['degenerate']} with ξ_0 at rounding level (no value)"
            for i, v in summary.items() if v["no_overlap"] or v["degenerate"]]


def _av3_figure(c, main, every):
    """Fig. 3 for an asymmetric direction if any; else a descriptive one (labelled)."""
    if not (main or every):
        return []
    gap, t, train, test = _shift_gaps(c.net, next(iter(main or every)), c.claim.settings["family"],
                                      only_asymmetric=bool(main))
    d = float(gap.delta_star[0])
    lp = (test[0] - test[0].min() + train[0].min()).numpy()
    shifted = np.interp(t.numpy() + d, t.numpy(), lp, left=np.nan, right=np.nan)
    kind = "asymmetric direction" if main else "NOT asymmetric (descriptive)"
    return [plots.shift_curves(
        c.figure("shift"), t, train[0], shifted, d,
        title=f"AV-3 {c.case}, {kind}: ln ratio {float(gap.log_ratio[0]):+.2f} revised (a* = {float(gap.a_star[0]):.2f}"
              f"{', NO overlap' if not bool(gap.overlaps[0]) else ''}), {float(gap.original_log_ratio[0]):+.2f} "
              f"original (l in units of R)")]


def _av3_family_rows(c, seeds, fam) -> list[dict]:
    """The AV-3 rule per direction family, plus every direction of the first seeds (descriptive)."""
    per_family = {f: _finite(_gap_summaries(c.net, _family_seeds(c.claim, f, seeds), f))
                  for f in claim_of("AV-1").settings["families_reported"]}
    rows = [_family_row(c.claim, f, {"values": list(v.values())}) | {"seeds_with_asymmetry": len(v)}
            for f, v in per_family.items()]
    every = _gap_summaries(c.net, seeds[:ROBUSTNESS_SEEDS], fam, only_asymmetric=False)
    rows.append({"family": f"paper, EVERY direction, first {ROBUSTNESS_SEEDS} seeds (descriptive, not the rule)",
                 "per_seed_median_ln_ratio": [round(v["revised"], 4) for v in every.values()],
                 "per_seed_median_ln_ratio_original": [round(v["original"], 4) for v in every.values()],
                 "no_overlap": [f"{v['no_overlap']}/{v['n_directions']}" for v in every.values()]})
    return rows, every


@pytest.mark.parametrize("tier,case", CASES)
def test_av3_test_curve_is_a_shifted_train_curve(case_of, tier, case):
    c = case_of("AV-3", tier, case)
    seeds, fam = c.seeds(), c.claim.settings["family"]
    rows, every = _av3_family_rows(c, seeds, fam)
    summary = _gap_summaries(c.net, seeds, fam)
    main, orig = _finite(summary), list(_finite(summary, "original").values())
    c.check(data={"values": list(main.values())}, original_data={"values": orig},
            per_seed={"median_log_xi_ratio": list(main.values()),
                      "median_log_xi_ratio_original": [summary[i]["original"] for i in main],
                      "directions_no_overlap": [float(summary[i]["no_overlap"]) for i in main],
                      "directions_xi0_at_rounding": [float(summary[i]["degenerate"]) for i in main],
                      "median_a_star": [summary[i]["median_a_star"] for i in main], "seed": _seed_ids(c, main)},
            flags=_av3_flags(c.net, summary), figures=_av3_figure(c, main, every),
            tables={"direction families (AV-3 rule per family)": rows})


@pytest.mark.parametrize("tier,case", CASES)
def test_av3_control_mirrored_test_curve(case_of, tier, case):
    """A test curve reflected l -> −l: no horizontal shift can undo a reflection of an asymmetric curve
    (the revised probe: a shift that does not overlap counts max(ratio, 0))."""
    c = case_of("AV-3", tier, case)
    summary = _gap_summaries(c.net, c.seeds(), c.claim.settings["family"], mirror=True)
    vals = [v["revised"] for v in summary.values() if math.isfinite(v["revised"])]
    c.control("mirrored test curve", data={"values": vals},
              per_seed={"median_log_xi_ratio": vals,
                        "median_log_xi_ratio_original": [v["original"] for v in summary.values()]})


# ---------------------------------------------------------------- AV-4: neighbours

def _av4_figure(c, res):
    """Fig. 4 around the first seed's asymmetric direction (its largest-c direction if no seed has one)."""
    first, label = next(iter(res.values()), None), "asymmetric direction"
    if first is None and c.seeds():
        i = c.seeds()[0]
        first, label = probe.neighbours(c.net, i)[0], f"seed {c.net.seeds[i].seed}, max-c direction (not asymmetric)"
    return [] if first is None else [plots.neighbour_band(
        c.figure("neighbours"), first.steps, first.losses.mean(0), first.losses.std(0),
        title=f"AV-4 {label}: {int(first.keeps.sum())}/{first.keeps.numel()} keep c > 2 "
              f"({int(first.n_not_centred)} not at their line's minimum)")]


@pytest.mark.parametrize("tier,case", CASES)
def test_av4_asymmetry_persists_at_neighbours(case_of, tier, case):
    c = case_of("AV-4", tier, case)
    net, fam = c.net, c.claim.settings["family"]
    # a seed without an asymmetric direction has nothing to test (listed, n_used < n)
    res = {i: probe.neighbours(net, i)[0] for i in c.seeds()
           if bool(probe.survey(net, i, fam, claim_of("AV-1")).asymmetric.any())}
    frac = [float(r.fraction) for r in res.values()]
    flags = [f"seed {net.seeds[i].seed}: {int(r.n_not_centred)}/{r.keeps.numel()} neighbours not at their line's "
             f"minimum (neighbour_centre_rule: never a success)" for i, r in res.items() if int(r.n_not_centred)]
    c.check(data={"values": frac}, original_data={"values": [float(r.original_fraction) for r in res.values()]},
            per_seed={"fraction_kept": frac, "fraction_kept_original": [float(r.original_fraction) for r in res.values()],
                      "neighbours_not_centred": [float(r.n_not_centred) for r in res.values()],
                      "reference_centred": [float(r.ref_centred) for r in res.values()], "seed": _seed_ids(c, res)},
            flags=flags, figures=_av4_figure(c, res))


@pytest.mark.parametrize("tier,case", CASES)
def test_av4_control_quadratic_landscape(case_of, tier, case):
    c = case_of("AV-4", tier, case)
    frac = [float(probe.neighbours(c.net, s, control=True)[0].fraction) for s in range(int(c.claim.seeds[tier]))]
    c.control("least-squares quadratic", data={"values": frac}, per_seed={"fraction_kept": frac})


# ---------------------------------------------------------------- AV-8, AV-9: SWA vs SGD from SWA

def _no_bump(prof, claim) -> bool:
    st, ends = claim.settings, torch.maximum(prof.train[0], prof.train[-1])
    return bool(prof.bump <= float(st["tau_abs"]) + float(st["tau_rel"]) * ends)


@pytest.mark.parametrize("tier,case", CASES)
def test_av8_swa_and_sgd_from_swa_share_a_basin(case_of, tier, case):
    c = case_of("AV-8", tier, case)
    seeds = c.seeds(need=ARMS)
    profs = [probe.segment(c.net, i) for i in seeds]
    ok = [_no_bump(p, c.claim) for p in profs]
    fig = plots.segment_profile(c.figure("segment"), profs[0].t, profs[0].train, profs[0].test,
                                title=f"AV-8 {case} seed {c.net.seeds[seeds[0]].seed}: SWA (t=0) → SGD from SWA (t=1)")
    c.check(data={"successes": ok},
            per_seed={"no_bump": [float(o) for o in ok], "bump": [float(p.bump) for p in profs],
                      "endpoint_max": [float(torch.maximum(p.train[0], p.train[-1])) for p in profs]},
            figures=[fig])


@pytest.mark.parametrize("tier,case", CASES)
def test_av8_control_independent_solutions(case_of, tier, case):
    """SWA solutions of two different seeds (independent initialisations) are not expected to share
    a basin: the no-bump rule must not replicate on their segments."""
    c = case_of("AV-8", tier, case)
    seeds = c.seeds(need=("swa",))
    profs = [probe.segment(c.net, i, j) for i, j in zip(seeds, seeds[1:] + seeds[:1])]
    ok = [_no_bump(p, c.claim) for p in profs]
    c.control("SWA of seed i ↔ SWA of seed i+1", data={"successes": ok},
              per_seed={"no_bump": [float(o) for o in ok], "bump": [float(p.bump) for p in profs]})


def _col(ms, k):
    return [m[k] for m in ms]


@pytest.mark.parametrize("tier,case", CASES)
def test_av9_swa_higher_train_lower_test_loss(case_of, tier, case):
    c = case_of("AV-9", tier, case)
    seeds = c.seeds(need=ARMS)
    swa, sgd = probe.arm_metrics(c.net, seeds)
    figs = [plots.paired_seeds(c.figure(k), _col(swa, k), _col(sgd, k), ("SWA", "SGD from SWA"),
                               ylabel=k.replace("_", " "), title=f"AV-9 {case}: {k.replace('_', ' ')} per seed (Table 1)")
            for k in ("train_loss", "test_loss")]
    c.check(data={"train_higher": {"a": _col(swa, "train_loss"), "b": _col(sgd, "train_loss")},
                  "test_lower": {"a": _col(swa, "test_loss"), "b": _col(sgd, "test_loss")}},
            per_seed={f"{arm}_{k}": _col(ms, k) for arm, ms in (("swa", swa), ("sgd_from_swa", sgd))
                      for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
            supporting_data={"accuracy": {"train_acc": {"a": _col(sgd, "train_acc"), "b": _col(swa, "train_acc")},
                                          "test_acc": {"a": _col(swa, "test_acc"), "b": _col(sgd, "test_acc")}}},
            figures=figs, tables={"authors' selection rule (labelled; not the verdict)": [
                probe.authors_selection(c.net, i, m) for i, m in zip(seeds, swa)]})


@pytest.mark.parametrize("tier,case", CASES)
def test_av9_control_arms_swapped(case_of, tier, case):
    c = case_of("AV-9", tier, case)
    swa, sgd = probe.arm_metrics(c.net, c.seeds(need=ARMS))
    data = {"train_higher": {"a": _col(sgd, "train_loss"), "b": _col(swa, "train_loss")},
            "test_lower": {"a": _col(sgd, "test_loss"), "b": _col(swa, "test_loss")}}
    c.control("SGD-from-SWA as 'SWA'", data=data,
              per_seed={"train_loss_diff": [a - b for a, b in zip(data["train_higher"]["a"], data["train_higher"]["b"])]})


# ---------------------------------------------------------------- AV-10: SWA on the flat side

def _av10_columns(res, orig):
    return {"log_rise_ratio": [float(r.log_ratio) for r in res], "flat_side_fraction": [float(r.fraction) for r in res],
            "l_star_over_D": [float(r.l_star / r.distance) for r in res],
            "at_minimum": [float(r.at_minimum) for r in res], "rises_ok": [float(r.rises_ok) for r in res],
            "rise_swa": [float(r.rise_swa) for r in res], "rise_opposite": [float(r.rise_opposite) for r in res],
            "directions_at_minimum": [float(r.dir_at_minimum.double().mean()) for r in res],
            "distance": [float(r.distance) for r in res],
            **{f"original_{k}": v["values"] for k, v in orig.items()}}


def _av10_flags(net, seeds, res) -> list[str]:
    """One note per seed that counts as no evidence (the report prints them under the reason)."""
    out = []
    for i, r in zip(seeds, res):
        if not bool(r.at_minimum):
            out.append(f"seed {net.seeds[i].seed}: w_SGD not at the u_inter line's minimum "
                       f"(l*/D = {float(r.l_star / r.distance):+.3f}): no evidence either way")
        elif not bool(r.rises_ok):
            out.append(f"seed {net.seeds[i].seed}: a rise ≤ rise_floor around l*: log ratio = no evidence")
    return out


def _av10_figure(c, r, seed):
    return plots.flat_side_at_minimum(
        c.figure("flat_side"), r.line_steps, r.line_losses, r.mixed_steps, r.mixed_losses, l_star=float(r.l_star),
        distance=float(r.distance), l_star_dir=r.l_star_dir,
        title=f"AV-10 {c.case} seed {seed}: w_SGD at 0, w_SWA at {float(r.distance):.2f}, "
              f"line minimum l* = {float(r.l_star):+.2f} ({'at' if bool(r.at_minimum) else 'NOT at'} w_SGD)")


def _av10_family_rows(c, seeds, fam) -> list[dict]:
    """Mean per-seed values of the revised probe under the other u_rand families (descriptive)."""
    return [{"family": f, "n": min(len(seeds), ROBUSTNESS_SEEDS),
             **{k: round(float(np.mean(v["values"])), 4) for k, v in flat_side_data(
                 [probe.flat_side(c.net, i, family=f) for i in seeds[:ROBUSTNESS_SEEDS]]).items()}}
            for f in c.claim.settings["families_reported"] if f != fam]


@pytest.mark.parametrize("tier,case", CASES)
def test_av10_swa_is_biased_to_the_flat_side(case_of, tier, case):
    c = case_of("AV-10", tier, case)
    seeds, fam = c.seeds(need=ARMS), c.claim.settings["u_rand_family"]
    res = [probe.flat_side(c.net, i, family=fam) for i in seeds]
    orig = original_flat_side_data([probe.flat_side_original(c.net, i, family=fam) for i in seeds], c.claim.settings)
    c.check(data=flat_side_data(res), original_data=orig, per_seed=_av10_columns(res, orig),
            flags=_av10_flags(c.net, seeds, res), figures=[_av10_figure(c, res[0], c.net.seeds[seeds[0]].seed)],
            tables={"u_rand families (mean per-seed values, revised probe)": _av10_family_rows(c, seeds, fam)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av10_control_reflected_swa(case_of, tier, case):
    """w_SWA mirrored through w_SGD: if SWA sat on the flat side, its mirror sits on the sharp one."""
    c = case_of("AV-10", tier, case)
    res = [probe.flat_side(c.net, i, family=c.claim.settings["u_rand_family"], reflect=True)
           for i in c.seeds(need=ARMS)]
    data = flat_side_data(res)
    c.control("SWA reflected through w_SGD", data=data,
              per_seed={**{k: v["values"] for k, v in data.items()},
                        "l_star_over_D": [float(r.l_star / r.distance) for r in res],
                        "at_minimum": [float(r.at_minimum) for r in res]})


# ---------------------------------------------------------------- AV-11: random-ray illusion

def _norm_columns(res) -> dict:
    """Descriptive per-seed columns (not the rule): the weight norms of both solutions and the widths
    divided by them. Width is a raw distance, so on BN (scale-invariant) layers the same function at a
    larger norm looks wider (core/tests/test_av_controls.py): a replication may be a norm effect."""
    n_swa, n_sgd = [float(s.weight_norm) for s, _ in res], [float(g.weight_norm) for _, g in res]
    return {"norm_swa": n_swa, "norm_sgd_from_swa": n_sgd, "norm_ratio_swa_over_sgd": [a / b for a, b in zip(n_swa, n_sgd)],
            "rel_width_swa": [float(s.relative_mean_width) for s, _ in res],
            "rel_width_sgd_from_swa": [float(g.relative_mean_width) for _, g in res]}


def _norm_matched(c, seeds, res) -> tuple[list[dict], list[dict]]:
    """The norm-matched row (widths / ‖w‖, paired difference, the same rule: descriptive, never the
    verdict) and the per-seed table behind it."""
    cols = _norm_columns(res)
    r = stats.decide(c.claim.rule, load_registry().alpha_for(c.claim.id),
                     {"a": cols["rel_width_swa"], "b": cols["rel_width_sgd_from_swa"]})
    row = [{"quantity": "width / ||w|| (descriptive, NOT the verdict)", "n": r.n,
            "median_difference_swa_minus_sgd": round(r.estimate, 6), "ci": [round(r.ci[0], 6), round(r.ci[1], 6)],
            "verdict_under_the_same_rule": r.verdict}]
    table = [{"seed": c.net.seeds[i].seed, "width_swa": round(float(s.mean_width), 4),
              "width_sgd_from_swa": round(float(g.mean_width), 4), "norm_swa": round(float(s.weight_norm), 4),
              "norm_sgd_from_swa": round(float(g.weight_norm), 4),
              "norm_ratio": round(float(s.weight_norm / g.weight_norm), 5),
              "rel_width_swa": round(float(s.relative_mean_width), 6),
              "rel_width_sgd_from_swa": round(float(g.relative_mean_width), 6)} for i, (s, g) in zip(seeds, res)]
    return row, table


@pytest.mark.parametrize("tier,case", CASES)
def test_av11_random_rays_make_swa_look_wider(case_of, tier, case):
    c = case_of("AV-11", tier, case)
    seeds = c.seeds(need=ARMS)
    res = [probe.widths(c.net, i) for i in seeds]
    a, b = [float(s.mean_width) for s, _ in res], [float(g.mean_width) for _, g in res]
    swa0, sgd0 = res[0]
    fig = plots.random_rays(c.figure("rays"), swa0.steps, swa0.losses, sgd0.losses, ("SWA", "SGD from SWA"),
                            title=f"AV-11 {case}: random Gaussian rays")
    row, table = _norm_matched(c, seeds, res)
    c.check(data={"a": a, "b": b},
            per_seed={"width_swa": a, "width_sgd_from_swa": b,
                      "censored_swa": [float(s.censored.double().mean()) for s, _ in res],
                      "censored_sgd": [float(g.censored.double().mean()) for _, g in res], **_norm_columns(res)},
            figures=[fig], tables={"norm-matched widths (descriptive, not the verdict)": row,
                                   "weight norms and relative widths per seed (descriptive)": table})


@pytest.mark.parametrize("tier,case", CASES)
def test_av11_control_arms_swapped(case_of, tier, case):
    c = case_of("AV-11", tier, case)
    res = [probe.widths(c.net, i) for i in c.seeds(need=ARMS)]
    a, b = [float(g.mean_width) for _, g in res], [float(s.mean_width) for s, _ in res]
    c.control("SGD-from-SWA as 'SWA'", data={"a": a, "b": b}, per_seed={"a": a, "b": b})


# ---------------------------------------------------------------- AV-12: early-stable profile

def _changes(res):
    """Descriptive columns (not the rule): per seed, whether every checkpoint's Definition-1 flat side
    equals the final one, the fraction that do, and the largest argmin move (units of R)."""
    r_frac = float(claim_of("AV-1").settings["r_frac"])
    ch = [profile_change(t.double(), profs.double(), final.double(), r_frac=r_frac)
          for _, _, t, profs, _, final in res]
    return ch, {"flat_side_same_all": [float(c.same_flat_side.all()) for c in ch],
                "flat_side_same_fraction": [float(c.same_flat_side.double().mean()) for c in ch],
                "max_argmin_shift_R": [float(c.argmin_shift.max()) for c in ch],
                "final_flat_side": [float(c.final_flat_side) for c in ch]}


def _av12_table(res, ch) -> list[dict]:
    corr0, epochs = res[0][0], res[0][1]
    return [{"epoch": e, "corr": round(float(r), 4), "flat_side": int(f), "same_flat_side_as_final": bool(k),
             "argmin_shift_R": round(float(m), 4)}
            for e, r, f, k, m in zip(epochs, corr0, ch[0].flat_side, ch[0].same_flat_side, ch[0].argmin_shift)]


@pytest.mark.parametrize("tier,case", CASES)
def test_av12_profile_stabilises_early(case_of, tier, case):
    c = case_of("AV-12", tier, case)
    res = [probe.profiles(c.net, i) for i in c.seeds()]
    mins = [float(r[0].min()) for r in res]
    _, epochs, t, profs, _, _ = res[0]
    ch, cols = _changes(res)
    fig = plots.flat_side_curves(c.figure("profiles"), t, profs, [f"epoch {e}" for e in epochs],
                                 title=f"AV-12 {case}: loss along a fixed direction from epoch {epochs[0]}")
    c.check(data={"values": mins},
            per_seed={"min_corr": mins, "had_asymmetric_direction": [float(r[4]) for r in res], **cols},
            figures=[fig], tables={"seed 0 correlation by checkpoint (flat side, argmin move: descriptive)":
                                   _av12_table(res, ch)})


@pytest.mark.parametrize("shift", list(TRANSLATIONS), ids=["plus_R_over_2", "minus_R_over_2"])
@pytest.mark.parametrize("tier,case", CASES)
def test_av12_control_translated_valley(case_of, tier, case, shift):
    """Every checkpoint profile replaced by the final one read at l + s, s = +R/2 or −R/2, as two
    separate controls (the registered ±R/2 control failed only through its +R/2 half on a
    Definition-1 valley: core/tests/test_probe_audit.py). Each must not come out replicated."""
    c = case_of("AV-12", tier, case)
    corr = [float(profile_correlation(probe.translated(c.net, i)[shift][None], probe.profiles(c.net, i)[5])[0])
            for i in c.seeds()]
    c.control(f"valley translated by {shift}", data={"values": corr}, per_seed={"min_corr": corr})


@pytest.mark.parametrize("tier,case", CASES)
def test_av12_control_mirrored_profile(case_of, tier, case):
    """Every checkpoint profile replaced by the final one mirrored (l -> −l: the flat side flipped, as
    AV-3's control), on the seeds the claim is decided on. Where the fixed direction is not
    Definition-1 asymmetric (flagged) the mirror still flips its flatter side unless the profile is
    exactly even (`mirror_flips_flat_side`); a correlation that cannot tell the mirror from the final
    profile says little about the asymmetry being stable."""
    c = case_of("AV-12", tier, case)
    res = [probe.profiles(c.net, i) for i in c.seeds()]
    corr = [float(profile_correlation(r[5].flip(-1)[None], r[5])[0]) for r in res]
    r_frac = float(claim_of("AV-1").settings["r_frac"])
    flips = [float(~profile_change(r[2].double(), r[5].flip(-1)[None].double(), r[5].double(),
                                   r_frac=r_frac).same_flat_side[0]) for r in res]
    c.control("mirrored final profile", data={"values": corr},
              per_seed={"min_corr": corr, "mirror_flips_flat_side": flips,
                        "had_asymmetric_direction": [float(r[4]) for r in res]})
