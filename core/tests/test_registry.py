"""Tests of core/registry.py and of claims/registry.toml itself (the pre-registration).

The real registry: 30 claims with exactly CLAIMS.md's ids (hard-coded here; shared/ is not part of the
repo), 16 primaries at alpha_i = 0.05 / 16, rules that core.stats.decide accepts, planned n that can
decide, the lead's fixed thresholds, a justification for every number CLAIMS.md left open.
The loader: each malformed variant of a small template fails with one line naming file, claim and field;
the hash follows the bytes; the cache follows the file.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import pickle
import re

import numpy as np
import pytest

from core import stats
from core.registry import (DATA_TYPES, DEFAULT_PATH, EXPECTABLE, leaf_rules, RULE_PARAMS, Claim, Expected, RegistryError,
                           load_registry)

IDS = ("AV-1", "AV-1b", "AV-2", "AV-3", "AV-4", "AV-5", "AV-6", "AV-7", "AV-8", "AV-9", "AV-10", "AV-11",
       "AV-12", "SD-1", "SD-2", "SD-3", "SD-4", "SD-5", "SD-6", "SD-7", "LS-1", "LS-2", "LS-3", "LS-4",
       "LS-5", "LS-6", "LS-7", "LS-8", "LS-9", "LS-10")
PRIMARIES = {"AV-1", "AV-3", "AV-5", "AV-6", "AV-8", "AV-9", "AV-10", "SD-1", "SD-2", "SD-5", "LS-1",
             "LS-2", "LS-4", "LS-5", "LS-7", "LS-10"}
TOY = {"AV-5", "AV-6", "AV-7", "LS-1", "LS-2", "LS-3", "LS-4"}


@pytest.fixture(scope="module")
def reg():
    return load_registry()


def _rules(claim: Claim):
    """(name, simple rule) for the claim's rule and supporting rules, IUT parts flattened."""
    for top, rule in (("rule", claim.rule), *((f"supporting.{k}", r) for k, r in claim.supporting.items())):
        parts = rule["parts"].items() if rule["type"] == "intersection_union" else ((None, rule),)
        yield from ((f"{top}.parts.{k}" if k else top, r) for k, r in parts)


# ---------------------------------------------------------------- the real registry
def test_real_registry_has_the_30_claims_in_order(reg):
    assert reg.ids == IDS and list(reg.claims) == list(IDS)
    assert reg.path == DEFAULT_PATH and reg.version == 1 and reg.created == "2026-11-23"
    assert load_registry() is reg and load_registry(DEFAULT_PATH) is reg  # cached


def test_16_primaries_share_the_family_alpha(reg):
    assert {c.id for c in reg.claims.values() if c.role == "primary"} == PRIMARIES
    assert reg.n_primary == 16 and reg.family_alpha == 0.05 and reg.bh_q == 0.10
    for cid, claim in reg.claims.items():
        want = 0.003125 if cid in PRIMARIES else 0.05
        assert reg.alpha_for(cid) == pytest.approx(want, abs=1e-15) == claim.alpha
    with pytest.raises(KeyError, match="unknown claim 'AV-99'"):
        reg.alpha_for("AV-99")


def test_tiers_and_planned_seeds(reg):
    for cid, c in reg.claims.items():
        assert c.tiers == (("toy",) if cid in TOY else ("cpu", "gpu")), cid
        if cid.startswith("AV") and cid not in TOY:
            assert c.seeds["cpu"] == 10, cid  # AV primaries and secondaries share the 10 fixture seeds
        if cid in PRIMARIES and cid not in TOY:
            assert c.seeds["cpu"] == 10 and c.seeds["gpu"] >= 5, cid
    toy = {cid: reg[cid].seeds["toy"] for cid in TOY}
    assert toy == {"AV-5": 200, "AV-6": 200, "AV-7": 50, "LS-1": 60, "LS-2": 100, "LS-3": 20, "LS-4": 20}
    assert reg["AV-6"].settings["runs"] == 200 and reg["LS-1"].settings["n_subspaces"] == 60


def test_rule_params_match_core_stats_signatures():
    for kind, (required, optional) in RULE_PARAMS.items():
        if kind == "intersection_union":
            continue
        sig = inspect.signature(getattr(stats, kind)).parameters.values()
        kw = {p.name: p.default is p.empty for p in sig if p.kind is p.KEYWORD_ONLY and p.name not in ("alpha", "rng")}
        assert {k for k, req in kw.items() if req} == set(required), kind
        assert {k for k, req in kw.items() if not req} == set(optional), kind


