"""Oracle tests of core/connectors.py (Fort & Jastrzebski 2019 §3.3, §4.2–§4.3): projected descent
against torch.optim and closed-form constrained minima, subspace invariants on non-wedge losses,
hand-valued barriers, tunnels and connectors, analytic gradients against autograd, batching ==
looping. The n-wedge (core/toys/wedge.py) serves as one test landscape among others."""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from core import connectors as C
from core.toys import wedge as W

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _t(*x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# ---------------------------------------------------------------- optimiser
def test_adam_matches_torch_adam_and_gd_matches_sgd_on_a_quadratic():
    x0 = torch.randn(4, 3, generator=_gen(2), dtype=F64)
    loss = lambda x: 0.5 * (x * torch.arange(1, 4, dtype=F64)).square().sum(-1)
    for method, make in (("adam", lambda p: torch.optim.Adam([p], lr=0.05, eps=1e-30)),
                         ("gd", lambda p: torch.optim.SGD([p], lr=0.05))):
        ours = C.minimize(loss, x0, C.OptimConfig(method=method, steps=50, lr=0.05, schedule="constant",
                                                  eps=1e-30))
        p = x0.clone().requires_grad_(True)
        opt = make(p)
        for _ in range(50):
            opt.zero_grad()
            loss(p).sum().backward()
            opt.step()
        assert torch.allclose(ours, p.detach(), atol=1e-12), method


def test_cosine_schedule_values_and_bad_config_names_the_value():
    cfg = C.OptimConfig(steps=4, lr=1.0)
    assert [cfg.lr_at(t) for t in range(4)] == pytest.approx([1.0, 0.5 + 0.5 * math.sqrt(0.5), 0.5,
                                                              0.5 - 0.5 * math.sqrt(0.5)])
    with pytest.raises(ValueError, match="method='sgd'"):
        C.OptimConfig(method="sgd")


def test_descend_with_an_analytic_gradient_equals_minimize():
    x0 = torch.randn(4, 3, generator=_gen(15), dtype=F64)
    a = torch.arange(1, 4, dtype=F64)
    cfg = C.OptimConfig(steps=100, lr=0.05)
    ours = C.descend(lambda x: a * a * x, x0, cfg)
    assert torch.allclose(ours, C.minimize(lambda x: 0.5 * (a * x).square().sum(-1), x0, cfg), atol=1e-13)


def _quadratic(D: int, seed: int):
    """½ (x − c)ᵀ H (x − c), H = I + G Gᵀ / D (eigenvalues in [1, ~5]): a random convex quadratic."""
    G = torch.randn(D, D, generator=_gen(seed), dtype=F64)
    H, c = torch.eye(D, dtype=F64) + G @ G.T / D, torch.randn(D, generator=_gen(seed + 1), dtype=F64)
    return H, c, lambda x: 0.5 * torch.einsum("...i,ij,...j->...", x - c, H, x - c)


@pytest.mark.parametrize("method", ["adam", "gd"])
def test_projected_descent_never_leaves_its_affine_subspace_on_a_quadratic(method):
    """D = 50, three rows, each on its own affine set o_b + span(u_bk)^⊥ (K = 10). Every iterate
    (recorded after each re-projection, so with Adam's full-space moments in play) stays on its set
    to 1e-6 relative; GD reaches the constrained minimum, the KKT solution, to 1e-8."""
    D, K, B = 50, 10, 3
    H, c, loss = _quadratic(D, 40)
    o = 3 * torch.randn(B, D, generator=_gen(41), dtype=F64)
    U = C.random_orthonormal(B, K, D, generator=_gen(42))
    iterates, project = [], C.affine_projector(o, U)

    def recording(x):
        iterates.append(project(x))
        return iterates[-1]
    cfg = C.OptimConfig(method=method, steps=400, lr=0.3 if method == "gd" else 0.05, schedule="constant")
    x = C.minimize(loss, project(o + torch.randn(B, D, generator=_gen(43), dtype=F64)), cfg, recording)
    for it in iterates:
        off = torch.einsum("bkD,bD->bk", U, it - o).norm(dim=-1)
        assert (off / (it - o).norm(dim=-1).clamp_min(1.0)).max() < 1e-6
    if method == "gd":   # min ½(x − c)ᵀH(x − c) s.t. U(x − o) = 0:  [H Uᵀ; U 0][x; λ] = [Hc; Uo]
        for b in range(B):
            kkt = torch.cat([torch.cat([H, U[b].T], 1), torch.cat([U[b], torch.zeros(K, K, dtype=F64)], 1)])
            sol = torch.linalg.solve(kkt, torch.cat([H @ c, U[b] @ o[b]]))[:D]
            assert torch.allclose(x[b], sol, atol=1e-8, rtol=0)


# ---------------------------------------------------------------- subspaces (LS-1)
def test_random_bases_and_zero_padding_equal_separate_runs():
    D, g = 8, _gen(3)
    Q = C.random_orthonormal(5, 3, D, generator=g)
    assert torch.allclose(Q @ Q.transpose(1, 2), torch.eye(3, dtype=F64).expand(5, 3, 3), atol=1e-12)
    P0, M, d = C.random_subspaces(D, [2, 4], 3, generator=_gen(4), basis=C.random_gaussian_rows)
    assert M.shape == (6, 4, D) and d.tolist() == [2, 2, 2, 4, 4, 4] and not M[:3, 2:].any()
    L, cfg = partial(W.wedge_loss, n=5), C.OptimConfig(steps=200, lr=0.01)
    batched = C.minimize_in_subspace(L, P0, M, cfg)
    looped = torch.cat([C.minimize_in_subspace(L, P0[i:i + 1], M[i:i + 1, :d[i]], cfg) for i in range(6)])
    assert torch.allclose(batched, looped, atol=1e-12)


# ---------------------------------------------------------------- paths, barriers, tunnels (LS-2)
def test_barrier_of_hand_profiles():
    """max − mean of the endpoints: a bump, a monotone ramp (its top is an endpoint), a flat path."""
    prof = _t(1.0, 2.0, 5.0, 3.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0).reshape(3, 5)
    assert C.barrier(prof).tolist() == [4.5, 2.0, 0.0]
    # the quartic double well (x² − 1)² on the line from −1 to 1: endpoints 0, top 1 at x = 0 (sampled)
    losses = C.polyline_losses(lambda x: (x[..., 0] ** 2 - 1) ** 2, _t(-1.0, 1.0).reshape(1, 2, 1), 21)
    assert losses.shape == (1, 21) and C.barrier(losses).item() == pytest.approx(1.0, abs=1e-15)


def test_barrier_of_the_line_between_two_wedges_hand_value():
    a, b = _t(1.0, 0.0), _t(0.0, 1.0)               # D = 2, n = 1: L(t) = min(1 − t, t) on the line
    losses = C.polyline_losses(partial(W.wedge_loss, n=1), torch.stack([a, b])[None], 41)
    assert losses.shape == (1, 41)
    assert C.barrier(losses).item() == pytest.approx(0.5, abs=1e-15)


def test_tunnel_points_stay_on_their_hyperplanes_and_batching_equals_looping():
    D, n = 10, 6
    L = partial(W.wedge_loss, n=n)
    a, b = W.project_to_wedge(torch.randn(2, 3, D, generator=_gen(5), dtype=F64), n)
    fr, cfg = [0.25, 0.4, 0.6, 0.75], C.OptimConfig(steps=300, lr=0.01)
    tun = C.build_tunnel(L, a, b, fractions=fr, config=cfg, points_per_segment=5)
    u = (b - a) / (b - a).norm(dim=-1, keepdim=True)
    assert torch.einsum("bkD,bD->bk", tun.deviations, u).abs().max() < 1e-10
    assert torch.allclose(tun.nodes[:, 0], a) and torch.allclose(tun.nodes[:, -1], b)
    assert tun.linear_losses.shape == tun.tunnel_losses.shape == (3, 5 * 4 + 1)
    one = C.build_tunnel(L, a[1:2], b[1:2], fractions=fr, config=cfg, points_per_segment=5)
    assert torch.allclose(one.nodes[0], tun.nodes[1], atol=1e-12)
    with pytest.raises(ValueError, match="fractions"):
        C.build_tunnel(L, a, b, fractions=[0.0, 0.5], config=cfg, points_per_segment=5)


def _ring_well(D: int, c: float, seed: int):
    """Smooth L(x) = (y_0² + y_1² − 1)² + c y_1² + ½ Σ_{j>=2} y_j², y = R x (R a random rotation): two
    isolated minima y = (±1, 0, ...), and the unit circle in (y_0, y_1) a valley whose floor rises by
    c y_1². On the hyperplane y_0 = s the minimum is c(1 − s²) − c²/4 (at y_1² = 1 − s² − c/2), so any
    path between the minima crosses y_0 = 0 at loss >= c − c²/4, while the straight line has 1 there."""
    R = C.random_orthonormal(1, D, D, generator=_gen(seed))[0]
    def loss(x):
        y = x @ R.T
        return (y[..., 0] ** 2 + y[..., 1] ** 2 - 1) ** 2 + c * y[..., 1] ** 2 + 0.5 * y[..., 2:].square().sum(-1)
    return R, loss


def test_tunnel_on_a_smooth_double_well_beats_the_linear_path_and_meets_the_hand_bound():
    """Endpoints near the two minima, lifted by δ = 0.1 along y_1 so the line is not the valley's
    symmetry axis (where ∂L/∂y_1 = 0 and the hyperplane points could not move off it). GD, constant
    step: every point descends to its hyperplane's minimum on the y_1 > 0 branch (Adam's first,
    normalised steps can throw a point across to y_1 < 0, a valid but kinked tunnel), and the tunnel's
    top is the t = ½ point, exactly at the bound."""
    D, c, delta = 20, 0.2, 0.1
    R, loss = _ring_well(D, c, seed=50)
    a, b = _t(-1.0, delta, *[0.0] * (D - 2)) @ R, _t(1.0, delta, *[0.0] * (D - 2)) @ R
    fr = [k / 10 for k in range(1, 10)]
    cfg = C.OptimConfig(method="gd", steps=2000, lr=0.05, schedule="constant")
    tun = C.build_tunnel(loss, a[None], b[None], fractions=fr, config=cfg, points_per_segment=11)
    linear, tunnel = C.barrier(tun.linear_losses).item(), C.barrier(tun.tunnel_losses).item()
    floor = c - c * c / 4                             # the hyperplane y_0 = 0 at its best
    ends = 0.5 * (loss(a) + loss(b)).item()
    assert linear == pytest.approx((delta ** 2 - 1) ** 2 + c * delta ** 2 - ends, abs=1e-12)
    assert tunnel == pytest.approx(floor - ends, abs=1e-9) and tunnel < 0.2 * linear
    assert loss(tun.nodes[0, 5]).item() == pytest.approx(floor, abs=1e-9)   # t = ½: the hyperplane's minimum


def test_half_alignment_hand_cosines():
    e = torch.eye(3, dtype=F64)
    dev = torch.stack([e[0], 2 * e[0], e[2], e[1], -e[1] + 1e-3 * e[2]])[None]
    w1, w2, across = C.half_alignment(C.cosine_matrix(dev), [0.2, 0.4, 0.5, 0.6, 0.8])
    assert w1.item() == pytest.approx(1.0) and w2.item() == pytest.approx(-1.0, abs=1e-5)
    assert across.item() == pytest.approx(0.0, abs=1e-12)   # the t = 0.5 point (e_3) is in no half
    with pytest.raises(ValueError, match="each half"):
        C.half_alignment(torch.eye(3, dtype=F64), [0.2, 0.6, 0.8])


# ---------------------------------------------------------------- m-connectors (LS-4)
@pytest.mark.parametrize("objective", ["centre", "segments"])
def test_connector_centre_stays_in_its_affine_subspace_and_batching_equals_looping(objective):
    D, n, m = 12, 8, 3
    L = partial(W.wedge_loss, n=n)
    opt = W.project_to_wedge(torch.randn(2, m + 1, D, generator=_gen(6), dtype=F64), n)
    obj = C.centre_objective(L) if objective == "centre" else C.segments_objective(L, 5)
    cfg = C.OptimConfig(steps=200, lr=0.01)
    con = C.build_connector(L, opt, objective=obj, config=cfg, points_per_segment=5)
    eye = torch.eye(m, dtype=F64).expand(2, m, m)
    assert torch.allclose(con.normals @ con.normals.transpose(1, 2), eye, atol=1e-12)
    assert torch.einsum("bkD,bD->bk", con.normals, con.centre - con.hull_point).abs().max() < 1e-10
    spread = opt - con.hull_point[:, None]          # optima − hull lie in span(normals)
    resid = spread - torch.einsum("bik,bkD->biD", torch.einsum("biD,bkD->bik", spread, con.normals), con.normals)
    assert resid.abs().max() < 1e-10
    assert con.barriers.shape == (2, m + 1) and con.segment_losses.shape == (2, m + 1, 5)
    one = C.build_connector(L, opt[1:], objective=obj, config=cfg, points_per_segment=5)
    assert torch.allclose(one.centre[0], con.centre[1], atol=1e-12)


def test_connector_on_a_quadratic_centre_is_the_constrained_minimum():
    """Centre objective ½(x − c)ᵀH(x − c), D = 30, m = 4 random optima: GD's centre is the KKT minimum on
    hull + span(o_i − o_0)^⊥, and each segment's barrier is max − mean of its end losses."""
    D, m = 30, 4
    H, c, loss = _quadratic(D, 60)
    opt = torch.randn(1, m + 1, D, generator=_gen(61), dtype=F64)
    con = C.build_connector(loss, opt, objective=C.centre_objective(loss), points_per_segment=7,
                            config=C.OptimConfig(method="gd", steps=400, lr=0.3, schedule="constant"))
    U, hull = con.normals[0], con.hull_point[0]
    kkt = torch.cat([torch.cat([H, U.T], 1), torch.cat([U, torch.zeros(m, m, dtype=F64)], 1)])
    sol = torch.linalg.solve(kkt, torch.cat([H @ c, U @ hull]))[:D]
    assert torch.allclose(con.centre[0], sol, atol=1e-8, rtol=0)
    seg = con.segment_losses[0]
    assert torch.allclose(con.barriers[0], seg.amax(-1) - 0.5 * (seg[:, 0] + seg[:, -1]), atol=0, rtol=0)


# ---------------------------------------------------------------- analytic gradients (LS-4 speed path)
def _ragged(D: int, n: int, ms, per: int, seed: int):
    groups = [W.project_to_wedge(torch.randn(per, m + 1, D, generator=_gen(seed + m), dtype=F64), n) for m in ms]
    flat = torch.cat([o.reshape(-1, D) for o in groups])
    owner = torch.arange(per * len(ms)).repeat_interleave(torch.tensor([m + 1 for m in ms for _ in range(per)]))
    return groups, flat, owner


def _autograd_segments(loss, groups, centres, p):
    out, i = [], 0
    for o in groups:
        c = centres[i:i + len(o)].clone().requires_grad_(True)
        out.append(torch.autograd.grad(C.segments_objective(loss, p)(c, o).sum(), c)[0])
        i += len(o)
    return torch.cat(out)


def test_segments_grad_matches_autograd_for_ragged_sets_wedge_and_bowl_support():
    D, n, p = 16, 11, 9
    groups, flat, owner = _ragged(D, n, (1, 2, 4), 3, seed=20)
    Cs = torch.cat([o.mean(1) for o in groups]) + 0.1 * torch.randn(9, D, generator=_gen(13), dtype=F64)
    ours = C.segments_grad(partial(W.wedge_grad, n=n), p, rows=20)(Cs, flat, owner)
    assert torch.allclose(ours, _autograd_segments(partial(W.wedge_loss, n=n), groups, Cs, p), atol=1e-14, rtol=0)
    supp = torch.tensor([3, 7, 8, 12])
    kappa, z = torch.zeros(D, dtype=F64).index_fill_(0, supp, 1.0), torch.randn(D, generator=_gen(14), dtype=F64)
    grad = C.segments_grad(partial(W.bowl_grad, centre=z[supp], curvature=kappa[supp]), p, support=supp)
    auto = _autograd_segments(partial(W.bowl_loss, centre=z, curvature=kappa), groups, Cs, p)
    assert torch.allclose(grad(Cs, flat, owner), auto, atol=1e-14, rtol=0)


def test_segments_grad_of_a_float32_quadratic_matches_autograd():
    """Not float64, not the wedge: the segment weights follow the centres' dtype."""
    D, p = 10, 6
    H, c, _ = _quadratic(D, 70)
    H, c = H.float(), c.float()
    point_grad = lambda x, scratch=None: (x - c) @ H  # H symmetric
    groups = [torch.randn(2, 3, D, generator=_gen(71))]
    owner = torch.arange(2).repeat_interleave(3)
    Cs = groups[0].mean(1) + 0.1 * torch.randn(2, D, generator=_gen(72))
    ours = C.segments_grad(point_grad, p)(Cs, groups[0].reshape(-1, D), owner)
    f32 = lambda x: 0.5 * torch.einsum("...i,ij,...j->...", x - c, H, x - c)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, _autograd_segments(f32, groups, Cs, p), atol=1e-5, rtol=1e-5)


