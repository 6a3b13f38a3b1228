"""Fort & Jastrzebski 2019 ("Large Scale Structure of Neural Network Loss Landscapes") — toy tier, the
n-wedge surrogate of §3.2 (core/toys/wedge.py; probes in core/connectors.py): claims LS-1 to LS-4.

LS-1 — §3.3 "Optimizing on random low-dimensional hyperplanar cuts": "we could successfully minimize
  the loss, given the d of the hyperplane was > d_lim ... we were able to relate this limiting dimension
  to the dimensionality of the wedges n as d_lim = D − n." Statistic: per random affine subspace
  θM + P0, success iff final L_toy <= success_rel_tol × initial. Threshold: Clopper–Pearson lower bound
  of the success rate > 0.9 for every d >= D − n and of the failure rate > 0.9 for every d <= D − n − 2
  (intersection–union). Replicates: n_subspaces per d. Negative control: an isotropic bowl (one
  minimum point), which no d < D subspace reaches.
LS-2 — §3.3 "Building a low-loss tunnel between 2 optima": "randomly chosen points converged to
  different n-wedges, and therefore the linear path between them went through a region of high loss
  ... we were able to construct a low loss path between the two optima ... We also observed the
  clustering of deviations from the linear path into two halves" (Fig. 3; algorithm §4.2). Statistic:
  per pair, four booleans (linear barrier > tau_high; tunnel barrier <= tau_low_rel × linear barrier;
  mean within-half cosine > cos_in in both halves; mean cross-half |cosine| < cos_cross). Threshold:
  each rate's CP lower bound > 0.5 (intersection–union). Replicates: 100 pairs. Negative control:
  pairs on the same wedge, whose linear path has no wall.
LS-3 — §3.3 "Living on a wedge, probing randomly, and seeing a hole": "The change in loss
  corresponding to the vector length a will very likely be almost independent of the direction v and
  will be increasing." Statistic: per base point, max over radii of the coefficient of variation of
  the rise across directions; min over directions and radii of the rise increments. Threshold: median
  max-CV < 0.1 and median minimum increment > 0 (sign tests; revision 2026-12-01). Replicates:
  n_base_points. Negative control: a strongly anisotropic bowl (curvature 1/j², effective rank ≈ 2.5).
LS-4 — §4.3, Fig. 4 (middle): "the number of short directions in the middle of an m-connector should
  scale with m, which is what we observe ... Note that the same property is exhibited by our toy
  model." Statistic: per replicate, pinned coordinates (|C_i| < zero_tol) at the optimised centre of an
  m-connector, m in m_grid. Threshold: Spearman trend increasing (p < alpha_i) and, for every m, the
  mean count at m + 1 above that at m (one-sided permutation test of the two replicate samples,
  p < alpha_i; revision 2026-12-01, was a point estimate). Replicates: replicates_per_m per m. Negative
  control: a single n-wedge, where every connector centre pins the same D − n coordinates.

Every setting, threshold and count comes from claims/registry.toml (`claim_of(id).settings`); the
generator seeds and the control landscapes are this module's.
"""
from __future__ import annotations

import functools
import os

import pytest
import torch

from core import connectors as C
from core import stats
from core.harness import check_claim, check_control, claim_of
from core.plots import cosine_matrix, count_vs_m, toy_transition, well_profile
from core.toys import wedge as W

pytestmark = pytest.mark.toy

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The batched ops here are small: extra intra-op threads only add synchronisation, which costs
    ~10x on a busy 2-core machine. Restored after each test."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _optim(s, prefix: str = "", schedule: str | None = None) -> C.OptimConfig:
    """Registry optimiser settings (`<prefix>optimizer`, `lr`, `steps`, `lr_schedule`) -> OptimConfig."""
    text = schedule if schedule is not None else s[f"{prefix}lr_schedule"]
    kinds = [k for k in ("cosine", "constant") if text.startswith(k)]
    if len(kinds) != 1:
        raise ValueError(f"lr_schedule {text!r}; known: 'cosine decay to 0 over steps', 'constant'")
    return C.OptimConfig(method=s[f"{prefix}optimizer"], lr=float(s[f"{prefix}lr"]),
                         steps=int(s[f"{prefix}steps"]), schedule=kinds[0])


