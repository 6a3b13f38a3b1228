"""The LS gpu tier on a CPU (registry LS-5 cases; fixtures/ls.py, fixtures/ls_training.py): every gpu
case's specs build from the registry, train on "cuda" and are not the cpu specs; the cpu specs' cache
keys are the ones recorded before there were cases (so every cpu artifact and number stays); a tiny
mnist1d-large pipeline (registry copy with small numbers) runs end to end with device "cpu"; a CIFAR-10
case without its files is core.data.DatasetNotFound with a one-line message."""
import dataclasses
import hashlib
import json

import pytest
import torch

from core.cache import ArtifactCache, _key_fields, spec_key
from core.numerics import code_path_key
from core.registry import load_registry
from fixtures import ls
from fixtures.sd import EnsembleSpec

# name -> (sha256 of the spec's key fields, its cache key under CPU_KEY_PATH), recorded 2026-12-02 from the
# commit before the gpu tier (8586561) with its registry: the cpu specs must not move
CPU_KEY_PATH = "mkl=COMPATIBLE;aten=AVX2"  # code_path_key(threads=False) of a pinned session on the recording machine
CPU_KEYS = {
    "pool": ("51c2ddc347b4712f569688d1b95dc225a56343f4128baa53049d0bca12527737",
            "9a252a782857a18e6f29fdaa7002bb8a1e28c737f325834785ec07c950bd9e05"),
    "tunnel claim": ("b2d40a219a8380b8ce51c0bdd03fd4754bc2556bd5a935c6f3cc30bc5eab2197",
                    "2796c9b3b9bf31b09c7204a8c347b021088f7a36da675219941a652abe850721"),
    "tunnel control": ("29d58f3707cf5cf575d87ede97fe6645f25228809891f941d4e9dc85aa62b417",
                      "0a123b89acb67f238b5e952b472cf9e02840837c850f9876ddd93cd2084c6b98"),
    "connector m=2": ("1ad987cef34a9a264b403c4519bb104c25beb5c89677f4219bdc611d03d7e5c4",
                     "33e32979f6ddc131df86ff2bf540aed0925ca92eaf03b2246285adcfa3005511"),
    "connector control: m=2": ("69c84cb2639c5c2a845e4fb2ffb0fa14f4ebdb5cf215f7857c7212ab3c2e1833",
                              "ffed18b583d38ecf0dc1275672bc3b3a4c3d41e8b44bdfb77ad0c7f694c5fb1a"),
    "connector m=5": ("5e6acf3e2a620ebb748217e6afd56fa3087a6fdb10c509989c8ec38fa26ad91b",
                     "d1fa45f6e2d0699e11295a5f42313dc17b017d4b55601c872389cd871dfebe89"),
    "connector control: m=5": ("0fb8cffa368ebbda510b33ed7178b290308c20db744bed5686bcb005942ce3e8",
                              "0a9e13d0030bb011e23150ba6e62a54e2653c996abfaf7ce9dfb9f84375c7d8b"),
    "connector m=10": ("5ca66169efb655babdd9911ce081c19fb99f07695cc167e85c5c4fbb5b552895",
                      "520270c0596e2b842e6d1b974a69dd117e706fa6e1170d1672303446b91186e4"),
    "connector control: m=10": ("455e3a39f7f0733a1acf101c09efdcb6b3aa080953d9061f23c16fef451d49d5",
                               "67e5895246dcc2fc601074e0f5f068d88aea9e454a49fc2eae5bdd66db1180a4"),
    "spectra": ("80f07feee911c41038c9dc993016ebd8926a830b37aa77e2249381cfb90fb240",
               "cf44d182f77e4808d310926a5a46044fd5e187c3cc013ecf3a786c77ac1d209c"),
    "radial point lr=0.0003 l2=0 dropout=0 b=128": ("e8f10e912382873d676c456dd8c19577089565c0d7a840e6c56e15fa84a096be",
                                                   "7087c5f25f218bb78939d7101d28380d615478613b5e1a9f59e628b8198fd56c"),
    "radial point lr=0.001 l2=0 dropout=0 b=128": ("82d002a462bf1f6d97d9bed076131e2b75d35529139add525b16e08e2b39fa30",
                                                  "2c48b3676cbad6332dc1b8b18f83c4464483d2fb1678cd8c88acd25606b3ac2e"),
    "radial point lr=0.003 l2=0 dropout=0 b=128": ("ebb9d209b2de01766201bbea2e3bd9c3a593e206554840f9f987be706051a47f",
                                                  "560793a31dc75a5b769b75e3590368d7f23099334c5355cbd708e1dc117d9c79"),
    "radial point lr=0.001 l2=0.0001 dropout=0 b=128": ("669f24491a42825973871f7ab069056926a9df8cac5daaa4df162566c15fef57",
                                                       "461e333b6ebd80d1d344c88b3eec6d537ac2fb7264a5231c9c275e98a1f8cd6c"),
    "radial point lr=0.001 l2=0.001 dropout=0 b=128": ("ff60ccc3d4af0228376cdc4c8ef582bc9d9dafbb3bb272bf5501725bdf854ed7",
                                                      "95fcc5ab4717b6ddc681482aa01a792c2549ca9228f3d257afef667b8f3ec7be"),
    "radial point lr=0.001 l2=0 dropout=0.1 b=128": ("6f4d6db4268909bd4f5c680c1f144163445b949649d94ea1a0d535b5daeaa2d0",
                                                    "37dca6a6b1147e40f08d0058c5a3727e8b5eaa05226c012e73d70e2b26cf9fc5"),
    "radial point lr=0.001 l2=0 dropout=0.2 b=128": ("30bf89ff6e1a772932af38c443fa9598dc1de6d316ee472bba5602f6629e73f5",
                                                    "9659e59e33ae70520b7baafa492403853eed154cf849d605a6dd2ca8cff5c110"),
    "radial point lr=0.001 l2=0 dropout=0 b=32": ("d8ac6967f7428fce89365046a08089f10651aa08702c7b0a7fd4ad8dc1cfe9cb",
                                                 "1fe912a91f9092ff5b86c2f36bd72548ca4a53734759a395e15e14519755450d"),
    "radial point lr=0.001 l2=0 dropout=0 b=512": ("d640492e82d033e489e75a7665771e5c7793280fb031124b50008c490203a43b",
                                                  "4478108becfe1472ec3be452f9b3ab6e2b11171f78579c065d700e700fbea77f"),
    "radial": ("0fb820c34a8d269075c460e65143a02933f31791c110ee8441d20f4945c6c8b4",
              "4e12acb81ac7f90dd0039ebed518cff0c65f89f7627f920f662194e6ee5349c1"),
    "cyclic high": ("96d2731df7281a158d0e1a05821c44d4540d8f550601a30558f17d0b3cda96e8",
                   "3bfbfdd71de58ac09581b428d2513c5c56340b2e45ed89c969f3601a604176a0"),
    "cyclic low": ("25765d9661c6c9da3f93c6bf66d41dcb4f7ace72bb52ff2f1b75efec66685345",
                  "a3023463310a6c7f36b9eff987bf2dbd4db4c42f43c4efaea405e5eff33ee035"),
    "cyclic control": ("8b5a577410353388651c3939a6df72f59413b6b42929886b92f7dd2610a28adb",
                      "d97fe17f78130d00f65d81f8cd8c9f366be5b4712b74fb3be24437b4dc72a6fb"),
}


