"""core.hessian against oracles: the exact `torch.func.hessian` of a tiny MLP, matrices with known
spectra (negative, clustered, easy), known traces and Frobenius norms, and the bad-input errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core import hessian as h
from core.models import build_model

torch.set_num_threads(1)


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def tiny():
    """A 6-16-8-3 tanh MLP (275 parameters) on 64 seeded rows, L2 1e-2, its exact Hessian and spectrum."""
    model = build_model("mlp", num_classes=3, input_shape=(6,), seed=0, widths=(16, 8), activation="tanh")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = h.loss_fn(model, x, y, l2=1e-2, batch_size=16)
    layout = h.ParamLayout.of(params)
    H = torch.func.hessian(lambda t: loss(layout.unflatten(t)))(layout.flatten(params)).double()
    H = (H + H.T) / 2
    evals, evecs = torch.linalg.eigh(H)
    return dict(model=model, x=x, y=y, params=params, loss=loss, layout=layout, H=H,
                evals=evals.flip(0), evecs=evecs.flip(1).T)  # descending; eigenvectors as rows


def _matrix(spectrum, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix U diag(spectrum) Uᵀ with a seeded random orthogonal U."""
    d = torch.as_tensor(spectrum, dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(len(d), len(d), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return (U * d) @ U.T


def _rel(a, b) -> float:
    return float(((a - b).abs() / b.abs()).max())


def _one_line_error(fn, match: str) -> str:
    with pytest.raises(ValueError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def _deflated_power(A: torch.Tensor, k: int, tol: float, max_per_vector: int, seed: int = 0):
    """Baseline: power iteration with deflation against the found vectors; (values, matvecs, converged)."""
    g, found, vals, n, ok = torch.Generator().manual_seed(seed), [], [], 0, True
    for _ in range(k):
        v = torch.randn(A.shape[0], generator=g, dtype=torch.float64)
        for _ in range(max_per_vector):
            for u in found:
                v = v - (u @ v) * u
            v = v / v.norm()
            w, n = A @ v, n + 1
            lam = v @ w
            if (w - lam * v).norm() <= tol * lam.abs():
                break
            v = w
        else:
            ok = False
        found.append(v)
        vals.append(float(lam))
    return vals, n, ok


# ---------------------------------------------------------------- the function
def test_loss_value_independent_of_batching_and_model_untouched():
    model = build_model("mlp", num_classes=4, input_shape=(5,), seed=1, widths=(8,), bn=True, dropout=0.5)
    model.train()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 5, generator=g), torch.randint(0, 4, (50,), generator=g)
    params = {n: p.detach() for n, p in model.named_parameters()}
    values = [h.loss_fn(model, x, y, l2=0.1, batch_size=b)(params) for b in (1, 7, 50)]
    ref_model = build_model("mlp", num_classes=4, input_shape=(5,), seed=1, widths=(8,), bn=True, dropout=0.5)
    ref = F.cross_entropy(ref_model.eval()(x), y) + 0.05 * sum(p.pow(2).sum() for p in params.values())
    for v in values:
        assert torch.allclose(v, ref, rtol=1e-6, atol=0)
    op = h.hvp_operator(h.loss_fn(model, x, y), params)
    op(torch.ones(2, op.dim, dtype=torch.float64))
    assert model.training and all(torch.equal(before[n], t) for n, t in model.state_dict().items())


def test_hessian_loss_uses_a_seeded_five_percent_subset():
    model = build_model("mlp", num_classes=3, input_shape=(4,), seed=0, widths=(5,))
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(400, 4, generator=g), torch.randint(0, 3, (400,), generator=g)
    cfg = h.HessianConfig()
    loss = h.hessian_loss(model, x, y, cfg)
    xs, ys = h.fixed_subset(x, y, 0.05, generator=torch.Generator().manual_seed(cfg.subset_seed))
    assert len(ys) == 20 and len(loss.terms) == 1
    params = dict(model.named_parameters())
    assert torch.equal(loss(params), h.hessian_loss(model, x, y, cfg)(params))
    assert torch.allclose(loss(params), F.cross_entropy(model.eval()(xs), ys), rtol=1e-6)


# ---------------------------------------------------------------- HVPs
def test_hvp_methods_agree_with_each_other_and_the_exact_hessian(tiny):
    V = torch.randn(4, tiny["layout"].dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = V @ tiny["H"].T
    outs = {m: h.hvp_operator(tiny["loss"], tiny["params"], m)(V) for m in h.HVP_METHODS}
    oracle = outs["forward-loop"]
    for m, out in outs.items():
        assert float((out - oracle).norm() / oracle.norm()) < 1e-5, m
        assert float((out - exact).norm() / exact.norm()) < 1e-5, m


def test_choose_hvp_returns_a_measured_method(tiny):
    choice = h.choose_hvp(tiny["loss"], tiny["params"], block=3, repeats=2)
    assert choice.method in h.HVP_METHODS and choice.seconds[choice.method] == min(choice.seconds.values())
    assert set(choice.seconds) | set(choice.errors) == set(h.HVP_METHODS)


# ---------------------------------------------------------------- Lanczos
def test_lanczos_top5_matches_exact_hessian(tiny):
    res = h.top_eigenpairs(tiny["loss"], tiny["params"], h.LanczosConfig(k=5, tol=1e-6))
    assert _rel(res.eigenvalues, tiny["evals"][:5]) < 1e-5
    cos = (res.eigenvectors * tiny["evecs"][:5]).sum(1).abs()
    assert bool((cos > 1 - 1e-6).all()), cos
    assert bool(res.converged.all()) and bool((res.residuals <= 1e-6).all())
    assert res.n_hvp == res.n_iter + 5 * (res.n_hvp - res.n_iter) // 5 and res.wall_time > 0
    dicts = res.eigenvector_dicts()
    assert [d.keys() for d in dicts][0] == tiny["params"].keys()
    assert all(d[n].shape == p.shape for d in dicts for n, p in tiny["params"].items())
    lam = h.lambda_max(tiny["loss"], tiny["params"], h.LanczosConfig(k=1, tol=1e-6))
    assert abs(float(lam) / float(tiny["evals"][0]) - 1) < 1e-5
    assert torch.allclose(h.frobenius_topk(res), tiny["evals"][:5].pow(2).sum().sqrt(), rtol=1e-5)


def test_la_order_puts_largest_algebraic_first_even_when_a_negative_one_is_larger():
    spectrum = [3.0, 2.0, 1.0] + [0.1 * i for i in range(-5, 5)] + [-7.0, -10.0]
    A = _matrix(spectrum, seed=4)
    quad = h.Loss((lambda p: 0.5 * p["w"] @ A.float() @ p["w"],))  # H = A through the HVP stack
    params = {"w": torch.randn(len(spectrum), generator=torch.Generator().manual_seed(4))}
    res = h.top_eigenpairs(quad, params, h.LanczosConfig(k=3, tol=1e-6))
    assert torch.allclose(res.eigenvalues, torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64), rtol=1e-5)
    full = h.lanczos(h.Operator.from_matrix(A), h.LanczosConfig(k=len(spectrum), tol=1e-8))
    assert torch.allclose(full.eigenvalues, torch.tensor(sorted(spectrum, reverse=True), dtype=torch.float64),
                          atol=1e-10)


def test_clustered_spectrum_lanczos_converges_where_deflated_power_iteration_crawls():
    top = [10.0 - 0.01 * i for i in range(5)]  # 10, 9.99, ..., 9.96
    rest = torch.linspace(-2.0, 5.0, 395, dtype=torch.float64).tolist()
    A = _matrix(top + rest, seed=5)
    res = h.lanczos(h.Operator.from_matrix(A), h.LanczosConfig(k=5, tol=1e-6, max_iter=400))
    assert bool(res.converged.all())
    assert torch.allclose(res.eigenvalues, torch.tensor(top, dtype=torch.float64), rtol=1e-8)
    vals, n_power, power_ok = _deflated_power(A, 5, tol=1e-6, max_per_vector=1000)
    print(f"\nclustered top-5 to rel. residual 1e-6: Lanczos {res.n_hvp} HVPs; deflated power iteration "
          f"{n_power} HVPs, converged={power_ok}")
    assert res.n_hvp < 100 and n_power > 20 * res.n_hvp


def test_residual_rule_stops_early_on_an_easy_spectrum():
    spectrum = [100.0, 50.0, 25.0, 12.0, 6.0] + torch.linspace(0, 1, 295, dtype=torch.float64).tolist()
    op = h.Operator.from_matrix(_matrix(spectrum, seed=6))
    res = h.lanczos(op, h.LanczosConfig(k=5, tol=1e-3, max_iter=300))
    print(f"\neasy spectrum: stopped after {res.n_iter} Lanczos steps ({res.n_hvp} HVPs) of max 300")
    assert res.n_iter <= 25 and bool(res.converged.all()) and bool((res.residuals <= 1e-3).all())
    assert op.n_vectors == res.n_hvp


def test_warm_start_from_exact_eigenvectors_converges_in_k_steps(tiny):
    cfg = h.LanczosConfig(k=5, tol=1e-3)
    cold = h.top_eigenpairs(tiny["loss"], tiny["params"], cfg)
    warm_dicts = [tiny["layout"].unflatten(v) for v in tiny["evecs"][:5]]
    warm = h.top_eigenpairs(tiny["loss"], tiny["params"], cfg, warm_start=warm_dicts)
    print(f"\nwarm start: {warm.n_iter} steps vs cold {cold.n_iter}")
    assert warm.n_iter == 5 and cold.n_iter > 10 and bool(warm.converged.all())
    assert _rel(warm.eigenvalues, tiny["evals"][:5]) < 1e-5


def test_breakdown_restarts_from_an_orthogonal_vector_and_finds_the_top():
    spectrum = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.0]
    A = _matrix(spectrum, seed=7)
    U = torch.linalg.eigh(A).eigenvectors.flip(1).T
    res = h.lanczos(h.Operator.from_matrix(A), h.LanczosConfig(k=3, tol=1e-8), warm_start=U[3:5])
    # the start lies in span(u4, u5): β = 0 after 2 steps, then a restart orthogonal to it
    assert torch.allclose(res.eigenvalues, torch.tensor([5.0, 4.0, 3.0], dtype=torch.float64), atol=1e-10)
    exhaust = h.lanczos(h.Operator.from_matrix(A), h.LanczosConfig(k=8, tol=1e-8))
    assert exhaust.n_iter == 8 and torch.allclose(
        exhaust.eigenvalues, torch.tensor(spectrum, dtype=torch.float64), atol=1e-10)


def test_bad_inputs_raise_one_line_value_errors(tiny):
    loss, params, D = tiny["loss"], tiny["params"], tiny["layout"].dim
    _one_line_error(lambda: h.top_eigenpairs(loss, params, h.LanczosConfig(k=0)), r"k=0; allowed: 1 <= k")
    _one_line_error(lambda: h.top_eigenpairs(loss, params, h.LanczosConfig(k=D + 1, max_iter=D + 1)),
                    rf"k={D + 1}; allowed: 1 <= k <= {D}")
    bad = {n: p.clone() for n, p in params.items()}
    next(iter(bad.values()))[0] = float("nan")
    _one_line_error(lambda: h.top_eigenpairs(loss, bad), "Hessian of a diverged state")
    _one_line_error(lambda: h.top_eigenpairs(loss, params, h.LanczosConfig(tol=0.0)), "tol=0.0")
    _one_line_error(lambda: h.hvp_operator(loss, params, "lm"), "hvp method='lm'")
    _one_line_error(lambda: h.top_eigenpairs(loss, params, warm_start=torch.ones(3, D + 1)), "warm_start")
    inf_loss = h.Loss((lambda p: p["w"].pow(2).sum() * float("inf"),))  # H = inf·I
    _one_line_error(lambda: h.top_eigenpairs(inf_loss, {"w": torch.ones(6)}, h.LanczosConfig(k=1)),
                    "Hessian of a diverged state")


# ---------------------------------------------------------------- trace and norms
def _seeded(estimator, op, m, seeds):
    return torch.tensor([estimator(op, m, generator=torch.Generator().manual_seed(s)).value for s in seeds],
                        dtype=torch.float64)


def test_trace_estimators_are_unbiased_within_their_standard_errors():
    spectrum = [50.0 * 0.7 ** i for i in range(20)] + torch.linspace(-0.5, 1.0, 80).tolist()
    A = _matrix(spectrum, seed=8)
    op, tr, fro2 = h.Operator.from_matrix(A), float(sum(spectrum)), float(A.pow(2).sum())
    for est, truth in ((h.hutchinson_trace, tr), (h.hutchpp_trace, tr), (h.frobenius_sq, fro2)):
        one = est(op, 300, generator=torch.Generator().manual_seed(0))
        assert abs(one.value - truth) <= 4 * one.stderr + 1e-9 * abs(truth), (est.__name__, one, truth)
        many = _seeded(est, op, 9, range(300))  # the mean of 300 small-m estimates: bias check
        assert abs(float(many.mean()) - truth) <= 4 * float(many.std()) / math.sqrt(300), est.__name__
    hutch = h.hutchinson_trace(op, 99, generator=torch.Generator().manual_seed(1))
    hpp = h.hutchpp_trace(op, 99, generator=torch.Generator().manual_seed(1))
    assert hpp.stderr < hutch.stderr / 3 and hpp.n_hvp == hutch.n_hvp == 99


def test_frobenius_table_column_is_the_square_root_of_the_frobenius_norm_for_a_scaled_identity():
    op = h.Operator.from_matrix(3.0 * torch.eye(49, dtype=torch.float64))  # ‖Hz‖ = 3·7 for every ±1 z
    fro = math.sqrt(h.frobenius_sq(op, 10, generator=torch.Generator().manual_seed(0)).value)
    col = h.frobenius_table_column(op, 10, generator=torch.Generator().manual_seed(0))
    assert fro == pytest.approx(21.0) and col == pytest.approx(math.sqrt(21.0))


def test_trace_and_frobenius_of_the_tiny_mlp_hessian_match_the_exact_matrix(tiny):
    op, H = h.hvp_operator(tiny["loss"], tiny["params"]), tiny["H"]
    g = torch.Generator().manual_seed(9)
    tr, fro2 = h.hutchinson_trace(op, 60, generator=g), h.frobenius_sq(op, 60, generator=g)
    assert abs(tr.value - float(H.trace())) <= 4 * tr.stderr and tr.n_hvp == 60
    assert abs(fro2.value - float(H.pow(2).sum())) <= 4 * fro2.stderr
    col = h.frobenius_table_column(op, 60, generator=g)  # sqrt(E‖Hz‖) <= ‖H‖_F^{1/2} (Jensen)
    assert col <= math.sqrt(math.sqrt(float(H.pow(2).sum()))) * (1 + 1e-6)
