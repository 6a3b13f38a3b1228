"""Claim reports: records + registry -> claims.json / claims.md / claims.html.

compute  `build_report`: normalise the run's records (one per (claim, tier, case), made by
         `core.harness`), add a `not_run` record per tier for every registry claim that has none,
         and add the multiplicity columns (DESIGN.md, "Statistics"): per tier, Holm over ALL registry
         primaries -> `p_holm`, Benjamini–Hochberg over all secondaries -> `p_bh`, one p per claim
         = the max p over its non-control cases in that tier, p = 1 for a claim (or case) without one.
present  `render_markdown`, `render_html` (self-contained: figures embedded as base64 data URIs);
         the first line says how the session ended; a record's verdict under the claim's
         originally registered rule (`original`) and its `flags` are shown beside its verdict.
write    `write_reports`: the three files into one directory, each atomically;
         `publish_reports`: a session's whole set (files and figures) is written into a fresh
         staging directory and swapped in at once under a lock, so two sessions never mix files; an
         interrupted or failed session lands beside the last complete set (`<dir>.interrupted`),
         never over it.
The schema is documented field by field in reports/README.md; change both together.
"""
from __future__ import annotations

import base64
import datetime
import html
import importlib.metadata
import itertools
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.atomic import atomic_write, swap_dir_in
from core.stats import VERDICTS as RULE_VERDICTS, benjamini_hochberg, holm

__all__ = ["SCHEMA_VERSION", "RECORD_FIELDS", "TIERS", "VERDICTS", "ENDINGS", "session_info",
           "build_report", "write_reports", "destination", "publish_reports", "render_markdown",
           "render_html", "atomic_write", "format_estimate", "case_label"]

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
        "device": _device(), "args": [str(a) for a in args], "markexpr": markexpr or "",
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
            ["versions", vers], ["command", " ".join(["pytest", *s.get("args", [])])],
            ["tiers run", ", ".join(s.get("tiers_run", [])) or "—"]]


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
    rows = [[str(i), *(_num(v[i]) if i < len(v) else "" for v in per_seed.values())]
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


def _blocks(c: dict) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """The titled tables of one record, in reading order, empty ones left out."""
    blocks = [("per seed", _per_seed_rows(c["per_seed"])), ("parts", _result_rows(c["parts"])),
              ("supporting (secondary rules, never change the verdict)",
               _result_rows(c["supporting"]))]
    if c["original"]:
        blocks.append((f"parts under the {c['original']['label']}",
                       _result_rows(c["original"]["parts"])))
    blocks += [(f"table: {name}", _dict_rows(rows)) for name, rows in c["tables"].items()]
    return [(title, tab) for title, tab in blocks if tab[1]]


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


# ---------------------------------------------------------------- markdown
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(esc, r)) + " |" for r in rows])


def render_markdown(report: dict) -> str:
    """claims.md: header, verdict counts, index, then one section per claim; figures linked
    relative to the reports dir (the file sits there)."""
    claims = report["claims"]
    out = [f"# {_title(report)}", "", _md_table(["", ""], _header_rows(report["session"])), "",
           "## Summary", "", _md_table(*_count_rows(claims)), "", _md_table(*_index_rows(claims))]
    for cid, group in itertools.groupby(claims, key=lambda c: c["id"]):
        group = list(group)
        first = group[0]
        out += ["", f"## {cid} — {first['statement']}", "",
                f"*{first['paper'] or '—'}, {first['where'] or '—'}* · role {first['role']} · "
                f"statistic: {first['statistic'] or '—'}", "",
                f"- paper value: {_opt(first['paper_value'])}",
                f"- rule: {first['rule_text'] or '—'}"]
        for c in group:
            out += ["", f"### {_case_title(c)}", "",
                    f"**{c['verdict']}** · " + " · ".join(_facts(c))]
            if c["original"]:
                o = c["original"]
                out += ["", f"{o['label']}: **{o['verdict']}**{_original_facts(o)}"
                        + (f" — {o['reason']}" if o["reason"] else "")]
            out += ["", f"{c['reason']}"]
            out += [""] + [f"- flag: {f}" for f in c["flags"]] if c["flags"] else []
            out += ["", _expected_line(c)]
            for title, tab in _blocks(c):
                out += ["", f"*{title}*", "", _md_table(*tab)]
            out += [f"\n![{Path(f).name}]({f})" for f in c["figures"]]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- html
_CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;vertical-align:top}th{background:#f2f2f2}h2{border-top:2px solid #ddd;padding-top:.6em}
.badge{padding:1px 7px;border-radius:9px;color:#fff;font-weight:600}
.v-replicated{background:#2e7d32}.v-refuted{background:#c62828}.v-inconclusive{background:#ef8f00}
.v-insufficient_n{background:#5c6bc0}.v-error{background:#6a1b9a}.v-not_run{background:#9e9e9e}
.v-skipped{background:#78909c}.original{border-left:3px solid #999;padding-left:.5em}
.flags{color:#8a4b00}.ended-interrupted,.ended-failed{color:#c62828}
img{max-width:100%;border:1px solid #eee}figure{display:inline-block;margin:.5em}
.muted{color:#666}.missing{color:#c62828}"""


def _badge(verdict: str) -> str:
    return f'<span class="badge v-{html.escape(verdict)}">{html.escape(verdict)}</span>'


def _html_table(header: list[str], rows: list[list[str]], badge_cols: tuple[int, ...] = ()) -> str:
    def td(i, v):
        return f"<td>{_badge(v) if i in badge_cols and v in VERDICTS else html.escape(str(v))}</td>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(td(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(base_dir: Path, rel: str) -> str:
    path = Path(rel) if Path(rel).is_absolute() else base_dir / rel
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<p class="missing">figure missing: {html.escape(rel)}</p>'
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return (f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(rel)}">'
            f"<figcaption class=muted>{html.escape(rel)}</figcaption></figure>")


def render_html(report: dict, *, base_dir) -> str:
    """claims.html: same content as claims.md, one file, figures embedded from `base_dir`."""
    base_dir, claims, e = Path(base_dir), report["claims"], html.escape
    ended = e(str(report.get("session", {}).get("ended")))
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(_title(report))}</title>",
           f"<style>{_CSS}</style></head><body><h1 class='ended-{ended}'>{e(_title(report))}</h1>",
           _html_table(["", ""], _header_rows(report["session"])), "<h2>Summary</h2>",
           _html_table(*_count_rows(claims)), _html_table(*_index_rows(claims), badge_cols=(3, 4))]
    for cid, group in itertools.groupby(claims, key=lambda c: c["id"]):
        group = list(group)
        first = group[0]
        pv = _opt(first["paper_value"])
        out += [f"<h2 id='{e(cid)}'>{e(cid)} — {e(first['statement'])}</h2>",
                f"<p class=muted>{e(str(first['paper'] or '—'))}, {e(str(first['where'] or '—'))}"
                f" · role {e(str(first['role']))} · statistic: {e(first['statistic'] or '—')}</p>",
                f"<p>paper value: {e(str(pv))}<br>rule: {e(first['rule_text'] or '—')}</p>"]
        for c in group:
            out += [f"<h3>{e(_case_title(c))}</h3>",
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
            for title, tab in _blocks(c):
                out += [f"<p><i>{e(title)}</i></p>", _html_table(*tab)]
            out += [_img(base_dir, f) for f in c["figures"]]
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
