"""Load and validate `claims/registry.toml`, the suite's pre-registration (DESIGN.md "Pre-registration").

`[meta]` + one `[[claim]]` per claim (CONTRACT.md "Registry API"). A claim's level comes from its role,
never from a test: primary alpha_i = family_alpha / n_primary (Bonferroni, 0.05 / 16 = 0.003125),
secondary alpha_i = family_alpha. Every problem raises one `RegistryError` line naming file, claim, field
and what is allowed: "claims/registry.toml: claim 'AV-3': field 'rule.direction' is 'up'; allowed: ...".
Rules are checked against the params `core.stats.decide` takes; a rule's `justification` moves to
`Claim.annotations`, so `claim.rule` goes to `stats.decide` as is. Loaded data is read-only; `load_registry`
caches on (path, mtime, size); `Registry.sha256` hashes the file's bytes (stamped into every report).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Claim", "Expected", "Registry", "RegistryError", "FrozenDict", "load_registry", "leaf_rules",
           "DEFAULT_PATH", "TIERS", "ROLES", "PAPERS", "EXPECTABLE", "RULE_PARAMS", "DATA_TYPES"]

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "claims" / "registry.toml"
TIERS = ("toy", "cpu", "gpu")
ROLES = ("primary", "secondary")
PAPERS = {"AV": "he2019", "SD": "jastrzebski2019", "LS": "fort2019"}  # id prefix -> paper key
EXPECTABLE = ("replicated", "refuted", "inconclusive", "insufficient_n")  # error / not_run: never expected
_ID = re.compile(r"^(AV|SD|LS)-[1-9][0-9]*[a-z]?$")
# rule type -> (required, optional) params exactly as core.stats.decide takes them (alpha: the registry's)
RULE_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "existence": (("claimed_above", "refuted_below"), ("require_all",)), "paired": (("direction",), ("margin",)),
    "mean_threshold": (("direction", "claimed"), ("refuted",)), "equivalence": (("low", "high"), ()),
    "log_ratio": (("claimed_factor", "refuted_factor"), ("base", "direction")), "non_inferiority": (("margin",), ()),
    "trend": ((), ("direction",)), "toy_tolerance": (("threshold",), ("direction",)),
    "median_threshold": (("direction", "claimed"), ("refuted",)), "median_paired": (("direction",), ("margin",)),
    "median_log_ratio": (("claimed_factor", "refuted_factor"), ("base", "direction")),
    "median_equivalence": (("low", "high"), ()), "median_non_inferiority": (("margin",), ()),
    "two_sample": (("direction",), ()),
    "intersection_union": (("parts",), ())}
# every leaf rule names what it estimates and the data type of its per-unit values (DESIGN.md "Statistics");
# the calibration in core/tests draws its null families from the data type
DATA_TYPES = ("binary", "bounded", "count", "positive_ratio", "real", "deterministic")
_DESCRIBE = ("estimand", "data_type")
_TEXT = ("where", "statement", "statistic", "unit", "rule_text")
_FIELDS = ("id", "paper", *_TEXT, "role", "tiers", "paper_value", "seeds", "rule")
_OPTIONAL = ("alpha", "supporting", "expected", "revisions", "settings", "original_rule")
_META = (("version", "family_alpha", "bh_q", "n_primary"), ("created", "note"))
# per-type consistency: (check(params, sign), field named on failure, what is allowed); sign -1 for "less"
_CONSTRAINTS = {
    "existence": (lambda p, s: 0 <= p["refuted_below"] <= p["claimed_above"] < 1, "claimed_above",
                  "0 <= refuted_below <= claimed_above < 1"),
    "mean_threshold": (lambda p, s: s * (p.get("refuted", p["claimed"]) - p["claimed"]) <= 0, "refuted",
                       "refuted on the far side of claimed (<= for greater, >= for less)"),
    "log_ratio": (lambda p, s: min(p["claimed_factor"], p["refuted_factor"], p.get("base", 10)) > 0
                  and p.get("base", 10) > 1 and s * (p["refuted_factor"] - p["claimed_factor"]) <= 0, "refuted_factor",
                  "positive factors, refuted_factor on the far side of claimed_factor, base > 1"),
    "equivalence": (lambda p, s: p["low"] < p["high"], "low", "low < high"),
    "non_inferiority": (lambda p, s: p["margin"] >= 0, "margin", "a margin >= 0"),
}
_CONSTRAINTS.update({"median_threshold": _CONSTRAINTS["mean_threshold"], "median_log_ratio": _CONSTRAINTS["log_ratio"],
                     "median_equivalence": _CONSTRAINTS["equivalence"],
                     "median_non_inferiority": _CONSTRAINTS["non_inferiority"]})


class RegistryError(ValueError):
    """A malformed registry: one line naming the file, the claim and the field, and what is allowed."""


class FrozenDict(dict):
    """A read-only dict (still JSON-serialisable and picklable); nested values are frozen too."""

    def _readonly(self, *_a, **_k):
        raise TypeError("registry entries are read-only (pre-registered); edit claims/registry.toml")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly

    def __reduce__(self):
        return FrozenDict, (dict(self),)


def _freeze(x: Any) -> Any:
    if isinstance(x, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x.isoformat() if isinstance(x, (dt.date, dt.time)) else x


@dataclass(frozen=True)
class Expected:
    verdict: str  # one of EXPECTABLE: the verdict a tier is known to give
    reason: str   # why (shown with the xfail)


@dataclass(frozen=True)
class Claim:
    """One pre-registered claim (CLAIMS.md row): statement, rule, planned n per tier, probe settings."""
    id: str
    paper: str
    where: str
    statement: str
    role: str
    tiers: tuple[str, ...]
    statistic: str
    unit: str
    rule_text: str
    paper_value: str
    seeds: Mapping[str, int]              # n planned per tier (units of replication)
    rule: Mapping[str, Any]               # type + params, ready for core.stats.decide
    supporting: Mapping[str, Mapping]     # name -> rule, reported at family_alpha, never deciding
    expected: Mapping[str, Expected]      # tier -> known verdict
    settings: Mapping[str, Any]           # pre-registered probe settings (per-tier values as {tier: v})
    revisions: tuple[Mapping[str, str], ...] = ()
    alpha: float = math.nan               # resolved alpha_i (same as Registry.alpha_for)
    annotations: Mapping[str, str] = field(default_factory=FrozenDict)  # "rule.parts.x" -> justification
    described: Mapping[str, Mapping[str, str]] = field(default_factory=FrozenDict)  # "rule.parts.x" -> estimand, data_type
    original_rule: Mapping[str, Any] | None = None  # the rule as first registered, when a revision replaced it

    def setting(self, key: str, tier: str | None = None) -> Any:
        """settings[key] (dotted for nested tables); a per-tier value {cpu: .., gpu: ..} resolved for `tier`."""
        value = dict(_walk(self.settings)).get(key, KeyError)
        if value is KeyError or (_per_tier(value) and tier not in value):
            raise KeyError(f"claim {self.id!r}: no setting {key!r} (tier {tier!r}); known: {', '.join(self.settings)}")
        return value[tier] if _per_tier(value) else value


@dataclass(frozen=True)
class Registry:
    """The validated registry; `alpha_for(id)` is the only source of a claim's alpha_i."""
    claims: Mapping[str, Claim]  # id -> Claim, in file order
    family_alpha: float
    bh_q: float
    sha256: str                  # of the file's bytes
    path: Path
    version: int = 1
    n_primary: int = 0
    created: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.claims)

    def alpha_for(self, claim_id: str) -> float:
        """Primary: family_alpha / n_primary (Bonferroni share); secondary: family_alpha."""
        role = self[claim_id].role
        return self.family_alpha / self.n_primary if role == "primary" else self.family_alpha

    def __getitem__(self, claim_id: str) -> Claim:
        if claim_id not in self.claims:
            raise KeyError(f"unknown claim {claim_id!r}; known: {', '.join(self.claims)}")
        return self.claims[claim_id]


