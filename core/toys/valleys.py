"""He, Huang, Yuan 2019, Theorems 1 and 2 on synthetic asymmetric valleys (float64, exact where possible).

Theorem 1 (§4.1, "bias leads to better generalization"). A separable valley in the u-basis,
L̂(w) = Σ_i g_i(o_i·w_i), u^i = o_i·e_i (o_i = ±1 says which side of coordinate i is flat), with

    g(x; a, b, r) = a·x²/(2r)      0 ≤ x ≤ r          (C¹ quadratic core, minimum 0 at x = 0)
                  = a·(x − r/2)    x ≥ r              (flat side: outward slope a ≤ p)
                  = b·x²/(2r)      −r ≤ x ≤ 0
                  = b·(−x − r/2)   x ≤ −r             (sharp side: outward slope b ≥ c·p)

so every u^i is (r̄, r, p_i, c_i)-asymmetric at ŵ* = 0 (Definition 1) for any r̄ > r, and Assumption 2
holds for every R' (the line along u^i is the same at every perpendicular offset). Assumption 1: the
population loss is the empirical loss shifted by δ, δ_i = ±δ̄_i with probability ½ each, plus a
bounded perturbation, L(w; δ) = L̂(w − δ) + (ξ/2)·e(w) with |e| ≤ 1; the (δ, R)-shift gap against
L' = L − min L + min L̂ is then ≤ ξ/2 + ξ/2 = ξ for every R. The theorem claims

    E_δ L(ŵ*) − E_δ L(ŵ* + Σ l_i u^i) ≥ Σ_i (c_i − 1)·l_i·p_i/2 − 2kξ > 0
    if 4ξ/((c_i − 1)p_i) < l_i ≤ max{r̄ − δ̄_i, δ̄_i − r},   r̄ ≥ δ̄_i ≥ r.

Derivation (ours; App. B is not in our copy). Per coordinate, with the flat side at +:
δ_i = +δ̄: L̂ moves from g(−δ̄) to g(l − δ̄), a descent on the sharp side worth ≥ c·p·l iff the
segment [−δ̄, l − δ̄] stays in [−r̄, −r], i.e. l ≤ δ̄ − r; δ_i = −δ̄: from g(δ̄) to g(δ̄ + l), an ascent on
the flat side costing ≤ p·l iff δ̄ + l ≤ r̄. Averaging the two gives (c − 1)·p·l/2, so the proof needs
l_i ≤ MIN{r̄ − δ̄_i, δ̄_i − r}. With the printed MAX the claim is false: δ̄ = r, l = 2r ≤ r̄ − r gives a
gain r·(b − 5a)/4 here (< 0 for b < 5a), and r·(b − 3a)/2 for a pure V. `random_cases(condition=...)`
generates either premise. The shift's sign convention does not matter (δ is symmetric); what matters
is that l moves toward the flat side. The theorem writes δ in the standard basis and u^i as any
orthogonal directions; the proof needs δ's components along the u^i, which is what this
axis-aligned family has.

Theorem 2 (§5.1, "SGD averaging generates a bias"): SGD w_{t+1} = w_t − η(∇L(w_t) + ω_t) on the 1-D
valley L(w) = a₊·w (w ≥ 0), −c·a₊·w (w < 0), bounded noise ω_t ~ U(−ν, ν), ν ≤ a₊; the paper
averages within oscillation rounds, we average every iterate after a burn-in (what SWA does).
E[w̄] > 0 (the flat side); with c = 1 the valley is symmetric and E[w̄] = 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "ValleyCase", "valley_1d", "empirical_loss", "population_loss", "sign_vectors",
    "expected_gain", "mc_gain", "theorem1_bound", "random_cases", "symmetric_control",
    "adversarial_perturbation", "sine_perturbation",
    "SGDValleyConfig", "SGDValleyResult", "sgd_valley_loss", "simulate_sgd_valley",
]

F64 = torch.float64
MAX_EXACT_D = 16  # 2^16 sign vectors: the largest d the exact expectation enumerates
Perturbation = Callable[[Tensor, "ValleyCase"], Tensor]  # e(w [..., S, d], case) -> [..., S], |e| ≤ 1


# ---------------------------------------------------------------- Theorem 1: the valley family
@dataclass(frozen=True)
class ValleyCase:
    """Batch of separable asymmetric valleys with Theorem 1's constants; tensors [..., d] or [...]."""

    a: Tensor  # [..., d] flat-side outward slope beyond r (Definition 1 needs a < p; a = p is the tight limit)
    b: Tensor  # [..., d] sharp-side outward slope beyond r (b > c·p; b = c·p is the tight limit)
    p: Tensor  # [..., d] Definition-1 p_i
    c: Tensor  # [..., d] Definition-1 c_i > 1
    orient: Tensor  # [..., d] ±1: u^i = orient_i·e_i points to the flat side of coordinate i
    r: Tensor  # [...] inner radius r (shared by all coordinates, as in Assumption 2)
    rbar: Tensor  # [...] outer radius r̄
    dbar: Tensor  # [..., d] shift magnitudes δ̄_i ∈ [r, r̄]
    l: Tensor  # [..., d] bias toward the flat side, l_i > 0 (units of w)
    xi: Tensor  # [...] shift-gap bound ξ ≥ 0

    @property
    def d(self) -> int:
        return self.a.shape[-1]


