"""The suite's pytest plugin (loaded by the root conftest: `pytest_plugins = ["core.pytest_plugin"]`).

- Options: --reports-dir, --data-dir (env CLAIMS_DATA_DIR), --cache-dir (env CLAIMS_CACHE_DIR),
  --allow-download; resolved to absolute paths once, at configure time, and checked there (a file,
  an unwritable or uncreatable directory -> one UsageError line, before anything runs). When the
  run collects claims/, the registry is validated there too: a malformed one is one line naming
  file, claim and field, not a collection traceback.
- Reports: a session writes its whole set (figures during the run, claims.* at the end) into a
  fresh hidden staging directory beside --reports-dir and swaps it in at the end
  (`core.report.publish_reports`): a complete session replaces the previous set whole, an
  interrupted or failed one lands beside it (`<reports-dir>.interrupted`), and concurrent sessions
  never mix files. `config.option.reports_dir` (what the harness makes figure paths relative to)
  and the `reports_dir`/`figure_dir` fixtures point at the staging directory; xdist workers get
  the controller's through `workerinput`.
- Fixtures: reports_dir, figure_dir, data_dir, cache_dir, allow_download (session), device.
- Attribution: every test is attributed to the (claim, tier, case, kind) it decides, so a test
  that errors, skips or xfails before the harness records anything still gets its own record
  (`error` with the exception, `skipped` with the reason). From the `claim(id, tier=, case=,
  kind=)` marker when present, else read off the test's own `check_claim(request, "AV-1",
  tier=..., case=...)` / `check_control(...)` calls: literal strings, parameters of the test, and
  f-strings of those are resolved per parametrization; a case it cannot resolve is the test's
  pytest name. A test under claims/ that ends without a record and cannot be attributed, and a
  claims/ module skipped or broken at collection, are listed in the session header
  (`unattributed`), never dropped.
- Records: the harness appends ("claim_record", json) to `user_properties`, which pytest-xdist
  carries to the controller; `pytest_runtest_logreport` collects them with the test outcome, and
  at session end the controller (never an xdist worker) writes the reports with `core.report`
  when any test under claims/ ran, then prints a compact verdict table. The session header says
  how the session ended: complete, interrupted (Ctrl-C, -x/--maxfail) or failed (internal or
  collection error).
- `-m gpu` that deselects everything exits 0 (a CPU machine has nothing to run), not pytest's 5.
"""
from __future__ import annotations

import ast
import functools
import inspect
import json
import os
import re
import shutil
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.atomic import dir_problem

__all__ = ["RECORD_KEY", "MARKER_KEY", "SuitePaths", "suite_paths"]

RECORD_KEY = "claim_record"   # user_properties name of a harness record (contract)
MARKER_KEY = "claim_marker"   # user_properties name of a test's attributions (JSON list)
_STAGING_KEY = "claims_staging"  # workerinput name of the controller's staging directory
_TIER_MARKERS = ("toy", "cpu", "gpu")
_HARNESS_CALLS = {"check_claim": "claim", "check_control": "control"}


@dataclass(frozen=True)
class SuitePaths:
    reports_dir: Path      # where claims.json/.md/.html and figures/ end up (a complete session)
    staging_dir: Path      # where this session writes them while it runs (swapped in at the end)
    data_dir: Path         # datasets (torchvision layout)
    cache_dir: Path        # trained-fixture artifact cache
    allow_download: bool   # may torchvision download missing datasets


