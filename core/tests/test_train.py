"""core.train: schedules at the authors' values, SWA = mean of per-epoch snapshots, update_bn,
divergence, determinism, the fixed "SGD from SWA" rule and the authors' selection rule.

Tiny MLPs on synthetic tensors; every test runs in well under a second or two.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from core.data import Dataset, Split
from core.train import (TrainConfig, authors_selection_rule, average_snapshots, cyclic_factor,
                        evaluate, sgd_from, snapshot_epochs, split_state, swa_factor, train)


def _split(n, gen):
    x = torch.randn(n, 6, generator=gen)
    return Split(x, (x[:, 0] + 0.5 * x[:, 1] > 0).long())


def _data(val=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Dataset("synthetic", _split(192, gen), _split(96, gen), _split(64, gen) if val else None,
                   2, (6,))


def _model(bn=True, seed=0):
    torch.manual_seed(seed)  # test-local model init; library code never seeds globals
    mid = [nn.BatchNorm1d(12)] if bn else []
    return nn.Sequential(nn.Linear(6, 12), *mid, nn.ReLU(), nn.Linear(12, 2))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets on a shared 2-core machine run far faster on one thread; restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


CFG = TrainConfig(lr=0.05, epochs=6, swa_start_epoch=3, batch_size=32, augment=False)


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ schedules

def test_swa_schedule_hits_the_authors_values():
    f = lambda e: swa_factor(e, swa_start=100, swa_lr_factor=0.5)  # noqa: E731
    assert f(0) == 1.0 and f(50) == 1.0                      # t = 0.5: still the base lr
    assert f(70) == pytest.approx(0.75)                      # halfway down the linear ramp
    assert f(90) == pytest.approx(0.5)                       # t = 0.9: swa_lr
    assert f(91) == f(150) == f(225) == 0.5                  # held afterwards


def test_paper_default_schedule_ends_at_swa_lr_005():
    cfg = TrainConfig()  # He et al.: lr 0.1, e_swa 126, swa_lr 0.05
    assert cfg.swa_lr == pytest.approx(0.05)
    assert swa_factor(63, swa_start=126, swa_lr_factor=0.5) == 1.0
    assert cfg.lr * swa_factor(125, swa_start=126, swa_lr_factor=0.5) == pytest.approx(0.05)


@pytest.mark.parametrize("shape", ["triangular", "cosine"])
def test_cyclic_minima_at_cycle_ends_and_snapshots_there(shape):
    kw = dict(period=4, min_factor=0.1, max_factor=1.0, shape=shape)
    values = [cyclic_factor(e, **kw) for e in range(8)]
    assert values[3] == values[7] == pytest.approx(0.1)
    assert max(values) == pytest.approx(1.0 if shape == "triangular" else
                                        0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    cfg = TrainConfig(schedule="cyclic", epochs=8, cyclic_period=4, checkpoint_epochs=(1,))
    assert snapshot_epochs(cfg) == (1, 4, 8)


def test_history_lr_follows_the_schedule():
    result = train(_model(), _data(), CFG, generator=_gen())
    want = [CFG.lr * swa_factor(e, swa_start=3, swa_lr_factor=0.5) for e in range(6)]
    assert result.history["lr"] == pytest.approx(want)


def test_plateau_drops_lr_after_patience():
    cfg = dataclasses.replace(CFG, schedule="plateau", lr=1e-6, epochs=5, plateau_patience=1,
                              plateau_factor=0.5)
    result = train(_model(bn=False), _data(val=True), cfg, generator=_gen())
    assert set(result.history) >= {"val_loss", "val_acc"}
    assert result.history["lr"][-1] < 1e-6  # loss barely moves at lr 1e-6 -> at least one drop
    with pytest.raises(ValueError, match="validation split"):
        train(_model(), _data(val=False), cfg, generator=_gen())


@pytest.mark.parametrize("field, value", [("lr", -1.0), ("momentum", 1.0), ("epochs", 0),
                                          ("schedule", "step"), ("swa_start_epoch", 7),
                                          ("checkpoint_epochs", (9,)), ("optimizer", "rmsprop")])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}=.*allowed"):
        dataclasses.replace(CFG, **{field: value})


# ------------------------------------------------------------------ SWA

def test_swa_is_the_equal_weight_mean_of_per_epoch_snapshots():
    cfg = dataclasses.replace(CFG, checkpoint_epochs=(3, 4, 5, 6))
    model = _model()
    result = train(model, _data(), cfg, generator=_gen())
    params, _ = zip(*(split_state(model, result.checkpoints[e]) for e in (3, 4, 5, 6)))
    for name, swa_value in result.swa_params.items():
        manual = torch.stack([p[name] for p in params]).mean(0)
        torch.testing.assert_close(swa_value, manual, rtol=1e-6, atol=1e-7)


def test_update_bn_recomputes_buffers_and_leaves_params_untouched():
    model = _model()
    snaps = [dict(model.state_dict())]
    model[0].weight.data.mul_(2.0)
    snaps.append(dict(model.state_dict()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params, buffers = average_snapshots(model, snaps, _data(), CFG, generator=_gen())
    for name, value in params.items():  # params = the plain mean, not moved by the BN pass
        torch.testing.assert_close(value, (snaps[0][name] + snaps[1][name]) / 2)
    assert not torch.allclose(buffers["1.running_mean"], torch.zeros(12))
    assert not torch.allclose(buffers["1.running_var"], torch.ones(12))
    for name, value in model.state_dict().items():  # the live model is untouched
        assert torch.equal(value, before[name])


def test_no_bn_model_gets_swa_params_and_metrics():
    result = train(_model(bn=False), _data(), CFG, generator=_gen())
    assert result.status == "ok" and result.swa_buffers == {}
    assert set(result.swa_metrics) == {"train_loss", "train_acc", "test_loss", "test_acc"}


# ------------------------------------------------------------------ divergence, determinism

def test_diverging_lr_returns_status_not_exception_and_no_nan_weights():
    cfg = dataclasses.replace(CFG, lr=1e6, schedule="constant")
    model = _model(bn=False)
    result = train(model, _data(), cfg, generator=_gen())
    assert result.status == "diverged" and result.diverged_at == 1
    assert result.diverged_step is not None and result.diverged_step >= 0
    assert result.diverged_reason == f"non-finite loss at step {result.diverged_step}"
    assert result.swa_params is None and result.history["test_loss"] == []
    assert all(torch.isfinite(v).all() for v in result.params.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _overflowing(data, scale=1e20):
    """The data times `scale`: pre-BN activations ~1e20 square to inf in float32, so BN's
    running_var overflows while the normalised output (and so the loss) stays finite."""
    big = lambda s: Split(s.x * scale, s.y)  # noqa: E731
    return Dataset("synthetic", big(data.train), big(data.test), None, 2, (6,))


def test_non_finite_bn_running_stats_mean_diverged_although_params_are_finite():
    # Finding: lr = 100 on the cpu MLP gave finite params, 30/64 running_var = inf, status "ok".
    result = train(_model(bn=True), _overflowing(_data()), dataclasses.replace(
        CFG, schedule="constant"), generator=_gen())
    assert result.status == "diverged" and result.diverged_at == 1
    assert "running_var" in result.diverged_reason and "of 12 entries" in result.diverged_reason
    assert all(torch.isfinite(v).all() for v in result.buffers.values() if v.is_floating_point())


def test_non_finite_swa_buffers_mean_diverged_and_no_swa_state_is_kept(monkeypatch):
    import core.train as train_mod

    def poisoned_update_bn(loader, model):  # the recomputed statistics overflow
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_var.fill_(math.inf)
    monkeypatch.setattr(train_mod, "update_bn", poisoned_update_bn)
    result = train(_model(bn=True), _data(), CFG, generator=_gen())
    assert result.status == "diverged" and result.diverged_at == CFG.epochs
    assert result.diverged_reason.startswith("SWA: non-finite") and "running_var" in \
        result.diverged_reason
    assert result.swa_params is None and result.swa_buffers is None


def test_finite_runs_have_no_divergence_reason():
    result = train(_model(bn=True), _data(), CFG, generator=_gen())
    assert result.status == "ok" and result.diverged_reason is None


def test_train_is_deterministic_given_the_generator():
    a = train(_model(), _data(), CFG, generator=_gen(7))
    b = train(_model(), _data(), CFG, generator=_gen(7))
    c = train(_model(), _data(), CFG, generator=_gen(8))
    assert a.history == b.history
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name])
        assert torch.equal(a.swa_params[name], b.swa_params[name])
    assert a.history != c.history


def test_evaluate_does_not_touch_the_model():
    model, data = _model(), _data()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = evaluate(model, data.test)
    assert 0 <= metrics["acc"] <= 1 and metrics["loss"] > 0 and model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------ SGD from SWA

def test_sgd_from_uses_the_fixed_rule():
    data = _data()
    swa = train(_model(), data, CFG, generator=_gen())
    fixed = TrainConfig(lr=CFG.lr * 0.01, schedule="constant", epochs=3, batch_size=32,
                        augment=False, checkpoint_epochs=(0,))
    model = _model(seed=5)
    result = sgd_from(model, swa.swa_params, swa.swa_buffers, data, fixed, generator=_gen())
    assert result.status == "ok" and len(result.history["lr"]) == 3
    assert result.history["lr"] == pytest.approx([CFG.lr * 0.01] * 3)
    start, _ = split_state(model, result.checkpoints[0])
    assert all(torch.equal(start[k], swa.swa_params[k]) for k in start)
    with pytest.raises(ValueError, match="fixed rule"):
        sgd_from(model, swa.swa_params, swa.swa_buffers, data, CFG, generator=_gen())


def test_authors_selection_rule_keeps_exactly_the_matching_checkpoints():
    swa = {"train_loss": 0.5, "test_loss": 1.0}
    rows = {1: {"train_loss": 0.4, "test_loss": 1.1},   # kept
            2: {"train_loss": 0.6, "test_loss": 1.2},   # train loss not below SWA's
            3: {"train_loss": 0.4, "test_loss": 0.9},   # test loss not above SWA's
            4: {"train_loss": 0.5, "test_loss": 1.5},   # ties are not kept
            5: {"train_loss": 0.1, "test_loss": 2.0}}   # kept
    assert authors_selection_rule(rows, swa) == [1, 5]
    history = {"train_loss": [0.4, 0.6, 0.1], "test_loss": [1.1, 1.2, 2.0]}
    assert authors_selection_rule(history, swa) == [1, 3]
