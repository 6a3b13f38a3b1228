"""The probe memo of fixtures/trained.py (core/memo.py underneath): a survey result round-trips, a
probe is computed once across sessions, and recomputed when the registry, the probe code or the case's
artifacts change; corrupt entries are rebuilt with a warning."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from core.landscape.probes import SurveyResult
from core.memo import DiskMemo, decode, encode
from fixtures.trained import TrainedEnsemble


def _net(tmp_path, code=("core/memo.py",), registry_text="a = 1\n", inputs=("a", "b")) -> TrainedEnsemble:
    registry = tmp_path / "registry.toml"
    registry.write_text(registry_text)
    x = torch.zeros(2, 3)
    y = torch.zeros(2, dtype=torch.long)
    net = TrainedEnsemble("cpu", "case", torch.nn.Linear(3, 2), None, x, y, x, y, seeds=[])
    net.store = DiskMemo(tmp_path / "cache", code=code, namespace="probes", inputs=inputs,
                         registry_path=registry)
    return net


def test_survey_result_round_trips():
    fields = {f.name: torch.arange(3.0) + i for i, f in enumerate(dataclasses.fields(SurveyResult))}
    fields["directions"] = {"w": torch.ones(2, 3, dtype=torch.float64)}
    back = decode(encode(SurveyResult(**fields)))
    assert isinstance(back, SurveyResult) and back.directions["w"].dtype == torch.float64
    assert torch.equal(back.directions["w"], fields["directions"]["w"])


def test_probe_computed_once_across_sessions(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"v": torch.tensor([1.0, 2.0])}
    first = _net(tmp_path).memo(("p", 1), compute)
    second = _net(tmp_path).memo(("p", 1), compute)                  # a new session: loads from disk
    assert len(calls) == 1 and torch.equal(first["v"], second["v"])
    _net(tmp_path).memo(("p", 2), compute)                           # another probe key
    _net(tmp_path, code=("core/cache.py",)).memo(("p", 1), compute)  # probe code edited
    _net(tmp_path, registry_text="a = 2\n").memo(("p", 1), compute)  # registry edited
    _net(tmp_path, inputs=("a", "c")).memo(("p", 1), compute)        # a retrained artifact
    assert len(calls) == 5


def test_without_a_store_the_memo_is_this_session_only():
    x, y = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    net = TrainedEnsemble("cpu", "case", torch.nn.Linear(3, 2), None, x, y, x, y, seeds=[])
    calls = []
    assert net.memo(("p",), lambda: calls.append(1) or 7) == net.memo(("p",), lambda: calls.append(1) or 8) == 7
    assert calls == [1]


def test_corrupt_probe_entry_is_recomputed_with_a_warning(tmp_path):
    _net(tmp_path).memo(("p", 1), lambda: 1.5)
    for pt in (tmp_path / "cache" / "probes").glob("*/*.pt"):
        pt.write_bytes(pt.read_bytes()[:10])
    with pytest.warns(UserWarning, match="corrupt cache entry"):
        assert _net(tmp_path).memo(("p", 1), lambda: 2.5) == 2.5


def test_a_lockstep_ensemble_becomes_seed_states():
    """fixtures.trained.from_ensemble: member s's final state and checkpoints are its slices of the stacked
    tensors; a diverged member keeps its status and no weights (never used by a claim)."""
    from core.data import Dataset, Split
    from fixtures.trained import from_ensemble
    w = torch.arange(12.0).view(2, 3, 2)  # [S = 2, 3, 2]
    at = torch.stack([w, w + 100], 1)    # [S, C = 2, 3, 2]
    art = {"seed_status": ["ok", "diverged at step 3: non-finite parameters (w)"], "steps": torch.tensor([0, 5]),
           "final": {"w": w}, "params_at": {"w": at}}
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
    data = Dataset("tiny", train=Split(x, y), test=Split(x, y), val=None, num_classes=2, input_shape=(3,))
    net = from_ensemble("cpu", "tiny", art, torch.nn.Linear(3, 2), data, seeds=(7, 8))
    assert [s.seed for s in net.seeds] == [7, 8] and [s.ok for s in net.seeds] == [True, False]
    assert torch.equal(net.seeds[0].params("final")["w"], w[0])
    assert torch.equal(net.seeds[0].checkpoints["final"][5][0]["w"], w[0] + 100)
    with pytest.raises(KeyError, match="seed 8 has no 'final' state"):
        net.seeds[1].state("final")
    claim = type("C", (), {"seeds": {"cpu": 2}})()
    assert net.usable(claim, "cpu") == [0] and net.status_rows()[1]["status"].startswith("diverged")
