"""Nudged SGD (Jastrzebski et al. 2019, "DNN's Sharpest Directions Along the SGD Trajectory", §3.3 and
§4): SGD with the step rescaled by γ inside the span of the top-K Hessian eigenvectors.

The update, as the authors' `src/optimizers.py` (Keras SGD form; PROTOCOLS.md): with E [D, K] the
orthonormal top-K eigenvectors, P = E Eᵀ, g the mini-batch gradient of ALL parameters as one flat
vector (plus weight_decay·θ, coupled into g as torch.optim.SGD does),
    v     = m·v_prev − lr·g            (the momentum buffer keeps this UNcorrected v; v_prev = 0 at first)
    step  = v + (γ − 1)·P v = (I − P) v + γ·P v
    θ    ← θ + step
With m = 0 (all the paper's main runs) this is Δθ = −lr·[(I − P) g + γ·P g]: "NSGD uses a different
learning rate, η' = γη, along just the top K eigenvectors, while following the normal SGD gradient
along all the others directions" (§4). γ = 1 is SGD whatever P is, so then no subspace is needed.

The §3.3 variants (K = 1, `variant`) change which parts of the step are kept (`mode`):
  "nudge"     (I − P) v + γ P v                       §4 NSGD; γ = 1 is vanilla SGD
  "top_only"  γ P v        "only updates the parameters based on the projection of the gradient on the
                           top eigenvector direction" (variant 1, SGD top; γ = 1)
  "no_top"    (I − P) v    "removes the gradient information in the direction of the top eigenvector"
                           (variant 3, SGD no top) = "nudge" with γ = 0
Variant 2 (SGD constant top) is "top_only" with E computed once and never refreshed.

What is not here: E itself. The trainer computes it with `core.hessian.top_eigenpairs` (the paper:
once per epoch) and hands it over with `set_subspace`; `subspace_age` counts the steps since, so a
tracker can flag stale eigenvectors.

Numerics. P x = E (Eᵀ x) is formed in fp64 over the concatenation of all parameters (E is stored
fp64), and the whole step (I − P)v + γPv is cast to each parameter's dtype once, so the only
rounding of the step is that cast; at γ = 1 the cast returns v bit for bit. With m = 0 the parameter
update is `p.add_(d, alpha=-lr)`, the very op of torch.optim.SGD, so γ = 1 equals it bitwise; with
m > 0 the buffer is the authors' v = −lr·(torch's buffer), equal to torch.optim.SGD to rounding at a
constant lr, and NOT equal when lr changes mid-run (here a new lr scales only new gradients, as in
Keras; torch rescales the whole buffer).

Parameter groups: exactly one. P couples every parameter, so per-group lr or momentum would make
"v" a different vector in each block and P v would not be the authors' update; a second group is
refused rather than given a meaning the paper never had.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["NudgedSGD", "NudgeVariant", "VARIANTS", "variant", "MODES", "ORTHONORMAL_TOL"]

MODES = ("nudge", "top_only", "no_top")
ORTHONORMAL_TOL = 1e-4  # max |E Eᵀ − I| accepted (entries of I are 1: a relative error)


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


# ---------------------------------------------------------------- §3.3 / §4 presets
@dataclass(frozen=True)
class NudgeVariant:
    """One of the paper's SGD variants: optimizer settings plus what the trainer must do with E."""
    mode: str  # one of MODES
    gamma: float  # rescaling of the step inside span(E) (dimensionless)
    k: int  # eigenvectors spanning the subspace (paper: 1 in §3.3, 5 in §4)
    refresh: bool  # recompute E during training (paper: each epoch) or keep the first one

    def optimizer_kwargs(self) -> dict[str, Any]:
        return {"mode": self.mode, "gamma": self.gamma}


VARIANTS = {
    "sgd": NudgeVariant("nudge", 1.0, 5, True),  # the neutral setting (Tab. 1 "γ = 1.0 (i.e. vanilla SG)")
    "nsgd": NudgeVariant("nudge", 1.0, 5, True),  # §4: give gamma (paper grid {0.01, 0.1, 1, 5/10})
    "top_only": NudgeVariant("top_only", 1.0, 1, True),  # §3.3 variant 1 (orange)
    "constant_top": NudgeVariant("top_only", 1.0, 1, False),  # §3.3 variant 2 (green): e₁(0) throughout
    "no_top": NudgeVariant("no_top", 0.0, 1, True),  # §3.3 variant 3 (red)
}


def variant(name: str, gamma: float | None = None) -> NudgeVariant:
    """The named preset of `VARIANTS`; `gamma` overrides γ for "nsgd" (the only one with a free γ)."""
    _require(name in VARIANTS, f"variant {name!r}; allowed: {sorted(VARIANTS)}")
    v = VARIANTS[name]
    if gamma is None:
        return v
    _require(name == "nsgd", f"variant {name!r} has a fixed gamma={v.gamma}; only 'nsgd' takes gamma")
    _require(gamma >= 0, f"gamma={gamma!r}; allowed: gamma >= 0")
    return NudgeVariant(v.mode, float(gamma), v.k, v.refresh)


