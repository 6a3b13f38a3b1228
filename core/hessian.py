"""The Hessian of an explicitly defined training loss: HVPs, top-k eigenpairs by Lanczos, trace and norms.

The function (Jastrzebski et al. 2019, PROTOCOLS.md). With S a fixed subset of N training rows (~5% of
the training set, drawn once from a seeded generator, no augmentation),
    f(θ) = (1/N) Σ_{i∈S} CE(model(x_i; θ), y_i) + (c/2)·‖θ‖²,
the model called through `torch.func.functional_call` on a private eval-mode deep copy (BatchNorm uses
its running statistics, dropout is off; the live model is never touched), fp32 arithmetic. The rows are
processed in batches b: f = Σ_b f_b with f_b = (1/N) Σ_{i∈b} CE_i, so batching changes only the float
summation order, and H = ∇²f = Σ_b ∇²f_b + c·I (the L2 part is added analytically).

Hessian-vector products for a block V [k, D] (`HVP_METHODS`), accumulated over the row batches:
  reverse-*  double backward: g_b = ∇f_b(θ) with create_graph, then H_b v = ∇_θ (g_b · v), the
             k cotangents through one graph (`autograd.grad(..., is_grads_batched=True)` = vmap, or a
             loop); θ enters as one leaf per parameter tensor.
  forward-*  forward-over-reverse: H_b v = d/dε ∇f_b(θ + εv)|₀ = `jvp(grad(f_b), (θ,), (v,))`, vmapped
             over the k tangents or looped.
  reverse-cached  double backward with every batch's gradient graph built once per θ and kept, so a
             call is only the second backward (memory ∝ subset rows × activations).
`choose_hvp` times them on the caller's model and subset and returns the fastest; the rest are oracles
(core/tests: all five agree to 1e-5 relative).

Lanczos (`lanczos`): from a unit q₀, the Krylov basis Q_j = [q₀ … q_{j−1}] and the tridiagonal T_j with
    α_j = q_jᵀ H q_j,   β_j q_{j+1} = H q_j − α_j q_j − β_{j−1} q_{j−1}.
In floating point the q's lose orthogonality as Ritz values converge (ghost copies of λ_max); full
reorthogonalisation removes the whole component of w = H q_j along Q_{j+1} by classical Gram–Schmidt,
w ← w − Q(Qᵀw), done twice ("twice is enough", Parlett), which subsumes the three-term recurrence. Q and
T are fp64 (the HVPs themselves are fp32). Ritz pairs: T_j = S Θ Sᵀ (fp64 LAPACK,
`scipy.linalg.eigh_tridiagonal`), largest ALGEBRAIC first ('LA': the authors' ARPACK 'LM' returns the
largest |λ|, which can be a negative eigenvalue); Ritz vectors y_i = Q_j s_i. The Lanczos identity
H Q_j − Q_j T_j = β_j q_j e_jᵀ gives the residual estimate ‖H y_i − θ_i y_i‖ = β_j |s_i[−1]| at no HVP cost; when the top-k estimates are
≤ tol·|θ_i| the true residuals are computed with one extra block HVP and returned. β_j ≈ 0 is a
breakdown: Q_j spans an invariant subspace and its Ritz pairs are exact, but a larger eigenvalue may
lie outside it (a start orthogonal to an eigenvector never sees it), so the run continues from a seeded
random vector orthogonal to Q_j (T gets a zero off-diagonal) and checks convergence on the union; it
stops when the top k are converged or the dimension is exhausted. A warm start inside an invariant
subspace (exact previous eigenvectors at the same θ) therefore costs one extra step in exact
arithmetic; with fp32 HVPs β stays at rounding level (no breakdown) and the residual test stops it.

Trace and norms (Hutchinson 1989; Meyer, Musco, Musco, Woodruff 2021), Rademacher probes z:
  tr H  = E zᵀHz                          `hutchinson_trace` (mean ± standard error over m probes)
  tr H  = tr(QᵀHQ) + tr((I−QQᵀ)H(I−QQᵀ))  `hutchpp_trace`: Q = orth(H S) from m/3 sketch probes, the
                                           deflated remainder by Hutchinson on m/3 more (m HVPs in all)
  ‖H‖_F² = tr(H²) = E ‖Hz‖²               `frobenius_sq` (mean ± standard error)
  sqrt(Σ_{i≤k} λᵢ²)                       `frobenius_topk`: the paper's plotted curves (top K = 5)
  sqrt(mean ‖Hz‖)                         `frobenius_table_column`: what the authors' Table 1 "‖H‖_F"
                                           column computed (≈ ‖H‖_F^{1/2}); labelled as theirs.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import eigh_tridiagonal
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

__all__ = [
    "HessianConfig", "LanczosConfig", "ParamLayout", "Loss", "fixed_subset", "CRITERIA", "per_row_loss", "loss_fn",
    "hessian_loss",
    "HVP_METHODS", "DEFAULT_HVP", "Operator", "hvp_operator", "HvpChoice", "choose_hvp", "EigResult",
    "lanczos", "top_eigenpairs", "lambda_max", "frobenius_topk", "Estimate", "hutchinson_trace",
    "hutchpp_trace", "frobenius_sq", "frobenius_table_column",
]

Params = Mapping[str, Tensor]


# ---------------------------------------------------------------- configuration
@dataclass(frozen=True)
class HessianConfig:
    """Which function's Hessian: the paper's settings by default."""
    subset_fraction: float = 0.05  # fraction of the training rows f is defined on (paper: ~5%)
    subset_seed: int = 0  # seeds the torch.Generator that draws the rows, once
    l2: float = 0.0  # c in (c/2)·‖θ‖² (loss units per parameter²); paper's SD runs: 0
    batch_size: int = 128  # rows per forward/backward when accumulating (paper: 128)
    dtype: torch.dtype = torch.float32  # model arithmetic; Lanczos basis and T are fp64 regardless
    bn_mode: str = "eval"  # the only mode: BN running statistics, dropout off (paper: inference mode)


@dataclass(frozen=True)
class LanczosConfig:
    """How the top-k eigenpairs are found."""
    k: int = 5  # eigenpairs, largest algebraic first (paper: K = 5)
    tol: float = 1e-3  # stop when every top-k relative residual ‖Hv − λv‖/|λ| <= tol
    max_iter: int = 300  # Lanczos steps (one HVP each) at most; capped at the dimension
    seed: int = 0  # torch.Generator seed of the start vector and of restarts after breakdown
    breakdown_tol: float = 1e-10  # β_j <= breakdown_tol·max|T| counts as an invariant subspace


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


# ---------------------------------------------------------------- params <-> flat vectors
@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a params dict, for moving between dicts and flat [..., D] vectors."""
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @staticmethod
    def of(params: Params) -> "ParamLayout":
        return ParamLayout(tuple(params), tuple(p.shape for p in params.values()))

    @property
    def dim(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, params: Params) -> Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """[..., D] -> {name: [..., *shape]} (views, so gradients flow back to `flat`)."""
        lead, out, i = flat.shape[:-1], {}, 0
        for n, s in zip(self.names, self.shapes):
            out[n] = flat[..., i:i + math.prod(s)].reshape(*lead, *s)
            i += math.prod(s)
        return out


