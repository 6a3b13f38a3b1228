"""Nudged SGD and the §3.3 step variants for many trajectories in lockstep (Jastrzebski et al. 2019).

§3.3 (Fig. 5) restarts SGD after the λ_max peak with the step changed inside the top eigenvector's
direction; §4 (Table 1, Fig. 6) trains with Nudged SGD, whose step is rescaled by γ inside the span of
the top-K eigenvectors. With E_m [K, D] member m's orthonormal top-K Hessian eigenvectors (rows),
P_m = E_mᵀE_m and g_m its mini-batch gradient (+ c·θ_m, coupled L2 as torch.optim.SGD), every member
takes, without momentum (all of the paper's runs here: m = 0; core/nsgd.py has the momentum form),

    θ_m ← θ_m − η_m·[a_m·(I − P_m) g_m + b_m·P_m g_m]

  vanilla SGD  (a, b) = (1, 1)      §4 NSGD γ           (1, γ)
  "top only"   (0, 1)  (§3.3 variant 1: only the projection on e₁)
  "no top"     (1, 0)  (§3.3 variant 3: the e₁ component removed)
so one coefficient pair per member covers every variant; a member with a = b needs no subspace (its
step is a·g whatever E is) and computes none unless `track_all` asks for its λ's along the way.

E is refreshed every `refresh_every` steps (§3.3: every step, K = 1; §4: at the start of every epoch,
K = 5) by Lanczos (core.hessian: full reorthogonalisation, 'LA', stopped at a relative residual
`refresh_tol` or after `refresh_iters` steps, warm-started from the member's previous vectors) on the
fixed Hessian rows (core.ensemble: the same function as the λ_max trajectories). The projection is
formed in fp64 ((E g) then Eᵀ(E g): two [K, D] products per member, never D × D) and cast once.

Members share kernel launches exactly as core/ensemble.py's seeds do (one vmapped forward, one
backward of Σ_m L_m); each has its own start point (`starts`), and members of one `group` (the
variants of one seed) draw the same mini-batches (one torch.Generator per group), so a paired
difference between variants is the step rule's alone (registry SD-4 `batch_order`).

Schedule (§4, PROTOCOLS): constant lr, or Keras's ReduceLROnPlateau on the validation loss (lr ×
`plateau_factor` after `plateau_patience` epochs without a decrease of more than 1e-4, Keras's
min_delta) and EarlyStopping on validation accuracy (`early_stop_patience` epochs without a strict
increase). The member's best-validation-accuracy parameters are kept (the paper's checkpoint), and
`final_at` says where the final top-k spectrum is measured: "best" (§4) or "last" (§3.3). A member
whose parameters become non-finite is frozen and labelled; its numbers are NaN and its status says so.
A member's divergence is a result, not a failed build (§3.3's γ = 10 step may leave its stability
region by design), so the artifact's `status` stays "ok" and `n_diverged` counts them.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from core.data import Split
from core.ensemble import (_evaluate, _hessian_loss, _hessian_rows, _mark_diverged, _require, _Tracker, check_labels,
                           stacked_grads)
from core.hessian import CRITERIA, LanczosConfig

__all__ = ["NudgedConfig", "train_nudged", "nudged_direction"]

PLATEAU_MIN_DELTA = 1e-4  # Keras ReduceLROnPlateau's default min_delta (the authors' callback)


@dataclass(frozen=True)
class NudgedConfig:
    """One lockstep run of nudged/variant SGD members (module docstring)."""
    lr: float  # η at the start (the plateau schedule multiplies it per member)
    batch_size: int  # S, rows per step (the last step of an epoch takes the remainder)
    max_steps: int  # steps at most (an epoch is ⌈N/S⌉ steps; §3.3 restarts: 300; §4: max_epochs·⌈N/S⌉)
    k: int = 1  # K, eigenvectors spanning the nudged subspace
    refresh_every: int = 1  # steps between refreshes of E (at steps 0, r, 2r, ...)
    refresh_tol: float = 1e-3  # relative residual at which a refresh's Lanczos stops
    refresh_iters: int = 20  # Lanczos steps at most per refresh
    track_all: bool = False  # refresh (and record λ) for a = b members too, whose step ignores E
    final_k: int = 1  # eigenvalues measured at the end
    final_tol: float = 1e-3  # their relative-residual target (unconverged is recorded, not hidden)
    final_iters: int = 60  # Lanczos steps at most for them
    final_at: str = "last"  # "last": the end of the run; "best": the best-validation-accuracy epoch
    weight_decay: float = 0.0  # c (coupled L2, also in the Hessian's loss as (c/2)‖θ‖²)
    criterion: str = "cross_entropy"
    hessian_rows: int = 200  # fixed training rows of the Hessian's function (core.ensemble)
    hessian_seed: int = 12345
    plateau_patience: int | None = None  # epochs; None: constant lr
    plateau_factor: float = 0.1
    early_stop_patience: int | None = None  # epochs; None: run max_steps
    loss_tail_steps: int = 0  # mean loss on the Hessian rows over the last this-many steps (§3.3)
    track_loss: bool = False  # the loss on the Hessian rows after every step (`rows_loss`, Fig. 5's curves)

    def __post_init__(self):
        _require(self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr!r}; allowed: a finite lr > 0")
        _require(self.batch_size >= 1 and self.max_steps >= 1, "batch_size and max_steps: allowed >= 1")
        _require(self.k >= 1, f"K={self.k!r}; allowed: K >= 1 (the nudged subspace has at least one direction)")
        _require(self.refresh_every >= 1, f"refresh_every={self.refresh_every!r}; allowed: >= 1 step")
        _require(self.refresh_iters >= self.k and self.final_iters >= self.final_k >= 1,
                 "Lanczos steps must be at least the number of eigenpairs asked for")
        _require(self.final_at in ("last", "best"), f"final_at={self.final_at!r}; allowed: 'last', 'best'")
        _require(self.criterion in CRITERIA, f"criterion={self.criterion!r}; allowed: {', '.join(CRITERIA)}")
        _require(0 < self.plateau_factor <= 1, f"plateau_factor={self.plateau_factor!r}; allowed: (0, 1]")
        _require(0 <= self.loss_tail_steps <= self.max_steps, "loss_tail_steps: allowed 0..max_steps")


def nudged_direction(grads: list[Tensor], E: Tensor, a: Tensor, b: Tensor) -> list[Tensor]:
    """a_m (I − P_m) g_m + b_m P_m g_m per member m, P_m = E_mᵀ E_m. grads: per parameter [M, ...];
    E [M, K, D] fp64 orthonormal rows (zero rows for members without a subspace: then the result is
    a_m g_m); a, b [M] fp64. Formed in fp64 over the concatenated parameters, cast once per block."""
    n_members = grads[0].shape[0]
    G = torch.cat([g.reshape(n_members, -1).to(torch.float64) for g in grads], dim=1)
    PG = torch.einsum("mk,mkd->md", torch.einsum("mkd,md->mk", E, G), E)
    D = a[:, None] * G + (b - a)[:, None] * PG
    sizes = [g[0].numel() for g in grads]
    return [d.reshape(g.shape).to(g.dtype) for d, g in zip(D.split(sizes, dim=1), grads)]


def _nan(*shape) -> Tensor:
    return torch.full(shape, math.nan, dtype=torch.float64)


class _Run:
    """The mutable state of one lockstep run: stacked params, per-member lr, masks, records."""

    def __init__(self, model: nn.Module, starts, coefs, groups, data, cfg: NudgedConfig):
        self.cfg, self.data = cfg, data
        self.names = list(starts[0])
        self.params = {n: torch.stack([s[n].detach().float() for s in starts]).clone().requires_grad_(True)
                       for n in self.names}
        base = copy.deepcopy(model).to("meta")
        self.forward = vmap(lambda p, x: functional_call(base, p, (x,)))
        m, dev = len(starts), self.params[self.names[0]].device  # bookkeeping on the host, the step's on dev
        self.a = torch.tensor([c[0] for c in coefs], dtype=torch.float64, device=dev)
        self.b = torch.tensor([c[1] for c in coefs], dtype=torch.float64, device=dev)
        self.needs_E = [cfg.track_all or c[0] != c[1] for c in coefs]
        self.groups = list(groups)
        self.lr = torch.full((m,), cfg.lr, dtype=torch.float64)
        self.active = torch.ones(m, dtype=torch.bool)  # not stopped early and not diverged
        self.alive = torch.ones(m, dtype=torch.bool)  # not diverged
        self.status = ["ok"] * m
        self.dim = sum(p[0].numel() for p in self.params.values())
        self.E = torch.zeros(m, cfg.k, self.dim, dtype=torch.float64, device=dev)
        loss = _hessian_loss(model, data, cfg)
        self.refresher = _Tracker(loss, LanczosConfig(k=cfg.k, tol=cfg.refresh_tol, max_iter=cfg.refresh_iters), m)
        self.final = _Tracker(loss, LanczosConfig(k=cfg.final_k, tol=cfg.final_tol, max_iter=cfg.final_iters), m)
        rows = _hessian_rows(len(data.train), cfg)
        self.hrows = Split(data.train.x[rows], data.train.y[rows])

    def member(self, i: int) -> dict[str, Tensor]:
        return {n: p[i].detach() for n, p in self.params.items()}

    def refresh(self, rec: list, step: int) -> None:
        """E_m for every live member that needs one (a member gone non-finite is frozen and labelled
        first: a Hessian of a diverged state is a status, not NaN eigenvalues); records (λ, residual)."""
        _mark_diverged(self.params, self.alive, self.status, step)
        self.active &= self.alive
        lam, res = _nan(len(self.status), self.cfg.k), _nan(len(self.status), self.cfg.k)
        for i, need in enumerate(self.needs_E):
            if need and self.active[i]:
                lam[i], res[i], _ = self.refresher(i, self.member(i))
                self.E[i] = self.refresher.previous[i]
        rec.append((lam, res))

    def step(self, idx: Tensor) -> None:
        x, y = self.data.train.x[idx], self.data.train.y[idx]
        grads = stacked_grads(self.forward, self.params, self.names, x, y, self.cfg.criterion, self.cfg.weight_decay)
        with torch.no_grad():
            d = nudged_direction(grads, self.E, self.a, self.b)
            lr = torch.where(self.active, self.lr, 0.0).to(self.E.device)
            for n, di in zip(self.names, d):
                p = self.params[n]
                scale = lr.to(p.dtype).view(-1, *[1] * (p.dim() - 1))
                p.sub_(torch.where(scale > 0, scale * di, 0.0))  # where: a frozen member's NaN stays out

    def rows_loss(self) -> Tensor:
        return _evaluate(self.forward, self.params, self.hrows, self.cfg.criterion)[0]


def train_nudged(model: nn.Module, starts: Sequence[dict[str, Tensor]], coefs: Sequence[tuple[float, float]],
                 groups: Sequence[int], data, cfg: NudgedConfig, generators: Sequence[torch.Generator]) -> dict:
    """Run every member m from params `starts[m]` with step coefficients `coefs[m]` = (a, b) (module
    docstring), drawing its mini-batches from `generators[groups[m]]` (one permutation per epoch per
    group), under `cfg`. `data.val` is required for the plateau / early-stop schedule and "best".

    Returns the artifact: `status` ("ok"), `member_status`, `n_diverged`; per epoch [M, E] `train_loss/acc`, `val_loss/acc`
    (NaN without a val split), `test_loss/acc`, `lr`; per refresh `refresh_step` [R], `refresh_lam` and
    `refresh_residual` [M, R, K] (NaN where not computed); `best_epoch`, `best_val_acc`, `best_test_acc`
    [M] (epoch 0 = the start); `final_lam`, `final_residual` [M, final_k] at `final_at` and
    `last_lam`, `last_residual` at the end (the same when final_at = "last"), `last_test_acc`;
    `start_loss` and `tail_loss` [M] on the Hessian rows (`rows_loss` [M, steps + 1] with track_loss);
    `steps_run`, `stopped_epoch` (−1: never stopped early), `last_epoch` [M]; `final` and `best` stacked
    params; `metrics` (wall and CPU seconds)."""
    _require(len(starts) == len(coefs) == len(groups) >= 1, "one start, one (a, b) and one group per member")
    _require(all(0 <= g < len(generators) for g in groups), "every group needs its generator")
    _require(all(a >= 0 and b >= 0 for a, b in coefs), f"coefficients {list(coefs)}; allowed: a, b >= 0")
    uses_val = cfg.plateau_patience is not None or cfg.early_stop_patience is not None or cfg.final_at == "best"
    _require(not uses_val or data.val is not None, "the plateau/early-stop schedule and final_at='best' need data.val")
    check_labels(data)
    t0, c0 = time.perf_counter(), time.process_time()
    run = _Run(model, starts, coefs, groups, data, cfg)
    m, n_rows = len(starts), len(data.train)
    per_epoch = math.ceil(n_rows / cfg.batch_size)
    epochs = math.ceil(cfg.max_steps / per_epoch)
    hist = {k: _nan(m, epochs + 1) for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                                              "test_acc", "lr")}
    best = {"epoch": torch.zeros(m, dtype=torch.long), "val": torch.full((m,), -math.inf, dtype=torch.float64),
            "val_loss": torch.full((m,), math.inf, dtype=torch.float64), "params": {n: p.detach().clone()
                                                                                     for n, p in run.params.items()}}
    since_loss, since_acc = torch.zeros(m, dtype=torch.long), torch.zeros(m, dtype=torch.long)
    stopped = torch.full((m,), -1, dtype=torch.long)
    steps_run = torch.zeros(m, dtype=torch.long)
    refresh_steps, refresh_rec, tail = [], [], []
    start_loss = run.rows_loss()
    curve = [start_loss] if cfg.track_loss else []
    step, e_last = 0, 0

    def epoch_end(e: int) -> None:
        _mark_diverged(run.params, run.alive, run.status, step)
        run.active &= run.alive
        for key, split in (("train", data.train), ("val", data.val), ("test", data.test)):
            if split is not None:
                loss, acc = _evaluate(run.forward, run.params, split, cfg.criterion)
                hist[f"{key}_loss"][:, e], hist[f"{key}_acc"][:, e] = loss, acc
        hist["lr"][:, e] = run.lr
        if data.val is None:
            return
        _schedule(e, run, hist, best, since_loss, since_acc, stopped, cfg)

    epoch_end(0)
    for e in range(1, epochs + 1):
        order = torch.stack([torch.randperm(n_rows, generator=g) for g in generators])[run.groups]
        for lo in range(0, n_rows, cfg.batch_size):
            if step >= cfg.max_steps or not bool(run.active.any()):
                break
            if step % cfg.refresh_every == 0 and any(run.needs_E):
                refresh_steps.append(step)
                run.refresh(refresh_rec, step)
            run.step(order[:, lo:lo + cfg.batch_size])
            steps_run += run.active.long()
            step += 1
            if cfg.track_loss or step > cfg.max_steps - cfg.loss_tail_steps:
                loss = run.rows_loss()
                if cfg.track_loss:
                    curve.append(loss)
                if step > cfg.max_steps - cfg.loss_tail_steps:
                    tail.append(loss)
        epoch_end(e)
        e_last = e
        if step >= cfg.max_steps or not bool(run.active.any()):
            break
    last_epoch = torch.where(stopped >= 0, stopped, e_last)
    return _artifact(run, cfg, hist, best, stopped, last_epoch, steps_run, refresh_steps, refresh_rec, start_loss,
                     tail, curve, step, t0, c0)


def _schedule(e, run, hist, best, since_loss, since_acc, stopped, cfg) -> None:
    """Keras ReduceLROnPlateau (val loss) and EarlyStopping (val acc) per member, after epoch e."""
    live = run.active.clone()
    val_loss, val_acc = hist["val_loss"][:, e], hist["val_acc"][:, e]
    better_acc = live & (val_acc > best["val"])
    on_dev = better_acc.to(next(iter(run.params.values())).device)  # host bookkeeping, params on their device
    for n, p in run.params.items():
        best["params"][n][on_dev] = p.detach()[on_dev]
    best["epoch"][better_acc], best["val"][better_acc] = e, val_acc[better_acc]
    since_acc[:] = torch.where(better_acc, 0, since_acc + live.long())
    better_loss = live & (val_loss < best["val_loss"] - PLATEAU_MIN_DELTA)
    best["val_loss"] = torch.where(better_loss, val_loss, best["val_loss"])
    since_loss[:] = torch.where(better_loss, 0, since_loss + live.long())
    if e == 0:
        return
    if cfg.plateau_patience is not None:
        drop = live & (since_loss >= cfg.plateau_patience)
        run.lr[drop] *= cfg.plateau_factor
        since_loss[drop] = 0
    if cfg.early_stop_patience is not None:
        stop = live & (since_acc >= cfg.early_stop_patience)
        stopped[stop] = e
        run.active &= ~stop


def _spectrum(run, at: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Top final_k eigenvalues and residuals of every live member at the stacked params `at`."""
    m = len(run.status)
    lam, res = _nan(m, run.cfg.final_k), _nan(m, run.cfg.final_k)
    for i in range(m):
        if run.alive[i]:
            lam[i], res[i], _ = run.final(i, {n: p[i] for n, p in at.items()})
    return lam, res


