"""Stacked seed-ensemble training (core/ensemble.py): oracles are torch.optim.SGD on one model, the
exact Hessian, and a quadratic loss whose Hessian cannot move."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from core.data import Dataset, Split
from core.ensemble import EnsembleConfig, budget_epochs, checkpoint_steps, seed_params, train_ensemble
from core.hessian import ParamLayout, per_row_loss


def _data(n=60, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)
    xt, yt = torch.randn(20, d, generator=g), torch.randint(0, classes, (20,), generator=g)
    return Dataset(name="synthetic", train=Split(x, y), test=Split(xt, yt), val=None, num_classes=classes,
                   input_shape=(d,))


def _mlp(seed, d=6, classes=3, width=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, classes))


def _cfg(**kw):
    base = dict(lr=0.1, batch_size=16, epochs=3, checkpoints=(0, 4, 12), hessian_rows=40,
                lanczos_tol=1e-6, lanczos_max_iter=60)
    return EnsembleConfig(**{**base, **kw})


def _alone(model, data, cfg, gen):
    """The oracle: the same seed trained alone by torch.optim.SGD or torch.optim.Adam (its defaults),
    same batch order; cfg.cycle_steps > 0: CosineAnnealingWarmRestarts(T_0 = C, eta_min = 0) stepped
    once per batch."""
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.cycle_steps) if cfg.cycle_steps else None
    n = len(data.train)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, cfg.batch_size):
            idx = order[lo:lo + cfg.batch_size]
            opt.zero_grad()
            out = model(data.train.x[idx])
            (per_row_loss(out, data.train.y[idx], cfg.criterion) / len(idx)).backward()
            opt.step()
            if sched is not None:
                sched.step()
    return dict(model.named_parameters())


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 1e-2)])
def test_stacked_training_equals_torch_sgd_per_seed(momentum, wd):
    data, cfg = _data(), _cfg(momentum=momentum, weight_decay=wd)
    art = train_ensemble([_mlp(0), _mlp(1)], data, cfg, [torch.Generator().manual_seed(s) for s in (10, 11)])
    assert art["status"] == "ok" and art["seed_status"] == ["ok", "ok"]
    for s in (0, 1):
        want = _alone(_mlp(s), data, cfg, torch.Generator().manual_seed(10 + s))
        got = seed_params(art["final"], s)
        for name, p in want.items():
            torch.testing.assert_close(got[name], p.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_cosine_restarts_equal_torch_warm_restarts_per_seed(optimizer, momentum):
    """Fort §4.5's cyclic lr: every 5 steps back to η, cosine towards 0 in between (12 steps: 2.4 cycles)."""
    data, cfg = _data(), _cfg(optimizer=optimizer, momentum=momentum, cycle_steps=5, lr=0.05)
    art = train_ensemble([_mlp(0), _mlp(1)], data, cfg, [torch.Generator().manual_seed(s) for s in (10, 11)])
    for s in (0, 1):
        want = _alone(_mlp(s), data, cfg, torch.Generator().manual_seed(10 + s))
        for name, p in want.items():
            torch.testing.assert_close(seed_params(art["final"], s)[name], p.detach(), rtol=1e-5, atol=1e-6)
    constant = train_ensemble([_mlp(0)], data, _cfg(optimizer=optimizer, momentum=momentum, lr=0.05),
                              [torch.Generator().manual_seed(10)])
    assert (constant["final"]["0.weight"][0] - art["final"]["0.weight"][0]).abs().max() > 1e-4


def _dropout_mlp(seed, p, d=6, classes=3, width=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Dropout(p), nn.Linear(width, classes))


def test_dropout_masks_are_seeded_per_member_and_off_when_measuring():
    """Two identical members (same init, same batch order) under dropout diverge (own masks); the run is
    reproducible from dropout_seed and changes with it; p = 0 equals the dropout-free net exactly, and
    the measured losses use no dropout (the final loss equals an eval-mode recomputation)."""
    data, cfg = _data(), _cfg(checkpoints=(0, 12))
    gens = lambda: [torch.Generator().manual_seed(10), torch.Generator().manual_seed(10)]  # noqa: E731
    art = train_ensemble([_dropout_mlp(0, 0.3), _dropout_mlp(0, 0.3)], data, cfg, gens())
    w = art["final"]["0.weight"]
    assert (w[0] - w[1]).abs().max() > 1e-4
    again = train_ensemble([_dropout_mlp(0, 0.3), _dropout_mlp(0, 0.3)], data, cfg, gens())
    torch.testing.assert_close(again["final"]["0.weight"], w, rtol=0, atol=0)
    other = train_ensemble([_dropout_mlp(0, 0.3), _dropout_mlp(0, 0.3)], data, _cfg(checkpoints=(0, 12), dropout_seed=1),
                           gens())
    assert (other["final"]["0.weight"] - w).abs().max() > 1e-4
    eval_net = _dropout_mlp(0, 0.3).eval()
    final = {n: p[0] for n, p in art["final"].items()}
    loss = per_row_loss(functional_call(eval_net, final, (data.train.x,)), data.train.y, "cross_entropy") / len(data.train)
    torch.testing.assert_close(art["train_loss"][0, -1], loss.double(), rtol=1e-6, atol=1e-7)
    plain = train_ensemble([_mlp(0)], data, cfg, [torch.Generator().manual_seed(10)])
    zero = train_ensemble([_dropout_mlp(0, 0.0)], data, cfg, [torch.Generator().manual_seed(10)])
    torch.testing.assert_close(zero["final"]["3.weight"], plain["final"]["2.weight"], rtol=0, atol=0)