def _content(spec) -> str:
    """The key's spec part alone (no code path): the same on every machine."""
    doc = {"spec_type": type(spec).__name__, "spec": _key_fields(spec)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def test_cpu_spec_keys_are_the_recorded_ones():
    specs = ls.ls_specs("cpu")
    assert list(specs) == list(CPU_KEYS)
    moved = [n for n, s in specs.items() if _content(s) != CPU_KEYS[n][0]]
    assert not moved, f"cpu LS specs changed (their artifacts would retrain): {moved}"
    if code_path_key(threads=False) == CPU_KEY_PATH:  # the full key also holds the machine's code path
        assert {n: spec_key(s) for n, s in specs.items()} == {n: v[1] for n, v in CPU_KEYS.items()}


def _ensembles(specs: dict) -> list[EnsembleSpec]:
    """Every EnsembleSpec a set of LS specs trains: the pool, LS-9's recipes and each derived spec's parents."""
    out = []
    for s in specs.values():
        out += [s] if isinstance(s, EnsembleSpec) else [getattr(s, "parent")]
    return out


def test_every_gpu_case_builds_its_specs_on_cuda_and_not_the_cpu_ones():
    reg, cpu = load_registry(), {spec_key(s) for s in ls.ls_specs("cpu").values()}
    cases = ls.ls_cases("gpu")
    assert list(cases)[0] == "mnist1d-large" and ls.ls_case("gpu").name == "mnist1d-large"  # the default
    for name, case in cases.items():
        specs = ls.ls_specs("gpu", case=name)
        pool = specs["pool"]
        assert all(e.device == "cuda" for e in _ensembles(specs)), name
        assert not cpu & {spec_key(s) for s in specs.values()}, name
        assert (pool.dataset, pool.model, pool.dataset_kwargs) == (case.dataset, case.model, case.dataset_kwargs)
        assert pool.config.eval_rows == case.eval_rows and pool.config.hessian_rows == case.hessian_rows
        assert pool.config.epochs == reg["LS-5"].setting("train_epochs", "gpu")
        assert len(pool.seeds) <= reg["LS-5"].setting("pool_size", "gpu")
    full, cifar, fashion = (ls.ls_specs("gpu", case=n) for n in cases)
    assert set(ls.ls_specs("cpu")) == set(full)  # mnist1d-large runs every claim: every unit
    assert set(cifar) == {"pool", "tunnel claim", "tunnel control"} and len(cifar["pool"].seeds) == 20
    n8 = reg["LS-8"].seeds["gpu"]  # fashion serves LS-8 only: its units, no controls
    assert set(fashion) == {"pool", "tunnel claim", "connector m=2", "connector m=5", "connector m=10", "spectra"}
    assert len(fashion["tunnel claim"].pairs) == n8 and len(fashion["connector m=10"].sets) == n8
    assert len(fashion["pool"].seeds) == 11 * n8 and fashion["spectra"].n_units == n8


def _thaw(x):
    return {k: _thaw(v) for k, v in x.items()} if isinstance(x, dict) else list(map(_thaw, x)) if isinstance(x, tuple) else x


def _tiny_registry():
    """The registry with small gpu numbers (the recipe's shape kept: every claim, every unit kind)."""
    reg = load_registry()
    small = {"LS-5": {"train_epochs": 1, "hyperplane_steps": 2}, "LS-7": {"centre_steps": 2},
             "LS-8": {}, "LS-9": {}, "LS-10": {"cycle_epochs": 1}}
    seeds = {"LS-5": 2, "LS-6": 2, "LS-7": 1, "LS-8": 1, "LS-9": 1, "LS-10": 2}
    out = dict(reg.claims)
    for cid, per_tier in small.items():
        st = _thaw(reg[cid].settings)
        for key, v in per_tier.items():
            st[key]["gpu"] = v
        if cid == "LS-5":
            st["cases"]["gpu"]["mnist1d-large"].update(n_train=200, n_test=100, hessian_rows=20,
                                                      model_kwargs={"bn": False, "widths": [8, 8], "activation": "tanh"})
        st |= {"LS-8": {"lanczos_k": 3, "lanczos_iters": 6}, "LS-9": {"n_directions": 2, "theta_points": 10},
               "LS-10": {"n_snapshots": 2}}.get(cid, {})
        out[cid] = dataclasses.replace(reg[cid], settings=st, seeds={**reg[cid].seeds, "gpu": seeds[cid]})
    out["LS-6"] = dataclasses.replace(reg["LS-6"], seeds={**reg["LS-6"].seeds, "gpu": seeds["LS-6"]})
    return out


def test_a_tiny_mnist1d_large_pipeline_runs_on_the_cpu(tmp_path):
    reg = _tiny_registry()
    case = ls.ls_cases("gpu", reg, device="cpu")["mnist1d-large"]
    seen = []
    arts = ls.get_ls("gpu", ArtifactCache(tmp_path / "cache"), case=case, registry=reg,
                     on_ready=lambda name, art, how: seen.append((name, how)))
    specs = ls.ls_specs("gpu", reg, case)
    assert set(arts) == set(specs) and all(e.device == "cpu" for e in _ensembles(specs))
    assert len(specs["pool"].seeds) == 11 and all(how == "trained" for _, how in seen)
    assert all(a["status"] == "ok" for a in arts.values()), {n: a["status"] for n, a in arts.items()}
    tensors = [v for a in arts.values() for v in a.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert arts["tunnel claim"]["linear_barrier"].shape == (2,) and arts["spectra"]["units"]
    assert arts["cyclic high"]["snapshot_acc"].shape == (2, 2)
    again = ls.get_ls("gpu", ArtifactCache(tmp_path / "cache"), case=case, registry=reg)  # warm: loaded, same numbers
    torch.testing.assert_close(again["tunnel claim"]["tunnel_losses"], arts["tunnel claim"]["tunnel_losses"])


def test_a_cifar_case_without_its_files_is_dataset_not_found(tmp_path, monkeypatch):
    from core.data import DatasetNotFound
    monkeypatch.setenv("CLAIMS_DATA_DIR", str(tmp_path))
    case = ls.ls_cases("gpu", device="cpu")["cifar10-simplecnn"]
    with pytest.raises(DatasetNotFound, match="cifar10") as e:
        ls.get_ls("gpu", ArtifactCache(tmp_path / "cache"), case=case, groups=("structure",))
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)  # the skip message: one line, where it looked
