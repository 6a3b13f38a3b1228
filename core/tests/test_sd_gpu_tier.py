"""The Sharpest-Directions gpu tier on a CPU: its specs come from the registry's gpu cases (SD-1
cases.gpu), train on "cuda" with keys of their own, leave every cpu key as it was, and the whole gpu
code path (the cases' conv nets, chunked evaluation, the nudged and restart builders, host artifacts)
runs end to end here on miniatures of the gpu cases with device "cpu". A CIFAR case without its data
is DatasetNotFound's one line, also from a builder process; "cuda" without CUDA is one line."""
from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch

from core.cache import ArtifactCache, _key_fields
from core.data import DatasetNotFound
from core.ensemble import _evaluate
from core.nudged import NudgedConfig
from core.registry import load_registry
from core.tests.test_data import _write_cifar
from fixtures import sd
from fixtures.cases import skip_missing_data
from fixtures.specs import kw

GPU_CASES = ("mnist1d-large-cnn1d", "cifar10-simplecnn", "cifar10-resnet32-nobn")
SD1_POINT = "lr=0.1 b=128 m=0"


def test_gpu_cases_come_from_the_registry_with_their_claims():
    cases = sd.sd_cases("gpu")
    assert tuple(cases) == GPU_CASES and all(c.device == "cuda" for c in cases.values())
    large, simple, resnet = cases.values()
    assert large.dataset == "mnist1d" and large.n_train == 10_000 and large.runs("SD-2") and large.runs("SD-5")
    assert simple.dataset == "cifar10" and dict(simple.dataset_kwargs)["normalize"] == "per_pixel"
    assert simple.runs("SD-3") and not simple.runs("SD-2") and resnet.claims == ("SD-1",)
    for c in cases.values():
        assert c.hessian_rows == round(0.05 * c.n_train)  # §2: Lanczos on ~5% of the training data


def test_gpu_specs_train_on_cuda_with_keys_of_their_own_and_cpu_keys_unchanged(tmp_path):
    cache = ArtifactCache(tmp_path)
    cpu = sd.sd_specs("cpu")
    for spec in cpu.values():  # the cpu artifacts keep their keys: no device, no eval_rows in them
        fields = _key_fields(spec)
        assert "device" not in fields and "eval_rows" not in fields["config"]
    keys = {cache.key(s) for s in cpu.values()}
    for name in GPU_CASES:
        gpu = sd.sd_specs("gpu", case=name)
        assert all(s.device == "cuda" for s in gpu.values())
        assert not keys & {cache.key(s) for s in gpu.values()}
        keys |= {cache.key(s) for s in gpu.values()}
    resnet = sd.sd_specs("gpu", case="cifar10-resnet32-nobn")
    assert set(resnet) == {SD1_POINT, "control: " + SD1_POINT}  # SD-1 only: the budget's scope
    assert resnet[SD1_POINT].config.keep_params and resnet[SD1_POINT].config.eval_rows == 2500
    assert set(sd.nsgd_specs("gpu")) == {0.01, 1.0, 10.0}  # the first gpu case runs SD-5/SD-6
    assert sd.nsgd_specs("gpu")[1.0].config.hessian_rows == 500  # the case's rows (SD-5 network.gpu)


def test_an_unknown_case_names_the_known_ones():
    with pytest.raises(KeyError, match="no case 'imagenet'.*known: mnist1d-large-cnn1d"):
        sd.sd_case("gpu", "imagenet")


def _mini(spec: sd.EnsembleSpec, n_train: int, n_test: int, **config) -> sd.EnsembleSpec:
    """The spec at miniature size on the CPU: few rows, two seeds, 4 steps, the same code path."""
    data = dict(spec.dataset_kwargs, n_train=n_train, n_test=n_test)
    per_epoch = math.ceil(n_train / spec.config.batch_size)
    cfg = dataclasses.replace(spec.config, epochs=math.ceil(4 / per_epoch), checkpoints=(0, 2, 4), hessian_rows=32,
                              **config)
    return dataclasses.replace(spec, dataset_kwargs=kw(**data), config=cfg, seeds=(0, 1), device="cpu")


