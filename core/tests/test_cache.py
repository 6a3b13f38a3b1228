"""core.cache: stable keys, atomic writes, corrupt entries rebuilt with a warning, one build across
concurrent processes, list() rows, weights_only round trip."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from core.cache import RECIPE_VERSION, ArtifactCache, canonical_json, spec_key


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    epochs: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Spec:
    name: str = "toy"
    seed: int = 0
    inner: Inner = Inner()
    kwargs: tuple[tuple[str, object], ...] = (("bn", True),)


def _artifact(value: float = 1.0) -> dict:
    return {"status": "ok", "params": {"w": torch.full((3, 2), value)},
            "checkpoints": {0: {"w": torch.zeros(2)}, 5: {"w": torch.ones(2)}},
            "history": {"loss": [1.0, 0.5]}, "metrics": {"acc": 0.9, "nan": float("nan")},
            "swa_params": None}


def test_key_is_stable_and_changes_with_every_field():
    assert spec_key(Spec()) == spec_key(Spec()) == ArtifactCache("/nonexistent").key(Spec())
    variants = [Spec(name="other"), Spec(seed=1), Spec(inner=Inner(lr=0.2)),
                Spec(inner=Inner(epochs=(1, 3))), Spec(kwargs=(("bn", False),))]
    keys = {spec_key(v) for v in variants} | {spec_key(Spec())}
    assert len(keys) == len(variants) + 1
    assert RECIPE_VERSION in canonical_json(Spec())


def test_key_rejects_non_frozen_or_non_dataclass_specs():
    @dataclass
    class Loose:
        a: int = 1
    with pytest.raises(TypeError, match="frozen"):
        spec_key(Loose())
    with pytest.raises(TypeError, match="dataclass"):
        spec_key({"a": 1})


def test_get_or_build_writes_atomically_and_loads_back(tmp_path):
    cache, builds = ArtifactCache(tmp_path), []
    first = cache.get_or_build(Spec(), lambda: builds.append(1) or _artifact())
    second = cache.get_or_build(Spec(), lambda: builds.append(1) or _artifact())
    assert len(builds) == 1
    torch.testing.assert_close(second["params"]["w"], first["params"]["w"])
    assert second["checkpoints"][5]["w"].tolist() == [1.0, 1.0] and second["swa_params"] is None
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    key = cache.key(Spec())
    assert files == sorted([f"{key}.json", f"{key}.lock", f"{key}.pt"])  # no temp files left
    assert (tmp_path / key[:2] / f"{key}.pt").exists()


def test_temp_files_of_a_killed_writer_are_removed_on_rebuild(tmp_path):
    cache = ArtifactCache(tmp_path)
    key = cache.key(Spec())
    (tmp_path / key[:2]).mkdir()
    stale = tmp_path / key[:2] / f".{key}.pt.abc.tmp"
    stale.write_bytes(b"partial")
    cache.get_or_build(Spec(), _artifact)
    assert not stale.exists()


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        cache.get_or_build(Spec(), lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".pt", ".json", ".tmp")]
    assert cache.load(Spec()) is None


def test_truncated_artifact_is_detected_warned_and_rebuilt(tmp_path):
    cache, builds = ArtifactCache(tmp_path), []
    cache.get_or_build(Spec(), lambda: builds.append(1) or _artifact(1.0))
    pt = cache.paths(cache.key(Spec()))[0]
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    pattern = r"corrupt cache entry .*\.pt \(.*checksum.*\); rebuilding"
    with pytest.warns(UserWarning, match=pattern):
        again = cache.get_or_build(Spec(), lambda: builds.append(1) or _artifact(2.0))
    assert len(builds) == 2 and again["params"]["w"][0, 0] == 2.0
    assert cache.load(Spec())["params"]["w"][0, 0] == 2.0  # the rebuilt entry verifies


def test_missing_metadata_counts_as_corrupt(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.get_or_build(Spec(), _artifact)
    cache.paths(cache.key(Spec()))[1].unlink()
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert cache.get_or_build(Spec(), lambda: _artifact(3.0))["params"]["w"][0, 0] == 3.0


def _worker(root: str, counter: str, barrier) -> None:
    def build():
        with open(counter, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)  # long enough that the other process must wait on the lock
        return _artifact(7.0)
    barrier.wait()
    out = ArtifactCache(root).get_or_build(Spec(seed=42), build)
    assert out["params"]["w"][0, 0] == 7.0


def test_concurrent_processes_build_once(tmp_path):
    counter = tmp_path / "builds.txt"
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "cache"), str(counter), barrier))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert counter.read_text().splitlines() == ["built"]


def test_list_rows(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.list() == []
    cache.get_or_build(Spec(), _artifact)
    cache.get_or_build(Spec(seed=3), lambda: {**_artifact(), "status": "diverged"})
    rows = {r["key"]: r for r in cache.list()}
    assert set(rows) == {cache.key(Spec()), cache.key(Spec(seed=3))}
    row = rows[cache.key(Spec(seed=3))]
    assert row["status"] == "diverged" and row["size"] > 0 and row["created"]
    assert "seed=3" in row["summary"]


def test_metadata_records_spec_versions_checksum_metrics(tmp_path):
    import json
    cache = ArtifactCache(tmp_path)
    cache.get_or_build(Spec(), _artifact)
    meta = json.loads(cache.paths(cache.key(Spec()))[1].read_text())
    assert meta["spec"] == json.loads(json.dumps(dataclasses.asdict(Spec())))
    assert meta["versions"]["torch"] == torch.__version__ and len(meta["sha256"]) == 64
    assert meta["metrics"] == {"acc": 0.9, "nan": None} and meta["status"] == "ok"


def test_artifacts_must_be_dicts(tmp_path):
    with pytest.raises(TypeError, match="must return a dict"):
        ArtifactCache(tmp_path).get_or_build(Spec(), lambda: [1, 2])


def test_nonexistent_root_lists_empty(tmp_path):
    assert ArtifactCache(Path(tmp_path) / "nope").list() == []


def _two_damaged_entries(tmp_path):
    """A cache with three entries: intact, truncated, one byte flipped (same size)."""
    cache = ArtifactCache(tmp_path)
    specs = [Spec(seed=s) for s in range(3)]
    for s in specs:
        cache.get_or_build(s, _artifact)
    truncated, flipped = (cache.paths(cache.key(s))[0] for s in specs[1:])
    truncated.write_bytes(truncated.read_bytes()[:-10])
    blob = bytearray(flipped.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    flipped.write_bytes(bytes(blob))
    return cache, [cache.key(s) for s in specs]


def test_list_verifies_checksums_and_shows_corrupt_entries(tmp_path):
    # Finding: `python -m fixtures list` showed truncated and byte-flipped artifacts as ok.
    cache, (ok, truncated, flipped) = _two_damaged_entries(tmp_path)
    rows = {r["key"]: r for r in cache.list()}
    assert rows[ok]["status"] == "ok" and rows[ok]["verified"]
    assert rows[truncated]["status"].startswith("corrupt: ") and "bytes on disk" in \
        rows[truncated]["status"]
    assert rows[flipped]["status"] == "corrupt: checksum mismatch"


def test_list_without_verify_checks_sizes_only(tmp_path):
    cache, (ok, truncated, flipped) = _two_damaged_entries(tmp_path)
    rows = {r["key"]: r for r in cache.list(verify=False)}
    assert rows[truncated]["status"].startswith("corrupt: ")
    assert rows[flipped]["status"] == "ok" and not rows[flipped]["verified"]  # not read: cheap


def test_list_marks_missing_pt_and_unreadable_metadata(tmp_path):
    cache, (ok, _, _) = _two_damaged_entries(tmp_path)
    pt, meta, _ = cache.paths(ok)
    pt.unlink()
    (meta.parent / "deadbeef.json").write_text("{not json")
    rows = {r["key"]: r for r in cache.list()}
    assert rows[ok]["status"] == "corrupt: .pt file missing"
    assert rows["deadbeef"]["status"].startswith("corrupt: metadata unreadable")


def test_key_includes_the_numerical_code_path(monkeypatch):
    """Weights trained on another MKL branch / ATen kernel set are other numbers: never the same entry."""
    import core.cache as C
    here = spec_key(Spec())
    assert C.code_path_key(threads=False) in canonical_json(Spec())
    monkeypatch.setattr(C, "code_path_key", lambda threads=True: "mkl=AUTO;aten=AVX512")
    assert spec_key(Spec()) != here


def test_entry_status_reads_the_metadata_only_and_refuses_damaged_entries(tmp_path):
    """What a warm `fixtures build` reports without loading: absent -> None, built -> its status,
    truncated .pt or missing metadata -> None (so the build path rebuilds it)."""
    cache = ArtifactCache(tmp_path)
    assert cache.entry_status(Spec()) is None
    cache.get_or_build(Spec(), lambda: {**_artifact(), "status": "diverged"})
    assert cache.entry_status(Spec()) == "diverged"
    pt, meta, _ = cache.paths(cache.key(Spec()))
    pt.write_bytes(pt.read_bytes()[:10])
    assert cache.entry_status(Spec()) is None
    meta.unlink()
    assert cache.entry_status(Spec()) is None