def _memo(toy_memo, fn, *args):
    """fn(*args) through the session's disk memo (fixtures/toys.py): computed once, kept across sessions
    (keyed by the registry, the toy code and the numerical code path)."""
    return toy_memo((fn.__name__, *args), lambda: fn(*args))


def _floats(x: torch.Tensor) -> list[float]:
    return x.double().flatten().tolist()


# ---------------------------------------------------------------- LS-1: random affine subspaces
def _ls1(landscape: str) -> dict[str, torch.Tensor]:
    """Final/initial loss per subspace; d = D (the registry's positive control) rides along."""
    s = claim_of("LS-1").settings
    D, n, g = s["D"], s["n"], _gen(101)
    dims = sorted(set(s["d_grid"]) | ({D} if landscape == "wedge" else set()))
    P0, M, d = C.random_subspaces(D, dims, s["n_subspaces"], generator=g, basis=C.random_gaussian_rows)
    if landscape == "wedge":
        loss = functools.partial(W.wedge_loss, n=n)
    else:  # one minimum point c per draw: a d < D affine subspace misses it almost surely
        c = torch.randn(P0.shape, generator=g, dtype=F64)
        loss = functools.partial(W.bowl_loss, centre=c, curvature=torch.ones(D, dtype=F64))
    rel = loss(C.minimize_in_subspace(loss, P0, M, _optim(s))) / loss(P0)
    return {"d": d, "rel": rel, "success": rel <= s["success_rel_tol"]}


def _ls1_data(r: dict) -> dict:
    s = claim_of("LS-1").settings
    ok, d = r["success"], r["d"]
    return ({f"success_d{k}": {"successes": ok[d == k].numpy()} for k in s["success_ds"]}
            | {f"failure_d{k}": {"successes": (~ok[d == k]).numpy()} for k in s["failure_ds"]})


def _ls1_table(r: dict, claim) -> list[dict]:
    """One row per d (Clopper–Pearson at the claim's alpha_i, the success parts' bounds)."""
    part = claim.rule["parts"][f"success_d{claim.settings['success_ds'][0]}"]
    rows = []
    for k in claim.settings["d_grid"]:
        ok, rel = r["success"][r["d"] == k], r["rel"][r["d"] == k]
        res = stats.existence(ok.numpy(), alpha=claim.alpha, claimed_above=part["claimed_above"],
                              refuted_below=part["refuted_below"])
        rows.append({"d": k, "subspaces": ok.numel(), "successes": int(ok.sum()), "rate": float(ok.double().mean()),
                     "ci_lo": res.ci[0], "ci_hi": res.ci[1], "median_final_over_initial": float(rel.median()),
                     "max_final_over_initial": float(rel.max())})
    return rows


def _ls1_as_predicted(r: dict, s) -> torch.Tensor:
    """Per subspace of d_grid: is its outcome the one its d alone predicts (success iff d >= D − n)?
    The supporting 'subspace draw matters little' rule pools these (registry LS-1 draw_insensitive)."""
    grid = torch.isin(r["d"], torch.tensor(list(s["d_grid"])))
    return (r["success"] == (r["d"] >= s["D"] - s["n"]))[grid]


def test_ls1_toy(request, toy_memo, figure_dir):
    claim = claim_of("LS-1")
    s, r = claim.settings, _memo(toy_memo, _ls1, "wedge")
    full = r["success"][r["d"] == s["D"]]
    assert bool(full.all()), (f"LS-1 positive control: d = D = {s['D']} succeeded on {int(full.sum())}/"
                              f"{full.numel()} draws; the registered optimiser settings need a revision")
    rows = _ls1_table(r, claim)
    fig = toy_transition(figure_dir / "ls1_toy_transition.png", [x["d"] for x in rows],
                         [x["rate"] for x in rows], [x["ci_lo"] for x in rows], [x["ci_hi"] for x in rows],
                         d_crit=s["D"] - s["n"])
    grid = torch.isin(r["d"], torch.tensor(list(s["d_grid"])))
    check_claim(request, "LS-1", tier="toy", case=f"n-wedge D={s['D']} n={s['n']}", data=_ls1_data(r),
                per_seed={"d": _floats(r["d"][grid]), "success": _floats(r["success"][grid]),
                          "final_over_initial": _floats(r["rel"][grid])},
                figures=[fig], tables={"per_d": rows},
                supporting_data={"draw_insensitive": {"successes": _ls1_as_predicted(r, s).numpy()}})


