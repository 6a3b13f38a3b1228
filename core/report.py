"""Claim reports: records + registry -> claims.json / claims.md / claims.html.

compute  `build_report`: normalise the run's records (one per (claim, tier, case), made by
         `core.harness`), add a `not_run` record per tier for every registry claim that has none,
         and add the multiplicity columns (DESIGN.md, "Statistics"): per tier, Holm over ALL registry
         primaries -> `p_holm`, Benjamini–Hochberg over all secondaries -> `p_bh`, one p per claim
         = the max p over its non-control cases in that tier, p = 1 for a claim (or case) without one.
present  `render_markdown`, `render_html` (self-contained: figures embedded as base64 data URIs);
         the first line says how the session ended; then the `scorecard`, per paper one row per
         claim case: the claim, the paper's number, ours (what the estimate is, estimate
         [interval], n; each part for an intersection–union rule), the verdict, its negative
         control in a word, the original rule's verdict, the key figure as a thumbnail; below it
         the per-claim sections, per-seed and seed-status tables folded (`<details>`) unless the
         record `diverged`. A record's `original` verdict and its `flags` are shown beside its
         verdict.
write    `write_reports`: the three files into one directory, each atomically;
         `publish_reports`: a session's whole set (files and figures) is written into a fresh
         staging directory and swapped in at once under a lock, so two sessions never mix files; an
         interrupted or failed session lands beside the last complete set (`<dir>.interrupted`),
         never over it.
read     `load_report` (a claims.json back, older files included), `merge_reports` (one file
         per tier into one report); `python -m core.report render OUT_DIR JSON...` and
         `python -m core.report diff OLD NEW` (core.report_diff) on the command line.
The schema is documented field by field in reports/README.md; change both together.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import html
import importlib.metadata
import itertools
import json
import math
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.numerics import session_code_path
from core.atomic import atomic_write, swap_dir_in
from core.stats import VERDICTS as RULE_VERDICTS, benjamini_hochberg, holm

__all__ = ["SCHEMA_VERSION", "RECORD_FIELDS", "TIERS", "VERDICTS", "ENDINGS", "session_info",
           "build_report", "write_reports", "destination", "publish_reports", "render_markdown",
           "render_html", "atomic_write", "format_estimate", "case_label", "estimate_label",
           "scorecard", "paper_glance", "diverged", "paper_of", "PAPERS", "load_report", "merge_reports", "main"]

SCHEMA_VERSION = 1
TIERS = ("toy", "cpu", "gpu")
# The rules' verdicts plus "skipped": a test skipped before it decided (missing dataset, no CUDA)
# is reported for its own case, apart from "not_run" (no test of the claim was selected at all).
VERDICTS = RULE_VERDICTS + tuple(v for v in ("skipped",) if v not in RULE_VERDICTS)
ENDINGS = ("complete", "interrupted", "failed")  # how a session ended (session["ended"])
LIBRARIES = ("torch", "numpy", "scipy", "statsmodels", "pandas", "pytest", "matplotlib")
RECORD_FIELDS: dict[str, Any] = {  # field -> default for a record that lacks it (schema order)
    "id": None, "tier": None, "case": "", "kind": "claim", "role": None, "paper": None,
    "where": None, "statement": "", "paper_value": None, "statistic": "", "unit": None,
    "rule_text": "", "estimate": None, "ci": None, "p": None, "p_holm": None, "p_bh": None,
    "alpha": None, "n_planned": None, "n_used": None, "per_seed": {}, "verdict": None,
    "expected": None, "expected_reason": None, "outcome": None, "reason": "", "parts": [],
    "supporting": [], "figures": [], "tables": {}, "wall_s": None, "nodeid": None,
    "original": None, "flags": [],
}
ORIGINAL_FIELDS = ("label", "rule", "verdict", "estimate", "ci", "p", "reason", "parts")
_ORIGINAL_DEFAULTS = {"label": "original rule", "rule": "", "estimate": None, "ci": None,
                      "p": None, "reason": "", "parts": []}
_FROM_REGISTRY = ("paper", "where", "statement", "paper_value", "statistic", "unit", "rule_text")
_NOT_RUN_REASON = "no test of this claim ran in this session"
PAPERS = {"he2019": "He, Huang, Yuan 2019 — Asymmetric Valleys (AV-*)",
          "jastrzebski2019": "Jastrzebski et al. 2019 — Sharpest Directions (SD-*)",
          "fort2019": "Fort & Jastrzebski 2019 — Large Scale Structure (LS-*)"}
_PAPER_OF_PREFIX = {"AV": "he2019", "SD": "jastrzebski2019", "LS": "fort2019"}
THUMB_WIDTH = 120  # px, the scorecard's figure thumbnails
# what an estimate is: the words before the first number of a rule's sentence ("mean difference a-b")
_LABEL = re.compile(r"([A-Za-z][A-Za-z_ \-]{0,40}?) (?:-?\d|nan\b|-?inf\b)")
_LEGEND = ("ours: what the rule estimates, the estimate [its two-sided (1 − 2α_i) interval], n "
           "units used/planned; for an intersection–union rule each part's estimate and verdict. "
           "control: the claim's negative control through the same rule, ✓ = it did not come out "
           "replicated. Tiers a claim did not run in are noted under its case; a claim that ran "
           "in none is one grey row.")
_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


# ---------------------------------------------------------------- session header (impure: env)
def session_info(*, rootdir, registry=None, registry_error: str | None = None, args=(),
                 tiers=(), markexpr: str = "", ended: str = "complete",
                 ended_reason: str | None = None, tests_selected: int | None = None,
                 tests_run: int | None = None) -> dict:
    """Provenance of a run: git state, registry hash, library versions, device, date, command,
    and how the session ended (one of ENDINGS, with the reason and how many tests ran)."""
    if ended not in ENDINGS:
        raise ValueError(f"session ended {ended!r}: allowed is one of {', '.join(ENDINGS)}")
    sha = _git(rootdir, "rev-parse", "HEAD")
    status = _git(rootdir, "status", "--porcelain", "--untracked-files=no")
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": sha or "unknown", "git_dirty": None if status is None else bool(status),
        "registry_sha256": getattr(registry, "sha256", None),
        "registry_path": str(registry.path) if registry is not None else None,
        "registry_error": registry_error,
        "family_alpha": getattr(registry, "family_alpha", None),
        "bh_q": getattr(registry, "bh_q", None),
        "versions": {"python": platform.python_version(), **{n: _version(n) for n in LIBRARIES}},
        "device": _device(), "code_path": session_code_path(),
        "args": [str(a) for a in args], "markexpr": markexpr or "",
        "tiers_run": sorted(set(tiers), key=_tier_key),
        "ended": ended, "ended_reason": ended_reason, "tests_selected": tests_selected,
        "tests_run": tests_run,
    }


def _git(rootdir, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=rootdir, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import torch
        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not lose the report
        cuda = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "cuda": cuda}


# ---------------------------------------------------------------- compute
def build_report(records: Iterable[Mapping], registry=None, session: Mapping | None = None) -> dict:
    """{"schema_version", "session", "claims"}: the run's records plus `not_run` fills, ordered by
    registry order, tier (toy, cpu, gpu), claims before controls, then arrival; p_holm/p_bh set."""
    claims = [_normalise(r, registry) for r in records]
    claims += _not_run(claims, registry)
    order = {cid: i for i, cid in enumerate(registry.claims)} if registry is not None else {}
    keyed = sorted(enumerate(claims), key=lambda ic: (
        order.get(ic[1]["id"], len(order)), ic[1]["id"] if ic[1]["id"] not in order else "",
        _tier_key(ic[1]["tier"]), ic[1]["kind"] != "claim", ic[0]))
    claims = [c for _, c in keyed]
    _adjust(claims, registry)
    return {"schema_version": SCHEMA_VERSION, "session": _plain(dict(session or {})),
            "claims": claims}


def _normalise(rec: Mapping, registry) -> dict:
    """Validate one record at the boundary, fill defaults and registry fields, make JSON-safe."""
    if not isinstance(rec, Mapping):
        raise TypeError(f"claim record must be a mapping, got {type(rec).__name__}")
    missing = [k for k in ("id", "tier", "verdict") if not rec.get(k)]
    if missing:
        raise ValueError(f"claim record {rec.get('id')!r}: missing field(s) {missing}")
    if rec["verdict"] not in VERDICTS:
        raise ValueError(f"claim record {rec['id']} [{rec['tier']}]: verdict {rec['verdict']!r} "
                         f"is not one of {VERDICTS}")
    _check_original(rec)
    out = {k: d if rec.get(k) is None else rec[k] for k, d in RECORD_FIELDS.items()}
    out.update({k: v for k, v in rec.items() if k not in out})
    if out["original"] is not None:
        out["original"] = {**_ORIGINAL_DEFAULTS, **out["original"]}
    claim = registry.claims.get(out["id"]) if registry is not None else None
    if claim is not None:
        _fill_from_registry(out, claim, registry)
    return _plain(out)  # a fresh copy: defaults and the caller's record are never shared


def _check_original(rec: Mapping) -> None:
    """`original` is None or a mapping with a known verdict; `flags` a list of strings."""
    where = f"claim record {rec['id']} [{rec['tier']}]"
    orig, flags = rec.get("original"), rec.get("flags")
    if orig is not None:
        if not isinstance(orig, Mapping):
            raise ValueError(f"{where}: original must be a mapping with keys "
                             f"{', '.join(ORIGINAL_FIELDS)} or None, got {type(orig).__name__}")
        if orig.get("verdict") not in VERDICTS:
            raise ValueError(f"{where}: original verdict {orig.get('verdict')!r} is not one of "
                             f"{VERDICTS}")
    if flags is not None and not (isinstance(flags, (list, tuple))
                                  and all(isinstance(f, str) for f in flags)):
        raise ValueError(f"{where}: flags must be a list of strings, got {flags!r}")


def _fill_from_registry(out: dict, claim, registry) -> None:
    out["role"] = claim.role  # the registry decides the family, never the record
    for field in _FROM_REGISTRY:
        if out[field] in (None, ""):
            out[field] = getattr(claim, field, None)
    if out["n_planned"] is None:
        out["n_planned"] = claim.seeds.get(out["tier"])
    if out["alpha"] is None:
        out["alpha"] = registry.alpha_for(claim.id)
    expected = claim.expected.get(out["tier"])
    if out["expected"] is None and out["kind"] == "claim" and expected is not None:
        out["expected"], out["expected_reason"] = expected.verdict, expected.reason


def _not_run(claims: list[dict], registry) -> list[dict]:
    """One `not_run` record per registered tier for every claim the run has no record of."""
    if registry is None:
        return []
    seen = {c["id"] for c in claims}
    return [_normalise({"id": cid, "tier": tier, "verdict": "not_run", "n_used": 0,
                        "reason": _NOT_RUN_REASON}, registry)
            for cid, claim in registry.claims.items() if cid not in seen for tier in claim.tiers]


def _adjust(claims: list[dict], registry) -> None:
    """Per tier: Holm over all primaries -> p_holm, BH over all secondaries -> p_bh (in place).
    A record whose own p is null although it ran (deterministic toy law, error) gets null."""
    for tier in sorted({c["tier"] for c in claims}, key=_tier_key):
        for role, field, adjust in (("primary", "p_holm", holm),
                                    ("secondary", "p_bh", benjamini_hochberg)):
            ids = _family(claims, registry, role)
            if not ids:
                continue
            fam = [_claim_p(claims, cid, tier) for cid in ids]
            adjusted = dict(zip(ids, (float(a) for a in adjust(fam))))
            for c in claims:
                if c["tier"] == tier and c["kind"] == "claim" and c["id"] in adjusted:
                    ran_without_p = c["p"] is None and c["verdict"] not in ("not_run", "skipped")
                    c[field] = None if ran_without_p else adjusted[c["id"]]


def _family(claims: list[dict], registry, role: str) -> list[str]:
    if registry is not None:
        return [cid for cid, claim in registry.claims.items() if claim.role == role]
    return list(dict.fromkeys(c["id"] for c in claims if c["role"] == role))


def _claim_p(claims: list[dict], cid: str, tier: str) -> float:
    """One p per claim and tier: the max over its non-control cases; a case without p counts 1."""
    ps = [1.0 if c["p"] is None else c["p"] for c in claims
          if c["id"] == cid and c["tier"] == tier and c["kind"] == "claim"]
    return max(ps, default=1.0)


def _plain(x):
    """JSON-ready copy: mappings -> dict, sequences -> list, NaN/inf -> None, numpy -> Python."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _plain(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def _tier_key(tier) -> tuple:
    return (TIERS.index(tier), "") if tier in TIERS else (len(TIERS), str(tier))


