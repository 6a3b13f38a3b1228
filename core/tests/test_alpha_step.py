"""The rescaled SGD step along e₁ (core/landscape/alpha_step.py, registry SD-3).

Oracle: a quadratic L(θ) = ½(θ − c)ᵀA(θ − c) + L0 with A = Q diag(λ) Qᵀ built from known eigenpairs, and
mini-batch gradients replaced by known vectors g_m. With u₁ = ⟨θ − c, e₁⟩ (so g₁ = λ₁u₁) and
g̃ = ⟨g_m, e₁⟩ the step moves u₁ to u₁ − αηg̃ and leaves the other coordinates alone, so exactly
    r(α) = ½λ₁[(u₁ − αηg̃)² − u₁²] / L(θ) = αηg̃(½αηλ₁g̃ − λ₁u₁) / L(θ).
Controls (positive: the step overshoots by construction; negative: it is too small; and landscapes
arranged to look true) go through the registry's own SD-3 rule at the planned n = 10 seeds.
"""
import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from core import stats
from core.hessian import ParamLayout, per_row_loss
from core.landscape.alpha_step import (AlphaStep, AlphaStepConfig, along_e1, alpha_step, minibatch_gradients,
                                       minibatch_rows, network_loss, pick_checkpoints, point_losses, project,
                                       relative_changes, seed_mean, step_points)
from core.registry import load_registry

ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0)  # SD-3's alphas_reported; the rule reads 0.5, 2, 4 of them
D, M, CKPTS, SEEDS = 6, 10, 5, 10