def test_build_connectors_in_one_ragged_batch_equal_build_connector_per_m():
    """Same iterates as one autograd run per m up to rounding for 100 steps (measured 3e-14). Later the
    non-smooth objective amplifies rounding (both runs are exact to it; measured 4e-3 at 300 steps), so
    there only the pinned counts must agree (they do for these seeds)."""
    D, n, p = 12, 8, 5
    L = partial(W.wedge_loss, n=n)
    groups, _, _ = _ragged(D, n, (1, 3), 2, seed=30)
    sg = C.segments_grad(partial(W.wedge_grad, n=n), p)
    for steps in (100, 300):
        cfg = C.OptimConfig(steps=steps, lr=0.01)
        cons = C.build_connectors(groups, loss_fn=L, segment_grad=sg, config=cfg, points_per_segment=p)
        for o, con in zip(groups, cons):
            ref = C.build_connector(L, o, objective=C.segments_objective(L, p), config=cfg, points_per_segment=p)
            assert con.normals.shape == ref.normals.shape and con.barriers.shape == (2, o.shape[1])
            assert torch.equal(W.pinned_count(con.centre, 1e-3), W.pinned_count(ref.centre, 1e-3))
            if steps == 100:
                assert torch.allclose(con.centre, ref.centre, atol=1e-12, rtol=0)
                assert torch.allclose(con.segment_losses, ref.segment_losses, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="build_connectors"):
        C.build_connectors([groups[0][:, :1]], loss_fn=L, segment_grad=sg, config=cfg, points_per_segment=p)


