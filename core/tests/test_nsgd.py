"""core.nsgd against oracles: torch.optim.SGD at the neutral γ = 1, a hand-written reference of the
authors' update (PROTOCOLS.md: v = m·v − lr·g; θ += v + (γ−1)EEᵀv), exact subspace algebra for γ = 0
and the §3.3 modes, the input errors, and a bit-identical checkpoint resume.

Exactness tests run the MLP in fp64: θ_new − θ in fp32 carries the rounding of θ + step at ulp(θ),
~1e-4 of a step, which is the addition's error, not the optimizer's."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from core import hessian as h
from core.models import build_model
from core.nsgd import NudgedSGD, NudgeVariant, variant

torch.set_num_threads(1)
D = 6 * 16 + 16 + 16 * 8 + 8 + 8 * 3 + 3  # 275 parameters of the tiny MLP


# ---------------------------------------------------------------- helpers
def _mlp(dtype=torch.float32):
    model = build_model("mlp", num_classes=3, input_shape=(6,), seed=0, widths=(16, 8), activation="tanh")
    return model.to(dtype)


def _batches(n: int, dtype=torch.float32, seed: int = 1):
    """n seeded mini-batches of 16 rows (a different gradient each step)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g, dtype=dtype), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def _step(model, opt, batch) -> None:
    opt.zero_grad()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    opt.step()


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()


def _subspace(k: int, seed: int = 0) -> torch.Tensor:
    """[k, D] fp64 orthonormal rows spanning a seeded random k-dimensional subspace."""
    A = torch.randn(D, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(A).Q.T.contiguous()


def _one_step_delta(mode="nudge", gamma=None, k=4, wd=0.0, lr=0.1, momentum=0.0, n=1):
    """θ_n − θ_{n−1} of an fp64 NudgedSGD run, its E, and the matching torch SGD step from θ_{n−1}."""
    model, batches = _mlp(torch.float64), _batches(n, torch.float64)
    opt = NudgedSGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd, gamma=gamma, mode=mode)
    E = _subspace(k)
    opt.set_subspace(E)
    for b in batches[:-1]:
        _step(model, opt, b)
    sgd_model = copy.deepcopy(model)
    theta = _flat(model)
    _step(model, opt, batches[-1])
    _step(sgd_model, torch.optim.SGD(sgd_model.parameters(), lr=lr, weight_decay=wd, foreach=False), batches[-1])
    return _flat(model) - theta, E, _flat(sgd_model) - theta


def _error(fn, *a, **kw) -> str:
    with pytest.raises(ValueError) as e:
        fn(*a, **kw)
    msg = str(e.value)
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# ---------------------------------------------------------------- the neutral setting
@pytest.mark.parametrize("momentum,dtype,tol", [(0.0, torch.float32, 0.0), (0.9, torch.float64, 1e-12),
                                               (0.9, torch.float32, 1e-6)])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_gamma_one_equals_torch_sgd_step_for_step(momentum, dtype, tol, wd):
    """γ = 1 with a random K = 3 subspace set: torch.optim.SGD's parameters after each of 20 steps,
    max |θ_nsgd − θ_sgd| <= tol·max|θ|. m = 0: bitwise (the update is torch's own op and the fp64
    projection returns v exactly). m = 0.9: the authors' buffer v is −lr × torch's, equal in exact
    arithmetic, so fp64 agrees to 1e-12 and fp32 to a few ulp (1e-6 ≈ 8 ulp; seen: 1.2e-7 by step 17)."""
    a, b = _mlp(dtype), _mlp(dtype)
    nsgd = NudgedSGD(a.parameters(), lr=0.1, momentum=momentum, weight_decay=wd, gamma=1.0)
    nsgd.set_subspace(_subspace(3))
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=momentum, weight_decay=wd, foreach=False)
    start = _flat(a)
    for i, batch in enumerate(_batches(20, dtype)):
        _step(a, nsgd, batch)
        _step(b, sgd, batch)
        diff, scale = float((_flat(a) - _flat(b)).abs().max()), float(_flat(b).abs().max())
        assert diff <= tol * scale, f"step {i}: max |θ_nsgd − θ_sgd| = {diff:.3g} > {tol:g}·max|θ|"
    assert float((_flat(a) - start).norm()) > 1e-2  # the run moved: equality is not of two still models


def test_gamma_one_without_subspace_steps_as_sgd():
    a, b = _mlp(), _mlp()
    nsgd, sgd = NudgedSGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1, foreach=False)
    for batch in _batches(5):
        _step(a, nsgd, batch)
        _step(b, sgd, batch)
    assert torch.equal(_flat(a), _flat(b))
    assert nsgd.subspace_age == 0  # no subspace: nothing to age


# ---------------------------------------------------------------- subspace algebra
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_gamma_zero_removes_the_top_k_component_exactly(wd):
    """γ = 0, m = 0: Eᵀ(θ_new − θ) = 0 and (I − P)(θ_new − θ) = (I − P)Δθ_SGD, to 1e-6 relative."""
    delta, E, delta_sgd = _one_step_delta(gamma=0.0, wd=wd)
    assert float((E @ delta_sgd).norm()) > 0.05 * float(delta_sgd.norm())  # SGD does move inside span(E)
    assert float((E @ delta).norm()) <= 1e-6 * float(delta.norm())
    rest = delta_sgd - (E @ delta_sgd) @ E
    assert float((delta - rest).norm()) <= 1e-6 * float(rest.norm())