_CACHE: dict[str, tuple[tuple[int, int], Registry]] = {}


def load_registry(path: str | Path | None = None) -> Registry:
    """The validated registry at `path` (default: the repo's claims/registry.toml), cached on mtime+size."""
    p = Path(path or DEFAULT_PATH).resolve()
    if not p.is_file():
        raise RegistryError(f"{p}: registry file not found; expected claims/registry.toml")
    stamp = (p.stat().st_mtime_ns, p.stat().st_size)
    if _CACHE.get(str(p), (None,))[0] != stamp:
        _CACHE[str(p)] = (stamp, _parse(p, p.read_bytes()))
    return _CACHE[str(p)][1]


# ---------------------------------------------------------------- parsing and validation
def _need(ctx: str, ok: bool, fld: str, msg: str) -> None:
    """ctx = "<path>: claim 'AV-3'": every failure is one line naming file, claim, field and what is allowed."""
    if not ok:
        raise RegistryError(f"{ctx}: field '{fld}' {msg}".replace("\n", " "))


def _parse(path: Path, raw: bytes) -> Registry:
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RegistryError(f"{path}: TOML syntax error: {e}".replace("\n", " ")) from None
    _keys(f"{path}: file", "", doc, ("meta", "claim"), ())
    meta, entries = _meta(f"{path}: meta", doc["meta"]), doc["claim"]
    _need(f"{path}: file", isinstance(entries, list) and bool(entries), "claim", "must be [[claim]] tables")
    n_primary = sum(isinstance(c, dict) and c.get("role") == "primary" for c in entries)
    _need(f"{path}: meta", n_primary == meta["n_primary"], "n_primary", f"is {meta['n_primary']} but {n_primary} "
          "claims are primary; every alpha_i depends on it, update it deliberately")
    claims: dict[str, Claim] = {}
    for i, entry in enumerate(entries, 1):
        cid = entry.get("id") if isinstance(entry, dict) else None
        ctx = f"{path}: " + (f"claim {cid!r}" if isinstance(cid, str) else f"claim #{i} (no id)")
        claim = _claim(ctx, entry, meta)
        _need(ctx, claim.id not in claims, "id", "duplicates an earlier claim's id; ids must be unique")
        claims[claim.id] = claim
    return Registry(claims=FrozenDict(claims), family_alpha=meta["family_alpha"], bh_q=meta["bh_q"],
                    sha256=hashlib.sha256(raw).hexdigest(), path=path, version=meta["version"],
                    n_primary=meta["n_primary"], created=str(_freeze(meta.get("created", ""))))


