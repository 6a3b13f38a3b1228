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


def test_nsgd_arms_and_restarts_come_from_the_registry():
    from fixtures.sd import VARIANT_COEFS, nsgd_specs
    reg = load_registry()
    arms = nsgd_specs("cpu", reg)
    assert set(arms) == {1.0, 0.01, 10.0}
    assert len(arms[1.0].seeds) == 10 and len(arms[10.0].seeds) == 5  # SD-5 needs 10, SD-6 5
    cfg = arms[0.01].config
    assert (cfg.lr, cfg.k, cfg.refresh_every, cfg.max_steps, cfg.final_at) == (0.01, 5, 8, 1600, "best")
    assert (cfg.plateau_patience, cfg.early_stop_patience, cfg.hessian_rows) == (10, 20, 200)
    assert {v: f(reg["SD-4"]) for v, f in VARIANT_COEFS.items()} == {
        "vanilla": (1.0, 1.0), "top_only": (0.0, 1.0), "no_top": (1.0, 0.0), "gamma_small": (1.0, 0.1),
        "gamma_large": (1.0, 10.0)}


class _Item:
    def __init__(self, name, marker):
        self.path, self._marker = __import__("pathlib").Path(f"/x/claims/{name}"), marker

    def get_closest_marker(self, name):
        return name == self._marker or None


class _Session:
    def __init__(self, items, cache_dir):
        opt = type("Opt", (), {"collectonly": False, "cache_dir": str(cache_dir)})()
        self.items, self.config = items, type("Config", (), {"option": opt})()


def test_the_background_prebuild_starts_only_when_sd_claims_will_run_with_missing_ensembles(tmp_path, monkeypatch):
    import subprocess
    from fixtures import sd
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: started.append(argv) or type("P", (), {})())
    sd.start_prebuild(_Session([_Item("test_av_networks.py", "cpu")], tmp_path))  # no SD claim selected
    sd.start_prebuild(_Session([_Item("test_sd_networks.py", "gpu")], tmp_path))  # gpu tier only
    monkeypatch.setenv("CLAIMS_PREBUILD", "0")
    sd.start_prebuild(_Session([_Item("test_sd_networks.py", "cpu")], tmp_path))  # turned off
    assert started == []
    monkeypatch.delenv("CLAIMS_PREBUILD")
    session = _Session([_Item("test_sd_networks.py", "cpu"), _Item("test_ls_networks.py", "cpu")], tmp_path)
    sd.start_prebuild(session)  # one process per selected group with something missing: LS's and SD's
    assert [argv[1:] for argv in started] == [
        ["-m", "fixtures", "build", "-m", "cpu", "--only-ensembles", "--ensembles", group, "--jobs", "1",
         "--cache-dir", str(tmp_path)] for group in ("ls", "sd")]
    assert (tmp_path / "prebuild-ls.log").exists() and (tmp_path / "prebuild-sd.log").exists()
    assert len(session.config._prebuilds) == 2
    started.clear()
    sd.start_prebuild(_Session([_Item("test_ls_networks.py", "cpu")], tmp_path))  # LS claims only: LS's group
    assert [argv[argv.index("--ensembles") + 1] for argv in started] == ["ls"]