def test_cycle_and_dropout_seed_enter_the_cache_key_only_when_set():
    from core.cache import spec_key
    assert spec_key(_cfg()) == spec_key(_cfg(cycle_steps=0, dropout_seed=0))
    assert spec_key(_cfg(cycle_steps=5)) != spec_key(_cfg()) != spec_key(_cfg(dropout_seed=3))


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_stacked_adam_equals_torch_adam_per_seed(wd):
    data, cfg = _data(), _cfg(optimizer="adam", lr=1e-2, weight_decay=wd)
    art = train_ensemble([_mlp(0), _mlp(1)], data, cfg, [torch.Generator().manual_seed(s) for s in (10, 11)])
    assert art["status"] == "ok"
    for s in (0, 1):
        want = _alone(_mlp(s), data, cfg, torch.Generator().manual_seed(10 + s))
        got, start = seed_params(art["final"], s), dict(_mlp(s).named_parameters())
        for name, p in want.items():
            assert not torch.allclose(p, start[name])  # it trained
            torch.testing.assert_close(got[name], p.detach(), rtol=1e-5, atol=1e-6)


def test_adam_with_a_diverging_seed_leaves_the_others_untouched():
    data, cfg = _data(), _cfg(optimizer="adam", lr=1e-2)
    bad = _mlp(1)
    with torch.no_grad():
        bad[0].bias[0] = math.nan
    art = train_ensemble([_mlp(0), bad], data, cfg, [torch.Generator().manual_seed(s) for s in (10, 11)])
    assert art["seed_status"][0] == "ok" and art["seed_status"][1].startswith("diverged at step 0")
    want = _alone(_mlp(0), data, cfg, torch.Generator().manual_seed(10))
    for name, p in want.items():
        torch.testing.assert_close(seed_params(art["final"], 0)[name], p.detach(), rtol=1e-5, atol=1e-6)


def test_tracked_lambda_equals_the_exact_hessian_top_eigenvalue():
    data, cfg = _data(), _cfg(top_k=2)
    art = train_ensemble([_mlp(3)], data, cfg, [torch.Generator().manual_seed(0)])
    rows = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.hessian_seed))[:40].sort().values
    base = _mlp(3)
    params = seed_params(art["final"], 0)
    layout = ParamLayout.of(params)
    f = lambda t: per_row_loss(functional_call(base, layout.unflatten(t), (data.train.x[rows],)),  # noqa: E731
                               data.train.y[rows], "cross_entropy") / 40
    H = hessian(f)(layout.flatten(params).double().float())
    exact = torch.linalg.eigvalsh(H.double()).flip(0)[:2]
    torch.testing.assert_close(art["lam"][0, -1], exact, rtol=1e-5, atol=1e-7)
    assert (art["residual"][0] <= 1e-6).all()  # fp32 HVPs: ~1e-7 is the floor


def test_quadratic_loss_has_a_constant_lambda_along_training():
    """A linear model under ½‖Wx − onehot‖²: H = E[x̃x̃ᵀ] ⊗ I never moves (the SD negative control)."""
    data = _data()
    lin = lambda s: (torch.manual_seed(s), nn.Linear(6, 3))[1]  # noqa: E731
    art = train_ensemble([lin(0), lin(1)], data, _cfg(criterion="mse_onehot"),
                         [torch.Generator().manual_seed(s) for s in (0, 1)])
    lam = art["lam"][..., 0]
    assert torch.isfinite(lam).all()
    torch.testing.assert_close(lam, lam[:, :1].expand_as(lam), rtol=1e-6, atol=0)


