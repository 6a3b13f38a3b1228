"""He, Huang, Yuan 2019, App. A: asymmetric valleys in a 2-parameter "network", batched over seeds.

The model (authors' `logistic_regression_2params.py`, PROTOCOLS.md): 1-D inputs, n = 10 points per
class, class 0 ~ N(+1, 1) with label 0, class 1 ~ N(−1, 1) with label 1; f(x) = σ(w·x + b) (Linear(1, 1)
+ sigmoid), mean binary cross-entropy

    L(θ) = (1/N) Σ_j [softplus(z_j) − y_j·z_j],   z_j = w·x_j + b,   θ = (w, b),
    ∇L(θ) = (1/N) Σ_j (σ(z_j) − y_j)·(x_j, 1),     ∇²L(θ) = (1/N) Σ_j σ(z_j)(1 − σ(z_j))·(x_j, 1)(x_j, 1)ᵀ.

Authors' setup: full-batch GD, lr 0.01, no momentum, 30 steps from PyTorch's default Linear(1, 1) init
(w, b ~ U(−1, 1)); SWA = equal-weight mean of the 30 iterates after each step; one `paper` direction
d ~ U[0,1)², d/‖d‖; training loss at θ_SWA + k·0.5·d, k = −15..15; seeds 0..49.
CAVEAT (PROTOCOLS.md): 30 steps of lr 0.01 barely leave the initialisation, so θ_SWA is not a minimum,
and the scan is centred on SWA although the authors' figure labels the centre "SGD solution". An
off-minimum centre tilts every line (one side descends first), which by itself looks asymmetric;
the `converged` variant (many more steps, scan centred at the GD solution) removes that confound.

Per seed, the data, the init and the directions come from one `torch.Generator(seed)` in the
authors' order (x0, x1, net weight and bias, the unused SWA net's weight and bias, then the
directions), so seed s reproduces the authors' data, init and first direction exactly; directions
2..K continue the same stream. Computation is float64 ("exact" loss). `loss_mode="authors"` instead
evaluates the scan like their float32 code (sigmoid, then BCELoss with log clamped at −100), which
saturates for |z| ≳ 17 and adds artificial steepness far out on the line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TwoParamConfig", "AUTHORS", "converged", "TwoParamDraws", "GDPath", "TwoParamRun",
    "draw_seeds", "bce", "bce_grad", "bce_hessian", "gd", "scan_steps", "scan_lines",
    "quadratic_lines", "run_twoparam",
]

F64 = torch.float64


@dataclass(frozen=True)
class TwoParamConfig:
    """One App. A experiment; defaults are the authors' settings."""

    n_per_class: int = 10  # training points per class
    class_mean: float = 1.0  # class 0 ~ N(+class_mean, 1) (label 0), class 1 ~ N(−class_mean, 1) (label 1)
    lr: float = 0.01  # full-batch GD step size
    steps: int = 30  # GD steps (authors: 30, not converged)
    center: str = "swa"  # scan centre: "swa" (mean of the iterates after each step) or "final" (last iterate)
    scan_scale: float = 0.5  # distance between scan points (units of θ along a unit direction)
    scan_half: int = 15  # scan points k·scan_scale for k = −scan_half..scan_half
    n_directions: int = 20  # `paper` directions per seed (authors: 1 per seed)
    loss_mode: str = "exact"  # "exact" (float64 softplus form) or "authors" (float32 sigmoid + clamped BCELoss)

    def __post_init__(self):
        if self.center not in ("swa", "final") or self.loss_mode not in ("exact", "authors"):
            raise ValueError(f"center must be 'swa'|'final' and loss_mode 'exact'|'authors'; got "
                             f"center={self.center!r}, loss_mode={self.loss_mode!r}")
        if min(self.n_per_class, self.steps, self.scan_half, self.n_directions) < 1 or self.lr <= 0:
            raise ValueError(f"n_per_class, steps, scan_half, n_directions must be >= 1 and lr > 0; got {self}")


