"""Oracle tests of core/toys/wedge.py (Fort & Jastrzebski 2019 n-wedge surrogate): closed-form values,
finite differences, hand counts, and the wedge properties the connectors probe (d_lim = D − n,
connector centres pinned on every wedge). The probes themselves: core/tests/test_connectors.py."""
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
    with pytest.raises(ValueError, match="n=7"):
        W.wedge_grad(torch.zeros(5, dtype=F64), 7)


# ---------------------------------------------------------------- subspaces: d_lim = D − n (LS-1)
def test_subspace_with_d_equal_D_minus_n_reaches_zero_on_a_hand_case():
    P0 = _t(1.0, 2.0, 0.3, 0.4)[None]               # D = 4, n = 2: nearest wedge pins coords 3, 4
    M = torch.eye(4, dtype=F64)[None, 2:]           # d = 2 = D − n: theta = (−0.3, −0.4) solves it
    P = C.minimize_in_subspace(partial(W.wedge_loss, n=2), P0, M, C.OptimConfig(steps=1000, lr=0.01))
    assert W.wedge_loss(P, 2).item() < 1e-6
    assert torch.allclose(P[0, :2], P0[0, :2])      # the subspace cannot move coords 1, 2


def test_subspace_below_D_minus_n_stops_at_the_hand_minimum():
    P0 = _t(1.0, 2.0, 0.3, 0.4)[None]
    M = torch.eye(4, dtype=F64)[None, 2:3]          # d = 1: only coord 3 moves; min loss = |0.4|
    P = C.minimize_in_subspace(partial(W.wedge_loss, n=2), P0, M, C.OptimConfig(steps=1000, lr=0.01))
    assert W.wedge_loss(P, 2).item() == pytest.approx(0.4, abs=1e-6)


# ---------------------------------------------------------------- m-connectors on wedges (LS-4)
def test_segments_objective_pins_the_centre_on_every_wedge():
    """D = 6, n = 4: optima (1, 2, 3, 4, 0, 0) and (0, 0, 3, 4, 1, 2) pin {5, 6} and {1, 2}. A zero-loss
    1-connector needs a centre on both wedges; (0, 0, 3, 4, 0, 0) is one and lies on the centre's plane
    (its offset from the barycentre (−.5, −1, 0, 0, −.5, −1) is orthogonal to o1 − o0): 4 pinned
    coordinates, the union of the short sets. The centre's own loss pins only the barycentre's two
    smallest coordinates (1 and 5: a third wedge), so the segments to the optima keep a barrier."""
    opt = _t(1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 1.0, 2.0).reshape(1, 2, 6)
    L, cfg = partial(W.wedge_loss, n=4), C.OptimConfig(steps=1000)
    con = C.build_connector(L, opt, objective=C.segments_objective(L, 11), config=cfg, points_per_segment=11)
    assert W.pinned_count(con.centre, 1e-3).item() == 4
    assert torch.allclose(con.centre, _t(0.0, 0.0, 3.0, 4.0, 0.0, 0.0)[None], atol=1e-3)
    assert con.barriers.abs().max().item() < 1e-3
    own = C.build_connector(L, opt, objective=C.centre_objective(L), config=cfg, points_per_segment=11)
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


