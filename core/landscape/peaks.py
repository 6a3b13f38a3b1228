"""The λ_max peak of one training trajectory, as Jastrzebski et al. 2019 §3.1 and registry SD-1 define it.

From λ_max at checkpoints t_0 = 0 < t_1 < … < t_C = T (global SGD steps; T the budget):
    λ_0     = λ(t_0)                       (initialisation)
    λ_peak  = max_{t_c ≤ T/2} λ(t_c),  t_peak its first argmax
    λ_final = λ(t_C)
and per seed the three SD-1 statistics ln(λ_peak/λ_0), t_peak/T, λ_final/λ_peak. Two kinds of seed
are no evidence either way and carry a flag instead of numbers (registry SD-1 `no_peak`, `unconverged`):
  no_peak      λ is largest at the last checkpoint: still rising when the budget ends, so the peak (if
               any) is unseen; reading it at T/2 would manufacture "a peak early in training".
  unconverged  a Lanczos residual above tol at t_0, t_peak or t_C: a Ritz value is a lower bound on
               λ_max (Cauchy interlacing), so an unconverged λ_peak reads low and could fake "lower peak".
  diverged     the run's parameters became non-finite (NaN entries).
A seed with a late peak (max after T/2 but before T) keeps its numbers: t_peak/T is then 0.5 at most
and λ_final/λ_peak may exceed 1.1, which is evidence against the claim, not a missing value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Peak", "peak", "peaks"]


@dataclass(frozen=True)
class Peak:
    """One seed's peak statistics (NaN where `flag` says why there are none)."""
    lam0: float  # λ at initialisation (loss units per parameter²)
    lam_peak: float  # max over checkpoints t ≤ T/2
    t_peak: int  # its global step
    lam_final: float  # at the last checkpoint
    lam_max: float  # max over all checkpoints (for the no-peak rule and the figures)
    t_max: int  # its step
    flag: str  # "" | "no_peak" | "unconverged" | "diverged"
    T: int  # budget in steps

    @property
    def ok(self) -> bool:
        return not self.flag

    @property
    def growth(self) -> float:
        """ln(λ_peak/λ_0)."""
        return math.log(self.lam_peak / self.lam0)

    @property
    def position(self) -> float:
        """t_peak/T."""
        return self.t_peak / self.T

    @property
    def final_ratio(self) -> float:
        """λ_final/λ_peak."""
        return self.lam_final / self.lam_peak


def peak(steps: Tensor, lam: Tensor, residual: Tensor, *, tol: float) -> Peak:
    """The module docstring's statistics of one trajectory: steps [C] (first 0, last T), lam [C]
    (λ_max at each), residual [C] (relative Lanczos residuals)."""
    steps, lam, residual = steps.long(), lam.double(), residual.double()
    if steps.numel() < 3 or int(steps[0]) != 0:
        raise ValueError(f"a trajectory needs >= 3 checkpoints starting at step 0; got steps {steps.tolist()[:5]}")
    T = int(steps[-1])
    if not bool(torch.isfinite(lam).all()):
        return Peak(math.nan, math.nan, -1, math.nan, math.nan, -1, "diverged", T)
    first_half = (2 * steps <= T).nonzero().flatten()
    i_peak = int(first_half[lam[first_half].argmax()])
    i_max = int(lam.argmax())
    flag = ""
    if i_max == len(lam) - 1:
        flag = "no_peak"
    elif any(not (float(residual[i]) <= tol) for i in (0, i_peak, len(lam) - 1)):
        flag = "unconverged"
    return Peak(float(lam[0]), float(lam[i_peak]), int(steps[i_peak]), float(lam[-1]), float(lam[i_max]),
                int(steps[i_max]), flag, T)


def peaks(art: dict, n_seeds: int, *, tol: float) -> list[Peak]:
    """`peak` of the first `n_seeds` seeds of a core.ensemble artifact (λ_max = the top eigenvalue)."""
    if n_seeds > art["lam"].shape[0]:
        raise ValueError(f"{n_seeds} seeds asked, the ensemble has {art['lam'].shape[0]}")
    return [peak(art["steps"], art["lam"][s, :, 0], art["residual"][s, :, 0], tol=tol) for s in range(n_seeds)]
