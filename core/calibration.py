"""Calibration of every registry rule by simulation at the boundary of its null (DESIGN.md "Statistics").

For each claim, each leaf rule (every intersection–union part, every supporting rule) and each tier's
planned n, the rule's own vectorised kernel (core/stats.py) decides NSIM simulated data sets drawn at
the boundary of its null, under every family of its data type:

    median rules (sign tests)   X = c + Z with P(Z <= 0) = P(Z >= 0) = 1/2: normal, heavy-tailed (Cauchy),
                                skewed right / left (centred lognormal, median 0), point masses at the
                                support's ends, all-equal (every unit exactly on the threshold);
                                bounded / positive / count data are mapped into their support with the
                                median kept at c.
    existence (Clopper–Pearson) Bernoulli(claimed_above): binary data has one null law at the boundary.
    trend (exact permutation)   y independent of x: normal, Cauchy, skewed, 0/1 point masses, all-equal.
    two_sample (studentised     both samples i.i.d. from one law: normal, Cauchy, skewed, point masses,
      permutation)              all-equal, Poisson counts; and equal means with unequal shapes
                                (Poisson vs over-dispersed negative binomial, both ways).
    toy_tolerance               deterministic law: no sampling; a single violation must refute.

False-"replicated" rate must be <= alpha within a binomial bound (99.9% quantile of Bin(NSIM, alpha)/NSIM).
Power is reported under a stated alternative. The originally registered rules (t intervals) are
simulated under the mean-boundary skewed law that the audit used, to show why they were replaced.
`python -m core.calibration [--out reports/calibration.md]` writes the table.
"""
from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as st

from core import stats as S
from core.atomic import atomic_write
from core.registry import Registry, leaf_rules, load_registry

__all__ = ["NSIM", "Case", "Row", "cases", "calibrate", "original_rows", "render", "main"]

NSIM = 4000          # simulations per (rule, n, alpha, family)
LEVEL = 0.999        # the binomial bound's quantile
_SIGN_TYPES = ("median_threshold", "median_paired", "median_log_ratio", "median_non_inferiority",
               "median_equivalence")
_SUPPORT = {"bounded": (0.0, 1.0), "positive_ratio": (0.0, math.inf), "real": (-math.inf, math.inf),
            "count": (-math.inf, math.inf), "binary": (0.0, 1.0)}


@dataclass(frozen=True)
class Case:
    claim: str
    field: str           # "rule", "rule.parts.x", "supporting.y"
    tier: str
    n: int               # planned units (per group for two_sample)
    alpha: float
    rule: dict
    data_type: str
    x_design: tuple = ()  # trend: the x values (e.g. m per replicate)


@dataclass(frozen=True)
class Row:
    case: Case
    family: str          # the worst null family (largest false-replication rate)
    false_rate: float
    tolerance: float
    power: float
    alternative: str
    families: int        # how many null families were simulated
    beyond: tuple = ()   # (law, rate) outside the registered null: reported, not asserted

    @property
    def ok(self) -> bool:
        return self.false_rate <= self.tolerance


# ---------------------------------------------------------------- cases from the registry
def _trend_design(reg: Registry, cid: str, tier: str) -> tuple:
    """x of a trend rule as its claim module builds it (grid value per unit)."""
    s = reg[cid].settings
    if cid == "AV-6":
        return tuple(c for c in s["c_grid"] for _ in range(s["runs"]))
    if cid == "LS-4":
        return tuple(m for m in s["m_grid"] for _ in range(s["replicates_per_m"]))
    if cid == "LS-8":
        return tuple(m for m in s["m_grid"] for _ in range(reg[cid].seeds[tier]))
    raise KeyError(f"calibration: no trend design for {cid}")


def cases(reg: Registry | None = None) -> list[Case]:
    reg = reg or load_registry()
    out = []
    for cid, claim in reg.claims.items():
        for fld, rule in leaf_rules(claim):
            alpha = reg.alpha_for(cid) if fld.startswith("rule") else reg.family_alpha
            for tier, n in claim.seeds.items():
                design = _trend_design(reg, cid, tier) if rule["type"] == "trend" else ()
                n_units = {"two_sample": reg[cid].settings.get("replicates_per_m", n),
                           "trend": len(design)}.get(rule["type"], n)
                out.append(Case(cid, fld, tier, int(n_units), alpha, dict(rule),
                                claim.described[fld]["data_type"], design))
    return out