def test_ls1_toy_negative_control(request, toy_memo):
    r = _memo(toy_memo, _ls1, "bowl")
    check_control(request, "LS-1", tier="toy", case="control: isotropic bowl (one minimum point)",
                  data=_ls1_data(r), per_seed={"d": _floats(r["d"]), "success": _floats(r["success"])})


# ---------------------------------------------------------------- LS-2: tunnels between optima
def _ls2(same_wedge: bool) -> dict:
    """Endpoints, tunnels and the four per-pair booleans."""
    s, s1 = claim_of("LS-2").settings, claim_of("LS-1").settings
    D, n, pairs, g = s["D"], s["n"], claim_of("LS-2").seeds["toy"], _gen(202)
    loss = functools.partial(W.wedge_loss, n=n)
    x0 = torch.randn(pairs, 2, D, generator=g, dtype=F64)
    if same_wedge:  # control: B on A's wedge (A's pinned coordinates zeroed), so the line stays at L = 0
        a = W.project_to_wedge(x0[:, 0], n)
        ends = torch.stack([a, x0[:, 1].masked_fill(W.wedge_mask(a, n), 0.0)], 1)
    else:           # the endpoints use LS-1's optimiser (registry: "endpoints")
        ends = C.minimize(loss, x0, _optim(s1))
        worst = float((loss(ends) / loss(x0)).max())
        assert worst <= s1["success_rel_tol"], f"LS-2 endpoints not converged: final/initial {worst:.3g}"
    fr = torch.arange(1, s["n_segments"], dtype=F64) / s["n_segments"]
    # the registry gives no hyperplane schedule: LS-1's (the optimiser the endpoints use) is assumed
    tun = C.build_tunnel(loss, ends[:, 0], ends[:, 1], fractions=fr,
                         config=_optim(s, "hyperplane_", schedule=s1["lr_schedule"]),
                         points_per_segment=s["n_points_per_segment"])
    lin, tb = C.barrier(tun.linear_losses), C.barrier(tun.tunnel_losses)
    w1, w2, across = C.half_alignment(tun.cos, fr)
    masks = W.wedge_mask(ends, n)
    return {"lin": lin, "tunnel": tb, "w1": w1, "w2": w2, "across": across, "cos": tun.cos.mean(0),
            "different_wedges": (masks[:, 0] != masks[:, 1]).any(-1),
            "data": {"linear_high": {"successes": (lin > s["tau_high"]).numpy()},
                     "tunnel_low": {"successes": (tb <= s["tau_low_rel"] * lin).numpy()},
                     "within_half_aligned": {"successes": ((w1 > s["cos_in"]) & (w2 > s["cos_in"])).numpy()},
                     "cross_half_orthogonal": {"successes": (across < s["cos_cross"]).numpy()}}}


def _ls2_per_seed(r: dict) -> dict:
    return {k: _floats(r[k]) for k in ("lin", "tunnel", "w1", "w2", "across", "different_wedges")}