def _resolve_gamma(mode: str, gamma: float | None) -> float:
    """γ per mode: "nudge"/"top_only" default to 1; "no_top" keeps no P part, so γ is 0 by definition."""
    _require(mode in MODES, f"mode={mode!r}; allowed: {MODES}")
    if mode == "no_top":
        _require(gamma in (None, 0), f"mode='no_top' drops the P component; gamma={gamma!r}, allowed: 0 or None")
        return 0.0
    gamma = 1.0 if gamma is None else gamma
    _require(isinstance(gamma, (int, float)) and gamma >= 0, f"gamma={gamma!r}; allowed: a float >= 0")
    return float(gamma)


# ---------------------------------------------------------------- the optimizer
class NudgedSGD(torch.optim.Optimizer):
    """v = m·v_prev − lr·(g + wd·θ);  θ ← θ + (I − P) v + γ·P v  (module docstring; mode variants).

    P = E Eᵀ over the flat concatenation of all parameters, in the order given; E from `set_subspace`.
    Stepping with no subspace is refused unless mode == "nudge" and γ == 1 (then P does not matter).
    gamma=None means 1 for "nudge"/"top_only" and 0 for "no_top" (the only γ it allows); γ lives in the
    param group, so a schedule may change it (it is re-validated every step)."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 gamma: float | None = None, mode: str = "nudge"):
        _require(lr >= 0, f"lr={lr!r}; allowed: lr >= 0")
        _require(0 <= momentum < 1, f"momentum={momentum!r}; allowed: 0 <= momentum < 1")
        _require(weight_decay >= 0, f"weight_decay={weight_decay!r}; allowed: weight_decay >= 0")
        gamma = _resolve_gamma(mode, gamma)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, gamma=gamma, mode=mode))
        self._E: Tensor | None = None  # [K, D] fp64 orthonormal rows, on the parameters' device
        self.subspace_age = 0  # steps taken since the last set_subspace

    def add_param_group(self, param_group: dict) -> None:
        _require(not self.param_groups, "NudgedSGD takes one parameter group (P couples all parameters); "
                                        "got a second one")
        super().add_param_group(param_group)

    # ------------------------------------------------ the subspace
    @property
    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    @property
    def dim(self) -> int:
        return sum(p.numel() for p in self._params)

    @property
    def subspace(self) -> Tensor | None:
        """E as [K, D] fp64 orthonormal rows (a copy), or None before `set_subspace`."""
        return None if self._E is None else self._E.clone()

    def set_subspace(self, vectors, *, orthonormalize: bool = False) -> None:
        """E := `vectors`: K >= 1 orthonormal directions over all parameters, as a flat [K, D] tensor in
        the parameters' order, a sequence of K per-parameter dicts (`EigResult.eigenvector_dicts()`), or
        a `core.hessian.EigResult`. `orthonormalize`: QR first (for a non-orthonormal basis of the span).
        Resets `subspace_age` to 0."""
        E = self._as_flat(vectors).to(device=self._params[0].device, dtype=torch.float64)
        _require(E.ndim == 2 and E.shape[0] >= 1,
                 f"subspace of shape {tuple(E.shape)}; allowed: [K, {self.dim}] with K >= 1")
        _require(E.shape[1] == self.dim,
                 f"subspace vectors have D={E.shape[1]}; the optimizer's parameters have D={self.dim}")
        _require(E.shape[0] <= self.dim, f"K={E.shape[0]} directions in D={self.dim}; allowed: K <= D")
        _require(bool(torch.isfinite(E).all()), "subspace vectors contain non-finite values")
        self._E = _orthonormal_rows(E) if orthonormalize else _checked_orthonormal(E)
        self.subspace_age = 0

    def _as_flat(self, vectors) -> Tensor:
        if isinstance(vectors, Tensor):
            return vectors.detach()
        if hasattr(vectors, "eigenvectors"):  # core.hessian.EigResult
            return vectors.eigenvectors.detach()
        _require(isinstance(vectors, Sequence), f"subspace of type {type(vectors).__name__}; allowed: a [K, D] "
                                                "tensor, a list of per-parameter dicts, or an EigResult")
        return torch.stack([self._flatten_dict(v) for v in vectors]) if vectors else torch.empty(0, self.dim)

    def _flatten_dict(self, v: Mapping[str, Tensor]) -> Tensor:
        """One per-parameter dict -> [D]: by name when the optimizer was given named parameters, else by
        order; every shape must be the parameter's."""
        names = self.param_groups[0].get("param_names")
        if names is not None and list(v) != list(names):  # message built only here: names may be None
            raise ValueError(f"subspace dict keys {list(v)}; the optimizer's parameter names are {list(names)}")
        tensors = list(v.values())
        shapes = [tuple(t.shape) for t in tensors]
        want = [tuple(p.shape) for p in self._params]
        _require(shapes == want, f"subspace dict shapes {shapes}; the optimizer's parameters have {want}")
        return torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])

    def _project_parts(self, xs: list[Tensor], group: dict) -> list[Tensor]:
        """(I − P)x + γPx ("nudge"), γPx ("top_only") or (I − P)x ("no_top") per parameter block: the
        coefficients (a, b) of a(I − P)x + bPx for core.nudged.nudged_direction (fp64 over the
        concatenated x, cast once to each block's dtype; the lockstep trainer's projection, one member)."""
        if self._E is None:  # only reachable with mode "nudge", γ = 1 (`_check_can_step`)
            return xs
        from core.nudged import nudged_direction
        gamma, mode = group["gamma"], group["mode"]
        a, b = {"nudge": (1.0, gamma), "top_only": (0.0, gamma), "no_top": (1.0, 0.0)}[mode]
        coef = lambda v: torch.tensor([v], dtype=torch.float64, device=self._E.device)  # noqa: E731
        out = nudged_direction([t[None] for t in xs], self._E[None], coef(a), coef(b))
        return [o[0] for o in out]

    # ------------------------------------------------ the step
    def _check_can_step(self, group: dict) -> None:
        _require(group["gamma"] >= 0, f"gamma={group['gamma']!r}; allowed: gamma >= 0")
        _require(group["mode"] in MODES, f"mode={group['mode']!r}; allowed: {MODES}")
        _require(self._E is not None or (group["mode"] == "nudge" and group["gamma"] == 1),
                 f"NudgedSGD(mode={group['mode']!r}, gamma={group['gamma']}) has no subspace: call "
                 "set_subspace(E) before step() (only mode='nudge' with gamma=1 may step without one)")

    def _gradients(self, group: dict) -> list[Tensor] | None:
        """g + wd·θ per parameter (None when no parameter has a gradient, as torch.optim.SGD skips)."""
        params = group["params"]
        missing = [i for i, p in enumerate(params) if p.grad is None]
        if len(missing) == len(params):
            return None
        _require(not missing, f"parameters {missing} have no .grad; NudgedSGD projects the gradient of ALL "
                              "parameters: give them a (zero) gradient or leave them out of the optimizer")
        _require(not any(p.grad.is_sparse for p in params), "NudgedSGD does not support sparse gradients")
        wd = group["weight_decay"]
        return [p.grad.add(p, alpha=wd) if wd != 0 else p.grad for p in params]  # same op as torch SGD

    @torch.no_grad()
    def step(self, closure=None):
        """One NSGD step (class docstring); returns closure() when given, like every torch optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        self._check_can_step(group)
        grads = self._gradients(group)
        if grads is None:
            return loss
        params, lr, m = group["params"], group["lr"], group["momentum"]
        if m == 0:  # Δθ = −lr·[(I − P)g + γPg]: no buffer, and the torch SGD op for the update
            for p, d in zip(params, self._project_parts(grads, group)):
                p.add_(d, alpha=-lr)
        else:
            vs = [self._velocity(p).mul_(m).add_(g, alpha=-lr) for p, g in zip(params, grads)]
            for p, s in zip(params, self._project_parts(vs, group)):
                p.add_(s)  # the buffer keeps v; only θ gets the corrected step
        if self._E is not None:
            self.subspace_age += 1
        return loss

    def _velocity(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "velocity" not in state:  # v_prev = 0 (Keras initialises the moments to zero)
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["velocity"]

    # ------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state (per-parameter `velocity`, hyperparameters) plus E and its age, so a
        checkpoint resumes bit-identically."""
        sd = super().state_dict()
        sd["nsgd"] = {"subspace": None if self._E is None else self._E.clone(), "subspace_age": self.subspace_age}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("nsgd", None)
        _require(extra is not None, "state_dict has no 'nsgd' entry (subspace, age): not a NudgedSGD checkpoint")
        super().load_state_dict(state_dict)
        self._E = None
        if extra["subspace"] is not None:
            self.set_subspace(extra["subspace"])  # validates D and orthonormality against these parameters
        self.subspace_age = int(extra["subspace_age"])


def _orthonormality_error(E: Tensor) -> float:
    eye = torch.eye(E.shape[0], dtype=E.dtype, device=E.device)
    return float((E @ E.T - eye).abs().max())


def _checked_orthonormal(E: Tensor) -> Tensor:
    err = _orthonormality_error(E)
    _require(err <= ORTHONORMAL_TOL, f"subspace vectors are not orthonormal: max |E Eᵀ − I| = {err:.3g} > "
                                     f"{ORTHONORMAL_TOL:g}; pass orthonormalize=True to QR them")
    return E.clone()


def _orthonormal_rows(E: Tensor) -> Tensor:
    """Orthonormal rows spanning the rows of E (reduced QR of Eᵀ); refuses a rank-deficient E, whose
    span has fewer than K dimensions."""
    Q, R = torch.linalg.qr(E.T)
    diag = R.diagonal().abs()
    _require(bool(diag.min() > 1e-10 * diag.max()), f"subspace vectors are linearly dependent "
                                                    f"(min/max |R_ii| = {float(diag.min() / diag.max()):.3g})")
    return Q.T.contiguous()