# ---------------------------------------------------------------- present (shared cells)
def _num(x, fmt: str = ".3g") -> str:
    return "—" if x is None else format(x, fmt)


def _opt(x) -> str:
    return "—" if x is None or x == "" else str(x)


def _ci(ci) -> str:
    return "" if not ci or ci == [None, None] else f"[{_num(ci[0])}, {_num(ci[1])}]"


def format_estimate(c: Mapping) -> str:
    """"0.71 [0.64, 0.8]": a record's estimate with its interval, "—" for missing values."""
    return f"{_num(c.get('estimate'))} {_ci(c.get('ci'))}".strip()


def estimate_label(reason: str) -> str:
    """What a rule's estimate is, read from the start of the rule's own sentence:
    "success rate 0 [0, 0.438] < required 0.5 ..." -> "success rate"; "" when it does not say."""
    m = _LABEL.match(reason or "")
    return m.group(1) if m else ""


def _measured(e: Mapping) -> str:
    """"success rate 0 [0, 0.438]": an estimate with its interval and what it is."""
    return f"{estimate_label(e.get('reason', ''))} {format_estimate(e)}".strip()


def _facts(c: dict) -> list[str]:
    """The verdict line after the verdict itself: effect, interval, p's, n, pytest outcome
    (entries a record does not have, e.g. for not_run, are left out)."""
    adj = ("p_holm", c["p_holm"]) if c["role"] == "primary" else ("p_bh", c["p_bh"])
    facts = [f"estimate {format_estimate(c)}" if c["estimate"] is not None else "",
             f"p {_num(c['p'], '.2g')}" if c["p"] is not None else "",
             f"α_i {_num(c['alpha'], '.2g')}" if c["alpha"] is not None else "",
             f"{adj[0]} {_num(adj[1], '.2g')}" if adj[1] is not None else "",
             f"n {_opt(c['n_used'])}/{_opt(c['n_planned'])}",
             f"pytest {c['outcome']}" if c["outcome"] else "",
             f"{_num(c['wall_s'], '.1f')} s" if c["wall_s"] is not None else ""]
    return [f for f in facts if f]