# ---------------------------------------------------------------- a quadratic with known eigenpairs
def _quadratic(lam1: float, seed: int, scale: float = 1.0, rest=(0.6, 0.3, 0.1, 0.05, 0.01)):
    """(A, e₁, c, L0): eigenvalues scale·(lam1/1, rest…·lam1) on a seeded rotation; L0 = scale."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64)).Q
    lam = scale * lam1 * torch.tensor((1.0, *rest), dtype=torch.float64)
    return Q @ torch.diag(lam) @ Q.T, Q[:, 0], torch.randn(D, generator=g, dtype=torch.float64), scale


def _loss(A, c, L0):
    return lambda p: 0.5 * (p["w"] - c) @ A @ (p["w"] - c) + L0


def _step(A, e1, c, L0, theta, grads, lr, proj=project) -> AlphaStep:
    """The probe at θ with known mini-batch gradients grads [M, D] (no network); `proj` makes g̃₁."""
    g1 = proj({"w": grads}, {"w": e1})
    rel, loss0 = relative_changes(_loss(A, c, L0), {"w": theta}, {"w": e1}, g1, AlphaStepConfig(ALPHAS, lr))
    return AlphaStep(rel, g1, loss0)


def _closed_form(A, e1, c, L0, theta, g1, lr):
    lam1, u1 = float(e1 @ A @ e1), float(e1 @ (theta - c))
    a = torch.tensor(ALPHAS, dtype=torch.float64)[None]
    return a * lr * g1[:, None] * (0.5 * a * lr * lam1 * g1[:, None] - lam1 * u1) / float(_loss(A, c, L0)({"w": theta}))


def _seed(rho, seed, *, scale=1.0, u1=1.0, noise=0.1, ortho=0.0, floor=False, proj=project):
    """One synthetic seed: CKPTS checkpoints θ = c + u·e₁ + (coordinates ⟂ e₁), u ~ u1·U(0.5, 1.5) (u = 0
    on the `floor`), each with M mini-batch gradients ∇L(θ) + noise·σ₀·z·e₁ (z ~ N(0, 1); σ₀ = |g₁| = λ₁u,
    or λ₁·u1 on the floor, so σ²/g₁² = noise²) + ortho·|g₁|·p (p a fixed unit vector ⟂ e₁ along which
    θ − c is 0, so ∇L has no p part of its own); η = rho/λ₁; A and L0 scaled by `scale`."""
    A, e1, c, L0 = _quadratic(1.0, 1000 + seed, scale)
    lam1, g = float(e1 @ A @ e1), torch.Generator().manual_seed(seed)
    lr, out = rho / lam1, []
    basis = torch.linalg.qr(torch.stack([e1, torch.ones(D, dtype=torch.float64)], 1)).Q
    perp = basis[:, 1]
    for _ in range(CKPTS):
        u = 0.0 if floor else u1 * float(0.5 + torch.rand(1, generator=g, dtype=torch.float64))
        r = 0.3 * torch.randn(D, generator=g, dtype=torch.float64)
        theta = c + u * e1 + r - basis @ (basis.T @ r)  # e₁ coordinate exactly u, p coordinate 0
        sigma = lam1 * (u1 if floor else u)
        grads = A @ (theta - c) + (noise * sigma * torch.randn(M, 1, generator=g, dtype=torch.float64)) * e1
        out.append(_step(A, e1, c, L0, theta, grads + ortho * lam1 * u * perp, lr, proj))
    return out


def _verdict(seeds: list[list[AlphaStep]], eta_kappa: float | None = None) -> str:
    """The registry's SD-3 rule and α_i on the per-seed means (parts named alpha_<α>, '.' -> '_'): with
    `eta_kappa` (every seed's η·κ₁; these quadratics have κ₁ = λ₁, so η·κ₁ = ρ) the revised rule with
    its curvature part, without it the original three-part rule (the loss-change statistic alone)."""
    reg = load_registry()
    claim = reg["SD-3"]
    means = [seed_mean(s)[0] for s in seeds]
    data = {f"alpha_{a:g}".replace(".", "_"): {"values": [float(m[ALPHAS.index(a)]) for m in means]}
            for a in claim.setting("alphas")}
    if eta_kappa is None:
        return stats.decide(claim.original_rule, reg.alpha_for("SD-3"), data).verdict
    data["curvature_too_large"] = {"values": [eta_kappa] * len(seeds)}
    return stats.decide(claim.rule, reg.alpha_for("SD-3"), data).verdict


def _col(steps, a):
    return seed_mean(steps)[0][ALPHAS.index(a)]


# ---------------------------------------------------------------- oracle
@pytest.mark.parametrize("lam1,lr", [(1.0, 1.5), (30.0, 0.01), (0.2, 4.0)])
def test_relative_change_equals_the_closed_form_on_a_quadratic(lam1, lr):
    A, e1, c, L0 = _quadratic(lam1, 0)
    g = torch.Generator().manual_seed(1)
    theta = c + torch.randn(D, generator=g, dtype=torch.float64)
    grads = torch.randn(M, D, generator=g, dtype=torch.float64) * lam1  # arbitrary known "mini-batch" gradients
    step = _step(A, e1, c, L0, theta, grads, lr)
    torch.testing.assert_close(step.g1, grads @ e1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(step.rel, _closed_form(A, e1, c, L0, theta, step.g1, lr), rtol=1e-6, atol=1e-12)
    assert step.loss0 == pytest.approx(float(_loss(A, c, L0)({"w": theta})), rel=1e-12)
    flipped = _step(A, -e1, c, L0, theta, grads, lr)  # e₁'s sign is arbitrary: g̃₁ flips with it
    torch.testing.assert_close(flipped.rel, step.rel, rtol=1e-12, atol=1e-15)


def test_along_e1_gives_the_slope_and_curvature_on_a_quadratic_and_an_mlp():
    A, e1, c, L0 = _quadratic(3.0, 2)
    theta = c + torch.randn(D, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g1, kappa = along_e1(_loss(A, c, L0), {"w": theta}, {"w": e1})
    assert float(kappa) == pytest.approx(3.0, rel=1e-12) and float(g1) == pytest.approx(3.0 * float(e1 @ (theta - c)), rel=1e-12)
    model, x, y, params, v, _ = _mlp_case()
    layout, f = ParamLayout.of(params), network_loss(model, "cross_entropy")
    flat = lambda t: f(layout.unflatten(t), x.double(), y)  # noqa: E731
    t0, vf = layout.flatten({n: p.double() for n, p in params.items()}), layout.flatten(v)
    g1, kappa = along_e1(lambda p: f(p, x.double(), y), layout.unflatten(t0), v)
    assert float(kappa) == pytest.approx(float(vf @ hessian(flat)(t0) @ vf), rel=1e-9)
    assert float(g1) == pytest.approx(float(torch.func.grad(flat)(t0) @ vf), rel=1e-9)


def test_without_noise_the_change_is_the_one_dimensional_parabola():
    """g̃ = g₁: r(α)·L = ½λ₁u₁²[(1 − αηλ₁)² − 1], so α = 2 raises the loss iff ηλ₁ > 1."""
    A, e1, c, L0 = _quadratic(2.0, 3)
    theta, lam1 = c + 0.7 * e1, float(e1 @ A @ e1)
    for rho in (0.25, 0.9, 1.1, 1.5):
        step = _step(A, e1, c, L0, theta, (A @ (theta - c))[None], rho / lam1)
        a = torch.tensor(ALPHAS, dtype=torch.float64)
        torch.testing.assert_close(step.rel[0] * step.loss0, 0.5 * lam1 * 0.49 * ((1 - a * rho) ** 2 - 1), rtol=1e-9, atol=1e-14)
        assert (step.rel[0, ALPHAS.index(2.0)] > 0) == (rho > 1)


# ---------------------------------------------------------------- positive and negative controls
@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e2])
@pytest.mark.parametrize("rho", [1.2, 1.5, 1.9])
def test_positive_control_an_overshooting_step_replicates_at_every_scale(rho, scale):
    seeds = [_seed(rho, s, scale=scale) for s in range(SEEDS)]
    for steps in seeds:
        assert _col(steps, 2.0) > 0 and _col(steps, 4.0) > 0 and _col(steps, 0.5) < 0
    assert _verdict(seeds) == "replicated" and _verdict(seeds, eta_kappa=rho) == "replicated"


@pytest.mark.parametrize("scale", [1e-2, 1e2])
def test_negative_control_a_too_small_step_does_not_replicate(scale):
    seeds = [_seed(0.25, s, scale=scale) for s in range(SEEDS)]
    assert all(_col(steps, 2.0) < 0 and _col(steps, 0.5) < 0 for steps in seeds)
    assert _verdict(seeds) != "replicated" and _verdict(seeds, eta_kappa=0.25) != "replicated"


def _norm_probe(grads, e1):
    """The defect the next control catches: g̃₁ := ±‖g_S‖, the whole gradient's length (sign of ⟨g_S, e₁⟩)."""
    return grads["w"].norm(dim=1) * project(grads, e1).sign()


def test_looks_true_a_big_gradient_on_a_flat_e1_is_not_a_too_large_step():
    """ηλ₁ = 0.25 far from the floor (u₁ = 100: g₁ and the loss are large) and a gradient mostly
    orthogonal to e₁ (‖g‖ ≈ 8|g₁|): the step along e₁ is big but not too large, and the probe says so;
    a probe stepping by ‖g_S‖ instead of ⟨g_S, e₁⟩ overshoots by 8× and replicates here."""
    seeds = [_seed(0.25, s, u1=100.0, ortho=8.0) for s in range(SEEDS)]
    assert all(_col(steps, 2.0) < 0 for steps in seeds)
    assert _verdict(seeds) != "replicated"
    assert _verdict([_seed(0.25, s, u1=100.0, ortho=8.0, proj=_norm_probe) for s in range(SEEDS)]) == "replicated"


def test_looks_true_at_the_floor_of_the_e1_valley_every_step_raises_and_alpha_half_catches_it():
    """g₁ = 0 (θ on the floor along e₁) with mini-batch noise: α = 2 and 4 raise the loss, as the claim
    says, but so does α = 0.5 — the step is noise, not an overshoot; the α = 0.5 part fails."""
    seeds = [_seed(1.5, s, floor=True, noise=1.0) for s in range(SEEDS)]
    assert all(_col(steps, a) > 0 for steps in seeds for a in (0.5, 2.0, 4.0))
    assert _verdict(seeds) != "replicated"


def test_a_stale_e1_cannot_fake_an_overshoot_only_hide_one():
    """An e₁ from another checkpoint (another Hessian's top vector), or any unit vector v, has curvature
    vᵀAv ≤ λ₁ (Rayleigh), so without noise it cannot make α = 2 raise the loss where ηλ₁ < 1; where
    ηλ₁ > 1 a stale, flatter vector hides the overshoot — why the claim recomputes e₁ at every
    checkpoint and leaves out the ones whose Lanczos residual is above tol."""
    A, e1, c, L0 = _quadratic(1.0, 5)
    lam1, stale = float(e1 @ A @ e1), _quadratic(1.0, 6)[1]  # the top eigenvector of a rotated Hessian
    g = torch.Generator().manual_seed(7)
    theta = c + torch.randn(D, generator=g, dtype=torch.float64)
    grad, i2 = (A @ (theta - c))[None], ALPHAS.index(2.0)
    vs = [stale] + [v / v.norm() for v in torch.randn(20, D, generator=g, dtype=torch.float64)]
    assert all(_step(A, v, c, L0, theta, grad, 0.9 / lam1).rel[0, i2] <= 0 for v in vs)
    assert float(stale @ A @ stale) < lam1 / 1.5  # flatter than e₁ by more than 1.5×
    assert _step(A, e1, c, L0, theta, grad, 1.5 / lam1).rel[0, i2] > 0  # e₁ overshoots at ηλ₁ = 1.5 ...
    assert _step(A, stale, c, L0, theta, grad, 1.5 / lam1).rel[0, i2] < 0  # ... the stale vector hides it


def test_minibatch_noise_alone_can_make_the_sgd_step_too_large():
    """What the statistic is (module docstring): E r(α)·L ∝ ½αηλ₁(1 + σ²/g₁²) − 1. At ηλ₁ = 0.25 with
    σ²/g₁² = 7 (so ηλ₁(1 + σ²/g₁²) = 2) the mini-batch step, as SGD takes it, overshoots: the rule
    replicates although the full-batch step would not — what the constant-Hessian control did on the
    cpu tier, and why the registry's revised rule adds the curvature part η·κ₁ > 1 (2026-12-01)."""
    seeds = [_seed(0.25, s, noise=math.sqrt(7.0)) for s in range(SEEDS)]
    assert _verdict(seeds) == "replicated"  # the original three-part rule is fooled by the noise
    assert _verdict([_seed(0.25, s, noise=0.0) for s in range(SEEDS)]) != "replicated"
    assert _verdict(seeds, eta_kappa=0.25) == "refuted"  # the revised rule's curvature part is not


# ---------------------------------------------------------------- a real MLP: vmapped = looped
def _mlp_case(l2=0.0):
    torch.manual_seed(0)  # only this test's model init; the probe itself draws nothing
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    v = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}
    norm = sum(t.pow(2).sum() for t in v.values()).sqrt()
    return model, x, y, params, {n: t / norm for n, t in v.items()}, minibatch_rows(60, 4, 16, g)


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_vmapped_minibatch_gradients_equal_autograd_per_batch(l2):
    model, x, y, params, _, rows = _mlp_case()
    f = network_loss(model, "cross_entropy", l2)
    theta = {n: p.double() for n, p in params.items()}
    got = minibatch_gradients(f, theta, x.double()[rows], y[rows])
    ref = model.double()
    for m in range(len(rows)):
        ref.zero_grad()
        loss = nn.functional.cross_entropy(ref(x.double()[rows[m]]), y[rows[m]])
        loss = loss + 0.5 * l2 * sum(p.pow(2).sum() for p in ref.parameters())
        loss.backward()
        for n, p in ref.named_parameters():
            torch.testing.assert_close(got[n][m], p.grad, rtol=1e-10, atol=1e-12)