# ---------------------------------------------------------------- the function
@dataclass(frozen=True, eq=False)
class Loss:
    """f(params) = Σ_b terms[b](params) + (l2/2)·‖θ‖²: a scalar function split into additive pieces so
    HVPs can be accumulated piece by piece (one batch's graph in memory at a time)."""
    terms: tuple[Callable[[Params], Tensor], ...]
    l2: float = 0.0

    def __call__(self, params: Params) -> Tensor:
        total = sum(term(params) for term in self.terms)
        if self.l2:
            total = total + 0.5 * self.l2 * sum(p.pow(2).sum() for p in params.values())
        return total


def fixed_subset(x: Tensor, y: Tensor, fraction: float, *, generator: torch.Generator):
    """The rows f is defined on: round(fraction·N) (at least 1) rows without replacement, drawn once."""
    _require(0 < fraction <= 1, f"subset fraction={fraction!r}; allowed: 0 < fraction <= 1")
    n = max(1, round(fraction * len(y)))
    idx = torch.randperm(len(y), generator=generator)[:n].sort().values.to(y.device)
    return x[idx], y[idx]


CRITERIA = ("cross_entropy", "mse_onehot")


def per_row_loss(out: Tensor, y: Tensor, criterion: str) -> Tensor:
    """Σ over rows of the training criterion: 'cross_entropy' (the papers'), or 'mse_onehot'
    ½‖out − onehot(y)‖² (quadratic in the outputs: a linear model's Hessian is then constant, the SD
    negative control)."""
    if criterion == "cross_entropy":
        return F.cross_entropy(out, y, reduction="sum")
    _require(criterion == "mse_onehot", f"criterion={criterion!r}; allowed: {', '.join(CRITERIA)}")
    # the one-hot as a comparison, not F.one_hot: that one checks y's range with a host sync, which vmap
    # over batched targets refuses (core.landscape.alpha_step's mini-batch gradients). Same 0/1 values, so
    # the same loss bit for bit; an out-of-range label would give an all-zero target row, not an error,
    # so the trainers check every label once before training (core.ensemble.check_labels)
    onehot = (y[..., None] == torch.arange(out.shape[-1], device=y.device)).to(out.dtype)
    return 0.5 * (out - onehot).pow(2).sum()