def valley_1d(x: Tensor, a: Tensor, b: Tensor, r: Tensor) -> Tensor:
    """g(x; a, b, r): C¹ valley, quadratic core on [−r, r], slope a for x > r and −b for x < −r."""
    slope = torch.where(x >= 0, a, b)
    ax = x.abs()
    return torch.where(ax <= r, slope * ax**2 / (2 * r), slope * (ax - r / 2))


def empirical_loss(w: Tensor, case: ValleyCase) -> Tensor:
    """L̂(w) = Σ_i g(o_i·w_i; a_i, b_i, r); w [..., S, d] broadcast against the case -> [..., S]."""
    expand = lambda t: t.unsqueeze(-2)  # noqa: E731  [..., d] -> [..., 1, d] against the S axis
    g = valley_1d(w * expand(case.orient), expand(case.a), expand(case.b), case.r[..., None, None])
    return g.sum(-1)


def population_loss(w: Tensor, delta: Tensor, case: ValleyCase, perturb: Perturbation | None = None) -> Tensor:
    """L(w; δ) = L̂(w − δ) + (ξ/2)·e(w); w, delta [..., S, d] -> [..., S] (Assumption 1)."""
    loss = empirical_loss(w - delta, case)
    if perturb is not None:
        loss = loss + case.xi[..., None] / 2 * perturb(w, case)
    return loss


def sign_vectors(d: int) -> Tensor:
    """All 2^d vectors in {−1, +1}^d as a float64 tensor [2^d, d] (row k = the bits of k)."""
    if not (isinstance(d, int) and 1 <= d <= MAX_EXACT_D):
        raise ValueError(f"d must be an int in [1, {MAX_EXACT_D}] for exact enumeration; got {d!r}")
    bits = (torch.arange(2**d)[:, None] >> torch.arange(d)[None, :]) & 1
    return (2 * bits - 1).to(F64)


def _gain(signs: Tensor, case: ValleyCase, perturb: Perturbation | None) -> Tensor:
    """Mean over the shift rows signs [..., S, d] of L(ŵ*; δ) − L(ŵ* + Σ l_i u^i; δ).

    A mean within 64 ulp of the losses' magnitude is returned as exactly 0: in exact arithmetic the
    symmetric control's gain is 0 on the linear part, and rounding must not decide its sign.
    """
    delta = signs * case.dbar.unsqueeze(-2)
    w_bias = (case.l * case.orient).unsqueeze(-2).expand_as(delta)
    before = population_loss(torch.zeros_like(delta), delta, case, perturb)
    after = population_loss(w_bias, delta, case, perturb)
    gain = (before - after).mean(-1)
    scale = (before.abs() + after.abs()).mean(-1)
    return torch.where(gain.abs() <= 64 * torch.finfo(F64).eps * scale, 0.0, gain)


def expected_gain(case: ValleyCase, perturb: Perturbation | None = None) -> Tensor:
    """EXACT E_δ[L(ŵ*) − L(ŵ* + Σ l_i u^i)] over all 2^d equiprobable shifts (Theorem 1's left side) -> [...]."""
    return _gain(sign_vectors(case.d), case, perturb)