_PATHS = pytest.StashKey[SuitePaths]()
_DATA_ENV = pytest.StashKey["str | None"]()  # CLAIMS_DATA_DIR as it was before the session set it


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims", "loss-landscape claim suite")
    group.addoption("--reports-dir", dest="reports_dir", default=None, metavar="DIR",
                    help="where claim reports are written (default: <rootdir>/reports/latest; "
                         "relative paths are taken from the current directory); an interrupted "
                         "or failed session writes to DIR.interrupted / DIR.failed instead")
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
        "markers", "claim(id, tier=None, case=None, kind='claim'): attributes the test to a "
                   "registry claim (overrides what is read off its check_claim call) so the "
                   "report lists it even when it is skipped or errors")
    paths = _resolve_paths(config)
    config.stash[_PATHS] = paths
    config.option.reports_dir = str(paths.staging_dir)  # the harness makes figures relative to it
    config.option.data_dir, config.option.cache_dir = str(paths.data_dir), str(paths.cache_dir)
    # the seed-ensemble builders (fixtures/sd.py, fixtures/ls.py) and their spawned processes read the
    # data directory from the environment; put the resolved one there for this session, restored after
    config.stash[_DATA_ENV] = os.environ.get("CLAIMS_DATA_DIR")
    os.environ["CLAIMS_DATA_DIR"] = str(paths.data_dir)
    if not hasattr(config, "workerinput") and _collects_claims(config):
        _check_registry(Path(config.rootpath))
    config.pluginmanager.register(_ClaimSession(config), "claims-session")
    _set_threads(config.option.torch_threads)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _DATA_ENV in config.stash:  # the environment as the session found it
        old = config.stash[_DATA_ENV]
        if old is None:
            os.environ.pop("CLAIMS_DATA_DIR", None)
        else:
            os.environ["CLAIMS_DATA_DIR"] = old


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
    _check_dir("--reports-dir", reports, writable=True)
    parent = reports.resolve().parent  # the set is staged and swapped in beside the directory
    if dir_problem(parent, writable=True) is not None:
        raise pytest.UsageError(f"--reports-dir {reports}: its parent {parent} is not a writable "
                                "directory (a session's report set is staged beside it)")
    _check_dir("--cache-dir (or $CLAIMS_CACHE_DIR)", cache, writable=True)
    _check_dir("--data-dir (or $CLAIMS_DATA_DIR)", data, writable=bool(opt.allow_download))
    reports = reports.resolve()
    return SuitePaths(reports, _staging(config, reports), data.resolve(), cache.resolve(),
                      bool(opt.allow_download))


def _check_dir(option: str, path: Path, *, writable: bool) -> None:
    """One UsageError line when `path` cannot serve as the option's directory (core.atomic)."""
    problem = dir_problem(path, writable=writable)
    if problem is not None:
        raise pytest.UsageError(f"{option} {problem}")


def _staging(config: pytest.Config, reports: Path) -> Path:
    """This session's staging directory (named now, created on first use): a hidden sibling of
    the reports directory, so it can be renamed into place; xdist workers use the controller's."""
    if hasattr(config, "workerinput"):
        return Path(config.workerinput[_STAGING_KEY])
    return reports.parent / f".{reports.name}.{uuid.uuid4().hex[:12]}.partial"


def _collects_claims(config: pytest.Config) -> bool:
    """Whether the run's paths include claims/ (or lie inside it)."""
    claims = (Path(config.rootpath) / "claims").resolve()
    here = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (here / arg.split("::")[0]).resolve()
        if path == claims or claims in path.parents or path in claims.parents:
            return True
    return False