def test_a_diverging_seed_is_frozen_and_labelled_and_the_others_are_untouched():
    data, cfg = _data(), _cfg()
    bad = _mlp(1)
    with torch.no_grad():
        bad[0].bias[0] = math.nan  # its loss is NaN; the summed loss must not carry it to seed 0
    art = train_ensemble([_mlp(0), bad], data, cfg, [torch.Generator().manual_seed(s) for s in (10, 11)])
    assert art["status"] == "diverged: 1 of 2 seeds" and art["seed_status"][0] == "ok"
    assert art["seed_status"][1].startswith("diverged at step 0")
    assert torch.isnan(art["lam"][1]).all() and torch.isfinite(art["lam"][0]).all()
    alone = train_ensemble([_mlp(0)], data, cfg, [torch.Generator().manual_seed(10)])
    for name, p in seed_params(alone["final"], 0).items():
        torch.testing.assert_close(seed_params(art["final"], 0)[name], p, rtol=1e-5, atol=1e-6)


def test_budget_and_checkpoint_schedule_follow_the_registry_rule():
    assert budget_epochs(400, 0.1, 8, 60) == (504, 8)  # SD-1 cpu: 504 epochs (reports/sd-cpu-tier-study.md)
    assert budget_epochs(400, 0.01, 32, 60) == (1260, 21)
    steps = checkpoint_steps(504, 8, 8, (0.125, 0.25, 0.5))
    assert steps[:5] == (0, 1, 2, 4, 8) and steps[-1] == 504 * 8 and len(steps) == 5 + 63
    dense = checkpoint_steps(40, 20, 2, (0.5,), dense=(10, 5))
    assert dense == (0, 1, 2, 10, 20, 40, 80)


@pytest.mark.parametrize("kw,msg", [
    (dict(momentum=1.0), "momentum=1.0"), (dict(lr=0.0), "lr=0.0"), (dict(criterion="hinge"), "criterion"),
    (dict(checkpoints=(3, 1)), "strictly increasing"), (dict(top_k=0), "top_k=0"),
    (dict(optimizer="rmsprop"), "optimizer='rmsprop'; allowed: sgd, adam"),
    (dict(optimizer="adam", momentum=0.9), "momentum=0.9 with optimizer='adam'"),
    (dict(cycle_steps=-1), "cycle_steps=-1; allowed: an int >= 0")])
def test_bad_configs_give_one_line(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _cfg(**kw)


def test_models_with_buffers_and_checkpoints_past_the_end_are_refused():
    data = _data()
    bn = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="buffers"):
        train_ensemble([bn], data, _cfg(), [torch.Generator()])
    with pytest.raises(ValueError, match="past the end"):
        train_ensemble([_mlp(0)], data, _cfg(checkpoints=(0, 10_000)), [torch.Generator()])


def test_keep_params_stores_each_checkpoints_parameters_and_changes_nothing_else():
    data, gens = _data(), lambda: [torch.Generator().manual_seed(s) for s in (10, 11)]
    plain = train_ensemble([_mlp(0), _mlp(1)], data, _cfg(), gens())
    kept = train_ensemble([_mlp(0), _mlp(1)], data, _cfg(keep_params=True), gens())
    assert "params_at" not in plain
    for name, p in kept["final"].items():
        at = kept["params_at"][name]
        assert at.shape == (2, 3, *p.shape[1:])
        assert torch.equal(at[:, -1], p) and torch.equal(plain["final"][name], p)  # the end is the last checkpoint
        assert torch.equal(at[:, 0], torch.stack([dict(_mlp(s).named_parameters())[name].detach() for s in (0, 1)]))
    assert torch.equal(plain["lam"], kept["lam"])


def test_keep_params_enters_the_cache_key_only_when_set():
    from core.cache import spec_key
    base = _cfg()
    assert spec_key(base) == spec_key(_cfg(keep_params=False)) != spec_key(_cfg(keep_params=True))


def test_optimizer_enters_the_cache_key_only_when_not_sgd():
    from core.cache import spec_key
    assert spec_key(_cfg()) == spec_key(_cfg(optimizer="sgd")) != spec_key(_cfg(optimizer="adam"))


def test_an_out_of_range_label_is_one_line_before_any_training():
    """mse_onehot cannot check labels under vmap, so the trainers check them once."""
    data = _data()
    bad = Dataset(name="synthetic", train=Split(data.train.x, data.train.y.clone().index_fill_(0, torch.tensor([3]), 7)),
                  test=data.test, val=None, num_classes=3, input_shape=(6,))
    with pytest.raises(ValueError, match=r"train labels span 0\.\.7; allowed: 0\.\.2"):
        train_ensemble([_mlp(0)], bad, _cfg(criterion="mse_onehot"), [torch.Generator().manual_seed(0)])