def test_the_mnist1d_large_case_runs_end_to_end_on_cpu(tmp_path):
    """The gpu case's network through the ensemble (chunked evaluation), the SD-4 restart and the
    NSGD builders, at miniature size: finite host artifacts with the promised shapes."""
    reg = load_registry()
    parent = _mini(sd.sd_specs("gpu", case=GPU_CASES[0], device="cpu")[SD1_POINT], 256, 64, eval_rows=100)
    art = sd.build_ensemble(parent)
    assert art["status"] == "ok" and art["lam"].shape == (2, 3, 1) and art["lam"].isfinite().all()
    assert art["params_at"]["1.weight"].shape[:2] == (2, 3) and art["final"]["1.weight"].device.type == "cpu"
    sd4 = reg["SD-4"]  # SD-4's variants restarted from seed 0's checkpoint 1 (a miniature has no peak)
    variants = tuple((v, *sd.VARIANT_COEFS[v](sd4)) for v in sd4.setting("variants"))
    cfg = NudgedConfig(lr=parent.config.lr, batch_size=parent.config.batch_size, max_steps=3, refresh_iters=10,
                       final_iters=10, hessian_rows=32, loss_tail_steps=1, track_loss=True)
    restart = sd.RestartSpec("restart: mini", parent, (0,), (1,), variants, cfg, sd4.setting("restart_seed"))
    out = sd.build_restarts(restart, art)
    assert out["final_lam"].shape == (len(restart.variants), 1) and out["tail_loss"].isfinite().all()
    arm = sd.nsgd_specs("gpu", reg, device="cpu")[0.01]
    arm = dataclasses.replace(arm, dataset_kwargs=kw(**dict(arm.dataset_kwargs, n_train=200, n_test=50)),
                              seeds=(0,), config=dataclasses.replace(arm.config, max_steps=4, refresh_every=2,
                                                                     hessian_rows=32, final_iters=10))
    nsgd = sd.build_nsgd(arm)
    assert nsgd["final_lam"].shape == (1, 5) and math.isfinite(float(nsgd["final_lam"][0, 0]))


def test_a_cifar_case_runs_on_files_in_the_real_format(tmp_path, monkeypatch):
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(0), per_file=8)
    monkeypatch.setenv("CLAIMS_DATA_DIR", str(tmp_path))
    spec = _mini(sd.sd_specs("gpu", case="cifar10-simplecnn", device="cpu")[SD1_POINT], 40, 8, eval_rows=16)
    art = sd.build_ensemble(spec)
    assert art["status"] == "ok" and art["train_loss"].isfinite().all() and art["lam"].isfinite().all()


def test_a_missing_cifar_is_one_line_in_process_and_from_a_builder_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAIMS_DATA_DIR", str(tmp_path))
    specs = sd.sd_specs("gpu", case="cifar10-simplecnn", device="cpu")
    with pytest.raises(DatasetNotFound) as exc:
        sd.build_ensemble(specs[SD1_POINT])
    line = str(exc.value)
    assert "\n" not in line and "cifar10" in line and "--data-dir" in line
    again = pickle.loads(pickle.dumps(exc.value))  # what a spawned builder hands its parent
    assert type(again) is DatasetNotFound and str(again) == line
    with pytest.raises(pytest.skip.Exception, match="dataset 'cifar10' not found"):
        with skip_missing_data():
            sd.build_ensemble(specs[SD1_POINT])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_one_line():
    with pytest.raises(RuntimeError, match="CUDA not available: .*--device cpu"):
        sd.build_ensemble(sd.sd_specs("gpu", case=GPU_CASES[0])[SD1_POINT])


def test_chunked_evaluation_equals_one_forward():
    torch.manual_seed(0)
    w = {"w": torch.randn(3, 5, 4, dtype=torch.float64)}
    forward = torch.func.vmap(lambda p, x: x @ p["w"])
    split = type("S", (), {"x": torch.randn(37, 5, dtype=torch.float64), "y": torch.randint(0, 4, (37,)),
                           "__len__": lambda self: 37})()
    whole, blocks = _evaluate(forward, w, split, "cross_entropy"), _evaluate(forward, w, split, "cross_entropy", 10)
    assert torch.allclose(whole[0], blocks[0], rtol=1e-12) and torch.equal(whole[1], blocks[1])
