"""The on-disk probe memo of fixtures/av_probes.py: lossless round trip, one computation across
sessions, recomputation when the registry or code hash changes, corrupt entries rebuilt."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from core.cache import ArtifactCache
from core.landscape.probes import SurveyResult
from fixtures.av_probes import AvNet, _decode, _encode


def _net(tmp_path, code="c1", registry="r1") -> AvNet:
    x = torch.zeros(2, 3)
    y = torch.zeros(2, dtype=torch.long)
    net = AvNet("cpu", "case", torch.nn.Linear(3, 2), None, x, y, x, y, seeds=[])
    net.disk = ArtifactCache(tmp_path / "probes")
    net.disk_key = dict(tier="cpu", case="case", artifacts=("a", "b"), registry_sha256=registry,
                        code_sha256=code)
    return net


def test_encode_decode_round_trip_keeps_types_and_values():
    fields = {f.name: torch.arange(3.0) + i for i, f in enumerate(dataclasses.fields(SurveyResult))}
    fields["directions"] = {"w": torch.ones(2, 3, dtype=torch.float64)}
    value = (SurveyResult(**fields), [1, 2.5, "x", None, True], {"k": torch.tensor([1, 2])})
    back = _decode(_encode(value))
    assert isinstance(back, tuple) and isinstance(back[0], SurveyResult) and isinstance(back[1], list)
    assert torch.equal(back[0].directions["w"], fields["directions"]["w"])
    assert back[0].directions["w"].dtype == torch.float64 and back[1] == [1, 2.5, "x", None, True]
    assert torch.equal(back[2]["k"], torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="cannot store a object"):
        _encode(object())


def test_probe_computed_once_across_sessions(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"v": torch.tensor([1.0, 2.0])}
    first = _net(tmp_path).memo(("p", 1), compute)
    second = _net(tmp_path).memo(("p", 1), compute)   # a new session: loads from disk
    assert len(calls) == 1 and torch.equal(first["v"], second["v"])
    _net(tmp_path).memo(("p", 2), compute)            # another probe key
    _net(tmp_path, code="c2").memo(("p", 1), compute)  # probe code edited
    _net(tmp_path, registry="r2").memo(("p", 1), compute)  # registry edited
    assert len(calls) == 4


def test_corrupt_probe_entry_is_recomputed_with_a_warning(tmp_path):
    _net(tmp_path).memo(("p", 1), lambda: 1.5)
    for pt in (tmp_path / "probes").glob("*/*.pt"):
        pt.write_bytes(pt.read_bytes()[:10])
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert _net(tmp_path).memo(("p", 1), lambda: 2.5) == 2.5