def test_mse_onehot_under_vmap_equals_the_one_hot_formula_and_the_autograd_loop():
    """The control's criterion ½‖out − onehot(y)‖² with batched targets (F.one_hot refuses vmap)."""
    model, x, y, params, _, rows = _mlp_case()
    out = model(x)
    assert torch.equal(per_row_loss(out, y, "mse_onehot"),
                       0.5 * (out - nn.functional.one_hot(y, 3).to(out.dtype)).pow(2).sum())
    theta = {n: p.double() for n, p in params.items()}
    got = minibatch_gradients(network_loss(model, "mse_onehot"), theta, x.double()[rows], y[rows])
    ref = copy.deepcopy(model).double()
    for m in range(len(rows)):
        ref.zero_grad()
        (0.5 * (ref(x.double()[rows[m]]) - nn.functional.one_hot(y[rows[m]], 3)).pow(2).sum() / len(rows[m])).backward()
        for n, p in ref.named_parameters():
            torch.testing.assert_close(got[n][m], p.grad, rtol=1e-10, atol=1e-12)


def test_vmapped_point_losses_equal_a_loop_of_functional_calls():
    model, x, y, params, v, _ = _mlp_case()
    coef = torch.linspace(-0.5, 0.5, 7, dtype=torch.float64)
    theta = {n: p.double() for n, p in params.items()}
    f = network_loss(model, "cross_entropy")
    m64 = model.double()
    for chunk in (None, 3):
        got = point_losses(lambda p: f(p, x.double(), y), step_points(theta, v, coef), chunk)
        loop = [nn.functional.cross_entropy(functional_call(m64, {n: theta[n] - k * v[n] for n in theta}, (x.double(),)), y)
                for k in coef]
        torch.testing.assert_close(got, torch.stack(loop), rtol=1e-12, atol=1e-14)


