"""The pytest plugin, run in-process on throw-away projects (pytester): records reach claims.json,
skips and errors of claim-marked tests are attributed, bad options give one line, gpu handling."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# Imported here, before any inner run: pytester drops the modules an inner run imported, and
# numpy/scipy cannot be loaded twice in one process.
import core.harness  # noqa: F401
import core.pytest_plugin  # noqa: F401
import core.report  # noqa: F401

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
from pathlib import Path
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
    assert (skipped["verdict"], skipped["outcome"]) == ("skipped", "skip")
    assert skipped["reason"] == "dataset not found: /nowhere/mnist"
    errored = got[("AV-8", "cpu", "boom")]
    assert (errored["verdict"], errored["reason"]) == ("error", "RuntimeError: probe exploded")
    gpu = got[("AV-9", "gpu", "paper scale")]
    assert (gpu["verdict"], gpu["reason"]) == ("skipped", "CUDA not available")
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


# ---------------------------------------------------------------- attribution without a marker
UNMARKED_TESTS = '''
import pytest
from core.harness import check_claim, check_control

CASES = [pytest.param("cpu", "mlp-bn", marks=pytest.mark.cpu, id="cpu-mlp-bn"),
         pytest.param("gpu", "resnet", marks=pytest.mark.gpu, id="gpu-resnet")]


@pytest.fixture
def net():
    raise RuntimeError("cache entry unreadable")


@pytest.fixture
def missing_data():
    pytest.skip("dataset cifar10 not found under /nowhere")


@pytest.fixture
def expected_to_break():
    pytest.xfail("known broken fixture")


@pytest.mark.parametrize("tier,case", CASES)
def test_av1(request, net, tier, case):
    check_claim(request, "AV-1", tier=tier, case=case, data={}, per_seed={})


@pytest.mark.parametrize("tier,case", CASES)
def test_av1_control(request, net, tier, case):
    check_control(request, "AV-1", tier=tier, case=f"control: quadratic ({case})", data={},
                  per_seed={})


@pytest.mark.toy
def test_av5(request, missing_data):
    check_claim(request, "AV-5", tier="toy", case="theorem 1", data={}, per_seed={})


@pytest.mark.toy
def test_av6(request, expected_to_break):
    s = {"c": 2}
    check_claim(request, "AV-6", tier="toy", case=f"c={s['c']}", data={}, per_seed={})


def test_helper_without_a_claim(net):
    pass
'''


def _cases(report):
    return {(c["id"], c["tier"], c["case"], c["kind"]): c for c in report["claims"]
            if c["outcome"] is not None}


def test_unmarked_claim_tests_that_end_before_recording_get_their_own_records(project):
    # Finding: such tests showed as "not_run: no test of this claim ran", their skip reasons lost.
    project.mkpydir("claims")
    (project.path / "claims" / "test_unmarked.py").write_text(UNMARKED_TESTS)
    project.runpytest_inprocess()
    report = json.loads((project.path / "reports" / "latest" / "claims.json").read_text())
    got = _cases(report)
    err = got[("AV-1", "cpu", "mlp-bn", "claim")]
    assert (err["verdict"], err["outcome"]) == ("error", "error")
    assert err["reason"] == "RuntimeError: cache entry unreadable"
    assert err["nodeid"] == "claims/test_unmarked.py::test_av1[cpu-mlp-bn]"
    gpu = got[("AV-1", "gpu", "resnet", "claim")]
    assert (gpu["verdict"], gpu["reason"]) == ("skipped", "CUDA not available")
    ctl = got[("AV-1", "cpu", "control: quadratic (mlp-bn)", "control")]
    assert ctl["verdict"] == "error"
    skip = got[("AV-5", "toy", "theorem 1", "claim")]
    assert (skip["verdict"], skip["reason"]) == ("skipped",
                                                  "dataset cifar10 not found under /nowhere")
    xf = got[("AV-6", "toy", "test_av6", "claim")]  # case built from a local: the test's name
    assert xf["verdict"] == "error" and "xfail" in xf["reason"] and "known broken" in xf["reason"]
    assert [u["nodeid"] for u in report["session"]["unattributed"]] == [
        "claims/test_unmarked.py::test_helper_without_a_claim"]
    assert report["session"]["unattributed"][0]["reason"] == "RuntimeError: cache entry unreadable"
    md = (project.path / "reports" / "latest" / "claims.md").read_text()
    assert "dataset cifar10 not found under /nowhere" in md and "no test of this claim ran" in md


# ---------------------------------------------------------------- how the session ended
INTERRUPTING_TESTS = '''
import json
from pathlib import Path
import pytest

pytestmark = pytest.mark.toy


def _record(case):
    return {"id": "AV-5", "tier": "toy", "case": case, "kind": "claim", "p": 0.001,
            "verdict": "replicated", "reason": "ok", "figures": ["figures/f.png"]}


@pytest.mark.claim("AV-5", tier="toy", case="first")
def test_first(request, figure_dir):
    (figure_dir / "f.png").write_bytes(b"png of " + request.config.getoption("--run-tag").encode())
    request.node.user_properties.append(("claim_record", json.dumps(_record("first"))))


@pytest.mark.claim("AV-6", tier="toy", case="second")
def test_second(request):
    if request.config.getoption("--run-tag") == "interrupt":
        raise KeyboardInterrupt
    if request.config.getoption("--run-tag") == "fail":
        assert False, "stop here"
'''
RUN_TAG = 'def pytest_addoption(parser):\n    parser.addoption("--run-tag", default="")\n'


def test_complete_session_is_recorded_and_swapped_in_whole(project):
    project.mkpydir("claims")
    (project.path / "claims" / "test_int.py").write_text(INTERRUPTING_TESTS)
    project.makeconftest('pytest_plugins = ["core.pytest_plugin"]\n' + RUN_TAG)
    project.runpytest_inprocess("--run-tag", "one").assert_outcomes(passed=2)
    latest = project.path / "reports" / "latest"
    report = json.loads((latest / "claims.json").read_text())
    assert (report["session"]["ended"], report["session"]["ended_reason"]) == ("complete", None)
    assert (report["session"]["tests_selected"], report["session"]["tests_run"]) == (2, 2)
    assert (latest / "claims.md").read_text().splitlines()[0].startswith(
        "# Claim report — session complete")
    assert (latest / "figures" / "f.png").read_bytes() == b"png of one"
    assert [p.name for p in (project.path / "reports").iterdir()] == ["latest", ".latest.lock"] or \
        sorted(p.name for p in (project.path / "reports").iterdir()) == [".latest.lock", "latest"]


def test_interrupted_session_never_replaces_the_complete_report(project):
    # Finding: Ctrl-C replaced the previous complete report with a partial one, unmarked.
    project.mkpydir("claims")
    (project.path / "claims" / "test_int.py").write_text(INTERRUPTING_TESTS)
    project.makeconftest('pytest_plugins = ["core.pytest_plugin"]\n' + RUN_TAG)
    project.runpytest_inprocess("--run-tag", "one").assert_outcomes(passed=2)
    latest = project.path / "reports" / "latest"
    before = {p.name: p.read_bytes() for p in latest.glob("claims.*")}
    result = project.runpytest_inprocess("--run-tag", "interrupt", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert {p.name: p.read_bytes() for p in latest.glob("claims.*")} == before
    assert (latest / "figures" / "f.png").read_bytes() == b"png of one"
    partial = project.path / "reports" / "latest.interrupted"
    report = json.loads((partial / "claims.json").read_text())
    assert report["session"]["ended"] == "interrupted"
    assert report["session"]["ended_reason"] == "KeyboardInterrupt"
    assert (partial / "figures" / "f.png").read_bytes() == b"png of interrupt"
    first = (partial / "claims.md").read_text().splitlines()[0]
    assert first.startswith("# Claim report — session interrupted: KeyboardInterrupt")
    assert "<h1 class='ended-interrupted'>Claim report — session interrupted" in \
        (partial / "claims.html").read_text()
    result.stdout.fnmatch_lines(["*session interrupted (KeyboardInterrupt): partial report*"])
    assert not list((project.path / "reports").glob(".latest.*.partial"))


def test_stopping_early_with_x_is_an_interrupted_session(project):
    project.mkpydir("claims")
    (project.path / "claims" / "test_int.py").write_text(INTERRUPTING_TESTS)
    project.makeconftest('pytest_plugins = ["core.pytest_plugin"]\n' + RUN_TAG)
    project.runpytest_inprocess("--run-tag", "fail", "-x", "-p", "no:randomly")
    report = json.loads((project.path / "reports" / "latest.interrupted" / "claims.json")
                        .read_text())
    assert report["session"]["ended"] == "interrupted"
    assert "stopping after 1 failures" in report["session"]["ended_reason"]
    assert not (project.path / "reports" / "latest").exists()


def test_sessions_sharing_a_reports_dir_never_mix_files(project):
    # Finding: two sessions could leave claims.json from one and claims.md from the other.
    from core import report as rep
    final = project.path / "reports" / "latest"
    stagings = [project.path / "reports" / f".latest.s{i}.partial" for i in range(2)]
    for i, staging in enumerate(stagings):
        (staging / "figures").mkdir(parents=True)
        (staging / "figures" / f"only_{i}.png").write_bytes(b"x")
    reports = [rep.build_report([], None, {"date_utc": f"session {i}", "ended": "complete"})
               for i in range(2)]
    import threading
    threads = [threading.Thread(target=rep.publish_reports, args=(r, s, final))
               for r, s in zip(reports, stagings)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    date = json.loads((final / "claims.json").read_text())["session"]["date_utc"]
    i = int(date.split()[-1])
    assert f"| date (UTC) | {date} |" in (final / "claims.md").read_text()
    assert date in (final / "claims.html").read_text()
    assert [p.name for p in (final / "figures").iterdir()] == [f"only_{i}.png"]
    assert not any(s.exists() for s in stagings)


# ---------------------------------------------------------------- bad directories, bad registry
def _deny_writes(monkeypatch, path):
    """Make `path` unwritable: chmod for real, and (root ignores modes) deny os.access too."""
    import os
    path.chmod(0o555)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
        os.path.abspath(p) == str(path) and mode & os.W_OK) else real(p, mode, *a, **k))


def test_existing_unwritable_cache_dir_is_one_usage_error_line(project, monkeypatch):
    # Finding: an existing, unwritable --cache-dir gave a ~40-line PermissionError traceback.
    cache = project.path / "ro-cache"
    cache.mkdir()
    _deny_writes(monkeypatch, cache)
    project.makepyfile(test_x="def test_uses_cache(cache_dir):\n"
                              "    (cache_dir / 'f').write_text('x')\n")
    result = project.runpytest_inprocess("--cache-dir", str(cache))
    cache.chmod(0o755)
    lines = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(lines) == 1, result.errlines
    assert "--cache-dir" in lines[0] and str(cache) in lines[0] and "not writable" in lines[0]


def test_unwritable_reports_dir_and_unreadable_data_dir_are_one_line_each(project, monkeypatch):
    reports = project.path / "ro-reports"
    reports.mkdir()
    _deny_writes(monkeypatch, reports)
    result = project.runpytest_inprocess("--reports-dir", str(reports))
    reports.chmod(0o755)
    lines = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(lines) == 1
    assert "--reports-dir" in lines[0] and "not writable" in lines[0]
    nested = project.path / "ro-parent" / "latest"
    nested.mkdir(parents=True)
    _deny_writes(monkeypatch, nested.parent)
    result = project.runpytest_inprocess("--reports-dir", str(nested))
    nested.parent.chmod(0o755)
    lines = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(lines) == 1
    assert "--reports-dir" in lines[0] and "its parent" in lines[0] and "staged beside" in lines[0]
    (project.path / "data-file").write_text("x")
    result = project.runpytest_inprocess("--data-dir", "data-file")
    lines = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(lines) == 1
    assert "--data-dir" in lines[0] and "not a directory" in lines[0]


MALFORMED_REGISTRY_TEST = '''
from pathlib import Path
from core.registry import load_registry

REG = load_registry(Path(__file__).parent / "registry.toml")  # as claim modules do at import


def test_uses_registry():
    pass
'''


def test_malformed_registry_is_one_line_before_collection(project):
    # Finding: the right message (file, claim, field) but inside a collection traceback.
    from core.registry import DEFAULT_PATH
    project.mkpydir("claims")
    good = Path(DEFAULT_PATH).read_text()
    bad = good.replace('paper = "he2019"', 'paper = "he2020"', 1)
    assert bad != good
    (project.path / "claims" / "registry.toml").write_text(bad)
    (project.path / "claims" / "test_reg.py").write_text(MALFORMED_REGISTRY_TEST)
    result = project.runpytest_inprocess()
    lines = [ln for ln in result.errlines if ln.strip()]
    assert result.ret == pytest.ExitCode.USAGE_ERROR and len(lines) == 1, result.errlines
    assert "registry.toml" in lines[0] and "'AV-1'" in lines[0] and "field 'paper'" in lines[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


XDIST_TESTS = '''
import json
import pytest

pytestmark = pytest.mark.toy


@pytest.mark.parametrize("i", [0, 1, 2, 3])
def test_draws(request, figure_dir, i):
    (figure_dir / f"f{i}.png").write_bytes(b"x")
    rec = {"id": "AV-5", "tier": "toy", "case": f"c{i}", "kind": "claim", "p": 0.001,
           "verdict": "replicated", "reason": "ok", "figures": [f"figures/f{i}.png"]}
    request.node.user_properties.append(("claim_record", json.dumps(rec)))
'''


def test_xdist_workers_draw_into_the_controllers_staging_dir(project, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(core.report.__file__).resolve().parents[1]))
    project.mkpydir("claims")
    (project.path / "claims" / "test_x.py").write_text(XDIST_TESTS)
    project.runpytest_subprocess("-n", "2", "-p", "xdist").assert_outcomes(passed=4)
    latest = project.path / "reports" / "latest"
    report = json.loads((latest / "claims.json").read_text())
    assert sorted(c["case"] for c in report["claims"] if c["outcome"]) == ["c0", "c1", "c2", "c3"]
    assert sorted(p.name for p in (latest / "figures").iterdir()) == [f"f{i}.png" for i in range(4)]
    assert not list((project.path / "reports").glob(".latest.*.partial"))


def test_collection_error_is_a_failed_session_reported_beside(project):
    project.mkpydir("claims")
    (project.path / "claims" / "test_ok.py").write_text(CLAIM_TESTS)
    (project.path / "claims" / "test_broken.py").write_text("import no_such_module_here\n")
    (project.path / "claims" / "test_skipped.py").write_text(
        "import pytest\npytest.skip('needs scipy 9', allow_module_level=True)\n")
    result = project.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert not (project.path / "reports" / "latest").exists()
    report = json.loads((project.path / "reports" / "latest.failed" / "claims.json").read_text())
    assert report["session"]["ended"] == "failed"
    assert report["session"]["ended_reason"] == "1 error(s) during collection"
    lost = {u["nodeid"]: u for u in report["session"]["unattributed"]}
    assert lost["claims/test_broken.py"]["outcome"] == "error"
    assert "no_such_module_here" in lost["claims/test_broken.py"]["reason"]
    assert (lost["claims/test_skipped.py"]["outcome"], lost["claims/test_skipped.py"]["reason"]) \
        == ("skip", "needs scipy 9")
