"""Artifact cache: train once, load everywhere (pytest-xdist workers, CLI pre-builds, CI).

An artifact is a dict of tensors and primitive containers (params, buffers, history, metrics,
status) produced by a build function for a frozen spec dataclass. Layout under `root`:

    root/<key[:2]>/<key>.pt     torch.save of the artifact (loaded with weights_only=True)
    root/<key[:2]>/<key>.json   metadata: spec, spec_type, key, recipe_version, versions, created,
                                sha256 + size of the .pt bytes, metrics, status, summary
    root/<key[:2]>/<key>.lock   filelock.FileLock serialising builds of one key

key = sha256(canonical JSON of {spec_type, spec (dataclasses.asdict), recipe_version}) with sorted
keys, so the same spec always maps to the same entry and any field change to a new one. A field added
later with `metadata=KEY_IF_SET` enters the key only when it differs from its default, so the entries
built before it existed keep their keys (and are not retrained for a setting they never had). Writes go
to a temp file in the same directory, are fsync'ed and os.replace'd into place (.pt first, then
.json, whose presence commits the entry). On load the checksum is verified; a missing, truncated or
corrupt entry is rebuilt with a warning, never loaded.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from core.atomic import atomic_write
from core.numerics import code_path_key

__all__ = ["ArtifactCache", "RECIPE_VERSION", "KEY_IF_SET", "to_host", "spec_key", "canonical_json"]

RECIPE_VERSION = "1"  # bump when training code changes what a spec produces (invalidates all keys)
KEY_IF_SET = {"key": "if_set"}  # dataclasses.field metadata: in the key only when not the default


def to_host(value: Any) -> Any:
    """`value` with every tensor moved to host memory (dicts, lists and tuples walked): what a load
    with map_location="cpu" returns, so a CUDA-built artifact and its cached copy are the same."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_host(v) for v in value)
    return value


