"""Oracle tests of core/toys/wedge.py (Fort & Jastrzebski 2019 n-wedge surrogate): closed-form values,
finite differences, constraint invariants, hand counts, and batching == looping."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from core.toys import wedge as W

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _t(*x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# ---------------------------------------------------------------- the surrogate
def test_loss_is_zero_on_a_wedge_with_zero_gradient():
    P = _t(3.0, -2.0, 0.0, 0.0, 5.0, 0.0).requires_grad_(True)  # n = 3 long coords, 3 pinned
    loss = W.wedge_loss(P, 3)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(P.grad, torch.zeros(6, dtype=F64))  # the 0 subgradient, never nan


def test_loss_hand_value_mask_and_projection():
    P = _t(0.1, -0.2, 5.0, 6.0, -7.0, 0.3)
    assert W.wedge_loss(P, 3).item() == pytest.approx(math.sqrt(0.01 + 0.04 + 0.09), abs=1e-15)
    assert W.wedge_half_sq(P, 3).item() == pytest.approx(0.07, abs=1e-15)
    assert W.wedge_mask(P, 3).tolist() == [True, True, False, False, False, True]
    assert W.project_to_wedge(P, 3).tolist() == [0.0, 0.0, 5.0, 6.0, -7.0, 0.0]
    assert W.wedge_loss(P, 6).item() == 0.0 and W.wedge_loss(P, 0).item() == pytest.approx(P.norm().item())


def test_loss_is_batched_over_leading_dims():
    P = torch.randn(3, 4, 10, generator=_gen(), dtype=F64)
    looped = torch.stack([torch.stack([W.wedge_loss(P[i, j], 7) for j in range(4)]) for i in range(3)])
    assert torch.equal(W.wedge_loss(P, 7), looped)


def test_gradient_matches_finite_differences_away_from_ties():
    P = torch.randn(12, generator=_gen(1), dtype=F64).requires_grad_(True)
    (g,) = torch.autograd.grad(W.wedge_loss(P, 8), P)
    h, fd = 1e-6, torch.empty(12, dtype=F64)
    for j in range(12):
        e = torch.zeros(12, dtype=F64)
        e[j] = h
        fd[j] = (W.wedge_loss(P.detach() + e, 8) - W.wedge_loss(P.detach() - e, 8)) / (2 * h)
    assert torch.allclose(g, fd, atol=1e-8)


def test_bad_n_names_the_value():
    with pytest.raises(ValueError, match="n=7"):
        W.wedge_loss(torch.zeros(5, dtype=F64), 7)
    with pytest.raises(ValueError, match="method='sgd'"):
        W.OptimConfig(method="sgd")


# ---------------------------------------------------------------- optimiser
def test_adam_matches_torch_adam_and_gd_matches_sgd_on_a_quadratic():
    x0 = torch.randn(4, 3, generator=_gen(2), dtype=F64)
    loss = lambda x: 0.5 * (x * torch.arange(1, 4, dtype=F64)).square().sum(-1)  # noqa: E731
    for method, make in (("adam", lambda p: torch.optim.Adam([p], lr=0.05, eps=1e-30)),
                         ("gd", lambda p: torch.optim.SGD([p], lr=0.05))):
        ours = W.minimize(loss, x0, W.OptimConfig(method=method, steps=50, lr=0.05, schedule="constant",
                                                  eps=1e-30))
        p = x0.clone().requires_grad_(True)
        opt = make(p)
        for _ in range(50):
            opt.zero_grad()
            loss(p).sum().backward()
            opt.step()
        assert torch.allclose(ours, p.detach(), atol=1e-12), method


def test_cosine_schedule_values():
    cfg = W.OptimConfig(steps=4, lr=1.0)
    assert [cfg.lr_at(t) for t in range(4)] == pytest.approx([1.0, 0.5 + 0.5 * math.sqrt(0.5), 0.5,
                                                              0.5 - 0.5 * math.sqrt(0.5)])


# ---------------------------------------------------------------- subspaces (LS-1)
def test_subspace_with_d_equal_D_minus_n_reaches_zero_on_a_hand_case():
    P0 = _t(1.0, 2.0, 0.3, 0.4)[None]               # D = 4, n = 2: nearest wedge pins coords 3, 4
    M = torch.eye(4, dtype=F64)[None, 2:]           # d = 2 = D − n: theta = (−0.3, −0.4) solves it
    P = W.minimize_in_subspace(partial(W.wedge_loss, n=2), P0, M, W.OptimConfig(steps=1000, lr=0.01))
    assert W.wedge_loss(P, 2).item() < 1e-6
    assert torch.allclose(P[0, :2], P0[0, :2])      # the subspace cannot move coords 1, 2


def test_subspace_below_D_minus_n_stops_at_the_hand_minimum():
    P0 = _t(1.0, 2.0, 0.3, 0.4)[None]
    M = torch.eye(4, dtype=F64)[None, 2:3]          # d = 1: only coord 3 moves; min loss = |0.4|
    P = W.minimize_in_subspace(partial(W.wedge_loss, n=2), P0, M, W.OptimConfig(steps=1000, lr=0.01))
    assert W.wedge_loss(P, 2).item() == pytest.approx(0.4, abs=1e-6)


def test_random_bases_and_zero_padding_equal_separate_runs():
    D, g = 8, _gen(3)
    Q = W.random_orthonormal(5, 3, D, generator=g)
    assert torch.allclose(Q @ Q.transpose(1, 2), torch.eye(3, dtype=F64).expand(5, 3, 3), atol=1e-12)
    P0, M, d = W.random_subspaces(D, [2, 4], 3, generator=_gen(4), basis=W.random_gaussian_rows)
    assert M.shape == (6, 4, D) and d.tolist() == [2, 2, 2, 4, 4, 4] and not M[:3, 2:].any()
    L, cfg = partial(W.wedge_loss, n=5), W.OptimConfig(steps=200, lr=0.01)
    batched = W.minimize_in_subspace(L, P0, M, cfg)
    looped = torch.cat([W.minimize_in_subspace(L, P0[i:i + 1], M[i:i + 1, :d[i]], cfg) for i in range(6)])
    assert torch.allclose(batched, looped, atol=1e-12)


# ---------------------------------------------------------------- paths, tunnels (LS-2)
def test_barrier_of_the_line_between_two_wedges_hand_value():
    a, b = _t(1.0, 0.0), _t(0.0, 1.0)               # D = 2, n = 1: L(t) = min(1 − t, t) on the line
    losses = W.polyline_losses(partial(W.wedge_loss, n=1), torch.stack([a, b])[None], 41)
    assert losses.shape == (1, 41)
    assert W.barrier(losses).item() == pytest.approx(0.5, abs=1e-15)


def test_tunnel_points_stay_on_their_hyperplanes_and_batching_equals_looping():
    D, n = 10, 6
    L = partial(W.wedge_loss, n=n)
    a, b = W.project_to_wedge(torch.randn(2, 3, D, generator=_gen(5), dtype=F64), n)
    fr, cfg = [0.25, 0.4, 0.6, 0.75], W.OptimConfig(steps=300, lr=0.01)
    tun = W.build_tunnel(L, a, b, fractions=fr, config=cfg, points_per_segment=5)
    u = (b - a) / (b - a).norm(dim=-1, keepdim=True)
    assert torch.einsum("bkD,bD->bk", tun.deviations, u).abs().max() < 1e-10
    assert torch.allclose(tun.nodes[:, 0], a) and torch.allclose(tun.nodes[:, -1], b)
    assert tun.linear_losses.shape == tun.tunnel_losses.shape == (3, 5 * 4 + 1)
    one = W.build_tunnel(L, a[1:2], b[1:2], fractions=fr, config=cfg, points_per_segment=5)
    assert torch.allclose(one.nodes[0], tun.nodes[1], atol=1e-12)


def test_half_alignment_hand_cosines():
    e = torch.eye(3, dtype=F64)
    dev = torch.stack([e[0], 2 * e[0], e[2], e[1], -e[1] + 1e-3 * e[2]])[None]
    w1, w2, across = W.half_alignment(W.cosine_matrix(dev), [0.2, 0.4, 0.5, 0.6, 0.8])
    assert w1.item() == pytest.approx(1.0) and w2.item() == pytest.approx(-1.0, abs=1e-5)
    assert across.item() == pytest.approx(0.0, abs=1e-12)   # the t = 0.5 point (e_3) is in no half
    with pytest.raises(ValueError, match="each half"):
        W.half_alignment(torch.eye(3, dtype=F64), [0.2, 0.6, 0.8])


# ---------------------------------------------------------------- m-connectors (LS-4)
@pytest.mark.parametrize("objective", ["centre", "segments"])
def test_connector_centre_stays_in_its_affine_subspace_and_batching_equals_looping(objective):
    D, n, m = 12, 8, 3
    L = partial(W.wedge_loss, n=n)
    opt = W.project_to_wedge(torch.randn(2, m + 1, D, generator=_gen(6), dtype=F64), n)
    obj = W.centre_objective(L) if objective == "centre" else W.segments_objective(L, 5)
    cfg = W.OptimConfig(steps=200, lr=0.01)
    con = W.build_connector(L, opt, objective=obj, config=cfg, points_per_segment=5)
    eye = torch.eye(m, dtype=F64).expand(2, m, m)
    assert torch.allclose(con.normals @ con.normals.transpose(1, 2), eye, atol=1e-12)
    assert torch.einsum("bkD,bD->bk", con.normals, con.centre - con.hull_point).abs().max() < 1e-10
    spread = opt - con.hull_point[:, None]          # optima − hull lie in span(normals)
    resid = spread - torch.einsum("bik,bkD->biD", torch.einsum("biD,bkD->bik", spread, con.normals), con.normals)
    assert resid.abs().max() < 1e-10
    assert con.barriers.shape == (2, m + 1) and con.segment_losses.shape == (2, m + 1, 5)
    one = W.build_connector(L, opt[1:], objective=obj, config=cfg, points_per_segment=5)
    assert torch.allclose(one.centre[0], con.centre[1], atol=1e-12)


def test_segments_objective_pins_the_centre_on_every_wedge():
    """D = 6, n = 4: optima (1, 2, 3, 4, 0, 0) and (0, 0, 3, 4, 1, 2) pin {5, 6} and {1, 2}. A zero-loss
    1-connector needs a centre on both wedges; (0, 0, 3, 4, 0, 0) is one and lies on the centre's plane
    (its offset from the barycentre (−.5, −1, 0, 0, −.5, −1) is orthogonal to o1 − o0): 4 pinned
    coordinates, the union of the short sets. The centre's own loss pins only the barycentre's two
    smallest coordinates (1 and 5: a third wedge), so the segments to the optima keep a barrier."""
    opt = _t(1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 1.0, 2.0).reshape(1, 2, 6)
    L, cfg = partial(W.wedge_loss, n=4), W.OptimConfig(steps=1000)
    con = W.build_connector(L, opt, objective=W.segments_objective(L, 11), config=cfg, points_per_segment=11)
    assert W.pinned_count(con.centre, 1e-3).item() == 4
    assert torch.allclose(con.centre, _t(0.0, 0.0, 3.0, 4.0, 0.0, 0.0)[None], atol=1e-3)
    assert con.barriers.abs().max().item() < 1e-3
    own = W.build_connector(L, opt, objective=W.centre_objective(L), config=cfg, points_per_segment=11)
    assert (own.centre.abs() < 1e-3).tolist() == [[True, False, False, False, True, False]]
    assert own.barriers.min().item() > 0.1


# ---------------------------------------------------------------- short directions
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # torch.func internals
def test_pinned_and_hessian_counts_on_hand_made_points():
    assert W.pinned_count(_t(0.0, 1e-4, 2.0, -3.0, -5e-4), 1e-3).item() == 3
    fn = partial(W.wedge_half_sq, n=3)
    deep = _t(5.0, 4.0, 3.0, 0.1, 0.2, 0.3)[None]   # one wedge: H = diag(0, 0, 0, 1, 1, 1)
    H = W.smoothed_hessian(fn, deep, sigma=0.0, samples=1, generator=_gen())
    assert torch.equal(H[0], torch.diag(_t(0, 0, 0, 1, 1, 1)))
    assert W.short_direction_count(H, 1.0, 0.5).item() == 3
    # the intersection of C(4, 3) = 4 wedges: each of the 4 zero coords is pinned by 3 of them
    cross = _t(5.0, 5.0, 0.0, 0.0, 0.0, 0.0)[None]
    H = W.smoothed_hessian(fn, cross, sigma=1e-3, samples=400, generator=_gen(7))
    assert torch.allclose(torch.diagonal(H[0]), _t(0, 0, 0.75, 0.75, 0.75, 0.75), atol=0.1)
    assert W.short_direction_count(H, 1.0, 0.5).item() == 4 and W.short_direction_count(H, 1.0, 0.9).item() == 0


# ---------------------------------------------------------------- the well probe (LS-3)
def test_well_probe_on_an_isotropic_bowl_is_exactly_circular():
    D = 7
    bowl = partial(W.bowl_loss, centre=torch.zeros(D, dtype=F64), curvature=torch.ones(D, dtype=F64))
    radii = _t(0.1, 0.5, 2.0)
    rise = W.well_probe(bowl, torch.zeros(3, D, dtype=F64), radii, 20, generator=_gen(8))
    assert rise.shape == (3, 20, 3)
    assert torch.allclose(rise, radii.expand(3, 20, 3), atol=1e-14)
    assert W.coefficient_of_variation(rise).abs().max() < 1e-12


def test_well_probe_on_a_wedge_point_hand_rise():
    """From a point on the wedge, moving a along coordinate directions: a pinned coordinate raises
    L_toy by a, a long one (if a stays above the pinned values) by 0."""
    P0 = _t(3.0, 4.0, 0.0, 0.0)[None]
    L = partial(W.wedge_loss, n=2)
    e = torch.eye(4, dtype=F64)
    rise = torch.stack([L(P0 + a * e) - L(P0) for a in (0.5, 1.0)], -1)
    assert rise.tolist() == [[0.0, 0.0], [0.0, 0.0], [0.5, 1.0], [0.5, 1.0]]


# ---------------------------------------------------------------- analytic gradients (LS-4 speed path)
def _topk_indicator(P: torch.Tensor, k: int) -> torch.Tensor:
    idx = P.abs().topk(k, dim=-1, largest=False).indices
    return torch.zeros_like(P).scatter_(-1, idx, 1.0)


def test_smallest_indicator_is_the_topk_set_including_float32_ties_and_zeros():
    P = torch.randn(500, 30, generator=_gen(9), dtype=F64)
    P[0, :3] = 0.0                                         # zeros: 0/0 in the fast path -> topk
    P[1, 1] = P[1, 0] * (1 + 1e-12)                       # distinct in float64, tied in float32
    P[2, :2] = torch.tensor([1e-3, 1e-3 + 1e-14], dtype=F64).neg()
    P[3] = torch.arange(30, dtype=F64) * 1e-9              # tiny but distinct
    for k in (1, 2, 5, 29):
        ind = W.smallest_indicator(P, k)
        assert ind.dtype == F64 and torch.equal(ind, _topk_indicator(P, k)), k
    assert torch.equal(W.smallest_indicator(P, 0), torch.zeros_like(P))
    assert torch.equal(W.smallest_indicator(P, 30), torch.ones_like(P))
    with pytest.raises(ValueError, match="k=31"):
        W.smallest_indicator(P, 31)


def test_wedge_and_bowl_gradients_match_autograd():
    P = torch.randn(7, 40, 20, generator=_gen(10), dtype=F64)
    P[0, 0] = W.project_to_wedge(P[0, 0], 12)              # L = 0: gradient 0 as autograd's
    x = P.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(W.wedge_loss(x, 12).sum(), x)
    ours = W.wedge_grad(P, 12, rows=37)                    # several chunks, one ragged
    assert torch.allclose(ours, auto, atol=1e-14, rtol=0) and not ours[0, 0].any()
    kappa = torch.rand(20, generator=_gen(11), dtype=F64).masked_fill_(torch.arange(20) < 5, 0.0)
    c = torch.randn(20, generator=_gen(12), dtype=F64)
    (auto,) = torch.autograd.grad(W.bowl_loss(x, centre=c, curvature=kappa).sum(), x)
    assert torch.allclose(W.bowl_grad(P, centre=c, curvature=kappa), auto, atol=1e-14, rtol=0)


def _ragged(D: int, n: int, ms, per: int, seed: int):
    groups = [W.project_to_wedge(torch.randn(per, m + 1, D, generator=_gen(seed + m), dtype=F64), n) for m in ms]
    flat = torch.cat([o.reshape(-1, D) for o in groups])
    owner = torch.arange(per * len(ms)).repeat_interleave(torch.tensor([m + 1 for m in ms for _ in range(per)]))
    return groups, flat, owner


def _autograd_segments(loss, groups, centres, p):
    out, i = [], 0
    for o in groups:
        c = centres[i:i + len(o)].clone().requires_grad_(True)
        out.append(torch.autograd.grad(W.segments_objective(loss, p)(c, o).sum(), c)[0])
        i += len(o)
    return torch.cat(out)


def test_segments_grad_matches_autograd_for_ragged_sets_wedge_and_bowl_support():
    D, n, p = 16, 11, 9
    groups, flat, owner = _ragged(D, n, (1, 2, 4), 3, seed=20)
    C = torch.cat([o.mean(1) for o in groups]) + 0.1 * torch.randn(9, D, generator=_gen(13), dtype=F64)
    ours = W.segments_grad(partial(W.wedge_grad, n=n), p, rows=20)(C, flat, owner)
    assert torch.allclose(ours, _autograd_segments(partial(W.wedge_loss, n=n), groups, C, p), atol=1e-14, rtol=0)
    supp = torch.tensor([3, 7, 8, 12])
    kappa, z = torch.zeros(D, dtype=F64).index_fill_(0, supp, 1.0), torch.randn(D, generator=_gen(14), dtype=F64)
    grad = W.segments_grad(partial(W.bowl_grad, centre=z[supp], curvature=kappa[supp]), p, support=supp)
    auto = _autograd_segments(partial(W.bowl_loss, centre=z, curvature=kappa), groups, C, p)
    assert torch.allclose(grad(C, flat, owner), auto, atol=1e-14, rtol=0)


def test_descend_with_an_analytic_gradient_equals_minimize():
    x0 = torch.randn(4, 3, generator=_gen(15), dtype=F64)
    a = torch.arange(1, 4, dtype=F64)
    cfg = W.OptimConfig(steps=100, lr=0.05)
    ours = W.descend(lambda x: a * a * x, x0, cfg)
    assert torch.allclose(ours, W.minimize(lambda x: 0.5 * (a * x).square().sum(-1), x0, cfg), atol=1e-13)


def test_build_connectors_in_one_ragged_batch_equal_build_connector_per_m():
    """Same iterates as one autograd run per m up to rounding for 100 steps (measured 3e-14). Later the
    non-smooth objective amplifies rounding (both runs are exact to it; measured 4e-3 at 300 steps), so
    there only the pinned counts must agree (they do for these seeds)."""
    D, n, p = 12, 8, 5
    L = partial(W.wedge_loss, n=n)
    groups, _, _ = _ragged(D, n, (1, 3), 2, seed=30)
    sg = W.segments_grad(partial(W.wedge_grad, n=n), p)
    for steps in (100, 300):
        cfg = W.OptimConfig(steps=steps, lr=0.01)
        cons = W.build_connectors(groups, loss_fn=L, segment_grad=sg, config=cfg, points_per_segment=p)
        for o, con in zip(groups, cons):
            ref = W.build_connector(L, o, objective=W.segments_objective(L, p), config=cfg, points_per_segment=p)
            assert con.normals.shape == ref.normals.shape and con.barriers.shape == (2, o.shape[1])
            assert torch.equal(W.pinned_count(con.centre, 1e-3), W.pinned_count(ref.centre, 1e-3))
            if steps == 100:
                assert torch.allclose(con.centre, ref.centre, atol=1e-12, rtol=0)
                assert torch.allclose(con.segment_losses, ref.segment_losses, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="build_connectors"):
        W.build_connectors([groups[0][:, :1]], loss_fn=L, segment_grad=sg, config=cfg, points_per_segment=p)


def test_connectors_split_over_processes_equal_one_process_exactly():
    """Rows are independent: sharing the groups out over worker processes changes no bit (a shared
    Scratch once raced between the workers; a pickled Scratch now starts empty)."""
    import functools
    import pickle
    D, n, pps = 12, 9, 5
    g = torch.Generator().manual_seed(3)
    groups = [torch.randn(2, m + 1, D, generator=g, dtype=torch.float64) for m in (1, 2, 3)]
    cfg = W.OptimConfig(method="adam", lr=0.05, steps=60)
    loss = functools.partial(W.wedge_loss, n=n)
    pg = functools.partial(W.wedge_grad, n=n, scratch=W.Scratch())
    one = W.build_connectors(groups, loss_fn=loss, segment_grad=W.segments_grad(pg, pps), config=cfg,
                             points_per_segment=pps)
    split = W.build_connectors_split(groups, loss_fn=loss, point_grad=pg, support=None, config=cfg,
                                     points_per_segment=pps, processes=2)
    for a, b in zip(one, split):
        assert torch.equal(a.centre, b.centre) and torch.equal(a.segment_losses, b.segment_losses)
    ws = W.Scratch()
    ws.get("x", (3,), torch.float32)
    assert pickle.loads(pickle.dumps(ws))._bufs == {}
    assert W._balanced_shares([6, 1, 5, 2], 2) == [[0, 1], [2, 3]]
