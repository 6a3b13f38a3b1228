"""The one shared harness every claim test goes through.

A claim module computes per-seed numbers with `core` probes and hands them here; the harness

1. takes the claim's pre-registered rule and its Bonferroni share α_i from `claims/registry.toml`
   (never from literals in the test),
2. decides with `core.stats.decide`,
3. attaches one JSON record per (claim, tier, case) to the test item (`user_properties`, so it
   survives pytest-xdist) for the report plugin, and
4. turns the verdict into the pytest outcome (DESIGN.md, "Statistics"):
   replicated -> pass; the verdict the registry records as this tier's expectation -> xfail
   (strict: any other verdict fails, and "replicated" against a recorded non-replication fails too);
   anything else -> fail, with the rule's own reason ("ratio 0.71 [0.64, 0.80] < required 10 ->
   refuted").

Negative controls go through `check_control`: the same rule on a landscape where the claim is
false; the test fails iff the control comes out "replicated".

A claim test over trained seeds reads ensemble -> per-seed numbers -> check through `claim_case`:

    c = claim_case(request, "AV-8", tier, case, net, figure_dir)
    seeds = c.seeds(need=("swa", "sgd_from_swa"))       # the first n planned seeds that finished
    ok = [probe(net, i) for i in seeds]
    c.check(data={"successes": ok}, per_seed={...}, figures=[...])   # + the seeds' status table

Revised rules (DESIGN.md "Pre-registration"): when a `[[claim.revisions]]` entry replaced a rule that
already had results, the registry keeps it as `[claim.original_rule]`; the harness decides it too, on
`original_data` (the originally registered probe's numbers when the probe changed) or on the same
data, and records that verdict beside the revised one (`original` in the record). It never decides the
pytest outcome.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from core import stats
from core.registry import Claim, load_registry

__all__ = ["claim_of", "check_claim", "check_control", "claim_case", "ClaimCase", "RECORD_KEY"]

RECORD_KEY = "claim_record"  # the user_properties name the report plugin reads


def claim_of(claim_id: str) -> Claim:
    """The registry entry of `claim_id` (rule, settings, seeds, expectations)."""
    return load_registry()[claim_id]


def check_claim(request, claim_id: str, *, tier: str, case: str, data: Mapping[str, Any],
                per_seed: Mapping[str, Sequence[float]], figures: Sequence[Any] = (),
                tables: Mapping[str, list] | None = None,
                supporting_data: Mapping[str, Any] | None = None,
                n_used: int | None = None, original_data: Mapping[str, Any] | None = None,
                flags: Sequence[str] = ()) -> stats.Result:
    """Decide a claim case with its pre-registered rule, record it, and set the pytest outcome.
    `original_data`: the data the originally registered rule/probe gives (default: `data`); `flags`:
    short notes on units that count as no evidence, shown under the reason."""
    result, record = _decide_and_record(request, claim_id, tier, case, "claim", data, per_seed,
                                        figures, tables, supporting_data, n_used,
                                        original_data=original_data, flags=flags)
    expected = record["expected"]
    if result.verdict == "replicated" and expected in (None, "replicated"):
        return result
    if expected is not None and expected != "replicated" and result.verdict == expected:
        pytest.xfail(f"{claim_id} [{tier}] {case}: {result.verdict} as the registry expects "
                     f"({record['expected_reason']}); {result.reason}")
    want = expected or "replicated"
    pytest.fail(f"{claim_id} [{tier}] {case}: {result.verdict}, registry expects {want}: "
                f"{result.reason}", pytrace=False)


def check_control(request, claim_id: str, *, tier: str, case: str, data: Mapping[str, Any],
                  per_seed: Mapping[str, Sequence[float]], figures: Sequence[Any] = (),
                  tables: Mapping[str, list] | None = None,
                  n_used: int | None = None) -> stats.Result:
    """Run the claim's rule on a negative control; fail iff it comes out "replicated"."""
    result, _ = _decide_and_record(request, claim_id, tier, case, "control", data, per_seed,
                                   figures, tables, None, n_used)
    if result.verdict == "replicated":
        pytest.fail(f"negative control {claim_id} [{tier}] {case} came out replicated — the rule "
                    f"or the probe cannot tell a false claim from a true one: {result.reason}",
                    pytrace=False)
    return result


@dataclass(frozen=True)
class ClaimCase:
    """One (claim, tier, case) of a claim test over a trained ensemble (fixtures/trained.py, or anything
    with `usable(claim, tier, need)` and `status_rows(n)`): which seeds it may use, where its figures go,
    and its check with the seeds' status table attached (a diverged seed is listed, never dropped
    silently)."""

    request: Any
    claim: Claim
    tier: str
    case: str
    net: Any
    figure_dir: Path | None = None

    def seeds(self, need: Sequence[str] = ("final",)) -> list[int]:
        """Indices of the first n-planned seeds that finished with every role in `need`."""
        return self.net.usable(self.claim, self.tier, need)

    def status_rows(self) -> list[dict]:
        return self.net.status_rows(int(self.claim.seeds[self.tier]))

    def figure(self, what: str) -> Path:
        if self.figure_dir is None:
            raise ValueError(f"{self.claim.id}: claim_case(..., figure_dir) was not given, so no figure path")
        return Path(self.figure_dir) / f"{self.claim.id}_{self.tier}_{self.case}_{what}.png"

    def check(self, *, data, per_seed, tables: Mapping[str, list] | None = None, **kw) -> stats.Result:
        """check_claim with the seeds' status table added."""
        return check_claim(self.request, self.claim.id, tier=self.tier, case=self.case, data=data,
                           per_seed=per_seed, tables={**(tables or {}), "seeds": self.status_rows()}, **kw)

    def control(self, label: str, *, data, per_seed, **kw) -> stats.Result:
        """check_control on the case's negative control `label`."""
        return check_control(self.request, self.claim.id, tier=self.tier, case=f"control: {label} ({self.case})",
                             data=data, per_seed=per_seed, **kw)