def _synthetic(rule, n=8):
    if rule["type"] == "intersection_union":
        return {k: _synthetic(r, n) for k, r in rule["parts"].items()}
    v = np.random.default_rng(0).normal(1.0, 0.5, n)
    return {"existence": {"successes": np.ones(n, bool)}, "paired": {"a": v, "b": v - 0.5},
            "median_paired": {"a": v, "b": v - 0.5}, "two_sample": {"a": v + 1, "b": v},
            "log_ratio": {"ratios": np.exp(v)}, "median_log_ratio": {"ratios": np.exp(v)},
            "trend": {"x": np.arange(n), "y": v}}.get(rule["type"], {"values": v})


def test_every_rule_goes_to_stats_decide_unchanged(reg):
    for cid, claim in reg.claims.items():
        for rule, alpha in ((claim.rule, reg.alpha_for(cid)),
                            *((r, reg.family_alpha) for r in claim.supporting.values())):
            assert "justification" not in json.dumps(rule), cid  # annotations stripped by the loader
            assert stats.decide(rule, alpha, _synthetic(rule)).verdict in stats.VERDICTS


def test_planned_n_can_replicate_every_existence_rule(reg):
    # Clopper-Pearson with all n successes has lower bound alpha^(1/n): the planned n must clear the bar
    for cid, claim in reg.claims.items():
        for name, rule in _rules(claim):
            if rule["type"] != "existence":
                continue
            alpha = reg.alpha_for(cid) if name.startswith("rule") else reg.family_alpha
            for tier, n in claim.seeds.items():
                params = {k: v for k, v in rule.items() if k != "type"}
                assert stats.existence(np.ones(n), alpha=alpha, **params).verdict == "replicated", (cid, name, tier)


def test_fixed_thresholds_of_the_lead(reg):
    r = {cid: reg[cid].rule for cid in IDS}
    assert r["AV-1"] == {"type": "existence", "claimed_above": 0.5, "refuted_below": 0.5, "require_all": True}
    assert r["AV-1b"]["claimed"] == 0.1 and r["AV-4"]["claimed"] == 0.8 and r["AV-12"]["claimed"] == 0.9
    assert (r["AV-3"]["direction"], r["AV-3"]["claimed"], r["AV-3"]["refuted"]) == ("less", math.log(0.5), math.log(0.9))
    assert r["AV-6"]["parts"]["symmetric_null"] == {"type": "median_equivalence", "low": -0.02, "high": 0.02}
    assert reg["AV-6"].original_rule["parts"]["symmetric_null"] == {"type": "equivalence", "low": -0.02, "high": 0.02}
    assert set(r["AV-9"]["parts"]) == {"train_higher", "test_lower"} and "accuracy" in reg["AV-9"].supporting
    sd5 = r["SD-5"]["parts"]
    assert sd5["sharper"] == {"type": "median_log_ratio", "claimed_factor": 10.0, "refuted_factor": 3.0, "base": 10.0}
    assert sd5["accuracy"] == {"type": "median_non_inferiority", "margin": 1.0}
    assert r["SD-1"]["parts"]["growth"]["claimed"] == pytest.approx(math.log(2))
    assert {p["claimed_above"] for p in r["LS-1"]["parts"].values()} == {0.9}
    assert set(r["LS-7"]["parts"]) == {"m_2", "m_5", "m_10"}
    s = reg["AV-8"].settings
    assert (s["n_points"], s["tau_abs"], s["tau_rel"], s["bn"]) == (41, 0.01, 0.05, "recompute")
    s = reg["AV-9"].settings
    assert (s["sgd_lr_fraction"], s["sgd_epochs_fraction"], s["authors_rule_reported"]) == (0.01, 0.2, True)