def test_ls2_toy(request, toy_memo, figure_dir):
    s, r = claim_of("LS-2").settings, _memo(toy_memo, _ls2, False)
    fig = cosine_matrix(figure_dir / "ls2_toy_cosines.png", r["cos"].numpy(),
                        title=f"Tunnel deviations, mean cosine over {r['lin'].numel()} pairs")
    q = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    rows = [{"quantity": k, "q10": v[0], "median": v[1], "q90": v[2]} for k, v in
            (("linear barrier", r["lin"].quantile(q).tolist()), ("tunnel barrier", r["tunnel"].quantile(q).tolist()),
             ("tunnel / linear", (r["tunnel"] / r["lin"]).quantile(q).tolist()),
             ("within-half cos (t<1/2)", r["w1"].quantile(q).tolist()),
             ("within-half cos (t>1/2)", r["w2"].quantile(q).tolist()),
             ("cross-half |cos|", r["across"].quantile(q).tolist()))]
    rows.append({"quantity": "pairs on different wedges", "q10": None,
                 "median": float(r["different_wedges"].double().mean()), "q90": None})
    check_claim(request, "LS-2", tier="toy", case=f"n-wedge D={s['D']} n={s['n']}, {s['n_segments']} segments",
                data=r["data"], per_seed=_ls2_per_seed(r), figures=[fig], tables={"summary": rows})


def test_ls2_toy_negative_control(request, toy_memo):
    r = _memo(toy_memo, _ls2, True)
    check_control(request, "LS-2", tier="toy", case="control: both endpoints on the same wedge",
                  data=r["data"], per_seed=_ls2_per_seed(r))


# ---------------------------------------------------------------- LS-3: the circular well
def _ls3(landscape: str) -> dict:
    s = claim_of("LS-3").settings
    D, n, B, g = s["D"], s["n"], s["n_base_points"], _gen(303)
    if landscape == "wedge":
        loss = functools.partial(W.wedge_loss, n=n)
        base = W.project_to_wedge(torch.randn(B, D, generator=g, dtype=F64), n)  # full-space optima
    else:  # control: curvature 1/j^2, effective rank (Σκ)²/Σκ² ≈ 2.5, so a few directions dominate
        kappa = torch.arange(1, D + 1, dtype=F64) ** -2.0
        loss = functools.partial(W.bowl_loss, centre=torch.zeros(D, dtype=F64), curvature=kappa)
        base = torch.zeros(B, D, dtype=F64)
    P0 = base + s["base_offset"] * W.random_unit((B,), D, generator=g)
    rise = torch.cat([W.well_probe(loss, P0[i:i + 4], s["radii"], s["n_directions"], generator=g)
                      for i in range(0, B, 4)])  # chunks of 4 base points: [4, K, R, D] stays ~50 MB
    cv = W.coefficient_of_variation(rise)
    return {"rise": rise, "max_cv": cv.amax(-1), "min_increment": rise.diff(dim=-1).amin((-1, -2)),
            "data": {"cv_small": {"values": cv.amax(-1).numpy()},
                     "monotone": {"values": rise.diff(dim=-1).amin((-1, -2)).numpy()}}}


def test_ls3_toy(request, toy_memo, figure_dir):
    s, r = claim_of("LS-3").settings, _memo(toy_memo, _ls3, "wedge")
    q = torch.tensor([0.05, 0.95], dtype=F64)
    lo, hi = r["rise"].flatten(0, 1).quantile(q, dim=0)
    fig = well_profile(figure_dir / "ls3_toy_well.png", list(s["radii"]), r["rise"].mean((0, 1)).numpy(),
                       lo.numpy(), hi.numpy(), title="Loss rise around a near-wedge point (5–95% of directions)")
    check_claim(request, "LS-3", tier="toy", case=f"n-wedge D={s['D']} n={s['n']}", data=r["data"],
                per_seed={"max_cv": _floats(r["max_cv"]), "min_increment": _floats(r["min_increment"])},
                figures=[fig])


def test_ls3_toy_negative_control(request, toy_memo):
    r = _memo(toy_memo, _ls3, "bowl")
    check_control(request, "LS-3", tier="toy", case="control: anisotropic bowl (curvature 1/j^2)",
                  data=r["data"], per_seed={"max_cv": _floats(r["max_cv"])})


