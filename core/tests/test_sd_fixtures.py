"""The SD fixture layer (fixtures/sd.py): grid points from the registry, shared between claims, and a
missing registry value is an error naming it (no literal fallback)."""
import dataclasses

import pytest

from core.registry import load_registry
from fixtures.sd import claim_points, point_name, sd_specs


def test_every_grid_point_comes_from_the_registry_and_shared_points_train_once():
    reg = load_registry()
    pts = claim_points(reg, "cpu")
    assert pts["SD-7"][0] in pts["SD-2"]  # SD-7's momentum-0 arm is SD-2's (0.03, 128) run
    specs = sd_specs("cpu", reg)
    assert len(specs) == 2 * len({p for ps in pts.values() for p in ps})  # each point and its control
    sd1 = specs[point_name(pts["SD-1"][0])]
    assert (sd1.config.lr, sd1.config.batch_size, sd1.config.epochs) == (0.1, 128, 504)
    assert sd1.seeds == tuple(range(reg["SD-1"].seeds["cpu"]))
    assert specs["control: " + point_name(pts["SD-1"][0])].config.criterion == "mse_onehot"
    m9 = specs[point_name(pts["SD-7"][1])].config  # the momentum arm has its own dense early checkpoints
    assert len(m9.checkpoints) > len(specs[point_name(pts["SD-7"][0])].config.checkpoints)


def test_a_missing_registry_value_names_it():
    reg = load_registry()
    settings = {k: v for k, v in reg["SD-1"].settings.items() if k != "budget_lr_steps"}
    broken = {**{cid: reg[cid] for cid in ("SD-2", "SD-7")},
              "SD-1": dataclasses.replace(reg["SD-1"], settings=settings)}
    with pytest.raises(KeyError, match="budget_lr_steps"):
        sd_specs("cpu", broken)