def test_he_definition1_settings_agree_across_claims(reg):
    ref = reg["AV-1"].settings
    assert ref["n_points"] == 61 and ref["k_directions"] == 20 and ref["delta_rise"] == 1.0
    for cid in ("AV-1b", "AV-2", "AV-3", "AV-4", "AV-12"):
        s = reg[cid].settings
        shared = {"family", "k_directions", "c_threshold", "r_frac", "delta_rise", "r_search_min", "r_search_max",
                  "r_search_points", "bn_mode"} & set(s)
        assert {k: s[k] for k in shared} == {k: ref[k] for k in shared}, cid
    assert reg["AV-1"].setting("bn_mode", "cpu") == "eval" and reg["AV-1"].setting("bn_mode", "gpu") == "recompute"
    assert reg["AV-7"].setting("authors.steps") == 30
    with pytest.raises(KeyError, match="no setting 'bn_mode'"):
        reg["AV-1"].setting("bn_mode")  # per-tier value needs a tier


@pytest.mark.parametrize("cid, key", [
    ("AV-1", "delta_rise"), ("AV-1", "seeds"), ("AV-3", "rule"), ("AV-3", "delta_max_frac"), ("AV-4", "radius_rule"),
    ("AV-5", "rule.parts.gain_exceeds_bound"), ("AV-6", "rule.parts.symmetric_null"), ("AV-6", "c"),
    ("AV-8", "tau_abs"), ("AV-8", "tau_rel"), ("AV-9", "sgd_lr_fraction"), ("AV-9", "sgd_epochs_fraction"),
    ("AV-10", "u_rand_family"), ("AV-11", "delta_rise"), ("AV-12", "from_fraction"), ("SD-1", "peak_definition"),
    ("SD-2", "lr_grid"), ("SD-2", "batch_grid"), ("SD-4", "gamma_small"), ("SD-5", "rule.parts.accuracy"),
    ("SD-6", "rule.parts.no_accuracy_gain"), ("LS-1", "seeds"), ("LS-1", "success_rel_tol"), ("LS-2", "cos_in"),
    ("LS-2", "cos_cross"), ("LS-2", "tau_high"), ("LS-2", "tau_low_rel"), ("LS-4", "short_definition"),
    ("LS-5", "tau_high"), ("LS-5", "tau_low_rel"), ("LS-5", "tau_low_abs"), ("LS-6", "label_change_share"),
    ("LS-7", "seeds"), ("LS-8", "fraction"), ("LS-9", "level"), ("LS-9", "l2_grid"),
    ("LS-10", "rule.parts.swa_works_low"),
])
def test_preregistered_numbers_carry_a_justification(reg, cid, key):
    claim = reg[cid]
    where = claim.annotations if key.split(".")[0] in ("rule", "supporting") else claim.settings["justification"]
    assert len(where.get(key, "").strip()) > 10, f"{cid}: no justification for {key!r}"


def test_expectations_and_revisions_carry_reasons(reg):
    # A recorded expectation or revision without its reason would hide why a bar or outcome moved.
    for c in reg.claims.values():
        assert all(e.reason.strip() for e in c.expected.values()), c.id
        assert all(r["why"].strip() and r["what"].strip() for r in c.revisions), c.id
    assert set(EXPECTABLE) < set(stats.VERDICTS)


def test_loaded_entries_are_read_only_and_serialisable(reg):
    claim = reg["AV-6"]
    with pytest.raises(TypeError, match="read-only"):
        claim.settings["c"] = 5.0
    with pytest.raises(TypeError):
        claim.rule["parts"]["bias"]["claimed"] = -1.0
    assert json.loads(json.dumps(claim.settings))["c_grid"] == [1.0, 2.0, 5.0, 10.0, 20.0]
    assert pickle.loads(pickle.dumps(claim)) == claim == copy.deepcopy(claim)