def test_alpha_step_on_an_mlp_equals_the_explicit_loop_and_leaves_the_model_alone():
    model, x, y, params, e1, rows = _mlp_case()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    out = alpha_step(model, params, e1, x, y, rows, AlphaStepConfig(ALPHAS, 0.1))
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    ref, x64 = copy.deepcopy(model).double(), x.double()
    reset = lambda: ref.load_state_dict({n: p.double() for n, p in params.items()})  # noqa: E731
    L = lambda: nn.functional.cross_entropy(ref(x64), y)  # noqa: E731
    L0 = L()
    L0.backward()  # the full loss's own slope along e₁ (g₁) for the descriptive field
    assert out.g1_full == pytest.approx(float(sum((p.grad * e1[n]).sum() for n, p in ref.named_parameters())), rel=1e-9)
    L0 = L0.detach()
    assert out.loss0 == pytest.approx(float(L0), rel=1e-12)
    for m in range(len(rows)):
        reset()
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x64[rows[m]]), y[rows[m]]).backward()
        g1 = sum((p.grad * e1[n]).sum() for n, p in ref.named_parameters())
        assert out.g1[m] == pytest.approx(float(g1), rel=1e-10, abs=1e-13)
        for k, a in enumerate(ALPHAS):
            with torch.no_grad():
                for n, p in ref.named_parameters():
                    p.copy_(params[n].double() - a * 0.1 * g1 * e1[n])
                assert out.rel[m, k] == pytest.approx(float((L() - L0) / L0), rel=1e-9, abs=1e-13)