@pytest.mark.parametrize("gamma", [0.1, 5.0])
def test_nudge_rescales_only_the_subspace_component(gamma):
    """m = 0: Δθ = (I − P)Δθ_SGD + γ·PΔθ_SGD, i.e. −lr·[(I − P)g + γPg]."""
    delta, E, delta_sgd = _one_step_delta(gamma=gamma, wd=1e-2)
    p_sgd = (E @ delta_sgd) @ E
    want = delta_sgd - p_sgd + gamma * p_sgd
    assert float((delta - want).norm()) <= 1e-6 * float(want.norm())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_top_only_steps_inside_the_span_and_no_top_orthogonal_to_it(momentum):
    """§3.3 variant 1 (top_only): (I − P)Δθ = 0; variant 3 (no_top): PΔθ = 0 (residuals 1e-6 relative),
    here on the 3rd step so that with momentum the buffer holds past, unprojected gradients."""
    top, E, sgd = _one_step_delta(**variant("top_only").optimizer_kwargs(), momentum=momentum, n=3)
    assert float((top - (E @ top) @ E).norm()) <= 1e-6 * float(top.norm())
    no_top, E, _ = _one_step_delta(**variant("no_top").optimizer_kwargs(), momentum=momentum, n=3)
    assert float((E @ no_top).norm()) <= 1e-6 * float(no_top.norm())
    assert float(top.norm()) > 1e-3 * float(sgd.norm()) and float(no_top.norm()) > 1e-3 * float(sgd.norm())
    nudge_zero, _, _ = _one_step_delta(gamma=0.0, momentum=momentum, n=3)
    assert torch.equal(no_top, nudge_zero)  # no_top is nudge with γ = 0, by definition


# ---------------------------------------------------------------- the authors' update, by hand
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_a_hand_written_reference_of_the_authors_update(momentum):
    """10 fp64 steps of v = m·v − lr·(g + wd·θ); θ += v + (γ−1)EEᵀv (the subspace refreshed after step
    5, as a trainer does each epoch): θ and the stored buffer (the UNcorrected v) match the reference."""
    lr, wd, gamma = 0.1, 1e-3, 0.1
    model, ref = _mlp(torch.float64), _mlp(torch.float64)
    opt = NudgedSGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd, gamma=gamma)
    layout = h.ParamLayout.of(dict(ref.named_parameters()))
    theta = layout.flatten(dict(ref.named_parameters())).detach().clone()
    v, E = torch.zeros(D, dtype=torch.float64), _subspace(2)
    opt.set_subspace(E)
    for i, (x, y) in enumerate(_batches(10, torch.float64)):
        if i == 5:
            E = _subspace(2, seed=7)
            opt.set_subspace(E)
        _step(model, opt, (x, y))
        loss = lambda t: F.cross_entropy(torch.func.functional_call(ref, layout.unflatten(t), (x,)), y)  # noqa: E731
        g = torch.func.grad(loss)(theta)
        v = momentum * v - lr * (g + wd * theta)
        theta = theta + v + (gamma - 1) * (E.T @ (E @ v))
        assert float((_flat(model) - theta).norm()) <= 1e-12 * float(theta.norm()), f"θ differs at step {i}"
        if momentum:
            buf = torch.cat([opt.state[p]["velocity"].reshape(-1) for p in model.parameters()])
            assert float((buf - v).norm()) <= 1e-12 * float(v.norm()), f"buffer is not the uncorrected v at step {i}"
    assert opt.subspace_age == 5


# ---------------------------------------------------------------- the subspace input
def test_subspace_forms_agree_flat_dicts_and_lanczos_result():
    """A [K, D] tensor, per-parameter dicts (named or not) and a core.hessian EigResult give one E."""
    model = _mlp()
    x, y = _batches(1)[0]
    res = h.top_eigenpairs(h.loss_fn(model, x, y), dict(model.named_parameters()), h.LanczosConfig(k=2))
    named = NudgedSGD(model.named_parameters(), lr=0.1, gamma=0.5)
    plain = NudgedSGD(model.parameters(), lr=0.1, gamma=0.5)
    for opt, form in ((named, res), (named, res.eigenvector_dicts()), (plain, res.eigenvector_dicts()),
                      (plain, res.eigenvectors.float())):
        opt.set_subspace(form)
        assert torch.allclose(opt.subspace, res.eigenvectors, atol=1e-6)
    renamed = [{f"x{n}": t for n, t in d.items()} for d in res.eigenvector_dicts()]
    assert "parameter names" in _error(named.set_subspace, renamed)


