"""core/memo.py: values round-trip exactly, compute runs once across sessions, and every input of the key
(registry file, code, numerical code path, caller's key) recomputes when it changes."""
import dataclasses

import numpy as np
import pytest
import torch

from core import memo as M


@dataclasses.dataclass(frozen=True)
class Probe:
    values: torch.Tensor
    flags: np.ndarray
    label: str


def _value():
    return {"a": torch.arange(5.0), "b": np.array([True, False]), ("k", 2): [1, 2.5, None],
            "p": Probe(torch.ones(2, 3), np.arange(3), "x"), "t": (np.float64(0.5), "s")}


def test_encode_decode_round_trip_is_exact():
    out = M.decode(M.encode(_value()))
    ref = _value()
    assert torch.equal(out["a"], ref["a"]) and np.array_equal(out["b"], ref["b"]) and out["b"].dtype == bool
    assert out[("k", 2)] == [1, 2.5, None] and out["t"] == (0.5, "s")
    assert isinstance(out["p"], Probe) and torch.equal(out["p"].values, ref["p"].values) and out["p"].label == "x"
    with pytest.raises(TypeError, match="memo: cannot store a object"):
        M.encode(object())


def _memo(tmp_path, registry, code=("core/memo.py",)):
    return M.DiskMemo(tmp_path / "cache", code=code, namespace="toy", registry_path=registry)


def test_compute_runs_once_across_sessions_and_recomputes_on_any_key_change(tmp_path, monkeypatch):
    registry = tmp_path / "registry.toml"
    registry.write_text("a = 1\n")
    calls = []

    def compute():
        calls.append(1)
        return _value()
    first = _memo(tmp_path, registry)(("LS-4", "wedge"), compute)
    again = _memo(tmp_path, registry)(("LS-4", "wedge"), compute)          # a new session: from disk
    assert len(calls) == 1 and torch.equal(first["a"], again["a"])
    _memo(tmp_path, registry)(("LS-4", "bowl"), compute)                   # another key
    registry.write_text("a = 2\n")
    _memo(tmp_path, registry)(("LS-4", "wedge"), compute)                  # a registry edit
    _memo(tmp_path, registry, code=("core/cache.py",))(("LS-4", "wedge"), compute)   # other code
    monkeypatch.setattr(M, "code_path_key", lambda: "mkl=AUTO;aten=AVX512;threads=2")
    _memo(tmp_path, registry)(("LS-4", "wedge"), compute)                  # another numerical code path
    assert len(calls) == 5


def test_a_scoped_memo_recomputes_on_its_claims_only(tmp_path):
    """registry_scope: an edit of another paper's claim (or of LS-10 under scope LS-1) keeps the value;
    an edit of a scoped claim, or of meta, recomputes; a scope naming no claim is an error."""
    registry = tmp_path / "registry.toml"
    entry = lambda cid, v: f'[[claim]]\nid = "{cid}"\nx = {v}\n'  # noqa: E731
    write = lambda av, ls1, ls10, meta=1: registry.write_text(  # noqa: E731
        f"[meta]\nversion = {meta}\n" + entry("AV-1", av) + entry("LS-1", ls1) + entry("LS-10", ls10))
    calls = []
    get = lambda scope: M.DiskMemo(tmp_path / "cache", code=("core/memo.py",), namespace="toy",  # noqa: E731
                                   registry_path=registry, registry_scope=scope)(("k",), lambda: calls.append(1) or 1)
    write(1, 1, 1)
    get(("AV-",)), get(("LS-1",))
    write(1, 1, 2)                      # LS-10 edited: neither scope reads it
    get(("AV-",)), get(("LS-1",))
    assert len(calls) == 2
    write(2, 1, 2)                      # AV-1 edited: the AV-scoped value only
    get(("AV-",)), get(("LS-1",))
    assert len(calls) == 3
    write(2, 1, 2, meta=2)              # meta counts for every scope
    get(("LS-1",))
    assert len(calls) == 4
    with pytest.raises(ValueError, match=r"registry scope \('SD-',\): no claim of"):
        get(("SD-",))


def test_a_corrupt_entry_is_rebuilt_not_loaded(tmp_path):
    registry = tmp_path / "registry.toml"
    registry.write_text("a = 1\n")
    _memo(tmp_path, registry)(("x",), lambda: {"v": torch.arange(3.0)})
    (pt,) = (tmp_path / "cache" / "toy").rglob("*.pt")
    pt.write_bytes(pt.read_bytes()[:-7])                                   # truncated
    calls = []
    out = _memo(tmp_path, registry)(("x",), lambda: calls.append(1) or {"v": torch.arange(3.0)})
    assert calls == [1] and torch.equal(out["v"], torch.arange(3.0))


def test_session_only_values_never_touch_the_disk(tmp_path):
    registry = tmp_path / "registry.toml"
    registry.write_text("a = 1\n")
    memo = _memo(tmp_path, registry)
    model = torch.nn.Linear(2, 2)
    assert memo(("model",), lambda: model, disk=False) is model
    assert not (tmp_path / "cache" / "toy").exists() or not any((tmp_path / "cache" / "toy").rglob("*.pt"))
