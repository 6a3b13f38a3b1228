"""The pytest plugin, run in-process on throw-away projects (pytester): records reach claims.json,
skips and errors of claim-marked tests are attributed, bad options give one line, gpu handling."""
from __future__ import annotations

import json

import pytest
import torch

import core.pytest_plugin  # noqa: F401  (importable before the inner runs load it by name)

pytest_plugins = ["pytester"]

INI = """[pytest]
addopts = --strict-markers -p no:cacheprovider -p no:hypothesispytest
filterwarnings =
    ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning
markers =
    toy: toy tier
    cpu: cpu tier
    gpu: gpu tier
"""

CLAIM_TESTS = '''
import json
import pytest

pytestmark = pytest.mark.toy


def _record(cid, case, p):
    return {"id": cid, "tier": "toy", "case": case, "kind": "claim", "estimate": 0.9,
            "ci": [0.8, 1.0], "p": p, "alpha": 0.01, "n_used": 3, "per_seed": {"x": [1.0, 2.0]},
            "verdict": "replicated", "reason": "0.9 [0.8, 1] > 0.5 -> replicated", "figures": [],
            "parts": [], "supporting": [], "tables": {}, "wall_s": 0.1}


@pytest.mark.claim("AV-1", tier="toy", case="recorded")
def test_recorded(request):
    request.node.user_properties.append(("claim_record", json.dumps(_record("AV-1", "recorded", 0.001))))


@pytest.mark.claim("AV-3", tier="cpu", case="no data")
def test_skipped():
    pytest.skip("dataset not found: /nowhere/mnist")


@pytest.mark.claim("AV-8", tier="cpu", case="boom")
def test_errors():
    raise RuntimeError("probe exploded\\nsecond line")


@pytest.mark.gpu
@pytest.mark.claim("AV-9", tier="gpu", case="paper scale")
def test_gpu(device):
    assert device == "cuda"
'''


@pytest.fixture
def project(pytester, monkeypatch):
    """A throw-away project that loads the plugin; CUDA reported absent unless a test says so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CLAIMS_CACHE_DIR", raising=False)
    monkeypatch.delenv("CLAIMS_DATA_DIR", raising=False)
    pytester.makefile(".ini", pytest=INI)
    pytester.makeconftest('pytest_plugins = ["core.pytest_plugin"]\n')
    return pytester


def test_records_skips_and_errors_reach_claims_json(project):
    project.mkpydir("claims")
    (project.path / "claims" / "test_fake.py").write_text(CLAIM_TESTS)
    result = project.runpytest_inprocess("-rs")
    result.assert_outcomes(passed=1, skipped=2, failed=1)
    report = json.loads((project.path / "reports" / "latest" / "claims.json").read_text())
    got = {(c["id"], c["tier"], c["case"]): c for c in report["claims"]}
    assert got[("AV-1", "toy", "recorded")]["verdict"] == "replicated"
    assert got[("AV-1", "toy", "recorded")]["outcome"] == "pass"
    skipped = got[("AV-3", "cpu", "no data")]
    assert (skipped["verdict"], skipped["outcome"]) == ("not_run", "skip")
    assert skipped["reason"] == "dataset not found: /nowhere/mnist"
    errored = got[("AV-8", "cpu", "boom")]
    assert (errored["verdict"], errored["reason"]) == ("error", "RuntimeError: probe exploded")
    gpu = got[("AV-9", "gpu", "paper scale")]
    assert (gpu["verdict"], gpu["reason"]) == ("not_run", "CUDA not available")
    if report["session"]["registry_sha256"]:      # the real registry loaded: every claim listed
        assert len({c["id"] for c in report["claims"]}) == 30
    result.stdout.fnmatch_lines(["*claim verdicts*", "AV-1 *toy *recorded *replicated*",
                                 "report: *claims.json", "*CUDA not available*"])
    assert (project.path / "reports" / "latest" / "claims.html").is_file()


def test_reports_dir_pointing_at_a_file_is_one_usage_error_line(project):
    (project.path / "afile").write_text("x")
    result = project.runpytest_inprocess("--reports-dir", "afile")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [ln for ln in result.errlines if ln.strip()]
    assert len(lines) == 1 and "--reports-dir" in lines[0] and "not a directory" in lines[0]
    result = project.runpytest_inprocess("--cache-dir", "afile/sub")
    lines = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(lines) == 1
    assert "--cache-dir" in lines[0] and "cannot be created" in lines[0]


GPU_TESTS = '''
import pytest

@pytest.mark.gpu
def test_on_gpu(device, figure_dir, cache_dir):
    assert device == "cuda" and figure_dir.is_dir() and cache_dir.is_dir()

def test_on_cpu(device):
    assert device == "cpu"
'''


def test_gpu_tests_skip_without_cuda_and_get_cuda_with_it(project, monkeypatch):
    project.makepyfile(test_dev=GPU_TESTS)
    result = project.runpytest_inprocess("-m", "gpu", "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["*CUDA not available*"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    project.runpytest_inprocess("--cache-dir", "c").assert_outcomes(passed=2)
    assert not (project.path / "reports" / "latest" / "claims.json").exists()  # no claim test ran


def test_empty_gpu_selection_exits_zero(project):
    project.makepyfile(test_dev="def test_cpu_only():\n    pass\n")
    result = project.runpytest_inprocess("-m", "gpu")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*no gpu cases were selected*"])
    result = project.runpytest_inprocess("-m", "not gpu", "-k", "nothing_matches")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