def _meta(ctx: str, meta: Any) -> dict:
    _need(ctx, isinstance(meta, dict), "meta", "must be a table with version, family_alpha, bh_q, n_primary")
    _keys(ctx, "", meta, *_META)
    for name in ("family_alpha", "bh_q"):
        _need(ctx, 0 < _num(ctx, name, meta[name]) < 1, name, f"is {meta[name]!r}; allowed: a number in (0, 1)")
    for name in ("version", "n_primary"):
        _need(ctx, type(meta[name]) is int and meta[name] >= 1, name, f"is {meta[name]!r}; allowed: a positive integer")
    return meta


def _claim(ctx: str, c: Any, meta: dict) -> Claim:
    _need(ctx, isinstance(c, dict), "claim", "must be a table")
    _keys(ctx, "", c, _FIELDS, _OPTIONAL)
    prefix = c["id"].split("-")[0] if isinstance(c["id"], str) else ""
    _need(ctx, isinstance(c["id"], str) and bool(_ID.match(c["id"])), "id", f"is {c['id']!r}; allowed: AV-<n>, "
             "SD-<n> or LS-<n> (optional lower-case suffix, e.g. AV-1b)")
    _need(ctx, c["paper"] == PAPERS[prefix], "paper", f"is {c['paper']!r}; allowed for {prefix}-: {PAPERS[prefix]!r}")
    for name in _TEXT:
        _need(ctx, _text(c[name]), name, "must be a non-empty string")
    _need(ctx, isinstance(c["paper_value"], str), "paper_value", "must be a string (\"\" when the paper gives none)")
    _need(ctx, c["role"] in ROLES, "role", f"is {c['role']!r}; allowed: {_list(ROLES)}")
    tiers = c["tiers"]
    ok = isinstance(tiers, list) and bool(tiers) and all(t in TIERS for t in tiers) and len(set(tiers)) == len(tiers)
    _need(ctx, ok, "tiers", f"is {tiers!r}; allowed: a non-empty list of distinct tiers from {_list(TIERS)}")
    alpha = meta["family_alpha"] / (meta["n_primary"] if c["role"] == "primary" else 1)
    if "alpha" in c:
        _need(ctx, 0 < _num(ctx, "alpha", c["alpha"]) < 1, "alpha", f"is {c['alpha']!r}; allowed: a number in (0, 1)")
        _need(ctx, math.isclose(c["alpha"], alpha, rel_tol=1e-9), "alpha", f"is {c['alpha']!r} but a {c['role']} gets "
                 f"{alpha:.6g} (family_alpha{' / n_primary' if c['role'] == 'primary' else ''})")
    notes: dict[str, str] = {}
    described: dict[str, dict] = {}
    rule = _rule(ctx, "rule", c["rule"], notes, described=described)
    support = c.get("supporting", {})
    _need(ctx, isinstance(support, dict), "supporting", "must be a table of named rules")
    supporting = {k: _rule(ctx, f"supporting.{k}", v, notes, described=described) for k, v in support.items()}
    original = c.get("original_rule")
    if original is not None:
        original = _rule(ctx, "original_rule", original, {}, described={})
        _need(ctx, bool(c.get("revisions")), "original_rule", "needs a [[claim.revisions]] entry saying what replaced "
              "it and why")
    return Claim(id=c["id"], paper=c["paper"], where=c["where"], statement=c["statement"], role=c["role"],
                 tiers=tuple(tiers), statistic=c["statistic"], unit=c["unit"], rule_text=c["rule_text"],
                 paper_value=c["paper_value"], seeds=_seeds(ctx, c["seeds"], tiers), rule=_freeze(rule),
                 supporting=_freeze(supporting), expected=_expected(ctx, c.get("expected", {}), tiers),
                 settings=_freeze(_settings(ctx, c.get("settings", {}), tiers)),
                 revisions=_revisions(ctx, c.get("revisions", [])), alpha=alpha, annotations=_freeze(notes),
                 described=_freeze(described), original_rule=None if original is None else _freeze(original))


