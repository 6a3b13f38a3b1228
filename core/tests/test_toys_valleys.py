"""Oracle tests for core.toys.valleys (He et al. Theorems 1, 2) and core.toys.twoparam (App. A)."""
from __future__ import annotations

import math

import pytest
import torch

from core.toys import twoparam as tp
from core.toys.valleys import (
    SGDValleyConfig, ValleyCase, adversarial_perturbation, expected_gain, mc_gain, population_loss, random_cases,
    sign_vectors, simulate_sgd_valley, sine_perturbation, symmetric_control, theorem1_bound, valley_1d,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_d_case(a, b, p, c, r, rbar, dbar, l, xi=0.0, orient=1.0) -> ValleyCase:
    t = lambda v: torch.tensor([v], dtype=F64)  # noqa: E731
    s = lambda v: torch.tensor(v, dtype=F64)  # noqa: E731
    return ValleyCase(a=t(a), b=t(b), p=t(p), c=t(c), orient=t(orient), r=s(r), rbar=s(rbar), dbar=t(dbar),
                      l=t(l), xi=s(xi))


# ---------------------------------------------------------------- Theorem 1
def test_valley_1d_is_c1_with_the_stated_slopes():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=F64, requires_grad=True)
    g = valley_1d(x, torch.tensor(1.0, dtype=F64), torch.tensor(4.0, dtype=F64), torch.tensor(0.5, dtype=F64))
    (grad,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([-4.0, -4.0, 0.0, 1.0, 1.0], dtype=F64))
    torch.testing.assert_close(g.detach(), torch.tensor([7.0, 1.0, 0.0, 0.25, 1.75], dtype=F64))


@pytest.mark.parametrize("orient", [1.0, -1.0])
def test_hand_computed_1d_gain_is_tight_at_the_bound(orient):
    """a=1, b=5, r=0.1, δ̄=0.5, l=0.3: gain = ½·b·l − ½·a·l = 0.6 = (c−1)·l·p/2 with p=1, c=5."""
    case = one_d_case(a=1.0, b=5.0, p=1.0, c=5.0, r=0.1, rbar=1.0, dbar=0.5, l=0.3, orient=orient)
    assert expected_gain(case).item() == pytest.approx(0.6, rel=1e-12)
    assert theorem1_bound(case).item() == pytest.approx(0.6, rel=1e-12)


def test_printed_max_condition_admits_a_counterexample():
    """δ̄ = r = 0.1, l = 0.2 ≤ max{r̄ − δ̄, δ̄ − r} = 0.2 (r̄ = 0.3): gain = r(b − 5a)/4 = −0.05 < bound 0.2."""
    case = one_d_case(a=1.0, b=3.0, p=1.0, c=3.0, r=0.1, rbar=0.3, dbar=0.1, l=0.2)
    assert expected_gain(case).item() == pytest.approx(-0.05, rel=1e-12)
    assert theorem1_bound(case).item() == pytest.approx(0.2, rel=1e-12)


def test_exact_enumeration_matches_monte_carlo():
    cases = random_cases(3, 4, generator=gen(1), xi_frac=0.5)
    pert = sine_perturbation(4, generator=gen(2))
    # per-shift gains, written out from the definition, give the exact mean and the MC standard error
    delta = sign_vectors(4) * cases.dbar[:, None, :]
    w_bias = (cases.l * cases.orient)[:, None, :].expand_as(delta)
    before = population_loss(torch.zeros_like(delta), delta, cases, pert)
    per_shift = before - population_loss(w_bias, delta, cases, pert)
    exact = expected_gain(cases, pert)
    torch.testing.assert_close(exact, per_shift.mean(-1))
    n = 40_000
    est = mc_gain(cases, n, generator=gen(3), perturb=pert)
    se = per_shift.std(-1, correction=0) / math.sqrt(n)
    assert ((est - exact).abs() <= 5 * se + 1e-12).all(), (est, exact, se)


