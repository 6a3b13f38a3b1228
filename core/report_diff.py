"""Compare two claims.json files: what changed between two runs' verdicts and numbers.

Records are matched by (claim, tier, case, kind) (a repeated key by its occurrence). Per matched
record: the verdict, the estimate and the interval; each intersection–union part (by name) and the
original rule's result the same way. Records, parts or an original result on one side only are
listed as added or removed. Numbers compare exactly unless a tolerance is given
(`math.isclose(old, new, rel_tol=rtol, abs_tol=atol)`); null only equals null.

`python -m core.report diff OLD NEW [--atol A] [--rtol R]`: one line per change, then a count;
exit 0 when nothing changed, 1 when something did, 2 on bad input (one line).
"""
from __future__ import annotations

import math
from typing import Mapping

from core.report import load_report

__all__ = ["diff_reports", "run_diff"]


def diff_reports(old: Mapping, new: Mapping, *, atol: float = 0.0, rtol: float = 0.0) -> list[str]:
    """Lines "~ key: what changed", "+ key: added (...)", "- key: removed (...)"; [] if identical."""
    if atol < 0 or rtol < 0 or not (math.isfinite(atol) and math.isfinite(rtol)):
        raise ValueError(f"tolerances must be finite and >= 0, got atol={atol}, rtol={rtol}")
    a, b = _keyed(old["claims"]), _keyed(new["claims"])
    lines = []
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in b:
            lines.append(f"- {_name(key)}: removed ({_brief(a[key])})")
        elif key not in a:
            lines.append(f"+ {_name(key)}: added ({_brief(b[key])})")
        elif changes := _record_changes(a[key], b[key], atol, rtol):
            lines.append(f"~ {_name(key)}: " + "; ".join(changes))
    return lines


def run_diff(old_path, new_path, *, atol: float = 0.0, rtol: float = 0.0) -> int:
    """Print the differences of two claims.json files; 0 identical, 1 changed (ValueError: bad)."""
    old, new = load_report(old_path), load_report(new_path)
    lines = diff_reports(old, new, atol=atol, rtol=rtol)
    for line in lines:
        print(line)
    if not lines:
        print(f"identical: {len(old['claims'])} records, verdicts, estimates and intervals")
        return 0
    counts = {s: sum(line.startswith(s) for line in lines) for s in "~+-"}
    print(f"{counts['~']} changed, {counts['+']} added, {counts['-']} removed")
    return 1


def _keyed(claims: list[dict]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for c in claims:
        base = (c["id"], c["tier"], c.get("case") or "", c.get("kind") or "claim")
        n = 1
        while (*base, n) in out:
            n += 1
        out[(*base, n)] = c
    return out


def _name(key: tuple) -> str:
    cid, tier, case, kind, n = key
    return (f"{cid} [{tier}] {case or '(no case)'} ({kind})" + (f" #{n}" if n > 1 else ""))


def _brief(c: Mapping) -> str:
    return f"{c.get('verdict')} {_fmt(c.get('estimate'))} {_fmt_ci(c.get('ci'))}"


def _record_changes(a: Mapping, b: Mapping, atol: float, rtol: float) -> list[str]:
    out = _changes(a, b, atol, rtol, "")
    parts_a = {str(p.get("name")): p for p in a.get("parts") or []}
    parts_b = {str(p.get("name")): p for p in b.get("parts") or []}
    for name in [*parts_a, *(n for n in parts_b if n not in parts_a)]:
        if name not in parts_b or name not in parts_a:
            out.append(f"part {name} {'removed' if name not in parts_b else 'added'}")
        else:
            out += _changes(parts_a[name], parts_b[name], atol, rtol, f"part {name}: ")
    oa, ob = a.get("original"), b.get("original")
    if (oa is None) != (ob is None):
        out.append(f"original rule {'removed' if ob is None else 'added'}")
    elif oa is not None:
        out += _changes(oa, ob, atol, rtol, "original rule: ")
    return out


def _changes(a: Mapping, b: Mapping, atol: float, rtol: float, prefix: str) -> list[str]:
    out = []
    if a.get("verdict") != b.get("verdict"):
        out.append(f"{prefix}verdict {a.get('verdict')} -> {b.get('verdict')}")
    if not _close(a.get("estimate"), b.get("estimate"), atol, rtol):
        out.append(f"{prefix}estimate {_fmt(a.get('estimate'))} -> {_fmt(b.get('estimate'))}")
    ca, cb = _ci(a.get("ci")), _ci(b.get("ci"))
    if not all(_close(x, y, atol, rtol) for x, y in zip(ca, cb)):
        out.append(f"{prefix}interval {_fmt_ci(ca)} -> {_fmt_ci(cb)}")
    return out


def _ci(ci) -> list:
    """A record's interval as two entries; null and [] are [null, null]."""
    return (list(ci or []) + [None, None])[:2]


def _close(x, y, atol: float, rtol: float) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
    if not numbers:
        return x == y
    return math.isclose(x, y, rel_tol=rtol, abs_tol=atol)


def _fmt(x) -> str:
    """Full precision: a change below the report's 3 digits must still show."""
    return "null" if x is None else format(x, ".12g") if isinstance(x, float) else str(x)


def _fmt_ci(ci) -> str:
    return "[" + ", ".join(_fmt(v) for v in _ci(ci)) + "]"