def _seeds(ctx: str, seeds: Any, tiers: tuple[str, ...]) -> Mapping[str, int]:
    _need(ctx, isinstance(seeds, dict), "seeds", "must be a table {tier = n}, e.g. { cpu = 10, gpu = 5 }")
    for t in (*seeds, *tiers):
        _need(ctx, t in tiers, f"seeds.{t}", f"names a tier the claim does not list; tiers: {_list(tiers)}")
        _need(ctx, t in seeds, f"seeds.{t}", "is missing; every listed tier needs its planned n")
        n = seeds[t]
        _need(ctx, type(n) is int and n >= 1, f"seeds.{t}", f"is {n!r}; allowed: a positive integer")
    return FrozenDict(seeds)


def _rule(ctx: str, fld: str, rule: Any, notes: dict, nested: bool = False, *, described: dict) -> dict:
    """Check one rule table against RULE_PARAMS; return it without annotations (justification -> `notes`,
    estimand and data_type -> `described`, both keyed by the rule's dotted field)."""
    _need(ctx, isinstance(rule, dict), fld, "must be a table with 'type' and the rule's params")
    kind = rule.get("type")
    allowed = [k for k in RULE_PARAMS if not (nested and k == "intersection_union")]
    _need(ctx, kind in allowed, f"{fld}.type", f"is {kind!r}; allowed: {_list(allowed)}")
    _need(ctx, "alpha" not in rule, f"{fld}.alpha", "is not a rule param; alpha comes from [meta] and the role")
    params = {k: v for k, v in rule.items() if k not in ("type", "justification", *_DESCRIBE)}
    _keys(ctx, fld, params, *RULE_PARAMS[kind])
    if "justification" in rule:
        _need(ctx, _text(rule["justification"]), f"{fld}.justification", "must be a non-empty one-line string")
        notes[fld] = rule["justification"]
    if kind != "intersection_union":
        _check_params(ctx, fld, kind, params)
        if not fld.startswith("original_rule"):
            described[fld] = _description(ctx, fld, rule)
        return {"type": kind, **params}
    parts = params["parts"]
    _need(ctx, isinstance(parts, dict) and bool(parts), f"{fld}.parts", "is empty; an intersection_union needs "
             "at least one [<rule>.parts.<name>] table")
    return {"type": kind, "parts": {k: _rule(ctx, f"{fld}.parts.{k}", v, notes, True, described=described)
                                    for k, v in parts.items()}}