def claim_case(request, claim_id: str, tier: str, case: str, net, figure_dir=None) -> ClaimCase:
    return ClaimCase(request, claim_of(claim_id), tier, case, net, figure_dir)


def _decide_and_record(request, claim_id, tier, case, kind, data, per_seed, figures, tables,
                       supporting_data, n_used, *, original_data=None, flags=()):
    start = time.perf_counter()
    registry = load_registry()
    claim = registry[claim_id]
    if tier not in claim.tiers:
        raise ValueError(f"{claim_id} is registered for tiers {list(claim.tiers)}, not {tier!r}")
    if original_data is not None and claim.original_rule is None:
        raise ValueError(f"{claim_id}: original_data given, but the registry keeps no original_rule for it")
    alpha = registry.alpha_for(claim_id)
    result = stats.decide(claim.rule, alpha, data)
    supporting = _supporting(claim, supporting_data or {})
    record = _record(claim, tier, case, kind, alpha, result, per_seed, figures, tables, supporting,
                     n_used, request)
    # the original rule's verdict matters for claims; a control's data need not fit the old rule's shape
    record["original"] = None if kind == "control" else _original(
        claim, alpha, data if original_data is None else original_data)
    record["flags"] = [str(f) for f in flags]
    record["wall_s"] = _wall_s(request, start)
    request.node.user_properties.append((RECORD_KEY, json.dumps(record, allow_nan=True)))
    return result, record


def _supporting(claim: Claim, supporting_data: Mapping[str, Any]) -> list[dict]:
    """Secondary sub-rules ("(S)" in CLAIMS.md) at the family α, reported beside, never deciding."""
    out = []
    for name, data in supporting_data.items():
        if name not in claim.supporting:
            raise KeyError(f"{claim.id}: no supporting rule {name!r} in the registry; "
                           f"known: {sorted(claim.supporting)}")
        res = stats.decide(claim.supporting[name], load_registry().family_alpha, data)
        out.append({"name": name, **_brief(res)})
    return out


def _original(claim: Claim, alpha: float, data: Mapping[str, Any]) -> dict | None:
    """The verdict of the rule as first registered, on the data it was registered for (report only)."""
    if claim.original_rule is None:
        return None
    res = stats.decide(claim.original_rule, alpha, data)
    return {"label": "original rule (as first registered)", "rule": _rule_text(claim.original_rule),
            **_brief(res), "parts": [{"name": n, **_brief(r)} for n, r in res.parts]}


def _rule_text(rule: Mapping) -> str:
    if rule["type"] == "intersection_union":
        return "intersection_union(" + ", ".join(f"{k}: {_rule_text(r)}" for k, r in rule["parts"].items()) + ")"
    return rule["type"] + "(" + ", ".join(f"{k}={v}" for k, v in rule.items() if k != "type") + ")"


def _brief(res: stats.Result) -> dict:
    return {"estimate": _num(res.estimate), "ci": [_num(res.ci[0]), _num(res.ci[1])],
            "p": _num(res.p), "verdict": res.verdict, "reason": res.reason, "n": res.n}


def _record(claim, tier, case, kind, alpha, result, per_seed, figures, tables, supporting, n_used,
            request) -> dict:
    expected = claim.expected.get(tier)
    return {
        "id": claim.id, "tier": tier, "case": case, "kind": kind, "role": claim.role,
        "statement": claim.statement, "paper_value": claim.paper_value,
        "statistic": claim.statistic, "rule_text": claim.rule_text,
        "estimate": _num(result.estimate), "ci": [_num(result.ci[0]), _num(result.ci[1])],
        "p": _num(result.p), "alpha": alpha, "n_planned": int(claim.seeds.get(tier, 0)),
        "n_used": int(result.n if n_used is None else n_used),
        "per_seed": {k: [_num(v) for v in vals] for k, vals in per_seed.items()},
        "verdict": result.verdict, "reason": result.reason,
        "expected": None if kind == "control" or expected is None else expected.verdict,
        "expected_reason": None if kind == "control" or expected is None else expected.reason,
        "parts": [{"name": n, **_brief(r)} for n, r in result.parts],
        "supporting": supporting, "figures": [_rel(request, f) for f in figures],
        "tables": dict(tables or {}), "nodeid": request.node.nodeid,
    }


def _num(x) -> float | None:
    """JSON-safe float: NaN/inf become None (the report prints them as '—')."""
    x = float(x)
    return x if math.isfinite(x) else None


def _rel(request, path) -> str:
    """Figure path relative to the reports dir (the report embeds/links it from there)."""
    from pathlib import Path
    reports = Path(request.config.getoption("reports_dir", default="reports/latest") or ".")
    reports = reports if reports.is_absolute() else Path(str(request.config.rootpath)) / reports
    p = Path(path)
    try:
        return str(p.resolve().relative_to(reports.resolve()))
    except ValueError:
        return str(p)


def _wall_s(request, start: float) -> float:
    """Wall time of the whole test so far (fixtures included when pytest recorded their start)."""
    return round(time.perf_counter() - getattr(request.node, "_claims_t0", start), 3)
