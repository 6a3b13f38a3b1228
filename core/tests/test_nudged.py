"""Lockstep nudged SGD (core/nudged.py). Oracles: torch.optim.SGD and core.nsgd.NudgedSGD on one model,
the exact Hessian's eigenvectors, and Keras's plateau / early-stopping rules on a scripted history."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from core.data import Dataset, Split
from core.hessian import ParamLayout, per_row_loss
from core.nsgd import NudgedSGD
from core.nudged import NudgedConfig, _schedule, nudged_direction, train_nudged


def _data(n=48, d=5, classes=3, seed=0, val=True):
    g = torch.Generator().manual_seed(seed)
    mk = lambda m: Split(torch.randn(m, d, generator=g), torch.randint(0, classes, (m,), generator=g))  # noqa: E731
    return Dataset("synthetic", mk(n), mk(20), mk(16) if val else None, classes, (d,))


def _mlp(seed, d=5, classes=3, width=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, classes))


def _start(seed):
    return {n: p.detach().clone() for n, p in _mlp(seed).named_parameters()}


def _cfg(**kw):
    base = dict(lr=0.1, batch_size=16, max_steps=9, hessian_rows=48, refresh_tol=1e-8, refresh_iters=60,
                final_iters=60, final_tol=1e-6)
    return NudgedConfig(**{**base, **kw})


def _gens(n=2):
    return [torch.Generator().manual_seed(100 + i) for i in range(n)]


def _top_eigvec(model, params, data, k=1):
    layout = ParamLayout.of(params)
    f = lambda th: per_row_loss(functional_call(model, layout.unflatten(th), (data.train.x,)), data.train.y,  # noqa: E731
                                "cross_entropy") / len(data.train)
    H = hessian(f)(layout.flatten(params).double().float()).double()
    w, V = torch.linalg.eigh(H)
    return V[:, -k:].T.flip(0), w.flip(0)[:k]


def test_direction_is_the_nsgd_step_for_every_variant():
    g = torch.Generator().manual_seed(0)
    D, K, M = 30, 3, 4
    E = torch.linalg.qr(torch.randn(D, K, generator=g, dtype=torch.float64))[0].T.expand(M, K, D).clone()
    grads = [torch.randn(M, 5, 4, generator=g), torch.randn(M, 10, generator=g)]
    coefs = torch.tensor([[1.0, 1.0], [1.0, 0.01], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    out = nudged_direction(grads, E, coefs[:, 0], coefs[:, 1])
    G = torch.cat([x.reshape(M, -1) for x in grads], 1).double()
    P = E[0].T @ E[0]
    want = [G[0], (torch.eye(D, dtype=torch.float64) - P) @ G[1] + 0.01 * P @ G[1], P @ G[2],
            (torch.eye(D, dtype=torch.float64) - P) @ G[3]]
    got = torch.cat([x.reshape(M, -1) for x in out], 1).double()
    for i in range(M):
        torch.testing.assert_close(got[i], want[i].float().double(), rtol=1e-6, atol=1e-6)
    assert torch.equal(out[0][0], grads[0][0])  # a = b = 1: the gradient bit for bit


def test_vanilla_members_equal_torch_sgd_and_share_a_groups_batches():
    data, cfg = _data(), _cfg()
    art = train_nudged(_mlp(0), [_start(0), _start(0), _start(1)], [(1, 1)] * 3, [0, 0, 1], data, cfg, _gens())
    assert art["status"] == "ok" and art["refresh_step"].numel() == 0  # a = b: no subspace computed
    for name in art["final"]:
        assert torch.equal(art["final"][name][0], art["final"][name][1])  # same start, same group
    for member, seed in ((0, 0), (2, 1)):
        model, gen = _mlp(seed), _gens()[[0, 0, 1][member]]
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        steps = 0
        while steps < cfg.max_steps:
            order = torch.randperm(len(data.train), generator=gen)
            for lo in range(0, len(data.train), cfg.batch_size):
                if steps == cfg.max_steps:
                    break
                idx = order[lo:lo + cfg.batch_size]
                opt.zero_grad()
                (per_row_loss(model(data.train.x[idx]), data.train.y[idx], "cross_entropy") / len(idx)).backward()
                opt.step()
                steps += 1
        for name, p in model.named_parameters():
            torch.testing.assert_close(art["final"][name][member], p.detach(), rtol=1e-5, atol=1e-6)


def test_nudged_member_equals_nudged_sgd_with_the_same_subspace():
    """γ = 0.1, K = 2, refreshed every step: the lockstep member equals core.nsgd.NudgedSGD given the
    member's own refreshed E at every step (the trainer's E recorded via one-step runs)."""
    data = _data()
    cfg = _cfg(k=2, refresh_every=1, max_steps=1, refresh_iters=60)
    start = _start(3)
    art = train_nudged(_mlp(3), [start], [(1.0, 0.1)], [0], data, cfg, _gens(1))
    model = _mlp(3)
    opt = NudgedSGD(model.parameters(), lr=cfg.lr, gamma=0.1)
    E, _ = _top_eigvec(model, start, data, k=2)
    opt.set_subspace(E, orthonormalize=True)
    idx = torch.randperm(len(data.train), generator=_gens(1)[0])[:cfg.batch_size]
    (per_row_loss(model(data.train.x[idx]), data.train.y[idx], "cross_entropy") / len(idx)).backward()
    opt.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(art["final"][name][0], p.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("coef,along", [((1.0, 0.0), 0.0), ((0.0, 1.0), 1.0)])
def test_no_top_and_top_only_steps_are_orthogonal_and_parallel_to_the_exact_e1(coef, along):
    data = _data()
    start = _start(4)
    art = train_nudged(_mlp(4), [start], [coef], [0], data, _cfg(max_steps=1, refresh_every=1), _gens(1))
    layout = ParamLayout.of(start)
    step = (layout.flatten({n: p[0] for n, p in art["final"].items()}) - layout.flatten(start)).double()
    e1, _ = _top_eigvec(_mlp(4), start, data)
    cos = float((e1[0] @ step).abs() / step.norm())
    assert cos == pytest.approx(along, abs=1e-5)
    assert float(art["refresh_residual"][0, 0, 0]) <= 1e-6


def test_final_spectrum_and_refresh_track_the_exact_eigenvalues():
    data = _data()
    art = train_nudged(_mlp(5), [_start(5)], [(1.0, 1.0)], [0], data,
                       _cfg(max_steps=4, refresh_every=2, track_all=True, final_k=2, track_loss=True,
                            loss_tail_steps=2), _gens(1))
    assert art["refresh_step"].tolist() == [0, 2]
    assert art["rows_loss"].shape == (1, 5) and torch.equal(art["rows_loss"][:, 0], art["start_loss"])
    torch.testing.assert_close(art["tail_loss"], art["rows_loss"][:, 3:].mean(1))
    assert torch.equal(art["last_lam"], art["final_lam"])  # final_at = "last"
    final = {n: p[0] for n, p in art["final"].items()}
    _, w = _top_eigvec(_mlp(5), final, data, k=2)
    torch.testing.assert_close(art["final_lam"][0], w, rtol=1e-5, atol=1e-7)


def test_a_diverging_member_is_frozen_and_labelled_and_its_neighbour_is_untouched():
    data = _data()
    start = _start(6)
    bad = {n: p.clone() for n, p in start.items()}
    bad["0.weight"][0, 0] = math.nan
    art = train_nudged(_mlp(6), [start, bad], [(1.0, 0.1), (1.0, 0.1)], [0, 1], data,
                       _cfg(refresh_every=4), _gens())
    alone = train_nudged(_mlp(6), [start], [(1.0, 0.1)], [0], data, _cfg(refresh_every=4), _gens(1))
    assert art["member_status"][0] == "ok" and art["member_status"][1].startswith("diverged at step 0")
    assert art["status"] == "ok" and art["n_diverged"] == 1 and math.isnan(float(art["final_lam"][1, 0]))
    for n in start:
        torch.testing.assert_close(art["final"][n][0], alone["final"][n][0], rtol=1e-5, atol=1e-6)


def test_plateau_and_early_stop_follow_keras_on_a_scripted_history():
    """val loss flat from epoch 1 and val acc best at epoch 1: with patience 2 the lr drops after epochs
    3 and 5, and with early-stop patience 4 the member stops after epoch 5; best epoch stays 1."""
    class Run:  # the parts of _Run that _schedule reads
        params = {"w": torch.zeros(1, 2)}
        active = torch.ones(1, dtype=torch.bool)
        lr = torch.tensor([1.0], dtype=torch.float64)
    run, cfg = Run(), _cfg(plateau_patience=2, early_stop_patience=4)
    val_loss = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    val_acc = [0.1, 0.6, 0.5, 0.6, 0.6, 0.4, 0.4]
    hist = {"val_loss": torch.tensor([val_loss], dtype=torch.float64),
            "val_acc": torch.tensor([val_acc], dtype=torch.float64)}
    best = {"epoch": torch.zeros(1, dtype=torch.long), "val": torch.full((1,), -math.inf, dtype=torch.float64),
            "val_loss": torch.full((1,), math.inf, dtype=torch.float64), "params": {"w": torch.zeros(1, 2)}}
    since_loss, since_acc, stopped = torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.full((1,), -1)
    lrs = []
    for e in range(6):
        run.params = {"w": torch.full((1, 2), float(e))}
        _schedule(e, run, hist, best, since_loss, since_acc, stopped, cfg)
        lrs.append(float(run.lr[0]))
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1, 0.01])
    assert int(stopped[0]) == 5 and not bool(run.active[0])
    assert int(best["epoch"][0]) == 1 and torch.equal(best["params"]["w"], torch.full((1, 2), 1.0))


@pytest.mark.parametrize("kw,msg", [(dict(k=0), "K=0"), (dict(refresh_every=0), "refresh_every"),
                                    (dict(final_at="middle"), "final_at"), (dict(lr=-1.0), "lr=")])
def test_bad_configs_give_one_line(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _cfg(**kw)


def test_negative_gamma_and_a_schedule_without_validation_data_are_refused():
    data = _data(val=False)
    with pytest.raises(ValueError, match="allowed: a, b >= 0"):
        train_nudged(_mlp(0), [_start(0)], [(1.0, -0.5)], [0], data, _cfg(), _gens(1))
    with pytest.raises(ValueError, match="need data.val"):
        train_nudged(_mlp(0), [_start(0)], [(1.0, 1.0)], [0], data, _cfg(plateau_patience=3), _gens(1))