def _artifact(run, cfg, hist, best, stopped, last_epoch, steps_run, refresh_steps, refresh_rec, start_loss, tail,
              curve, step, t0, c0):
    m = len(run.status)
    last = {n: p.detach() for n, p in run.params.items()}
    last_lam, last_res = _spectrum(run, last)
    lam, res = _spectrum(run, best["params"]) if cfg.final_at == "best" else (last_lam, last_res)
    if refresh_rec:
        r_lam = torch.stack([r[0] for r in refresh_rec], 1)
        r_res = torch.stack([r[1] for r in refresh_rec], 1)
    else:
        r_lam = r_res = _nan(m, 0, cfg.k)
    at_epoch = lambda key, e: hist[key].gather(1, e[:, None])[:, 0]  # noqa: E731
    return {"status": "ok", "member_status": run.status, "n_diverged": sum(st != "ok" for st in run.status),
            **hist, "refresh_step": torch.tensor(refresh_steps, dtype=torch.long), "refresh_lam": r_lam,
            "refresh_residual": r_res, "best_epoch": best["epoch"], "best_val_acc": best["val"],
            "best_test_acc": at_epoch("test_acc", best["epoch"]), "final_lam": lam, "final_residual": res,
            "last_lam": last_lam, "last_residual": last_res, "last_test_acc": at_epoch("test_acc", last_epoch),
            "start_loss": start_loss, "tail_loss": torch.stack(tail).mean(0) if tail else _nan(m),
            **({"rows_loss": torch.stack(curve, 1)} if curve else {}), "steps_run": steps_run,
            "stopped_epoch": stopped, "last_epoch": last_epoch, "steps": step, "final": last, "best": best["params"],
            "metrics": {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}}