# ---------------------------------------------------------------- malformed variants of a small registry
TEMPLATE = """\
[meta]
version = 1
family_alpha = 0.05
bh_q = 0.10
n_primary = 1

[[claim]]
id = "AV-1"
paper = "he2019"
where = "§3.2"
statement = "statement one"
role = "primary"
alpha = 0.05
tiers = ["cpu", "gpu"]
statistic = "per seed any asymmetric"
unit = "seed"
rule_text = "lower bound > 0.5"
paper_value = ""
seeds = { cpu = 10, gpu = 5 }

[claim.rule]
type = "existence"
estimand = "probability of an asymmetric direction"
data_type = "binary"
claimed_above = 0.5
refuted_below = 0.5
justification = "why the bar"

[claim.settings]
k = 20
bn_mode = { cpu = "eval", gpu = "recompute" }

[claim.settings.justification]
k = "because"

[claim.expected.gpu]
verdict = "insufficient_n"
reason = "5 seeds cannot clear the bar"

[[claim]]
id = "LS-3"
paper = "fort2019"
where = "§3.3"
statement = "statement two"
role = "secondary"
tiers = ["toy"]
statistic = "max CV"
unit = "base point"
rule_text = "cv < 0.1 and monotone"
paper_value = ""
seeds = { toy = 20 }

[claim.rule]
type = "intersection_union"

[claim.rule.parts.cv]
type = "mean_threshold"
estimand = "mean max CV"
data_type = "positive_ratio"
direction = "less"
claimed = 0.1

[claim.rule.parts.mono]
type = "toy_tolerance"
estimand = "every base point (deterministic)"
data_type = "deterministic"
threshold = 0.0

[claim.supporting.trend]
type = "trend"
estimand = "Spearman association"
data_type = "real"
direction = "increasing"
"""
REVISION = '\n[[claim.revisions]]\ndate = "2026-12-01"\nwhat = "grid"\nwhy = "the paper uses 41 points"\n'
PARTS = TEMPLATE[TEMPLATE.index("[claim.rule.parts.cv]"):TEMPLATE.index("[claim.supporting")]


