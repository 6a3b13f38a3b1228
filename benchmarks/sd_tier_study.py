"""Measurement study: which cpu-tier network / data size / budget lets λ_max level off (SD-1/2/7).

For each candidate (network, training rows, epoch budget, checkpoint spacing) and each grid point the
Sharpest-Directions claims need, train with plain SGD (constant lr, no weight decay, no BN, no
augmentation; momentum only for SD-7) and track λ_max, the top eigenvalue of the Hessian of the mean
training cross-entropy on a fixed subset of the training rows (eval mode), by SciPy
`eigsh(LinearOperator, k=1, which='LA')` on a double-backward Hessian-vector product. λ_max is
measured at initialisation, at a few points inside the first epoch, then every `every` epochs.

Because the lr is constant, a run of T epochs is the first T epochs of a longer run: each trajectory
is therefore also judged at the truncated budgets T/2 and T/4 (`--budgets`), and the wall time
of a run of that length is the measured time to that checkpoint.

Levelling-off criterion (fixed before any run was looked at; same as SD-1's per-seed rule):
  with T the budget, λ_peak = max of λ over checkpoints t ≤ T/2 and t_peak its epoch, a trajectory
  LEVELS OFF iff  (a) t_peak is not the last checkpoint ≤ T/2, and  (b) λ(T) ≤ 1.1·λ_peak.
Secondary (reported only): max over T/2 < t ≤ T  ≤ 1.1·λ_peak.

  .venv/bin/python benchmarks/sd_tier_study.py --quick                 # smoke test, ~10 s
  .venv/bin/python benchmarks/sd_tier_study.py --candidate mlp128x2-relu-1k --tau 400 --seeds 0 1 --out a.jsonl
  .venv/bin/python benchmarks/sd_tier_study.py --report a.jsonl --budgets 1 0.75 0.5   # markdown tables
--tau sets a common budget in η·steps (gradient-flow time) at every grid point; --epochs/--every a common
one in epochs. Results and the recommended setting: reports/sd-cpu-tier-study.md.
Self-contained: uses core.data (MNIST-1D via the `mnist1d` package) and core.models only.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from core.data import batches, load_dataset  # noqa: E402
from core.models import build_model, count_parameters  # noqa: E402

# ---------------------------------------------------------------- the grid the claims need
# (lr, batch, momentum) -> which claims use it
GRID = {
    (0.01, 32, 0.0): "SD-2 lr",
    (0.03, 32, 0.0): "SD-2 lr+batch",
    (0.1, 32, 0.0): "SD-2 lr",
    (0.03, 8, 0.0): "SD-2 batch",
    (0.03, 128, 0.0): "SD-2 batch",
    (0.1, 128, 0.0): "SD-1",
    (0.01, 128, 0.0): "SD-7 m=0",
    (0.01, 128, 0.9): "SD-7 m=0.9",
}


@dataclass(frozen=True)
class Candidate:
    name: str
    model: str
    kwargs: dict
    rows: int
    epochs: int
    every: int          # λ_max every `every` epochs after the first epoch
    hess_rows: int = 200


CANDIDATES = {c.name: c for c in [
    Candidate("mlp128x2-relu-4k", "mlp", {"widths": (128, 128), "activation": "relu"}, 4000, 40, 1),
    Candidate("mlp64x2-relu-1k", "mlp", {"widths": (64, 64), "activation": "relu"}, 1000, 200, 4),
    Candidate("mlp64x2-tanh-1k", "mlp", {"widths": (64, 64), "activation": "tanh"}, 1000, 200, 4),
    Candidate("mlp256-relu-1k", "mlp", {"widths": (256,), "activation": "relu"}, 1000, 200, 4),
    Candidate("mlp256-tanh-1k", "mlp", {"widths": (256,), "activation": "tanh"}, 1000, 200, 4),
    Candidate("mlp64x2-relu-2k", "mlp", {"widths": (64, 64), "activation": "relu"}, 2000, 200, 4),
    Candidate("mlp64x2-tanh-2k", "mlp", {"widths": (64, 64), "activation": "tanh"}, 2000, 200, 4),
    Candidate("cnn1d-relu-1k", "cnn1d", {"channels": (16, 16, 16), "stride": 2}, 1000, 100, 4),
    Candidate("mlp128x2-relu-1k", "mlp", {"widths": (128, 128), "activation": "relu"}, 1000, 200, 4),
    Candidate("mlp256x2-relu-1k", "mlp", {"widths": (256, 256), "activation": "relu"}, 1000, 200, 4),
    Candidate("mlp512-relu-1k", "mlp", {"widths": (512,), "activation": "relu"}, 1000, 200, 4),
    Candidate("mlp64x3-relu-1k", "mlp", {"widths": (64, 64, 64), "activation": "relu"}, 1000, 200, 4),
    Candidate("cnn1d32-relu-1k", "cnn1d", {"channels": (32, 32, 32)}, 1000, 100, 4),
    Candidate("mlp64x2-relu-1k-long", "mlp", {"widths": (64, 64), "activation": "relu"}, 1000, 400, 8),
    Candidate("mlp64x2-tanh-1k-long", "mlp", {"widths": (64, 64), "activation": "tanh"}, 1000, 400, 8),
]}


# ---------------------------------------------------------------- λ_max
class TopEig:
    """λ_max of the mean CE on (x, y) at the model's current parameters, eval mode.

    The gradient with create_graph is formed once per call; each Lanczos matvec is one
    backward of <g, v>. The previous top eigenvector warm-starts the next call."""

    def __init__(self, model, x, y, tol=1e-3, seed=0):
        self.model, self.x, self.y, self.tol = model, x, y, tol
        self.n = sum(p.numel() for p in model.parameters())
        self.v0 = np.random.default_rng(seed).standard_normal(self.n)
        self.matvecs = 0

    def __call__(self) -> float:
        model = self.model
        was = model.training
        model.eval()
        names = [k for k, _ in model.named_parameters()]
        params = [p.detach().clone().requires_grad_(True) for _, p in model.named_parameters()]
        loss = F.cross_entropy(functional_call(model, dict(zip(names, params)), (self.x,)), self.y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])

        def mv(v):
            self.matvecs += 1
            vt = torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(-1))
            hv = torch.autograd.grad(flat @ vt, params, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hv]).double().numpy()

        op = LinearOperator((self.n, self.n), matvec=mv, dtype=np.float64)
        vals, vecs = eigsh(op, k=1, which="LA", tol=self.tol, v0=self.v0, ncv=min(10, self.n))
        self.v0 = vecs[:, 0]
        model.train(was)
        return float(vals[0])


# ---------------------------------------------------------------- one run
def first_epoch_fracs(steps_per_epoch: int) -> list[int]:
    """Steps inside epoch 1 at which λ_max is measured: ~1/8, 1/4, 1/2 of the epoch (distinct, > 0)."""
    s = sorted({max(1, round(steps_per_epoch * f)) for f in (1 / 8, 1 / 4, 1 / 2)} - {steps_per_epoch})
    return s


def run(cand: Candidate, lr: float, batch: int, momentum: float, seed: int, data, hx, hy,
        epochs: int | None = None, every: int | None = None) -> dict:
    epochs = cand.epochs if epochs is None else epochs
    every = cand.every if every is None else every
    model = build_model(cand.model, num_classes=10, input_shape=data.input_shape, seed=seed,
                        **cand.kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=0.0)
    gen = torch.Generator().manual_seed(10_000 + seed)
    eig = TopEig(model, hx, hy, seed=seed)
    n = len(data.train)
    spe = -(-n // batch)
    inner = set(first_epoch_fracs(spe))
    traj = []   # (epoch, λ_max, cumulative train CPU s, cumulative Lanczos CPU s, train loss)
    t_train = t_eig = 0.0
    c0, w0 = time.process_time(), time.perf_counter()

    def measure(t):
        nonlocal t_eig
        s = time.process_time()
        lam = eig()
        with torch.no_grad():
            model.eval()
            tl = float(F.cross_entropy(model(data.train.x), data.train.y))
            model.train()
        t_eig += time.process_time() - s
        traj.append((t, lam, t_train, t_eig, tl))

    measure(0.0)
    status = "ok"
    for e in range(epochs):
        model.train()
        s = time.process_time()
        for i, (x, y) in enumerate(batches(data.train, batch, generator=gen)):
            if x.shape[0] < 2:
                continue
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if e == 0 and (i + 1) in inner:
                t_train += time.process_time() - s
                measure((i + 1) / spe)
                s = time.process_time()
        t_train += time.process_time() - s
        if not math.isfinite(float(loss.detach())):
            status = "diverged"
            break
        if (e + 1) == 1 or (e + 1) % every == 0 or (e + 1) == epochs:
            measure(float(e + 1))
    with torch.no_grad():
        model.eval()
        out = model(data.train.x)
        tr_loss = float(F.cross_entropy(out, data.train.y))
        tr_acc = float((out.argmax(1) == data.train.y).float().mean())
    return {"candidate": cand.name, "lr": lr, "batch": batch, "momentum": momentum, "seed": seed,
            "epochs": epochs, "every": every, "steps_per_epoch": spe, "status": status, "traj": traj, "train_loss": tr_loss,
            "train_acc": tr_acc, "t_train": t_train, "t_eig": t_eig,
            "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0, "matvecs": eig.matvecs,
            "n_params": count_parameters(model)}


# ---------------------------------------------------------------- the criterion, at a budget T
def judge(traj, T: float) -> dict:
    pts = [p for p in traj if p[0] <= T + 1e-9]
    first = [p for p in pts if p[0] <= T / 2 + 1e-9]
    i_pk = max(range(len(first)), key=lambda i: first[i][1])
    pk_t, pk = first[i_pk][0], first[i_pk][1]
    fin = pts[-1][1]
    i_all = max(range(len(pts)), key=lambda i: pts[i][1])
    second = [p[1] for p in pts if p[0] > T / 2 + 1e-9]
    a = i_pk != len(first) - 1
    b = fin <= 1.1 * pk
    return {"T": T, "lam0": pts[0][1], "peak_half": pk, "peak_half_t": pk_t, "final": fin,
            "max": pts[i_all][1], "max_t": pts[i_all][0], "levels_off": bool(a and b),
            "crit_a": bool(a), "crit_b": bool(b),
            "second_half_ok": bool(not second or max(second) <= 1.1 * pk),
            "t_train": pts[-1][2], "t_eig": pts[-1][3], "loss": pts[-1][4] if len(pts[-1]) > 4 else None,
            "loss_at_max": pts[i_all][4] if len(pts[i_all]) > 4 else None, "n_ckpt": len(pts)}


def report(paths, budgets=(1.0, 0.5, 0.25)) -> str:
    """Markdown tables (one per candidate) from the JSON lines written by --out."""
    runs = [json.loads(l) for p in paths for l in open(p) if l.strip()]
    out = []
    for cand in dict.fromkeys(r["candidate"] for r in runs):
        rs = [r for r in runs if r["candidate"] == cand]
        out += [f"### {cand} ({rs[0]['n_params']:,} parameters)", "",
                "| lr | batch | mom | claim | T (epochs) | λ₀ | max t ≤ T/2 (epoch) | final | overall max (epoch) "
                "| peak at η·steps | train loss at max | 2/lr | final train loss | levels off | CPU s / run (train + Lanczos) |",
                "|" + "---|" * 15]
        keys = list(dict.fromkeys((r["lr"], r["batch"], r["momentum"]) for r in rs))
        for k in keys:
            g = sorted((r for r in rs if (r["lr"], r["batch"], r["momentum"]) == k), key=lambda r: r["seed"])
            js = [judge(r["traj"], r["epochs"]) for r in g]
            f = lambda fmt, xs: " / ".join(fmt.format(*x) if isinstance(x, tuple) else fmt.format(x) for x in xs)
            spe = [r.get("steps_per_epoch") or -(-CANDIDATES[cand].rows // r["batch"]) for r in g]
            tau = [k[0] * n * j["max_t"] for n, j in zip(spe, js)]
            lmax = ["–" if j["loss_at_max"] is None else f"{j['loss_at_max']:.2f}" for j in js]
            out.append(
                f"| {k[0]:g} | {k[1]} | {k[2]:g} | {GRID.get(k, '')} | {g[0]['epochs']} | "
                f"{f('{:.2f}', [j['lam0'] for j in js])} | "
                f"{f('{:.2f} ({:g})', [(j['peak_half'], j['peak_half_t']) for j in js])} | "
                f"{f('{:.2f}', [j['final'] for j in js])} | "
                f"{f('{:.2f} ({:g})', [(j['max'], j['max_t']) for j in js])} | "
                f"{f('{:.0f}', tau)} | {' / '.join(lmax)} | {2 / k[0]:.0f} | {f('{:.3f}', [r['train_loss'] for r in g])} | "
                f"{' / '.join('yes' if j['levels_off'] else 'NO' for j in js)} | "
                f"{f('{:.1f}', [r['t_train'] + r['t_eig'] for r in g])} ({f('{:.1f}', [r['t_train'] for r in g])} + "
                f"{f('{:.1f}', [r['t_eig'] for r in g])}) |")
        out += ["", "Levelling off at truncated budgets (same trajectories, T = fraction of the run; "
                "runs levelling off / runs; CPU s for the whole grid, all seeds):", ""]
        for b in budgets:
            js = [judge(r["traj"], b * r["epochs"]) for r in rs]
            bad = [f"{r['lr']:g}/{r['batch']}/{r['momentum']:g} s{r['seed']}" for r, j in zip(rs, js)
                   if not j["levels_off"]]
            cost = sum(j["t_train"] + j["t_eig"] for j in js)
            out.append(f"- {b:g} of the budget: {sum(j['levels_off'] for j in js)}/{len(js)} level off; "
                       f"CPU {cost:.0f} s; not levelling: {', '.join(bad) or 'none'}")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: one small candidate, 10 epochs, 1 seed, 3 grid points")
    ap.add_argument("--candidate", action="append", help="candidate name(s); default: all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--points", nargs="+", default=None, help="grid points as lr,batch,momentum")
    ap.add_argument("--budgets", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                    help="fractions of the candidate's epochs at which the criterion is also judged")
    ap.add_argument("--epochs", type=int, default=None, help="override the candidates' epoch budget")
    ap.add_argument("--every", type=int, default=None, help="override the candidates' checkpoint spacing")
    ap.add_argument("--tau", type=float, default=None,
                    help="budget in lr x steps (gradient-flow time) instead of epochs: each grid point "
                         "runs ceil(tau / (lr * steps_per_epoch)) epochs, λ_max every ~1/--ckpts of it")
    ap.add_argument("--ckpts", type=int, default=60, help="with --tau: checkpoints after epoch 1")
    ap.add_argument("--out", default=None, help="append one JSON line per run to this file")
    ap.add_argument("--report", nargs="+", default=None, help="print markdown tables from --out files and exit")
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report, tuple(args.budgets)))
        return
    torch.set_num_threads(1)

    if args.quick:
        base = CANDIDATES["mlp64x2-relu-1k"]
        cands = [Candidate("quick", base.model, base.kwargs, base.rows, 10, 1)]
        points = [(0.1, 128, 0.0), (0.03, 32, 0.0), (0.01, 128, 0.9)]
        seeds = [0]
    else:
        cands = [CANDIDATES[c] for c in (args.candidate or CANDIDATES)]
        points = ([tuple(float(v) if i != 1 else int(v) for i, v in enumerate(p.split(",")))
                   for p in args.points] if args.points else list(GRID))
        seeds = args.seeds
    if args.epochs or args.every:
        cands = [Candidate(c.name, c.model, c.kwargs, c.rows, args.epochs or c.epochs,
                           args.every or c.every, c.hess_rows) for c in cands]
    for cand in cands:
        t0 = time.perf_counter()
        data = load_dataset("mnist1d", seed=0, n_train=cand.rows, n_test=100)
        g = torch.Generator().manual_seed(12345)
        idx = torch.randperm(len(data.train), generator=g)[:cand.hess_rows]
        hx, hy = data.train.x[idx], data.train.y[idx]
        print(f"# {cand.name}: {cand.model} {cand.kwargs} rows={cand.rows} epochs={cand.epochs} "
              f"every={cand.every} hess_rows={cand.hess_rows} (data {time.perf_counter() - t0:.1f}s)",
              flush=True)
        for (lr, batch, mom) in points:
            for seed in seeds:
                if args.tau:
                    spe = -(-cand.rows // batch)
                    ep = math.ceil(args.tau / (lr * spe))
                    ev = max(1, round(ep / args.ckpts))
                    ep = -(-ep // ev) * ev  # a whole number of checkpoint intervals
                    r = run(cand, lr, batch, mom, seed, data, hx, hy, epochs=ep, every=ev)
                else:
                    r = run(cand, lr, batch, mom, seed, data, hx, hy)
                r["judged"] = [judge(r["traj"], f * r["epochs"]) for f in args.budgets]
                j = r["judged"][0]
                print(f"{cand.name:22s} lr={lr:<5} b={batch:<4} m={mom:<3} s={seed} "
                      f"l0={j['lam0']:.2f} pkH={j['peak_half']:.2f}@{j['peak_half_t']:g} "
                      f"fin={j['final']:.2f} max={j['max']:.2f}@{j['max_t']:g} 2/lr={2 / lr:.0f} "
                      f"loss={r['train_loss']:.3f} acc={r['train_acc']:.2f} "
                      f"lev={'Y' if j['levels_off'] else 'n'} "
                      + " ".join(f"[T={k['T']:g}:{'Y' if k['levels_off'] else 'n'}]" for k in r["judged"][1:])
                      + f" train={r['t_train']:.1f}s eig={r['t_eig']:.1f}s cpu={r['cpu_s']:.1f}s "
                      f"mv={r['matvecs']} P={r['n_params']} {r['status']}", flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
