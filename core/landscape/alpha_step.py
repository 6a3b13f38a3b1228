"""The SGD step along the sharpest direction, rescaled: Jastrzebski et al. 2019 §3.2, Fig. 4 (right),
registry SD-3 ("after the peak, the SGD step along the top Hessian eigenvector is too large: doubling it
raises the loss, halving it lowers it").

At parameters θ, with e₁ the unit top eigenvector of the Hessian (Lanczos 'LA', computed by the caller),
a mini-batch S of the training batch size gives g_S = ∇L_S(θ) and its component g̃₁ = ⟨g_S, e₁⟩; the SGD
step moves θ along e₁ by −η·g̃₁. The probe scales that step by α and measures, on fixed evaluation rows,
    r(α) = (L(θ − α·η·g̃₁·e₁) − L(θ)) / L(θ)          (dimensionless; the sign of e₁ cancels).
The claim: r(2) > 0, r(4) > 0 and r(0.5) < 0.

What the three signs mean. Along e₁, L(θ − s·e₁) = L(θ) − s·g₁ + ½κ₁s² + O(s³) with g₁ = ⟨∇L(θ), e₁⟩
and κ₁ = e₁ᵀ∇²L(θ)e₁ the evaluated loss's slope and curvature (κ₁ = λ₁ when e₁ is L's own top
eigenvector; SD-3 takes e₁ from SD-1's Hessian on other rows, so κ₁ ≈ λ₁ only), so
    ΔL(α) = α·η·g̃₁·(½·α·η·κ₁·g̃₁ − g₁).
Without mini-batch noise (g̃₁ = g₁ = κ₁u₁, u₁ the distance to the valley floor along e₁) this is
½κ₁u₁²[(1 − αηκ₁)² − 1]: α = 2 raises the loss iff ηκ₁ > 1 (the step overshoots the floor). Averaged
over mini-batches with E g̃₁ = g₁ and Var g̃₁ = σ²,
    E ΔL(α) = α·η·g₁²·(½·α·η·κ₁·(1 + σ²/g₁²) − 1),
so the three signs together read 1 < ηκ₁(1 + σ²/g₁²) < 4 (α = 4 then follows): the step is too large in
the mean-square sense, by curvature (ηκ₁ > 1) or by mini-batch noise on a flatter e₁ (ηκ₁ < 1 and
σ²/g₁² > 1/(ηκ₁) − 1). At the floor of the e₁ valley (g₁ = 0) every α raises the loss and the α = 0.5
part fails. The statistic is the registry's (the mini-batch step, as SGD takes it); `alpha_step` also
returns g₁ and κ₁ (`along_e1`), so that a reader can tell the two causes apart: ηκ₁ and
mean(g̃₁²)/g₁², reported beside the verdict.

Computation: a pure function of a params dict (`torch.func.functional_call` on a private eval-mode
copy; the live model is never touched). The M mini-batch gradients come from one `vmap` of
`torch.func.grad` over the batches; the M·A points θ − α·η·g̃₁·e₁ and θ itself are evaluated in one
vmapped call, in `AlphaStepConfig.dtype`. fp64 by default: on the cpu-tier MLP late in training
(L ≈ 5e-3) fp32 puts errors up to 1.2e-6 on single r(α) values whose checkpoint means are 2e-5 at
α = 0.25; fp64 costs about 2.4× the time. No per-point `.item()`.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from core.hessian import per_row_loss

__all__ = ["AlphaStepConfig", "AlphaStep", "step_points", "point_losses", "relative_changes",
           "minibatch_gradients", "project", "along_e1", "network_loss", "alpha_step", "seed_mean",
           "pick_checkpoints", "minibatch_rows"]

Params = Mapping[str, Tensor]


@dataclass(frozen=True)
class AlphaStepConfig:
    """The rescaled SGD steps probed at one checkpoint (registry SD-3)."""
    alphas: tuple[float, ...]  # multiples α of the SGD step along e₁ (dimensionless)
    lr: float  # η, the training learning rate the step is taken with
    dtype: torch.dtype = torch.float64  # arithmetic of gradients and losses (module docstring: why fp64)
    chunk: int | None = 8  # points per vmapped loss evaluation (None: all at once). 8 keeps the cpu-tier
    # MLP's [points, 1000 rows, 128] fp64 activations near cache: one checkpoint's probe 0.47 s against
    # 0.67 s with all 51 points at once (fp32: 0.19 s; one thread on a shared 2-core machine)

    def __post_init__(self):
        _require(len(self.alphas) >= 1 and all(math.isfinite(a) and a > 0 for a in self.alphas),
                 f"alphas={self.alphas!r}; allowed: a non-empty tuple of finite α > 0")
        _require(self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr!r}; allowed: a finite lr > 0")
        _require(self.chunk is None or self.chunk >= 1, f"chunk={self.chunk!r}; allowed: None or >= 1")


@dataclass(frozen=True, eq=False)
class AlphaStep:
    """One checkpoint's probe output."""
    rel: Tensor  # [M, A] relative loss change r(α) per mini-batch (rows) and α (columns)
    g1: Tensor  # [M] g̃₁ = ⟨g_S, e₁⟩ per mini-batch (loss units per parameter unit)
    loss0: Tensor  # [] L(θ) on the evaluation rows
    g1_full: Tensor | None = None  # [] g₁ = ⟨∇L(θ), e₁⟩ of the evaluated loss (descriptive; `along_e1`)
    curvature: Tensor | None = None  # [] κ₁ = e₁ᵀ∇²L(θ)e₁ of the evaluated loss (loss units per parameter²)


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


