"""Random direction families for 1-D loss scans, and vector algebra over parameter dicts.

He, Huang, Yuan 2019 (§3.2) probe a solution w along random directions "with value (0, 1) in each
dimension"; the authors' code draws `torch.rand(D)` and divides by the global L2 norm (PROTOCOLS.md).
Later work (Li et al. 2024) traced much of the asymmetry to the sign agreement between such
all-positive directions and the weights (BN γ > 0), so every probe also reports controls
(CLAIMS.md, "Direction families"). All families return directions over every entry of the params
dict (the trainable parameters, BN γ/β included; buffers are never part of a direction), stacked
[k, *shape] per name, each of unit GLOBAL L2 norm, so a step l moves the weights by exactly |l|:

    paper         u ∝ U,               U_i ~ U[0, 1)                       (authors' code)
    gauss         u ∝ G,               G_i ~ N(0, 1)
    gauss-filter  u ∝ G filter-normalised (Li et al. 2018): each output filter G_f (row along dim 0 of a
                  ≥2-D weight) rescaled to ‖w_f‖·G_f/‖G_f‖; a 1-D param (bias, BN γ/β) is treated as ONE
                  filter, rescaled to ‖w‖·G/‖G‖ (Li et al.'s code instead zeroes it or copies w; copying w
                  is a sign-agreeing direction, exactly what the controls must avoid). A zero filter (BN β
                  at init) gets a zero direction. Then globally normalised so that steps are comparable
                  across families (ratios between filters kept).
    sign-flip     u_i ∝ U_i·(−sign w_i), U_i ~ U[0, 1): the `paper` magnitudes with every coordinate
                  pointing against its weight's sign (w_i = 0 counts as positive), the control for the
                  sign-agreement effect: `paper` agrees with positive weights, sign-flip disagrees with all.

Families are functions (`SAMPLERS[name](params, k, generator)`), so a probe takes either a name or
any callable with that signature. Random numbers are drawn on the generator's device, per parameter
in dict order, then moved to the parameter's device: a generator + params fully fix the directions.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

__all__ = [
    "FAMILIES", "SAMPLERS", "Sampler", "sample_directions", "resolve_sampler",
    "flatten", "unflatten", "dot", "norm", "normalize", "orthogonal_component",
    "add_scaled", "sub", "stack", "index",
]

Params = Mapping[str, Tensor]
Sampler = Callable[[Params, int, torch.Generator], dict]

FAMILIES = ("paper", "gauss", "gauss-filter", "sign-flip")


# ---------------------------------------------------------------- algebra over (stacked) dicts

def dot(a: Params, b: Params, *, batch_dims: int = 0) -> Tensor:
    """⟨a, b⟩ summed over every name and coordinate; the first `batch_dims` dims are kept (broadcasting)."""
    total = None
    for name in a:
        prod = (a[name] * b[name]).flatten(start_dim=batch_dims).sum(-1)
        total = prod if total is None else total + prod
    return total


def norm(a: Params, *, batch_dims: int = 0) -> Tensor:
    """Global L2 norm ‖a‖ over all names; shape = the first `batch_dims` dims."""
    return dot(a, a, batch_dims=batch_dims).sqrt()


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a batch vector [b] to broadcast against like [b, ...]."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def normalize(a: Params, *, batch_dims: int = 0) -> dict[str, Tensor]:
    """a / ‖a‖ (per batch element). Raises if some element is the zero vector."""
    n = norm(a, batch_dims=batch_dims)
    if (n == 0).any():
        raise ValueError("cannot normalise a zero direction (all coordinates are 0)")
    return {k: v / _expand(n, v) for k, v in a.items()}


def add_scaled(a: Params, b: Params, scale: float | Tensor = 1.0) -> dict[str, Tensor]:
    """a + scale·b per name (scale a float, or a batch vector broadcast against b's leading dim)."""
    if isinstance(scale, Tensor) and scale.dim() > 0:
        return {k: a[k] + _expand(scale, b[k]) * b[k] for k in a}
    return {k: a[k] + scale * b[k] for k in a}


def sub(a: Params, b: Params) -> dict[str, Tensor]:
    """a − b per name."""
    return {k: a[k] - b[k] for k in a}


def stack(dicts: list[Params]) -> dict[str, Tensor]:
    """[dict, dict, ...] -> one dict of stacked tensors [n, ...]."""
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def index(a: Params, i) -> dict[str, Tensor]:
    """Select along the stacking dim: a[name][i] for every name."""
    return {k: v[i] for k, v in a.items()}


def orthogonal_component(v: Params, u: Params, *, batch_dims: int = 0) -> dict[str, Tensor]:
    """v − ⟨v, u⟩ u / ‖u‖²: the part of v perpendicular to u (He Assumption 2: w + v − ⟨v,u⟩u).

    v may be stacked ([n, ...], batch_dims=1) against a single u; u need not be unit.
    """
    coef = dot(v, u, batch_dims=batch_dims) / dot(u, u)
    return {k: v[k] - _expand(coef, v[k]) * u[k] for k in v}


def flatten(a: Params, *, batch_dims: int = 0) -> Tensor:
    """Concatenate all names (dict order) into one vector [..batch, D]."""
    return torch.cat([t.flatten(start_dim=batch_dims) for t in a.values()], dim=-1)


def unflatten(vec: Tensor, like: Params) -> dict[str, Tensor]:
    """Inverse of `flatten`: vec [..batch, D] -> dict shaped like `like` (unbatched shapes)."""
    out, start = {}, 0
    batch = vec.shape[:-1]
    for k, t in like.items():
        n = t.numel()
        out[k] = vec[..., start:start + n].reshape(*batch, *t.shape)
        start += n
    if start != vec.shape[-1]:
        raise ValueError(f"vector has {vec.shape[-1]} coordinates; the params dict has {start}")
    return out


# ---------------------------------------------------------------- samplers

def _draw(params: Params, k: int, generator: torch.Generator, kind: str) -> dict[str, Tensor]:
    """Raw i.i.d. draws [k, *shape] per name, in dict order, on the generator's device, float32."""
    draw = torch.rand if kind == "uniform" else torch.randn
    out = {}
    for name, w in params.items():
        z = draw((k, *w.shape), generator=generator, device=generator.device, dtype=torch.float32)
        out[name] = z.to(device=w.device, dtype=w.dtype)
    return out


def _paper(params: Params, k: int, generator: torch.Generator) -> dict[str, Tensor]:
    """U[0,1) per coordinate, unit global norm (He et al.'s `torch.rand(D) / norm`)."""
    return normalize(_draw(params, k, generator, "uniform"), batch_dims=1)


def _gauss(params: Params, k: int, generator: torch.Generator) -> dict[str, Tensor]:
    """N(0,1) per coordinate, unit global norm."""
    return normalize(_draw(params, k, generator, "normal"), batch_dims=1)


def _filter_scale(g: Tensor, w: Tensor) -> Tensor:
    """Rescale each filter of g [k, *w.shape] to the norm of w's filter (1-D w = one filter)."""
    if w.dim() <= 1:
        g_n = g.flatten(1).norm(dim=-1).view(-1, *([1] * w.dim()))
        return g * (w.norm() / g_n.clamp_min(torch.finfo(g.dtype).tiny))
    g_n = g.flatten(2).norm(dim=-1)  # [k, filters]
    w_n = w.flatten(1).norm(dim=-1)  # [filters]
    scale = w_n / g_n.clamp_min(torch.finfo(g.dtype).tiny)
    return g * scale.view(*scale.shape, *([1] * (w.dim() - 1)))


def _gauss_filter(params: Params, k: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Gaussian, filter-normalised (Li et al. 2018), then unit global norm (see module docstring)."""
    g = _draw(params, k, generator, "normal")
    scaled = {name: _filter_scale(g[name], w) for name, w in params.items()}
    return normalize(scaled, batch_dims=1)


def _sign_flip(params: Params, k: int, generator: torch.Generator) -> dict[str, Tensor]:
    """u_i ∝ U_i·(−sign w_i), zero weights counted positive (so u_i = −U_i there); unit global norm."""
    u = _draw(params, k, generator, "uniform")
    flipped = {name: torch.where(w >= 0, -u[name], u[name]) for name, w in params.items()}
    return normalize(flipped, batch_dims=1)


SAMPLERS: dict[str, Sampler] = {
    "paper": _paper, "gauss": _gauss, "gauss-filter": _gauss_filter, "sign-flip": _sign_flip,
}


def resolve_sampler(family: str | Sampler) -> Sampler:
    """A family name from FAMILIES -> its sampler; a callable is returned as is."""
    if callable(family):
        return family
    if family not in SAMPLERS:
        raise ValueError(f"unknown direction family {family!r}; known: {', '.join(FAMILIES)}")
    return SAMPLERS[family]


def sample_directions(params: Params, family: str | Sampler, k: int, *,
                      generator: torch.Generator) -> dict[str, Tensor]:
    """k random directions of `family` at `params`: dict name -> [k, *shape], each of unit global norm."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (number of directions) must be a positive int; got {k!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    if not params:
        raise ValueError("params is empty: nothing to draw a direction over")
    bad = [n for n, w in params.items() if not w.is_floating_point()]
    if bad:
        raise ValueError(f"params must be floating tensors; non-floating entries: {bad}")
    return resolve_sampler(family)(params, k, generator)