def mc_gain(case: ValleyCase, n: int, *, generator: torch.Generator, perturb: Perturbation | None = None) -> Tensor:
    """Monte-Carlo estimate of `expected_gain` from n random sign vectors (an oracle for the enumeration)."""
    signs = torch.randint(0, 2, (n, case.d), generator=generator).to(F64) * 2 - 1
    return _gain(signs, case, perturb)


def theorem1_bound(case: ValleyCase) -> Tensor:
    """Σ_i (c_i − 1)·l_i·p_i/2 − 2kξ with k = d (Theorem 1's right side) -> [...]."""
    return ((case.c - 1) * case.l * case.p).sum(-1) / 2 - 2 * case.d * case.xi


def adversarial_perturbation(w: Tensor, case: ValleyCase) -> Tensor:
    """e(w) = 2·min(‖w‖/‖l‖, 1) − 1: −1 at ŵ* = 0 and +1 at the biased point, costing the gain exactly ξ."""
    norm_l = case.l.norm(dim=-1)[..., None]
    return 2 * torch.clamp(w.norm(dim=-1) / norm_l, max=1.0) - 1


def sine_perturbation(d: int, *, generator: torch.Generator, freq: float = 3.0) -> Perturbation:
    """A smooth random e(w) = sin(⟨ω, w⟩ + φ), ω ~ N(0, freq²·I_d), φ ~ U(0, 2π)."""
    omega = freq * torch.randn(d, generator=generator, dtype=F64)
    phi = 2 * math.pi * torch.rand((), generator=generator, dtype=F64)
    return lambda w, case: torch.sin(w @ omega + phi)


def _uniform(shape, lo, hi, generator) -> Tensor:
    """U(lo, hi] samples (1 − U[0,1) keeps the upper end reachable, never the lower)."""
    return lo + (hi - lo) * (1 - torch.rand(shape, generator=generator, dtype=F64))


def random_cases(n: int, d: int, *, generator: torch.Generator, condition: str = "min", xi_frac: float = 0.0,
                 tight: bool = False) -> ValleyCase:
    """n random valleys [n, d] satisfying Theorem 1's premises.

    r ~ U(0.05, 1), r̄ = r·U(2, 6), δ̄_i ~ U(r, r̄), p_i log-uniform on [0.1, 10], c_i − 1 log-uniform on
    [0.1, 20], a_i = p_i·U(0.5, 1), b_i = c_i·p_i·U(1, 2) (tight: a = p, b = c·p), random orientation.
    condition "min" (what the proof needs) or "paper" (as printed): l_i ∈ (4ξ/((c_i−1)p_i), hi_i] with
    hi_i = min/max{r̄ − δ̄_i, δ̄_i − r}. ξ = xi_frac·min_i (c_i − 1)·p_i·hi_i/4, xi_frac ∈ [0, 1).
    """
    if condition not in ("min", "paper"):
        raise ValueError(f"condition must be 'min' or 'paper'; got {condition!r}")
    if not 0.0 <= xi_frac < 1.0:
        raise ValueError(f"xi_frac must lie in [0, 1); got {xi_frac!r}")
    if n < 1 or not 1 <= d <= MAX_EXACT_D:
        raise ValueError(f"need n >= 1 and 1 <= d <= {MAX_EXACT_D}; got n={n!r}, d={d!r}")
    g = generator
    r = _uniform((n,), 0.05, 1.0, g)
    rbar = r * _uniform((n,), 2.0, 6.0, g)
    dbar = _uniform((n, d), r[:, None], rbar[:, None], g)
    p = torch.exp(_uniform((n, d), math.log(0.1), math.log(10.0), g))
    c = 1 + torch.exp(_uniform((n, d), math.log(0.1), math.log(20.0), g))
    a = p if tight else p * _uniform((n, d), 0.5, 1.0, g)
    b = c * p if tight else c * p * _uniform((n, d), 1.0, 2.0, g)
    orient = torch.where(torch.rand((n, d), generator=g) < 0.5, -1.0, 1.0).to(F64)
    room = torch.stack([rbar[:, None] - dbar, dbar - r[:, None]])
    hi = room.amin(0) if condition == "min" else room.amax(0)
    xi = xi_frac * ((c - 1) * p * hi / 4).amin(-1)
    lo = 4 * xi[:, None] / ((c - 1) * p)
    l = _uniform((n, d), lo, hi, g)
    return ValleyCase(a=a, b=b, p=p, c=c, orient=orient, r=r, rbar=rbar, dbar=dbar, l=l, xi=xi)