def loss_fn(model: nn.Module, x: Tensor, y: Tensor, l2: float = 0.0, *, batch_size: int = 128,
            dtype: torch.dtype = torch.float32, criterion: str = "cross_entropy") -> Loss:
    """f(params) = mean `criterion` loss of `model` on (x, y) + (l2/2)·‖θ‖², evaluated in eval mode on
    a private copy and summed over row batches of `batch_size` (each batch contributes Σ loss / N)."""
    _require(batch_size >= 1, f"batch_size={batch_size!r}; allowed: an int >= 1")
    _require(len(y) >= 1, "loss_fn needs at least one row")
    _require(criterion in CRITERIA, f"criterion={criterion!r}; allowed: {', '.join(CRITERIA)}")
    module = copy.deepcopy(model).to(dtype).eval()  # eval: BN running stats, dropout off
    buffers, n = dict(module.named_buffers()), len(y)

    def term(xb: Tensor, yb: Tensor) -> Callable[[Params], Tensor]:
        def f(params: Params) -> Tensor:
            out = functional_call(module, (dict(params), buffers), (xb,))
            return per_row_loss(out, yb, criterion) / n
        return f
    pieces = zip(x.to(dtype).split(batch_size), y.split(batch_size))
    return Loss(tuple(term(xb, yb) for xb, yb in pieces), float(l2))


def hessian_loss(model: nn.Module, x: Tensor, y: Tensor, cfg: HessianConfig = HessianConfig()) -> Loss:
    """`loss_fn` on the config's fixed subset of (x, y), with its L2, batch size and dtype."""
    _require(cfg.bn_mode == "eval", f"bn_mode={cfg.bn_mode!r}; allowed: 'eval'")
    xs, ys = fixed_subset(x, y, cfg.subset_fraction, generator=torch.Generator().manual_seed(cfg.subset_seed))
    return loss_fn(model, xs, ys, cfg.l2, batch_size=cfg.batch_size, dtype=cfg.dtype)


