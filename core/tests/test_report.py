"""Reports: records -> claims.json / .md / .html, not_run fills, Holm/BH, atomic writes, figures.

Uses the real registry when `core.registry` and claims/registry.toml are there, else a stand-in
with the 30 ids and roles of CLAIMS.md (same attributes as `core.registry.Registry`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from core import plots, report

# ids and roles of CLAIMS.md; toy-only claims marked
_ROLES = {"AV-1": "P", "AV-1b": "S", "AV-2": "S", "AV-3": "P", "AV-4": "S", "AV-5": "Pt",
          "AV-6": "Pt", "AV-7": "St", "AV-8": "P", "AV-9": "P", "AV-10": "P", "AV-11": "S",
          "AV-12": "S", "SD-1": "P", "SD-2": "P", "SD-3": "S", "SD-4": "S", "SD-5": "P",
          "SD-6": "S", "SD-7": "S", "LS-1": "Pt", "LS-2": "Pt", "LS-3": "St", "LS-4": "Pt",
          "LS-5": "P", "LS-6": "S", "LS-7": "P", "LS-8": "S", "LS-9": "S", "LS-10": "P"}


@dataclass(frozen=True)
class _Expected:
    verdict: str
    reason: str


@dataclass(frozen=True)
class _Claim:
    id: str
    role: str
    tiers: tuple
    seeds: dict
    expected: dict = field(default_factory=dict)
    statement: str = "a claim"
    paper: str = "he2019"
    where: str = "§3"
    paper_value: str | None = None
    statistic: str = "per-seed rate"
    unit: str = "seed"
    rule_text: str = "lower bound > 0.5"


@dataclass(frozen=True)
class _Registry:
    claims: dict
    family_alpha: float = 0.05
    bh_q: float = 0.10
    sha256: str = "0" * 64
    path: Path = Path("fake/registry.toml")

    def alpha_for(self, claim_id):
        n = sum(c.role == "primary" for c in self.claims.values())
        return self.family_alpha / n if self.claims[claim_id].role == "primary" else self.family_alpha


def _fake_registry() -> _Registry:
    claims = {}
    for cid, code in _ROLES.items():
        tiers = ("toy",) if code.endswith("t") else ("cpu", "gpu")
        expected = {"gpu": _Expected("inconclusive", "needs paper scale")} if cid == "SD-5" else {}
        claims[cid] = _Claim(cid, "primary" if code[0] == "P" else "secondary", tiers,
                             {t: 10 for t in tiers}, expected)
    return _Registry(claims)


@pytest.fixture(scope="module")
def registry():
    try:
        from core.registry import load_registry
        return load_registry()
    except (ImportError, FileNotFoundError):
        return _fake_registry()


def _ids(registry, role):
    return [cid for cid, c in registry.claims.items() if c.role == role]


def _record(cid, case, p, *, verdict="replicated", kind="claim", figures=(), **extra):
    return {"id": cid, "tier": "cpu", "case": case, "kind": kind, "estimate": 0.8,
            "ci": [0.7, float("nan")], "p": p, "n_used": 3, "per_seed": {"rate": [0.7, 0.8, 0.9]},
            "verdict": verdict, "reason": f"{cid} {case}: reason text", "figures": list(figures),
            "parts": [{"name": "bias", "estimate": 0.1, "ci": [0.0, 0.2], "p": 0.01,
                       "verdict": "replicated", "reason": "ok"}],
            "tables": {"robustness by direction family": [{"family": "paper", "rate": 0.9},
                                                          {"family": "gauss", "rate": 0.4}]},
            "wall_s": 1.25, "outcome": "pass", **extra}


@pytest.fixture(scope="module")
def written(registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    fig = plots.loss_along_direction(out / "figures" / "a.png", np.linspace(-1, 1, 21),
                                     np.linspace(-1, 1, 21) ** 2, slopes=(0.5, 1.5), r=0.3, R=1.0,
                                     title="test")
    prim, sec = _ids(registry, "primary"), _ids(registry, "secondary")
    records = [_record(prim[0], "c1", 0.001, figures=[str(fig.relative_to(out))]),
               _record(prim[0], "control", 0.3, verdict="inconclusive", kind="control"),
               _record(prim[1], "c1", 0.01), _record(prim[1], "c2", 0.02, verdict="inconclusive"),
               _record(prim[2], "deterministic", None),
               _record(sec[0], "c1", 0.004)]
    session = report.session_info(rootdir=out, registry=registry, args=["claims"], tiers={"cpu"})
    rep = report.build_report(records, registry, session)
    return out, rep, report.write_reports(rep, out)


def test_json_round_trip_and_schema(written):
    out, rep, paths = written
    loaded = json.loads(paths["json"].read_text())
    assert loaded == rep and loaded["schema_version"] == report.SCHEMA_VERSION
    assert {"git_sha", "registry_sha256", "versions", "device", "date_utc"} <= set(rep["session"])
    assert all(set(report.RECORD_FIELDS) <= set(c) for c in loaded["claims"])
    first = loaded["claims"][0]
    assert first["ci"] == [0.7, None]  # NaN never reaches the JSON
    assert first["statement"] and first["alpha"] is not None  # filled from the registry


def test_every_registry_claim_appears_with_not_run_filled(written, registry):
    _, rep, _ = written
    assert {c["id"] for c in rep["claims"]} == set(registry.claims)
    assert len(registry.claims) == 30
    ran = {_ids(registry, "primary")[i] for i in range(3)} | {_ids(registry, "secondary")[0]}
    for cid, claim in registry.claims.items():
        if cid in ran:
            continue
        recs = [c for c in rep["claims"] if c["id"] == cid]
        assert sorted(c["tier"] for c in recs) == sorted(claim.tiers)
        assert all(c["verdict"] == "not_run" and c["outcome"] is None for c in recs)


def _holm(ps):
    """Independent oracle: step-down Holm."""
    order, m, out, run = np.argsort(ps), len(ps), np.empty(len(ps)), 0.0
    for j, i in enumerate(order):
        run = max(run, min(1.0, (m - j) * ps[i]))
        out[i] = run
    return out


def test_holm_over_all_primaries_with_p_one_for_not_run(written, registry):
    _, rep, _ = written
    prim = _ids(registry, "primary")
    family = np.ones(len(prim))
    family[0], family[1] = 0.001, 0.02          # max over prim[1]'s two cases
    want = dict(zip(prim, _holm(family)))
    cpu = {(c["id"], c["case"]): c for c in rep["claims"] if c["tier"] == "cpu"}
    assert cpu[(prim[0], "c1")]["p_holm"] == pytest.approx(want[prim[0]])
    assert cpu[(prim[1], "c1")]["p_holm"] == cpu[(prim[1], "c2")]["p_holm"] == pytest.approx(
        want[prim[1]])
    assert cpu[(prim[0], "control")]["p_holm"] is None          # controls are outside the family
    assert cpu[(prim[2], "deterministic")]["p_holm"] is None    # ran without a p (toy law)
    not_run = [c for c in rep["claims"] if c["verdict"] == "not_run" and c["role"] == "primary"]
    assert not_run and all(c["p_holm"] == 1.0 and c["p_bh"] is None for c in not_run)


def test_bh_over_secondaries(written, registry):
    _, rep, _ = written
    sec = _ids(registry, "secondary")
    rec = next(c for c in rep["claims"] if c["id"] == sec[0] and c["tier"] == "cpu")
    assert rec["p_bh"] == pytest.approx(min(1.0, len(sec) * 0.004))
    assert rec["p_holm"] is None


def test_markdown_has_verdict_line_tables_and_relative_figures(written, registry):
    _, _, paths = written
    md = paths["md"].read_text()
    prim = _ids(registry, "primary")
    assert f"## {prim[0]} — " in md and "**replicated** · estimate 0.8 [0.7, —] · p 0.001 · α_i" in md
    assert "| seed | rate |" in md and "*table: robustness by direction family*" in md
    assert "| family | rate |" in md and "*parts*" in md
    assert "![a.png](figures/a.png)" in md
    assert "| tier | replicated | refuted |" in md


def test_html_is_self_contained(written):
    _, _, paths = written
    page = paths["html"].read_text()
    assert '<img src="data:image/png;base64,' in page
    assert 'src="figures/' not in page and "<link" not in page and "<script" not in page
    assert 'class="badge v-replicated"' in page and 'class="badge v-not_run"' in page


def test_atomic_writes_leave_no_temp_files(written, tmp_path, monkeypatch):
    out, _, _ = written
    assert sorted(p.name for p in out.iterdir()) == ["claims.html", "claims.json", "claims.md",
                                                     "figures"]
    target = report.atomic_write(tmp_path / "x.json", "old")

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        report.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_bad_record_is_rejected_with_the_value(registry):
    with pytest.raises(ValueError, match="'maybe'"):
        report.build_report([{"id": "AV-1", "tier": "cpu", "verdict": "maybe"}], registry)
    with pytest.raises(ValueError, match="missing"):
        report.build_report([{"id": "AV-1", "verdict": "replicated"}], registry)


def test_without_registry_records_alone_are_reported():
    recs = [_record("X-1", "a", 0.01, role="primary"), _record("X-2", "a", 0.04, role="primary")]
    rep = report.build_report(recs, None, {})
    assert [c["p_holm"] for c in rep["claims"]] == pytest.approx([0.02, 0.04])


def test_every_plot_writes_a_png(tmp_path):
    x, k = np.linspace(-1, 1, 9), np.abs(np.linspace(-1, 1, 9))
    rows = np.stack([k, 2 * k])
    calls = [
        lambda p: plots.loss_along_direction(p, x, rows),
        lambda p: plots.toy_transition(p, [1, 2, 3], [0, .5, 1], [0, .3, .9], [.1, .7, 1], d_crit=2),
        lambda p: plots.cosine_matrix(p, np.eye(4)),
        lambda p: plots.valley_1d_with_average(p, x, k, np.random.default_rng(0).normal(size=50), 0.2),
        lambda p: plots.count_vs_m(p, [1, 2, 3], [1, 2, 3], [0, 1, 2], [2, 3, 4]),
        lambda p: plots.well_profile(p, x, k, k - .1, k + .1),
        lambda p: plots.shift_curves(p, x, k, k + .1, 0.2),
        lambda p: plots.neighbour_band(p, x, k, 0.1 * k),
        lambda p: plots.segment_profile(p, x, k, 2 * k),
        lambda p: plots.flat_side_curves(p, x, rows, ["a", "b"]),
        lambda p: plots.random_rays(p, x, rows, rows + 1),
        lambda p: plots.paired_seeds(p, k, k + 0.1, ("SWA", "SGD")),
        lambda p: plots.threshold_sensitivity(p, [1, 2, 3], ["replicated", "inconclusive",
                                                             "refuted"], chosen=2),
    ]
    for i, call in enumerate(calls):
        assert call(tmp_path / f"{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".png"]
    with pytest.raises(ValueError, match="losses"):
        plots.loss_along_direction(tmp_path / "bad.png", x, k[:-1])


def test_plots_take_tensors_that_numpy_cannot_read_directly(tmp_path):
    """Probes return torch tensors on the run's device; a CUDA tensor (like one requiring grad)
    has no direct numpy view. Regression: the gpu tier's AV-8/AV-11 figures crashed on CUDA tensors."""
    import torch
    t = torch.linspace(0, 1, 9, requires_grad=True)
    with pytest.raises((RuntimeError, TypeError)):
        np.asarray(t, dtype=float)  # the failure mode the plots must absorb
    loss = (t - 0.5).square() * 2
    assert plots.segment_profile(tmp_path / "s.png", t, loss, loss + 1).exists()
    assert plots.random_rays(tmp_path / "r.png", t, torch.stack([loss, loss]),
                             torch.stack([loss, loss]) + 1).exists()
    assert plots.cosine_matrix(tmp_path / "c.png", torch.eye(3, requires_grad=True)).exists()