# ---------------------------------------------------------------- null families
def _z(family: str, rng, shape) -> np.ndarray:
    """Z with P(Z <= 0) = P(Z >= 0) = 1/2 (median 0); point masses at -1, +1; all-equal 0."""
    if family == "normal":
        return rng.standard_normal(shape)
    if family == "heavy-tailed (Cauchy)":
        return rng.standard_cauchy(shape)
    if family == "skewed right (lognormal)":
        return np.expm1(rng.standard_normal(shape))
    if family == "skewed left (lognormal)":
        return -np.expm1(rng.standard_normal(shape))
    if family == "point masses at the ends":
        return rng.choice([-1.0, 1.0], size=shape)
    if family == "all-equal":
        return np.zeros(shape)
    raise KeyError(family)


MEDIAN_FAMILIES = ("normal", "heavy-tailed (Cauchy)", "skewed right (lognormal)", "skewed left (lognormal)",
                   "point masses at the ends", "all-equal")


def _values(c: float, z: np.ndarray, data_type: str, family: str) -> np.ndarray:
    """Map median-0 Z to values with median c inside the data type's support; the map is increasing and
    sends 0 to c, so P(X <= c) = P(X >= c) = 1/2 still (atoms at c only where Z has one)."""
    lo, hi = _span(c, data_type)
    if data_type == "count":
        return c + np.where(z > 0, np.ceil(3 * z), np.floor(3 * z))          # integers, atoms off c
    if data_type == "positive_ratio":
        return c * np.exp(np.clip(z, -50, 50))
    if data_type == "bounded":
        if family == "point masses at the ends":
            return np.where(z > 0, hi, np.where(z < 0, lo, c))
        return c + np.where(z > 0, hi - c, c - lo) * np.tanh(z)            # each half squashed into its side
    return c + z


def _span(c: float, data_type: str) -> tuple[float, float]:
    """[0, 1] for a bounded statistic, or [-1, 1] when its threshold lies outside [0, 1) (a correlation,
    a difference of prevalences at margin 0)."""
    lo, hi = _SUPPORT[data_type]
    return (-1.0, 1.0) if data_type == "bounded" and not lo < c < hi else (lo, hi)


# ---------------------------------------------------------------- one rule's kernel on simulated rows
def _sign_boundary(rule: dict) -> list[tuple[float, int]]:
    """[(threshold on the kernel's scale, sign)] at which the claimed region starts."""
    t = rule["type"]
    sign = -1 if rule.get("direction") == "less" else 1
    if t == "median_threshold":
        return [(rule["claimed"], sign)]
    if t == "median_paired":
        return [(rule.get("margin", 0.0), sign)]
    if t == "median_log_ratio":
        return [(math.log(rule["claimed_factor"], rule.get("base", 10.0)), sign)]
    if t == "median_non_inferiority":
        return [(-rule["margin"], 1)]
    return [(rule["low"], 1), (rule["high"], -1)]           # equivalence: both edges


def _sign_verdicts(rule: dict, x: np.ndarray, alpha: float) -> np.ndarray:
    t = rule["type"]
    if t == "median_equivalence":
        return S._sign_equivalence_kernel(x, alpha, rule["low"], rule["high"])[0]
    (c, sign), = _sign_boundary(rule)
    refuted = {"median_threshold": rule.get("refuted", rule.get("claimed")),
               "median_log_ratio": math.log(rule["refuted_factor"], rule.get("base", 10.0)) if
               "refuted_factor" in rule else c}.get(t, c)
    return S._sign_kernel(x, alpha, sign, c, refuted)[0]


def _rate(v: np.ndarray) -> float:
    return float(np.mean(v == "replicated"))


def _sign_rows(case: Case, rng) -> tuple[list[tuple[str, float]], float, str]:
    rates = []
    for c, sign in _sign_boundary(case.rule):
        for fam in MEDIAN_FAMILIES:
            x = _values(c, _z(fam, rng, (NSIM, case.n)), case.data_type, fam)
            rates.append((f"{fam}, median at {c:.4g}", _rate(_sign_verdicts(case.rule, x, case.alpha))))
    if case.rule["type"] == "median_equivalence":     # alternative: centred, well inside the region
        lo, hi = case.rule["low"], case.rule["high"]
        x = 0.5 * (lo + hi) + 0.15 * (hi - lo) * rng.standard_normal((NSIM, case.n))
        return rates, _rate(_sign_verdicts(case.rule, x, case.alpha)), "normal centred in the region, sd 0.15 x width"
    (c, sign), = _sign_boundary(case.rule)
    sd = _alt_sd(case.data_type, c)
    x = c + sign * 1.5 * sd + sd * rng.standard_normal((NSIM, case.n))
    if case.data_type == "bounded":
        x = np.clip(x, *_span(c, case.data_type))
    elif case.data_type == "positive_ratio":
        x = np.abs(x)
    return rates, _rate(_sign_verdicts(case.rule, x, case.alpha)), f"normal, median 1.5 sd beyond the threshold, sd {sd:.3g}"