# ---------------------------------------------------------------- LS-4: short directions vs m
def _ls4(landscape: str) -> dict:
    """All m in one batch with analytic gradients (C.descend, C.build_connectors): the optimisation of
    one autograd run per m (rows are independent; the draws come in m order), equal to it up to
    rounding, which 3000 Adam steps on the non-smooth objective amplify: single replicate counts can
    differ from an autograd run's as they differ between any two exact-to-rounding implementations."""
    s, s1 = claim_of("LS-4").settings, claim_of("LS-1").settings
    D, n, reps, g = s["D"], s["n"], s["replicates_per_m"], _gen(404)
    if landscape == "wedge":
        support, loss = None, functools.partial(W.wedge_loss, n=n)
        grad = point_grad = functools.partial(W.wedge_grad, n=n, scratch=C.Scratch())
    else:  # control: one n-wedge (curvature 1 on D − n random coordinates): no intersections to reach
        support = torch.randperm(D, generator=g)[:D - n]
        pinned, zero = torch.zeros(D, dtype=F64).index_fill_(0, support, 1.0), torch.zeros(D, dtype=F64)
        loss = functools.partial(W.bowl_loss, centre=zero, curvature=pinned)
        grad = functools.partial(W.bowl_grad, centre=zero, curvature=pinned)
        point_grad = functools.partial(W.bowl_grad, centre=zero[support], curvature=pinned[support])
    starts = [torch.randn(reps, m + 1, D, generator=g, dtype=F64) for m in s["m_grid"]]
    optima = C.descend(grad, torch.cat([x.reshape(-1, D) for x in starts]), _optim(s1))
    groups = [o.reshape(x.shape) for o, x in zip(optima.split([x.shape[0] * x.shape[1] for x in starts]), starts)]
    pps = s["n_points_per_segment"]
    cons = C.build_connectors_split(groups, loss_fn=loss, point_grad=point_grad, support=support,
                                    config=_optim(s), points_per_segment=pps, processes=os.cpu_count() or 1)
    counts = torch.cat([W.pinned_count(c.centre, s["zero_tol"]).double() for c in cons])
    ms = torch.tensor(list(s["m_grid"]), dtype=F64).repeat_interleave(reps)
    means = torch.stack([counts[ms == m].mean() for m in s["m_grid"]])
    rank = {"x": ms.numpy(), "y": counts.numpy()}
    steps = {f"step_{a}_{b}": {"a": counts[ms == b].numpy(), "b": counts[ms == a].numpy()}
             for a, b in zip(s["m_grid"], s["m_grid"][1:])}   # independent replicates at m and m + 1
    return {"m": ms, "count": counts, "means": means, "barrier": torch.cat([c.barriers.amax(-1) for c in cons]),
            "data": {"rank": rank, **steps},
            "original": {"rank": rank, "means_increasing": {"values": means.diff().numpy()}}}


def test_ls4_toy(request, toy_memo, figure_dir):
    s, r = claim_of("LS-4").settings, _memo(toy_memo, _ls4, "wedge")
    sd = torch.stack([r["count"][r["m"] == m].std() for m in s["m_grid"]])
    se = sd / s["replicates_per_m"] ** 0.5
    fig = count_vs_m(figure_dir / "ls4_toy_count_vs_m.png", list(s["m_grid"]), r["means"].numpy(),
                     (r["means"] - 2 * se).numpy(), (r["means"] + 2 * se).numpy(),
                     title="Pinned coordinates at the m-connector centre (mean ± 2 se)")
    rows = [{"m": m, "mean_count": float(r["means"][i]), "sd": float(sd[i]),
             "max_segment_barrier": float(r["barrier"][r["m"] == m].max())} for i, m in enumerate(s["m_grid"])]
    check_claim(request, "LS-4", tier="toy", case=f"n-wedge D={s['D']} n={s['n']}", data=r["data"],
                original_data=r["original"],
                per_seed={"m": _floats(r["m"]), "count": _floats(r["count"]),
                          "max_segment_barrier": _floats(r["barrier"])},
                figures=[fig], tables={"per_m": rows})


def test_ls4_toy_negative_control(request, toy_memo):
    r = _memo(toy_memo, _ls4, "single_wedge")
    check_control(request, "LS-4", tier="toy", case="control: a single n-wedge", data=r["data"],
                  per_seed={"m": _floats(r["m"]), "count": _floats(r["count"])})