def _expected_line(c: dict) -> str:
    if c["kind"] == "control":
        return "negative control: must not come out replicated"
    if c["expected"] is None:
        return "expected: none registered for this tier (the test passes only if replicated)"
    match = "as expected" if c["expected"] == c["verdict"] else "differs from the expectation"
    return f"expected: {c['expected']} — {c['expected_reason'] or ''} ({match})"


def _sessions(report: dict) -> list[tuple[str, dict]]:
    """(source, session) per session the report holds: one, or one per file of a merged report."""
    if report.get("sources"):
        return [(s["path"], s.get("session") or {}) for s in report["sources"]]
    return [("", report.get("session") or {})]


def _header_rows(s: dict) -> list[list[str]]:
    dev = s.get("device") or {}
    vers = ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items() if v)
    dirty = {True: " (dirty)", False: "", None: ""}[s.get("git_dirty")]
    return [["session", _ending(s)],
            ["date (UTC)", str(s.get("date_utc", "—"))],
            ["git", f"{s.get('git_sha', 'unknown')}{dirty}"],
            ["registry", f"sha256 {s.get('registry_sha256') or '—'} ({s.get('registry_path') or '—'})"
             + (f"; ERROR: {s['registry_error']}" if s.get("registry_error") else "")],
            ["family α / BH q", f"{_num(s.get('family_alpha'))} / {_num(s.get('bh_q'))}"],
            ["device", f"{dev.get('cpu', '—')}; CUDA: {dev.get('cuda') or 'none'}"],
            ["code path", _code_path_text(s.get("code_path"))],
            ["versions", vers], ["command", " ".join(["pytest", *s.get("args", [])])],
            ["tiers run", ", ".join(s.get("tiers_run", [])) or "—"]]


def _code_path_text(cp: Mapping | None) -> str:
    """MKL branch, ATen kernels and threads in force (reports/code-paths.md: what a number depends on)."""
    if not cp:
        return "not recorded"
    env = cp.get("env") or {}
    src = ", ".join(f"{k}={v.get('value')} ({v.get('source')})" for k, v in env.items())
    mkl = (cp.get("mkl") or {}).get("branch", "—")
    pinned = "pinned" if cp.get("pinned") and cp.get("pin_in_force") else "NOT pinned"
    return (f"{pinned}: MKL branch {mkl}, ATen {cp.get('aten_cpu_capability', '—')}, "
            f"threads {(cp.get('threads') or {}).get('intra_op', '—')}; {src}")


def _provenance(source: str, s: Mapping) -> str:
    """One line under the title: where the numbers come from (the full header is further down)."""
    dirty = " (dirty)" if s.get("git_dirty") else ""
    reg = (s.get("registry_sha256") or "—")[:12]
    return (f"{source + ': ' if source else ''}git {str(s.get('git_sha', 'unknown'))[:12]}{dirty} · "
            f"registry sha256 {reg}… · {s.get('date_utc', '—')} · tiers run: "
            f"{', '.join(s.get('tiers_run', [])) or '—'} · CUDA: "
            f"{(s.get('device') or {}).get('cuda') or 'none'}")


def _ending(s: Mapping) -> str:
    """"complete (40 of 40 selected tests ran)", "interrupted: KeyboardInterrupt (3 of 40 ...)";
    "not recorded" for reports written before sessions recorded it."""
    ended = s.get("ended")
    if ended is None:
        return "not recorded"
    text = ended + (f": {s['ended_reason']}" if s.get("ended_reason") else "")
    if s.get("tests_selected") is not None:
        text += f" ({_opt(s.get('tests_run'))} of {s['tests_selected']} selected tests ran)"
    return text + ("" if ended == "complete" else
                   "; a partial report, written beside the last complete one")


