"""fixtures/ls_training.py: LS-9's grid of recipes and LS-10's cyclic arms come from the registry (one
hyper-parameter moved at a time, the default point shared, paired seeds), build on a tiny pool, and a
diverged optimum is recorded instead of used. The claims' controls live in claims/test_ls_networks.py."""
import dataclasses
import math

import torch

from core.registry import load_registry
from fixtures import ls, ls_training


def test_the_grid_moves_one_hyper_parameter_at_a_time_around_the_default():
    reg = load_registry()
    s9 = reg["LS-9"]
    points, grid = ls_training.radial_point_specs("cpu"), ls_training.radial_grid("cpu")
    assert len(points) == 1 + sum(len(s9.setting(g)) - 1 for g, _ in ls_training.RADIAL_PARTS.values())
    default = ls_training.radial_spec("cpu").parent
    assert default.config == dataclasses.replace(ls.ls_pool_spec("cpu").config)  # the pool recipe exactly
    for part, names in grid.items():
        assert len(names) == 3 and all(n in points for n in names)
        assert sum(points[n] == default for n in names) == 1  # the default point sits on every grid once
    assert all(p.seeds == tuple(range(s9.seeds["cpu"])) for p in points.values())
    b32 = points["lr=0.001 l2=0 dropout=0 b=32"].config
    assert b32.checkpoints[-1] == 4 * default.config.checkpoints[-1]  # equal epochs, not equal steps
    drop = points["lr=0.001 l2=0 dropout=0.2 b=128"]
    assert dict(drop.model_kwargs)["dropout"] == 0.2 and drop.config.dropout_seed == s9.setting("dropout_seed")
    assert points["lr=0.001 l2=0.001 dropout=0 b=128"].config.weight_decay == 1e-3


def test_cyclic_arms_come_from_the_registry():
    s10 = load_registry()["LS-10"]
    arms = ls_training.cyclic_specs("cpu")
    high, low, ctl = arms["high"].config, arms["low"].config, arms["control"].config
    assert high.lr == s10.setting("base_sgd_lr") * s10.setting("lr_max_high_factor")
    assert math.isclose(low.lr, s10.setting("base_sgd_lr") * s10.setting("lr_max_low_factor"))
    assert ctl == low and arms["control"].batch_seed != arms["low"].batch_seed == arms["high"].batch_seed
    assert high.momentum == 0.9 and high.optimizer == "sgd" and high.keep_params
    assert len(high.checkpoints) == s10.setting("n_snapshots") + 1
    assert all(c % high.cycle_steps == 0 for c in high.checkpoints)  # a snapshot at every cycle's end


def _tiny_pool():
    from fixtures.sd import build_ensemble
    pool = ls.ls_pool_spec("cpu")
    pool = dataclasses.replace(pool, config=dataclasses.replace(pool.config, epochs=2, checkpoints=(0, 16), hessian_rows=20),
                               seeds=(0, 1, 2))
    return pool, build_ensemble(pool)


def test_tiny_cyclic_arm_builds_and_a_diverged_optimum_is_recorded():
    pool, art = _tiny_pool()
    spec = dataclasses.replace(ls_training.cyclic_specs("cpu")["low"], parent=pool, members=(0, 1, 2))
    spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, epochs=2, cycle_steps=4,
                                                                checkpoints=(0, 4, 8, 12, 16)))
    art["seed_status"] = ["ok", "diverged at step 3: non-finite parameters (x)", "ok"]
    out = ls_training.build_cyclic(spec, art)
    assert out["seed_status"][1] == "optimum diverged" and out["seed_status"][0] == out["seed_status"][2] == "ok"
    assert out["snapshot_acc"].shape == (3, 4) and bool(out["snapshot_acc"][1].isnan().all())
    assert bool(torch.isfinite(out["average_acc"][[0, 2]]).all() and torch.isfinite(out["ensemble_acc"][[0, 2]]).all())
    assert bool(((out["snapshot_acc"][[0, 2]] >= 0) & (out["snapshot_acc"][[0, 2]] <= 100)).all())


def test_tiny_radial_widths_build_and_a_diverged_seed_is_recorded():
    pool, art = _tiny_pool()
    spec = ls_training.radial_spec("cpu")
    spec = dataclasses.replace(spec, parent=pool, points=(("a", pool),), n_directions=3, theta_points=31)
    art["seed_status"] = ["ok", "ok", "diverged at step 3: non-finite parameters (x)"]
    out = ls_training.build_radial(spec, {"a": art})["points"]["a"]
    assert bool(out["mean_width"][:2].isfinite().all()) and bool(out["mean_width"][2].isnan())
    assert bool((out["width"][:2] >= 0).all() and (out["width"][:2] <= spec.theta_max).all())
    torch.testing.assert_close(out["mean_width"][:2], out["width"][:2].mean(1))
