"""Seed ensembles trained in lockstep, with the Hessian's top eigenvalues tracked along training.

Jastrzebski et al. 2019 §3.1 follow λ_max of the training-loss Hessian along SGD (Fig. 2) and compare
its peak across learning rates, batch sizes (Fig. 3) and momenta (App. E). Each comparison needs the
same trajectory for many seeds; on a CPU a small network's SGD step is dominated by per-call overhead,
so the seeds are trained together:

  S models of one architecture (no BatchNorm: buffers would need a per-seed BN pass) are stacked
  (`torch.func.stack_module_state`); one step runs a vmapped `functional_call` forward over a
  [S, B, ...] batch, takes the loss Σ_s L_s(θ_s) (each seed's own mean loss, so ∂/∂θ_s of the sum is
  exactly ∇L_s) and one backward, then per seed torch.optim.SGD's update (dampening 0, no Nesterov)
      buf_s ← m·buf_s + g_s + c·θ_s      (buf_s = g_s + c·θ_s at the first step)
      θ_s  ← θ_s − η·buf_s,
  or (`optimizer="adam"`, Fort & Jastrzebski §4.1's constant-lr Adam) torch.optim.Adam's, with its
  default β₁ = 0.9, β₂ = 0.999, ε = 1e-8 and coupled L2 (g_s ← g_s + c·θ_s), at step t = 1, 2, …
      m_s ← β₁m_s + (1 − β₁)g_s,   v_s ← β₂v_s + (1 − β₂)g_s²
      θ_s ← θ_s − (η/(1 − β₁ᵗ))·m_s / (√v_s/√(1 − β₂ᵗ) + ε)      (ε outside the root, as torch).
  With `cycle_steps` = C the lr restarts every C steps and decays by a cosine in between (Fort §4.5's
  cyclic snapshots; torch's CosineAnnealingWarmRestarts stepped per batch). A model with nn.Dropout
  trains with its own mask per seed (vmap randomness="different", the global RNG forked and seeded
  with `dropout_seed`) and is measured with dropout off.
  Every seed keeps its own initialisation (`build_model(seed=s)`) and its own batch order (a
  torch.Generator per seed, one permutation per epoch), so the seeds stay independent replicates; the
  stacking only shares kernel launches (10 cpu-tier MLPs at batch 32: ≈ 3× faster per seed-step than
  one at a time; benchmarks/README.md). Stacked and single-model training agree to float rounding
  (core/tests/test_ensemble.py checks against torch.optim.SGD and torch.optim.Adam step for step).

At pre-registered global step indices (`checkpoints`, 0 = initialisation) each seed gets:
  λ_1 ≥ … ≥ λ_k of the Hessian of its mean training loss on a fixed subset of rows (core.hessian:
  Lanczos with full reorthogonalisation, largest algebraic first, stopped when the relative residual
  ‖Hv − λv‖/λ ≤ tol or after `lanczos_max_iter` steps, warm-started from the seed's previous
  eigenvectors), the residuals and whether they converged; train and test loss and accuracy on the
  full splits. A seed whose parameters (or a gradient) become non-finite is frozen at that step and
  marked diverged; its later entries are NaN and `status` says where and why (never a silent number).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from core.cache import KEY_IF_SET
from core.hessian import CRITERIA, LanczosConfig, hvp_operator, lanczos, loss_fn, per_row_loss

__all__ = ["EnsembleConfig", "step_lr", "train_ensemble", "budget_epochs", "checkpoint_steps", "seed_params", "stacked_grads",
           "check_labels"]


OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


@dataclass(frozen=True)
class EnsembleConfig:
    """One constant-lr SGD or Adam recipe for every seed of the ensemble, and what is measured along it."""
    lr: float  # η (constant: Jastrzebski et al. §2 use a constant lr for the λ_max trajectories)
    batch_size: int  # S, rows per step (the last step of an epoch takes the remainder)
    epochs: int  # T
    checkpoints: tuple[int, ...]  # global step indices (0 = init, epochs·steps_per_epoch = the end)
    momentum: float = 0.0  # m in buf ← m·buf + g (torch.optim.SGD, dampening 0)
    weight_decay: float = 0.0  # c: L2 gradient c·θ added to g, and (c/2)‖θ‖² to the Hessian's loss
    criterion: str = "cross_entropy"  # or "mse_onehot" (core.hessian.CRITERIA)
    top_k: int = 1  # eigenvalues tracked per checkpoint
    lanczos_tol: float = 1e-3  # relative residual ‖Hv − λv‖/λ at which Lanczos stops
    lanczos_max_iter: int = 30  # Lanczos steps at most per checkpoint (paper: ~30)
    hessian_rows: int = 200  # rows of the fixed subset the Hessian's loss is the mean over
    hessian_seed: int = 12345  # torch.Generator seed that draws those rows, once
    # store every seed's parameters at every checkpoint (`params_at`; SD-3, SD-4); keyed only when set
    keep_params: bool = field(default=False, metadata=KEY_IF_SET)
    # "sgd" (momentum above) | "adam" (torch.optim.Adam, ADAM_BETAS, ADAM_EPS); keyed only when set
    optimizer: str = field(default="sgd", metadata=KEY_IF_SET)
    # C > 0: cosine restarts, η_t = η·½(1 + cos(π·((t − 1) mod C)/C)) at 1-based step t, so every cycle of
    # C steps starts at η and decays towards 0 (Fort §4.5's cyclic snapshots); 0 = constant η. Keyed when set
    cycle_steps: int = field(default=0, metadata=KEY_IF_SET)
    # global torch seed of the dropout masks, drawn per seed by vmap(randomness="different") inside a
    # forked RNG (only models with an active nn.Dropout draw any); keyed only when set
    dropout_seed: int = field(default=0, metadata=KEY_IF_SET)
    # rows per evaluation forward (0 = the whole split at once; the gpu tier's CIFAR splits need blocks:
    # the sums are the same up to float addition order); keyed only when set
    eval_rows: int = field(default=0, metadata=KEY_IF_SET)

    def __post_init__(self):
        _require(self.lr > 0 and math.isfinite(self.lr), f"lr={self.lr!r}; allowed: a finite lr > 0")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 1,
                 f"batch_size={self.batch_size!r}; allowed: an int >= 1")
        _require(isinstance(self.epochs, int) and self.epochs >= 1, f"epochs={self.epochs!r}; allowed: >= 1")
        _require(0 <= self.momentum < 1, f"momentum={self.momentum!r}; allowed: 0 <= momentum < 1")
        _require(self.optimizer in OPTIMIZERS, f"optimizer={self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        _require(self.optimizer == "sgd" or self.momentum == 0,
                 f"momentum={self.momentum!r} with optimizer={self.optimizer!r}; allowed: momentum 0 (Adam has β₁)")
        _require(self.weight_decay >= 0, f"weight_decay={self.weight_decay!r}; allowed: >= 0")
        _require(self.criterion in CRITERIA, f"criterion={self.criterion!r}; allowed: {', '.join(CRITERIA)}")
        _require(self.top_k >= 1 and self.lanczos_max_iter >= self.top_k,
                 f"top_k={self.top_k!r}, lanczos_max_iter={self.lanczos_max_iter!r}; allowed: 1 <= top_k <= max_iter")
        _require(isinstance(self.cycle_steps, int) and self.cycle_steps >= 0,
                 f"cycle_steps={self.cycle_steps!r}; allowed: an int >= 0 (0 = constant lr)")
        _require(isinstance(self.eval_rows, int) and self.eval_rows >= 0,
                 f"eval_rows={self.eval_rows!r}; allowed: an int >= 0 (0 = the whole split per forward)")
        _require(len(self.checkpoints) >= 1 and list(self.checkpoints) == sorted(set(self.checkpoints))
                 and self.checkpoints[0] >= 0, "checkpoints: allowed a strictly increasing tuple of steps >= 0")


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def step_lr(cfg: EnsembleConfig, t: int) -> float:
    """η at 1-based step t: constant, or the cosine-restart value of `cfg.cycle_steps` (field comment)."""
    if not cfg.cycle_steps:
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * ((t - 1) % cfg.cycle_steps) / cfg.cycle_steps))


# ---------------------------------------------------------------- the schedule (registry SD-1)
def budget_epochs(tau: float, lr: float, steps_per_epoch: int, points: int) -> tuple[int, int]:
    """(T, every): the epochs that give gradient-flow time τ = η·steps, T = ⌈τ/(η·steps_per_epoch)⌉
    rounded up to a whole number of checkpoint intervals of `every` = max(1, round(T/points)) epochs."""
    epochs = math.ceil(tau / (lr * steps_per_epoch) - 1e-9)
    every = max(1, round(epochs / points))
    return math.ceil(epochs / every) * every, every


def checkpoint_steps(epochs: int, every: int, steps_per_epoch: int, first_epoch: Sequence[float],
                     dense: tuple[int, int] | None = None) -> tuple[int, ...]:
    """Global steps at which curvature is measured: init; the given fractions of epoch 1 (⌈f·S⌉);
    the end of every `every`-th epoch; plus, for `dense` = (T_eff, every_eff), the end of every
    every_eff-th epoch up to T_eff (a momentum run on its own effective time scale, registry SD-7)."""
    steps = {0, steps_per_epoch}
    steps |= {math.ceil(f * steps_per_epoch) for f in first_epoch}
    steps |= {e * steps_per_epoch for e in range(every, epochs + 1, every)}
    if dense is not None:
        steps |= {e * steps_per_epoch for e in range(dense[1], min(dense[0], epochs) + 1, dense[1])}
    return tuple(sorted(s for s in steps if s <= epochs * steps_per_epoch))


# ---------------------------------------------------------------- training
def seed_params(stacked: dict[str, Tensor], s: int) -> dict[str, Tensor]:
    """Seed s's params dict out of a stacked {name: [S, ...]} one."""
    return {n: p[s] for n, p in stacked.items()}


