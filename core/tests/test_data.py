"""Tests for core/data.py: offline loading, real file formats written in tmp_path, seeded splits,
normalisation, error messages, and the on-device augmentation / batching."""
import gzip
import pickle
import random
import socket
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import data as D
from core.data import (DATASETS, Dataset, DatasetNotFound, Split, UnknownName, augment_crop_flip,
                       batches, load_dataset)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: with >1 intra-op thread on a busy shared 2-core box, thread spin-up dominates
    (a 2x3x8x8 ResNet forward took 0.5 s instead of 4 ms). Scoped to this module and restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- mnist1d
def test_mnist1d_offline_shapes_splits_dtypes(no_network):
    d = load_dataset("mnist1d", seed=0, n_train=300, n_val=100, n_test=100)
    assert isinstance(d, Dataset) and d.name == "mnist1d"
    assert (d.train.x.shape, d.val.x.shape, d.test.x.shape) == ((300, 40), (100, 40), (100, 40))
    assert d.input_shape == (40,) and d.num_classes == 10
    for s in (d.train, d.val, d.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64 and s.x.device.type == "cpu"
        assert 0 <= int(s.y.min()) and int(s.y.max()) <= 9
    train_rows = {tuple(r) for r in d.train.x.tolist()}
    assert not any(tuple(r) in train_rows for r in d.val.x.tolist())  # validation is disjoint
    assert abs(float(d.train.x.mean())) < 1e-5 and abs(float(d.train.x.std(unbiased=False)) - 1) < 1e-4


def test_mnist1d_matches_the_package_and_keeps_global_rng():
    from mnist1d.data import get_dataset_args, make_dataset
    D.mnist1d_arrays.cache_clear()
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    d = load_dataset("mnist1d", seed=5, n_train=400, n_test=100, normalize=False)
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    args = get_dataset_args()
    args.num_samples, args.seed = 500, 5  # the package's own 80/20 split
    ref = make_dataset(args)
    assert torch.allclose(d.train.x, torch.tensor(ref["x"], dtype=torch.float32))
    assert torch.equal(d.test.y, torch.tensor(ref["y_test"]))


def test_mnist1d_deterministic_by_seed_and_default_sizes():
    a = load_dataset("mnist1d", seed=1, n_train=200, n_test=50, n_val=20)
    b = load_dataset("mnist1d", seed=1, n_train=200, n_test=50, n_val=20)
    c = load_dataset("mnist1d", seed=2, n_train=200, n_test=50, n_val=20)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert load_dataset("mnist1d", n_test=10).train.x.shape == (4000, 40)  # package default split


# ---------------------------------------------------------------- IDX (MNIST / Fashion-MNIST)
def _idx_bytes(arr: np.ndarray) -> bytes:
    return b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_idx_set(folder, rng, n_train=12, n_test=6, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, arr in arrays.items():
        raw = _idx_bytes(arr)
        (folder / (name + ".gz")).write_bytes(gzip.compress(raw)) if gz else (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,sub", [("mnist", "MNIST/raw"), ("mnist", "mnist"),
                                      ("fashion_mnist", "FashionMNIST/raw")])
def test_idx_files_load(tmp_path, no_network, gz, name, sub):
    arrays = _write_idx_set(tmp_path / sub, np.random.default_rng(0), gz=gz)
    d = load_dataset(name, data_dir=tmp_path, normalize=False)
    assert d.train.x.shape == (12, 1, 28, 28) and d.test.x.shape == (6, 1, 28, 28)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    expect = torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.float32) / 255)[:, None]
    assert torch.equal(d.train.x, expect)
    assert torch.equal(d.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))


def test_idx_subsets_are_seeded(tmp_path):
    _write_idx_set(tmp_path / "MNIST" / "raw", np.random.default_rng(0), n_train=40)
    a = load_dataset("mnist", data_dir=tmp_path, n_train=20, n_val=10, seed=3)
    b = load_dataset("mnist", data_dir=tmp_path, n_train=20, n_val=10, seed=3)
    c = load_dataset("mnist", data_dir=tmp_path, n_train=20, n_val=10, seed=4)
    assert len(a.train) == 20 and len(a.val) == 10 and torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.val.x, c.val.x)
    with pytest.raises(ValueError, match="only 40"):
        load_dataset("mnist", data_dir=tmp_path, n_train=35, n_val=10)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_is_a_clear_error(tmp_path, gz):
    _write_idx_set(tmp_path / "MNIST" / "raw", np.random.default_rng(0), gz=gz)
    path = tmp_path / "MNIST" / "raw" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match="truncated or corrupt") as e:
        load_dataset("mnist", data_dir=tmp_path)
    assert "train-images-idx3-ubyte" in str(e.value)