# ---------------------------------------------------------------- Hessian-vector products
def _leaves(layout: ParamLayout, theta: Tensor) -> tuple[Tensor, ...]:
    """θ as one leaf tensor per parameter: differentiating w.r.t. leaves skips the slice-backward
    into a flat θ that both backward passes would otherwise pay (~15% of an HVP on the cpu-tier MLP)."""
    return tuple(p.detach().clone().requires_grad_(True) for p in layout.unflatten(theta.detach()).values())


def _first_backward(term: Callable, layout: ParamLayout, leaves: tuple) -> tuple[Tensor, ...] | None:
    """∇f_b with its graph kept for differentiation (None when f_b is linear in θ: H_b = 0)."""
    gs = torch.autograd.grad(term(dict(zip(layout.names, leaves))), leaves, create_graph=True,
                             allow_unused=True, materialize_grads=True)
    return gs if any(g.requires_grad for g in gs) else None


def _second_backward(gs: tuple, leaves: tuple, layout: ParamLayout, V: Tensor, retain: bool) -> Tensor:
    """∇_θ(g · v) for every row v of V [b, D] -> [b, D]; a block goes through one vmapped backward
    (is_grads_batched), one vector skips the vmap (~25% faster on the cpu-tier MLP)."""
    b, vs = V.shape[0], tuple(layout.unflatten(V).values())
    hv = torch.autograd.grad(gs, leaves, tuple(v[0] for v in vs) if b == 1 else vs, retain_graph=retain,
                             is_grads_batched=b > 1, allow_unused=True, materialize_grads=True)
    return torch.cat([h.reshape(b, -1) for h in hv], dim=1)


def _hvp_reverse(loss: Loss, layout: ParamLayout, theta: Tensor, V: Tensor, batched: bool) -> Tensor:
    leaves, out = _leaves(layout, theta), loss.l2 * V
    for term in loss.terms:
        gs = _first_backward(term, layout, leaves)
        if gs is None:
            continue
        if batched:
            out = out + _second_backward(gs, leaves, layout, V, retain=False)
        else:
            out = out + torch.cat([_second_backward(gs, leaves, layout, v[None], retain=True) for v in V])
    return out


def _hvp_forward(loss: Loss, layout: ParamLayout, theta: Tensor, V: Tensor, batched: bool) -> Tensor:
    theta, out = theta.detach(), loss.l2 * V
    for term in loss.terms:
        g = grad(lambda t, term=term: term(layout.unflatten(t)))
        one = lambda v, g=g: jvp(g, (theta,), (v,))[1]  # noqa: E731 (H_b v, one tangent)
        out = out + (vmap(one)(V) if batched else torch.stack([one(v) for v in V]))
    return out


def _hvp_reverse_cached(loss: Loss, layout: ParamLayout, theta: Tensor) -> Callable[[Tensor], Tensor]:
    """Double backward with the gradient graphs g_b built once and kept: each call is then only the
    second backward (memory: every batch's double-backward graph at once, ∝ subset rows)."""
    leaves = _leaves(layout, theta)
    graphs = [gs for gs in (_first_backward(t, layout, leaves) for t in loss.terms) if gs is not None]

    def block(V: Tensor) -> Tensor:
        out = loss.l2 * V
        for gs in graphs:
            out = out + _second_backward(gs, leaves, layout, V, retain=True)
        return out
    return block


# name -> builder (loss, layout, θ) -> block HVP V [k, D] -> HV [k, D]
HVP_METHODS = {
    "reverse-vmap": lambda loss, lay, th: lambda V: _hvp_reverse(loss, lay, th, V, batched=True),
    "reverse-loop": lambda loss, lay, th: lambda V: _hvp_reverse(loss, lay, th, V, batched=False),
    "reverse-cached": _hvp_reverse_cached,
    "forward-vmap": lambda loss, lay, th: lambda V: _hvp_forward(loss, lay, th, V, batched=True),
    "forward-loop": lambda loss, lay, th: lambda V: _hvp_forward(loss, lay, th, V, batched=False),
}
DEFAULT_HVP = "reverse-vmap"  # memory bounded by one batch; `choose_hvp` measures (cpu-tier MLP: reverse-cached)