# ---------------------------------------------------------------- the generic probe (any loss of a params dict)
def step_points(params: Params, e1: Params, coef: Tensor) -> dict[str, Tensor]:
    """θ − coef[p]·e₁ for every p: {name: [P, *shape]} (coef [P] in parameter units along unit e₁)."""
    return {n: p[None] - coef.reshape(-1, *[1] * p.dim()) * e1[n][None] for n, p in params.items()}


def point_losses(loss: Callable[[Params], Tensor], points: Params, chunk: int | None = None) -> Tensor:
    """loss at each of the P stacked points {name: [P, ...]} -> [P], in one vmapped call (or chunks)."""
    return vmap(loss, chunk_size=chunk)(dict(points))


def relative_changes(loss: Callable[[Params], Tensor], params: Params, e1: Params, g1: Tensor,
                     cfg: AlphaStepConfig) -> tuple[Tensor, Tensor]:
    """([M, A] r(α) for every mini-batch projection g1 [M] and α of cfg, L(θ)). θ itself is point 0 of
    the same vmapped evaluation, so L(θ) and the stepped losses share one arithmetic path."""
    params = {n: p.to(cfg.dtype) for n, p in params.items()}
    e1 = {n: v.to(cfg.dtype) for n, v in e1.items()}
    norm = float(sum(v.pow(2).sum() for v in e1.values()).sqrt())
    _require(abs(norm - 1) <= 1e-6, f"‖e₁‖ = {norm:.9g}; allowed: a unit vector (the step is −α·η·⟨g, e₁⟩·e₁)")
    alphas = torch.tensor(cfg.alphas, dtype=cfg.dtype, device=g1.device)
    coef = (cfg.lr * g1.to(cfg.dtype)[:, None] * alphas[None]).reshape(-1)  # [M·A] α·η·g̃₁
    coef = torch.cat([coef.new_zeros(1), coef])
    losses = point_losses(loss, step_points(params, e1, coef), cfg.chunk)
    rel = ((losses[1:] - losses[0]) / losses[0]).reshape(len(g1), len(cfg.alphas))
    _require(bool(torch.isfinite(rel).all()) and bool(losses[0] > 0),
             f"non-finite relative loss change (L(θ) = {float(losses[0]):.3g}): a diverged state or a zero loss")
    return rel, losses[0]


def minibatch_gradients(batch_loss: Callable[[Params, Tensor, Tensor], Tensor], params: Params,
                        xb: Tensor, yb: Tensor) -> dict[str, Tensor]:
    """∇_θ batch_loss(θ, xb[m], yb[m]) for every mini-batch m of xb [M, S, ...], yb [M, S]: {name: [M, ...]},
    one vmap of torch.func.grad over the batches."""
    return vmap(grad(batch_loss), in_dims=(None, 0, 0))(dict(params), xb, yb)


def project(grads: Params, e1: Params) -> Tensor:
    """⟨g_m, e₁⟩ for stacked gradients {name: [M, ...]} -> [M]."""
    return sum((g.reshape(g.shape[0], -1) * e1[n].reshape(1, -1).to(g.dtype)).sum(1) for n, g in grads.items())


