"""Measurement study: which cpu-tier network and data size for the real-network Large-Scale-Structure
claims (Fort & Jastrzebski 2019, registry LS-5 … LS-10).

Question (fixed before any run): for which candidate network and MNIST-1D training size do (a) the
linear paths between independently initialised optima cross a real wall (linear barrier > tau_high
= 0.5 nat, LS-5), and (b) does the whole LS cpu set (10 tunnels, 10 m-connector sets at each
m ∈ {2, 5, 10} from a pool of up to 110 optima, LS-8 Lanczos, LS-9 grids, LS-10 cyclic runs) fit in
about 10 CPU-minutes on the 2-core machine? Nothing here is tuned toward an outcome: every setting
is the registry's (read from claims/registry.toml) or stated below before any run.

Method.
- Data: `core.data.load_dataset("mnist1d", seed=0, n_train=N, n_test=1000)`, N ∈ {1000, 4000}.
- Networks (`core.models`, no BN, PyTorch default init): CANDIDATES below.
- Optima: K seeds trained in lockstep (`core.ensemble.train_ensemble`, optimizer="adam", constant
  lr 1e-3, batch 128, no weight decay; Fort §4.1); seed s: `build_model(seed=s)`, batch order
  `torch.Generator().manual_seed(10000 + s)`. Parameters kept at the global steps CHECKPOINTS (a
  constant-lr run of S steps is the first S steps of a longer one, so one run gives every budget).
  "Trained" criterion (stated before any run, reported, not used to select): train accuracy ≥ 99%.
- Linear barrier at every checkpoint: disjoint pairs (0, 1), (2, 3), …; train loss (full training
  split, `core.netloss`) at 41 evenly spaced points on the segment; barrier = max − mean of the
  two endpoint losses (`core.connectors.barrier`).
- Probes at the last checkpoint, registry settings: LS-5 tunnel (20 segments; projected Adam lr 1e-3,
  constant, cpu steps, mini-batches of 128 rows drawn per hyperplane point; line and tunnel evaluated
  at 41 points per segment); LS-7 m-connectors at m = 2 (optima 0..2) and m = 5 (0..5) (centre's
  own mini-batch train loss, projected Adam lr 1e-3, constant, cpu steps; 41 points per segment);
  LS-8 top-60 Lanczos (180 steps, 5% subset, run to the step cap) at optimum 0; LS-9 radial width at
  optimum 0 (20 directions × 91 angles, level 1 nat); LS-6's cost (test labels at the 801 tunnel
  points of one pair). `--unit` runs each probe small (a tenth of the steps, a fraction of the
  points) and reports the cost scaled to the full size, with no barrier (for the slow candidates).
- Cost: CPU seconds (time.process_time, one intra-op thread) per part; the LS cpu set is then
  extrapolated from these unit costs (`--report`, formulas in `extrapolate`).

  .venv/bin/python benchmarks/ls_tier_study.py --quick                             # smoke test
  .venv/bin/python benchmarks/ls_tier_study.py --candidate mlp128x2-tanh --n-train 4000 --out ls.jsonl
  .venv/bin/python benchmarks/ls_tier_study.py --report ls.jsonl                    # markdown tables
Results: reports/ls-cpu-tier-study.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from core import connectors as C  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.ensemble import EnsembleConfig, seed_params, train_ensemble  # noqa: E402
from core.hessian import HessianConfig, LanczosConfig, hessian_loss, top_eigenpairs  # noqa: E402
from core.models import build_model, count_parameters  # noqa: E402
from core.netloss import net_loss  # noqa: E402
from core.registry import load_registry  # noqa: E402

CANDIDATES = {
    "mlp128x2-tanh": ("mlp", {"widths": (128, 128), "activation": "tanh"}),
    "mlp64x2-tanh": ("mlp", {"widths": (64, 64), "activation": "tanh"}),
    "cnn1d16-tanh": ("cnn1d", {"channels": (16, 16, 16), "activation": "tanh"}),
    "cnn1d32-tanh": ("cnn1d", {"channels": (32, 32, 32), "activation": "tanh"}),
}
CHECKPOINTS = (250, 500, 1000, 2000, 4000)  # global Adam steps at which the optima are kept
LR, BATCH = 1e-3, 128  # Fort §4.1 constant-lr Adam; the registry's batch (LS-5/7 *_batch_size, LS-9 default)
LINE_POINTS = 41  # the registry's points per segment


def _cpu(f, *a, **kw):
    """(result, CPU seconds) of f(*a, **kw)."""
    c0 = time.process_time()
    out = f(*a, **kw)
    return out, time.process_time() - c0


def _settings():
    reg = load_registry()
    return {k: reg[k] for k in ("LS-5", "LS-7", "LS-8", "LS-9", "LS-10")}


# ---------------------------------------------------------------- optima
def train(name: str, data, k: int, checkpoints) -> tuple[dict, float]:
    """K seeds in lockstep with constant-lr Adam; the params of every seed at every checkpoint."""
    model, kw = CANDIDATES[name]
    models = [build_model(model, num_classes=10, input_shape=data.input_shape, seed=s, **kw) for s in range(k)]
    per_epoch = math.ceil(len(data.train) / BATCH)
    epochs = math.ceil(checkpoints[-1] / per_epoch)
    steps = tuple(sorted({0, *(min(c, epochs * per_epoch) for c in checkpoints)}))
    # top_k = 1 with one Lanczos step on 10 rows: the trainer always measures λ, made negligible here
    cfg = EnsembleConfig(lr=LR, batch_size=BATCH, epochs=epochs, checkpoints=steps, optimizer="adam",
                         top_k=1, lanczos_max_iter=1, hessian_rows=10, keep_params=True)
    art, cpu = _cpu(train_ensemble, models, data, cfg, [torch.Generator().manual_seed(10000 + s) for s in range(k)])
    return art, cpu


def vectors(art: dict, i: int) -> torch.Tensor:
    """[K, D] flat parameters of every seed at checkpoint index i (the params dict's order)."""
    at = art["params_at"]
    return torch.cat([p[:, i].reshape(p.shape[0], -1) for p in at.values()], dim=1)


def linear_barriers(net, vecs: torch.Tensor) -> dict:
    pairs = torch.stack([vecs[0::2][: len(vecs) // 2], vecs[1::2][: len(vecs) // 2]], 1)  # [P, 2, D]
    with torch.no_grad():
        (losses, cpu) = _cpu(C.polyline_losses, net.loss, pairs, LINE_POINTS)
    return {"barrier": C.barrier(losses).tolist(), "mid_loss": losses[:, LINE_POINTS // 2].tolist(),
            "end_loss": losses[:, [0, -1]].mean(1).tolist(), "cpu_s": cpu, "points": LINE_POINTS * len(pairs)}


# ---------------------------------------------------------------- probes (registry settings)
def tunnels(net, test, vecs, s5, n_pairs: int, unit: bool, steps: int | None = None) -> dict:
    """LS-5 tunnels between pairs (0, 1), (2, 3), …: optimisation and evaluation CPU, barriers.
    `steps`: the hyperplane steps (default: the registry's cpu value)."""
    n_seg, steps = s5.setting("n_segments"), steps or s5.setting("hyperplane_steps", "cpu")
    p = s5.setting("n_points_per_segment")
    run_steps = max(1, steps // 10) if unit else steps
    a, b = vecs[0:2 * n_pairs:2], vecs[1:2 * n_pairs:2]
    t = torch.arange(1, n_seg, dtype=a.dtype) / n_seg
    u = ((b - a) / (b - a).norm(dim=-1, keepdim=True))[:, None, None, :]
    start = a[:, None] + t[:, None] * (b - a)[:, None]  # [P, k, D]
    cfg = C.OptimConfig(method=s5.setting("hyperplane_optimizer"), lr=s5.setting("hyperplane_lr"), steps=run_steps,
                        schedule="constant")
    grad = net.minibatch_grad(s5.setting("hyperplane_batch_size"), torch.Generator().manual_seed(55))
    points, opt_cpu = _cpu(C.descend, grad, start, cfg, C.affine_projector(start, u))
    nodes = torch.cat([a[:, None], points, b[:, None]], 1)
    line = torch.stack([a, b], 1)
    out = {"pairs": n_pairs, "steps_run": run_steps, "opt_cpu_s": opt_cpu * steps / run_steps}
    n_eval = n_seg * (p - 1) + 1
    if unit:  # cost of one pair's evaluation from 41 of its points
        with torch.no_grad():
            _, ev = _cpu(C.polyline_losses, net.loss, nodes[:1, :2], p)
        out["eval_cpu_s"] = ev * 2 * n_eval / p * n_pairs
    else:
        with torch.no_grad():
            (lin, tun), ev = _cpu(lambda: (C.polyline_losses(net.loss, line, n_eval),
                                           C.polyline_losses(net.loss, nodes, p)))
        off = torch.einsum("pD,pkD->pk", u[:, 0, 0], points - start).abs().max()
        out |= {"eval_cpu_s": ev, "linear_barrier": C.barrier(lin).tolist(), "tunnel_barrier": C.barrier(tun).tolist(),
                "point_loss_max": tun[:, p - 1::p - 1][:, :-1].amax(1).tolist(),
                "end_loss": lin[:, [0, -1]].mean(1).tolist(), "max_off_plane": float(off),
                "tunnel_max_loss": tun.amax(1).tolist()}
    tt = torch.linspace(0, 1, p, dtype=a.dtype)[:-1, None]
    pts = (nodes[0, :-1, None] + tt * (nodes[0, 1:, None] - nodes[0, :-1, None])).flatten(0, 1)
    pts = torch.cat([pts, nodes[0, -1:]])
    _, lab = _cpu(test.predict, pts[:p] if unit else pts)
    out["labels_cpu_s_per_pair"] = lab * (len(pts) / p if unit else 1.0)
    return out


def connector(net, optima: torch.Tensor, s7, unit: bool, steps: int | None = None) -> dict:
    """LS-7 m-connector of optima [m + 1, D]: the centre on the orthogonal affine subspace through the
    barycentre, optimised on its own mini-batch train loss; barrier = max over the segments.
    `steps`: the centre steps (default: the registry's cpu value)."""
    steps, p = steps or s7.setting("centre_steps", "cpu"), s7.setting("n_points_per_segment")
    run_steps = max(1, steps // 10) if unit else steps
    hull = optima.mean(0, keepdim=True)
    normals = torch.linalg.qr((optima[1:] - optima[:1]).T)[0].T[None]  # [1, m, D]
    cfg = C.OptimConfig(method=s7.setting("centre_optimizer"), lr=s7.setting("centre_lr"), steps=run_steps,
                        schedule="constant")
    loss = net.minibatch_loss(s7.setting("centre_batch_size"), torch.Generator().manual_seed(77))
    centre, opt_cpu = _cpu(C.minimize, loss, hull, cfg, C.affine_projector(hull, normals))
    segs = torch.stack([centre.expand_as(optima), optima], 1)  # [m + 1, 2, D]
    out = {"m": len(optima) - 1, "steps_run": run_steps, "opt_cpu_s": opt_cpu * steps / run_steps}
    with torch.no_grad():
        if unit:
            _, ev = _cpu(C.polyline_losses, net.loss, segs[:1], p)
            out["eval_cpu_s"] = ev * len(optima)
        else:
            seg, ev = _cpu(C.polyline_losses, net.loss, segs, p)
            out |= {"eval_cpu_s": ev, "barrier": float(C.barrier(seg).max()), "segment_barriers": C.barrier(seg).tolist(),
                    "centre_loss": float(seg[0, 0]), "hull_loss": float(net.loss(hull)[0]),
                    "end_loss": seg[:, -1].tolist()}
    return out


def lanczos(name: str, data, params: dict, s8) -> dict:
    model, kw = CANDIDATES[name]
    m = build_model(model, num_classes=10, input_shape=data.input_shape, seed=0, **kw)
    hc = HessianConfig(subset_fraction=s8.setting("lanczos_subset_fraction"))
    loss = hessian_loss(m, data.train.x, data.train.y, hc)
    cfg = LanczosConfig(k=s8.setting("lanczos_k"), max_iter=s8.setting("lanczos_iters"), tol=1e-12)  # to the cap
    res, cpu = _cpu(top_eigenpairs, loss, params, cfg)
    lam = res.eigenvalues
    return {"cpu_s": cpu, "n_hvp": int(res.n_hvp), "lambda_max": float(lam[0]), "lambda_60": float(lam[-1]),
            "count_above_fraction": int((lam > s8.setting("fraction") * lam[0]).sum()),
            "rows": max(1, round(hc.subset_fraction * len(data.train)))}


def width(net, w: torch.Tensor, s9, unit: bool) -> dict:
    """LS-9 radial width at w: per direction the smallest θ with train loss > level (linear interpolation)."""
    n_dir, n_th, th_max, level = (s9.setting(k) for k in ("n_directions", "theta_points", "theta_max", "level"))
    g = torch.Generator().manual_seed(99)
    v = torch.randn(n_dir, w.numel(), generator=g).to(w.dtype)
    what = w / w.norm()
    v = v - (v @ what)[:, None] * what
    v = v / v.norm(dim=1, keepdim=True)
    theta = torch.linspace(0, th_max, n_th, dtype=w.dtype)
    keep = theta[::10] if unit else theta
    rad = torch.deg2rad(keep)[None, :, None]
    pts = w.norm() * (torch.cos(rad) * what + torch.sin(rad) * v[:, None])  # [n_dir, n_θ, D]
    with torch.no_grad():
        losses, cpu = _cpu(net.loss, pts)
    out = {"cpu_s": cpu * n_th / len(keep), "points": n_dir * n_th}
    if not unit:
        above = losses > level
        first = torch.where(above.any(1), above.double().argmax(1), torch.full((n_dir,), n_th - 1))
        lo = (first - 1).clamp_min(0)
        l0, l1 = losses.gather(1, lo[:, None])[:, 0], losses.gather(1, first[:, None])[:, 0]
        frac = ((level - l0) / (l1 - l0).clamp_min(1e-12)).clamp(0, 1)
        ang = torch.where(above.any(1), keep[lo] + frac * (keep[first] - keep[lo]), torch.tensor(th_max, dtype=w.dtype))
        out |= {"width_deg": float(ang.mean()), "width_min": float(ang.min()), "width_max": float(ang.max()),
                "never_above": int((~above.any(1)).sum()),
                "points_to_last_crossing": n_dir * (int(first.max()) + 1), "loss_at_0": float(losses[0, 0])}
    return out


def scale_timing(name: str, data, k: int, steps: int) -> float:
    """CPU seconds per optimum per Adam step with k seeds in lockstep (a short run)."""
    per_epoch = math.ceil(len(data.train) / BATCH)
    epochs = math.ceil(steps / per_epoch)
    model, kw = CANDIDATES[name]
    models = [build_model(model, num_classes=10, input_shape=data.input_shape, seed=s, **kw) for s in range(k)]
    cfg = EnsembleConfig(lr=LR, batch_size=BATCH, epochs=epochs, checkpoints=(epochs * per_epoch,),
                         optimizer="adam", top_k=1, lanczos_max_iter=1, hessian_rows=10)
    _, cpu = _cpu(train_ensemble, models, data, cfg, [torch.Generator().manual_seed(s) for s in range(k)])
    return cpu / (k * epochs * per_epoch)


# ---------------------------------------------------------------- one candidate
def study(name: str, n_train: int, k: int, n_pairs: int, unit: bool, checkpoints=CHECKPOINTS,
          scale_k: int = 22) -> dict:
    torch.set_num_threads(1)
    S = _settings()
    data = load_dataset("mnist1d", seed=0, n_train=n_train, n_test=1000)
    art, train_cpu = train(name, data, k, checkpoints)
    steps = art["steps"].tolist()
    model, kw = CANDIDATES[name]
    base = build_model(model, num_classes=10, input_shape=data.input_shape, seed=0, **kw)
    net = net_loss(base, dict(base.named_parameters()), data.train.x, data.train.y)
    test = net.on(data.test.x, data.test.y)
    rec = {"candidate": name, "n_train": n_train, "k": k, "params": count_parameters(base),
           "train_cpu_s": train_cpu, "train_steps": steps[-1], "load": os.getloadavg()[0], "checkpoints": []}
    for i, s in enumerate(steps):
        if s == 0:
            continue
        vecs = vectors(art, i)
        rec["checkpoints"].append({"step": s, "epoch": s / art["steps_per_epoch"],
                                   "train_loss": art["train_loss"][:, i].tolist(), "train_acc": art["train_acc"][:, i].tolist(),
                                   "test_loss": art["test_loss"][:, i].tolist(), "test_acc": art["test_acc"][:, i].tolist(),
                                   "linear": linear_barriers(net, vecs)})
        print(f"{name} N={n_train} step {s}: train acc {art['train_acc'][:, i].mean():.3f}, "
              f"linear barrier {rec['checkpoints'][-1]['linear']['barrier']}", flush=True)
    vecs = vectors(art, len(steps) - 1)
    rec["tunnel"] = tunnels(net, test, vecs, S["LS-5"], n_pairs, unit)
    print("tunnel", rec["tunnel"], flush=True)
    rec["connectors"] = [connector(net, vecs[:m + 1], S["LS-7"], unit) for m in (2, 5) if m + 1 <= k]
    print("connectors", rec["connectors"], flush=True)
    rec["lanczos"] = lanczos(name, data, seed_params(art["final"], 0), S["LS-8"])
    rec["width"] = width(net, vecs[0], S["LS-9"], unit)
    rec["per_opt_step_cpu_s"] = {"k": train_cpu / (k * steps[-1])}
    if scale_k:
        rec["per_opt_step_cpu_s"][f"k{scale_k}"] = scale_timing(name, data, scale_k, 200)
    rec["steps_per_epoch"] = art["steps_per_epoch"]
    rec["unit"] = unit
    return rec


def sweep(name: str, n_train: int, k: int, n_pairs: int, tunnel_steps, centre_steps, at_step: int | None = None) -> dict:
    """Optimiser convergence: the same optima's tunnels and m-connectors at several step counts (the
    registry's cpu value, and more: its gpu value is 2000 hyperplane / 4000 centre steps). The optima
    are those of checkpoint `at_step` (default: the last)."""
    torch.set_num_threads(1)
    S = _settings()
    data = load_dataset("mnist1d", seed=0, n_train=n_train, n_test=1000)
    art, _ = train(name, data, k, CHECKPOINTS)
    model, kw = CANDIDATES[name]
    base = build_model(model, num_classes=10, input_shape=data.input_shape, seed=0, **kw)
    net = net_loss(base, dict(base.named_parameters()), data.train.x, data.train.y)
    test = net.on(data.test.x, data.test.y)
    i = len(art["steps"]) - 1 if at_step is None else art["steps"].tolist().index(at_step)
    vecs = vectors(art, i)
    rec = {"sweep": name, "n_train": n_train, "k": k, "optima_step": int(art["steps"][i]), "tunnels": [], "connectors": []}
    for st in tunnel_steps:
        rec["tunnels"].append(tunnels(net, test, vecs, S["LS-5"], n_pairs, False, st))
        print("tunnel", st, rec["tunnels"][-1], flush=True)
    for st in centre_steps:
        rec["connectors"] += [connector(net, vecs[:m + 1], S["LS-7"], False, st) for m in (2, 5) if m + 1 <= k]
        print("connectors", st, rec["connectors"][-2:], flush=True)
    return rec


# ---------------------------------------------------------------- the LS cpu set, extrapolated
def extrapolate(rec: dict, steps: int, lean: bool = False) -> dict:
    """CPU seconds of the LS cpu set from the measured unit costs, for optima trained `steps` Adam steps.
    `lean`: two savings that change no number the claims use: LS-8 on nested sets (each m's 5 sets
    inside the m = 10 sets' 55 optima: 55 + 20 Lanczos runs), and LS-9's θ scan in increasing θ,
    stopped once every direction has crossed the level (the measured `points_to_last_crossing`).

    pool      110 optima × steps × c_step (c_step: per optimum-step cost at the larger lockstep k)
    LS-5      10 pairs × (tunnel optimisation + evaluation of line and tunnel, 2 × 801 points)
    LS-6      10 pairs × test labels at 801 points
    LS-7      10 sets × m ∈ {2, 5, 10}: centre optimisation (measured per centre) + (m + 1) × 41 points
    LS-8      130 top-60 Lanczos runs (20 centres + 110 optima of 5 sets per m ∈ {1, 2, 5, 10})
    LS-9      40 new trainings (8 non-default grid points × 5 seeds; batch 512 costs 4×, 32 ¼× per step
              at a fixed step budget) + 45 width scans (9 distinct grid points × 5 seeds)
    LS-10     10 seeds × 2 arms × 5 cycles × cycle_epochs (cpu) epochs of SGD at c_step per step
    """
    c_step = list(rec["per_opt_step_cpu_s"].values())[-1]  # the largest lockstep k measured
    t, cons = rec["tunnel"], rec["connectors"]
    per_pair = (t["opt_cpu_s"] + t["eval_cpu_s"]) / t["pairs"]
    centre = sum(c["opt_cpu_s"] for c in cons) / len(cons)
    per_point = sum(c["eval_cpu_s"] / ((c["m"] + 1) * LINE_POINTS) for c in cons) / len(cons)
    s10 = _settings()["LS-10"]
    w = rec["width"]
    width_share = w.get("points_to_last_crossing", w["points"]) / w["points"] if lean else 1.0
    out = {"pool": 110 * steps * c_step,
           "LS-5": 10 * per_pair, "LS-6": 10 * t["labels_cpu_s_per_pair"],
           "LS-7": 30 * centre + 10 * (3 + 6 + 11) * LINE_POINTS * per_point,
           "LS-8": (75 if lean else 130) * rec["lanczos"]["cpu_s"],
           "LS-9": 5 * (6 + 0.25 + 4) * steps * c_step + 45 * rec["width"]["cpu_s"] * width_share,
           "LS-10": 10 * 2 * s10.setting("n_snapshots") * s10.setting("cycle_epochs", "cpu") * rec["steps_per_epoch"] * c_step}
    out["total"] = sum(out.values())
    return out


def report(path: str, steps_list=(1000, 2000, 4000)) -> str:
    recs = [r for r in map(json.loads, open(path)) if "candidate" in r]  # sweep records: `report_sweep`
    if not recs:
        return ""
    f = lambda x: f"{x:.2f}"  # noqa: E731
    rng = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"  # noqa: E731
    lines = ["| candidate | N | D | step | train acc | train loss | test acc | linear barrier (pairs) | end loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        for c in r["checkpoints"]:
            lines.append(f"| {r['candidate']} | {r['n_train']} | {r['params']:,} | {c['step']} | {rng(c['train_acc'])} | "
                         f"{rng(c['train_loss'])} | {rng(c['test_acc'])} | {', '.join(f(b) for b in c['linear']['barrier'])} | "
                         f"{rng(c['linear']['end_loss'])} |")
    lines += ["", "| candidate | N | tunnel barrier | linear (801 pts) | τ_low | m=2 barrier | m=5 barrier | λ_max | count > 0.1λ | width (deg) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        t, cons = r["tunnel"], {c["m"]: c for c in r["connectors"]}
        tau = [0.02 + 0.5 * e for e in t.get("end_loss", [])]
        lines.append(f"| {r['candidate']} | {r['n_train']} | {', '.join(f(b) for b in t.get('tunnel_barrier', [])) or '–'} | "
                     f"{', '.join(f(b) for b in t.get('linear_barrier', [])) or '–'} | {', '.join(f'{x:.3f}' for x in tau) or '–'} | "
                     f"{f(cons[2]['barrier']) if 'barrier' in cons.get(2, {}) else '–'} | "
                     f"{f(cons[5]['barrier']) if 'barrier' in cons.get(5, {}) else '–'} | {r['lanczos']['lambda_max']:.1f} | "
                     f"{r['lanczos']['count_above_fraction']} | {r['width'].get('width_deg', float('nan')):.1f} |")
    lines += ["", "| candidate | N | train CPU s (K, steps) | s / optimum-step (K; 22) | tunnel opt / eval s per pair | "
              "centre opt s | Lanczos s | width s | " + " | ".join(f"LS set s @ {s} steps" for s in steps_list) + " |",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(steps_list)]
    for r in recs:
        t, cons = r["tunnel"], r["connectors"]
        ps = list(r["per_opt_step_cpu_s"].values())
        centres = ", ".join(f"{c['opt_cpu_s']:.0f}" for c in cons)
        lines.append(f"| {r['candidate']} | {r['n_train']} | {r['train_cpu_s']:.0f} ({r['k']}, {r['train_steps']}) | "
                     f"{' ; '.join(f'{x * 1e3:.2f} ms' for x in ps)} | {t['opt_cpu_s'] / t['pairs']:.0f} / {t['eval_cpu_s'] / t['pairs']:.0f} | "
                     f"{centres} | {r['lanczos']['cpu_s']:.1f} | {r['width']['cpu_s']:.1f} | "
                     + " | ".join(f"{extrapolate(r, s)['total']:.0f}" for s in steps_list) + " |")
    keys = list(extrapolate(recs[0], 1000))
    lines += ["", "| candidate | N | steps | " + " | ".join(keys) + " | total, lean |", "|---|---|---|" + "---|" * (len(keys) + 1)]
    for r in recs:
        for s in steps_list:
            lines.append(f"| {r['candidate']} | {r['n_train']} | {s} | " + " | ".join(f"{v:.0f}" for v in extrapolate(r, s).values())
                         + f" | {extrapolate(r, s, lean=True)['total']:.0f} |")
    return "\n".join(lines)


def report_sweep(path: str) -> str:
    """Tunnel and connector barriers against the optimiser's step count (`--sweep` records)."""
    lines = ["| candidate | N | optima at step | probe | steps | barrier (per pair / set) | max loss at the optimised points | τ_low | CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in map(json.loads, open(path)) if "sweep" in r):
        head = f"| {r['sweep']} | {r['n_train']} | {r.get('optima_step', 4000)} |"
        for t in r["tunnels"]:
            tau = ", ".join(f"{0.02 + 0.5 * e:.3f}" for e in t["end_loss"])
            lines.append(f"{head} tunnel | {t['steps_run']} | {', '.join(f'{b:.3f}' for b in t['tunnel_barrier'])} | "
                         f"{', '.join(f'{b:.3f}' for b in t['point_loss_max'])} | {tau} | {t['opt_cpu_s']:.0f} |")
        for c in r["connectors"]:
            tau = 0.02 + 0.5 * sum(c["end_loss"]) / len(c["end_loss"])
            lines.append(f"{head} m = {c['m']} | {c['steps_run']} | {c['barrier']:.3f} | {c['centre_loss']:.3f} (centre) | "
                         f"{tau:.3f} | {c['opt_cpu_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candidate", choices=list(CANDIDATES), default="mlp128x2-tanh")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--k", type=int, default=6, help="optima trained in lockstep")
    ap.add_argument("--pairs", type=int, default=3, help="tunnels built (pairs (0,1), (2,3), ...)")
    ap.add_argument("--unit", action="store_true", help="probes at reduced size, costs scaled, no barriers")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny budget, unit probes")
    ap.add_argument("--sweep", nargs=2, metavar=("TUNNEL_STEPS", "CENTRE_STEPS"), default=None,
                    help="comma-separated step counts: tunnels and connectors at each (optimiser convergence)")
    ap.add_argument("--at-step", type=int, default=None, help="--sweep: optima of this checkpoint (default: the last)")
    ap.add_argument("--out", default=None, help="append the JSON record to this file")
    ap.add_argument("--report", default=None, help="print markdown tables from a JSON-lines file")
    a = ap.parse_args()
    if a.report:
        print(report(a.report))
        print()
        print(report_sweep(a.report))
        return
    if a.sweep:
        ts, cs = ([int(v) for v in x.split(",")] for x in a.sweep)
        rec = sweep(a.candidate, a.n_train, a.k, a.pairs, ts, cs, a.at_step)
    elif a.quick:
        rec = study("mlp64x2-tanh", 1000, 4, 1, True, checkpoints=(16, 32), scale_k=0)
    else:
        rec = study(a.candidate, a.n_train, a.k, a.pairs, a.unit)
    line = json.dumps(rec)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(line + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "checkpoints"}, indent=1))


if __name__ == "__main__":
    main()