class Operator:
    """A symmetric linear map on R^D as a block matvec V [b, D] fp64 -> HV [b, D] fp64.

    Counts the vectors it has been applied to (`n_vectors`) and refuses non-finite output."""

    def __init__(self, block_matvec: Callable[[Tensor], Tensor], dim: int, layout: ParamLayout | None = None,
                 device: torch.device | str = "cpu"):
        self.fn, self.dim, self.layout, self.device, self.n_vectors = block_matvec, dim, layout, device, 0

    @staticmethod
    def from_matrix(A: Tensor) -> "Operator":
        A = A.to(torch.float64)
        return Operator(lambda V: V @ A.T, A.shape[0], device=A.device)

    def __call__(self, V: Tensor, check: bool = True) -> Tensor:
        """check=False skips the finiteness reduction (and its device sync) for callers that check a
        scalar derived from the output instead (Lanczos: α and β)."""
        self.n_vectors += V.shape[0]
        out = self.fn(V).to(torch.float64)
        _require(not check or bool(torch.isfinite(out).all()), _DIVERGED_HVP)
        return out


_DIVERGED_HVP = "Hessian of a diverged state: an HVP returned non-finite values"


def _check_finite(params: Params) -> None:
    bad = {n: int((~torch.isfinite(p)).sum()) for n, p in params.items() if not torch.isfinite(p).all()}
    _require(not bad, f"Hessian of a diverged state: non-finite parameters {bad}; refusing to return eigenvalues")


def hvp_operator(loss: Loss, params: Params, method: str = DEFAULT_HVP) -> Operator:
    """H at `params` as an `Operator` (fp64 in and out; the HVP runs in the params' dtype)."""
    _require(method in HVP_METHODS, f"hvp method={method!r}; allowed: {', '.join(HVP_METHODS)}")
    _check_finite(params)
    layout = ParamLayout.of(params)
    theta = layout.flatten({n: p.detach() for n, p in params.items()})
    fn = HVP_METHODS[method](loss, layout, theta)
    return Operator(lambda V: fn(V.to(theta.dtype)), layout.dim, layout, theta.device)


@dataclass(frozen=True)
class HvpChoice:
    """The measured fastest HVP method; the others stay available as oracles."""
    method: str
    seconds: dict[str, float]  # fastest wall seconds of one block call, per method that ran
    errors: dict[str, str]  # method -> one-line reason it could not run (e.g. vmap unsupported)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)  # kernels are asynchronous: time them to completion


def choose_hvp(loss: Loss, params: Params, *, block: int = 1, repeats: int = 5, seed: int = 0) -> HvpChoice:
    """Time every HVP method on `block` random vectors (block=1: what a Lanczos step calls) and return the
    fastest; each method's time is the MINIMUM over `repeats` calls after one warm-up, the estimate of
    its own cost least disturbed by other load on the machine."""
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(block, ParamLayout.of(params).dim, generator=g, dtype=torch.float64)
    seconds, errors = {}, {}
    for name in HVP_METHODS:
        try:
            op = hvp_operator(loss, params, name)  # reverse-cached builds its graphs here (not timed)
            op(V.to(op.device))
        except Exception as e:  # noqa: BLE001 -- a method that cannot run is recorded, not fatal
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        times = []
        for _ in range(repeats):
            _sync(op.device)
            t0 = time.perf_counter()
            op(V.to(op.device))
            _sync(op.device)
            times.append(time.perf_counter() - t0)
        seconds[name] = min(times)
    _require(bool(seconds), f"no HVP method ran: {errors}")
    return HvpChoice(min(seconds, key=seconds.get), seconds, errors)


