"""Oracles for core/landscape: directions, batched scans (incl. recomputed BN) and the He et al. probes.

Every check compares against something independent: a closed form (quadratic lines of a linear
least-squares model, hand-built asymmetric landscapes), a per-point loop that loads weights into a
copy of the model, or `torch.optim.swa_utils.update_bn` on a deep copy.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from core.landscape import directions as dirs
from core.landscape import probes
from core.landscape.flat_side import flat_side_at_minimum
from core.landscape.scan import scan_lines, scan_lines_loss_acc, scan_points

D64 = torch.float64


# ---------------------------------------------------------------- tiny models and landscapes

def _mlp_bn(seed=0):
    torch.manual_seed(seed)  # test-local: these modules have no generator argument
    m = nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 8), nn.BatchNorm1d(8),
                      nn.Tanh(), nn.Linear(8, 3)).to(D64)
    return _warm_bn(m, torch.randn(64, 6, dtype=D64))


def _cnn_bn(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                      nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).to(D64)
    return _warm_bn(m, torch.randn(32, 1, 8, 8, dtype=D64))


def _warm_bn(m, x):
    """Give BN non-trivial running stats, then eval mode."""
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(x + torch.randn_like(x))
    return m.eval()


def _params(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def _buffers(m):
    return {k: v.detach().clone() for k, v in m.named_buffers()}


class Vec(nn.Module):
    """The parameter vector itself is the output: loss hooks then define any landscape L(w)."""

    def __init__(self, d, init=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d, dtype=D64) if init is None else init.clone())

    def forward(self, x):
        return self.w.expand(x.shape[0], -1)


def _asym(z, a, b):
    """Asymmetric quadratic per coordinate: a·z² for z ≥ 0, b·z² for z < 0."""
    return torch.where(z >= 0, a * z * z, b * z * z)


DUMMY_X, DUMMY_Y = torch.zeros(4, 1, dtype=D64), torch.zeros(4, dtype=D64)


def _loop_reference(model, params, dirs_, steps, x, y, bn, ref_batches):
    """Per-point loop: load weights into a copy, optionally update_bn, evaluate in eval mode."""
    out = torch.zeros(next(iter(dirs_.values())).shape[0], steps.shape[0], dtype=D64)
    for j in range(out.shape[0]):
        for i, s in enumerate(steps):
            mm = copy.deepcopy(model)
            mm.load_state_dict({**mm.state_dict(), **{k: params[k] + s * dirs_[k][j] for k in params}})
            if bn == "recompute":
                update_bn(ref_batches, mm)
            with torch.no_grad():
                out[j, i] = F.cross_entropy(mm.eval()(x), y)
    return out


# ---------------------------------------------------------------- scans

def test_linear_squared_loss_line_is_the_closed_form_quadratic():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(50, 5, generator=g, dtype=D64), torch.randn(50, generator=g, dtype=D64)
    m = nn.Linear(5, 1).to(D64)
    p = _params(m)
    u = dirs.sample_directions(p, "gauss", 3, generator=g)
    steps = torch.linspace(-2, 2, 9, dtype=D64)
    L = scan_lines(m, p, {}, u, steps, X, y, loss=lambda out, t: (out.squeeze(-1) - t) ** 2, chunk=5)
    r = X @ p["weight"][0] + p["bias"] - y  # residual at w   [n]
    a = u["weight"][:, 0] @ X.T + u["bias"]  # change per unit step   [k, n]
    want = (r * r).mean() + 2 * steps * (a * r).mean(-1, keepdim=True) + steps ** 2 * (a * a).mean(-1, keepdim=True)
    torch.testing.assert_close(L, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "one-by-one"])
@pytest.mark.parametrize("bn", ["eval", "recompute"])
@pytest.mark.parametrize("make", [_mlp_bn, _cnn_bn], ids=["mlp-bn1d", "cnn-bn2d"])
def test_vmapped_scan_equals_per_point_loop_and_update_bn(make, bn, vectorize):
    m = make()
    p, b = _params(m), _buffers(m)
    g = torch.Generator().manual_seed(1)
    shape = (40, 6) if make is _mlp_bn else (40, 1, 8, 8)
    x, ref = torch.randn(*shape, generator=g, dtype=D64), torch.randn(30, *shape[1:], generator=g, dtype=D64)
    y = torch.randint(0, 3, (40,), generator=g)
    u = dirs.sample_directions(p, "paper", 3, generator=g)
    steps = torch.linspace(-1.5, 1.5, 5, dtype=D64)
    L = scan_lines(m, p, b, u, steps, x, y, bn=bn, ref_x=ref, chunk=4, vectorize=vectorize)
    torch.testing.assert_close(L, _loop_reference(m, p, u, steps, x, y, bn, [ref]), atol=1e-6, rtol=0)


def test_recompute_in_batches_equals_update_bn_over_the_same_batches():
    m = _mlp_bn(2)
    p, b = _params(m), _buffers(m)
    g = torch.Generator().manual_seed(2)
    x, ref = torch.randn(20, 6, generator=g, dtype=D64), torch.randn(35, 6, generator=g, dtype=D64)
    y = torch.randint(0, 3, (20,), generator=g)
    u = dirs.sample_directions(p, "gauss", 2, generator=g)
    steps = torch.tensor([-1.0, 0.0, 0.5], dtype=D64)
    want = _loop_reference(m, p, u, steps, x, y, "recompute", list(ref.split(10)))
    for vectorize in (True, False):
        L = scan_lines(m, p, b, u, steps, x, y, bn="recompute", ref_x=ref, ref_batch_size=10, batch_size=7,
                       vectorize=vectorize)
        torch.testing.assert_close(L, want, atol=1e-6, rtol=0)


def test_recompute_never_touches_the_model():
    m = _cnn_bn(3).train()  # a training-mode model must stay in training mode
    before = {k: v.clone() for k, v in m.state_dict().items()}
    p, b = _params(m), _buffers(m)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 1, 8, 8, generator=g, dtype=D64), torch.randint(0, 3, (16,), generator=g)
    scan_lines(m, p, b, dirs.sample_directions(p, "gauss", 2, generator=g), torch.linspace(-1, 1, 3, dtype=D64),
               x, y, bn="recompute")
    assert m.training and all(mod.training for mod in m.modules())
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(b[k], after[k]) for k in b) and all(torch.equal(p[k], after[k]) for k in p)


def test_chunking_and_points_api_agree():
    m = _mlp_bn(4)
    p, b = _params(m), _buffers(m)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(25, 6, generator=g, dtype=D64), torch.randint(0, 3, (25,), generator=g)
    u = dirs.sample_directions(p, "gauss-filter", 3, generator=g)
    steps = torch.linspace(-1, 1, 7, dtype=D64)
    a = scan_lines(m, p, b, u, steps, x, y, chunk=1, batch_size=4, vectorize=True)
    c, acc = scan_lines_loss_acc(m, p, b, u, steps, x, y, chunk=8, vectorize=False)
    pts = {k: (p[k] + steps.view(-1, *[1] * p[k].dim()) * u[k][1]) for k in p}
    torch.testing.assert_close(a, c, atol=1e-12, rtol=0)
    torch.testing.assert_close(scan_points(m, pts, b, x, y, chunk=3), a[1], atol=1e-12, rtol=0)
    assert ((acc >= 0) & (acc <= 1)).all() and (acc * 25 - (acc * 25).round()).abs().max() < 1e-9


def test_scan_rejects_bad_inputs_with_named_values():
    m = _mlp_bn()
    p, b = _params(m), _buffers(m)
    u = dirs.sample_directions(p, "gauss", 1, generator=torch.Generator().manual_seed(0))
    x, y, st = torch.randn(5, 6, dtype=D64), torch.zeros(5, dtype=torch.long), torch.zeros(3, dtype=D64)
    with pytest.raises(ValueError, match="bn must be one of"):
        scan_lines(m, p, b, u, st, x, y, bn="train")
    with pytest.raises(ValueError, match="missing"):
        scan_lines(m, p, b, {k: v for k, v in u.items() if k != "0.bias"}, st, x, y)
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        scan_lines(m, p, b, u, st, x, y[:3])
    with pytest.raises(ValueError, match="chunk must be None or an int"):
        scan_lines(m, p, b, u, st, x, y, chunk=0)


# ---------------------------------------------------------------- directions

@pytest.mark.parametrize("family", dirs.FAMILIES)
def test_every_family_is_unit_norm_and_deterministic(family):
    p = _params(_cnn_bn())
    a = dirs.sample_directions(p, family, 4, generator=torch.Generator().manual_seed(7))
    b = dirs.sample_directions(p, family, 4, generator=torch.Generator().manual_seed(7))
    c = dirs.sample_directions(p, family, 4, generator=torch.Generator().manual_seed(8))
    assert set(a) == set(p) and all(a[k].shape == (4, *p[k].shape) for k in p)
    torch.testing.assert_close(dirs.norm(a, batch_dims=1), torch.ones(4, dtype=D64), atol=1e-12, rtol=0)
    assert all(torch.equal(a[k], b[k]) for k in p) and not all(torch.equal(a[k], c[k]) for k in p)


def test_sign_patterns_of_paper_and_sign_flip():
    p = _params(_cnn_bn())
    p["0.bias"][:2] = 0.0  # zero weights count as positive in sign-flip
    paper = dirs.sample_directions(p, "paper", 3, generator=torch.Generator().manual_seed(0))
    flip = dirs.sample_directions(p, "sign-flip", 3, generator=torch.Generator().manual_seed(0))
    for k, w in p.items():
        assert (paper[k] >= 0).all()
        assert (flip[k] * w <= 0).all() and (flip[k][:, w == 0] <= 0).all()
        torch.testing.assert_close(flip[k].abs(), paper[k])  # same magnitudes, same generator


def test_gauss_filter_rows_carry_the_weight_row_norm_ratios():
    p = _params(_cnn_bn())
    p["1.bias"] = torch.linspace(-0.5, 0.5, 4, dtype=D64)  # BN β starts at 0; a zero filter gets a zero direction
    p["4.bias"] = torch.zeros(4, dtype=D64)
    u = dirs.sample_directions(p, "gauss-filter", 2, generator=torch.Generator().manual_seed(5))
    assert (u.pop("4.bias") == 0).all()
    del p["4.bias"]
    ratios = []
    for k, w in p.items():
        if w.dim() >= 2:
            ratios.append(u[k].flatten(2).norm(dim=-1) / w.flatten(1).norm(dim=-1))  # [2, filters]
        else:
            ratios.append((u[k].norm(dim=-1) / w.norm()).unsqueeze(-1))  # 1-D params: one filter
    r = torch.cat(ratios, dim=-1)
    torch.testing.assert_close(r, r[:, :1].expand_as(r), atol=1e-12, rtol=1e-9)


def test_unknown_family_and_vector_helpers():
    p = _params(_mlp_bn())
    with pytest.raises(ValueError, match="known: paper, gauss, gauss-filter, sign-flip"):
        dirs.sample_directions(p, "rademacher", 2, generator=torch.Generator())
    u = dirs.sample_directions(p, "gauss", 3, generator=torch.Generator().manual_seed(1))
    flat = dirs.flatten(u, batch_dims=1)
    assert all(torch.equal(dirs.unflatten(flat, p)[k], u[k]) for k in p)
    u0 = dirs.index(u, 0)
    perp = dirs.orthogonal_component(u, u0, batch_dims=1)
    torch.testing.assert_close(dirs.dot(perp, u0, batch_dims=1), torch.zeros(3, dtype=D64), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- probes

def test_shift_gap_recovers_a_known_shift():
    steps = torch.linspace(-3, 3, 121, dtype=D64)  # h = 0.05
    f = lambda l: _asym(l, 0.2, 3.0) + 0.1 * torch.sin(3 * l)
    train = torch.stack([f(steps), 2 * f(steps)])
    test = torch.stack([f(steps - 0.4), 2 * f(steps + 0.25)]) + torch.tensor([[0.7], [1.3]], dtype=D64)
    kw = dict(rescales=torch.logspace(-0.6, 0.6, 41, dtype=D64), overlap_frac=0.1)
    res = probes.shift_gap(steps, train, test, deltas=torch.arange(-20, 21, dtype=D64) * 0.05, inner=1.5, **kw)
    torch.testing.assert_close(res.delta_star, torch.tensor([0.4, -0.25], dtype=D64), atol=1e-9, rtol=0)
    assert (res.xi_star < 1e-9).all() and (res.xi0 > 0.1).all() and (res.log_ratio < -10).all()
    assert (res.original_log_ratio < -10).all() and res.overlaps.all() and not res.flagged.any()
    assert (res.xi_rescaled <= res.xi0 + 1e-12).all()  # a = 1 is on the rescale grid: ξ_a* ≤ ξ_0
    with pytest.raises(ValueError, match="leaves the grid"):
        probes.shift_gap(steps, train, test, deltas=torch.tensor([0.0, 2.0]), inner=1.5, **kw)
    with pytest.raises(ValueError, match="rescales"):
        probes.shift_gap(steps, train, test, deltas=torch.tensor([0.0]), inner=1.5, rescales=torch.tensor([-1.0]),
                         overlap_frac=0.1)
    with pytest.raises(ValueError, match="overlap_frac"):
        probes.shift_gap(steps, train, test, deltas=torch.tensor([0.0]), inner=1.5, rescales=kw["rescales"],
                         overlap_frac=0.0)


def test_shift_gap_rescaling_oracle():
    """test = a₀·(train − min) + offset with a₀ on the rescale grid: ξ_a* = 0 at a = 1/a₀, and a shift
    cannot beat it (value floored at rounding level: ratio ≥ 0)."""
    steps = torch.linspace(-3, 3, 121, dtype=D64)
    train = _asym(steps, 0.2, 3.0)
    a = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0], dtype=D64)
    res = probes.shift_gap(steps, train, 2.0 * train + 0.4, deltas=torch.arange(-20, 21, dtype=D64) * 0.05,
                           inner=1.5, rescales=a, overlap_frac=0.1)
    assert float(res.a_star) == 0.5 and float(res.xi_rescaled) < 1e-12 and float(res.log_ratio) > 0


def test_random_ray_width_on_least_squares_is_sqrt_2delta_over_curvature():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(60, 4, generator=g, dtype=D64), torch.randn(60, generator=g, dtype=D64)
    m = nn.Linear(4, 1).to(D64)
    sol = torch.linalg.lstsq(torch.cat([X, torch.ones(60, 1, dtype=D64)], 1), y.unsqueeze(1)).solution[:, 0]
    p = {"weight": sol[:4].view(1, 4), "bias": sol[4:]}
    u = dirs.sample_directions(p, "gauss", 5, generator=g)
    a = u["weight"][:, 0] @ X.T + u["bias"]  # [k, n]
    kappa = 2 * (a * a).mean(-1)  # L(w* + l u) = L(w*) + κ l²/2 at the minimiser
    res = probes.random_ray_width(m, p, {}, X, y, directions=u, delta_rise=0.05, max_dist=3.0, n_points=3001,
                                  loss=lambda out, t: (out.squeeze(-1) - t) ** 2)
    torch.testing.assert_close(res.widths, (2 * 0.05 / kappa).sqrt(), rtol=1e-5, atol=0)
    assert not res.censored.any()


def test_asymmetry_survey_on_a_sign_sensitive_valley():
    """L(w) = Σ_i a·w_i² (w_i ≥ 0) or b·w_i² (w_i < 0) at w = 0: all-positive `paper` directions see
    a·l² / b·l² on the two sides (c ≈ 0.3·b/a > 2, flat side +u, R = sqrt(Δ/b)); `sign-flip` mirrors it."""
    model = Vec(16)
    loss = lambda out, t: _asym(out, 1.0, 9.0).sum(-1)
    kw = dict(k=6, delta_rise=0.09, n_points=41, r_search_max=10.0, r_search_points=40, loss=loss)
    p = _params(model)
    res = probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, family="paper",
                                  generator=torch.Generator().manual_seed(0), **kw)
    assert res.asymmetric.all() and (res.flat_side == 1).all() and not res.no_rise.any()
    torch.testing.assert_close(res.R, torch.full((6,), math.sqrt(0.09 / 9.0), dtype=D64), rtol=0.05, atol=0)
    flip = probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, family="sign-flip",
                                   generator=torch.Generator().manual_seed(0), **kw)
    assert flip.asymmetric.all() and (flip.flat_side == -1).all()
    far = probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, family="paper",
                                  generator=torch.Generator().manual_seed(0), **{**kw, "r_search_max": 0.01})
    assert far.no_rise.all() and not far.asymmetric.any() and far.c.isnan().all()


def test_survey_scale_set_equals_one_survey_per_scale_and_keeps_the_original_rule():
    """One coarse scan and one batched fine scan for all Δ give exactly what a survey per Δ gives; the
    original fields are the Δ = delta_rise survey without the centre guard; a direction's window is its
    smallest asymmetric Δ."""
    model = Vec(16)
    loss = lambda out, t: _asym(out, 1.0, 9.0).sum(-1) + 0.3 * out.square().sum(-1) ** 2
    p = {"w": torch.full((16,), 0.01, dtype=D64)}  # slightly off the minimum: some lines off-centre
    kw = dict(k=6, n_points=41, r_search_max=10.0, r_search_points=40, loss=loss, family="gauss")
    many = probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, generator=torch.Generator().manual_seed(3),
                                   delta_rise=0.09, delta_rise_scales=(0.01, 0.09, 0.5), **kw)
    assert many.deltas.tolist() == [0.01, 0.09, 0.5] and int(many.reference) == 1 and many.in_set.all()
    for q, d in enumerate((0.01, 0.09, 0.5)):
        one = probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, generator=torch.Generator().manual_seed(3),
                                      delta_rise=d, **kw)
        torch.testing.assert_close(many.R_s[q], one.R, rtol=0, atol=0)
        torch.testing.assert_close(many.c_s[q], one.c, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(many.asymmetric_s[q], one.asymmetric)
        if d == 0.09:
            assert torch.equal(many.original_asymmetric, one.original_asymmetric)
            assert torch.equal(one.original_asymmetric, (one.c > 2) & one.is_valley_s[0])
    hit = many.asymmetric_s.any(0)
    assert torch.equal(many.asymmetric, hit)
    first = torch.where(many.asymmetric_s, torch.arange(3).view(-1, 1), 3).amin(0)
    assert torch.equal(many.scale_index, torch.where(hit, first, -1))
    chosen = torch.where(hit, first, 1)
    torch.testing.assert_close(many.R, many.R_s.gather(0, chosen.view(1, -1))[0], rtol=0, atol=0)


def test_survey_scale_set_validation():
    model, p = Vec(4), {"w": torch.zeros(4, dtype=D64)}
    kw = dict(k=2, family="gauss", generator=torch.Generator().manual_seed(0), delta_rise=1.0, r_search_max=5.0,
              loss=lambda out, t: out.square().sum(-1))
    with pytest.raises(ValueError, match="distinct"):
        probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, delta_rise_scales=(0.1, 0.1), **kw)
    with pytest.raises(ValueError, match="delta_rise_scales entry"):
        probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, delta_rise_scales=(0.1, -1.0), **kw)
    with pytest.raises(ValueError, match="at least one scale"):
        probes.asymmetry_survey(model, p, {}, DUMMY_X, DUMMY_Y, delta_rise_scales=(), **kw)


def test_neighbour_asymmetry_keeps_a_separable_asymmetric_axis():
    """L(w) = g(⟨w, e⟩) + ‖w − ⟨w, e⟩e‖²/2: along u = e every perpendicular neighbour sees g + const."""
    d = 12
    e = torch.zeros(d, dtype=D64)
    e[0] = 1.0
    loss = lambda out, t: _asym(out[:, 0], 0.1, 5.0) + 0.5 * out[:, 1:].square().sum(-1)
    model = Vec(d)
    res = probes.neighbour_asymmetry(model, _params(model), {}, {"w": e}, 1.0, DUMMY_X, DUMMY_Y, n_neighbours=20,
                                     generator=torch.Generator().manual_seed(0), n_points=41, loss=loss)
    assert res.ref_flat_side == 1 and res.ref_c > 2 and res.fraction == 1.0
    assert (res.v_norm <= 1.0).all() and (res.c - res.ref_c).abs().max() < 1e-9
    assert res.centred.all() and int(res.n_not_centred) == 0 and (res.l_min.abs() < 1e-12).all()
    assert torch.equal(res.keeps, res.original_keeps) and res.original_fraction == res.fraction


def test_flat_side_comparison_picks_the_flat_side():
    d = 10
    loss = lambda out, t: _asym(out[:, 0], 0.1, 5.0) + 0.5 * out[:, 1:].square().sum(-1)
    model = Vec(d)
    sgd = {"w": torch.zeros(d, dtype=D64)}
    kw = dict(n_random=10, n_points=41, loss=loss)
    for side, sign in (("flat", 1.0), ("sharp", -1.0)):
        swa = {"w": torch.zeros(d, dtype=D64)}
        swa["w"][0] = 0.5 * sign
        res = probes.flat_side_comparison(model, sgd, swa, {}, DUMMY_X, DUMMY_Y,
                                          generator=torch.Generator().manual_seed(1), **kw)
        if side == "flat":
            torch.testing.assert_close(res.log_ratio, torch.tensor(math.log(50.0), dtype=D64))
            assert res.fraction == 1.0
        else:
            assert res.log_ratio < 0 and res.fraction == 0.0


def test_flat_side_at_minimum_exact_on_an_asymmetric_quadratic():
    """L = 0.1·x² (x ≥ 0) or 5·x² (x < 0) along e, ½‖·‖² across: w_SGD at the minimum, w_SWA at +0.5e.
    l* = 0, rises 0.1·D² and 5·D² -> ln 50; every mixed line has its minimum at w_SGD, SWA on its flat side."""
    d = 10
    loss = lambda out, t: _asym(out[:, 0], 0.1, 5.0) + 0.5 * out[:, 1:].square().sum(-1)
    sgd, swa = {"w": torch.zeros(d, dtype=D64)}, {"w": torch.zeros(d, dtype=D64)}
    swa["w"][0] = 0.5
    res = flat_side_at_minimum(Vec(d), sgd, swa, {}, DUMMY_X, DUMMY_Y, n_random=10, loss=loss,
                               generator=torch.Generator().manual_seed(1))
    assert float(res.l_star) == 0.0 and bool(res.at_minimum) and bool(res.rises_ok)
    torch.testing.assert_close(res.rise_swa, torch.tensor(0.1 * 0.25, dtype=D64))
    torch.testing.assert_close(res.log_ratio, torch.tensor(math.log(50.0), dtype=D64))
    assert (res.l_star_dir == 0).all() and res.dir_at_minimum.all() and float(res.fraction) == 1.0
    assert res.line_steps.shape == (201,) and abs(float(res.line_steps[120]) - 0.5) < 1e-12  # λ = 1 is w_SWA
    # the extended search grid: 41 points on ±2D plus ⌈0.25·20/2⌉ = 3 per side
    assert res.mixed_steps.shape == (47,) and res.mixed_losses.shape == (10, 47)


def test_flat_side_at_minimum_recentres_each_line():
    """w_SGD at x = −0.1 in the same valley, w_SWA at +0.5: l* = 0.1 (within a quarter of D = 0.6), the
    rises are taken at ±s = ±0.5 from l*, i.e. from the true minimum: ln 50 again."""
    d = 10
    loss = lambda out, t: _asym(out[:, 0], 0.1, 5.0) + 0.5 * out[:, 1:].square().sum(-1)
    sgd, swa = {"w": torch.zeros(d, dtype=D64)}, {"w": torch.zeros(d, dtype=D64)}
    sgd["w"][0], swa["w"][0] = -0.1, 0.5
    res = flat_side_at_minimum(Vec(d), sgd, swa, {}, DUMMY_X, DUMMY_Y, n_random=6, loss=loss,
                               generator=torch.Generator().manual_seed(2), line_points=241)  # spacing D/48
    assert abs(float(res.l_star) - 0.1) < 1e-12 and bool(res.at_minimum)
    torch.testing.assert_close(res.log_ratio, torch.tensor(math.log(50.0), dtype=D64))


def test_flat_side_at_minimum_rejects_bad_settings():
    d = 4
    sgd, swa = {"w": torch.zeros(d, dtype=D64)}, {"w": torch.ones(d, dtype=D64)}
    kw = dict(n_random=2, generator=torch.Generator().manual_seed(0), loss=lambda out, t: out.square().sum(-1))
    with pytest.raises(ValueError, match="line_range must contain"):
        flat_side_at_minimum(Vec(d), sgd, swa, {}, DUMMY_X, DUMMY_Y, line_range=(-1.0, 3.0), **kw)
    with pytest.raises(ValueError, match="at_minimum_frac"):
        flat_side_at_minimum(Vec(d), sgd, swa, {}, DUMMY_X, DUMMY_Y, at_minimum_frac=1.5, **kw)
    with pytest.raises(ValueError, match="n_points must be an odd"):
        flat_side_at_minimum(Vec(d), sgd, swa, {}, DUMMY_X, DUMMY_Y, n_points=40, **kw)
    with pytest.raises(ValueError, match="w_swa equals w_sgd"):
        flat_side_at_minimum(Vec(d), sgd, sgd, {}, DUMMY_X, DUMMY_Y, **kw)


def test_segment_profile_bump_and_barrier_on_a_double_well():
    model = Vec(1)
    loss = lambda out, t: (out[:, 0] ** 2 - 1) ** 2
    a, b = {"w": torch.tensor([-1.0], dtype=D64)}, {"w": torch.tensor([1.0], dtype=D64)}
    res = probes.segment_profile(model, a, b, {}, DUMMY_X, DUMMY_Y, n_points=41, loss=loss,
                                 x_test=DUMMY_X, y_test=DUMMY_Y)
    torch.testing.assert_close(res.train, ((2 * res.t - 1) ** 2 - 1) ** 2)  # t=0.5 is the top of the wall
    assert abs(float(res.bump) - 1.0) < 1e-12 and abs(float(res.barrier) - 1.0) < 1e-12
    assert res.train_acc is None and res.test_bump is not None


def test_profile_change_flat_side_and_argmin_shift():
    t = torch.linspace(-1, 1, 41, dtype=D64)
    final = _asym(t, 0.2, 3.0)  # flat side +u, minimum at 0
    profs = torch.stack([final, final.flip(0), _asym(t - 0.25, 0.2, 3.0), 2 * final + 1])
    ch = probes.profile_change(t, profs, final)
    assert int(ch.final_flat_side) == 1 and ch.flat_side.tolist() == [1, -1, 1, 1]
    assert ch.same_flat_side.tolist() == [True, False, True, True]
    torch.testing.assert_close(ch.argmin_shift, torch.tensor([0.0, 0.0, 0.25, 0.0], dtype=D64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="last dim"):
        probes.profile_change(t, profs[:, :-1], final)


def test_profile_correlation():
    base = torch.linspace(-1, 1, 11, dtype=D64) ** 2
    prof = torch.stack([base, 3 * base + 2, -base])
    torch.testing.assert_close(probes.profile_correlation(prof, base), torch.tensor([1.0, 1.0, -1.0], dtype=D64))