def _check_registry(rootdir: Path) -> None:
    """A registry that does not load stops the session with its one-line reason, before the claim
    modules (which read it at import) turn it into a collection traceback."""
    _, error = _load_registry(rootdir)
    if error is not None:
        raise pytest.UsageError(f"claims registry: {error}")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def reports_dir(pytestconfig) -> Path:
    """Where this session's report set is written while it runs (the staging directory)."""
    path = suite_paths(pytestconfig).staging_dir
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
    workers never share it): records and outcomes by test node id, in arrival order, and what
    tells how the session ended."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.tests: dict[str, dict] = {}
        self.deselected = 0
        self.collect_errors: set[str] = set()  # node ids (xdist workers repeat them)
        self.collect_lost: dict[str, dict] = {}  # claims/ modules skipped/broken at collection
        self.interrupted: str | None = None
        self.ran_claims = False
        self.written: dict[str, Path] = {}
        self.report: dict | None = None
        self.empty_gpu_selection = False

    @pytest.hookimpl(optionalhook=True)  # pytest-xdist: workers write into the same staging dir
    def pytest_configure_node(self, node) -> None:
        node.workerinput[_STAGING_KEY] = str(suite_paths(self.config).staging_dir)

    @pytest.hookimpl(trylast=True)  # after -m/-k deselection: only the kept items are touched
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        gpu_items = [it for it in items if it.get_closest_marker("gpu")]
        if gpu_items and not _cuda_available():
            for it in gpu_items:
                it.add_marker(pytest.mark.skip(reason="CUDA not available"))
        for it in items:
            found = _attributions(it)
            if found:
                it.user_properties.append((MARKER_KEY, json.dumps(found)))

    def pytest_deselected(self, items) -> None:
        self.deselected += len(items)

    def pytest_collectreport(self, report) -> None:
        """Count collection errors (the session then failed) and keep claims/ modules that were
        skipped or broken while collecting: their tests never become items to attribute."""
        if report.failed:
            self.collect_errors.add(report.nodeid)
        if (report.failed or report.skipped) and _under_claims(report.nodeid):
            outcome, message = _outcome(report)
            # by node id: every xdist worker collects (and reports) the same module
            self.collect_lost[report.nodeid] = {"nodeid": report.nodeid, "outcome": outcome,
                                                "reason": message}
            self.ran_claims = True  # a report (beside the complete one) says what was lost

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        text = str(excinfo.value).strip()
        self.interrupted = excinfo.typename + (f": {text}" if text else "")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        state = self.tests.setdefault(report.nodeid, {
            "nodeid": report.nodeid, "records": [], "marker": None, "outcome": None,
            "message": "", "wall_s": 0.0})
        state["wall_s"] += report.duration
        props = [(k, v) for k, v in report.user_properties]
        records = [json.loads(v) for k, v in props if k == RECORD_KEY]
        if len(records) > len(state["records"]):  # later phases repeat the item's list
            state["records"] = records
        marker = next((json.loads(v) for k, v in props if k == MARKER_KEY), None)
        state["marker"] = state["marker"] or marker
        if report.when == "call" or not report.passed:
            state["outcome"], state["message"] = _outcome(report)
        if _under_claims(report.nodeid) or records or marker:
            self.ran_claims = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            return
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.deselected \
                and _selects_gpu(self.config.option.markexpr):
            self.empty_gpu_selection = True
            session.exitstatus = pytest.ExitCode.OK
        if self.ran_claims:
            self._write(*self._ending(session, exitstatus), session.testscollected)
        else:  # figures a non-claim test drew have no report to belong to
            shutil.rmtree(suite_paths(self.config).staging_dir, ignore_errors=True)

    def _ending(self, session: pytest.Session, exitstatus) -> tuple[str, str | None]:
        """("complete" | "interrupted" | "failed", why): a session that stopped before running
        everything it selected is not complete, whatever its exit code."""
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            return "failed", "pytest internal error"
        if self.collect_errors:
            return "failed", f"{len(self.collect_errors)} error(s) during collection"
        if self.interrupted or exitstatus == pytest.ExitCode.INTERRUPTED:
            return "interrupted", self.interrupted or "interrupted"
        stop = session.shouldfail or session.shouldstop  # -x / --maxfail, or a plugin's stop
        return ("interrupted", str(stop)) if stop else ("complete", None)

    def _write(self, ended: str, ended_reason: str | None, selected: int) -> None:
        from core import report as rep  # lazily: plain unit-test runs never need it
        registry, error = _load_registry(Path(self.config.rootpath))
        states = list(self.tests.values())
        records = [r for state in states for r in _records_of(state)]
        session = rep.session_info(rootdir=self.config.rootpath, registry=registry,
                                   registry_error=error, args=self.config.invocation_params.args,
                                   tiers={r["tier"] for r in records},
                                   markexpr=self.config.option.markexpr, ended=ended,
                                   ended_reason=ended_reason, tests_selected=selected,
                                   tests_run=sum(s["outcome"] is not None for s in states))
        session["unattributed"] = [*self.collect_lost.values(),
                                   *(_unattributed(s) for s in states if _lost(s))]
        self.report = rep.build_report(records, registry, session)
        paths = suite_paths(self.config)
        self.written = rep.publish_reports(self.report, paths.staging_dir, paths.reports_dir)

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
        for lost in self.report["session"]["unattributed"]:
            tr.write_line(f"not attributed to a claim (no record): {lost['nodeid']} "
                          f"{lost['outcome']} {lost['reason']}".rstrip(), red=True)
        session = self.report["session"]
        if session["ended"] != "complete":
            tr.write_line(f"session {session['ended']} ({session['ended_reason']}): partial report "
                          f"written beside the last complete one", red=True)
        for path in self.written.values():
            tr.write_line(f"report: {path}")


# ---------------------------------------------------------------- attribution and records
def _under_claims(nodeid: str) -> bool:
    return nodeid.split("::")[0].startswith("claims/")


def _attributions(item: pytest.Item) -> list[dict]:
    """[{id, tier, case, kind}] the test decides: from its claim markers when it has any, else
    from its check_claim / check_control calls; [] for a test that decides no claim."""
    marks = list(item.iter_markers("claim"))
    if marks:
        return [_from_marker(item, m) for m in marks]
    func = getattr(item, "function", None)
    calls = _harness_calls(func) if func is not None else ()
    params = dict(getattr(getattr(item, "callspec", None), "params", {}))
    found = [{"id": cid, "tier": _resolve(tier, params) or _tier_marker(item),
              "case": _resolve(case, params) or _fallback_case(item), "kind": kind}
             for kind, cid, tier, case in calls]
    return [dict(t) for t in dict.fromkeys(tuple(a.items()) for a in found)]  # repeats once