def test_non_orthonormal_subspace_is_rejected_with_the_measured_error():
    opt = NudgedSGD(_mlp().parameters(), lr=0.1, gamma=0.5)
    E = _subspace(3)
    E[0] *= 1.001  # ‖e₀‖² − 1 = 0.002001
    msg = _error(opt.set_subspace, E)
    assert "not orthonormal" in msg and "0.002" in msg
    opt.set_subspace(_subspace(3) * (1 + 1e-7))  # within the 1e-4 tolerance: accepted
    assert opt.subspace_age == 0


def test_orthonormalize_gives_an_idempotent_projector_on_the_same_span():
    opt = NudgedSGD(_mlp().parameters(), lr=0.1, gamma=0.5)
    A = torch.randn(4, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    opt.set_subspace(A, orthonormalize=True)
    P = opt.subspace.T @ opt.subspace
    assert float((P @ P - P).abs().max()) <= 1e-6
    assert float((A - A @ P).norm()) <= 1e-10 * float(A.norm())  # the span of A, not another one
    assert "linearly dependent" in _error(opt.set_subspace, torch.stack([A[0], A[1], A[0] + A[1]]), orthonormalize=True)


def test_bad_inputs_give_one_line_errors():
    model = _mlp()
    opt = NudgedSGD(model.parameters(), lr=0.1, gamma=0.5)
    assert "K >= 1" in _error(opt.set_subspace, torch.empty(0, D))
    assert "K >= 1" in _error(opt.set_subspace, [])
    assert f"D={D + 1}" in _error(opt.set_subspace, torch.eye(2, D + 1))
    assert "gamma" in _error(NudgedSGD, model.parameters(), lr=0.1, gamma=-0.1)
    assert "gamma" in _error(variant, "nsgd", gamma=-1.0)
    assert "mode" in _error(NudgedSGD, model.parameters(), lr=0.1, mode="top")
    assert "no_top" in _error(NudgedSGD, model.parameters(), lr=0.1, mode="no_top", gamma=2.0)
    params = list(model.parameters())
    assert "one parameter group" in _error(NudgedSGD, [{"params": params[:2]}, {"params": params[2:]}], lr=0.1)


@pytest.mark.parametrize("kwargs", [dict(gamma=0.5), dict(gamma=0.0), dict(mode="top_only"), dict(mode="no_top")])
def test_no_subspace_refuses_to_step_unless_gamma_is_one(kwargs):
    model = _mlp()
    opt = NudgedSGD(model.parameters(), lr=0.1, **kwargs)
    before = _flat(model)
    msg = _error(_step, model, opt, _batches(1)[0])
    assert "set_subspace" in msg
    assert torch.equal(_flat(model), before)  # refused before touching θ


def test_a_parameter_without_gradient_is_refused():
    model = _mlp()
    opt = NudgedSGD(model.parameters(), lr=0.1, gamma=0.5)
    opt.set_subspace(_subspace(2))
    x, y = _batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    next(model.parameters()).grad = None
    assert "no .grad" in _error(opt.step)


def test_variants_are_the_papers_settings():
    assert variant("top_only") == NudgeVariant("top_only", 1.0, 1, True)
    assert variant("constant_top") == NudgeVariant("top_only", 1.0, 1, False)
    assert variant("no_top") == NudgeVariant("no_top", 0.0, 1, True)
    assert variant("nsgd", gamma=0.01) == NudgeVariant("nudge", 0.01, 5, True)
    assert variant("sgd").optimizer_kwargs() == {"mode": "nudge", "gamma": 1.0}
    assert "allowed" in _error(variant, "sgd_top")
    assert "only 'nsgd'" in _error(variant, "top_only", gamma=2.0)


# ---------------------------------------------------------------- checkpoints
def test_state_dict_round_trip_resumes_bit_identically():
    """5 steps, checkpoint through torch.save, 5 more: a fresh model + optimizer loaded from the
    checkpoint ends bit-identical to the uninterrupted run (θ, buffer, E, subspace_age)."""
    batches = _batches(10)
    model = _mlp()
    opt = NudgedSGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, gamma=0.1)
    opt.set_subspace(_subspace(3))
    for b in batches[:5]:
        _step(model, opt, b)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    for b in batches[5:]:
        _step(model, opt, b)
    buf.seek(0)
    ckpt = torch.load(buf)
    resumed = _mlp()
    resumed.load_state_dict(ckpt["model"])
    opt2 = NudgedSGD(resumed.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, gamma=0.1)
    opt2.load_state_dict(ckpt["opt"])
    for b in batches[5:]:
        _step(resumed, opt2, b)
    assert torch.equal(_flat(resumed), _flat(model))
    assert all(torch.equal(opt2.state[q]["velocity"], opt.state[p]["velocity"])
               for p, q in zip(model.parameters(), resumed.parameters()))
    assert torch.equal(opt2.subspace, opt.subspace) and opt2.subspace_age == opt.subspace_age == 10
    opt.set_subspace(_subspace(3, seed=1))
    assert opt.subspace_age == 0  # a refresh resets the age


def test_loading_a_plain_sgd_checkpoint_is_refused():
    model = _mlp()
    sgd_state = torch.optim.SGD(model.parameters(), lr=0.1).state_dict()
    assert "not a NudgedSGD checkpoint" in _error(NudgedSGD(model.parameters(), lr=0.1).load_state_dict, sgd_state)