# ---------------------------------------------------------------- Lanczos
@dataclass(frozen=True, eq=False)
class EigResult:
    """Top-k eigenpairs, largest algebraic first."""
    eigenvalues: Tensor  # [k] fp64 Ritz values (loss units per parameter²)
    eigenvectors: Tensor  # [k, D] fp64 unit Ritz vectors (rows); `eigenvector_dicts` for params shape
    residuals: Tensor  # [k] fp64 ‖Hv − λv‖ / |λ|, from one extra block HVP
    converged: Tensor  # [k] bool: residual <= tol
    n_hvp: int  # vector HVPs used: Lanczos steps + the residual blocks
    n_iter: int  # Lanczos steps
    wall_time: float  # seconds
    layout: ParamLayout | None = field(default=None, repr=False)

    def eigenvector_dicts(self) -> list[dict[str, Tensor]]:
        _require(self.layout is not None, "this result has no parameter layout (a plain-matrix operator)")
        return [self.layout.unflatten(v) for v in self.eigenvectors]


def _orthogonalise(w: Tensor, Q: Tensor) -> Tensor:
    """w minus its component in span(rows of Q): classical Gram–Schmidt, two passes (one loses digits
    when w is nearly in the span, which is exactly when Ritz values have converged)."""
    for _ in range(2):
        w = w - (Q @ w) @ Q
    return w