def test_sign_vectors_enumerate_every_shift_once():
    s = sign_vectors(5)
    assert s.shape == (32, 5) and set(s.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(r) for r in s.tolist()}) == 32
    with pytest.raises(ValueError, match="d must be"):
        sign_vectors(0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("xi_frac", [0.0, 0.6])
def test_theorem1_holds_under_the_min_condition(seed, xi_frac):
    for pert in (None, adversarial_perturbation):
        cases = random_cases(200, 5, generator=gen(seed), xi_frac=xi_frac)  # 200·2^5·5 elements: one thread
        gain, bound = expected_gain(cases, pert), theorem1_bound(cases)
        assert (bound > 0).all() and (gain > bound).all()


def test_adversarial_perturbation_costs_exactly_xi():
    cases = random_cases(50, 5, generator=gen(7), xi_frac=0.8)
    diff = expected_gain(cases) - expected_gain(cases, adversarial_perturbation)
    torch.testing.assert_close(diff, cases.xi)


def test_orientation_does_not_change_the_expected_gain():
    from dataclasses import replace
    cases = random_cases(50, 5, generator=gen(8))
    flipped = replace(cases, orient=-cases.orient)
    torch.testing.assert_close(expected_gain(cases), expected_gain(flipped))


def test_symmetric_control_has_no_gain():
    for condition in ("min", "paper"):
        cases = symmetric_control(random_cases(200, 5, generator=gen(9), condition=condition))
        gain = expected_gain(cases)
        assert (gain <= 0).all()
    assert (expected_gain(symmetric_control(random_cases(200, 5, generator=gen(9)))) == 0).all()


def test_random_cases_validate_their_arguments():
    with pytest.raises(ValueError, match="condition.*'max'"):
        random_cases(2, 2, generator=gen(0), condition="max")
    with pytest.raises(ValueError, match="xi_frac.*1.5"):
        random_cases(2, 2, generator=gen(0), xi_frac=1.5)


# ---------------------------------------------------------------- Theorem 2
def test_sgd_average_is_unbiased_on_a_symmetric_valley_and_flat_biased_otherwise():
    cfg = SGDValleyConfig(c=1.0, steps=3000, burn_in=500)
    sym = simulate_sgd_valley(cfg, 300, generator=gen(10)).wbar
    se = sym.std() / math.sqrt(sym.numel())
    assert abs(sym.mean()) < 4 * se and abs(sym.mean()) < 0.02 * cfg.eta * cfg.a_plus
    asym = simulate_sgd_valley(SGDValleyConfig(c=5.0, steps=3000, burn_in=500), 300, generator=gen(11))
    assert asym.wbar.mean() > 50 * asym.wbar.std() / math.sqrt(300)
    # stationarity: E∇L = 0 => P(w ≥ 0) = c/(1+c) and w̄ ≈ η·a₊·(c−1)/2 for this piecewise-linear valley
    assert asym.wbar.mean().item() == pytest.approx(0.01 * 4 / 2, rel=0.05)


def test_sgd_keeps_iterates_for_figures_and_validates():
    res = simulate_sgd_valley(SGDValleyConfig(steps=50, burn_in=10), 4, generator=gen(0), keep=2, chunk=16)
    assert res.iterates.shape == (40, 2)
    torch.testing.assert_close(res.iterates.mean(0), res.wbar[:2])
    with pytest.raises(ValueError, match="burn_in"):
        SGDValleyConfig(steps=10, burn_in=10)


# ---------------------------------------------------------------- App. A two-parameter network
def test_twoparam_draws_reproduce_the_authors_stream():
    draws = tp.draw_seeds([0, 3])
    with torch.random.fork_rng():  # the authors seed the global RNG; fork so we leave it as we found it
        for i, seed in enumerate([0, 3]):
            torch.manual_seed(seed)
            ones = torch.ones(10, 1)
            x = torch.cat([torch.normal(ones, 1), torch.normal(-ones, 1)]).ravel()
            net, _ = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
            d = torch.rand(2)
            torch.testing.assert_close(draws.x[i], x.to(F64))
            torch.testing.assert_close(draws.theta0[i], torch.cat([net.weight.ravel(), net.bias]).detach().to(F64))
            torch.testing.assert_close(draws.directions[i, 0], (d / d.norm()).to(F64))


def test_twoparam_gradient_and_hessian_match_autograd():
    draws = tp.draw_seeds([5, 6])
    theta = draws.theta0.clone().requires_grad_(True)
    loss = tp.bce(theta, draws.x, draws.y)
    (auto,) = torch.autograd.grad(loss.sum(), theta)
    torch.testing.assert_close(tp.bce_grad(draws.theta0, draws.x, draws.y), auto)
    for i in range(2):
        h = torch.autograd.functional.hessian(lambda t: tp.bce(t[None], draws.x[i:i + 1], draws.y[i:i + 1]).sum(),
                                              draws.theta0[i])
        torch.testing.assert_close(tp.bce_hessian(draws.theta0, draws.x)[i], h)
    ref = torch.nn.functional.binary_cross_entropy(torch.sigmoid(draws.theta0[0, 0] * draws.x[0] + draws.theta0[0, 1]),
                                                   draws.y[0])
    torch.testing.assert_close(loss[0].detach(), ref)


def test_twoparam_gd_decreases_the_loss_and_scan_is_batched():
    cfg = tp.AUTHORS
    run = tp.run_twoparam(range(8), cfg)
    assert (run.path.loss.diff(dim=-1) <= 1e-15).all() and (run.path.loss[:, -1] < run.path.loss[:, 0]).all()
    assert run.losses.shape == (8, cfg.n_directions, 2 * cfg.scan_half + 1)
    s, k, j = 3, 7, 4
    point = run.center[s] + run.steps[j] * run.draws.directions[s, k]
    torch.testing.assert_close(run.losses[s, k, j], tp.bce(point[None], run.draws.x[s:s + 1], run.draws.y[s:s + 1])[0])
    torch.testing.assert_close(run.path.theta_swa, run.center)


def test_quadratic_control_is_even_through_its_centre():
    run = tp.run_twoparam(range(4), tp.converged(300, 1.0))
    h = tp.bce_hessian(run.center, run.draws.x)
    q = tp.quadratic_lines(run.center, run.center, h, run.draws.directions, run.steps)
    torch.testing.assert_close(q, q.flip(-1))


def test_authors_float32_loss_agrees_where_it_does_not_saturate():
    draws = tp.draw_seeds([1])
    theta = draws.theta0[:, None, :] + torch.linspace(-1, 1, 5, dtype=F64)[None, :, None]
    exact = tp.bce(theta, draws.x, draws.y, "exact")
    torch.testing.assert_close(tp.bce(theta, draws.x, draws.y, "authors"), exact, rtol=1e-5, atol=1e-6)
