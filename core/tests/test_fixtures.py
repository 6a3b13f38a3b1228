"""fixtures/: tier specs follow the pre-registered recipe, train-or-load through the cache, the CLI
(`python -m fixtures list|build`) and the skip paths of the pytest fixtures."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.cache import ArtifactCache
from fixtures import build, specs
from fixtures.specs import RunSpec, kw

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets on a shared 2-core machine run far faster on one thread; restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "fixtures", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)  # a hang guard: a 10-seed build takes ~2 min on 2 busy cores


# ------------------------------------------------------------------ specs

def test_cpu_tier_has_the_planned_runs():
    bn, nobn = specs.tier("cpu")
    assert [r.seed for r in bn.runs] == [r.seed for r in nobn.runs] == list(range(10))
    assert all(dict(r.model_kwargs)["bn"] for r in bn.runs)
    assert not any(dict(r.model_kwargs)["bn"] for r in nobn.runs)
    assert [role for role, _ in bn.derived] == ["sgd_from_swa"] and nobn.derived == ()
    assert [s.parent for s in bn.derived_specs()] == list(bn.runs)
    keys = {ArtifactCache("x").key(s) for s in bn.all_specs() + nobn.all_specs()}
    assert len(keys) == 30  # every run is its own artifact


def test_cpu_recipe_is_he_et_al_scaled():
    cfg = specs.CPU_RECIPE
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == \
        ("sgd", 0.1, 0.9, 3e-4, 128)
    assert cfg.schedule == "swa" and cfg.swa_lr_factor == 0.5
    assert cfg.swa_start_epoch == round(cfg.epochs * 126 / 225)
    ckpt = cfg.checkpoint_epochs  # AV-12: initialisation + 10 evenly spaced epochs
    assert ckpt[0] == 0 and len(ckpt) == 11 and ckpt[-1] == cfg.epochs


def test_av9_rule_is_read_from_the_registry_and_a_missing_value_names_it():
    import dataclasses
    from core.registry import load_registry
    reg = load_registry()
    assert specs.av9_rule(reg) == {"lr_fraction": reg["AV-9"].setting("sgd_lr_fraction"),
                                   "epochs_fraction": reg["AV-9"].setting("sgd_epochs_fraction"),
                                   "momentum": reg["AV-9"].setting("sgd_momentum")}
    broken = {"AV-9": dataclasses.replace(reg["AV-9"], settings={k: v for k, v in reg["AV-9"].settings.items()
                                                                 if k != "sgd_momentum"})}
    with pytest.raises(KeyError, match="sgd_momentum"):
        specs.av9_rule(broken)


def test_sgd_from_spec_is_the_fixed_rule():
    rule = specs.av9_rule()
    for sgd in specs.case("cpu", "mnist1d-mlp-bn").derived_specs() + specs.case(
            "gpu", "cifar100-preresnet164").derived_specs():
        base = sgd.parent.train
        assert sgd.train.schedule == "constant"
        assert sgd.train.lr == pytest.approx(base.lr * rule["lr_fraction"])
        assert sgd.train.epochs == round(base.epochs * rule["epochs_fraction"])


def test_gpu_tier_uses_the_authors_recipes():
    pre = specs.case("gpu", "cifar10-preresnet164").runs[0].train
    assert (pre.epochs, pre.swa_start_epoch, pre.lr, pre.swa_lr) == (225, 126, 0.1, 0.05)
    vgg = specs.case("gpu", "cifar10-vgg16").runs[0].train
    assert (vgg.epochs, vgg.swa_start_epoch, vgg.lr, vgg.weight_decay) == (300, 161, 0.05, 5e-4)
    assert vgg.swa_lr == pytest.approx(0.01)
    assert all(len(c.runs) == len(specs.GPU_SEEDS) for c in specs.tier("gpu"))
    with pytest.raises(ValueError, match="unknown tier 'tpu'; known: cpu, gpu"):
        specs.tier("tpu")


# ------------------------------------------------------------------ train-or-load

TINY = RunSpec("mnist1d", kw(n_train=200, n_test=100, seed=0), "cnn1d",
               kw(bn=True, channels=(4, 4)),
               dataclasses.replace(specs.CPU_RECIPE, epochs=3, swa_start_epoch=2,
                                   checkpoint_epochs=(0, 3)), seed=1)


def test_get_run_trains_once_then_loads(tmp_path):
    cache = ArtifactCache(tmp_path)
    art = build.get_run(TINY, cache)
    assert art["status"] == "ok" and set(art["checkpoints"]) == {0, 3}
    assert art["swa_params"] is not None and art["metrics"]["test_acc"] > 0
    assert len(art["history"]["test_loss"]) == 3 and art["num_classes"] == 10
    again = build.get_run(TINY, cache)
    assert all(torch.equal(again["params"][k], art["params"][k]) for k in art["params"])
    model = build.make_model(TINY, num_classes=again["num_classes"],
                             input_shape=tuple(again["input_shape"]))
    model.load_state_dict({**again["params"], **again["buffers"]})  # artifact rebuilds a model
    assert len(cache.list()) == 1


def test_sgd_from_artifact_starts_at_the_parent_swa(tmp_path):
    cache = ArtifactCache(tmp_path)
    sgd = specs._sgd_from(TINY, every_epoch=True)
    art = build.get_derived(sgd, cache)
    parent = build.get_run(TINY, cache)
    start = art["checkpoints"][0]
    assert all(torch.equal(start[k], parent["swa_params"][k]) for k in parent["swa_params"])
    assert art["history"]["lr"] == pytest.approx([TINY.train.lr * 0.01] * sgd.train.epochs)
    assert len(cache.list()) == 2


def test_get_case_keeps_case_order_whatever_the_start(tmp_path):
    runs = tuple(dataclasses.replace(TINY, seed=s) for s in (0, 1))
    case = specs.Case("tiny", "cpu", runs, specs.derived(tuple(specs._sgd_from(r) for r in runs)))
    seen = []
    got = build.get_case(case, ArtifactCache(tmp_path), start=1,
                         on_artifact=lambda summary, art, how: seen.append(art["seed"]))
    assert seen == [1, 0, 1, 0] and [a["seed"] for a in got.runs] == [0, 1]
    assert [a["seed"] for a in got.derived["sgd_from_swa"]] == [0, 1] and got.outcomes == ["trained"] * 4


def test_a_derived_role_must_match_its_runs():
    runs = tuple(dataclasses.replace(TINY, seed=s) for s in (0, 1))
    with pytest.raises(ValueError, match="derived role 'sgd_from_swa' needs one spec per run"):
        specs.Case("tiny", "cpu", runs, specs.derived((specs._sgd_from(runs[1]), specs._sgd_from(runs[0]))))


def test_missing_dataset_raises_dataset_not_found(tmp_path):
    from core.data import DatasetNotFound
    case = specs.case("gpu", "cifar10-vgg16")
    with pytest.raises(DatasetNotFound, match="cifar10"):
        build.get_case(case, ArtifactCache(tmp_path / "c"), data_dir=tmp_path, device="cpu")


def test_gpu_fixture_skips_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the skip path is not reachable here")
    from fixtures.trained import load_case
    with pytest.raises(pytest.skip.Exception, match="CUDA not available"):
        load_case("gpu", "cifar10-vgg16", ArtifactCache(tmp_path), None)


# ------------------------------------------------------------------ CLI

def test_cli_list_on_an_empty_cache(tmp_path):
    out = _cli("list", "--cache-dir", str(tmp_path / "empty"))
    assert out.returncode == 0, out.stderr
    assert "0 artifact(s)" in out.stdout


def test_cli_unknown_tier_is_one_line_exit_2(tmp_path):
    out = _cli("build", "-m", "tpu", "--cache-dir", str(tmp_path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice: 'tpu'" in lines[0]


def test_cli_build_reports_missing_data(tmp_path, capsys):
    from fixtures.__main__ import main
    code = main(["build", "-m", "gpu", "--case", "cifar10-vgg16", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "c"), "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    c = specs.case("gpu", "cifar10-vgg16")
    n_runs = len(c.all_specs())
    assert code == 0 and f"{n_runs} skipped-missing-data" in out and "0 trained" in out


def test_cli_jobs_trains_each_artifact_once(tmp_path):
    """Two builder processes over a tiny case: every artifact is trained once, the parent loads."""
    out = _cli("build", "-m", "cpu", "--case", "mnist1d-mlp-nobn", "--jobs", "2",
               "--cache-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    n = len(specs.case("cpu", "mnist1d-mlp-nobn").runs)
    import re
    trained, loaded = map(int, re.search(r"(\d+) trained, (\d+) loaded", out.stdout).groups())
    assert trained + loaded == n
    listed = _cli("list", "--cache-dir", str(tmp_path)).stdout
    assert f"{n} artifact(s)" in listed


def test_cli_bad_jobs_is_one_line_exit_2(tmp_path):
    out = _cli("build", "-m", "cpu", "--jobs", "0", "--cache-dir", str(tmp_path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "must be a positive integer" in out.stderr