# ---------------------------------------------------------------- original rule, flags, endings
_ORIGINAL = {"label": "original rule (as first registered)", "rule": "existence(c > 2)",
             "verdict": "refuted", "estimate": 0.1, "ci": [0.0, 0.3], "p": 0.9,
             "reason": "rate 0.1 [0, 0.3] < 0.5 -> refuted",
             "parts": [{"name": "asym", "estimate": 0.1, "ci": [0.0, 0.3], "p": 0.9,
                        "verdict": "refuted", "reason": "few"}]}


@pytest.fixture(scope="module")
def revised(registry):
    prim = _ids(registry, "primary")
    recs = [_record(prim[0], "revised", 0.001, original=_ORIGINAL,
                    flags=["seed 3: w_SGD not at the line's minimum"]),
            _record(prim[1], "old record", 0.01)]  # no original/flags: an old claims.json
    for r in recs[1:]:
        r.pop("original", None), r.pop("flags", None)
    session = report.session_info(rootdir=".", registry=registry, ended="complete",
                                  tests_selected=3, tests_run=3)
    return prim, report.build_report(recs, registry, session)


def test_original_rule_verdict_is_shown_beside_the_verdict_in_md_and_html(revised):
    prim, rep = revised
    md, page = report.render_markdown(rep), report.render_html(rep, base_dir=".")
    assert "original rule (as first registered): **refuted** · estimate 0.1 [0, 0.3] · p 0.9 · " \
           "rule: existence(c > 2) — rate 0.1 [0, 0.3] < 0.5 -> refuted" in md
    assert "*parts under the original rule (as first registered)*" in md
    assert "| id | tier | case | verdict | original rule | estimate [CI] |" in md
    assert f"| {prim[0]} | cpu | revised | replicated | refuted |" in md
    assert f"| {prim[1]} | cpu | old record | replicated | — |" in md
    assert "<p class=original>original rule (as first registered): " \
           '<span class="badge v-refuted">refuted</span>' in page
    assert '<td><span class="badge v-refuted">refuted</span></td>' in page  # index column