def _write(tmp_path, text, name="registry.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_template_is_valid(tmp_path):
    reg = load_registry(_write(tmp_path, TEMPLATE + REVISION))
    assert reg.ids == ("AV-1", "LS-3") and reg.alpha_for("AV-1") == 0.05 == reg.alpha_for("LS-3")
    assert reg["AV-1"].expected["gpu"] == Expected("insufficient_n", "5 seeds cannot clear the bar")
    assert reg["AV-1"].annotations == {"rule": "why the bar"} and "justification" not in reg["AV-1"].rule
    assert reg["LS-3"].revisions[0]["why"] == "the paper uses 41 points"


BAD = [  # (old, new, substrings the one-line message must contain)
    ("version = 1", "version = 1\nbogus = 2", ["meta", "'bogus'", "unknown"]),
    ("family_alpha = 0.05", "family_alpha = 1.5", ["meta", "'family_alpha'", "(0, 1)"]),
    ("bh_q = 0.10", "bh_q = 0.0", ["meta", "'bh_q'", "(0, 1)"]),
    ("n_primary = 1", "n_primary = 2", ["meta", "'n_primary'", "1 claims are primary"]),
    ("[meta]\nversion = 1\nfamily_alpha = 0.05\nbh_q = 0.10\nn_primary = 1\n", "", ["file", "'meta'", "missing"]),
    ('role = "secondary"', 'role = "tertiary"', ["claim 'LS-3'", "'role'", "'primary', 'secondary'"]),
    ('tiers = ["toy"]', 'tiers = ["tpu"]', ["claim 'LS-3'", "'tiers'", "'toy', 'cpu', 'gpu'"]),
    ('tiers = ["toy"]', 'tiers = []', ["claim 'LS-3'", "'tiers'"]),
    ('type = "toy_tolerance"', 'type = "toy_law"', ["claim 'LS-3'", "'rule.parts.mono.type'", "'existence'"]),
    ('type = "toy_tolerance"', 'type = "intersection_union"', ["claim 'LS-3'", "'rule.parts.mono.type'"]),
    ("refuted_below = 0.5\n", "", ["claim 'AV-1'", "'rule.refuted_below'", "missing"]),
    ("threshold = 0.0\n", "", ["claim 'LS-3'", "'rule.parts.mono.threshold'", "missing"]),
    ("refuted_below = 0.5", "refuted_below = 0.5\nmargin = 0.1", ["claim 'AV-1'", "'rule.margin'", "unknown"]),
    ("refuted_below = 0.5", "refuted_below = 0.5\nalpha = 0.01", ["claim 'AV-1'", "'rule.alpha'"]),
    ("claimed_above = 0.5", 'claimed_above = "half"', ["claim 'AV-1'", "'rule.claimed_above'", "finite number"]),
    ("refuted_below = 0.5", "refuted_below = 0.7", ["claim 'AV-1'", "'rule.claimed_above'", "refuted_below"]),
    ('direction = "less"', 'direction = "lower"', ["claim 'LS-3'", "'rule.parts.cv.direction'", "'greater', 'less'"]),
    ('direction = "increasing"', 'direction = "upward"', ["claim 'LS-3'", "'supporting.trend.direction'",
                                                            "'increasing', 'decreasing'"]),
    ("claimed = 0.1", "claimed = 0.1\nrefuted = 0.05", ["claim 'LS-3'", "'rule.parts.cv.refuted'", "far side"]),
    (PARTS, "", ["claim 'LS-3'", "'rule.parts'", "missing"]),
    (PARTS, "[claim.rule.parts]\n", ["claim 'LS-3'", "'rule.parts'", "empty"]),
    ('justification = "why the bar"', 'justification = " "', ["claim 'AV-1'", "'rule.justification'"]),
    ('unit = "base point"\n', "", ["claim 'LS-3'", "'unit'", "missing"]),
    ('statement = "statement two"', 'statement = ""', ["claim 'LS-3'", "'statement'", "non-empty"]),
    ('unit = "seed"', 'unit = "seed"\nseed = 3', ["claim 'AV-1'", "'seed'", "unknown"]),
    ('data_type = "binary"\n', "", ["claim 'AV-1'", "'rule.data_type'", "estimand"]),
    ('data_type = "binary"', 'data_type = "bool"', ["claim 'AV-1'", "'rule.data_type'", "'binary'"]),
    ('data_type = "deterministic"', 'data_type = "real"', ["claim 'LS-3'", "'rule.parts.mono.data_type'",
                                                           "deterministic quantities only"]),
    ('role = "primary"', 'role = "primary"\n', []),  # sanity: a harmless edit still loads (checked below)
    ("\nalpha = 0.05", "\nalpha = 1.2", ["claim 'AV-1'", "'alpha'", "(0, 1)"]),
    ("\nalpha = 0.05", "\nalpha = 0.01", ["claim 'AV-1'", "'alpha'", "primary gets 0.05"]),
    ('id = "LS-3"\npaper = "fort2019"', 'id = "AV-1"\npaper = "he2019"', ["claim 'AV-1'", "'id'", "duplicates"]),
    ('id = "LS-3"', 'id = "XX-3"', ["claim 'XX-3'", "'id'", "AV-<n>"]),
    ('id = "LS-3"', 'id = "LS3"', ["claim 'LS3'", "'id'"]),
    ('id = "LS-3"\n', "", ["claim #2 (no id)", "'id'", "missing"]),
    ('paper = "fort2019"', 'paper = "he2019"', ["claim 'LS-3'", "'paper'", "'fort2019'"]),
    ("seeds = { toy = 20 }", "seeds = { toy = 0 }", ["claim 'LS-3'", "'seeds.toy'", "positive integer"]),
    ("seeds = { toy = 20 }", "seeds = { toy = 2.5 }", ["claim 'LS-3'", "'seeds.toy'", "positive integer"]),
    ("seeds = { toy = 20 }", "seeds = { toy = true }", ["claim 'LS-3'", "'seeds.toy'", "positive integer"]),
    ("seeds = { cpu = 10, gpu = 5 }", "seeds = { cpu = 10 }", ["claim 'AV-1'", "'seeds.gpu'", "missing"]),
    ("seeds = { cpu = 10, gpu = 5 }", "seeds = { cpu = 10, gpu = 5, toy = 1 }", ["claim 'AV-1'", "'seeds.toy'"]),
    ('verdict = "insufficient_n"', 'verdict = "passed"', ["claim 'AV-1'", "'expected.gpu.verdict'", "'refuted'"]),
    ('verdict = "insufficient_n"', 'verdict = "error"', ["claim 'AV-1'", "'expected.gpu.verdict'"]),
    ('reason = "5 seeds cannot clear the bar"\n', "", ["claim 'AV-1'", "'expected.gpu.reason'", "missing"]),
    ('reason = "5 seeds cannot clear the bar"', 'reason = ""', ["claim 'AV-1'", "'expected.gpu.reason'"]),
    ("[claim.expected.gpu]", "[claim.expected.toy]", ["claim 'AV-1'", "'expected.toy'", "does not list"]),
    ('k = "because"', 'kk = "because"', ["claim 'AV-1'", "'settings.justification.kk'", "names no setting"]),
    ('bn_mode = { cpu = "eval", gpu = "recompute" }', 'bn_mode = { cpu = "eval", toy = "eval" }',
     ["claim 'AV-1'", "'settings.bn_mode'", "'toy'"]),
]


@pytest.mark.parametrize("old, new, needles", BAD, ids=[f"{i:02d}" for i in range(len(BAD))])
def test_malformed_variant_fails_with_one_line_naming_claim_and_field(tmp_path, old, new, needles):
    assert TEMPLATE.count(old) == 1, old
    path = _write(tmp_path, TEMPLATE.replace(old, new))
    if not needles:
        assert load_registry(path).ids == ("AV-1", "LS-3")
        return
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path.resolve()))
    for needle in needles:
        assert needle in msg, f"{needle!r} not in: {msg}"