def _title(report: dict) -> str:
    """The report's first line: how its session ended, so a partial report cannot pass as whole."""
    if report.get("sources"):
        return "Claim report — merged: " + "; ".join(
            f"{Path(src).parent.name or src} session {_ending(s)}" for src, s in _sessions(report))
    return f"Claim report — session {_ending(report.get('session') or {})}"


def _count_rows(claims: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["tier", *VERDICTS, "total"]
    rows = []
    for tier in sorted({c["tier"] for c in claims}, key=_tier_key):
        got = [c["verdict"] for c in claims if c["tier"] == tier and c["kind"] == "claim"]
        rows.append([tier, *(str(got.count(v)) for v in VERDICTS), str(len(got))])
    return header, rows


def _index_rows(claims: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["id", "tier", "case", "verdict", "original rule", "estimate [CI]", "p",
              "p_holm / p_bh", "expected", "pytest"]
    rows = [[c["id"], c["tier"], case_label(c), c["verdict"],
             c["original"]["verdict"] if c["original"] else "—", format_estimate(c),
             _num(c["p"], ".2g"),
             _num(c["p_holm"] if c["role"] == "primary" else c["p_bh"], ".2g"),
             c["expected"] or "—", c["outcome"] or "—"] for c in claims]
    return header, rows


def _per_seed_rows(per_seed: dict) -> tuple[list[str], list[list[str]]]:
    n = max((len(v) for v in per_seed.values()), default=0)
    cell = lambda v: v if isinstance(v, str) else _num(v)  # noqa: E731
    rows = [[str(i), *(cell(v[i]) if i < len(v) else "" for v in per_seed.values())]
            for i in range(n)]
    return ["seed", *per_seed], rows


def _result_rows(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    return (["name", "verdict", "estimate", "CI", "p", "reason"],
            [[str(e.get("name", "")), str(e.get("verdict", "")), _num(e.get("estimate")),
              _ci(e.get("ci")), _num(e.get("p"), ".2g"), str(e.get("reason", ""))]
             for e in entries])


def _dict_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: _num(v) if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    return header, [[cell(r.get(k)) for k in header] for r in rows]


def _status_rows(rows) -> bool:
    """A seed-status table: row objects of which at least one has a `status`."""
    return bool(rows) and all(isinstance(r, Mapping) for r in rows) and any("status" in r for r in rows)


def _statuses(c: dict) -> list:
    """Every seed status the record holds: its status tables' rows and a per_seed `status` list."""
    got = [r.get("status", "ok") for rows in c["tables"].values() if _status_rows(rows)
           for r in rows]
    return got + list(c["per_seed"].get("status") or [])


def diverged(c: Mapping) -> bool:
    """Something failed: the test errored, or a unit's status is not "ok" (its folded tables
    are then shown open)."""
    return c["verdict"] == "error" or any(s != "ok" for s in _statuses(c))


def _status_note(rows: list) -> str:
    bad = [r.get("status", "ok") for r in rows if r.get("status", "ok") != "ok"]
    return (f"all {len(rows)} ok" if not bad else
            f"{len(bad)} of {len(rows)} not ok: {', '.join(sorted(set(map(str, bad))))}")


def _blocks(c: dict) -> list[tuple[str, tuple[list[str], list[list[str]]], bool]]:
    """The titled tables of one record, in reading order, empty ones left out; the third item
    says whether the table folds away (per-seed values, seed-status tables)."""
    per_seed = _per_seed_rows(c["per_seed"])
    blocks = [(f"per seed ({len(per_seed[1])} rows)", per_seed, True),
              ("parts", _result_rows(c["parts"]), False),
              ("supporting (secondary rules, never change the verdict)",
               _result_rows(c["supporting"]), False)]
    if c["original"]:
        blocks.append((f"parts under the {c['original']['label']}",
                       _result_rows(c["original"]["parts"]), False))
    for name, rows in c["tables"].items():
        status = _status_rows(rows)
        note = f" ({_status_note(rows)})" if status else ""
        blocks.append((f"table: {name}{note}", _dict_rows(rows), status))
    return [(title, tab, fold) for title, tab, fold in blocks if tab[1]]


def _original_facts(o: dict) -> str:
    """" · estimate 0.4 [0.3, 0.5] · p 0.2 · rule: ...": the original rule's numbers and text."""
    facts = [f"estimate {format_estimate(o)}" if o["estimate"] is not None else "",
             f"p {_num(o['p'], '.2g')}" if o["p"] is not None else "",
             f"rule: {o['rule']}" if o["rule"] else ""]
    return "".join(f" · {f}" for f in facts if f)


def case_label(c: Mapping) -> str:
    """The case name, marked as a negative control unless its name already says so."""
    case = c.get("case") or ""
    control = c.get("kind") == "control" and not case.lower().startswith("control")
    return f"control: {case}" if control else case


def _case_title(c: dict) -> str:
    return f"{c['tier']} · {case_label(c) or '(no case ran)'}"


def _anchor(*parts) -> str:
    """An HTML id from a claim, tier, kind, case or figure path: letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(str(p) for p in parts)).strip("-")


def _case_anchor(c: Mapping) -> str:
    return _anchor(c["id"], c["tier"], c["kind"], c["case"] or "none")


# ---------------------------------------------------------------- scorecard (the first screen)
def paper_of(c: Mapping) -> str:
    """The record's paper key; from the id's prefix for a record without one."""
    return c.get("paper") or _PAPER_OF_PREFIX.get(str(c.get("id", "")).split("-")[0], "other")


def scorecard(report: dict) -> list[tuple[str, list[dict]]]:
    """(paper title, rows) per paper in report order. One row per claim case that ran (its
    controls of the same tier in the row, never rows of their own), one row per claim for the
    tiers where it did not run; a claim's first row carries `span` = its number of rows."""
    papers: dict[str, list[dict]] = {}
    for _, group in itertools.groupby(report["claims"], key=lambda c: c["id"]):
        group = list(group)
        rows = _claim_rows(group)
        rows[0]["span"] = len(rows)
        papers.setdefault(paper_of(group[0]), []).extend(rows)
    return [(PAPERS.get(key, key), rows) for key, rows in papers.items()]


def paper_glance(report: dict) -> list[tuple[str, str]]:
    """(paper title, "toy: 4 replicated · cpu: 4 replicated, 3 refuted · controls 14 of 14 ✓ ·
    not run: 13 claim-tiers") per paper: the scorecard in one line each."""
    out = []
    for key, recs in itertools.groupby(report["claims"], key=paper_of):
        recs = list(recs)
        ran = [c for c in recs if c["kind"] == "claim" and c["verdict"] != "not_run"]
        tiers = sorted({c["tier"] for c in ran}, key=_tier_key)
        parts = [f"{t}: " + ", ".join(f"{n} {v}" for v, n in _verdict_counts(ran, t)) for t in tiers]
        controls = [c for c in recs if c["kind"] == "control"]
        good = sum("✓" in _control_word(c["verdict"]) for c in controls)
        parts += [f"controls {good} of {len(controls)} ✓"] if controls else []
        idle = sum(c["kind"] == "claim" and c["verdict"] == "not_run" for c in recs)
        parts += [f"not run: {idle} claim·tier(s)"] if idle else []
        out.append((PAPERS.get(key, key), " · ".join(parts)))
    return out


def _verdict_counts(claims: list[dict], tier: str) -> list[tuple[str, int]]:
    got = [c["verdict"] for c in claims if c["tier"] == tier]
    return [(v, got.count(v)) for v in VERDICTS if got.count(v)]


def _claim_rows(group: list[dict]) -> list[dict]:
    claims = [c for c in group if c["kind"] == "claim"]
    controls = [c for c in group if c["kind"] == "control"]
    idle = [c for c in claims if c["verdict"] == "not_run"]
    rows = [_row(c, [k for k in controls if k["tier"] == c["tier"]])
            for c in claims if c["verdict"] != "not_run"]
    idle_tiers = ", ".join(c["tier"] for c in idle)
    if idle and rows:  # the tiers it did not run in, noted under the last one it ran in
        rows[-1]["idle"] = idle_tiers
    elif idle:
        rows.append({**_row(idle[0], []), "tier": idle_tiers})
    for tier in dict.fromkeys(k["tier"] for k in controls if k["tier"] not in
                              {c["tier"] for c in claims}):  # a control without its claim
        rows.append({**_row({**controls[0], "kind": "claim", "case": "", "verdict": "",
                             "original": None, "figures": [], "expected": None},
                            [k for k in controls if k["tier"] == tier]),
                     "tier": tier, "ours": [("no claim record in this tier", None)]})
    return [{**r, "span": 0, "claim": group[0]} for r in rows]


def _row(c: dict, controls: list[dict]) -> dict:
    return {"tier": c["tier"], "case": case_label(c), "verdict": c["verdict"], "idle": "",
            "expected": _expected_note(c), "ours": _ours(c), "anchor": _case_anchor(c),
            "controls": [(_control_word(k["verdict"]), case_label(k), _case_anchor(k))
                         for k in controls],
            "original": c["original"]["verdict"] if c["original"] else None,
            "figure": c["figures"][0] if c["figures"] else None}


def _ours(c: dict) -> list[tuple[str, str | None]]:
    """Our result as (text, verdict or None) lines: what the estimate is, the estimate and its
    interval, n; for an intersection–union rule each part's estimate and verdict instead of the
    record's own estimate (the fraction of parts replicated, which says nothing by itself)."""
    if c["verdict"] == "not_run":
        return [("—", None)]
    if c["verdict"] in ("error", "skipped"):
        return [(_short(c["reason"]), None)]
    lines = ([(f"{p.get('name', '')}: {_measured(p)}", p.get("verdict")) for p in c["parts"]]
             if c["parts"] else [(_measured(c), None)])
    n = _n_note(c)
    flags = [f"{len(c['flags'])} flag(s), see the section"] if c["flags"] else []
    return lines + [(t, None) for t in [n, *flags] if t]


def _n_note(c: dict) -> str:
    """"n 10/10 · training seed": units used / planned and the unit (its gloss left out)."""
    if c["n_used"] is None:
        return ""
    unit = (c["unit"] or "").split(" (")[0]
    planned = f"/{c['n_planned']}" if c["n_planned"] is not None else ""
    return f"n {c['n_used']}{planned}" + (f" · {unit}" if unit else "")


def _short(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _control_word(verdict: str) -> str:
    """A negative control's outcome in a word: ✓ when it did not come out replicated."""
    if verdict in ("replicated", "error"):
        return f"control: {verdict.upper()} ✗"
    if verdict in ("skipped", "not_run"):
        return f"control: {verdict}"
    return f"control: {verdict} ✓"


def _expected_note(c: dict) -> str:
    if c["kind"] != "claim" or c["expected"] is None or c["verdict"] in ("not_run", ""):
        return ""
    return "as expected" if c["expected"] == c["verdict"] else f"expected: {c['expected']}"


def _score_header(report: dict) -> list[str]:
    original = ["original rule"] if any(c["original"] for c in report["claims"]) else []
    return ["claim", "paper's number", "tier · case", "ours", "verdict", "control", *original,
            "figure"]


# ---------------------------------------------------------------- markdown
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def _md_details(summary: str, body: str, open_: bool) -> list[str]:
    """A folded block; the blank lines let GitHub render the markdown inside."""
    return [f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>", "",
            body, "", "</details>"]


def _md_figure_link(rel: str) -> str:
    src = html.escape(rel, quote=True)
    return (f'<a href="{src}"><img src="{src}" width="{THUMB_WIDTH}" '
            f'alt="{html.escape(Path(rel).name, quote=True)}"></a>')


def _md_score_cells(r: dict, with_original: bool) -> list[str]:
    c = r["claim"]
    first = r["span"] > 0
    role = " *(secondary)*" if c["role"] == "secondary" else ""
    claim = f"[{c['id']}](#{_anchor(c['id'])})" + (f" {c['statement']}{role}" if first else "")
    ours = "<br>".join(t + (f" → **{v}**" if v else "") for t, v in r["ours"])
    verdict = f"**{r['verdict']}**" + (f"<br>{r['expected']}" if r["expected"] else "")
    controls = "<br>".join(w for w, _, _ in r["controls"]) or "no control"
    cells = [claim, _opt(c["paper_value"]) if first else "″",
             f"{r['tier']}" + (f" · {r['case']}" if r["case"] else "")
             + (f"<br>*not run: {r['idle']}*" if r["idle"] else ""), ours, verdict, controls]
    cells += [_opt(r["original"])] if with_original else []
    return cells + [_md_figure_link(r["figure"]) if r["figure"] else ""]


def _md_scorecard(report: dict) -> list[str]:
    header = _score_header(report)
    with_original = "original rule" in header
    out = ["## Scorecard", ""] + [f"- **{t}**: {text or 'no records'}" for t, text in
                                  paper_glance(report)] + ["", _LEGEND]
    for title, rows in scorecard(report):
        out += ["", f"### {title}", "",
                _md_table(header, [_md_score_cells(r, with_original) for r in rows])]
    return out


def _md_record(c: dict) -> list[str]:
    """One case of a claim: verdict line, original rule, reason, flags, tables, figures."""
    out = ["", f'<a name="{_case_anchor(c)}"></a>', "", f"### {_case_title(c)}", "",
           f"**{c['verdict']}** · " + " · ".join(_facts(c))]
    if c["original"]:
        o = c["original"]
        out += ["", f"{o['label']}: **{o['verdict']}**{_original_facts(o)}"
                + (f" — {o['reason']}" if o["reason"] else "")]
    out += ["", f"{c['reason']}"]
    out += [""] + [f"- flag: {f}" for f in c["flags"]] if c["flags"] else []
    out += ["", _expected_line(c)]
    for title, tab, fold in _blocks(c):
        out += [""] + (_md_details(title, _md_table(*tab), diverged(c)) if fold
                       else [f"*{title}*", "", _md_table(*tab)])
    return out + [f"\n![{Path(f).name}]({f})" for f in c["figures"]]


def render_markdown(report: dict) -> str:
    """claims.md: title, provenance, the scorecard per paper, then the session header, verdict
    counts, the index of every record (folded) and one section per claim; figures linked
    relative to the reports dir (the file sits there), so they render on GitHub."""
    claims = report["claims"]
    out = [f"# {_title(report)}", ""]
    out += [_provenance(src, s) + "  " for src, s in _sessions(report)] + [""]
    out += _md_scorecard(report) + ["", "## Session"]
    for src, s in _sessions(report):
        out += ["", *([f"*{src}*", ""] if src else []), _md_table(["", ""], _header_rows(s))]
    out += ["", "## Summary", "", _md_table(*_count_rows(claims)), ""]
    out += _md_details(f"every record, one row each ({len(claims)}; claims and controls)",
                       _md_table(*_index_rows(claims)), False)
    for cid, group in itertools.groupby(claims, key=lambda c: c["id"]):
        group = list(group)
        first = group[0]
        out += ["", f'<a name="{_anchor(cid)}"></a>', "", f"## {cid} — {first['statement']}", "",
                f"*{first['paper'] or '—'}, {first['where'] or '—'}* · role {first['role']} · "
                f"statistic: {first['statistic'] or '—'}", "",
                f"- paper value: {_opt(first['paper_value'])}",
                f"- rule: {first['rule_text'] or '—'}"]
        for c in group:
            out += _md_record(c)
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- html
_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1340px;margin:1em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;vertical-align:top}th{background:#f2f2f2}h2{border-top:2px solid #ddd;padding-top:.6em}
h1{font-size:1.5em;margin:.2em 0}.prov{margin:.2em 0;font-size:12px}
.badge{padding:1px 7px;border-radius:9px;color:#fff;font-weight:600;white-space:nowrap}
.v-replicated{background:#2e7d32}.v-refuted{background:#c62828}.v-inconclusive{background:#ef8f00}
.v-insufficient_n{background:#5c6bc0}.v-error{background:#6a1b9a}.v-not_run{background:#9e9e9e}
.v-skipped{background:#78909c}.original{border-left:3px solid #999;padding-left:.5em}
.flags{color:#8a4b00}.ended-interrupted,.ended-failed{color:#c62828}
img{max-width:100%;border:1px solid #eee}figure{display:inline-block;margin:.5em}
.muted{color:#666}.missing{color:#c62828}
table.scorecard{font-size:12.5px;line-height:1.3;width:100%;margin-top:.2em}
.scorecard td{padding:3px 5px}.scorecard .claim{width:27%}.scorecard .pv{width:17%;color:#444}
.scorecard .ours{width:25%}.scorecard .ours div{margin-bottom:1px}.scorecard .badge{font-size:11px}
.scorecard img.thumb{width:%(thumb)spx;max-width:none;border:1px solid #ddd;display:block}
.scorecard .ctl{white-space:nowrap}.scorecard .case{width:13%}
ul.glance{margin:.3em 0;padding-left:1.2em;font-size:13px}
.scorecard tr.idle td{color:#888;padding-top:1px;padding-bottom:1px}
.ctl-bad{color:#c62828;font-weight:700}.ctl-ok{color:#2e7d32}
h3.paper{margin:.7em 0 0}.legend{font-size:12px;color:#555;margin:.2em 0}
details{margin:.3em 0}summary{cursor:pointer;font-style:italic}""".replace(
    "%(thumb)s", str(THUMB_WIDTH))


def _badge(verdict: str) -> str:
    return f'<span class="badge v-{html.escape(verdict)}">{html.escape(verdict)}</span>'


def _html_table(header: list[str], rows: list[list[str]], badge_cols: tuple[int, ...] = ()) -> str:
    def td(i, v):
        return f"<td>{_badge(v) if i in badge_cols and v in VERDICTS else html.escape(str(v))}</td>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(td(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _data_uri(base_dir: Path, rel: str) -> str | None:
    path = Path(rel) if Path(rel).is_absolute() else base_dir / rel
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None
    return f"data:{_MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"


def _img(base_dir: Path, rel: str) -> str:
    uri = _data_uri(base_dir, rel)
    if uri is None:
        return f'<p class="missing">figure missing: {html.escape(rel)}</p>'
    return (f'<figure id="{_anchor("fig", rel)}"><img src="{uri}" alt="{html.escape(rel)}">'
            f"<figcaption class=muted>{html.escape(rel)}</figcaption></figure>")


def _html_thumb(base_dir: Path, rel: str | None) -> str:
    """The key figure, small, linked to its full size in the claim's section."""
    uri = _data_uri(base_dir, rel) if rel else None
    if uri is None:
        return "" if rel is None else f'<span class="missing">missing: {html.escape(rel)}</span>'
    return (f'<a href="#{_anchor("fig", rel)}"><img class=thumb src="{uri}" '
            f'alt="{html.escape(rel)}"></a>')


def _html_score_row(r: dict, with_original: bool, base_dir: Path) -> str:
    e, c = html.escape, r["claim"]
    role = " <i class=muted>(secondary)</i>" if c["role"] == "secondary" else ""
    span = f' rowspan="{r["span"]}"' if r["span"] > 1 else ""
    lead = (f"<td class=claim{span}><a href='#{_anchor(c['id'])}'><b>{e(c['id'])}</b></a> "
            f"{e(c['statement'])}{role}</td><td class=pv{span}>{e(_opt(c['paper_value']))}</td>"
            if r["span"] else "")
    ours = "".join(f"<div>{e(t)}{' ' + _badge(v) if v else ''}</div>" for t, v in r["ours"])
    verdict = (_badge(r["verdict"]) if r["verdict"] else "—") + (
        f"<div class=muted>{e(r['expected'])}</div>" if r["expected"] else "")
    controls = "".join(
        f"<div class={'ctl-bad' if '✗' in w else 'ctl-ok'}><a href='#{a}' title='{e(case)}'>"
        f"{e(w)}</a></div>" for w, case, a in r["controls"]) or "<span class=muted>no control</span>"
    cells = [f"<td class=case><a href='#{r['anchor']}'>{e(r['tier'])}</a>"
             + (f" · {e(r['case'])}" if r["case"] else "")
             + (f"<div class=muted>not run: {e(r['idle'])}</div>" if r["idle"] else "") + "</td>",
             f"<td class=ours>{ours}</td>", f"<td>{verdict}</td>", f"<td class=ctl>{controls}</td>"]
    if with_original:
        cells.append(f"<td>{_badge(r['original']) if r['original'] else '—'}</td>")
    cells.append(f"<td>{_html_thumb(base_dir, r['figure'])}</td>")
    idle = " class=idle" if r["verdict"] == "not_run" else ""
    return f"<tr{idle}>{lead}{''.join(cells)}</tr>"


def _html_scorecard(report: dict, base_dir: Path) -> list[str]:
    header = _score_header(report)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    glance = "".join(f"<li><a href='#{_anchor(t)}'><b>{html.escape(t)}</b></a>: "
                     f"{html.escape(text or 'no records')}</li>" for t, text in paper_glance(report))
    out = [f"<ul class=glance>{glance}</ul>", f"<p class=legend>{html.escape(_LEGEND)}</p>"]
    for title, rows in scorecard(report):
        body = "".join(_html_score_row(r, "original rule" in header, base_dir) for r in rows)
        out += [f"<h3 class=paper id='{_anchor(title)}'>{html.escape(title)}</h3>",
                f"<table class=scorecard><tr>{head}</tr>{body}</table>"]
    return out


def _html_record(c: dict, base_dir: Path) -> list[str]:
    e = html.escape
    out = [f"<h3 id='{_case_anchor(c)}'>{e(_case_title(c))}</h3>",
           f"<p>{_badge(c['verdict'])} {e(' · '.join(_facts(c)))}</p>"]
    if c["original"]:
        o = c["original"]
        out.append(f"<p class=original>{e(o['label'])}: {_badge(o['verdict'])}"
                   f"{e(_original_facts(o))}<br>{e(o['reason'])}</p>")
    out.append(f"<p>{e(c['reason'])}</p>")
    if c["flags"]:
        items = "".join(f"<li>flag: {e(f)}</li>" for f in c["flags"])
        out.append(f"<ul class=flags>{items}</ul>")
    out.append(f"<p class=muted>{e(_expected_line(c))}</p>")
    for title, tab, fold in _blocks(c):
        out.append(f"<details{' open' if diverged(c) else ''}><summary>{e(title)}</summary>"
                   f"{_html_table(*tab)}</details>" if fold
                   else f"<p><i>{e(title)}</i></p>{_html_table(*tab)}")
    return out + [_img(base_dir, f) for f in c["figures"]]


def render_html(report: dict, *, base_dir) -> str:
    """claims.html: same content and order as claims.md, one file, figures embedded from
    `base_dir` (the scorecard's thumbnails link to them in the claims' sections)."""
    base_dir, claims, e = Path(base_dir), report["claims"], html.escape
    ended = e(str(report.get("session", {}).get("ended")))
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(_title(report))}</title>",
           f"<style>{_CSS}</style></head><body><h1 class='ended-{ended}'>{e(_title(report))}</h1>"]
    out += [f"<p class='prov muted'>{e(_provenance(src, s))}</p>" for src, s in _sessions(report)]
    out += _html_scorecard(report, base_dir) + ["<h2>Session</h2>"]
    for src, s in _sessions(report):
        out += ([f"<p><i>{e(src)}</i></p>"] if src else []) + [
            _html_table(["", ""], _header_rows(s))]
    out += ["<h2>Summary</h2>", _html_table(*_count_rows(claims)),
            f"<details><summary>every record, one row each ({len(claims)}; claims and controls)"
            f"</summary>{_html_table(*_index_rows(claims), badge_cols=(3, 4))}</details>"]
    for cid, group in itertools.groupby(claims, key=lambda c: c["id"]):
        group = list(group)
        first = group[0]
        out += [f"<h2 id='{_anchor(cid)}'>{e(cid)} — {e(first['statement'])}</h2>",
                f"<p class=muted>{e(str(first['paper'] or '—'))}, {e(str(first['where'] or '—'))}"
                f" · role {e(str(first['role']))} · statistic: {e(first['statistic'] or '—')}</p>",
                f"<p>paper value: {e(_opt(first['paper_value']))}<br>"
                f"rule: {e(first['rule_text'] or '—')}</p>"]
        for c in group:
            out += _html_record(c, base_dir)
    return "\n".join(out + ["</body></html>"]) + "\n"


# ---------------------------------------------------------------- write
def write_reports(report: dict, out_dir) -> dict[str, Path]:
    """claims.json, claims.md and claims.html into `out_dir` (created); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)
    return {"json": atomic_write(out_dir / "claims.json", text + "\n"),
            "md": atomic_write(out_dir / "claims.md", render_markdown(report)),
            "html": atomic_write(out_dir / "claims.html", render_html(report, base_dir=out_dir))}


def destination(final, ended: str) -> Path:
    """Where a session's set lands: `final` when it ended complete, else `<final>.<ended>`
    beside it (reports/latest.interrupted), so a partial set never replaces a complete one."""
    if ended not in ENDINGS:
        raise ValueError(f"session ended {ended!r}: allowed is one of {', '.join(ENDINGS)}")
    final = Path(final)
    return final if ended == "complete" else final.with_name(f"{final.name}.{ended}")


def publish_reports(report: dict, staging, final) -> dict[str, Path]:
    """Write the set into `staging`, then swap that whole directory (files and figures) in at
    `destination(final, ended)` under `<parent>/.<name>.lock`: concurrent sessions serialise, the
    last one's set wins whole, and a reader never sees files of two sessions mixed."""
    from filelock import FileLock  # lazily, like every use of the report writer
    staging, final = Path(staging), Path(final)
    dest = destination(final, (report.get("session") or {}).get("ended") or "complete")
    names = {k: p.name for k, p in write_reports(report, staging).items()}
    with FileLock(str(final.parent / f".{final.name}.lock")):
        swap_dir_in(staging, dest)
    return {k: dest / name for k, name in names.items()}


# ---------------------------------------------------------------- read back, merge
def load_report(path) -> dict:
    """A claims.json read back for rendering or comparing: its records normalised as at build
    time (an older file gains the newer fields' defaults); p's and order kept as written."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable claims.json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ValueError(f"{path}: not a claims.json (no 'claims' list at the top level)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {data.get('schema_version')!r}, this reader "
                         f"knows {SCHEMA_VERSION}")
    try:
        claims = [_normalise(r, None) for r in data["claims"]]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return {"schema_version": SCHEMA_VERSION, "session": _plain(data.get("session") or {}),
            "claims": claims}


def merge_reports(paths, out_dir) -> dict:
    """One report from several claims.json (e.g. reports/toy and reports/cpu): per (claim, tier)
    the records of the one file in which that tier ran (its not_run fill only where none ran);
    figure paths rebased to `out_dir`; p_holm/p_bh kept (each tier's family is one session's).
    The sessions are kept per file under `sources`."""
    loaded = [(Path(p), load_report(p)) for p in paths]
    order: dict[str, int] = {}
    chosen: dict[tuple, tuple[Path, bool, list]] = {}
    for path, rep in loaded:
        for key, recs in _by_claim_tier(rep["claims"]).items():
            order.setdefault(key[0], len(order))
            for c in recs:
                c["figures"] = [_rebase(f, path.parent, out_dir) for f in c["figures"]]
            ran, prev = any(c["verdict"] != "not_run" for c in recs), chosen.get(key)
            if prev is not None and ran and prev[1]:
                raise ValueError(f"{key[0]} [{key[1]}] ran in both {prev[0]} and {path}: "
                                 "merge files of different tiers")
            if prev is None or (ran and not prev[1]):
                chosen[key] = (path, ran, recs)
    claims = sorted((c for _, _, recs in chosen.values() for c in recs),
                    key=lambda c: (order[c["id"]], _tier_key(c["tier"]), c["kind"] != "claim"))
    return {"schema_version": SCHEMA_VERSION, "session": loaded[0][1]["session"] if loaded else {},
            "sources": [{"path": str(p), "session": rep["session"]} for p, rep in loaded],
            "claims": claims}


def _by_claim_tier(claims: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for c in claims:
        out.setdefault((c["id"], c["tier"]), []).append(c)
    return out


def _rebase(fig: str, src_dir: Path, out_dir) -> str:
    if Path(fig).is_absolute():
        return fig
    return os.path.relpath(Path(src_dir).resolve() / fig, Path(out_dir).resolve())


# ---------------------------------------------------------------- command line
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(2, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m core.report",
                description="Compare or (re)render claims.json files.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    d = sub.add_parser("diff", help="list every (claim, tier, case, kind) whose verdict, estimate "
                       "or interval changed; exit 0 identical, 1 changed, 2 bad input")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default exact)")
    d.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default exact)")
    r = sub.add_parser("render", help="write claims.md and claims.html into OUT_DIR from one or "
                       "more claims.json (several: merged, one file per tier)")
    r.add_argument("out_dir")
    r.add_argument("claims_json", nargs="+")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "diff":
            from core.report_diff import run_diff
            return run_diff(args.old, args.new, atol=args.atol, rtol=args.rtol)
        return _render(args.out_dir, args.claims_json)
    except ValueError as exc:
        print(f"python -m core.report {args.cmd}: {exc}", file=sys.stderr)
        return 2


def _render(out_dir, paths) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = merge_reports(paths, out) if len(paths) > 1 else _rebased(load_report(paths[0]),
                                                                    Path(paths[0]).parent, out)
    atomic_write(out / "claims.md", render_markdown(rep))
    atomic_write(out / "claims.html", render_html(rep, base_dir=out))
    print(f"wrote {out / 'claims.md'} and {out / 'claims.html'}")
    return 0


def _rebased(rep: dict, src_dir: Path, out_dir: Path) -> dict:
    for c in rep["claims"]:
        c["figures"] = [_rebase(f, src_dir, out_dir) for f in c["figures"]]
    return rep


if __name__ == "__main__":
    sys.exit(main())