def _stack(models: Sequence[nn.Module]) -> tuple[nn.Module, dict[str, Tensor]]:
    _require(all(not list(m.buffers()) for m in models),
             "train_ensemble: the model has buffers (BatchNorm?); the stacked trainer supports none")
    params, _ = stack_module_state(list(models))
    # leaves that require grad for the whole run; updates happen under no_grad
    return copy.deepcopy(models[0]).to("meta"), {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


@contextlib.contextmanager
def _dropout_rng(active: bool, seed: int):
    """The global RNG seeded with `seed` for the dropout masks and restored afterwards (a no-op when
    the model has no active dropout, so no other artifact's numbers depend on the global RNG)."""
    if not active:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _evaluate(forward: Callable, params: dict, split, criterion: str, rows: int = 0) -> tuple[Tensor, Tensor]:
    """Per seed mean loss and accuracy on a whole split (vmapped forwards, no grad): one forward over
    every row (rows = 0), or blocks of `rows` rows whose summed losses and hit counts are added (a
    CIFAR split × 10 seeds in one forward would hold every activation of 500k images at once)."""
    n_seeds = next(iter(params.values())).shape[0]
    step = rows or len(split)
    loss, hits = 0, 0
    with torch.no_grad():
        for lo in range(0, len(split), step):
            x, y = split.x[lo:lo + step], split.y[lo:lo + step]
            out = forward(params, x.expand(n_seeds, *x.shape))
            y = y.expand(out.shape[0], -1)
            loss = loss + torch.stack([per_row_loss(o, yy, criterion) for o, yy in zip(out, y)])
            hits = hits + (out.argmax(-1) == y).double().sum(1)
        return loss / len(split), hits / len(split)


class _Tracker:
    """λ_1..λ_k per seed at one checkpoint, warm-started from that seed's previous eigenvectors."""

    def __init__(self, loss, cfg: LanczosConfig, n_seeds: int):
        self.loss, self.cfg = loss, cfg
        self.previous: list[Tensor | None] = [None] * n_seeds

    def __call__(self, s: int, params: dict[str, Tensor]) -> tuple[Tensor, Tensor, int]:
        res = lanczos(hvp_operator(self.loss, params, "reverse-cached"), self.cfg, warm_start=self.previous[s])
        self.previous[s] = res.eigenvectors
        return res.eigenvalues, res.residuals, res.n_hvp


def _hessian_loss(model: nn.Module, data, cfg):
    """The Hessian's function: mean `cfg.criterion` loss (+ (c/2)‖θ‖², c = cfg.weight_decay) on the
    fixed `_hessian_rows` of the training split, as one batch."""
    rows = _hessian_rows(len(data.train), cfg)
    return loss_fn(model, data.train.x[rows], data.train.y[rows], cfg.weight_decay,
                   batch_size=cfg.hessian_rows, criterion=cfg.criterion)


def check_labels(data) -> None:
    """Every split's labels in [0, num_classes): checked once, before training, because the
    'mse_onehot' criterion (core.hessian.per_row_loss) turns an out-of-range label into an all-zero
    target row instead of an error (its one-hot must run under vmap)."""
    for name in ("train", "val", "test"):
        split = getattr(data, name, None)
        if split is not None and len(split.y):
            lo, hi = int(split.y.min()), int(split.y.max())
            _require(0 <= lo and hi < data.num_classes,
                     f"{name} labels span {lo}..{hi}; allowed: 0..{data.num_classes - 1} (num_classes={data.num_classes})")


def _hessian_rows(n_train: int, cfg) -> Tensor:
    """The fixed, sorted rows of the Hessian's loss: the first `hessian_rows` of a permutation drawn
    once by torch.Generator(hessian_seed) (the same rows for every seed and checkpoint)."""
    _require(1 <= cfg.hessian_rows <= n_train,
             f"hessian_rows={cfg.hessian_rows}; allowed: 1..{n_train} (the training rows)")
    g = torch.Generator().manual_seed(cfg.hessian_seed)
    return torch.randperm(n_train, generator=g)[:cfg.hessian_rows].sort().values


def _empty(n_seeds: int, n_ckpt: int, k: int) -> dict[str, Tensor]:
    nan = lambda *shape: torch.full(shape, math.nan, dtype=torch.float64)  # noqa: E731
    return {"lam": nan(n_seeds, n_ckpt, k), "residual": nan(n_seeds, n_ckpt, k),
            "n_hvp": torch.zeros(n_seeds, n_ckpt, dtype=torch.long),
            **{key: nan(n_seeds, n_ckpt) for key in ("train_loss", "train_acc", "test_loss", "test_acc")}}


def train_ensemble(models: Sequence[nn.Module], data, cfg: EnsembleConfig,
                   generators: Sequence[torch.Generator]) -> dict:
    """Train `models` (one per seed, same architecture) in lockstep on `data` under `cfg`, tracking
    curvature at `cfg.checkpoints` (module docstring). Returns the artifact: `status` ("ok" or how many
    seeds diverged), per seed `seed_status`, the [S, C(, k)] tensors of `_empty`, `steps`, `epoch`,
    the final stacked params, `params_at` ({name: [S, C, ...]} when cfg.keep_params) and `metrics`
    (wall and CPU seconds)."""
    _require(len(models) == len(generators) >= 1, "one generator per model, at least one model")
    check_labels(data)
    t0, c0 = time.perf_counter(), time.process_time()
    base, params = _stack(models)
    n_seeds, n_rows = len(models), len(data.train)
    dropout = _has_dropout(base)
    train_base, base = base.train(), copy.deepcopy(base).eval()  # dropout on for steps, off for measuring
    forward = vmap(lambda p, x: functional_call(base, p, (x,)))
    # per-seed dropout masks: vmap draws [S, ...] at once; without dropout the step uses the eval forward
    train_forward = vmap(lambda p, x: functional_call(train_base, p, (x,)), randomness="different") if dropout \
        else forward
    per_epoch = math.ceil(n_rows / cfg.batch_size)
    _require(cfg.checkpoints[-1] <= cfg.epochs * per_epoch,
             f"checkpoint step {cfg.checkpoints[-1]} is past the end ({cfg.epochs * per_epoch} steps)")
    lanczos_cfg = LanczosConfig(k=cfg.top_k, tol=cfg.lanczos_tol, max_iter=cfg.lanczos_max_iter)
    track = _Tracker(_hessian_loss(copy.deepcopy(models[0]).eval(), data, cfg), lanczos_cfg, n_seeds)
    out = _empty(n_seeds, len(cfg.checkpoints), cfg.top_k)
    kept = {n: torch.empty(n_seeds, len(cfg.checkpoints), *p.shape[1:], dtype=p.dtype)
            for n, p in params.items()} if cfg.keep_params else None
    status, alive = ["ok"] * n_seeds, torch.ones(n_seeds, dtype=torch.bool)
    bufs, step, next_ckpt = None, 0, 0
    names = list(params)

    def measure(i: int) -> None:
        _mark_diverged(params, alive, status, step)
        if kept is not None:
            for n, p in params.items():
                kept[n][:, i] = p.detach()
        for key, split in (("train", data.train), ("test", data.test)):
            loss, acc = _evaluate(forward, params, split, cfg.criterion, cfg.eval_rows)
            out[f"{key}_loss"][:, i], out[f"{key}_acc"][:, i] = loss, acc
        for s in range(n_seeds):
            if alive[s]:
                lam, res, n_hvp = track(s, seed_params(params, s))
                out["lam"][s, i], out["residual"][s, i], out["n_hvp"][s, i] = lam, res, n_hvp
            else:
                out["train_loss"][s, i] = out["train_acc"][s, i] = math.nan
                out["test_loss"][s, i] = out["test_acc"][s, i] = math.nan

    with _dropout_rng(dropout, cfg.dropout_seed):
        for epoch in range(cfg.epochs + 1):
            if next_ckpt < len(cfg.checkpoints) and cfg.checkpoints[next_ckpt] == step:
                measure(next_ckpt)
                next_ckpt += 1
            if epoch == cfg.epochs or next_ckpt == len(cfg.checkpoints):
                break
            _mark_diverged(params, alive, status, step)  # once per epoch: a per-step check costs a sync
            mask = None if all(st == "ok" for st in status) else alive  # no per-step reduction while all live
            order = torch.stack([torch.randperm(n_rows, generator=g) for g in generators])
            for lo in range(0, n_rows, cfg.batch_size):
                idx = order[:, lo:lo + cfg.batch_size]
                bufs = _STEPS[cfg.optimizer](train_forward, params, names, bufs, data.train.x[idx],
                                             data.train.y[idx], cfg, mask, step + 1)
                step += 1
                if next_ckpt < len(cfg.checkpoints) and cfg.checkpoints[next_ckpt] == step and lo + cfg.batch_size < n_rows:
                    measure(next_ckpt)  # a checkpoint inside an epoch (epoch 1's fractions)
                    next_ckpt += 1
    n_bad = sum(st != "ok" for st in status)
    return {"status": "ok" if not n_bad else f"diverged: {n_bad} of {n_seeds} seeds", "seed_status": status,
            "steps": torch.tensor(cfg.checkpoints), "steps_per_epoch": per_epoch,
            "epoch": torch.tensor(cfg.checkpoints, dtype=torch.float64) / per_epoch, **out,
            "final": {n: p.detach().clone() for n, p in params.items()},
            **({"params_at": kept} if kept is not None else {}),
            "metrics": {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}}


def stacked_grads(forward, params: dict[str, Tensor], names: Sequence[str], x: Tensor, y: Tensor,
                  criterion: str, weight_decay: float) -> list[Tensor]:
    """∇L_s + c·θ_s for every seed s at once, one list entry per parameter name ([S, ...]): the loss
    Σ_s L_s of each seed's own mean over its [B] rows of x [S, B, ...], one backward."""
    leaves = [params[n] for n in names]
    logits = forward(params, x)
    loss = per_row_loss(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), criterion) / x.shape[1]
    grads = list(torch.autograd.grad(loss, leaves))  # Σ_s L_s: seed s's gradient is ∇L_s exactly
    if weight_decay:
        with torch.no_grad():
            torch._foreach_add_(grads, leaves, alpha=weight_decay)
    return grads