def _ritz(alpha: list, beta: list, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k Ritz values θ (descending), their eigenvectors S [j, k] of T_j and the estimated relative
    residuals β_j |s_i[−1]| / |θ_i|; fp64 LAPACK tridiagonal solver, in NumPy (T is tiny: no tensors)."""
    theta, S = eigh_tridiagonal(np.asarray(alpha), np.asarray(beta[:-1]))  # ascending
    theta, S = theta[::-1][:k], S[:, ::-1][:, :k]
    scale = np.maximum(np.abs(theta), np.finfo(np.float64).eps * max(np.abs(theta).max(), 1e-300))
    return theta, S, beta[-1] * np.abs(S[-1]) / scale


def _random_unit(dim: int, Q: Tensor, g: torch.Generator) -> Tensor:
    q = _orthogonalise(torch.randn(dim, generator=g, dtype=torch.float64).to(Q.device), Q)
    return q / q.norm()


def _start_vector(dim: int, warm_start: Tensor | None, g: torch.Generator) -> Tensor:
    """The sum of the given (previous) eigenvectors, normalised, so the Krylov space starts inside
    their span; a seeded Gaussian otherwise."""
    if warm_start is None:
        q = torch.randn(dim, generator=g, dtype=torch.float64)
    else:
        W = warm_start.to(torch.float64).reshape(-1, dim)
        q = (W / W.norm(dim=1, keepdim=True)).sum(0)
    return q / q.norm()


def _validate(cfg: LanczosConfig, dim: int, warm_start) -> None:
    _require(isinstance(cfg.k, int) and 1 <= cfg.k <= dim,
             f"k={cfg.k!r}; allowed: 1 <= k <= {dim} (the number of parameters)")
    _require(cfg.tol > 0, f"tol={cfg.tol!r}; allowed: tol > 0")
    _require(cfg.max_iter >= cfg.k, f"max_iter={cfg.max_iter!r}; allowed: max_iter >= k = {cfg.k}")
    _require(warm_start is None or (warm_start.numel() % dim == 0 and warm_start.numel() > 0
                                    and bool(torch.isfinite(warm_start).all())),
             f"warm_start of shape {tuple(warm_start.shape) if warm_start is not None else None}; "
             f"allowed: finite [p, {dim}] previous eigenvectors")


def lanczos(op: Operator, cfg: LanczosConfig = LanczosConfig(), *, warm_start: Tensor | None = None) -> EigResult:
    """Top-k eigenpairs of the symmetric `op` (module docstring: recurrence, reorthogonalisation,
    stopping rule, breakdown). `warm_start`: [p, D] previous eigenvectors to start from."""
    t0, dim = time.perf_counter(), op.dim
    _validate(cfg, dim, warm_start)
    g = torch.Generator().manual_seed(cfg.seed)
    m, n0 = min(cfg.max_iter, dim), op.n_vectors
    Q = torch.empty(m, dim, dtype=torch.float64, device=op.device)  # basis rows, written before read (empty: no
    # page touching of unused rows, 55 MB at m = 300, D = 23k)
    alpha, beta, est_tol = [], [], cfg.tol  # T's diagonal and off-diagonal as Python floats (T lives on CPU)
    q = _start_vector(dim, warm_start, g).to(op.device)
    for j in range(m):
        Q[j] = q
        w = op(q[None], check=False)[0]
        a = q @ w
        w = _orthogonalise(w, Q[:j + 1])
        a, b = torch.stack([a, w.norm()]).tolist()  # the one device sync per step
        _require(math.isfinite(a) and math.isfinite(b), _DIVERGED_HVP)  # NaN/inf in w reaches both
        alpha.append(a)
        broke = b <= cfg.breakdown_tol * max(abs(x) for x in alpha)
        beta.append(0.0 if broke else b)  # breakdown: invariant subspace, T decouples here
        if broke and j + 1 < m:  # its Ritz pairs are exact but maybe not the top ones: restart first,
            q = _random_unit(dim, Q[:j + 1], g)  # so the next check also covers the complement
            continue
        if j + 1 >= cfg.k:
            theta, S, est = _ritz(alpha, beta, cfg.k)
            if bool((est <= est_tol).all()) or j + 1 == m:
                res = _result(op, Q[:j + 1], theta, S, cfg, n0, j + 1, t0)
                if bool(res.converged.all()) or j + 1 == m:
                    return res
                est_tol *= 0.5 * min(1.0, cfg.tol / float(res.residuals.max()))  # estimate was optimistic
        q = w / b
    raise AssertionError("unreachable: the loop returns at j + 1 == m")


def _result(op: Operator, Q: Tensor, theta: np.ndarray, S: np.ndarray, cfg: LanczosConfig, n0: int,
            n_iter: int, t0: float) -> EigResult:
    """Ritz vectors y = Sᵀ Q (fp64) and their true relative residuals from one block HVP."""
    theta, S = torch.from_numpy(theta.copy()).to(Q.device), torch.from_numpy(S.copy()).to(Q.device)
    Y = S.T @ Q
    Y = Y / Y.norm(dim=1, keepdim=True)
    R = op(Y) - theta[:, None] * Y
    res = R.norm(dim=1) / theta.abs().clamp_min(torch.finfo(torch.float64).tiny)
    return EigResult(theta, Y, res, res <= cfg.tol, op.n_vectors - n0, n_iter, time.perf_counter() - t0,
                     op.layout)


def top_eigenpairs(loss: Loss, params: Params, cfg: LanczosConfig = LanczosConfig(), *,
                   hvp: str = DEFAULT_HVP, warm_start: Tensor | Sequence[Params] | None = None) -> EigResult:
    """Top-k Hessian eigenpairs of `loss` at `params` ('LA' order). `warm_start`: previous eigenvectors
    as a [p, D] tensor or params-shaped dicts (tracking along training)."""
    op = hvp_operator(loss, params, hvp)
    if warm_start is not None and not isinstance(warm_start, Tensor):
        warm_start = torch.stack([op.layout.flatten(v) for v in warm_start])
    return lanczos(op, cfg, warm_start=warm_start)


def lambda_max(loss: Loss, params: Params, cfg: LanczosConfig = LanczosConfig(k=1), **kw) -> Tensor:
    """λ_max (largest algebraic eigenvalue), fp64 scalar; `top_eigenpairs` for its residual."""
    return top_eigenpairs(loss, params, cfg, **kw).eigenvalues[0]


def frobenius_topk(result: EigResult) -> Tensor:
    """sqrt(Σ_{i≤k} λᵢ²) over the result's top k: the paper's plotted ‖H‖_F curves (K = 5)."""
    return result.eigenvalues.pow(2).sum().sqrt()


# ---------------------------------------------------------------- stochastic trace and norm estimates
@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo estimate: value ± stderr from n_hvp vector HVPs."""
    value: float
    stderr: float
    n_hvp: int


def _rademacher(n: int, op: Operator, g: torch.Generator) -> Tensor:
    """[n, D] fp64 ±1 probes, drawn on the CPU generator (seeded, device-independent), moved to op's device."""
    return torch.randint(0, 2, (n, op.dim), generator=g).to(op.device, torch.float64).mul_(2).sub_(1)


def _blocks(op: Operator, Z: Tensor, block: int) -> Tensor:
    return torch.cat([op(Zb) for Zb in Z.split(block)])


def _mean_se(x: Tensor, n_hvp: int, offset: float = 0.0) -> Estimate:
    se = float(x.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else math.inf
    return Estimate(offset + float(x.mean()), se, n_hvp)


def hutchinson_trace(op: Operator, m: int = 100, *, generator: torch.Generator, block: int = 10) -> Estimate:
    """tr H ≈ (1/m) Σ zᵢᵀ H zᵢ, Rademacher zᵢ (unbiased; variance 2(‖H‖_F² − Σ H_jj²)/m)."""
    _require(m >= 2, f"m={m!r}; allowed: m >= 2 probes")
    Z = _rademacher(m, op, generator)
    return _mean_se((Z * _blocks(op, Z, block)).sum(1), m)


def hutchpp_trace(op: Operator, m: int = 99, *, generator: torch.Generator, block: int = 10) -> Estimate:
    """Hutch++ (Meyer et al. 2021, Alg. 1) with m HVPs: S, G Rademacher [m/3, D]; Q = orth(H S);
    tr H ≈ tr(Qᵀ H Q) + (3/m) Σ gᵢᵀ (I−QQᵀ) H (I−QQᵀ) gᵢ. Unbiased; the stderr is the remainder's
    Hutchinson stderr given Q (the sketch term is exact given Q)."""
    _require(m >= 6, f"m={m!r}; allowed: m >= 6 HVPs (3 groups of >= 2)")
    r = m // 3
    S, G = _rademacher(r, op, generator), _rademacher(r, op, generator)
    Q = torch.linalg.qr(_blocks(op, S, block).T).Q.T  # [r, D] orthonormal rows
    sketch = float((Q * _blocks(op, Q, block)).sum())
    Gp = G - (G @ Q.T) @ Q
    return _mean_se((Gp * _blocks(op, Gp, block)).sum(1), 3 * r, offset=sketch)


def frobenius_sq(op: Operator, m: int = 100, *, generator: torch.Generator, block: int = 10) -> Estimate:
    """‖H‖_F² = tr(H²) ≈ (1/m) Σ ‖H zᵢ‖², Rademacher zᵢ (unbiased): the true Frobenius norm, squared."""
    _require(m >= 2, f"m={m!r}; allowed: m >= 2 probes")
    Z = _rademacher(m, op, generator)
    return _mean_se(_blocks(op, Z, block).pow(2).sum(1), m)


def frobenius_table_column(op: Operator, m: int = 100, *, generator: torch.Generator, block: int = 10) -> float:
    """The AUTHORS' Table-1 "‖H‖_F" quantity: sqrt((1/m) Σ ‖H zᵢ‖) with the norm unsquared, Rademacher zᵢ.
    Since E‖Hz‖ <= (E‖Hz‖²)^{1/2} = ‖H‖_F, this is ≈ ‖H‖_F^{1/2}, not ‖H‖_F; report it only beside the
    paper's column, labelled as theirs."""
    _require(m >= 1, f"m={m!r}; allowed: m >= 1 probes")
    Z = _rademacher(m, op, generator)
    return math.sqrt(float(_blocks(op, Z, block).norm(dim=1).mean()))