def along_e1(loss: Callable[[Params], Tensor], params: Params, e1: Params) -> tuple[Tensor, Tensor]:
    """(g₁ = ⟨∇L(θ), e₁⟩, κ₁ = e₁ᵀ∇²L(θ)e₁): the loss's slope and curvature along e₁, from one
    forward-over-reverse call (jvp of grad gives ∇L and the HVP ∇²L·e₁ together)."""
    e1 = {n: e1[n].to(p.dtype) for n, p in params.items()}
    g, hv = jvp(grad(loss), (dict(params),), (e1,))
    dot = lambda a: sum((a[n] * e1[n]).sum() for n in e1)  # noqa: E731
    return dot(g), dot(hv)


# ---------------------------------------------------------------- on a network
def network_loss(model: nn.Module, criterion: str, l2: float = 0.0,
                 dtype: torch.dtype = torch.float64) -> Callable[[Params, Tensor, Tensor], Tensor]:
    """f(θ, x, y) = mean `criterion` loss of `model` on (x, y) + (l2/2)·‖θ‖² (the objective SGD
    minimises), through functional_call on a private eval-mode copy in `dtype`."""
    module = copy.deepcopy(model).to(dtype).eval()
    buffers = dict(module.named_buffers())

    def f(params: Params, x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(module, ({**params, **buffers}), (x,))
        value = per_row_loss(out, y, criterion) / y.shape[-1]
        return value + 0.5 * l2 * sum(p.pow(2).sum() for p in params.values()) if l2 else value
    return f


def alpha_step(model: nn.Module, params: Params, e1: Params, x: Tensor, y: Tensor, rows: Tensor,
               cfg: AlphaStepConfig, *, criterion: str = "cross_entropy", l2: float = 0.0) -> AlphaStep:
    """The probe at one checkpoint of a network: mini-batch gradients on x[rows[m]], y[rows[m]]
    (rows [M, S]), g̃₁ = ⟨g_m, e₁⟩, and r(α) with L the loss on all of (x, y); with L's own g₁ and κ₁."""
    _require(rows.dim() == 2 and rows.shape[0] >= 1, f"rows of shape {tuple(rows.shape)}; allowed: [M, S]")
    f = network_loss(model, criterion, l2, cfg.dtype)
    theta = {n: p.detach().to(cfg.dtype) for n, p in params.items()}
    xd = x.to(cfg.dtype)
    g1 = project(minibatch_gradients(f, theta, xd[rows], y[rows]), e1)
    full = lambda p: f(p, xd, y)  # noqa: E731
    rel, loss0 = relative_changes(full, theta, e1, g1, cfg)
    return AlphaStep(rel, g1, loss0, *along_e1(full, theta, e1))


def seed_mean(steps: Sequence[AlphaStep | None]) -> tuple[Tensor | None, int]:
    """(mean r(α) [A] over a seed's checkpoints and their mini-batches, number of checkpoints left out).
    None entries are checkpoints whose e₁ did not converge: left out and counted; a seed with none left
    is None (no evidence), never NaN."""
    kept = [s.rel for s in steps if s is not None]
    return (torch.cat(kept).mean(0) if kept else None), len(steps) - len(kept)


# ---------------------------------------------------------------- where and on what (registry SD-3 settings)
def pick_checkpoints(steps: Sequence[int], t_peak: int, T: int, n: int) -> tuple[list[int], int]:
    """(indices into `steps`, number of coincident picks dropped): for j = 0..n−1 the stored checkpoint
    nearest to t_peak + j·(T − t_peak)/(n − 1) (the earlier one on a tie), each index once."""
    _require(n >= 2 and 0 <= t_peak <= T, f"n={n!r}, t_peak={t_peak!r}, T={T!r}; allowed: n >= 2, 0 <= t_peak <= T")
    s = torch.as_tensor(list(steps), dtype=torch.float64)
    picks = [int((s - (t_peak + j * (T - t_peak) / (n - 1))).abs().argmin()) for j in range(n)]
    unique = sorted(set(picks))
    return unique, len(picks) - len(unique)


def minibatch_rows(n_rows: int, n_batches: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """[n_batches, batch_size] row indices: each batch the first `batch_size` of its own
    torch.randperm(n_rows, generator) (rows distinct within a batch; batches drawn independently)."""
    _require(1 <= batch_size <= n_rows, f"batch_size={batch_size!r}; allowed: 1..{n_rows} (the rows)")
    return torch.stack([torch.randperm(n_rows, generator=generator)[:batch_size] for _ in range(n_batches)])