AUTHORS = TwoParamConfig()


def converged(steps: int, lr: float, **kw) -> TwoParamConfig:
    """The converged variant: GD run to (near) its minimum, scan centred at the GD solution."""
    return replace(AUTHORS, steps=steps, lr=lr, center="final", **kw)


@dataclass(frozen=True)
class TwoParamDraws:
    x: Tensor  # [S, N] inputs (N = 2·n_per_class), float64 (sampled in float32 like the authors)
    y: Tensor  # [S, N] labels 0/1, float64
    theta0: Tensor  # [S, 2] initial (w, b)
    directions: Tensor  # [S, K, 2] `paper` directions, U[0,1)² / ‖·‖


def _draw_one(seed: int, cfg: TwoParamConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Data, init and directions of one seed, in the authors' draw order (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    ones = torch.ones(cfg.n_per_class, 1)
    x = torch.cat([torch.normal(cfg.class_mean * ones, 1.0, generator=g),
                   torch.normal(-cfg.class_mean * ones, 1.0, generator=g)]).ravel()
    params = []
    for _ in range(2):  # the trained net, then the authors' unused SWA net (its draws shift the stream)
        w = torch.nn.init.kaiming_uniform_(torch.empty(1, 1), a=math.sqrt(5), generator=g)
        b = torch.nn.init.uniform_(torch.empty(1), -1.0, 1.0, generator=g)  # bound 1/sqrt(fan_in) = 1
        params.append(torch.cat([w.ravel(), b]))
    d = torch.rand(cfg.n_directions, 2, generator=g)
    return x, params[0], d


def draw_seeds(seeds, cfg: TwoParamConfig = AUTHORS) -> TwoParamDraws:
    """Stack the per-seed draws: every seed has its own generator and its own data."""
    seeds = [int(s) for s in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds must be a non-empty list of non-negative ints; got {seeds!r}")
    xs, thetas, ds = zip(*(_draw_one(s, cfg) for s in seeds))
    x = torch.stack(xs).to(F64)
    y = torch.cat([torch.zeros(cfg.n_per_class), torch.ones(cfg.n_per_class)]).to(F64).expand_as(x).clone()
    d = torch.stack(ds).to(F64)
    return TwoParamDraws(x=x, y=y, theta0=torch.stack(thetas).to(F64), directions=d / d.norm(dim=-1, keepdim=True))


def _logits(theta: Tensor, x: Tensor) -> Tensor:
    """z = w·x + b for theta [S, *B, 2] and x [S, N] -> [S, *B, N]."""
    xb = x.view(x.shape[0], *([1] * (theta.dim() - 2)), x.shape[1])
    return theta[..., :1] * xb + theta[..., 1:]


def bce(theta: Tensor, x: Tensor, y: Tensor, mode: str = "exact") -> Tensor:
    """Mean BCE of σ(w·x + b); theta [S, *B, 2], x, y [S, N] -> [S, *B]."""
    z = _logits(theta, x)
    yb = y.view(y.shape[0], *([1] * (theta.dim() - 2)), y.shape[1])
    if mode == "exact":
        return (F.softplus(z) - yb * z).mean(-1)
    if mode == "authors":  # torch.nn.BCELoss on float32 sigmoid outputs: log terms clamped at −100
        p = torch.sigmoid(z.float())
        y32 = yb.float()
        loss = -(y32 * p.log().clamp(min=-100) + (1 - y32) * (1 - p).log().clamp(min=-100))
        return loss.mean(-1).to(theta.dtype)
    raise ValueError(f"mode must be 'exact' or 'authors'; got {mode!r}")


def bce_grad(theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Closed-form ∇L = mean((σ(z) − y)·(x, 1)); theta [S, 2] -> [S, 2]."""
    err = torch.sigmoid(_logits(theta, x)) - y
    return torch.stack([(err * x).mean(-1), err.mean(-1)], dim=-1)


def bce_hessian(theta: Tensor, x: Tensor) -> Tensor:
    """Closed-form ∇²L = mean(σ(1 − σ)·(x, 1)(x, 1)ᵀ); theta [S, 2] -> [S, 2, 2]."""
    s = torch.sigmoid(_logits(theta, x))
    v = s * (1 - s)
    xx, x1, one = (v * x * x).mean(-1), (v * x).mean(-1), v.mean(-1)
    return torch.stack([torch.stack([xx, x1], -1), torch.stack([x1, one], -1)], -2)


@dataclass(frozen=True)
class GDPath:
    theta_final: Tensor  # [S, 2] last iterate θ_T
    theta_swa: Tensor  # [S, 2] mean of θ_1..θ_T (the authors' SWA: averaged after every step)
    loss: Tensor  # [S, T + 1] training loss at θ_0..θ_T
    grad_norm: Tensor  # [S] ‖∇L(θ_T)‖ (convergence diagnostic)


def gd(theta0: Tensor, x: Tensor, y: Tensor, *, lr: float, steps: int) -> GDPath:
    """Full-batch GD θ_{t+1} = θ_t − lr·∇L(θ_t) for all seeds at once."""
    theta, total, losses = theta0.clone(), torch.zeros_like(theta0), [bce(theta0, x, y)]
    for _ in range(steps):
        theta = theta - lr * bce_grad(theta, x, y)
        total += theta
        losses.append(bce(theta, x, y))
    return GDPath(theta_final=theta, theta_swa=total / steps, loss=torch.stack(losses, -1),
                  grad_norm=bce_grad(theta, x, y).norm(dim=-1))


def scan_steps(cfg: TwoParamConfig = AUTHORS) -> Tensor:
    """l = k·scan_scale for k = −scan_half..scan_half (authors: −7.5..7.5 in steps of 0.5) -> [s]."""
    return torch.arange(-cfg.scan_half, cfg.scan_half + 1, dtype=F64) * cfg.scan_scale


def scan_lines(center: Tensor, directions: Tensor, steps: Tensor, x: Tensor, y: Tensor,
               mode: str = "exact") -> Tensor:
    """Training loss at center + l·d for every seed, direction and step in one call -> [S, K, s]."""
    theta = center[:, None, None, :] + steps[None, None, :, None] * directions[:, :, None, :]
    return bce(theta, x, y, mode)


def quadratic_lines(center: Tensor, theta_star: Tensor, hessian: Tensor, directions: Tensor,
                    steps: Tensor) -> Tensor:
    """½(θ − θ*)ᵀH(θ − θ*) at θ = center + l·d -> [S, K, s]: a symmetric landscape (negative control).

    Through θ* every line is an even function of l; centred elsewhere the line is tilted, which is
    what an off-minimum scan (the authors' SWA centre) does to any landscape.
    """
    theta = center[:, None, None, :] + steps[None, None, :, None] * directions[:, :, None, :]
    diff = theta - theta_star[:, None, None, :]
    return 0.5 * torch.einsum("skli,sij,sklj->skl", diff, hessian, diff)


@dataclass(frozen=True)
class TwoParamRun:
    draws: TwoParamDraws
    path: GDPath
    center: Tensor  # [S, 2] scan centre
    steps: Tensor  # [s] scan offsets l
    losses: Tensor  # [S, K, s] training loss along every direction


def run_twoparam(seeds, cfg: TwoParamConfig = AUTHORS) -> TwoParamRun:
    """Draw, train by GD, and scan every seed's `paper` directions (one batched scan)."""
    draws = draw_seeds(seeds, cfg)
    path = gd(draws.theta0, draws.x, draws.y, lr=cfg.lr, steps=cfg.steps)
    center = path.theta_swa if cfg.center == "swa" else path.theta_final
    steps = scan_steps(cfg)
    losses = scan_lines(center, draws.directions, steps, draws.x, draws.y, cfg.loss_mode)
    return TwoParamRun(draws=draws, path=path, center=center, steps=steps, losses=losses)