def test_idx_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + b"ab")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(tmp_path / "x")


# ---------------------------------------------------------------- CIFAR pickles
def _write_cifar(root, name, rng, per_file=4):
    folder, train_files, test_files, key, classes = D._CIFAR[name]
    (root / folder).mkdir(parents=True)
    xs = {}
    for f in train_files + test_files:
        x = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        batch = {b"data": x, key.encode(): rng.integers(0, classes, per_file).tolist(),
                 b"batch_label": b"fake"}
        if name == "cifar100":
            batch[b"coarse_labels"] = rng.integers(0, 20, per_file).tolist()
        (root / folder / f).write_bytes(pickle.dumps(batch, protocol=2))
        xs[f] = x
    return xs


@pytest.mark.parametrize("name,classes,n_train", [("cifar10", 10, 20), ("cifar100", 100, 4)])
def test_cifar_pickles_load(tmp_path, no_network, name, classes, n_train):
    xs = _write_cifar(tmp_path, name, np.random.default_rng(1))
    d = load_dataset(name, data_dir=tmp_path, normalize=False)
    assert d.train.x.shape == (n_train, 3, 32, 32) and d.test.x.shape == (4, 3, 32, 32)
    assert d.num_classes == classes and d.input_shape == (3, 32, 32)
    first = xs["data_batch_1" if name == "cifar10" else "train"][0].reshape(3, 32, 32) / 255
    assert torch.allclose(d.train.x[0], torch.from_numpy(first.astype(np.float32)))


def test_cifar_normalisations(tmp_path):
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(2))
    d = load_dataset("cifar10", data_dir=tmp_path)  # per channel, train statistics
    x = d.train.x.double()
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-4)
    p = load_dataset("cifar10", data_dir=tmp_path, normalize="per_pixel").train.x.double()
    assert float(p.mean(0).abs().max()) < 1e-5 and abs(float(p.std(unbiased=False)) - 1) < 1e-4
    with pytest.raises(ValueError, match="per_pixel"):
        load_dataset("cifar10", data_dir=tmp_path, normalize="zca")


def test_cifar_rejects_code_and_missing_keys(tmp_path):
    _write_cifar(tmp_path, "cifar10", np.random.default_rng(3))
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0],
                                  b"evil": random.Random(0)}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", data_dir=tmp_path)
    bad.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8)}, protocol=2))
    with pytest.raises(ValueError, match="'labels'") as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "test_batch" in str(e.value)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("name,expected", [("mnist", "train-images-idx3-ubyte"),
                                           ("cifar10", "cifar-10-batches-py/data_batch_1"),
                                           ("cifar100", "cifar-100-python/train"),
                                           ("svhn", "train_32x32.mat"), ("stl10", "stl10_binary/train_X.bin")])
def test_missing_dataset_is_one_line(tmp_path, no_network, name, expected):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFound) as e:
        load_dataset(name, data_dir=missing)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError) and "\n" not in msg
    assert str(missing) in msg and expected in msg and "--data-dir" in msg and "--allow-download" in msg


def test_corrupt_svhn_file_is_reported(tmp_path):
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetNotFound, match="checksum"):
        load_dataset("svhn", data_dir=tmp_path)


def test_download_only_when_allowed(tmp_path, no_network, monkeypatch):
    """download=True hands the fetch to torchvision (faked here), then our parser reads the files."""
    import torchvision.datasets as tvd
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            _write_idx_set(tmp_path / "MNIST" / "raw", np.random.default_rng(0), gz=True)
    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    with pytest.raises(DatasetNotFound):
        load_dataset("mnist", data_dir=tmp_path)
    assert calls == []
    d = load_dataset("mnist", data_dir=tmp_path, download=True)
    assert calls == [(str(tmp_path), True, True)] and len(d.train) == 12
    load_dataset("mnist", data_dir=tmp_path, download=True)
    assert len(calls) == 1  # files present: no second fetch


def test_unknown_name_lists_known():
    with pytest.raises(UnknownName) as e:
        load_dataset("foo")
    assert isinstance(e.value, ValueError)
    assert str(e.value).startswith("unknown dataset 'foo'; known: ")
    assert all(n in str(e.value) for n in DATASETS)


@pytest.mark.parametrize("kw,match", [(dict(seed=-1), "seed"), (dict(n_train=0), "n_train"),
                                      (dict(n_val=1.5), "n_val"), (dict(normalize="x"), "normalize")])