def _from_marker(item: pytest.Item, mark) -> dict:
    """id/tier/case/kind of a claim marker; tier falls back to the tier marker, case to the
    parametrization id."""
    if not mark.args:
        raise pytest.UsageError(f"{item.nodeid}: pytest.mark.claim needs the claim id, "
                                "e.g. pytest.mark.claim('AV-1', tier='cpu')")
    kind = mark.kwargs.get("kind", "claim")
    if kind not in ("claim", "control"):
        raise pytest.UsageError(f"{item.nodeid}: pytest.mark.claim kind={kind!r}; allowed is "
                                "'claim' or 'control'")
    return {"id": mark.args[0], "tier": mark.kwargs.get("tier") or _tier_marker(item),
            "case": mark.kwargs.get("case") or _fallback_case(item), "kind": kind}


def _tier_marker(item: pytest.Item) -> str:
    return next((t for t in _TIER_MARKERS if item.get_closest_marker(t)), "unknown")


def _fallback_case(item: pytest.Item) -> str:
    """The parametrization id, else the test's name: which test it was stays readable."""
    callspec = getattr(item, "callspec", None)
    return callspec.id if callspec is not None else item.name


@functools.lru_cache(maxsize=None)
def _harness_calls(func) -> tuple:
    """(kind, claim id, tier node, case node) of every `check_claim(request, "ID", ...)` /
    `check_control(...)` call with a literal claim id in the function's source (parsed once)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return ()
    out = []
    for node in ast.walk(tree):
        name = _call_name(node)
        first = node.args[1] if name in _HARNESS_CALLS and len(node.args) >= 2 else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            kw = {k.arg: k.value for k in node.keywords}
            out.append((_HARNESS_CALLS[name], first.value, kw.get("tier"), kw.get("case")))
    return tuple(out)


def _call_name(node) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _resolve(node, params: dict) -> str | None:
    """The string an argument expression has for this parametrization: a literal, a test
    parameter, or an f-string of those; None when it depends on anything else."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return str(params[node.id]) if node.id in params else None
    if isinstance(node, ast.JoinedStr):
        parts = [_resolve(v.value if isinstance(v, ast.FormattedValue) and v.format_spec is None
                          and v.conversion == -1 else v, params) for v in node.values]
        return None if any(p is None for p in parts) else "".join(parts)
    return None


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
        text = crash.message if crash is not None else _error_lines(str(report.longrepr))
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        failed = "fail" if getattr(report, "when", None) == "call" else "error"  # collect: error
        return failed, (lines[0] if lines else "")[:500]
    return "pass", ""


def _error_lines(text: str) -> str:
    """The exception lines ("E   ModuleNotFoundError: ...") of a report without a crash entry
    (collection errors), else the text: the first line there is pytest's preamble."""
    errors = [ln.strip()[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    return "\n".join(errors) if errors else text


def _records_of(state: dict) -> list[dict]:
    """The records a test produced, stamped with its pytest outcome, plus one record for each
    (claim, tier, kind) it is attributed to but did not record (it ended first): `skipped` with
    the skip reason, or `error` with the exception (or how it ended without deciding)."""
    records = [{**r, "outcome": state["outcome"]} for r in state["records"]]
    if state["outcome"] is None:
        return records
    done = {(r.get("id"), r.get("tier"), r.get("kind", "claim")) for r in records}
    verdict, reason = _unrecorded(state["outcome"], state["message"])
    return records + [{**a, "verdict": verdict, "reason": reason, "outcome": state["outcome"],
                       "wall_s": round(state["wall_s"], 3), "n_used": 0,
                       "nodeid": state["nodeid"]}
                      for a in state["marker"] or () if (a["id"], a["tier"], a["kind"]) not in done]


def _unrecorded(outcome: str, msg: str) -> tuple[str, str]:
    """(verdict, reason) of a test that ended without recording its decision."""
    if outcome == "skip":
        return "skipped", msg
    if outcome in ("fail", "error"):
        return "error", msg
    return "error", f"test ended {outcome!r} before recording a result {msg}".strip()


def _lost(state: dict) -> bool:
    """A claims/ test that ended without a record and without an attribution to put one on."""
    return (_under_claims(state["nodeid"]) and state["outcome"] is not None
            and not state["records"] and not state["marker"])


def _unattributed(state: dict) -> dict:
    return {"nodeid": state["nodeid"], "outcome": state["outcome"], "reason": state["message"]}


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