def symmetric_control(case: ValleyCase) -> ValleyCase:
    """The same valleys made symmetric (b = a, c = 1): Theorem 1's premise c > 1 fails; the gain is ≤ 0."""
    ones = torch.ones_like(case.c)
    return ValleyCase(a=case.a, b=case.a, p=case.p, c=ones, orient=case.orient, r=case.r, rbar=case.rbar,
                      dbar=case.dbar, l=case.l, xi=case.xi)


# ---------------------------------------------------------------- Theorem 2: SGD averaging in 1-D
@dataclass(frozen=True)
class SGDValleyConfig:
    """SGD on L(w) = a₊·w (w ≥ 0), −c·a₊·w (w < 0) with uniform noise (Theorem 2's setting)."""

    a_plus: float = 1.0  # flat-side slope (loss per unit w)
    c: float = 5.0  # sharp/flat slope ratio; c = 1 is the symmetric control
    eta: float = 0.01  # learning rate (units of w per unit gradient)
    nu: float = 1.0  # noise half-width: ω_t ~ U(−ν, ν); Theorem 2 needs ν ≤ a₊
    steps: int = 4000  # SGD steps per run
    burn_in: int = 1000  # iterates w_1..w_burn_in are excluded from the average
    w0_low: float = 0.0  # start w_0 ~ U(w0_low, w0_high), independent per run (units of w)
    w0_high: float = 0.0  # equal bounds: every run starts there (default: the minimiser)

    def __post_init__(self):
        if not (self.a_plus > 0 and self.c >= 1 and self.eta > 0 and 0 <= self.nu):
            raise ValueError(f"need a_plus > 0, c >= 1, eta > 0, nu >= 0; got {self}")
        if not 0 <= self.burn_in < self.steps:
            raise ValueError(f"need 0 <= burn_in < steps; got burn_in={self.burn_in}, steps={self.steps}")
        if self.w0_low > self.w0_high:
            raise ValueError(f"need w0_low <= w0_high; got {self.w0_low} > {self.w0_high}")


@dataclass(frozen=True)
class SGDValleyResult:
    wbar: Tensor  # [runs] average of w_{burn_in+1} .. w_steps
    w_final: Tensor  # [runs] last iterate
    iterates: Tensor  # [steps − burn_in, keep] the averaged iterates of the first `keep` runs (for figures)


def sgd_valley_loss(w: Tensor, cfg: SGDValleyConfig) -> Tensor:
    """L(w) = a₊·w for w ≥ 0, −c·a₊·w for w < 0 (Theorem 2's valley with r = 0)."""
    return torch.where(w >= 0, cfg.a_plus * w, -cfg.c * cfg.a_plus * w)


def simulate_sgd_valley(cfg: SGDValleyConfig, runs: int, *, generator: torch.Generator, keep: int = 0,
                        chunk: int = 1024) -> SGDValleyResult:
    """`runs` independent SGD runs as one tensor; w_{t+1} = w_t − η(∇L(w_t) + ω_t), ω_t ~ U(−ν, ν)."""
    if runs < 1 or not 0 <= keep <= runs:
        raise ValueError(f"need runs >= 1 and 0 <= keep <= runs; got runs={runs}, keep={keep}")
    w = cfg.w0_low + (cfg.w0_high - cfg.w0_low) * torch.rand(runs, generator=generator, dtype=F64)
    total = torch.zeros(runs, dtype=F64)
    kept = []
    for start in range(0, cfg.steps, chunk):
        # noise drawn a chunk of steps at a time: one generator call per chunk, not per step
        omega = cfg.nu * (2 * torch.rand(min(chunk, cfg.steps - start), runs, generator=generator, dtype=F64) - 1)
        for i, noise in enumerate(omega, start=start + 1):
            grad = torch.where(w >= 0, cfg.a_plus, -cfg.c * cfg.a_plus)
            w = w - cfg.eta * (grad + noise)
            if i > cfg.burn_in:
                total += w
                if keep:
                    kept.append(w[:keep])
    iterates = torch.stack(kept) if keep else torch.empty(0, 0, dtype=F64)
    return SGDValleyResult(wbar=total / (cfg.steps - cfg.burn_in), w_final=w, iterates=iterates)