def _key_fields(value: Any) -> Any:
    """dataclasses.asdict, except that KEY_IF_SET fields at their default are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.metadata.get("key") == "if_set" and f.default is not dataclasses.MISSING and v == f.default:
                continue
            out[f.name] = _key_fields(v)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_key_fields(v) for v in value)
    if isinstance(value, dict):
        return {k: _key_fields(v) for k, v in value.items()}
    return value


def canonical_json(spec: Any) -> str:
    """Canonical JSON of a frozen spec dataclass (nested dataclasses/tuples included)."""
    if not (dataclasses.is_dataclass(spec) and not isinstance(spec, type)):
        raise TypeError(f"a cache spec must be a dataclass instance, got {type(spec).__name__}")
    if not type(spec).__dataclass_params__.frozen:
        raise TypeError(f"a cache spec must be a frozen dataclass; {type(spec).__name__} is not")
    # the numerical code path is part of the key: weights trained on another MKL branch or ATen kernel set
    # are other numbers (reports/code-paths.md), never silently reused
    doc = {"spec_type": type(spec).__name__, "spec": _key_fields(spec),
           "recipe_version": RECIPE_VERSION, "code_path": code_path_key(threads=False)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_key(spec: Any) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


class ArtifactCache:
    """File-system store of built artifacts keyed by spec; safe across processes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key(self, spec: Any) -> str:
        return spec_key(spec)

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        """(.pt, .json, .lock) paths of a key."""
        folder = self.root / key[:2]
        return folder / f"{key}.pt", folder / f"{key}.json", folder / f"{key}.lock"

    def has(self, spec: Any) -> bool:
        """Whether an entry exists (cheap: no checksum; `load` verifies)."""
        pt, meta, _ = self.paths(self.key(spec))
        return pt.exists() and meta.exists()

    def entry_status(self, spec: Any) -> str | None:
        """The committed entry's recorded status ("ok", "diverged", ...) read from its metadata,
        without loading the artifact (its size is checked, not its checksum: `load` and `list`
        verify); None when absent, unreadable or truncated. What a warm `fixtures build` needs."""
        pt, meta_path, _ = self.paths(self.key(spec))
        try:
            meta = json.loads(meta_path.read_text())
            size = pt.stat().st_size
        except (OSError, ValueError):
            return None
        return None if _corruption(pt, size, meta, False) else str(meta.get("status", "?"))

    def load(self, spec: Any) -> dict | None:
        """The verified artifact of spec; None if absent or corrupt (the latter with a warning)."""
        artifact, why = self._read(self.key(spec))
        if why is not None:
            self._warn_corrupt(self.key(spec), why, "ignoring it")
        return artifact

    def get_or_build(self, spec: Any, build: Callable[[], dict]) -> dict:
        """Load spec's artifact, or build it once (one builder per key across processes)."""
        key = self.key(spec)
        artifact, why = self._read(key)
        if artifact is not None:
            return artifact
        pt, _, lock = self.paths(key)
        pt.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):
            artifact, why_now = self._read(key)  # another process may have built it meanwhile
            if artifact is not None:
                return artifact
            if why or why_now:
                self._warn_corrupt(key, why or why_now)
            artifact = build()
            if not isinstance(artifact, dict):
                raise TypeError(f"build for {type(spec).__name__} must return a dict, "
                                f"got {type(artifact).__name__}")
            artifact = to_host(artifact)  # a fresh build reads as a loaded one: host memory (gpu tier)
            self._write(spec, key, artifact)
        return artifact

    def _read(self, key: str) -> tuple[dict | None, str | None]:
        """(artifact, None) when valid; (None, None) when absent; (None, why) when corrupt."""
        pt, meta_path, _ = self.paths(key)
        if not meta_path.exists() and not pt.exists():
            return None, None
        try:
            meta = json.loads(meta_path.read_text())
            blob = pt.read_bytes()
            if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
                raise ValueError(f"checksum mismatch: {len(blob)} bytes on disk, "
                                 f"{meta.get('size', '?')} written")
            return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu"), None
        except Exception as exc:  # any unreadable state is the same fact: do not trust it
            return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]

    def _warn_corrupt(self, key: str, why: str, action: str = "rebuilding") -> None:
        warnings.warn(f"corrupt cache entry {self.paths(key)[0]} ({why}); {action}",
                      stacklevel=3)

    def _write(self, spec, key: str, artifact: dict) -> None:
        """Under the key's lock: drop temp files a killed writer left, then .pt, then .json."""
        pt, meta_path, _ = self.paths(key)
        for stale in pt.parent.glob(f".{key}.*.tmp"):
            stale.unlink(missing_ok=True)
        buf = io.BytesIO()
        torch.save(artifact, buf)
        blob = buf.getvalue()
        atomic_write(pt, blob)
        meta = {"key": key, "spec_type": type(spec).__name__,
                "spec": json.loads(canonical_json(spec))["spec"],
                "summary": _summary(spec), "recipe_version": RECIPE_VERSION,
                "versions": _versions(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                    timespec="seconds"),
                "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
                "status": str(artifact.get("status", "ok")),
                "metrics": _jsonable(artifact.get("metrics", {}))}
        atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())

    def list(self, *, verify: bool = True) -> list[dict]:
        """One row per committed entry: key, summary, status, size (bytes), created, verified.

        status is the artifact's own ("ok", "diverged", ...) or "corrupt: <why>". verify reads
        every .pt and compares its sha256 with the metadata's (as `load` would); verify=False
        compares only the size, which catches a truncated file but not a flipped byte.
        """
        return [self._row(meta_path, verify) for meta_path in sorted(self.root.glob("*/*.json"))]

    def _row(self, meta_path: Path, verify: bool) -> dict:
        try:
            meta = json.loads(meta_path.read_text())
            key, summary = meta["key"], meta.get("summary", meta["spec_type"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"key": meta_path.stem, "summary": "?", "size": 0, "created": "",
                    "status": f"corrupt: metadata unreadable ({type(exc).__name__})",
                    "verified": verify}
        pt = meta_path.with_suffix(".pt")
        size = pt.stat().st_size if pt.exists() else 0
        why = _corruption(pt, size, meta, verify)
        return {"key": key, "summary": summary, "size": size, "created": meta.get("created", ""),
                "status": f"corrupt: {why}" if why else str(meta.get("status", "?")),
                "verified": verify}


def _corruption(pt: Path, size: int, meta: dict, verify: bool) -> str | None:
    """Why an entry's .pt does not match its metadata, or None (checksum only when verify)."""
    if not pt.exists():
        return ".pt file missing"
    if size != meta.get("size"):
        return f"{size} bytes on disk, {meta.get('size', '?')} written"
    if verify and _sha256(pt) != meta.get("sha256"):
        return "checksum mismatch"
    return None


def _sha256(path: Path) -> str:
    """sha256 of a file read in 1 MiB chunks (gpu-tier artifacts are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _summary(spec) -> str:
    if callable(getattr(spec, "summary", None)):
        return str(spec.summary())
    flat = {k: v for k, v in dataclasses.asdict(spec).items() if isinstance(v, (str, int, float))}
    return f"{type(spec).__name__}(" + ", ".join(f"{k}={v}" for k, v in flat.items()) + ")"


def _versions() -> dict[str, str]:
    import numpy
    return {"torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def _jsonable(obj):
    """Metrics for the metadata file: numbers, strings, lists, dicts (tensors -> lists)."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else repr(obj)