def _description(ctx: str, fld: str, rule: dict) -> dict:
    """A leaf rule's estimand (what its interval is about) and the data type of its per-unit values."""
    for k in _DESCRIBE:
        _need(ctx, _text(rule.get(k)), f"{fld}.{k}", "is missing; every rule states its estimand and the data type "
              f"of its per-unit values ({_list(DATA_TYPES)})")
    _need(ctx, rule["data_type"] in DATA_TYPES, f"{fld}.data_type", f"is {rule['data_type']!r}; allowed: "
          f"{_list(DATA_TYPES)}")
    _need(ctx, (rule["data_type"] == "deterministic") == (rule["type"] == "toy_tolerance"), f"{fld}.data_type",
          f"is {rule['data_type']!r} for a {rule['type']} rule; toy_tolerance (a point estimate) is for deterministic "
          "quantities only, and a deterministic quantity needs no interval (DESIGN.md)")
    return {k: rule[k] for k in _DESCRIBE}


def leaf_rules(claim: "Claim"):
    """(dotted field, leaf rule) for the claim's rule and supporting rules: what the calibration covers."""
    def walk(fld, rule):
        if rule["type"] == "intersection_union":
            for k, r in rule["parts"].items():
                yield from walk(f"{fld}.parts.{k}", r)
        else:
            yield fld, rule
    yield from walk("rule", claim.rule)
    for name, r in claim.supporting.items():
        yield from walk(f"supporting.{name}", r)


def _check_params(ctx: str, fld: str, kind: str, p: dict) -> None:
    directions = ("increasing", "decreasing") if kind == "trend" else ("greater", "less")
    for k, v in p.items():
        if k in ("direction", "require_all"):
            ok, allowed = (v in directions, _list(directions)) if k == "direction" else (type(v) is bool, "true, false")
            _need(ctx, ok, f"{fld}.{k}", f"is {v!r}; allowed: {allowed}")
        else:
            _num(ctx, f"{fld}.{k}", v)
    ok, key, allowed = _CONSTRAINTS.get(kind, (lambda p, s: True, "type", ""))  # paired/trend/toy: no relation
    _need(ctx, ok(p, -1 if p.get("direction") == "less" else 1), f"{fld}.{key}", f"is {p.get(key)!r}; "
          f"allowed: {allowed} (rule {', '.join(f'{k}={v!r}' for k, v in p.items())})")