def test_bad_arguments_name_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("mnist1d", **kw)


def test_split_validates():
    with pytest.raises(ValueError, match="float32"):
        Split(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="does not match"):
        Split(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))


# ---------------------------------------------------------------- augmentation
def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img [C, H, W] moved by (dy, dx) with zero fill: out[i, j] = img[i + dy, j + dx]."""
    p = max(abs(dy), abs(dx))
    h, w = img.shape[-2:]
    return F.pad(img, (p, p, p, p))[:, p + dy:p + dy + h, p + dx:p + dx + w]


def test_augment_deterministic_shape_device_and_pure():
    x = torch.randn(16, 3, 8, 8)
    x0 = x.clone()
    a = augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    b = augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    c = augment_crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(x, x0)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device


def test_augment_identity_without_pad_and_flip():
    x = torch.randn(5, 2, 6, 7)
    assert torch.equal(augment_crop_flip(x, generator=torch.Generator(), pad=0, flip=False), x)
    for shape in [(5, 9), (5, 2, 9)]:
        s = torch.randn(shape)
        assert torch.equal(augment_crop_flip(s, generator=torch.Generator(), pad=0, flip=False), s)


def test_crops_are_real_shifts_and_flips_are_mirrors():
    img = torch.arange(1.0, 1 + 2 * 6 * 6).reshape(2, 6, 6)  # no zeros: padding is visible
    out = augment_crop_flip(img.expand(64, 2, 6, 6), generator=torch.Generator().manual_seed(0), pad=2)
    seen = set()
    for o in out:
        hits = [(dy, dx, f) for dy in range(-2, 3) for dx in range(-2, 3) for f in (False, True)
                if torch.equal(o, _shifted(img.flip(-1) if f else img, dy, dx))]
        assert len(hits) >= 1, "output is not a shifted (and possibly mirrored) copy"
        seen.add(hits[0])
    assert len(seen) >= 15 and {h[2] for h in seen} == {False, True}
    flips = augment_crop_flip(img.expand(32, 2, 6, 6), generator=torch.Generator().manual_seed(1), pad=0)
    assert all(torch.equal(o, img) or torch.equal(o, img.flip(-1)) for o in flips)


def test_augment_1d_is_shift_and_reversal():
    sig = torch.arange(1.0, 11.0)
    out = augment_crop_flip(sig.expand(40, 10), generator=torch.Generator().manual_seed(0), pad=3)
    cands = [F.pad(s, (3, 3))[3 + k:13 + k] for s in (sig, sig.flip(0)) for k in range(-3, 4)]
    assert all(any(torch.equal(o, c) for c in cands) for o in out)
    same = augment_crop_flip(sig.expand(40, 1, 10), generator=torch.Generator().manual_seed(0), pad=3)
    assert torch.equal(same[:, 0], out)  # [N, 1, L] and [N, L] draw identically


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_augment_on_cuda_matches_cpu_draws():
    x = torch.randn(8, 3, 8, 8)
    cpu = augment_crop_flip(x, generator=torch.Generator().manual_seed(0))
    gpu = augment_crop_flip(x.cuda(), generator=torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


def test_augment_rejects_bad_input():
    with pytest.raises(ValueError, match="pad"):
        augment_crop_flip(torch.zeros(2, 3, 4, 4), generator=torch.Generator(), pad=-1)
    with pytest.raises(ValueError, match="shape"):
        augment_crop_flip(torch.zeros(4), generator=torch.Generator())


# ---------------------------------------------------------------- batching
def test_batches_cover_each_example_once_and_are_seeded():
    s = Split(torch.arange(10.0)[:, None], torch.arange(10))
    got = [y for _, y in batches(s, 3, generator=torch.Generator().manual_seed(0))]
    assert [len(y) for y in got] == [3, 3, 3, 1] and sorted(torch.cat(got).tolist()) == list(range(10))
    again = [y for _, y in batches(s, 3, generator=torch.Generator().manual_seed(0))]
    assert all(torch.equal(a, b) for a, b in zip(got, again))
    assert [len(y) for _, y in batches(s, 3, generator=None, shuffle=False, drop_last=True)] == [3, 3, 3]
    xb, yb = next(batches(s, 4, generator=None, shuffle=False))
    assert torch.equal(yb, torch.arange(4)) and torch.equal(xb[:, 0], yb.float())
    with pytest.raises(ValueError, match="Generator"):
        next(batches(s, 3, generator=None))