def _alt_sd(data_type: str, c: float) -> float:
    """The alternative's per-unit spread: 0.05 for a bounded statistic, 20% of the threshold for a ratio,
    1 otherwise (the claims' thresholds are O(1) on their own scale)."""
    return 0.05 if data_type == "bounded" else (0.2 * abs(c) if data_type == "positive_ratio" and c else 1.0)


def _existence_rows(case: Case, rng):
    c, n = case.rule["claimed_above"], case.n
    k = rng.binomial(n, c, NSIM)
    v = S._existence_kernel(k, n, case.alpha, c, case.rule["refuted_below"], bool(case.rule.get("require_all")))[0]
    p_alt = 0.999 if case.rule.get("require_all") else min(0.97, c + 0.5 * (1 - c) + 0.02)
    va = S._existence_kernel(rng.binomial(n, p_alt, NSIM), n, case.alpha, c, case.rule["refuted_below"],
                             bool(case.rule.get("require_all")))[0]
    return [(f"Bernoulli({c:g}) at the boundary", _rate(v))], _rate(va), f"success probability {p_alt:.3g}"


TREND_FAMILIES = ("normal", "heavy-tailed (Cauchy)", "skewed right (lognormal)", "point masses 0/1", "all-equal")


def _trend_rows(case: Case, rng, nsim: int):
    x = np.asarray(case.x_design, dtype=float)
    sign = -1 if case.rule.get("direction") == "decreasing" else 1
    rates = []
    for fam in TREND_FAMILIES:
        if fam == "point masses 0/1":
            y = rng.integers(0, 2, (nsim, x.size)).astype(float)
        elif fam == "all-equal":
            y = np.ones((nsim, x.size))
        else:
            y = _z(fam, rng, (nsim, x.size))
        rates.append((f"{fam}, y independent of x", _rate(S._trend_kernel(x, y, case.alpha, sign,
                                                                           np.random.default_rng(1))[0])))
    xs = (x - x.mean()) / (x.std() or 1.0)
    y = sign * 0.5 * xs + rng.standard_normal((nsim, x.size))
    power = _rate(S._trend_kernel(x, y, case.alpha, sign, np.random.default_rng(1))[0])
    return rates, power, "y = 0.5 sd(y) per sd(x) + normal noise"


TWO_SAMPLE_FAMILIES = ("normal", "heavy-tailed (Cauchy)", "skewed right (lognormal)", "skewed left (lognormal)",
                       "point masses at the ends", "all-equal", "Poisson(10) counts")


