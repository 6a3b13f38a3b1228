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
from core.harness import check_claim, check_control, claim_of
from core.landscape import directions as dirs
from core.landscape.asymmetry import asymmetry_index
from core.landscape.flat_side import flat_side_at_minimum
from core.landscape.probes import (asymmetry_survey, flat_side_comparison, neighbour_asymmetry,
                                   profile_change, profile_correlation, random_ray_width, segment_profile,
                                   shift_gap)
from core.landscape.scan import scan_lines
from core.registry import load_registry
from core.train import authors_selection_rule, evaluate
from fixtures.av_probes import (flat_side_data, flat_side_settings, original_flat_side_data,
                                original_flat_side_settings, shift_gap_settings, stream, survey_settings,
                                tier_value)
from fixtures.specs import tier as tier_cases

ROBUSTNESS_SEEDS = 3   # other direction families run on the first 3 seeds only (descriptive table;
# compute budget of the cpu tier: a Definition-1 survey is ~1,900 forward passes), never the verdict
CPU_BN, CPU_NOBN = "mnist1d-mlp-bn", "mnist1d-mlp-nobn"


def _cases():
    cpu = [pytest.param("cpu", CPU_BN, marks=pytest.mark.cpu, id=f"cpu-{CPU_BN}")]
    gpu = [pytest.param("gpu", c.name, marks=pytest.mark.gpu, id=f"gpu-{c.name}")
           for c in tier_cases("gpu") if not c.name.endswith("nobn")]
    return cpu + gpu


CASES = _cases()
PAIRS = [pytest.param("cpu", CPU_BN, CPU_NOBN, marks=pytest.mark.cpu, id="cpu-mnist1d-mlp"),
         pytest.param("gpu", "mnist1d-large-cnn1d-bn", "mnist1d-large-cnn1d-nobn",
                      marks=pytest.mark.gpu, id="gpu-mnist1d-large-cnn1d")]


# ---------------------------------------------------------------- shared helpers

def _seeds(net, claim, tier, need=("sgd",)) -> list[int]:
    """Indices of the first n-planned seeds whose runs finished (diverged seeds are listed, not used)."""
    first = range(min(int(claim.seeds[tier]), len(net.seeds)))
    return [i for i in first if net.seeds[i].ok and all(getattr(net.seeds[i], w) is not None
                                                        for w in need)]


def _status_table(net, claim, tier) -> list[dict]:
    return net.status_rows()[: int(claim.seeds[tier])]


def _fig(figure_dir, claim_id, tier, case, what):
    return figure_dir / f"{claim_id}_{tier}_{case}_{what}.png"


def _family_seeds(claim, family, seeds):
    """All seeds for the family the verdict uses; the first ROBUSTNESS_SEEDS for the others."""
    return seeds if family == claim.settings.get("family", "paper") else seeds[:ROBUSTNESS_SEEDS]


def _prevalence(net, i, family, claim, *, original=False) -> float:
    """Fraction of the K directions asymmetric at some scale of the set (original: Δ = delta_rise
    alone, no centre guard — the rule as first registered)."""
    s = net.survey(i, family, claim)
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


def _family_row(claim, tier, family, values, rule=None) -> dict:
    """A robustness-table row: the claim's own rule (or `rule`) applied to another family's data."""
    alpha = load_registry().alpha_for(claim.id)
    res = stats.decide(rule or claim.rule, alpha, values)
    return {"family": family, "n": res.n, "estimate": round(res.estimate, 4),
            "ci": [round(res.ci[0], 4), round(res.ci[1], 4)], "verdict": res.verdict,
            "used_for_verdict": family == claim.settings.get("family", "paper")}


def _quadratic_control(net):
    """A landscape where asymmetry is false by construction: a linear least-squares model at its exact
    minimum. Its loss is exactly quadratic in the weights, so every line is a symmetric parabola.
    Solved once per session and case: (model, params, per-example squared loss)."""
    return net.memo(("quadratic control",), lambda: _least_squares(net), disk=False)


def _least_squares(net):
    x = net.x_train.flatten(1).double()
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)
    Y = torch.nn.functional.one_hot(net.y_train, int(net.y_train.max()) + 1).double()
    W = torch.linalg.lstsq(X, Y).solution                       # [D + 1, C]
    model = torch.nn.Linear(x.shape[1], Y.shape[1]).to(x.device)
    params = {"1.weight": W[:-1].T.float().contiguous(), "1.bias": W[-1].float().contiguous()}

    def sq_loss(out, y):
        return (out - torch.nn.functional.one_hot(y, out.shape[-1]).to(out.dtype)).square().sum(-1)
    return torch.nn.Sequential(torch.nn.Flatten(), model), params, sq_loss


def _control_survey(net, seed: int):
    """AV-1's Definition-1 survey on the quadratic control, one per seed index, shared by the
    AV-1, AV-1b and AV-4 controls (the registry keeps their Definition-1 settings equal)."""
    def compute():
        model, params, loss = _quadratic_control(net)
        st = claim_of("AV-1").settings
        return asymmetry_survey(model, params, {}, net.x_train, net.y_train, family=st["family"],
                                generator=stream(seed, "control", "AV-1"), loss=loss, **survey_settings(st))
    return net.memo(("control survey", seed), compute)


def _slopes(steps, losses, r_frac):
    """Mean outward slopes (s₊, s₋) on the window, for the Fig. 2 style figure."""
    a = asymmetry_index(steps, losses, r_frac=r_frac)
    w = a.window.double()
    return [float((a.slopes[k] * w).sum() / w.sum()) for k in (0, 1)], float(a.r), float(a.R)


# ---------------------------------------------------------------- AV-1, AV-1b, AV-2