@pytest.mark.parametrize("why, date, needle", [
    ("so that it passes", "2026-12-01", "revisions[0].why"),
    ("grid", "yesterday", "revisions[0].date"),
])
def test_bad_revision(tmp_path, why, date, needle):
    text = TEMPLATE + REVISION.replace("the paper uses 41 points", why).replace("2026-12-01", date)
    with pytest.raises(RegistryError, match=re.escape(f"claim 'LS-3': field '{needle}'")):
        load_registry(_write(tmp_path, text))


def test_toml_syntax_error_names_the_line(tmp_path):
    path = _write(tmp_path, TEMPLATE.replace("k = 20", "k = = 20"))
    line = TEMPLATE.splitlines().index("k = 20") + 1
    with pytest.raises(RegistryError, match=rf"TOML syntax error.*\(at line {line}, column") as err:
        load_registry(path)
    assert str(path.resolve()) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "missing.toml")
    assert issubclass(RegistryError, ValueError)


def test_hash_follows_the_bytes_and_cache_follows_the_file(tmp_path):
    path = _write(tmp_path, TEMPLATE)
    first = load_registry(path)
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_registry(str(path)) is first  # unchanged file: the cached object
    path.write_text(TEMPLATE.replace('where = "§3.3"', 'where = "§3.3, Fig. 2"'), encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime even on coarse clocks
    second = load_registry(path)
    assert second is not first and second.sha256 != first.sha256
    assert second.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and second["LS-3"].where == "§3.3, Fig. 2"


def test_every_leaf_rule_states_estimand_and_data_type(reg):
    """DESIGN.md "Statistics": each rule names its estimand and the data type of its per-unit values, and a
    point-estimate rule (toy_tolerance) is only ever used on a deterministic quantity."""
    for cid, claim in reg.claims.items():
        for fld, rule in leaf_rules(claim):
            d = claim.described[fld]
            assert d["estimand"] and d["data_type"] in DATA_TYPES, (cid, fld)
            assert (rule["type"] == "toy_tolerance") == (d["data_type"] == "deterministic"), (cid, fld)


def test_planned_n_can_decide_every_sign_test(reg):
    """n units never give p < 2^-n: every median rule must be able to replicate at every tier's planned n
    when every unit lies beyond the threshold (else it is insufficient_n by construction)."""
    for cid, claim in reg.claims.items():
        for fld, rule in leaf_rules(claim):
            if not rule["type"].startswith("median_"):
                continue
            alpha = reg.alpha_for(cid) if fld.startswith("rule") else reg.family_alpha
            for tier, n in claim.seeds.items():
                assert stats.sign_rank(n, alpha) >= 1, (cid, fld, tier, n)


def test_original_rule_needs_a_revision_and_differs(reg, tmp_path):
    revised = [c for c in reg.claims.values() if c.original_rule is not None]
    assert {"AV-1", "AV-1b", "AV-10", "LS-4"} <= {c.id for c in revised}
    for c in revised:
        assert any(r["date"] == "2026-12-01" for r in c.revisions), c.id
    text = DEFAULT_PATH.read_text()
    bad = tmp_path / "registry.toml"
    start = text.index('id = "AV-2"')
    block = text[start:text.index("[[claim]]", start)]
    cut = block.replace(block[block.index("[[claim.revisions]]"):block.index("[claim.expected")], "")
    bad.write_text(text.replace(block, cut))
    with pytest.raises(RegistryError, match=r"claim 'AV-2': field 'original_rule' needs a \[\[claim.revisions\]\]"):
        load_registry(bad)