def test_connectors_split_over_processes_equal_one_process_exactly():
    """Rows are independent: sharing the groups out over worker processes changes no bit (a shared
    Scratch once raced between the workers; a pickled Scratch now starts empty)."""
    import pickle
    D, n, pps = 12, 9, 5
    g = torch.Generator().manual_seed(3)
    groups = [torch.randn(2, m + 1, D, generator=g, dtype=torch.float64) for m in (1, 2, 3)]
    cfg = C.OptimConfig(method="adam", lr=0.05, steps=60)
    loss = partial(W.wedge_loss, n=n)
    pg = partial(W.wedge_grad, n=n, scratch=C.Scratch())
    one = C.build_connectors(groups, loss_fn=loss, segment_grad=C.segments_grad(pg, pps), config=cfg,
                             points_per_segment=pps)
    split = C.build_connectors_split(groups, loss_fn=loss, point_grad=pg, support=None, config=cfg,
                                     points_per_segment=pps, processes=2)
    for a, b in zip(one, split):
        assert torch.equal(a.centre, b.centre) and torch.equal(a.segment_losses, b.segment_losses)
    ws = C.Scratch()
    ws.get("x", (3,), torch.float32)
    assert pickle.loads(pickle.dumps(ws))._bufs == {}
    assert C._balanced_shares([6, 1, 5, 2], 2) == [[0, 1], [2, 3]]
