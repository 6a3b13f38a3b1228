"""`python -m fixtures`: directories checked before any work (one line, exit 2) and `list`
verifying checksums (`--fast`: sizes only), damaged artifacts shown as corrupt."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from core.cache import ArtifactCache
from fixtures.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Spec:
    seed: int = 0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fixtures", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _deny_writes(monkeypatch, path: Path) -> None:
    """Make `path` unwritable: chmod for real, and (root ignores modes) deny os.access too."""
    path.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
        os.path.abspath(p) == str(path) and mode & os.W_OK) else real(p, mode, *a, **k))


def _one_line_exit_2(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(lines) == 1, err
    return lines[0]


def test_build_with_an_unwritable_cache_dir_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    # Finding: an existing, unwritable --cache-dir gave a raw PermissionError traceback.
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    _deny_writes(monkeypatch, cache)
    try:
        line = _one_line_exit_2(capsys, ["build", "-m", "gpu", "--case", "cifar10-vgg16",
                                         "--device", "cpu", "--cache-dir", str(cache),
                                         "--data-dir", str(tmp_path / "no-data")])
    finally:
        cache.chmod(0o755)
    assert line.startswith("python -m fixtures: error: --cache-dir ")
    assert str(cache) in line and "not writable" in line


def test_cache_dir_that_is_a_file_or_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = _one_line_exit_2(capsys, ["list", "--cache-dir", str(tmp_path / "f")])
    assert "--cache-dir" in line and "not a directory" in line
    line = _one_line_exit_2(capsys, ["build", "-m", "cpu",
                                     "--cache-dir", str(tmp_path / "f" / "c")])
    assert "--cache-dir" in line and "cannot be created" in line


def test_data_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    line = _one_line_exit_2(capsys, ["build", "-m", "cpu", "--cache-dir", str(tmp_path / "c"),
                                     "--data-dir", str(tmp_path / "f")])
    assert "--data-dir" in line and "not a directory" in line


def _damaged_cache(root: Path) -> tuple[ArtifactCache, list[str]]:
    cache = ArtifactCache(root)
    for seed in range(3):
        cache.get_or_build(_Spec(seed), lambda: {"status": "ok", "w": torch.arange(100.0)})
    keys = [cache.key(_Spec(s)) for s in range(3)]
    truncated, flipped = (cache.paths(k)[0] for k in keys[1:])
    truncated.write_bytes(truncated.read_bytes()[:-10])
    blob = bytearray(flipped.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    flipped.write_bytes(bytes(blob))
    return cache, keys


def test_list_shows_truncated_and_byte_flipped_artifacts_as_corrupt(tmp_path):
    # Finding: `python -m fixtures list` showed both as ok.
    _, (ok, truncated, flipped) = _damaged_cache(tmp_path)
    out = _cli("list", "--cache-dir", str(tmp_path))
    rows = {ln[:12]: ln for ln in out.stdout.splitlines()}
    assert out.returncode == 1, out.stderr
    assert " ok " in rows[ok[:12]]
    assert "corrupt: " in rows[truncated[:12]] and "bytes on disk" in rows[truncated[:12]]
    assert "corrupt: checksum mismatch" in rows[flipped[:12]]
    assert "3 artifact(s)" in out.stdout and "2 corrupt; checksums verified" in out.stdout


def test_list_fast_checks_sizes_only_and_says_so(tmp_path):
    _, (ok, truncated, flipped) = _damaged_cache(tmp_path)
    out = _cli("list", "--fast", "--cache-dir", str(tmp_path))
    rows = {ln[:12]: ln for ln in out.stdout.splitlines()}
    assert "corrupt: " in rows[truncated[:12]] and " ok " in rows[flipped[:12]]
    assert "1 corrupt; sizes only (--fast), checksums not verified" in out.stdout