@pytest.mark.parametrize("tier,case", CASES)
def test_av1_every_sgd_solution_is_an_asymmetric_valley(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-1"), av_net(tier, case)
    seeds = _seeds(net, claim, tier)
    fam = claim.settings["family"]
    rows = [_family_row(claim, tier, f, {"successes": [bool(net.survey(i, f, claim).asymmetric.any())
                                                       for i in _family_seeds(claim, f, seeds)]})
            for f in claim.settings["families_reported"]]
    paper = [net.survey(i, fam, claim) for i in seeds]
    any_asym = [bool(s.asymmetric.any()) for s in paper]
    original = [bool(s.original_asymmetric.any()) for s in paper]
    bn_rows = _bn_recompute_rows(net, claim, tier, seeds)
    sens_rows, sens_fig = _c_sensitivity(claim, paper, _fig(figure_dir, "AV-1", tier, case, "c_sensitivity"),
                                         case)
    check_claim(request, "AV-1", tier=tier, case=case, data={"successes": any_asym},
                original_data={"successes": original},
                per_seed={"any_asymmetric": [float(a) for a in any_asym],
                          "any_asymmetric_original": [float(a) for a in original],
                          "max_c": [_max_c(s) for s in paper],
                          "max_c_original": [float(torch.nan_to_num(s.original_c, nan=0.0).max()) for s in paper],
                          "prevalence": [float(s.asymmetric.double().mean()) for s in paper],
                          **_scale_columns(paper)},
                figures=[_av1_figure(figure_dir, claim, tier, case, paper[0], net.seeds[seeds[0]].seed), sens_fig],
                tables={"direction families (AV-1 rule per family)": rows,
                        "BN recomputed vs eval (first seeds)": bn_rows,
                        "threshold and scale sensitivity (descriptive, not the rule)": sens_rows,
                        "seeds": _status_table(net, claim, tier)})


def _av1_figure(figure_dir, claim, tier, case, s0, seed):
    """He et al. Fig. 2 for the first seed: its first asymmetric direction (largest c_u if none), on
    that direction's own window (the smallest scale at which it is asymmetric)."""
    asym = torch.nonzero(s0.asymmetric).flatten()
    j = int(asym[0]) if asym.numel() else int(torch.nan_to_num(s0.c, nan=-1.0).argmax())
    q = int(s0.scale_index[j]) if asym.numel() else int(s0.reference)
    slopes, r, R = _slopes(torch.linspace(-1, 1, s0.losses.shape[-1], dtype=torch.float64),
                           s0.losses[j].double().cpu(), float(claim.settings["r_frac"]))
    kind = "asymmetric" if asym.numel() else "largest c_u, not asymmetric"
    return plots.loss_along_direction(
        _fig(figure_dir, "AV-1", tier, case, "direction"), s0.steps[j], s0.losses[j],
        slopes=slopes, r=r * float(s0.R[j]), R=R * float(s0.R[j]),
        title=f"AV-1 {case} seed {seed} ({kind}): c_u = {float(s0.c[j]):.2f} at Δ = "
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


def _bn_recompute_rows(net, claim, tier, seeds) -> list[dict]:
    """CLAIMS.md: the cpu tier may use eval-mode BN if it reports the recomputed variant too."""
    n = int(claim.settings.get("bn_recompute_report_seeds", 1))
    rows = []
    for i in seeds[:n]:
        for bn in ("eval", "recompute"):
            s = net.survey(i, claim.settings["family"], claim, bn=bn)
            rows.append({"seed": net.seeds[i].seed, "bn": bn, "asymmetric": int(s.asymmetric.sum()),
                         "asymmetric_original": int(s.original_asymmetric.sum()), "of": int(s.c.numel()),
                         "max_c": round(_max_c(s), 3)})
    return rows


@pytest.mark.parametrize("tier,case", CASES)
def test_av1_control_quadratic_landscape(request, av_net, tier, case):
    claim, net = claim_of("AV-1"), av_net(tier, case)
    n = int(claim.seeds[tier])
    found = [bool(_control_survey(net, s).asymmetric.any()) for s in range(n)]
    check_control(request, "AV-1", tier=tier, case=f"control: least-squares quadratic ({case})",
                  data={"successes": found}, per_seed={"any_asymmetric": [float(f) for f in found]})


@pytest.mark.parametrize("tier,case", CASES)
def test_av1b_random_directions_asymmetric_with_decent_probability(request, av_net, tier, case):
    claim, net = claim_of("AV-1b"), av_net(tier, case)
    seeds = _seeds(net, claim, tier)
    prev = {f: [_prevalence(net, i, f, claim) for i in _family_seeds(claim, f, seeds)]
            for f in claim.settings["families_reported"]}
    rows = [_family_row(claim, tier, f, {"values": v}) for f, v in prev.items()]
    fam = claim.settings["family"]
    original = [_prevalence(net, i, fam, claim, original=True) for i in seeds]
    check_claim(request, "AV-1b", tier=tier, case=case, data={"values": prev[fam]},
                original_data={"values": original},
                per_seed={**{f"prevalence_{f}": v for f, v in prev.items()}, f"prevalence_{fam}_original": original},
                tables={"direction families (AV-1b rule per family)": rows,
                        "seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av1b_control_quadratic_landscape(request, av_net, tier, case):
    claim, net = claim_of("AV-1b"), av_net(tier, case)
    prev = [float(_control_survey(net, s).asymmetric.double().mean()) for s in range(int(claim.seeds[tier]))]
    check_control(request, "AV-1b", tier=tier, case=f"control: least-squares quadratic ({case})",
                  data={"values": prev}, per_seed={"prevalence": prev})


@pytest.mark.parametrize("tier,case_bn,case_nobn", PAIRS)
def test_av2_batchnorm_causes_asymmetry(request, av_net, figure_dir, tier, case_bn, case_nobn):
    claim = claim_of("AV-2")
    bn, nobn = av_net(tier, case_bn), av_net(tier, case_nobn)
    seeds = [i for i in _seeds(bn, claim, tier) if i in _seeds(nobn, claim, tier)]
    prev = {f: ([_prevalence(bn, i, f, claim) for i in _family_seeds(claim, f, seeds)],
                [_prevalence(nobn, i, f, claim) for i in _family_seeds(claim, f, seeds)])
            for f in claim.settings["families_reported"]}
    rows = [_family_row(claim, tier, f, {"a": a, "b": b}) for f, (a, b) in prev.items()]
    fam = claim.settings["family"]
    a, b = prev[fam]
    orig = [[_prevalence(n, i, fam, claim, original=True) for i in seeds] for n in (bn, nobn)]
    max_c = [[_max_c(n.survey(i, fam, claim)) for i in seeds] for n in (bn, nobn)]
    fig = plots.paired_seeds(_fig(figure_dir, "AV-2", tier, case_bn, "bn_vs_nobn"), *max_c, ("BN", "no BN"),
                             ylabel="largest c_u (centred valleys, any scale)",
                             title=f"AV-2 {tier}: largest Definition-1 index per seed, BN vs no BN")
    check_claim(request, "AV-2", tier=tier, case=f"{case_bn} vs {case_nobn}", data={"a": a, "b": b},
                original_data={"a": orig[0], "b": orig[1]},
                per_seed={"prevalence_bn": a, "prevalence_nobn": b, "prevalence_bn_original": orig[0],
                          "prevalence_nobn_original": orig[1], "max_c_bn": max_c[0],
                          "max_c_nobn": max_c[1]}, figures=[fig],
                tables={"direction families (AV-2 rule per family)": rows})


@pytest.mark.parametrize("tier,case_bn,case_nobn", PAIRS)
def test_av2_control_arms_swapped(request, av_net, tier, case_bn, case_nobn):
    """The claim read backwards ("removing BN causes asymmetry"): must not come out replicated."""
    claim = claim_of("AV-2")
    bn, nobn = av_net(tier, case_bn), av_net(tier, case_nobn)
    seeds = [i for i in _seeds(bn, claim, tier) if i in _seeds(nobn, claim, tier)]
    fam = claim.settings["family"]
    a = [_prevalence(nobn, i, fam, claim) for i in seeds]
    b = [_prevalence(bn, i, fam, claim) for i in seeds]
    check_control(request, "AV-2", tier=tier, case=f"control: arms swapped ({case_nobn} vs {case_bn})",
                  data={"a": a, "b": b}, per_seed={"prevalence_nobn": a, "prevalence_bn": b})


# ---------------------------------------------------------------- AV-3: shifted test curve

def _unit_scaled(survey, idx):
    """Directions idx of a survey scaled by their own R, so the grid t ∈ [−1, 1] spans [−R, R]."""
    R = survey.R[idx]
    return {k: v[idx] * R.to(v.dtype).view(-1, *([1] * (v.dim() - 1))) for k, v in survey.directions.items()}


def _line_scans(net, tier, i, family, only_asymmetric=True):
    """Train and test loss on the AV-3 grid along seed i's asymmetric directions of AV-1's survey
    (only_asymmetric=False: every direction that rose within range — a descriptive variant);
    None when there is no such direction. Memoised: the claim and its control share it."""
    def compute():
        st, surv = claim_of("AV-3").settings, net.survey(i, family, claim_of("AV-1"))
        pick = surv.asymmetric if only_asymmetric else ~surv.no_rise
        idx = torch.nonzero(pick).flatten()[: int(st["k_directions"])]
        if idx.numel() == 0:
            return None
        seed, bn = net.seeds[i], tier_value(st["bn_mode"], tier)
        t = torch.linspace(-1, 1, int(st["n_points"]), dtype=torch.float64)
        u = _unit_scaled(surv, idx)
        train = scan_lines(net.model, seed.sgd, seed.sgd_buffers, u, t.float(), net.x_train, net.y_train, bn=bn)
        test = scan_lines(net.model, seed.sgd, seed.sgd_buffers, u, t.float(), net.x_test, net.y_test,
                          bn=bn, ref_x=net.x_train)
        return t, train.double().cpu(), test.double().cpu()  # [k, n] each: small, on the host
    return net.memo(("AV-3 scans", i, family, only_asymmetric), compute)


def _shift_gaps(net, tier, i, family, *, mirror=False, only_asymmetric=True):
    """He Def. 3 along each line with the revised nulls (best rescaling, overlap; registry AV-3
    rescale_rule, ratio_rule, overlap_rule): ξ_δ, δ*, ξ_a*, the revised value and the original
    ln(ξ_δ*/ξ_0); mirror: the test curve reflected l -> −l."""
    scans = _line_scans(net, tier, i, family, only_asymmetric)
    if scans is None:
        return None
    t, train, test = scans
    gap = shift_gap(t, train, test.flip(-1) if mirror else test, **shift_gap_settings(claim_of("AV-3").settings))
    return gap, t, train, test


def _seed_median(values) -> float:
    """Median over a seed's directions, skipping no-value (nan: ξ_0 at rounding level) directions;
    nan if none has a value (the seed then contributes nothing)."""
    return float(torch.nanmedian(values)) if bool(torch.isfinite(values).any()) else math.nan


def _gap_summaries(net, tier, seeds, family, mirror=False, only_asymmetric=True) -> dict[int, dict]:
    """Per seed with a line: the revised and original per-seed medians and the flag counts."""
    out = {}
    for i in seeds:
        g = _shift_gaps(net, tier, i, family, mirror=mirror, only_asymmetric=only_asymmetric)
        if g is None:
            continue
        gap = g[0]
        out[i] = {"revised": _seed_median(gap.log_ratio), "original": _seed_median(gap.original_log_ratio),
                  "n_directions": int(gap.log_ratio.numel()), "no_overlap": int((~gap.overlaps).sum()),
                  "degenerate": int(gap.degenerate.sum()),
                  "median_a_star": float(gap.a_star.median()), "median_delta_star": float(gap.delta_star.median())}
    return out


def _median_log_ratio(net, tier, seeds, family, mirror=False, only_asymmetric=True, which="revised"):
    """{seed index: per-seed median} of the revised (or original) value; seeds without a value dropped."""
    return {i: v[which] for i, v in _gap_summaries(net, tier, seeds, family, mirror, only_asymmetric).items()
            if math.isfinite(v[which])}


def _av3_flags(net, summary) -> list[str]:
    return [f"seed {net.seeds[i].seed}: {v['no_overlap']}/{v['n_directions']} directions whose best shift does not "
            f"overlap (value max(ratio, 0)), {v['degenerate']} with ξ_0 at rounding level (no value)"
            for i, v in summary.items() if v["no_overlap"] or v["degenerate"]]


def _av3_figure(net, tier, case, figure_dir, claim, main, every):
    """Fig. 3 for an asymmetric direction if any; else a descriptive one (labelled)."""
    if not (main or every):
        return []
    gap, t, train, test = _shift_gaps(net, tier, next(iter(main or every)), claim.settings["family"],
                                      only_asymmetric=bool(main))
    d = float(gap.delta_star[0])
    lp = (test[0] - test[0].min() + train[0].min()).numpy()
    shifted = np.interp(t.numpy() + d, t.numpy(), lp, left=np.nan, right=np.nan)
    kind = "asymmetric direction" if main else "NOT asymmetric (descriptive)"
    return [plots.shift_curves(
        _fig(figure_dir, "AV-3", tier, case, "shift"), t, train[0], shifted, d,
        title=f"AV-3 {case}, {kind}: ln ratio {float(gap.log_ratio[0]):+.2f} revised (a* = {float(gap.a_star[0]):.2f}"
              f"{', NO overlap' if not bool(gap.overlaps[0]) else ''}), {float(gap.original_log_ratio[0]):+.2f} "
              f"original (l in units of R)")]


@pytest.mark.parametrize("tier,case", CASES)
def test_av3_test_curve_is_a_shifted_train_curve(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-3"), av_net(tier, case)
    seeds = _seeds(net, claim, tier)
    fam = claim.settings["family"]
    per_family = {f: _median_log_ratio(net, tier, _family_seeds(claim, f, seeds), f)
                  for f in claim_of("AV-1").settings["families_reported"]}
    rows = [_family_row(claim, tier, f, {"values": list(v.values())}) | {"seeds_with_asymmetry": len(v)}
            for f, v in per_family.items()]
    summary = _gap_summaries(net, tier, seeds, fam)
    main = {i: v["revised"] for i, v in summary.items() if math.isfinite(v["revised"])}
    orig = [v["original"] for v in summary.values() if math.isfinite(v["original"])]
    every = _gap_summaries(net, tier, seeds[:ROBUSTNESS_SEEDS], fam, only_asymmetric=False)
    rows.append({"family": f"paper, EVERY direction, first {ROBUSTNESS_SEEDS} seeds (descriptive, not the rule)",
                 "per_seed_median_ln_ratio": [round(v["revised"], 4) for v in every.values()],
                 "per_seed_median_ln_ratio_original": [round(v["original"], 4) for v in every.values()],
                 "no_overlap": [f"{v['no_overlap']}/{v['n_directions']}" for v in every.values()]})
    figs = _av3_figure(net, tier, case, figure_dir, claim, main, every)
    check_claim(request, "AV-3", tier=tier, case=case, data={"values": list(main.values())},
                original_data={"values": orig},
                per_seed={"median_log_xi_ratio": list(main.values()),
                          "median_log_xi_ratio_original": [summary[i]["original"] for i in main],
                          "directions_no_overlap": [float(summary[i]["no_overlap"]) for i in main],
                          "directions_xi0_at_rounding": [float(summary[i]["degenerate"]) for i in main],
                          "median_a_star": [summary[i]["median_a_star"] for i in main],
                          "seed": [float(net.seeds[i].seed) for i in main]},
                flags=_av3_flags(net, summary), figures=figs,
                tables={"direction families (AV-3 rule per family)": rows,
                        "seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av3_control_mirrored_test_curve(request, av_net, tier, case):
    """A test curve reflected l -> −l: no horizontal shift can undo a reflection of an asymmetric curve
    (the revised probe: a shift that does not overlap counts max(ratio, 0))."""
    claim, net = claim_of("AV-3"), av_net(tier, case)
    summary = _gap_summaries(net, tier, _seeds(net, claim, tier), claim.settings["family"], mirror=True)
    vals = [v["revised"] for v in summary.values() if math.isfinite(v["revised"])]
    check_control(request, "AV-3", tier=tier, case=f"control: mirrored test curve ({case})",
                  data={"values": vals}, per_seed={"median_log_xi_ratio": vals,
                                                   "median_log_xi_ratio_original": [v["original"] for v in summary.values()]})


# ---------------------------------------------------------------- AV-4: neighbours

def _neighbours(net, survey, model, params, buffers, *, key, bn, loss="ce"):
    """Assumption 2 around the first asymmetric direction of `survey` (the largest-c one if none)."""
    st = claim_of("AV-4").settings
    asym = torch.nonzero(survey.asymmetric).flatten()
    j = int(asym[0]) if asym.numel() else int(torch.nan_to_num(survey.c, nan=-1.0).argmax())
    res = neighbour_asymmetry(
        model, params, buffers, {k: v[j] for k, v in survey.directions.items()}, float(survey.R[j]),
        net.x_train, net.y_train, n_neighbours=int(st["n_neighbours"]), generator=stream(*key),
        n_points=int(st["n_points"]), r_frac=float(st["r_frac"]),
        c_threshold=float(st["c_threshold"]), bn=bn, loss=loss)
    return res, bool(asym.numel())


@pytest.mark.parametrize("tier,case", CASES)
def test_av4_asymmetry_persists_at_neighbours(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-4"), av_net(tier, case)
    bn = tier_value(claim.settings["bn_mode"], tier)
    res = {}
    for i in _seeds(net, claim, tier):
        seed, survey = net.seeds[i], net.survey(i, claim.settings["family"], claim_of("AV-1"))
        if not bool(survey.asymmetric.any()):
            continue  # no asymmetric direction: nothing to test at this seed (listed, n_used < n)
        res[i], _ = _neighbours(net, survey, net.model, seed.sgd, seed.sgd_buffers,
                                key=(seed.seed, "AV-4"), bn=bn)
    frac = [float(r.fraction) for r in res.values()]
    original = [float(r.original_fraction) for r in res.values()]
    first, label = next(iter(res.values()), None), "asymmetric direction"
    if first is None and _seeds(net, claim, tier):  # Fig. 4 anyway, around the largest-c direction
        i = _seeds(net, claim, tier)[0]
        first = net.memo(("AV-4 descriptive", i), lambda: _neighbours(
            net, net.survey(i, claim.settings["family"], claim_of("AV-1")), net.model, net.seeds[i].sgd,
            net.seeds[i].sgd_buffers, key=(net.seeds[i].seed, "AV-4"), bn=bn)[0])
        label = f"seed {net.seeds[i].seed}, max-c direction (not asymmetric)"
    figs = [] if first is None else [plots.neighbour_band(
        _fig(figure_dir, "AV-4", tier, case, "neighbours"), first.steps, first.losses.mean(0),
        first.losses.std(0),
        title=f"AV-4 {label}: {int(first.keeps.sum())}/{first.keeps.numel()} keep c > 2 "
              f"({int(first.n_not_centred)} not at their line's minimum)")]
    flags = [f"seed {net.seeds[i].seed}: {int(r.n_not_centred)}/{r.keeps.numel()} neighbours not at their line's "
             f"minimum (neighbour_centre_rule: never a success)" for i, r in res.items() if int(r.n_not_centred)]
    check_claim(request, "AV-4", tier=tier, case=case, data={"values": frac}, original_data={"values": original},
                per_seed={"fraction_kept": frac, "fraction_kept_original": original,
                          "neighbours_not_centred": [float(r.n_not_centred) for r in res.values()],
                          "reference_centred": [float(r.ref_centred) for r in res.values()],
                          "seed": [float(net.seeds[i].seed) for i in res]},
                flags=flags, figures=figs, tables={"seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av4_control_quadratic_landscape(request, av_net, tier, case):
    claim, net = claim_of("AV-4"), av_net(tier, case)
    def fraction(s: int) -> float:
        model, params, loss = _quadratic_control(net)
        res, _ = _neighbours(net, _control_survey(net, s), model, params, {}, key=(s, "AV-4 control"),
                             bn="eval", loss=loss)
        return float(res.fraction)
    frac = [net.memo(("AV-4 control", s), lambda s=s: fraction(s)) for s in range(int(claim.seeds[tier]))]
    check_control(request, "AV-4", tier=tier, case=f"control: least-squares quadratic ({case})",
                  data={"values": frac}, per_seed={"fraction_kept": frac})


# ---------------------------------------------------------------- AV-8, AV-9: SWA vs SGD from SWA

def _segment(net, key, a, b, buffers, claim):
    return net.memo(key, lambda: segment_profile(
        net.model, a, b, buffers, net.x_train, net.y_train, n_points=int(claim.settings["n_points"]),
        bn=claim.settings["bn"], x_test=net.x_test, y_test=net.y_test))


def _no_bump(prof, claim) -> bool:
    st, ends = claim.settings, torch.maximum(prof.train[0], prof.train[-1])
    return bool(prof.bump <= float(st["tau_abs"]) + float(st["tau_rel"]) * ends)


@pytest.mark.parametrize("tier,case", CASES)
def test_av8_swa_and_sgd_from_swa_share_a_basin(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-8"), av_net(tier, case)
    seeds = _seeds(net, claim, tier, need=("swa", "sgd_from"))
    profs = [_segment(net, ("AV-8", i), net.seeds[i].swa, net.seeds[i].sgd_from, net.seeds[i].swa_buffers,
                      claim) for i in seeds]
    ok = [_no_bump(p, claim) for p in profs]
    fig = plots.segment_profile(_fig(figure_dir, "AV-8", tier, case, "segment"), profs[0].t,
                                profs[0].train, profs[0].test,
                                title=f"AV-8 {case} seed {net.seeds[seeds[0]].seed}: SWA (t=0) → SGD from SWA (t=1)")
    check_claim(request, "AV-8", tier=tier, case=case, data={"successes": ok},
                per_seed={"no_bump": [float(o) for o in ok], "bump": [float(p.bump) for p in profs],
                          "endpoint_max": [float(torch.maximum(p.train[0], p.train[-1])) for p in profs]},
                figures=[fig], tables={"seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av8_control_independent_solutions(request, av_net, tier, case):
    """SWA solutions of two different seeds (independent initialisations) are not expected to share
    a basin: the no-bump rule must not replicate on their segments."""
    claim, net = claim_of("AV-8"), av_net(tier, case)
    seeds = _seeds(net, claim, tier, need=("swa",))
    pairs = list(zip(seeds, seeds[1:] + seeds[:1]))
    profs = [_segment(net, ("AV-8 control", i, j), net.seeds[i].swa, net.seeds[j].swa,
                      net.seeds[i].swa_buffers, claim) for i, j in pairs]
    ok = [_no_bump(p, claim) for p in profs]
    check_control(request, "AV-8", tier=tier, case=f"control: SWA of seed i ↔ SWA of seed i+1 ({case})",
                  data={"successes": ok}, per_seed={"no_bump": [float(o) for o in ok],
                                                    "bump": [float(p.bump) for p in profs]})


def _metrics(net, params, buffers) -> dict:
    """Eval-mode loss and accuracy on the FULL train and test splits (no subset, no augmentation)."""
    tr = evaluate(net.model, net.data.train, params=params, buffers=buffers)
    te = evaluate(net.model, net.data.test, params=params, buffers=buffers)
    return {"train_loss": tr["loss"], "train_acc": tr["acc"], "test_loss": te["loss"], "test_acc": te["acc"]}


def _arm_metrics(net, seeds):
    """(SWA metrics, SGD-from-SWA metrics) per seed, computed once per session."""
    def compute():
        return ([_metrics(net, net.seeds[i].swa, net.seeds[i].swa_buffers) for i in seeds],
                [_metrics(net, net.seeds[i].sgd_from, net.seeds[i].sgd_from_buffers) for i in seeds])
    return net.memo(("AV-9 metrics", tuple(seeds)), compute)


def _authors_selection(net, seed, swa_m) -> dict:
    """The authors' keep-if-it-fits rule on the SGD-from-SWA epochs, reported beside (never decides)."""
    hist = {e: _metrics(net, p, b) for e, (p, b) in seed.sgd_from_checkpoints.items()}
    kept = authors_selection_rule(hist, swa_m)
    return {"seed": seed.seed, "epochs": len(hist), "kept_by_authors_rule": len(kept),
            "kept_epochs": list(kept)}


@pytest.mark.parametrize("tier,case", CASES)
def test_av9_swa_higher_train_lower_test_loss(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-9"), av_net(tier, case)
    seeds = _seeds(net, claim, tier, need=("swa", "sgd_from"))
    swa, sgd = _arm_metrics(net, seeds)
    col = lambda ms, k: [m[k] for m in ms]  # noqa: E731
    authors = [_authors_selection(net, net.seeds[i], m) for i, m in zip(seeds, swa)]
    figs = [plots.paired_seeds(_fig(figure_dir, "AV-9", tier, case, k), col(swa, k), col(sgd, k),
                               ("SWA", "SGD from SWA"), ylabel=k.replace("_", " "),
                               title=f"AV-9 {case}: {k.replace('_', ' ')} per seed (Table 1)")
            for k in ("train_loss", "test_loss")]
    check_claim(request, "AV-9", tier=tier, case=case,
                data={"train_higher": {"a": col(swa, "train_loss"), "b": col(sgd, "train_loss")},
                      "test_lower": {"a": col(swa, "test_loss"), "b": col(sgd, "test_loss")}},
                per_seed={f"{arm}_{k}": col(ms, k) for arm, ms in (("swa", swa), ("sgd_from_swa", sgd))
                          for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
                supporting_data={"accuracy": {
                    "train_acc": {"a": col(sgd, "train_acc"), "b": col(swa, "train_acc")},
                    "test_acc": {"a": col(swa, "test_acc"), "b": col(sgd, "test_acc")}}},
                figures=figs, tables={"authors' selection rule (labelled; not the verdict)": authors,
                        "seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av9_control_arms_swapped(request, av_net, tier, case):
    claim, net = claim_of("AV-9"), av_net(tier, case)
    swa, sgd = _arm_metrics(net, _seeds(net, claim, tier, need=("swa", "sgd_from")))
    data = {"train_higher": {"a": [m["train_loss"] for m in sgd], "b": [m["train_loss"] for m in swa]},
            "test_lower": {"a": [m["test_loss"] for m in sgd], "b": [m["test_loss"] for m in swa]}}
    check_control(request, "AV-9", tier=tier, case=f"control: SGD-from-SWA as 'SWA' ({case})", data=data,
                  per_seed={"train_loss_diff": [a - b for a, b in zip(data["train_higher"]["a"], data["train_higher"]["b"])]})


# ---------------------------------------------------------------- AV-10: SWA on the flat side

def _swa_point(seed, reflect):
    """w_SWA, or (control) w_SWA mirrored through w_SGD: the same distance, on the other side."""
    return dirs.add_scaled(seed.sgd_from, dirs.sub(seed.sgd_from, seed.swa)) if reflect else seed.swa


def _flat_side(net, i, claim, *, family="gauss", reflect=False):
    """The revised AV-10 probe (flat side judged at each line's own minimum), memoised."""
    return net.memo(("AV-10 at minimum", i, family, reflect), lambda: _at_minimum_probe(net, i, claim, family, reflect))


def _at_minimum_probe(net, i, claim, family, reflect):
    st, seed = claim.settings, net.seeds[i]
    return flat_side_at_minimum(net.model, seed.sgd_from, _swa_point(seed, reflect), seed.swa_buffers, net.x_train,
                                net.y_train, generator=stream(seed.seed, "AV-10", family), bn=st["bn"],
                                family=family, **flat_side_settings(st))


def _flat_side_original(net, i, claim, *, family="gauss", reflect=False):
    """The originally registered probe (flat side judged at w_SGD), for the original rule's verdict.
    Same u_rand draws as the revised probe (same generator key)."""
    return net.memo(("AV-10", i, family, reflect), lambda: _original_probe(net, i, claim, family, reflect))


def _original_probe(net, i, claim, family, reflect):
    st, seed = claim.settings, net.seeds[i]
    return flat_side_comparison(net.model, seed.sgd_from, _swa_point(seed, reflect), seed.swa_buffers, net.x_train,
                                net.y_train, generator=stream(seed.seed, "AV-10", family), bn=st["bn"],
                                family=family, **original_flat_side_settings(st))


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


def _av10_figure(path, r, case, seed):
    return plots.flat_side_at_minimum(
        path, r.line_steps, r.line_losses, r.mixed_steps, r.mixed_losses, l_star=float(r.l_star),
        distance=float(r.distance), l_star_dir=r.l_star_dir,
        title=f"AV-10 {case} seed {seed}: w_SGD at 0, w_SWA at {float(r.distance):.2f}, "
              f"line minimum l* = {float(r.l_star):+.2f} ({'at' if bool(r.at_minimum) else 'NOT at'} w_SGD)")


@pytest.mark.parametrize("tier,case", CASES)
def test_av10_swa_is_biased_to_the_flat_side(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-10"), av_net(tier, case)
    seeds = _seeds(net, claim, tier, need=("swa", "sgd_from"))
    fam = claim.settings["u_rand_family"]
    res = [_flat_side(net, i, claim, family=fam) for i in seeds]
    orig = original_flat_side_data([_flat_side_original(net, i, claim, family=fam) for i in seeds], claim.settings)
    data = flat_side_data(res)
    rows = [{"family": f, "n": min(len(seeds), ROBUSTNESS_SEEDS),
             **{k: round(float(np.mean(v["values"])), 4) for k, v in flat_side_data(
                 [_flat_side(net, i, claim, family=f) for i in seeds[:ROBUSTNESS_SEEDS]]).items()}}
            for f in claim.settings["families_reported"] if f != fam]
    fig = _av10_figure(_fig(figure_dir, "AV-10", tier, case, "flat_side"), res[0], case, net.seeds[seeds[0]].seed)
    check_claim(request, "AV-10", tier=tier, case=case, data=data, original_data=orig,
                per_seed=_av10_columns(res, orig), flags=_av10_flags(net, seeds, res), figures=[fig],
                tables={"u_rand families (mean per-seed values, revised probe)": rows,
                        "seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av10_control_reflected_swa(request, av_net, tier, case):
    """w_SWA mirrored through w_SGD: if SWA sat on the flat side, its mirror sits on the sharp one."""
    claim, net = claim_of("AV-10"), av_net(tier, case)
    seeds = _seeds(net, claim, tier, need=("swa", "sgd_from"))
    res = [_flat_side(net, i, claim, family=claim.settings["u_rand_family"], reflect=True) for i in seeds]
    data = flat_side_data(res)
    check_control(request, "AV-10", tier=tier, case=f"control: SWA reflected through w_SGD ({case})",
                  data=data, per_seed={**{k: v["values"] for k, v in data.items()},
                                       "l_star_over_D": [float(r.l_star / r.distance) for r in res],
                                       "at_minimum": [float(r.at_minimum) for r in res]})


# ---------------------------------------------------------------- AV-11: random-ray illusion

def _widths(net, i, claim, tier):
    return net.memo(("AV-11", i), lambda: _width_probe(net, i, claim, tier))


def _width_probe(net, i, claim, tier):
    st, seed = claim.settings, net.seeds[i]
    rays = dirs.sample_directions(seed.swa, st["family"], int(st["n_rays"]), generator=stream(seed.seed, "AV-11"))
    kw = dict(directions=rays, delta_rise=float(st["delta_rise"]), max_dist=float(st["max_dist"]),
              n_points=int(st["ray_points"]), bn=tier_value(st["bn_mode"], tier))
    swa = random_ray_width(net.model, seed.swa, seed.swa_buffers, net.x_train, net.y_train, **kw)
    sgd = random_ray_width(net.model, seed.sgd_from, seed.sgd_from_buffers, net.x_train, net.y_train, **kw)
    return swa, sgd


def _norm_columns(res) -> dict:
    """Descriptive per-seed columns (not the rule): the weight norms of both solutions and the widths
    divided by them. Width is a raw distance, so on BN (scale-invariant) layers the same function at a
    larger norm looks wider (core/tests/test_av_controls.py): a replication may be a norm effect."""
    n_swa, n_sgd = [float(s.weight_norm) for s, _ in res], [float(g.weight_norm) for _, g in res]
    return {"norm_swa": n_swa, "norm_sgd_from_swa": n_sgd, "norm_ratio_swa_over_sgd": [a / b for a, b in zip(n_swa, n_sgd)],
            "rel_width_swa": [float(s.relative_mean_width) for s, _ in res],
            "rel_width_sgd_from_swa": [float(g.relative_mean_width) for _, g in res]}


def _norm_matched(claim, net, seeds, res) -> tuple[list[dict], list[dict]]:
    """The norm-matched row (widths / ‖w‖, paired difference, the same rule: descriptive, never the
    verdict) and the per-seed table behind it."""
    cols = _norm_columns(res)
    ra, rb = cols["rel_width_swa"], cols["rel_width_sgd_from_swa"]
    r = stats.decide(claim.rule, load_registry().alpha_for(claim.id), {"a": ra, "b": rb})
    row = [{"quantity": "width / ||w|| (descriptive, NOT the verdict)", "n": r.n,
            "median_difference_swa_minus_sgd": round(r.estimate, 6), "ci": [round(r.ci[0], 6), round(r.ci[1], 6)],
            "verdict_under_the_same_rule": r.verdict}]
    table = [{"seed": net.seeds[i].seed, "width_swa": round(float(s.mean_width), 4),
              "width_sgd_from_swa": round(float(g.mean_width), 4), "norm_swa": round(float(s.weight_norm), 4),
              "norm_sgd_from_swa": round(float(g.weight_norm), 4),
              "norm_ratio": round(float(s.weight_norm / g.weight_norm), 5),
              "rel_width_swa": round(float(s.relative_mean_width), 6),
              "rel_width_sgd_from_swa": round(float(g.relative_mean_width), 6)} for i, (s, g) in zip(seeds, res)]
    return row, table


@pytest.mark.parametrize("tier,case", CASES)
def test_av11_random_rays_make_swa_look_wider(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-11"), av_net(tier, case)
    seeds = _seeds(net, claim, tier, need=("swa", "sgd_from"))
    res = [_widths(net, i, claim, tier) for i in seeds]
    a, b = [float(s.mean_width) for s, _ in res], [float(g.mean_width) for _, g in res]
    swa0, sgd0 = res[0]
    fig = plots.random_rays(_fig(figure_dir, "AV-11", tier, case, "rays"), swa0.steps, swa0.losses,
                            sgd0.losses, ("SWA", "SGD from SWA"), title=f"AV-11 {case}: random Gaussian rays")
    row, table = _norm_matched(claim, net, seeds, res)
    check_claim(request, "AV-11", tier=tier, case=case, data={"a": a, "b": b},
                per_seed={"width_swa": a, "width_sgd_from_swa": b,
                          "censored_swa": [float(s.censored.double().mean()) for s, _ in res],
                          "censored_sgd": [float(g.censored.double().mean()) for _, g in res],
                          **_norm_columns(res)},
                figures=[fig], tables={"norm-matched widths (descriptive, not the verdict)": row,
                                       "weight norms and relative widths per seed (descriptive)": table,
                                       "seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("tier,case", CASES)
def test_av11_control_arms_swapped(request, av_net, tier, case):
    claim, net = claim_of("AV-11"), av_net(tier, case)
    res = [_widths(net, i, claim, tier) for i in _seeds(net, claim, tier, need=("swa", "sgd_from"))]
    a, b = [float(g.mean_width) for _, g in res], [float(s.mean_width) for s, _ in res]
    check_control(request, "AV-11", tier=tier, case=f"control: SGD-from-SWA as 'SWA' ({case})",
                  data={"a": a, "b": b}, per_seed={"a": a, "b": b})


# ---------------------------------------------------------------- AV-12: early-stable profile

TRANSLATIONS = {"+R/2": 0.5, "-R/2": -0.5}   # control: the final profile read at l + s (units of R)


def _av12_direction(net, i, claim):
    """AV-1's first asymmetric direction at the final SGD solution (largest c if none), scaled by its R,
    so the grid t ∈ [−1, 1] spans [−R, R]; and whether it is asymmetric."""
    surv = net.survey(i, "paper", claim_of("AV-1"))
    asym = torch.nonzero(surv.asymmetric).flatten()
    j = int(asym[0]) if asym.numel() else int(torch.nan_to_num(surv.c, nan=-1).argmax())
    return {k: v[j:j + 1] * float(surv.R[j]) for k, v in surv.directions.items()}, bool(asym.numel())


def _profiles(net, i, claim, tier):
    """Loss along the fixed direction at every checkpoint from from_fraction of training on, and at the
    final SGD solution: (corr [T], epochs, t, profiles [T, s], had_asymmetric_direction, final [s])."""
    return net.memo(("AV-12", i), lambda: _profile_probe(net, i, claim, tier))


def _profile_probe(net, i, claim, tier):
    st, seed = claim.settings, net.seeds[i]
    u, had_asym = _av12_direction(net, i, claim)
    t = torch.linspace(-1, 1, int(st["n_points"]))
    bn = tier_value(st["bn_mode"], tier)
    last = max(seed.checkpoints)
    epochs = [e for e in sorted(seed.checkpoints) if e >= float(st["from_fraction"]) * last]
    final = scan_lines(net.model, seed.sgd, seed.sgd_buffers, u, t, net.x_train, net.y_train, bn=bn)[0]
    # each checkpoint has its own BN buffers, hence one scan per checkpoint
    profs = torch.stack([scan_lines(net.model, *seed.checkpoints[e], u, t, net.x_train, net.y_train,
                                    bn=bn)[0] for e in epochs])
    return profile_correlation(profs, final), epochs, t, profs, had_asym, final


def _translated(net, i, claim, tier):
    """Control profiles: the final solution's loss along the direction read at l ± R/2 (one scan of
    both grids), {label: [s]}."""
    def compute():
        st, seed = claim.settings, net.seeds[i]
        u, _ = _av12_direction(net, i, claim)
        t = torch.linspace(-1, 1, int(st["n_points"]))
        grids = torch.cat([t + s for s in TRANSLATIONS.values()])
        out = scan_lines(net.model, seed.sgd, seed.sgd_buffers, u, grids, net.x_train, net.y_train,
                         bn=tier_value(st["bn_mode"], tier))[0].split(len(t))
        return dict(zip(TRANSLATIONS, out))
    return net.memo(("AV-12 translated", i), compute)


def _changes(claim, res):
    """Descriptive columns (not the rule): per seed, whether every checkpoint's Definition-1 flat side
    equals the final one, the fraction that do, and the largest argmin move (units of R)."""
    r_frac = float(claim_of("AV-1").settings["r_frac"])
    ch = [profile_change(t.double(), profs.double(), final.double(), r_frac=r_frac)
          for _, _, t, profs, _, final in res]
    return ch, {"flat_side_same_all": [float(c.same_flat_side.all()) for c in ch],
                "flat_side_same_fraction": [float(c.same_flat_side.double().mean()) for c in ch],
                "max_argmin_shift_R": [float(c.argmin_shift.max()) for c in ch],
                "final_flat_side": [float(c.final_flat_side) for c in ch]}


@pytest.mark.parametrize("tier,case", CASES)
def test_av12_profile_stabilises_early(request, av_net, figure_dir, tier, case):
    claim, net = claim_of("AV-12"), av_net(tier, case)
    seeds = _seeds(net, claim, tier)
    res = [_profiles(net, i, claim, tier) for i in seeds]
    mins = [float(r[0].min()) for r in res]
    corr0, epochs, t, profs, _, _ = res[0]
    ch, cols = _changes(claim, res)
    fig = plots.flat_side_curves(_fig(figure_dir, "AV-12", tier, case, "profiles"), t, profs,
                                 [f"epoch {e}" for e in epochs],
                                 title=f"AV-12 {case}: loss along a fixed direction from epoch {epochs[0]}")
    check_claim(request, "AV-12", tier=tier, case=case, data={"values": mins},
                per_seed={"min_corr": mins, "had_asymmetric_direction": [float(r[4]) for r in res], **cols},
                figures=[fig], tables={"seed 0 correlation by checkpoint (flat side, argmin move: descriptive)": [
                    {"epoch": e, "corr": round(float(c), 4), "flat_side": int(f), "same_flat_side_as_final": bool(k),
                     "argmin_shift_R": round(float(m), 4)}
                    for e, c, f, k, m in zip(epochs, corr0, ch[0].flat_side, ch[0].same_flat_side, ch[0].argmin_shift)],
                    "seeds": _status_table(net, claim, tier)})


@pytest.mark.parametrize("shift", list(TRANSLATIONS), ids=["plus_R_over_2", "minus_R_over_2"])
@pytest.mark.parametrize("tier,case", CASES)
def test_av12_control_translated_valley(request, av_net, tier, case, shift):
    """Every checkpoint profile replaced by the final one read at l + s, s = +R/2 or −R/2, as two
    separate controls (the registered ±R/2 control failed only through its +R/2 half on a
    Definition-1 valley: core/tests/test_probe_audit.py). Each must not come out replicated."""
    claim, net = claim_of("AV-12"), av_net(tier, case)
    seeds = _seeds(net, claim, tier)
    corr = [float(profile_correlation(_translated(net, i, claim, tier)[shift][None], _profiles(net, i, claim, tier)[5])[0])
            for i in seeds]
    check_control(request, "AV-12", tier=tier, case=f"control: valley translated by {shift} ({case})",
                  data={"values": corr}, per_seed={"min_corr": corr})


@pytest.mark.parametrize("tier,case", CASES)
def test_av12_control_mirrored_profile(request, av_net, tier, case):
    """Every checkpoint profile replaced by the final one mirrored (l -> −l: the flat side flipped, as
    AV-3's control), on the seeds the claim is decided on. Where the fixed direction is not
    Definition-1 asymmetric (flagged) the mirror still flips its flatter side unless the profile is
    exactly even (`mirror_flips_flat_side`); a correlation that cannot tell the mirror from the final
    profile says little about the asymmetry being stable."""
    claim, net = claim_of("AV-12"), av_net(tier, case)
    res = [_profiles(net, i, claim, tier) for i in _seeds(net, claim, tier)]
    corr = [float(profile_correlation(r[5].flip(-1)[None], r[5])[0]) for r in res]
    r_frac = float(claim_of("AV-1").settings["r_frac"])
    flips = [float(~profile_change(r[2].double(), r[5].flip(-1)[None].double(), r[5].double(),
                                   r_frac=r_frac).same_flat_side[0]) for r in res]
    check_control(request, "AV-12", tier=tier, case=f"control: mirrored final profile ({case})",
                  data={"values": corr}, per_seed={"min_corr": corr, "mirror_flips_flat_side": flips,
                                                   "had_asymmetric_direction": [float(r[4]) for r in res]})
