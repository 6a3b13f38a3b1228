"""The suite's pytest plugin (loaded by the root conftest: `pytest_plugins = ["core.pytest_plugin"]`).

- Options: --reports-dir, --data-dir (env CLAIMS_DATA_DIR), --cache-dir (env CLAIMS_CACHE_DIR),
  --allow-download; resolved to absolute paths once, at configure time (bad values -> one
  UsageError line), and written back into `config.option` so every reader sees the same path.
- Fixtures: reports_dir, figure_dir, data_dir, cache_dir, allow_download (session), device.
- Markers: `claim(id, tier=..., case=...)` attributes a test to a claim even when it is skipped
  or errors before the harness records anything; gpu-marked tests skip with "CUDA not available".
- Records: the harness appends ("claim_record", json) to `user_properties`, which pytest-xdist
  carries to the controller; `pytest_runtest_logreport` collects them with the test outcome, and
  at session end the controller (never an xdist worker) writes the reports with `core.report`
  when any test under claims/ ran, then prints a compact verdict table.
- `-m gpu` that deselects everything exits 0 (a CPU machine has nothing to run), not pytest's 5.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["RECORD_KEY", "MARKER_KEY", "SuitePaths", "suite_paths"]

RECORD_KEY = "claim_record"   # user_properties name of a harness record (contract)
MARKER_KEY = "claim_marker"   # user_properties name of the claim marker's attribution
_TIER_MARKERS = ("toy", "cpu", "gpu")


@dataclass(frozen=True)
class SuitePaths:
    reports_dir: Path      # where claims.json/.md/.html and figures/ go
    data_dir: Path         # datasets (torchvision layout)
    cache_dir: Path        # trained-fixture artifact cache
    allow_download: bool   # may torchvision download missing datasets


_PATHS = pytest.StashKey[SuitePaths]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims", "loss-landscape claim suite")
    group.addoption("--reports-dir", dest="reports_dir", default=None, metavar="DIR",
                    help="where claim reports are written (default: <rootdir>/reports/latest; "
                         "relative paths are taken from the current directory)")
    group.addoption("--data-dir", dest="data_dir", default=None, metavar="DIR",
                    help="datasets directory (default: $CLAIMS_DATA_DIR or ~/data)")
    group.addoption("--cache-dir", dest="cache_dir", default=None, metavar="DIR",
                    help="fixture cache (default: $CLAIMS_CACHE_DIR or <rootdir>/.fixture-cache)")
    group.addoption("--allow-download", dest="allow_download", action="store_true", default=False,
                    help="let torchvision download datasets missing from --data-dir")
    group.addoption("--torch-threads", dest="torch_threads", default=1, type=int, metavar="N",
                    help="torch intra-op CPU threads for the session (default 1: the cpu-tier nets "
                         "are small, and extra threads contend on a 2-core machine)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "claim(id, tier=None, case=None): attributes the test to a registry claim so "
                   "the report lists it even when it is skipped or errors")
    paths = _resolve_paths(config)
    config.stash[_PATHS] = paths
    for name in ("reports_dir", "data_dir", "cache_dir"):
        setattr(config.option, name, str(getattr(paths, name)))
    config.pluginmanager.register(_ClaimSession(config), "claims-session")
    _set_threads(config.option.torch_threads)


def _set_threads(n: int) -> None:
    # Small tensors on a 2-core machine: two intra-op threads measured 1.5-10x slower than one
    # whenever the other core is busy (builds, scans and toy optimisers alike).
    if n < 1:
        raise pytest.UsageError(f"--torch-threads {n}: must be a positive integer")
    import torch
    torch.set_num_threads(n)


def suite_paths(config: pytest.Config) -> SuitePaths:
    """The resolved, validated paths of this session (for fixtures built outside this module)."""
    return config.stash[_PATHS]


def _resolve_paths(config: pytest.Config) -> SuitePaths:
    root, here = Path(config.rootpath), Path(config.invocation_params.dir)
    opt = config.option

    def pick(given, env, default):
        raw = given if given is not None else os.environ.get(env) if env else None
        if raw in (None, ""):
            return default
        p = Path(raw).expanduser()
        return p if p.is_absolute() else here / p

    reports = pick(opt.reports_dir, None, root / "reports" / "latest")
    data = pick(opt.data_dir, "CLAIMS_DATA_DIR", Path.home() / "data")
    cache = pick(opt.cache_dir, "CLAIMS_CACHE_DIR", root / ".fixture-cache")
    _check_dir("--reports-dir", reports)
    _check_dir("--cache-dir (or $CLAIMS_CACHE_DIR)", cache)
    if data.exists() and not data.is_dir():
        raise pytest.UsageError(f"--data-dir (or $CLAIMS_DATA_DIR) {data} exists and is not a "
                                "directory; give the directory that holds the datasets")
    return SuitePaths(reports.resolve(), data.resolve(), cache.resolve(), bool(opt.allow_download))


def _check_dir(option: str, path: Path) -> None:
    """`path` is a directory or can be made one (its nearest existing ancestor is a writable dir);
    checked without creating anything, so `pytest core/tests` leaves no directories behind."""
    if path.exists():
        if not path.is_dir():
            raise pytest.UsageError(f"{option} {path} exists and is not a directory; "
                                    "give a directory (it is created if missing)")
        return
    anc = next(a for a in path.parents if a.exists())
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        what = "is not a directory" if not anc.is_dir() else "is not writable"
        raise pytest.UsageError(f"{option} {path} cannot be created: {anc} {what}")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def reports_dir(pytestconfig) -> Path:
    path = suite_paths(pytestconfig).reports_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def figure_dir(reports_dir) -> Path:
    path = reports_dir / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def data_dir(pytestconfig) -> Path:
    return suite_paths(pytestconfig).data_dir


@pytest.fixture(scope="session")
def cache_dir(pytestconfig) -> Path:
    path = suite_paths(pytestconfig).cache_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def allow_download(pytestconfig) -> bool:
    return suite_paths(pytestconfig).allow_download


@pytest.fixture
def device(request) -> str:
    """"cuda" for a gpu-marked test on a machine with CUDA, else "cpu"."""
    return "cuda" if request.node.get_closest_marker("gpu") and _cuda_available() else "cpu"


def _cuda_available() -> bool:
    import torch  # lazily: `pytest core/tests -k report` should not pay for importing torch
    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------- the session's hooks
class _ClaimSession:
    """Per-session state (one instance per pytest config, so in-process pytester runs and xdist
    workers never share it): records and outcomes by test node id, in arrival order."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.tests: dict[str, dict] = {}
        self.deselected = 0
        self.ran_claims = False
        self.written: dict[str, Path] = {}
        self.report: dict | None = None
        self.empty_gpu_selection = False

    @pytest.hookimpl(trylast=True)  # after -m/-k deselection: only the kept items are touched
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        gpu_items = [it for it in items if it.get_closest_marker("gpu")]
        if gpu_items and not _cuda_available():
            for it in gpu_items:
                it.add_marker(pytest.mark.skip(reason="CUDA not available"))
        for it in items:
            mark = it.get_closest_marker("claim")
            if mark is not None:
                it.user_properties.append((MARKER_KEY, json.dumps(_attribution(it, mark))))

    def pytest_deselected(self, items) -> None:
        self.deselected += len(items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        state = self.tests.setdefault(report.nodeid, {"records": [], "marker": None,
                                                      "outcome": None, "message": "", "wall_s": 0.0})
        state["wall_s"] += report.duration
        props = [(k, v) for k, v in report.user_properties]
        records = [json.loads(v) for k, v in props if k == RECORD_KEY]
        if len(records) > len(state["records"]):  # later phases repeat the item's list
            state["records"] = records
        marker = next((json.loads(v) for k, v in props if k == MARKER_KEY), None)
        state["marker"] = state["marker"] or marker
        if report.when == "call" or not report.passed:
            state["outcome"], state["message"] = _outcome(report)
        if report.nodeid.split("::")[0].startswith("claims/") or records or marker:
            self.ran_claims = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            return
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.deselected \
                and _selects_gpu(self.config.option.markexpr):
            self.empty_gpu_selection = True
            session.exitstatus = pytest.ExitCode.OK
        if self.ran_claims:
            self._write()

    def _write(self) -> None:
        from core import report as rep  # lazily: plain unit-test runs never need it
        registry, error = _load_registry(Path(self.config.rootpath))
        records = [r for state in self.tests.values() for r in _records_of(state)]
        session = rep.session_info(rootdir=self.config.rootpath, registry=registry,
                                   registry_error=error, args=self.config.invocation_params.args,
                                   tiers={r["tier"] for r in records},
                                   markexpr=self.config.option.markexpr)
        self.report = rep.build_report(records, registry, session)
        self.written = rep.write_reports(self.report, suite_paths(self.config).reports_dir)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.empty_gpu_selection:
            tr.write_line("no gpu cases were selected (-m gpu deselected every test); exit 0")
        if self.report is None:
            return
        ran = [c for c in self.report["claims"] if c["outcome"] is not None]
        tr.write_sep("=", f"claim verdicts ({len(ran)} case(s) from this run)")
        for line in _table(ran):
            tr.write_line(line)
        missing = len({c["id"] for c in self.report["claims"]} - {c["id"] for c in ran})
        if missing:
            tr.write_line(f"{missing} registry claim(s) did not run; listed as not_run in the report")
        for path in self.written.values():
            tr.write_line(f"report: {path}")


def _attribution(item: pytest.Item, mark) -> dict:
    """id/tier/case of a claim-marked test; tier falls back to the tier marker, case to the
    parametrization id."""
    if not mark.args:
        raise pytest.UsageError(f"{item.nodeid}: pytest.mark.claim needs the claim id, "
                                "e.g. pytest.mark.claim('AV-1', tier='cpu')")
    tier = mark.kwargs.get("tier") or next(
        (t for t in _TIER_MARKERS if item.get_closest_marker(t)), None)
    callspec = getattr(item, "callspec", None)
    case = mark.kwargs.get("case") or (callspec.id if callspec else "")
    return {"id": mark.args[0], "tier": tier or "unknown", "case": case}


def _outcome(report: pytest.TestReport) -> tuple[str, str]:
    """(pass|fail|xfail|skip|error, message) of one phase's report."""
    if report.skipped:
        if hasattr(report, "wasxfail"):
            return "xfail", str(report.wasxfail)
        longrepr = report.longrepr
        msg = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skip", msg.removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(report.longrepr)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return ("fail" if report.when == "call" else "error"), (lines[0] if lines else "")[:500]
    return "pass", ""


def _records_of(state: dict) -> list[dict]:
    """The records a test produced, stamped with its pytest outcome; a claim-marked test without
    records becomes one `not_run` (skipped) or `error` record so that it is still reported."""
    if state["records"]:
        return [{**r, "outcome": state["outcome"]} for r in state["records"]]
    mark = state["marker"]
    if mark is None or state["outcome"] is None:
        return []
    outcome, msg = state["outcome"], state["message"]
    if outcome == "skip":
        verdict, reason = "not_run", msg
    elif outcome in ("fail", "error"):
        verdict, reason = "error", msg
    else:
        verdict, reason = "error", f"test ended '{outcome}' without a claim record {msg}".strip()
    return [{**mark, "verdict": verdict, "reason": reason, "outcome": outcome,
             "wall_s": round(state["wall_s"], 3), "n_used": 0}]


def _selects_gpu(markexpr: str) -> bool:
    """True for expressions like "gpu" or "gpu and not slow", not for "not gpu"."""
    return bool(re.search(r"\bgpu\b", markexpr or "")) and not re.search(r"\bnot\s+gpu\b",
                                                                         markexpr or "")


def _load_registry(rootdir: Path):
    """(registry, None) or (None, one-line reason): a broken registry must not lose the records."""
    try:
        from core.registry import load_registry
        local = rootdir / "claims" / "registry.toml"
        return load_registry(local if local.exists() else None), None
    except (ImportError, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def _table(claims: list[dict]) -> list[str]:
    from core.report import case_label, format_estimate
    rows = [("id", "tier", "case", "verdict", "estimate [ci]", "expected")]
    rows += [(c["id"], c["tier"], case_label(c)[:40],
              c["verdict"], format_estimate(c), c["expected"] or "—")
             for c in claims]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