# ---------------------------------------------------------------- reduction, picks, batches, validation
def test_seed_mean_leaves_out_unconverged_checkpoints_and_counts_them():
    a = AlphaStep(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.ones(2), torch.tensor(1.0))
    b = AlphaStep(torch.tensor([[5.0, 6.0], [7.0, 8.0]]), torch.ones(2), torch.tensor(1.0))
    mean, left_out = seed_mean([a, None, b])
    torch.testing.assert_close(mean, torch.tensor([4.0, 5.0]))
    assert left_out == 1
    assert seed_mean([None, None]) == (None, 2)  # no evidence: None, never NaN


def test_pick_checkpoints_takes_the_nearest_stored_step_and_counts_coincidences():
    steps = [0, 1, 2, 4, 8, 64, 128, 192, 256, 320, 384]
    assert pick_checkpoints(steps, 64, 384, 5) == ([5, 6, 7, 9, 10], 0)  # 64, 144, 224 (tie: 192), 304, 384
    assert pick_checkpoints(steps, 8, 64, 5) == ([4, 5], 3)  # targets 8, 22, 36, 50, 64 (36: tie -> 8)
    with pytest.raises(ValueError, match="allowed: n >= 2"):
        pick_checkpoints(steps, 500, 384, 5)


def test_minibatch_rows_are_distinct_within_a_batch_and_reproducible():
    rows = minibatch_rows(1000, 10, 128, torch.Generator().manual_seed(777))
    assert rows.shape == (10, 128) and all(len(set(r.tolist())) == 128 for r in rows)
    assert torch.equal(rows, minibatch_rows(1000, 10, 128, torch.Generator().manual_seed(777)))
    with pytest.raises(ValueError, match="allowed: 1..1000"):
        minibatch_rows(1000, 10, 2000, torch.Generator())


def test_bad_inputs_give_one_line_naming_the_value():
    with pytest.raises(ValueError, match="alphas="):
        AlphaStepConfig((0.5, -2.0), 0.1)
    with pytest.raises(ValueError, match="lr="):
        AlphaStepConfig((0.5,), 0.0)
    A, e1, c, L0 = _quadratic(1.0, 0)
    with pytest.raises(ValueError, match="unit vector"):
        _step(A, 2 * e1, c, L0, c + e1, (A @ e1)[None], 0.1)