def test_flags_are_listed_under_the_reason(revised):
    prim, rep = revised
    md, page = report.render_markdown(rep), report.render_html(rep, base_dir=".")
    reason = f"{prim[0]} revised: reason text"
    assert f"{reason}\n\n- flag: seed 3: w_SGD not at the line's minimum\n" in md
    assert f"<p>{reason}</p>\n<ul class=flags><li>flag: seed 3: w_SGD not at the line&#x27;s " \
           "minimum</li></ul>" in page


def test_records_without_the_new_fields_still_render(registry):
    old = {"id": "AV-1", "tier": "cpu", "case": "c", "verdict": "refuted", "reason": "r"}
    rep = report.build_report([old], registry, {"date_utc": "2026-01-01"})  # an old session too
    assert rep["claims"][0]["original"] is None and rep["claims"][0]["flags"] == []
    md = report.render_markdown(rep)
    assert md.startswith("# Claim report — session not recorded\n")
    report.render_html(rep, base_dir=".")


def test_bad_original_or_flags_are_rejected_with_the_value(registry):
    with pytest.raises(ValueError, match="original verdict 'meh'"):
        report.build_report([_record("AV-1", "c", 0.1, original={"verdict": "meh"})], registry)
    with pytest.raises(ValueError, match="flags must be a list of strings"):
        report.build_report([_record("AV-1", "c", 0.1, flags="one string")], registry)