def _sgd_step(forward, params, names, bufs, x, y, cfg: EnsembleConfig, alive: Tensor | None, t: int):
    """One SGD(momentum) step for every seed; with `alive` (some seed diverged) the seeds it marks
    False are frozen (no update reaches them). None: all are live, and no mask is applied. `t` (the
    1-based step) only sets η under a cyclic schedule (`step_lr`)."""
    leaves = [params[n] for n in names]
    grads = stacked_grads(forward, params, names, x, y, cfg.criterion, cfg.weight_decay)
    with torch.no_grad():
        if cfg.momentum:
            if bufs is None:
                bufs = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(bufs, cfg.momentum)
                torch._foreach_add_(bufs, grads)
            grads = bufs
        lr = step_lr(cfg, t)
        if alive is None:
            torch._foreach_add_(leaves, grads, alpha=-lr)
            return bufs
        for p, g in zip(leaves, grads):
            live = alive.view(-1, *[1] * (p.dim() - 1))
            p.sub_(torch.where(live.to(p.device), lr * g, 0.0))  # where, not a 0 factor: 0·NaN is NaN
    return bufs


def _adam_step(forward, params, names, state, x, y, cfg: EnsembleConfig, alive: Tensor | None, t: int):
    """One torch.optim.Adam step (module docstring; the same operations in the same order as its
    single-tensor CPU path) for every seed at 1-based step t; `state` = (m, v) lists or None; `alive`
    as in `_sgd_step`."""
    (b1, b2), leaves = ADAM_BETAS, [params[n] for n in names]
    grads = stacked_grads(forward, params, names, x, y, cfg.criterion, cfg.weight_decay)
    with torch.no_grad():
        m, v = state or ([torch.zeros_like(g) for g in grads], [torch.zeros_like(g) for g in grads])
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** t))
        torch._foreach_add_(denom, ADAM_EPS)
        step_size = step_lr(cfg, t) / (1 - b1 ** t)
        if alive is None:
            torch._foreach_addcdiv_(leaves, m, denom, value=-step_size)
            return m, v
        for p, mm, d in zip(leaves, m, denom):
            live = alive.view(-1, *[1] * (p.dim() - 1))
            p.sub_(torch.where(live.to(p.device), mm / d * step_size, 0.0))  # where, not a 0 factor: 0·NaN is NaN
    return m, v


_STEPS = {"sgd": _sgd_step, "adam": _adam_step}


def _mark_diverged(params: dict[str, Tensor], alive: Tensor, status: list[str], step: int) -> None:
    """Freeze and label every live seed whose parameters stopped being finite (one reduction)."""
    finite = torch.stack([p.reshape(p.shape[0], -1).isfinite().all(1) for p in params.values()]).all(0).cpu()
    for s in (alive & ~finite).nonzero().flatten().tolist():
        bad = [n for n, p in params.items() if not p[s].isfinite().all()]
        status[s] = f"diverged at step {step}: non-finite parameters ({', '.join(bad)})"
        alive[s] = False
