"""A memo for computed results (landscape probes, toy-landscape simulations), in the session and on disk.

A claim test and its control often need the same computation, and a warm re-run needs none. A value is
stored in the artifact cache (`core/cache.py`: atomic, checksummed, a corrupt entry is rebuilt, one
builder per key across processes) under a `MemoSpec`: what it was computed from (`inputs`, e.g. the
training artifacts' keys), the registry file's hash (any settings change recomputes), the hash of the
code that computes it, and the numerical code path in force (MKL branch, ATen kernels, threads:
numbers computed on another path are never reused — reports/code-paths.md). The registry part is the
whole file by default, or (`registry_scope`) only the claims the value reads: the Asymmetric-Valleys
probes are keyed by the AV entries, so fixing a Sharpest-Directions setting does not recompute them.

    memo = DiskMemo(root, code=("core/toys/wedge.py", "claims/test_ls_toy.py"), namespace="toy")
    value = memo(("LS-4", "wedge"), lambda: expensive())

Values are what `encode` can store with `torch.load(weights_only=True)`: tensors (their device is
remembered), numpy arrays, dataclasses of those, dicts, lists, tuples and plain scalars.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from core.cache import ArtifactCache
from core.numerics import code_path_key

__all__ = ["MemoSpec", "DiskMemo", "encode", "decode", "code_sha256", "REPO"]

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class MemoSpec:
    """Cache key of one memoised value."""

    namespace: str               # "probes", "toy", ...
    inputs: tuple[str, ...]      # what it was computed from (artifact keys, case names)
    registry_sha256: str         # the whole registry file, or the scoped claims' entries (`registry_digest`)
    code_sha256: str             # the files whose code decides the value
    code_path: str               # MKL branch / ATen capability / threads in force
    key: str                     # repr of the caller's key, e.g. ('survey', 3, 'paper')


def registry_digest(path: Path, scope: tuple[str, ...] | None) -> str:
    """sha256 of the registry file's bytes (scope None), or of its `meta` table and the claims `scope`
    names, as canonical JSON of the parsed entries. A scope item is a claim id ("LS-1": that claim, not
    LS-10) or a prefix ending in "-" ("AV-": every AV claim); scope () means the value reads no setting
    and only `meta` counts."""
    if scope is None:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    import json
    import tomllib
    reg = tomllib.loads(path.read_text())
    def named(cid: str) -> bool:
        return any(cid == item or (item.endswith("-") and cid.startswith(item)) for item in scope)
    part = {"meta": reg.get("meta", {}), "claims": [c for c in reg.get("claim", []) if named(str(c.get("id", "")))]}
    if scope and not part["claims"]:
        raise ValueError(f"registry scope {scope}: no claim of {path} matches")
    return "scoped:" + hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()


def code_sha256(paths: Iterable[str], root: Path = REPO) -> str:
    """sha256 over the named files (path and bytes), in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode())
        h.update((root / p).read_bytes())
    return h.hexdigest()


class DiskMemo:
    """memo(key, compute) -> value: computed once per session, and once across sessions when `root`."""

    def __init__(self, root: Path | str | None, *, code: Iterable[str], namespace: str,
                 inputs: Iterable[str] = (), registry_path: Path | None = None,
                 registry_scope: Iterable[str] | None = None):
        from core.registry import load_registry
        self.disk = None if root is None else ArtifactCache(Path(root) / namespace)
        reg = Path(registry_path) if registry_path else load_registry().path
        self._spec = dict(namespace=namespace, inputs=tuple(inputs),
                          registry_sha256=registry_digest(reg, None if registry_scope is None else tuple(registry_scope)),
                          code_sha256=code_sha256(code))
        self._session: dict = {}

    def __call__(self, key, compute: Callable[[], Any], *, disk: bool = True):
        """disk=False: this session only (values the cache cannot store, such as a model)."""
        if key not in self._session:
            if self.disk is None or not disk:
                self._session[key] = compute()
            else:
                spec = MemoSpec(key=repr(key), code_path=code_path_key(), **self._spec)
                art = self.disk.get_or_build(spec, lambda: {"status": "ok", "value": encode(compute())})
                self._session[key] = decode(art["value"])
        return self._session[key]


def encode(value):
    """A value as the cache stores it: dataclasses become dicts tagged with their class, tensors
    remember their device (stored on the CPU), numpy arrays become tagged tensors."""
    if isinstance(value, Tensor):
        return {"__tensor__": value.detach().cpu(), "device": str(value.device)}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.array(value, order="C"))}  # a copy: read-only arrays too
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {"__dict__": [(encode(k), encode(v)) for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__seq__": [encode(v) for v in value], "tuple": isinstance(value, tuple)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"memo: cannot store a {type(value).__name__}")


def decode(value):
    if isinstance(value, dict):
        if "__tensor__" in value:
            dev = value["device"]
            return value["__tensor__"] if dev == "cpu" else value["__tensor__"].to(dev)
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__dataclass__" in value:
            module, name = value["__dataclass__"].split(":")
            cls = getattr(importlib.import_module(module), name)
            return cls(**{k: decode(v) for k, v in value["fields"].items()})
        if "__dict__" in value:
            return {decode(k): decode(v) for k, v in value["__dict__"]}
        if "__seq__" in value:
            items = [decode(v) for v in value["__seq__"]]
            return tuple(items) if value["tuple"] else items
    return value