def test_skipped_is_a_report_verdict_counted_and_badged(registry):
    rec = {"id": "AV-1", "tier": "gpu", "case": "resnet", "verdict": "skipped", "outcome": "skip",
           "reason": "dataset cifar10 not found under /data"}
    rep = report.build_report([rec], registry, {})
    got = next(c for c in rep["claims"] if c["case"] == "resnet")
    assert got["verdict"] == "skipped" and got["p_holm"] == 1.0  # p = 1 in the family, as not_run
    assert "skipped" in report.VERDICTS
    assert "| tier | replicated | refuted | inconclusive | insufficient_n | error | not_run | " \
           "skipped | total |" in report.render_markdown(rep)
    assert 'class="badge v-skipped"' in report.render_html(rep, base_dir=".")


def test_first_line_says_how_the_session_ended(registry):
    session = report.session_info(rootdir=".", registry=registry, ended="interrupted",
                                  ended_reason="KeyboardInterrupt", tests_selected=40, tests_run=3)
    rep = report.build_report([], registry, session)
    first = report.render_markdown(rep).splitlines()[0]
    assert first == ("# Claim report — session interrupted: KeyboardInterrupt (3 of 40 selected "
                     "tests ran); a partial report, written beside the last complete one")
    assert "<title>Claim report — session interrupted" in report.render_html(rep, base_dir=".")
    with pytest.raises(ValueError, match="'aborted'.*complete, interrupted, failed"):
        report.session_info(rootdir=".", ended="aborted")


def test_publish_puts_a_partial_set_beside_the_complete_one(tmp_path):
    final = tmp_path / "latest"
    for ended in ("complete", "interrupted"):
        staging = tmp_path / f".latest.{ended}.partial"
        (staging / "figures").mkdir(parents=True)
        (staging / "figures" / f"{ended}.png").write_bytes(b"x")
        rep = report.build_report([], None, {"ended": ended, "date_utc": ended})
        paths = report.publish_reports(rep, staging, final)
        assert not staging.exists()
    assert paths["json"] == tmp_path / "latest.interrupted" / "claims.json"
    assert json.loads((final / "claims.json").read_text())["session"]["date_utc"] == "complete"
    assert [p.name for p in (final / "figures").iterdir()] == ["complete.png"]
    assert [p.name for p in (tmp_path / "latest.interrupted" / "figures").iterdir()] == [
        "interrupted.png"]
