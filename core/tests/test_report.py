"""Reports: records -> claims.json / .md / .html, not_run fills, Holm/BH, atomic writes, figures.

Uses the real registry when `core.registry` and claims/registry.toml are there, else a stand-in
with the 30 ids and roles of CLAIMS.md (same attributes as `core.registry.Registry`).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


# ---------------------------------------------------------------- the first screen: scorecard
_REPO = Path(__file__).resolve().parents[2]
_COMMITTED = [_REPO / "reports" / t / "claims.json" for t in ("cpu", "toy")]


def _part(name, est, lo, hi, verdict):
    return {"name": name, "estimate": est, "ci": [lo, hi], "p": 0.01, "verdict": verdict, "n": 3,
            "reason": f"mean {est} [{lo}, {hi}] vs required 0 (n=3) -> {verdict}"}


@pytest.fixture(scope="module")
def scored(registry, tmp_path_factory):
    """A written report: a claim whose control came out replicated, an intersection–union claim
    (record estimate 0.5 = 1 of 2 parts), a claim with a diverged seed and an original rule, a
    secondary whose seeds are all ok."""
    out = tmp_path_factory.mktemp("scored")
    fig = plots.segment_profile(out / "figures" / "seg.png", np.linspace(0, 1, 9),
                                np.linspace(0, 1, 9), np.linspace(1, 2, 9))
    prim, sec = _ids(registry, "primary"), _ids(registry, "secondary")
    ok_seeds = {"seeds": [{"seed": 0, "status": "ok"}, {"seed": 1, "status": "ok"}]}
    bad_seeds = {"seeds": [{"seed": 0, "status": "ok"}, {"seed": 1, "status": "diverged"}]}
    records = [
        _record(prim[0], "c1", 0.001, figures=[str(fig.relative_to(out))], tables=ok_seeds,
                parts=[], reason="success rate 0.8 [0.7, 0.9] > required 0.5 -> replicated"),
        _record(prim[0], "the control", 0.001, kind="control", tables={}),
        _record(prim[1], "iu", 0.01, estimate=0.5, ci=[None, None], tables={},
                verdict="refuted", reason="1/2 parts replicated (drop: refuted) -> refuted",
                parts=[_part("rise", 0.123, 0.05, 0.2, "replicated"),
                       _part("drop", -0.456, -0.6, -0.3, "refuted")]),
        _record(prim[1], "iu control", 0.3, kind="control", verdict="refuted", tables={}),
        _record(prim[2], "unstable", 0.2, verdict="inconclusive", tables=bad_seeds,
                original=_ORIGINAL),
        _record(sec[0], "fine", 0.004, tables=ok_seeds, parts=[]),
    ]
    rep = report.build_report(records, registry, {"ended": "complete"})
    return out, rep, report.write_reports(rep, out), prim, sec


def _md_tables(md: str) -> list[list[str]]:
    """The markdown tables of a document, each as its lines, in order."""
    tables, cur = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def test_scorecard_is_the_first_table_one_per_paper_and_controls_are_no_rows(scored):
    _, rep, paths, prim, _ = scored
    md = paths["md"].read_text()
    tables = _md_tables(md)
    papers = report.scorecard(rep)
    assert [t for t, _ in papers][0] == report.PAPERS["he2019"]
    assert len(papers) == len({report.paper_of(c) for c in rep["claims"]})
    for table in tables[:len(papers)]:
        assert table[0].startswith("| claim | paper's number | tier · case | ours | verdict | control |")
    assert not any(t[0].startswith("| claim |") for t in tables[len(papers):])
    rows = [r for _, rs in papers for r in rs]
    assert not any(r["case"].startswith("control") for r in rows)       # controls live in a column
    assert len(rows) == len({(c["id"], c["tier"] if c["verdict"] != "not_run" else "", c["case"])
                             for c in rep["claims"] if c["kind"] == "claim"})
    row = next(r for r in rows if r["claim"]["id"] == prim[0])
    assert [w for w, _, _ in row["controls"]] == ["control: REPLICATED ✗"]
    assert row["ours"][0] == ("success rate 0.8 [0.7, —]", None)
    assert row["verdict"] == "replicated" and row["figure"] == "figures/seg.png"
    iu = next(r for r in rows if r["claim"]["id"] == prim[1])
    assert [w for w, _, _ in iu["controls"]] == ["control: refuted ✓"]


def test_intersection_union_shows_each_part_not_the_count_of_parts(scored):
    _, rep, paths, prim, _ = scored
    iu = next(r for _, rs in report.scorecard(rep) for r in rs if r["claim"]["id"] == prim[1])
    assert iu["ours"][:2] == [("rise: mean 0.123 [0.05, 0.2]", "replicated"),
                              ("drop: mean -0.456 [-0.6, -0.3]", "refuted")]
    assert not any(t.startswith(("0.5", "estimate 0.5")) for t, _ in iu["ours"])
    line = next(ln for ln in paths["md"].read_text().splitlines()
                if ln.startswith(f"| [{prim[1]}]("))
    assert "rise: mean 0.123 [0.05, 0.2] → **replicated**<br>drop: mean -0.456" in line
    assert "| 0.5" not in line


def test_scorecard_row_carries_paper_value_original_rule_and_a_relative_thumbnail(scored):
    out, rep, paths, prim, _ = scored
    md = paths["md"].read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| [{prim[0]}](#{prim[0]})"))
    paper_value = next(c for c in rep["claims"] if c["id"] == prim[0])["paper_value"]
    assert f"| {report._opt(paper_value)} |" in line.replace("\\|", "|")
    assert f'<a href="figures/seg.png"><img src="figures/seg.png" width="{report.THUMB_WIDTH}"' in line
    assert "original rule" in _md_tables(md)[0][0]   # a record has one: the column is there
    orig = next(ln for ln in md.splitlines() if ln.startswith(f"| [{prim[2]}]("))
    assert "| refuted |" in orig                                 # the original rule's verdict
    links = re.findall(r'(?:src|href)="([^"#]+)"|\]\(([^)#]+)\)', md)
    assert links and all((paths["md"].parent / (a or b)).is_file() for a, b in links)


def test_seed_tables_fold_and_open_only_where_something_diverged(scored):
    _, rep, paths, prim, sec = scored
    by_id = {c["id"]: c for c in rep["claims"] if c["kind"] == "claim"}
    assert report.diverged(by_id[prim[2]]) and not report.diverged(by_id[sec[0]])
    assert report.diverged({**by_id[sec[0]], "verdict": "error"})
    md, page = paths["md"].read_text(), paths["html"].read_text()
    section = md.split(f"## {prim[2]} — ")[1].split("\n## ")[0]
    assert "<details open><summary>table: seeds (1 of 2 not ok: diverged)</summary>" in section
    assert "<details open><summary>per seed (3 rows)</summary>" in section
    ok = md.split(f"## {sec[0]} — ")[1].split("\n## ")[0]
    assert "<details><summary>table: seeds (all 2 ok)</summary>" in ok
    assert "<details><summary>per seed (3 rows)</summary>\n\n| seed | rate |" in ok
    assert "*table: robustness by direction family*" not in ok   # none in this record
    assert page.count("<details open>") == 2 and "<details><summary>per seed" in page


def test_estimate_label_reads_what_the_rule_estimates():
    assert report.estimate_label("success rate 0 [0, 0.438] < required 0.5 (...)") == "success rate"
    assert report.estimate_label("mean difference a-b -0.00672 [-0.0115, -0.00192] < ...") == \
        "mean difference a-b"
    assert report.estimate_label("Spearman rho 0.861 [0.789, 0.91], one-sided") == "Spearman rho"
    assert report.estimate_label("2/2 parts replicated -> replicated") == ""
    assert report.estimate_label("") == ""


@pytest.mark.parametrize("path", _COMMITTED, ids=lambda p: p.parent.name)
def test_committed_reports_predating_the_new_fields_render_with_a_scorecard(path, tmp_path):
    # an older claims.json: the committed one less the fields added since (per-record flags and
    # original-rule verdicts, the session's end); figures still resolve against the committed dir
    data = json.loads(path.read_text())
    for c in data["claims"]:
        c.pop("flags", None), c.pop("original", None)
    for key in ("ended", "ended_reason", "tests_selected", "tests_run", "unattributed"):
        data["session"].pop(key, None)
    (tmp_path / "claims.json").write_text(json.dumps(data))
    rep = report.load_report(tmp_path / "claims.json")
    assert all(c["flags"] == [] for c in rep["claims"])   # filled for an old file
    md = report.render_markdown(rep)
    assert md.startswith("# Claim report — session not recorded\n")
    assert _md_tables(md)[0][0].startswith("| claim | paper's number |")
    page = report.render_html(rep, base_dir=path.parent)
    assert page.index("class=scorecard") < page.index("<h2>Session</h2>")
    assert "figure missing" not in page and "missing:" not in page


def test_committed_reports_merge_into_one_scorecard(tmp_path):
    rep = report.merge_reports(_COMMITTED, tmp_path)
    rows = {(r["claim"]["id"], r["tier"]): r for _, rs in report.scorecard(rep) for r in rs}
    assert rows[("AV-5", "toy")]["verdict"] == "replicated"
    assert rows[("AV-1", "cpu")]["verdict"] == "refuted" and rows[("AV-1", "cpu")]["idle"] == "gpu"
    assert [w for w, _, _ in rows[("AV-1", "cpu")]["controls"]] == ["control: refuted ✓"]
    av9 = next(c for c in rep["claims"] if (c["id"], c["tier"], c["kind"]) == ("AV-9", "cpu", "claim"))
    first = av9["parts"][0]   # an IUT claim shows its parts' estimates, not a count of parts
    assert rows[("AV-9", "cpu")]["ours"][0][0].startswith(
        f"{first['name']}: {report.estimate_label(first['reason'])} {first['estimate']:.3g}")
    ran = {c["id"] for c in rep["claims"] if c["verdict"] != "not_run"}
    idle = [(cid, t) for (cid, t), r in rows.items() if cid not in ran]  # no tier of these ran
    assert all(rows[k]["verdict"] == "not_run" for k in idle)
    from core.registry import load_registry
    assert ran == set(load_registry().claims)  # every registry claim has a verdict at the toy or cpu tier
    keys = [(c["id"], c["tier"], c["case"], c["kind"]) for c in rep["claims"]]
    assert len(keys) == len(set(keys))
    figs = [f for c in rep["claims"] for f in c["figures"]]
    assert figs and all((tmp_path / f).is_file() for f in figs)
    with pytest.raises(ValueError, match=r"AV-1 \[cpu\] ran in both"):
        report.merge_reports([_COMMITTED[0], _COMMITTED[0]], tmp_path)


def test_render_command_writes_md_whose_figures_resolve(tmp_path, capsys):
    out = tmp_path / "merged"
    assert report.main(["render", str(out), *map(str, _COMMITTED)]) == 0
    md = (out / "claims.md").read_text()
    assert md.startswith("# Claim report — merged: ")
    links = re.findall(r'src="([^"]+)"|!\[[^]]*\]\(([^)]+)\)', md)
    assert len(links) > 10 and all((out / (a or b)).is_file() for a, b in links)
    assert (out / "claims.html").read_text().count("data:image/png;base64,") > 10


# ---------------------------------------------------------------- diff
def _diff_base():
    recs = [_record("X-1", "a", 0.01, role="primary"),
            _record("X-1", "ctl", 0.5, kind="control", verdict="refuted", role="primary"),
            _record("X-2", "a", 0.04, role="primary")]
    return report.build_report(recs, None, {})


def _write(tmp_path, name, rep):
    path = tmp_path / name
    path.write_text(json.dumps(rep))
    return str(path)


def test_diff_identical_is_exit_zero(tmp_path, capsys):
    a = _write(tmp_path, "a.json", _diff_base())
    assert report.main(["diff", a, a]) == 0
    assert capsys.readouterr().out.startswith("identical: 3 records")


def test_diff_lists_every_changed_added_and_removed_case(tmp_path, capsys):
    old, new = _diff_base(), _diff_base()
    new["claims"][0]["verdict"] = "refuted"
    new["claims"][0]["ci"] = [0.7, 0.95]
    new["claims"][0]["parts"][0]["estimate"] = 0.2
    new["claims"][1]["estimate"] = 0.8 + 1e-9
    new["claims"][2]["case"] = "b"
    a, b = _write(tmp_path, "a.json", old), _write(tmp_path, "b.json", new)
    assert report.main(["diff", a, b]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("~ X-1 [cpu] a (claim): verdict replicated -> refuted; interval "
                        "[0.7, null] -> [0.7, 0.95]; part bias: estimate 0.1 -> 0.2")
    assert lines[1] == "~ X-1 [cpu] ctl (control): estimate 0.8 -> 0.800000001"
    assert lines[2:] == ["- X-2 [cpu] a (claim): removed (replicated 0.8 [0.7, null])",
                         "+ X-2 [cpu] b (claim): added (replicated 0.8 [0.7, null])",
                         "2 changed, 1 added, 1 removed"]


def test_diff_tolerance_absorbs_small_numeric_changes_only(tmp_path, capsys):
    new = _diff_base()
    new["claims"][1]["estimate"] = 0.8 + 1e-9
    a, b = _write(tmp_path, "a.json", _diff_base()), _write(tmp_path, "b.json", new)
    assert report.main(["diff", a, b, "--atol", "1e-6"]) == 0
    assert report.main(["diff", a, b, "--rtol", "1e-12"]) == 1
    new["claims"][1]["verdict"] = "inconclusive"        # a verdict never has a tolerance
    b = _write(tmp_path, "b.json", new)
    assert report.main(["diff", a, b, "--atol", "1"]) == 1


@pytest.mark.parametrize("content", ["{not json", '{"claims": 3}', '{"schema_version": 1, '
                                     '"claims": [{"id": "X"}]}', '{"schema_version": 9, "claims": []}'])
def test_diff_bad_input_is_exit_two_with_one_line(tmp_path, capsys, content):
    a = _write(tmp_path, "a.json", _diff_base())
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert report.main(["diff", a, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json" in err
    assert report.main(["diff", a, str(tmp_path / "absent.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        report.main(["diff", a])                         # a usage error: one line too
    assert exc.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_diff_of_committed_reports_from_the_command_line():
    run = lambda *a: subprocess.run([sys.executable, "-m", "core.report", "diff", *map(str, a)],  # noqa: E731
                                    cwd=_REPO, capture_output=True, text=True, timeout=120)
    same = run(_COMMITTED[0], _COMMITTED[0])
    assert same.returncode == 0 and same.stdout.startswith("identical: ")
    other = run(*_COMMITTED)
    assert other.returncode == 1 and "+ AV-5 [toy] " in other.stdout


def test_scorecard_rows_for_skipped_errors_and_a_control_without_its_claim(registry):
    recs = [{"id": "AV-1", "tier": "gpu", "case": "resnet", "verdict": "skipped",
             "reason": "CUDA not available"},
            {"id": "AV-1", "tier": "gpu", "case": "ctl", "kind": "control", "verdict": "error",
             "reason": "RuntimeError: boom"},
            {"id": "AV-1", "tier": "cpu", "case": "ctl", "kind": "control", "verdict": "refuted"}]
    rep = report.build_report(recs, registry, {})
    rows = [r for _, rs in report.scorecard(rep) for r in rs if r["claim"]["id"] == "AV-1"]
    assert [(r["tier"], r["verdict"]) for r in rows] == [("gpu", "skipped"), ("cpu", "")]
    assert rows[0]["ours"] == [("CUDA not available", None)]
    assert [w for w, _, _ in rows[0]["controls"]] == ["control: ERROR ✗"]
    assert rows[1]["ours"] == [("no claim record in this tier", None)]
    assert [w for w, _, _ in rows[1]["controls"]] == ["control: refuted ✓"]
    assert rows[0]["span"] == 2 and rows[1]["span"] == 0
    assert "| cpu · " not in report.render_markdown(rep).split("## Session")[0]
    report.render_html(rep, base_dir=".")