def _unequal_shapes(rng, nsim: int, n: int, swap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Equal means, different laws: Poisson(10) vs negative binomial with mean 10 and variance 60."""
    pois = rng.poisson(10.0, (nsim, n)).astype(float)
    nb = rng.negative_binomial(2.0, 1.0 / 6.0, (nsim, n)).astype(float)      # mean 10, variance 60
    return (nb, pois) if swap else (pois, nb)


def _two_sample_rows(case: Case, rng, nsim: int):
    sign = -1 if case.rule.get("direction") == "less" else 1
    n, rates = case.n, []
    for fam in TWO_SAMPLE_FAMILIES:
        z = rng.poisson(10.0, (nsim, 2 * n)).astype(float) if fam.startswith("Poisson") else \
            _z(fam, rng, (nsim, 2 * n))
        rates.append((f"{fam}, both samples from one law", _rate(S._two_sample_kernel(z[:, :n], z[:, n:], case.alpha,
                                                                                     sign)[0])))
    beyond = []                     # outside the registered (exchangeable) null: equal means, unequal shapes
    for swap in (False, True):
        a, b = _unequal_shapes(rng, nsim, n, swap)
        label = "NegBin(var 60) vs Poisson(10), equal means" if swap else "Poisson(10) vs NegBin(var 60), equal means"
        beyond.append((label, _rate(S._two_sample_kernel(a, b, case.alpha, sign)[0])))
    a = rng.poisson(10.0 + sign * 4.0, (nsim, n)).astype(float)
    b = rng.poisson(10.0, (nsim, n)).astype(float)
    return rates, _rate(S._two_sample_kernel(a, b, case.alpha, sign)[0]), "Poisson means 14 vs 10", beyond


# ---------------------------------------------------------------- the table
def _key(case: Case) -> tuple:
    """Cases that are the same computation up to translation of the threshold share one simulation."""
    rule = tuple(sorted((k, str(v)) for k, v in case.rule.items()))
    return rule, case.n, case.alpha, case.data_type, case.x_design


_SIMULATED: dict[tuple, tuple] = {}   # key -> result: equal rules at equal n and alpha are simulated once


def _simulate(key: tuple, case: Case) -> tuple[list, float, str, int, list]:
    if key not in _SIMULATED:
        _SIMULATED[key] = _simulate_once(key, case)
    return _SIMULATED[key]


def _simulate_once(key: tuple, case: Case) -> tuple[list, float, str, int, list]:
    rng = np.random.default_rng(_seed(key))
    t = case.rule["type"]
    if t in _SIGN_TYPES:
        rates, power, alt = _sign_rows(case, rng)
    elif t == "existence":
        rates, power, alt = _existence_rows(case, rng)
    elif t == "trend":
        rates, power, alt = _trend_rows(case, rng, NSIM)
    elif t == "two_sample":
        rates, power, alt, beyond = _two_sample_rows(case, rng, NSIM)
        return rates, power, alt, len(rates), beyond
    elif t == "toy_tolerance":
        rates, power, alt = _toy_rows(case, rng)
    else:
        raise KeyError(f"calibration: no simulation for rule type {t!r}")
    return rates, power, alt, len(rates), []


def _seed(key: tuple) -> int:
    """A stable seed per case (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "little")


def _toy_rows(case: Case, rng):
    """Deterministic law: one value exactly on the threshold among n must refute; all beyond replicates."""
    t, sign = case.rule["threshold"], -1 if case.rule.get("direction") == "less" else 1
    n = max(case.n, 1)
    bad = [S.toy_tolerance(np.r_[t + sign * rng.exponential(1.0, n - 1), t], alpha=case.alpha, threshold=t,
                           direction=case.rule.get("direction", "greater")).verdict for _ in range(200)]
    good = [S.toy_tolerance(t + sign * (1e-9 + rng.exponential(1.0, n)), alpha=case.alpha, threshold=t,
                            direction=case.rule.get("direction", "greater")).verdict for _ in range(200)]
    return [("deterministic law violated by one value", float(np.mean(np.array(bad) == "replicated")))], \
        float(np.mean(np.array(good) == "replicated")), "every value beyond the threshold"


def calibrate(case: Case) -> Row:
    rates, power, alt, fams, beyond = _simulate(_key(case), case)
    family, worst = max(rates, key=lambda r: r[1])
    tol = float(st.binom.ppf(LEVEL, NSIM, case.alpha) / NSIM) if case.rule["type"] != "toy_tolerance" else 0.0
    return Row(case, family, worst, tol, power, alt, fams, tuple(beyond))


def original_rows(reg: Registry | None = None) -> list[dict]:
    """The originally registered t rules at the cpu (or toy) tier's planned n, with the MEAN on the
    threshold (their estimand): centred lognormal (sigma = 1) per-unit values with either tail, and for
    bounded data Bernoulli values {0, 1} with that mean (a sample piled on one value). Worst law reported."""
    reg = reg or load_registry()
    out, rng = [], np.random.default_rng(20261201)
    for cid, claim in reg.claims.items():
        if claim.original_rule is None:
            continue
        alpha = reg.alpha_for(cid)
        for fld, rule in _leaves(claim.original_rule):
            if rule["type"] not in ("mean_threshold", "paired", "equivalence"):
                continue
            n = claim.seeds.get("cpu", claim.seeds.get("toy"))
            dtype = _original_type(claim, fld)
            worst = max(((law, _rate(_t_verdicts(rule, x, alpha))) for law, x in _mean_nulls(rule, n, dtype, rng)),
                        key=lambda r: r[1])
            out.append({"claim": cid, "field": fld, "rule": rule["type"], "n": n, "alpha": alpha, "law": worst[0],
                        "false_rate": worst[1], "tolerance": float(st.binom.ppf(LEVEL, NSIM, alpha) / NSIM)})
    return out


def _original_type(claim, fld: str) -> str:
    """The data type the revised rule of the same field declares (the data did not change)."""
    return claim.described.get(fld.replace("original_rule", "rule"), {}).get("data_type", "real")


def _mean_nulls(rule: dict, n: int, data_type: str, rng):
    """(law, values [NSIM, n]) with mean exactly at the original rule's threshold."""
    c = rule.get("claimed", rule.get("margin", rule.get("low", 0.0)))
    z = np.expm1(rng.standard_normal((NSIM, n))) - (math.exp(0.5) - 1.0)        # mean 0, right tail
    yield "centred lognormal, right tail", c + z
    yield "centred lognormal, left tail", c - z
    if data_type == "bounded" and 0 < c < 1:
        yield f"Bernoulli values with mean {c:g} (piled on 0 and 1)", rng.binomial(1, c, (NSIM, n)).astype(float)


def _t_verdicts(rule: dict, x: np.ndarray, alpha: float) -> np.ndarray:
    if rule["type"] == "equivalence":
        return S._equivalence_kernel(x, alpha, rule["low"], rule["high"])[0]
    sign = -1 if rule.get("direction") == "less" else 1
    c = rule.get("claimed", rule.get("margin", 0.0))
    return S._threshold_kernel(x, alpha, sign, c, rule.get("refuted", c))[0]


def _leaves(rule, fld="original_rule"):
    if rule["type"] == "intersection_union":
        for k, r in rule["parts"].items():
            yield from _leaves(r, f"{fld}.parts.{k}")
    else:
        yield fld, rule


def render(rows: list[Row], originals: list[dict], reg: Registry) -> str:
    head = ["# Calibration of every registry rule", "",
            f"Generated by `python -m core.calibration` from `claims/registry.toml` (sha256 `{reg.sha256[:12]}`); "
            f"{NSIM:,} seeded simulations per (rule, planned n, alpha, null family). A rule passes when its "
            f"false-\"replicated\" rate at the boundary of its null is <= alpha within the {LEVEL:.1%} binomial "
            "bound, under every family of its data type (see `core/calibration.py` for the families). The test "
            "`core/tests/test_calibration.py` asserts every row.", "",
            f"All {len(rows)} rows pass: {'yes' if all(r.ok for r in rows) else 'NO'}.", "",
            "| claim | rule (field) | tier | n | alpha | data type | worst null | false-replicated | bound | "
            "power | alternative |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.case
        head.append(f"| {c.claim} | {c.rule['type']} ({c.field}) | {c.tier} | {c.n} | {c.alpha:.4g} | {c.data_type} | "
                    f"{r.family} ({r.families} families) | {r.false_rate:.4f} | {r.tolerance:.4f} | {r.power:.3f} | "
                    f"{r.alternative} |")
    outside = [r for r in rows if r.beyond]
    if outside:
        head += ["", "## Outside the registered null (reported, not asserted)", "",
                 "The two-sample rule (LS-4's per-step tests) is exact for its registered null, equal laws at m and "
                 "m + 1 (exchangeable replicates). A mean-difference reading also admits equal means with unequal "
                 "shapes; there the studentised permutation test is only asymptotically valid, and at 20 + 20 "
                 "replicates it is measurably anti-conservative in one orientation:", "",
                 "| claim | rule (field) | n per group | alpha | law | false-replicated | bound |",
                 "|---|---|---|---|---|---|---|"]
        for r in outside:
            for law, rate in r.beyond:
                head.append(f"| {r.case.claim} | {r.case.rule['type']} ({r.case.field}) | {r.case.n} | "
                            f"{r.case.alpha:.4g} | {law} | {rate:.4f} | {r.tolerance:.4f} |")
    head += ["", "## Why the original t rules were replaced", "",
             "The originally registered rules of the claims that already had results, simulated at the cpu "
             "(or toy) tier's planned n with the mean (their estimand) exactly on the threshold: centred lognormal "
             "(sigma = 1) per-unit values with either tail, and for bounded statistics 0/1 values with that mean:", "",
             "| claim | original rule (field) | n | alpha | worst law | false-replicated | bound |",
             "|---|---|---|---|---|---|---|"]
    for o in originals:
        flag = " **(fails)**" if o["false_rate"] > o["tolerance"] else ""
        head.append(f"| {o['claim']} | {o['rule']} ({o['field']}) | {o['n']} | {o['alpha']:.4g} | {o['law']} | "
                    f"{o['false_rate']:.4f}{flag} | {o['tolerance']:.4f} |")
    return "\n".join(head) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.calibration", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/calibration.md", help="where the table goes")
    args = ap.parse_args(argv)
    reg = load_registry()
    rows = [calibrate(c) for c in cases(reg)]
    atomic_write(Path(args.out), render(rows, original_rows(reg), reg))
    bad = [r for r in rows if not r.ok]
    print(f"{len(rows)} rows, {len(bad)} above their bound; wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