def _settings(ctx: str, settings: Any, tiers: tuple[str, ...]) -> dict:
    """Free-form probe settings: per-tier values use listed tiers; every justification names a setting."""
    _need(ctx, isinstance(settings, dict), "settings", "must be a table of pre-registered probe settings")
    why = settings.get("justification", {})
    _need(ctx, isinstance(why, dict), "settings.justification", "must be a table: setting name -> one line")
    known = dict(_walk({k: v for k, v in settings.items() if k != "justification"}))
    for key, v in known.items():
        bad = sorted(set(v) - set(tiers)) if _per_tier(v) else []
        _need(ctx, not bad, f"settings.{key}", f"has a value for tier {bad[0] if bad else ''!r}, which the claim "
                 f"does not list; tiers: {_list(tiers)}")
    for key, line in why.items():
        _need(ctx, _text(line), f"settings.justification.{key}", "must be a non-empty string")
        ok = key in known or key in ("seeds", *(f"seeds.{t}" for t in tiers))
        _need(ctx, ok, f"settings.justification.{key}", "names no setting; allowed: a key of [claim.settings] "
                 "(dotted for nested tables) or 'seeds'")
    return settings


def _expected(ctx: str, expected: Any, tiers: tuple[str, ...]) -> Mapping[str, Expected]:
    _need(ctx, isinstance(expected, dict), "expected", "must be tables [claim.expected.<tier>] with verdict, reason")
    for tier, e in expected.items():
        fld = f"expected.{tier}"
        _need(ctx, tier in tiers, fld, f"names a tier the claim does not list; tiers: {_list(tiers)}")
        _need(ctx, isinstance(e, dict), fld, "must be a table with verdict and reason")
        _keys(ctx, fld, e, ("verdict", "reason"), ())
        _need(ctx, e["verdict"] in EXPECTABLE, f"{fld}.verdict", f"is {e['verdict']!r}; allowed: {_list(EXPECTABLE)}")
        _need(ctx, _text(e["reason"]), f"{fld}.reason", "must say why this verdict is expected (non-empty string)")
    return FrozenDict({t: Expected(e["verdict"], e["reason"]) for t, e in expected.items()})


def _revisions(ctx: str, revisions: Any) -> tuple[Mapping[str, str], ...]:
    _need(ctx, isinstance(revisions, list), "revisions", "must be [[claim.revisions]] tables with date, what, why")
    for i, r in enumerate(revisions):
        fld = f"revisions[{i}]"
        _need(ctx, isinstance(r, dict), fld, "must be a table with date, what, why")
        _keys(ctx, fld, r, ("date", "what", "why"), ())
        iso = isinstance(r["date"], dt.date) or bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(r["date"])))
        _need(ctx, iso, f"{fld}.date", f"is {r['date']!r}; allowed: an ISO date YYYY-MM-DD")
        for k in ("what", "why"):
            _need(ctx, _text(r[k]), f"{fld}.{k}", "must be a non-empty string")
        _need(ctx, not re.search(r"so (that )?it pass", r["why"], re.I), f"{fld}.why", "gives passing as the "
              "reason; a revision's reason is never the result (DESIGN.md)")
    return tuple(_freeze(r) for r in revisions)


# ---------------------------------------------------------------- small helpers
def _keys(ctx: str, fld: str, table: dict, required, optional) -> None:
    """Every required key present, no key outside required + optional (typos fail loudly)."""
    prefix = f"{fld}." if fld else ""
    for k in required:
        _need(ctx, k in table, prefix + k, f"is missing; required: {_list(required)}")
    for k in table:
        _need(ctx, k in (*required, *optional), prefix + k, f"is unknown; allowed: {_list((*required, *optional))}")


def _num(ctx: str, fld: str, v: Any) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    _need(ctx, ok, fld, f"is {v!r}; allowed: a finite number")
    return float(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _per_tier(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v) and set(v) <= set(TIERS)


def _walk(table: Mapping, prefix: str = ""):
    """(dotted key, value) for every entry of a nested table, tables included."""
    for k, v in table.items():
        yield prefix + k, v
        if isinstance(v, Mapping):
            yield from _walk(v, f"{prefix}{k}.")


def _list(items) -> str:
    return ", ".join(repr(i) for i in items)
