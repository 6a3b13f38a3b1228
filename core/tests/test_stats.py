"""Tests for core/stats.py: calibration by simulation, a miscalibrated rule being caught, properties, oracles.

Calibration runs the rules' own vectorised kernels (the public functions call the same kernels on one row;
`test_kernels_match_public_rules` checks that row by row) on NSIM simulated data sets at the planned n, at
the boundary of the claimed region (false-"replicated" rate must be <= alpha + binomial tolerance) and under
a clearly-true alternative (power). Run with -s to see the table of rates.
"""
import itertools
import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as hs
from scipy import stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from core import stats as S
from core.registry import RULE_PARAMS

NSIM = 4000                                # >= 2,000 simulations per (rule, alpha, hypothesis)
A_PRIMARY = 0.05 / 16                      # Bonferroni share of a primary claim
ALPHAS = (A_PRIMARY, 0.05)
N_SEEDS = 10                               # planned seeds per primary claim (cpu tier)
CALIBRATION_LOG: dict[str, dict] = {}


# ---------------------------------------------------------------- the calibration checker
@dataclass(frozen=True)
class Calibration:
    false_rate: float       # P(replicated) at the boundary of the claimed region
    tolerance: float        # 99.9% upper quantile of Binomial(nsim, alpha) / nsim
    power: float            # P(replicated) under the stated alternative
    ok: bool                # false_rate <= tolerance


def check_calibration(rule, null, alt, *, alpha, nsim=NSIM, seed=0, level=0.999, name=None):
    """rule: data [nsim, ...] -> verdict strings; null/alt: (rng, nsim) -> data. Seeded, vectorised."""
    rng = np.random.default_rng(seed)
    false_rate = float(np.mean(rule(null(rng, nsim)) == "replicated"))
    power = float(np.mean(rule(alt(rng, nsim)) == "replicated"))
    tol = float(st.binom.ppf(level, nsim, alpha) / nsim)
    out = Calibration(false_rate, tol, power, false_rate <= tol)
    if name:
        CALIBRATION_LOG[name] = {"alpha": alpha, **out.__dict__}
        print(f"\n{name}: alpha={alpha:.4g} false-replicated={false_rate:.4f} (tol {tol:.4f}) power={power:.3f}")
    return out


def normal(mean, sd, n):
    return lambda rng, nsim: rng.normal(mean, sd, size=(nsim, n))


def assert_calibrated(cal, min_power):
    assert cal.ok, f"false-replicated rate {cal.false_rate} > tolerance {cal.tolerance}"
    assert cal.power > min_power, f"power {cal.power} <= {min_power}"


# ---------------------------------------------------------------- calibration, one test per rule type
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("direction,sign", [("greater", 1), ("less", -1)])
def test_mean_threshold_calibrated(alpha, direction, sign):
    c, sd = 1.0, 2.0                      # effect 1.5 sd is "clearly true" at n = 10
    rule = lambda X: S._threshold_kernel(X, alpha, sign, c, c)[0]
    cal = check_calibration(rule, normal(c, sd, N_SEEDS), normal(c + sign * 1.5 * sd, sd, N_SEEDS),
                            alpha=alpha, name=f"mean_threshold {direction} n=10")
    assert_calibrated(cal, 0.6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_paired_calibrated(alpha):
    margin = 0.5

    def pairs(shift):                     # correlated arms: a shared per-seed effect cancels in a - b
        def draw(rng, nsim):
            base = rng.normal(0, 3, size=(nsim, N_SEEDS))
            noise = rng.normal(0, 0.7, size=(2, *base.shape))
            return np.stack([base + margin + shift + noise[0], base + noise[1]])
        return draw

    rule = lambda AB: S._threshold_kernel(AB[0] - AB[1], alpha, 1, margin, margin)[0]
    assert_calibrated(check_calibration(rule, pairs(0.0), pairs(1.5), alpha=alpha, name="paired n=10"), 0.6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_log_ratio_calibrated(alpha):
    rule = lambda R: S._threshold_kernel(np.log10(R), alpha, 1, 1.0, math.log10(3))[0]
    ratios = lambda log_mean: lambda rng, nsim: 10 ** rng.normal(log_mean, 0.3, size=(nsim, N_SEEDS))
    cal = check_calibration(rule, ratios(1.0), ratios(math.log10(50)), alpha=alpha, name="log_ratio 10x n=10")
    assert_calibrated(cal, 0.6)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("edge", [-1.0, 1.0])
def test_equivalence_calibrated(alpha, edge):
    rule = lambda X: S._equivalence_kernel(X, alpha, -1.0, 1.0)[0]
    cal = check_calibration(rule, normal(edge, 0.5, N_SEEDS), normal(0.0, 0.5, N_SEEDS), alpha=alpha,
                            name=f"equivalence (-1, 1) at edge {edge:+g} n=10")
    assert_calibrated(cal, 0.6)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_non_inferiority_calibrated(alpha):
    rule = lambda X: S._threshold_kernel(X, alpha, 1, -1.0, -1.0)[0]
    cal = check_calibration(rule, normal(-1.0, 1.0, N_SEEDS), normal(0.5, 1.0, N_SEEDS), alpha=alpha,
                            name="non_inferiority margin 1 n=10")
    assert_calibrated(cal, 0.6)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("n,p_alt", [(10, 0.97), (60, 0.8)])
@pytest.mark.parametrize("require_all", [False, True])
def test_existence_calibrated(alpha, n, p_alt, require_all):
    if require_all and n == 60:
        p_alt = 0.999                     # "every seed" claims: the alternative is near-certain success
    rule = lambda k: S._existence_kernel(k, n, alpha, 0.5, 0.5, require_all)[0]
    binomial = lambda p: lambda rng, nsim: rng.binomial(n, p, size=nsim)
    cal = check_calibration(rule, binomial(0.5), binomial(p_alt), alpha=alpha,
                            name=f"existence n={n} require_all={require_all}")
    assert_calibrated(cal, 0.5)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("x", [np.arange(10.0), np.repeat(np.arange(5.0), 2)], ids=["distinct-x", "tied-x"])
def test_trend_calibrated(alpha, x):
    rule = lambda Y: S._trend_kernel(x, Y, alpha, 1)[0]
    null = lambda rng, nsim: rng.normal(size=(nsim, x.size))
    alt = lambda rng, nsim: x + rng.normal(0, 0.15 * np.ptp(x), size=(nsim, x.size))   # rho ~ 0.9
    assert_calibrated(check_calibration(rule, null, alt, alpha=alpha, name=f"trend n=10 {x[:4]}"), 0.6)


def test_toy_tolerance_calibrated():
    """Deterministic: a law violated by one value (sitting exactly on the threshold) never replicates."""
    def null(rng, nsim):
        v = 2.0 + rng.exponential(1.0, size=(nsim, 20))
        v[np.arange(nsim), rng.integers(0, 20, nsim)] = 2.0
        return v
    rule = lambda V: np.array([S.toy_tolerance(v, alpha=A_PRIMARY, threshold=2.0).verdict for v in V])
    cal = check_calibration(rule, null, lambda rng, nsim: 2.0 + rng.exponential(1.0, size=(nsim, 20)) + 1e-9,
                            alpha=A_PRIMARY, nsim=500, name="toy_tolerance")
    assert cal.false_rate == 0.0 and cal.power == 1.0


@pytest.mark.parametrize("alpha", ALPHAS)
def test_intersection_union_calibrated(alpha):
    """One part at its boundary, the other clearly true: the conjunction keeps level alpha unadjusted."""
    def rule(X):
        a, b = (S._threshold_kernel(X[i], alpha, 1, 0.0, 0.0)[0] for i in (0, 1))
        return np.array([S._iut_verdict(v) for v in zip(a, b)])
    both = lambda m0, m1: lambda rng, nsim: rng.normal(np.array([m0, m1])[:, None, None], 1, (2, nsim, N_SEEDS))
    assert_calibrated(check_calibration(rule, both(0.0, 3.0), both(2.0, 3.0), alpha=alpha, name="IUT n=10"), 0.6)


# ---------------------------------------------------------------- the checker catches a miscalibrated rule
def z_rule(alpha, c=0.0):
    """Deliberately anti-conservative: a normal (z) interval where t is needed (n = 3)."""
    def rule(X):
        lo = X.mean(1) - st.norm.ppf(1 - alpha) * X.std(1, ddof=1) / math.sqrt(X.shape[1])
        return np.where(lo > c, "replicated", "inconclusive")
    return rule


@pytest.mark.parametrize("alpha", ALPHAS)
def test_checker_catches_anti_conservative_z_interval(alpha):
    null, alt = normal(0.0, 1.0, 3), normal(3.0, 1.0, 3)
    bad = check_calibration(z_rule(alpha), null, alt, alpha=alpha, name="z-interval at n=3 (must fail)")
    good = check_calibration(lambda X: S._threshold_kernel(X, alpha, 1, 0.0, 0.0)[0], null, alt, alpha=alpha,
                             name="t-interval at n=3")
    assert not bad.ok and bad.false_rate > 2 * alpha
    assert good.ok


# ---------------------------------------------------------------- kernels == public rules (same code path)
def test_kernels_match_public_rules():
    rng = np.random.default_rng(1)
    X = rng.normal(0.3, 1.0, size=(40, N_SEEDS))
    for row, v in zip(X, S._threshold_kernel(X, 0.05, 1, 0.0, -0.2)[0]):
        assert S.mean_threshold(row, alpha=0.05, direction="greater", claimed=0.0, refuted=-0.2).verdict == v
    for row, v in zip(X, S._threshold_kernel(X, 0.05, -1, 1.0, 2.0)[0]):
        assert S.log_ratio(10 ** row, alpha=0.05, claimed_factor=10, refuted_factor=100, direction="less").verdict == v
    for row, v in zip(X, S._equivalence_kernel(X, 0.05, -0.5, 1.0)[0]):
        assert S.equivalence(row, alpha=0.05, low=-0.5, high=1.0).verdict == v
    for row, v in zip(X, S._trend_kernel(np.arange(10.0), X, 0.05, -1)[0]):
        assert S.trend(np.arange(10.0), row, alpha=0.05, direction="decreasing").verdict == v
    k = rng.binomial(12, 0.8, size=40)
    for kk, v in zip(k, S._existence_kernel(k, 12, 0.05, 0.5, 0.3, False)[0]):
        assert S.existence([1] * kk + [0] * (12 - kk), alpha=0.05, claimed_above=0.5, refuted_below=0.3).verdict == v


# ---------------------------------------------------------------- properties
finite = hs.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
samples = hs.lists(finite, min_size=2, max_size=12)
alphas = hs.floats(1e-4, 0.2)
PROPS = settings(deadline=None, max_examples=80, database=None)   # no writes into the repo


@PROPS
@given(hs.lists(hs.tuples(finite, finite), min_size=2, max_size=12), finite, alphas)
def test_paired_swap_mirrors(ab, margin, alpha):
    a, b = map(list, zip(*ab))
    r = S.paired(a, b, alpha=alpha, direction="greater", margin=margin)
    m = S.paired(b, a, alpha=alpha, direction="less", margin=-margin)
    assert m.verdict == r.verdict and m.estimate == -r.estimate and m.ci == (-r.ci[1], -r.ci[0])
    assert m.p == pytest.approx(r.p, abs=1e-12)


@PROPS
@given(samples, finite, alphas, alphas, hs.sampled_from(["greater", "less"]))
def test_mean_threshold_monotone_in_alpha(x, c, a1, a2, direction):
    lo, hi = sorted((a1, a2))
    small, large = (S.mean_threshold(x, alpha=a, direction=direction, claimed=c).verdict for a in (lo, hi))
    assert small not in ("replicated", "refuted") or large == small


@PROPS
@given(hs.integers(0, 30), hs.integers(1, 30), alphas, alphas, hs.floats(0, 0.9))
def test_existence_monotone_in_alpha(k, n, a1, a2, c):
    k, (lo, hi) = min(k, n), sorted((a1, a2))
    small, large = (S.existence([1] * k + [0] * (n - k), alpha=a, claimed_above=c, refuted_below=c / 2).verdict
                    for a in (lo, hi))
    assert small not in ("replicated", "refuted") or large == small
    assert large != "insufficient_n" or small == "insufficient_n"


@PROPS
@given(hs.lists(hs.integers(0, 4), min_size=3, max_size=8), alphas, alphas)
def test_trend_monotone_in_alpha(y, a1, a2):
    lo, hi = sorted((a1, a2))
    small, large = (S.trend(np.arange(len(y)), y, alpha=a).verdict for a in (lo, hi))
    assert small not in ("replicated", "refuted") or large == small


@PROPS
@given(samples, finite, finite, hs.floats(1e-2, 1e2), alphas, hs.sampled_from(["greater", "less"]))
def test_mean_threshold_location_scale_invariant(x, c, shift, scale, alpha, direction):
    x = np.asarray(x)
    r = S.mean_threshold(x, alpha=alpha, direction=direction, claimed=c)
    spread = 1e-6 * (1 + abs(c) + abs(shift) + np.abs(x).max()) * max(scale, 1 / scale)
    assume(min(abs(r.ci[0] - c), abs(r.ci[1] - c)) > spread if x.size >= 2 else True)
    moved = S.mean_threshold(x + shift, alpha=alpha, direction=direction, claimed=c + shift)
    scaled = S.mean_threshold(x * scale, alpha=alpha, direction=direction, claimed=c * scale)
    assert moved.verdict == scaled.verdict == r.verdict


@PROPS
@given(hs.lists(hs.tuples(samples, finite), min_size=1, max_size=4), alphas)
def test_iut_replicated_iff_all_parts(specs, alpha):
    parts = {f"p{i}": S.mean_threshold(x, alpha=alpha, direction="greater", claimed=c)
             for i, (x, c) in enumerate(specs)}
    r = S.intersection_union(parts, alpha=alpha)
    verdicts = [p.verdict for p in parts.values()]
    assert (r.verdict == "replicated") == all(v == "replicated" for v in verdicts)
    assert (r.verdict == "refuted") == ("refuted" in verdicts)
    assert r.p == max(p.p for p in parts.values())


pvals = hs.lists(hs.one_of(hs.floats(0, 1), hs.just(math.nan)), min_size=1, max_size=20)


@PROPS
@given(pvals, hs.floats(0.001, 0.2))
def test_holm_and_bh_adjustments(p, level):
    raw = np.nan_to_num(np.asarray(p, dtype=float), nan=1.0)
    order = np.argsort(raw, kind="stable")
    for adj in (S.holm(p), S.benjamini_hochberg(p)):
        assert isinstance(adj, np.ndarray) and adj.shape == raw.shape
        assert np.all(adj >= raw - 1e-15) and np.all(adj <= 1.0)
        assert np.all(np.diff(adj[order]) >= -1e-15)
    holm, bh = S.holm(p), S.benjamini_hochberg(p)
    assert np.all((holm <= level) <= (raw <= level))          # Holm rejects a subset of unadjusted
    assert np.all(bh <= holm + 1e-12)                         # ... and of BH


# ---------------------------------------------------------------- hand-computable answers and oracles
def test_clopper_pearson_all_successes():
    r10 = S.existence([True] * 10, alpha=A_PRIMARY, claimed_above=0.5, refuted_below=0.5)
    assert r10.ci[0] == pytest.approx(A_PRIMARY ** 0.1, rel=1e-12) and r10.ci[0] == pytest.approx(0.5616, abs=1e-4)
    assert r10.verdict == "replicated" and r10.p == pytest.approx(0.5 ** 10)
    r5 = S.existence([True] * 5, alpha=A_PRIMARY, claimed_above=0.5, refuted_below=0.5)
    assert r5.verdict == "insufficient_n" and "0.315" in r5.reason


@pytest.mark.parametrize("k", [0, 1, 5, 9, 10])
def test_clopper_pearson_matches_statsmodels(k):
    r = S.existence([1] * k + [0] * (10 - k), alpha=0.05, claimed_above=0.2, refuted_below=0.1)
    assert r.ci == pytest.approx(proportion_confint(k, 10, alpha=0.1, method="beta"), abs=1e-12)


def test_existence_require_all():
    r = S.existence([1] * 59 + [0], alpha=A_PRIMARY, claimed_above=0.5, refuted_below=0.5, require_all=True)
    assert r.verdict == "inconclusive" and r.p == 1.0


def test_t_interval_and_p_match_scipy():
    x = np.array([0.3, 1.2, -0.4, 2.2, 0.9, 1.1, 0.05, 1.7, 0.6, 1.4])
    r = S.mean_threshold(x, alpha=A_PRIMARY, direction="greater", claimed=0.1)
    expect = st.t.interval(1 - 2 * A_PRIMARY, x.size - 1, loc=x.mean(), scale=st.sem(x))
    assert r.ci == pytest.approx(expect, rel=1e-12)
    assert r.p == pytest.approx(st.ttest_1samp(x, 0.1, alternative="greater").pvalue, rel=1e-10)
    assert r.n == 10 and r.estimate == pytest.approx(x.mean())


def test_log_ratio_constant_100_replicates_at_10x():
    r = S.log_ratio([100.0] * 10, alpha=A_PRIMARY, claimed_factor=10, refuted_factor=3)
    assert r.verdict == "replicated" and r.estimate == pytest.approx(2.0) and r.ci == pytest.approx((2.0, 2.0))
    assert "collapses" in r.reason and r.p == 0.0
    ref = S.log_ratio([2.0, 2.5, 1.8, 2.2], alpha=0.05, claimed_factor=10, refuted_factor=3)
    assert ref.verdict == "refuted" and "(3x)" in ref.reason


def test_zero_variance_gives_finite_sensible_verdicts():
    same = [0.7] * 6
    results = [S.mean_threshold(same, alpha=0.05, direction="greater", claimed=0.7),
               S.mean_threshold(same, alpha=0.05, direction="less", claimed=1.0),
               S.paired(same, same, alpha=0.05, direction="greater"),
               S.equivalence(same, alpha=0.05, low=0.0, high=1.0),
               S.non_inferiority(same, alpha=0.05, margin=0.1)]
    assert [r.verdict for r in results] == ["inconclusive", "replicated", "inconclusive", "replicated", "replicated"]
    for r in results:
        assert all(math.isfinite(v) for v in (r.estimate, *r.ci, r.p)) and "collapses" in r.reason


def test_toy_tolerance_one_violation_refutes():
    r = S.toy_tolerance([2.5, 3.0, 1.9, 4.0], alpha=A_PRIMARY, threshold=2.0)
    assert r.verdict == "refuted" and r.estimate == 1.9 and math.isnan(r.p) and "index 2" in r.reason
    assert S.toy_tolerance([-1.0, -2.0], alpha=0.05, threshold=0, direction="less").verdict == "replicated"


def test_equivalence_p_is_statsmodels_tost_and_matches_interval():
    x = np.random.default_rng(3).normal(0.2, 0.5, 12)
    for low, high in [(-1, 1), (-0.1, 0.4), (0.5, 2.0)]:
        r = S.equivalence(x, alpha=0.05, low=low, high=high)
        kernel_p = S._equivalence_kernel(x[None], 0.05, low, high)[4][0]
        assert r.p == pytest.approx(kernel_p, rel=1e-9)
        assert (r.verdict == "replicated") == (r.p < 0.05)


def _brute_force_p(x, y):
    rx, ry = st.rankdata(x), st.rankdata(y)
    stat = lambda perm: np.corrcoef(rx, ry[list(perm)])[0, 1]
    obs, null = stat(range(len(y))), [stat(p) for p in itertools.permutations(range(len(y)))]
    return np.mean(np.asarray(null) >= obs - 1e-12)


def test_trend_exact_p_with_ties_matches_enumeration():
    x, y = [1, 2, 2, 3, 4, 5, 5], [0.1, 0.5, 0.5, 0.4, 0.9, 0.9, 1.3]
    r = S.trend(x, y, alpha=0.05)
    assert r.p == pytest.approx(_brute_force_p(x, y), rel=1e-9)
    assert r.estimate == pytest.approx(st.spearmanr(x, y).statistic, rel=1e-12)


def test_trend_insufficient_n_and_constant():
    up = np.arange(6.0)
    assert S.trend(up[:5], up[:5], alpha=A_PRIMARY).verdict == "insufficient_n"       # 1/5! = 0.0083 >= alpha
    assert S.trend(up, up, alpha=A_PRIMARY).verdict == "replicated"                   # 1/6! = 0.0014 < alpha
    assert S.trend(up, -up, alpha=A_PRIMARY).verdict == "refuted"
    flat = S.trend(up, [1.0] * 6, alpha=0.05)
    assert flat.verdict == "insufficient_n" and flat.estimate == 0.0 and "constant" in flat.reason


def test_trend_large_n_monte_carlo_is_reproducible():
    x = np.arange(20.0)
    y = x + np.random.default_rng(0).normal(0, 8, 20)
    r1, r2 = (S.trend(x, y, alpha=0.05) for _ in range(2))
    assert r1 == r2 and "random permutations" in r1.reason
    assert r1.p == pytest.approx(st.spearmanr(x, y, alternative="greater").pvalue, abs=0.01)


BAD_DATA_CALLS = {
    "existence": lambda v: S.existence(v, alpha=0.05, claimed_above=0.5, refuted_below=0.5),
    "mean_threshold": lambda v: S.mean_threshold(v, alpha=0.05, direction="greater", claimed=0),
    "paired": lambda v: S.paired(v, [0, 0, 0], alpha=0.05, direction="greater"),
    "log_ratio": lambda v: S.log_ratio(v, alpha=0.05, claimed_factor=10, refuted_factor=3),
    "equivalence": lambda v: S.equivalence(v, alpha=0.05, low=-1, high=1),
    "non_inferiority": lambda v: S.non_inferiority(v, alpha=0.05, margin=1),
    "trend": lambda v: S.trend([1, 2, 3], v, alpha=0.05),
    "toy_tolerance": lambda v: S.toy_tolerance(v, alpha=0.05, threshold=0)}


@pytest.mark.parametrize("rule", BAD_DATA_CALLS)
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_data_rejected_naming_rule_and_index(rule, bad):
    with pytest.raises(ValueError, match=rf"^{rule}: \w+\[1\] = (nan|inf); every entry must be finite"):
        BAD_DATA_CALLS[rule]([1.0, bad, 1.0])


@pytest.mark.parametrize("alpha", [0.0, 0.5, -0.1, 0.7, math.nan, True])
def test_alpha_outside_open_interval_rejected(alpha):
    with pytest.raises(ValueError, match="alpha"):
        S.mean_threshold([1.0, 2.0], alpha=alpha, direction="greater", claimed=0)


def test_decide_dispatch_and_errors():
    rule = {"type": "mean_threshold", "direction": "greater", "claimed": 0.0}
    assert S.decide(rule, 0.05, {"values": [1.0, 2.0, 1.5]}) == S.mean_threshold(
        [1.0, 2.0, 1.5], alpha=0.05, direction="greater", claimed=0.0)
    with pytest.raises(ValueError, match="unknown rule type 'bogus'; allowed: existence.*intersection_union"):
        S.decide({"type": "bogus"}, 0.05, {})
    with pytest.raises(ValueError, match=r"missing \['claimed'\]"):
        S.decide({"type": "mean_threshold", "direction": "greater"}, 0.05, {"values": [1, 2]})
    with pytest.raises(ValueError, match=r"unknown \['claimd'\]"):
        S.decide({**rule, "claimd": 1}, 0.05, {"values": [1, 2]})
    with pytest.raises(ValueError, match=r"missing \['values'\]"):
        S.decide(rule, 0.05, {"vals": [1, 2]})


def test_decide_intersection_union_and_json():
    rule = {"type": "intersection_union", "parts": {
        "sharper": {"type": "log_ratio", "claimed_factor": 10, "refuted_factor": 3},
        "accuracy": {"type": "non_inferiority", "margin": 1.0},
        "law": {"type": "toy_tolerance", "threshold": 0.0}}}
    data = {"sharper": {"ratios": [40.0, 25, 60, 33, 80]}, "accuracy": {"values": [0.2, -0.1, 0.4, 0.0, 0.3]},
            "law": {"values": [1.0, 2.0]}}
    r = S.decide(rule, A_PRIMARY, data)
    assert r.verdict == "replicated" and [k for k, _ in r.parts] == ["sharper", "accuracy", "law"]
    assert r.p == max(p.p for k, p in r.parts if k != "law")
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["ci"] == [None, None] and d["parts"][2]["name"] == "law" and d["parts"][2]["p"] is None
    with pytest.raises(ValueError, match=r"missing \['law'\]"):
        S.decide(rule, A_PRIMARY, {k: v for k, v in data.items() if k != "law"})


def test_multiplicity_helpers():
    assert S.bonferroni_share(0.05, 16) == pytest.approx(A_PRIMARY)
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.011])
    assert S.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert S.benjamini_hochberg(p) == pytest.approx(multipletests(p, method="fdr_bh")[1])
    assert S.holm([0.01, None, math.nan]) == pytest.approx([0.03, 1.0, 1.0])
    with pytest.raises(ValueError, match="n_primary"):
        S.bonferroni_share(0.05, 0)


def test_input_shape_and_result_validation():
    with pytest.raises(ValueError, match="paired: a has 3 units but b has 2"):
        S.paired([1, 2, 3], [1, 2], alpha=0.05, direction="greater")
    with pytest.raises(ValueError, match="log_ratio: ratios\\[0\\] = -1"):
        S.log_ratio([-1.0, 2.0], alpha=0.05, claimed_factor=10, refuted_factor=3)
    with pytest.raises(ValueError, match="direction='up'; allowed: greater, less"):
        S.mean_threshold([1, 2], alpha=0.05, direction="up", claimed=0)
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        S.Result("x", 0.0, (0.0, 0.0), 0.5, 0.05, 1, "maybe", "")


# ================================================================ distribution-free rules: sign tests, permutation
# Oracles: exact binomial sums in fractions (and scipy's binomtest), order statistics read off np.sort, the exact
# enumeration of every relabelling for the permutation test. Hand-computed answers where the arithmetic is short.
SIGN_ALPHAS = (0.003125, 0.05, 0.1)
MEDIAN_RULES = ("median_threshold", "median_paired", "median_log_ratio", "median_equivalence",
                "median_non_inferiority")


def _exact_sign_rank(n, alpha):
    """Largest k >= 1 with P(Bin(n, 1/2) <= k - 1) <= alpha, by exact fractions (alpha: the float's exact value)."""
    k, cdf = 0, Fraction(0)
    for j in range(n):
        cdf += Fraction(math.comb(n, j), 2 ** n)
        if cdf > Fraction(alpha):
            break
        k = j + 1
    return k


def _exact_upper_tail(k, n):
    """P(Bin(n, 1/2) >= k) as an exact fraction."""
    return Fraction(sum(math.comb(n, j) for j in range(max(k, 0), n + 1)), 2 ** n)


def test_sign_rank_known_values():
    # n = 10: P(B <= 0) = 1/1024, P(B <= 1) = 11/1024 = 0.0107, P(B <= 2) = 56/1024 = 0.0547
    assert S.sign_rank(10, 0.003125) == 1 and S.sign_rank(10, 0.05) == 2
    # n = 5: P(B <= 0) = 1/32 = 0.03125 > 0.003125; P(B <= 1) = 6/32
    assert S.sign_rank(5, 0.003125) == 0 and S.sign_rank(5, 0.05) == 1
    assert S.sign_rank(5, 2 ** -5) == 1                   # P(B <= 0) = alpha exactly: allowed (<=)
    assert S.sign_rank(9, A_PRIMARY) == 1 and S.sign_rank(8, A_PRIMARY) == 0   # 2^-9 = 0.00195, 2^-8 = 0.0039


@pytest.mark.parametrize("alpha", [*SIGN_ALPHAS, 2 ** -5, 2 ** -10])
def test_sign_rank_matches_brute_force_search(alpha):
    for n in range(1, 61):
        k = S.sign_rank(n, alpha)
        assert k == _exact_sign_rank(n, alpha), n
        cdf = st.binom.cdf(np.arange(n), n, 0.5)                 # cdf[j - 1] = P(B <= j - 1)
        assert k == int(np.sum(cdf <= alpha * (1 + 1e-12))), n    # cdf is increasing: the count is the largest j
        if k:                                             # x_(k) is a level-alpha bound, x_(k+1) is not
            assert st.binom.cdf(k - 1, n, 0.5) <= alpha * (1 + 1e-12) < st.binom.cdf(k, n, 0.5)
        else:
            assert 0.5 ** n > alpha


# ---------------------------------------------------------------- median rules: oracles and properties
tied = hs.one_of(hs.integers(-3, 3).map(float), finite)          # small integers: ties among units and at c
tied_samples = hs.lists(tied, min_size=0, max_size=25)
sign_alphas = hs.one_of(hs.sampled_from([*SIGN_ALPHAS, 2 ** -5, 2 ** -8, 0.125]), alphas)


def _check_sign(r, x, alpha, sign, c, ref):
    """A one-sided sign-test Result against the oracles: binomtest p, order-statistic interval, verdict regions."""
    x, n = np.asarray(x, dtype=float), len(x)
    k = S.sign_rank(n, alpha) if n else 0
    assert r.n == n and r.alpha == alpha
    if k == 0:
        assert r.verdict == "insufficient_n" and r.p == 1.0 and all(math.isnan(v) for v in r.ci)
        return
    beyond = int((sign * (x - c) > 0).sum())                     # strictly beyond; ties at c count against
    exact = _exact_upper_tail(beyond, n)
    assert r.p == pytest.approx(float(exact), rel=1e-12, abs=0)
    assert r.p == pytest.approx(st.binomtest(beyond, n, 0.5, alternative="greater").pvalue, rel=1e-12, abs=0)
    assert r.p >= 0.5 ** n * (1 - 1e-12)
    xs = np.sort(x)
    assert r.ci == (xs[k - 1], xs[n - k]) and r.estimate == np.median(x)
    # the interval and p agree: replicated iff the exact p <= alpha; refuted iff the opposite sign test at ref passes
    assert (r.verdict == "replicated") == (exact <= Fraction(alpha)) == (sign * (r.ci[0 if sign > 0 else 1] - c) > 0)
    opposite = _exact_upper_tail(int((sign * (x - ref) < 0).sum()), n)
    assert (r.verdict == "refuted") == (opposite <= Fraction(alpha)) == (sign * (r.ci[1 if sign > 0 else 0] - ref) < 0)
    assert r.verdict in ("replicated", "refuted", "inconclusive")


@PROPS
@given(tied_samples, tied, hs.floats(0, 5), sign_alphas, hs.sampled_from(["greater", "less"]))
def test_median_threshold_matches_sign_test_oracle(x, c, gap, alpha, direction):
    sign = S._SIGNS[direction]
    ref = c - sign * gap
    r = S.median_threshold(x, alpha=alpha, direction=direction, claimed=c, refuted=ref)
    _check_sign(r, x, alpha, sign, c, ref)


def test_median_threshold_hand_computed():
    x = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]                    # sorted 1 1 2 3 3 4 5 5 6 9; alpha 0.05 -> k = 2
    r = S.median_threshold(x, alpha=0.05, direction="greater", claimed=0.5)
    assert r.ci == (1.0, 6.0) and r.estimate == 3.5 and r.p == 2 ** -10 and r.verdict == "replicated"
    r = S.median_threshold(x, alpha=0.05, direction="greater", claimed=1.0)   # 8 of 10 > 1: p = 56/1024
    assert r.p == pytest.approx(56 / 1024, rel=1e-12) and r.verdict == "inconclusive"
    assert "8 of 10 units > 1" in r.reason and "x_(2), x_(9)" in r.reason
    r = S.median_threshold(x, alpha=0.05, direction="less", claimed=7.0)      # 9 of 10 < 7: p = 11/1024
    assert r.p == pytest.approx(11 / 1024, rel=1e-12) and r.verdict == "replicated"
    r = S.median_threshold(x, alpha=0.05, direction="greater", claimed=7.0, refuted=6.5)  # x_(9) = 6 < 6.5
    assert r.verdict == "refuted"


@pytest.mark.parametrize("alpha", [*SIGN_ALPHAS, 2 ** -5])
@pytest.mark.parametrize("direction,sign", [("greater", 1), ("less", -1)])
def test_median_all_equal_sample(alpha, direction, sign):
    """All-equal is not infinite evidence: at the threshold never replicated; beyond it only if 2^-n <= alpha."""
    for n in range(1, 31):
        at = S.median_threshold([0.7] * n, alpha=alpha, direction=direction, claimed=0.7)
        assert at.verdict == ("insufficient_n" if 0.5 ** n > alpha else "inconclusive"), n
        assert at.p == 1.0
        past = S.median_threshold([0.7 + sign] * n, alpha=alpha, direction=direction, claimed=0.7)
        assert past.verdict == ("replicated" if 0.5 ** n <= alpha else "insufficient_n"), n
        assert past.p == (0.5 ** n if 0.5 ** n <= alpha else 1.0)
        if 0.5 ** n <= alpha:
            assert "all values equal" in past.reason and past.ci == (0.7 + sign, 0.7 + sign)


def _median_call(rule, x, alpha):
    x = np.asarray(x, dtype=float)
    return {"median_threshold": lambda: S.median_threshold(x, alpha=alpha, direction="greater", claimed=0.0),
            "median_paired": lambda: S.median_paired(x, np.zeros_like(x), alpha=alpha, direction="less"),
            "median_log_ratio": lambda: S.median_log_ratio(np.exp(x), alpha=alpha, claimed_factor=10,
                                                           refuted_factor=3),
            "median_equivalence": lambda: S.median_equivalence(x, alpha=alpha, low=-1, high=1),
            "median_non_inferiority": lambda: S.median_non_inferiority(x, alpha=alpha, margin=0.5)}[rule]()


@pytest.mark.parametrize("rule", MEDIAN_RULES)
def test_median_rules_insufficient_n_iff_sign_rank_zero(rule):
    x = np.random.default_rng(5).normal(0, 1, 12)
    for alpha in (*SIGN_ALPHAS, 2 ** -5, 1e-4):
        for n in range(0, 13):
            r = _median_call(rule, x[:n], alpha)
            assert (r.verdict == "insufficient_n") == (n == 0 or S.sign_rank(n, alpha) == 0), (alpha, n)
            if r.verdict == "insufficient_n":
                assert r.p == 1.0 and all(math.isnan(v) for v in r.ci) and r.n == n
                assert "insufficient_n" in r.reason and "\n" not in r.reason


@PROPS
@given(tied_samples, tied, hs.floats(0, 5), sign_alphas)
def test_median_less_mirrors_greater(x, c, gap, alpha):
    g = S.median_threshold(x, alpha=alpha, direction="greater", claimed=c, refuted=c - gap)
    neg = [-v for v in x]
    m = S.median_threshold(neg, alpha=alpha, direction="less", claimed=-c, refuted=-c + gap)
    assert m.verdict == g.verdict and m.p == g.p and m.n == g.n
    if x:
        assert m.estimate == -g.estimate
    if g.verdict != "insufficient_n":
        assert m.ci == (-g.ci[1], -g.ci[0])


def _same_decision(r, q):
    """Same verdict, p, interval and estimate (nan-aware); the rule name and reason may differ."""
    assert r.verdict == q.verdict and r.n == q.n and r.p == q.p
    np.testing.assert_array_equal([r.estimate, *r.ci], [q.estimate, *q.ci])


@PROPS
@given(hs.lists(hs.tuples(tied, tied), min_size=0, max_size=25), tied, sign_alphas,
       hs.sampled_from(["greater", "less"]))
def test_median_paired_is_median_threshold_of_difference(ab, margin, alpha, direction):
    a, b = (np.array(v, dtype=float) for v in zip(*ab)) if ab else (np.array([]), np.array([]))
    r = S.median_paired(a, b, alpha=alpha, direction=direction, margin=margin)
    _same_decision(r, S.median_threshold(a - b, alpha=alpha, direction=direction, claimed=margin))
    assert r.rule == "median_paired"


@PROPS
@given(tied_samples, sign_alphas)
def test_median_non_inferiority_is_median_threshold_at_minus_margin(x, alpha):
    for margin in (0.0, 0.5, 2.0):
        r = S.median_non_inferiority(x, alpha=alpha, margin=margin)
        _same_decision(r, S.median_threshold(x, alpha=alpha, direction="greater", claimed=-margin))


ratio_values = hs.one_of(hs.sampled_from([0.1, 1.0, 3.0, 10.0, 100.0]), hs.floats(1e-3, 1e4))


@PROPS
@given(hs.lists(ratio_values, min_size=0, max_size=25), hs.sampled_from([(10, 3), (10, 10), (3, 1), (100, 10)]),
       hs.sampled_from([10.0, 2.0, math.e]), sign_alphas, hs.sampled_from(["greater", "less"]))
def test_median_log_ratio_is_median_threshold_on_logs(ratios, factors, base, alpha, direction):
    cf, rf = factors if direction == "greater" else (1 / factors[0], 1 / factors[1])
    r = S.median_log_ratio(ratios, alpha=alpha, claimed_factor=cf, refuted_factor=rf, base=base, direction=direction)
    logs = np.log(np.asarray(ratios, dtype=float)) / math.log(base)
    q = S.median_threshold(logs, alpha=alpha, direction=direction, claimed=math.log(cf, base),
                           refuted=math.log(rf, base))
    _same_decision(r, q)
    _check_sign(r, logs, alpha, S._SIGNS[direction], math.log(cf, base), math.log(rf, base))


def test_median_log_ratio_hand_computed():
    r = S.median_log_ratio([100.0] * 10, alpha=A_PRIMARY, claimed_factor=10, refuted_factor=3)
    assert r.verdict == "replicated" and r.estimate == pytest.approx(2.0) and r.p == 2 ** -10
    r = S.median_log_ratio([100.0] * 8, alpha=A_PRIMARY, claimed_factor=10, refuted_factor=3)
    assert r.verdict == "insufficient_n"                                    # 2^-8 > 0.003125
    r = S.median_log_ratio([2.0, 2.5, 1.8, 2.2, 1.5], alpha=0.05, claimed_factor=10, refuted_factor=3)
    assert r.verdict == "refuted" and "(3x)" in r.reason                    # x_(5) = log10 2.5 < log10 3


@PROPS
@given(tied_samples, tied, hs.floats(1e-3, 5), sign_alphas)
def test_median_equivalence_is_two_one_sided_sign_tests(x, low, width, alpha):
    high = low + width
    r = S.median_equivalence(x, alpha=alpha, low=low, high=high)
    up = S.median_threshold(x, alpha=alpha, direction="greater", claimed=low)
    down = S.median_threshold(x, alpha=alpha, direction="less", claimed=high)
    if up.verdict == "insufficient_n":
        assert r.verdict == "insufficient_n" and r.p == 1.0
        return
    assert (r.verdict == "replicated") == (up.verdict == down.verdict == "replicated")
    assert r.p == max(up.p, down.p)
    n = len(x)
    p_exact = max(_exact_upper_tail(int((np.asarray(x) > low).sum()), n),
                  _exact_upper_tail(int((np.asarray(x) < high).sum()), n))
    assert r.p == pytest.approx(float(p_exact), rel=1e-12)
    assert (r.verdict == "replicated") == (p_exact <= Fraction(alpha))
    assert r.ci == up.ci == down.ci and r.estimate == np.median(x)
    assert (r.verdict == "refuted") == (r.ci[0] > high or r.ci[1] < low)


def test_median_equivalence_hand_computed():
    x = [0.1, -0.2, 0.05, 0.3, -0.1, 0.0, 0.15, -0.05, 0.2, 0.1]  # sorted -0.2 -0.1 -0.05 0 0.05 0.1 0.1 0.15 0.2 0.3
    r = S.median_equivalence(x, alpha=0.05, low=-0.5, high=0.5)
    assert r.ci == (-0.1, 0.2) and r.verdict == "replicated" and r.p == 2 ** -10
    r = S.median_equivalence(x, alpha=0.05, low=-0.15, high=0.5)   # 9 of 10 > -0.15: p = 11/1024
    assert r.verdict == "replicated" and r.p == pytest.approx(11 / 1024)
    r = S.median_equivalence(x, alpha=0.05, low=-0.1, high=0.5)    # 8 of 10 > -0.1 (tie at low counts against)
    assert r.verdict == "inconclusive" and r.p == pytest.approx(56 / 1024)
    r = S.median_equivalence(x, alpha=0.05, low=0.5, high=1.0)     # x_(9) = 0.2 < 0.5
    assert r.verdict == "refuted"


scales = hs.sampled_from([0.25, 0.5, 2.0, 3.0, 10.0])


@PROPS
@given(hs.lists(hs.integers(-6, 6), min_size=0, max_size=25), hs.integers(-6, 6), hs.integers(0, 4),
       hs.integers(-50, 50), scales, sign_alphas, hs.sampled_from(["greater", "less"]))
def test_median_rules_location_scale_invariant(x, c, gap, shift, scale, alpha, direction):
    """Integer data, shifts and dyadic/small-integer scales: the arithmetic is exact, ties stay ties."""
    x, sign = np.asarray(x, dtype=float), S._SIGNS[direction]
    r = S.median_threshold(x, alpha=alpha, direction=direction, claimed=c, refuted=c - sign * gap)
    moved = S.median_threshold(x + shift, alpha=alpha, direction=direction, claimed=c + shift,
                               refuted=c - sign * gap + shift)
    scaled = S.median_threshold(x * scale, alpha=alpha, direction=direction, claimed=c * scale,
                                refuted=(c - sign * gap) * scale)
    flipped = S.median_threshold(-scale * x, alpha=alpha, direction="less" if sign > 0 else "greater",
                                 claimed=-scale * c, refuted=-scale * (c - sign * gap))
    assert r.verdict == moved.verdict == scaled.verdict == flipped.verdict
    assert r.p == moved.p == scaled.p == flipped.p
    if r.verdict != "insufficient_n":
        assert moved.ci == (r.ci[0] + shift, r.ci[1] + shift) and scaled.ci == (r.ci[0] * scale, r.ci[1] * scale)
    e = S.median_equivalence(x, alpha=alpha, low=c - 0.5, high=c + gap + 0.5)
    e2 = S.median_equivalence(x * scale + shift, alpha=alpha, low=(c - 0.5) * scale + shift,
                              high=(c + gap + 0.5) * scale + shift)
    assert e.verdict == e2.verdict and e.p == e2.p


# ---------------------------------------------------------------- median rules: calibration (null boundary = median c)
def _atoms(rng, size):           # bounded with point masses, P(X < 0) = 0.2, P(X = 0) = 0.3, P(X > 0) = 0.5
    return rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0], size=size)


MEDIAN_NULLS = {                 # each has median 0 with P(X <= 0) >= 1/2 and P(X >= 0) >= 1/2; shift: alternative
    "normal": (lambda rng, s: rng.normal(0, 1, s), 4.0),
    "cauchy": (lambda rng, s: rng.standard_cauchy(s), 25.0),
    "skewed+": (lambda rng, s: rng.lognormal(0, 1, s) - 1.0, 3.0),
    "skewed-": (lambda rng, s: 1.0 - rng.lognormal(0, 1, s), 20.0),
    "point-masses": (_atoms, 2.0),
    "all-equal": (lambda rng, s: np.zeros(s), 1.0)}


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("family", MEDIAN_NULLS)
@pytest.mark.parametrize("direction,sign", [("greater", 1), ("less", -1)])
def test_median_threshold_calibrated(alpha, family, direction, sign):
    draw, shift = MEDIAN_NULLS[family]
    c = 0.4
    rule = lambda X: S._sign_kernel(X, alpha, sign, c, c)[0]
    null = lambda rng, nsim: c + sign * draw(rng, (nsim, N_SEEDS))          # mirrored so both tails are tested
    alt = lambda rng, nsim: c + sign * (draw(rng, (nsim, N_SEEDS)) + shift)
    cal = check_calibration(rule, null, alt, alpha=alpha, name=f"median_threshold {direction} {family} n=10")
    assert_calibrated(cal, 0.5)
    if family == "all-equal":
        assert cal.false_rate == 0.0


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("family", ["normal", "skewed+", "point-masses"])
@pytest.mark.parametrize("edge", [-1.0, 1.0])
def test_median_equivalence_calibrated(alpha, family, edge):
    draw, _ = MEDIAN_NULLS[family]
    rule = lambda X: S._sign_equivalence_kernel(X, alpha, -1.0, 1.0)[0]
    null = lambda rng, nsim: edge - edge * draw(rng, (nsim, N_SEEDS))     # median at the edge, tail towards inside
    alt = lambda rng, nsim: 0.1 * draw(rng, (nsim, N_SEEDS))
    cal = check_calibration(rule, null, alt, alpha=alpha, name=f"median_equivalence edge {edge:+g} {family} n=10")
    assert_calibrated(cal, 0.5)


# ---------------------------------------------------------------- two_sample: exact enumeration oracle
def _exact_permutation_p(a, b):
    """P(T* >= T), P(T* <= T) over all C(n_a + n_b, n_a) relabellings, T = sum of group a; exact fractions of
    the decimals as written (repr), so 0.1 + 0.2 ties 0.3 as the rule's relative 1e-9 tie tolerance intends."""
    z, t = [Fraction(repr(float(v))) for v in (*a, *b)], sum(Fraction(repr(float(v))) for v in a)
    sums = [sum(z[i] for i in c) for c in itertools.combinations(range(len(z)), len(a))]
    return sum(s >= t for s in sums) / len(sums), sum(s <= t for s in sums) / len(sums)


def _mc_tolerance(p):
    """Binomial tolerance of a 9,999-draw Monte-Carlo p around the exact p (4 sd plus the +1 of (1 + b)/(1 + R))."""
    return 4 * math.sqrt(p * (1 - p) / S._PERMUTATIONS) + 2 / S._PERMUTATIONS


_rng2 = np.random.default_rng(11)
TWO_SAMPLE_CASES = {
    "normal 5v5 shifted": (_rng2.normal(0.8, 1, 5), _rng2.normal(0, 1, 5)),
    "normal 4v6": (_rng2.normal(0.3, 1, 4), _rng2.normal(0, 1, 6)),
    "extreme 5v5": (np.arange(5.0) + 10, np.arange(5.0)),
    "binary ties 5v5": ([1, 1, 1, 0, 0], [1, 0, 0, 0, 0]),
    "counts with ties 6v5": ([3, 4, 4, 5, 7, 4], [2, 3, 4, 4, 3]),
    "same multiset of decimals 4v4": ([0.1, 0.2, 0.3, 0.7], [0.3, 0.7, 0.1, 0.2]),
    "decimals 5v5": ([0.1, 0.7, 0.3, 0.3, 0.6], [0.2, 0.1, 0.3, 0.1, 0.4])}


@pytest.mark.parametrize("case", TWO_SAMPLE_CASES)
def test_two_sample_p_matches_exact_enumeration(case):
    a, b = TWO_SAMPLE_CASES[case]
    ge, le = _exact_permutation_p(a, b)
    up = S.two_sample(a, b, alpha=0.05, direction="greater")
    down = S.two_sample(a, b, alpha=0.05, direction="less")
    assert abs(up.p - float(ge)) < min(0.02, _mc_tolerance(float(ge))), (up.p, float(ge))
    assert abs(down.p - float(le)) < min(0.02, _mc_tolerance(float(le))), (down.p, float(le))
    assert up.estimate == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12) and up.n == min(len(a), len(b))
    # verdicts: decided by the Monte-Carlo p (its own level-alpha test); the exact p agrees away from alpha
    assert (up.verdict == "replicated") == (up.p < 0.05) and (up.verdict == "refuted") == (down.p < 0.05)
    for p_mc, p_ex in ((up.p, ge), (down.p, le)):
        if abs(float(p_ex) - 0.05) > _mc_tolerance(0.05):
            assert (p_mc < 0.05) == (p_ex < 0.05)


def test_two_sample_ties_count_as_at_least():
    """Ties are >=: a tie-heavy sample sits at the exact P(T* >= T), not at P(T* > T); identical data give p = 1."""
    a, b = [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]                  # T = 3: P(T* >= 3) = 66/252, P(T* > 3) = 6/252
    r = S.two_sample(a, b, alpha=0.05, direction="greater")
    assert r.p == pytest.approx(66 / 252, abs=0.02) and r.verdict == "inconclusive"
    for same in ([0.1] * 5, [2.0] * 7):
        for direction in ("greater", "less"):
            r = S.two_sample(same, same, alpha=0.05, direction=direction)
            assert r.p == 1.0 and r.verdict == "inconclusive" and r.estimate == 0.0
    r = S.two_sample([0.1, 0.2, 0.3, 0.7], [0.3, 0.7, 0.1, 0.2], alpha=0.05, direction="greater")
    assert r.p > 0.5 and r.verdict == "inconclusive"        # the same multiset: ties in the last bit count as >=
    x = np.random.default_rng(2).normal(size=8)
    r = S.two_sample(x, x[::-1], alpha=0.05, direction="less")
    assert r.p > 0.5 and r.verdict == "inconclusive"


def test_two_sample_deterministic():
    a, b = TWO_SAMPLE_CASES["normal 4v6"]
    first = S.two_sample(a, b, alpha=0.05, direction="greater")
    assert all(S.two_sample(a, b, alpha=0.05, direction="greater") == first for _ in range(3))
    S._membership.cache_clear()                              # a fresh seeded relabelling set: the same numbers
    assert S.two_sample(list(a), list(b), alpha=0.05, direction="greater") == first
    m, exact = S._membership(4, 6)
    assert exact and len(m) == math.comb(10, 4) and m.sum(1).min() == m.sum(1).max() == 4   # all relabellings
    assert len({tuple(r) for r in m}) == len(m)


@pytest.mark.parametrize("case", ["normal 5v5 shifted", "normal 4v6", "counts with ties 6v5", "decimals 5v5"])
def test_two_sample_interval_contains_estimate_and_shifts_with_a(case):
    a, b = (np.asarray(v, dtype=float) for v in TWO_SAMPLE_CASES[case])
    r = S.two_sample(a, b, alpha=0.05, direction="greater")
    assert r.ci[0] <= r.estimate <= r.ci[1]
    tol = 1e-7 * (1 + np.abs(a).max() + np.abs(b).max())
    if abs(r.ci[0]) > tol:                                   # interval and verdict agree (test inversion)
        assert (r.verdict == "replicated") == (r.ci[0] > 0)
    for c in (-3.7, 0.25, 12.5):
        m = S.two_sample(a + c, b, alpha=0.05, direction="greater")
        assert m.ci[0] == pytest.approx(r.ci[0] + c, abs=tol * (1 + abs(c)))
        assert m.ci[1] == pytest.approx(r.ci[1] + c, abs=tol * (1 + abs(c)))
        assert m.estimate == pytest.approx(r.estimate + c, abs=1e-12 * (1 + abs(c)))
        assert m.ci[0] <= m.estimate <= m.ci[1]
        if abs(m.ci[0]) > tol:
            assert (m.verdict == "replicated") == (m.ci[0] > 0)


def test_two_sample_interval_bounds_invert_the_test():
    """Just inside the lower bound the shifted data are rejected, just outside not (and mirrored for the upper)."""
    a, b = (np.asarray(v, dtype=float) for v in TWO_SAMPLE_CASES["normal 5v5 shifted"])
    lo, hi = S.two_sample(a, b, alpha=0.05, direction="greater").ci
    eps = 1e-6
    assert S.two_sample(a - (lo - eps), b, alpha=0.05, direction="greater").p < 0.05
    assert S.two_sample(a - (lo + eps), b, alpha=0.05, direction="greater").p >= 0.05
    assert S.two_sample(a - (hi + eps), b, alpha=0.05, direction="less").p < 0.05
    assert S.two_sample(a - (hi - eps), b, alpha=0.05, direction="less").p >= 0.05


@pytest.mark.parametrize("n_a,n_b,alpha,expect", [
    (0, 5, 0.05, True), (1, 1, 0.05, True), (2, 2, 0.05, True),        # C(4, 2) = 6: floor 1/6 > 0.05
    (3, 3, 0.05, False),                                                # C(6, 3) = 20: floor 1/20 = alpha, attainable
    (3, 4, 0.05, False),                                                # C(7, 3) = 35
    (5, 5, A_PRIMARY, True),                                            # 252 * 0.003125 = 0.79
    (5, 6, A_PRIMARY, False),                                           # 462 * 0.003125 = 1.44
    (10, 10, A_PRIMARY, False)])
def test_two_sample_insufficient_n(n_a, n_b, alpha, expect):
    # insufficient iff the smallest attainable p (1/C with every relabelling) exceeds alpha, or a group has < 2
    assert (min(n_a, n_b) < 2 or math.comb(n_a + n_b, n_a) * alpha < 1) == expect
    a, b = np.arange(n_a, dtype=float) + 100, np.arange(n_b, dtype=float)   # the most extreme labelling
    r = S.two_sample(a, b, alpha=alpha, direction="greater")
    assert (r.verdict == "insufficient_n") == expect
    if expect:
        assert r.p == 1.0 and all(math.isnan(v) for v in r.ci) and "\n" not in r.reason
    else:
        assert r.verdict == "replicated"                    # the sizes it lets through can replicate


@pytest.mark.parametrize("n_a,n_b,alpha,family", [(10, 10, 0.05, "normal"), (10, 10, A_PRIMARY, "skewed-"),
                                                   (10, 10, A_PRIMARY, "point-masses"), (5, 5, 0.05, "skewed-")])
def test_two_sample_calibrated_under_exchangeability(n_a, n_b, alpha, family):
    draw, shift = MEDIAN_NULLS[family]
    rule = lambda AB: S._two_sample_kernel(AB[0], AB[1], alpha, 1)[0]
    data = lambda d: lambda rng, nsim: (draw(rng, (nsim, n_a)) + d, draw(rng, (nsim, n_b)))
    cal = check_calibration(rule, data(0.0), data(2.5 * shift), alpha=alpha, nsim=2000,
                            name=f"two_sample {n_a}v{n_b} {family}")
    assert_calibrated(cal, 0.4)


# ---------------------------------------------------------------- new kernels == public rules (same code path)
def test_distribution_free_kernels_match_public_rules():
    rng = np.random.default_rng(4)
    X = np.round(rng.normal(0.4, 1.0, size=(40, N_SEEDS)), 1)        # rounded: ties among units and at thresholds
    Y = np.round(rng.normal(0.0, 1.0, size=(40, N_SEEDS)), 1)
    for alpha in (A_PRIMARY, 0.05):
        v, med, lo, hi, p, k = S._sign_kernel(X, alpha, 1, 0.0, -0.5)
        for i, row in enumerate(X):
            r = S.median_threshold(row, alpha=alpha, direction="greater", claimed=0.0, refuted=-0.5)
            assert (r.verdict, r.estimate, r.ci, r.p) == (v[i], med[i], (lo[i], hi[i]), p[i])
        v, med, lo, hi, p, k = S._sign_kernel(X - Y, alpha, -1, 0.2, 0.2)
        for i, (a, b) in enumerate(zip(X, Y)):
            r = S.median_paired(a, b, alpha=alpha, direction="less", margin=0.2)
            assert (r.verdict, r.estimate, r.ci, r.p) == (v[i], med[i], (lo[i], hi[i]), p[i])
        v, *_ = S._sign_kernel(X, alpha, 1, -0.3, -0.3)
        for row, vv in zip(X, v):
            assert S.median_non_inferiority(row, alpha=alpha, margin=0.3).verdict == vv
        v, *_ = S._sign_kernel(np.log(10 ** X) / math.log(10), alpha, 1, math.log10(2), math.log10(1.5))
        for row, vv in zip(X, v):
            assert S.median_log_ratio(10 ** row, alpha=alpha, claimed_factor=2, refuted_factor=1.5).verdict == vv
        v, med, lo, hi, p, k = S._sign_equivalence_kernel(X, alpha, -0.5, 1.5)
        for i, row in enumerate(X):
            r = S.median_equivalence(row, alpha=alpha, low=-0.5, high=1.5)
            assert (r.verdict, r.estimate, r.ci, r.p) == (v[i], med[i], (lo[i], hi[i]), p[i])
    A, B = X[:6] + 0.8, Y[:6]
    for sign, direction in ((1, "greater"), (-1, "less")):
        v, d, p, q = S._two_sample_kernel(A, B, 0.05, sign)
        for i, (a, b) in enumerate(zip(A, B)):
            r = S.two_sample(a, b, alpha=0.05, direction=direction)
            assert (r.verdict, r.estimate, r.p) == (v[i], d[i], p[i])


# ---------------------------------------------------------------- decide(): the new types with the registry's params
NEW_RULES = {   # type -> (required params, optional params, data)
    "median_threshold": ({"direction": "greater", "claimed": 0.0}, {"refuted": -0.5}, {"values": [1.0, 2, 0.5] * 4}),
    "median_paired": ({"direction": "less"}, {"margin": 0.5}, {"a": [0.0, 1, -1] * 4, "b": [1.0, 2, 0] * 4}),
    "median_log_ratio": ({"claimed_factor": 10, "refuted_factor": 3}, {"base": 2.0, "direction": "greater"},
                         {"ratios": [40.0, 25, 60, 33, 80] * 2}),
    "median_equivalence": ({"low": -1.0, "high": 1.0}, {}, {"values": [0.1, -0.2, 0.3] * 4}),
    "median_non_inferiority": ({"margin": 1.0}, {}, {"values": [0.2, -0.1, 0.4, 0.0, 0.3] * 2}),
    "two_sample": ({"direction": "greater"}, {}, {"a": [3.0, 4, 5, 6], "b": [0.0, 1, 2, 2.5]})}
_PUBLIC = {k: getattr(S, k) for k in NEW_RULES}


@pytest.mark.parametrize("kind", NEW_RULES)
def test_decide_dispatches_new_rules_with_registry_params(kind):
    required, optional, data = NEW_RULES[kind]
    assert (tuple(required), tuple(optional)) == RULE_PARAMS[kind]
    for params in (required, {**required, **optional}):
        assert S.decide({"type": kind, **params}, 0.05, data) == _PUBLIC[kind](*data.values(), alpha=0.05, **params)
    assert S.decide({"type": kind, **required}, 0.05, data).rule == kind
    with pytest.raises(ValueError) as e:                     # the params decide() accepts are the registry's
        S.decide({"type": kind, **required, "bogus": 1}, 0.05, data)
    allowed = re.fullmatch(rf"{kind} rule params: missing \[\], unknown \['bogus'\]; allowed: (.*)", str(e.value))
    assert allowed and set(allowed.group(1).split(", ")) == set(RULE_PARAMS[kind][0] + RULE_PARAMS[kind][1])
    for name in required:
        with pytest.raises(ValueError, match=rf"^{kind} rule params: missing \['{name}'\], unknown \[\]; allowed: "):
            S.decide({"type": kind, **{k: v for k, v in required.items() if k != name}}, 0.05, data)


@pytest.mark.parametrize("kind", NEW_RULES)
def test_decide_rejects_wrong_data_keys_for_new_rules(kind):
    required, _, data = NEW_RULES[kind]
    keys = list(data)
    wrong = {("x" if k == keys[0] else k): v for k, v in data.items()}     # first data key misspelt
    msg = f"{kind} data: missing ['{keys[0]}'], unknown ['x']; allowed: {', '.join(keys)}"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        S.decide({"type": kind, **required}, 0.05, wrong)
    msg = f"{kind} data: missing [], unknown ['extra']; allowed: {', '.join(keys)}"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        S.decide({"type": kind, **required}, 0.05, {**data, "extra": [1.0]})


def test_decide_new_rules_inside_intersection_union():
    rule = {"type": "intersection_union", "parts": {k: {"type": k, **NEW_RULES[k][0]} for k in NEW_RULES}}
    r = S.decide(rule, 0.05, {k: NEW_RULES[k][2] for k in NEW_RULES})
    assert [k for k, _ in r.parts] == list(NEW_RULES)
    assert r.p == max(p.p for _, p in r.parts)
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["parts"][5]["rule"] == "two_sample"


# ---------------------------------------------------------------- two_sample: findings (strict xfails)
SMALL_DESIGNS = [(3, 4), (4, 5), (5, 5), (5, 6)]     # C = 35, 126, 252, 462: small enough to enumerate


# fixed 2026-12-01 (was a strict xfail): finding 2026-12-01: two_sample always samples 9,999 relabellings, even when C(n_a+n_b, n_a) is small enough to enumerate; the Monte-Carlo p of the most extreme labelling falls below the exact floor 1/C (4v5: 0.0077 < 1/126, 5v5: 0
def test_two_sample_p_not_below_exact_floor():
    low = {}
    for n_a, n_b in SMALL_DESIGNS:
        p = S.two_sample(np.arange(n_a) + 100.0, np.arange(n_b) * 1.0, alpha=0.05, direction="greater").p
        if p < 1 / math.comb(n_a + n_b, n_a):
            low[(n_a, n_b)] = p
    assert not low, low


# fixed 2026-12-01 (was a strict xfail): finding 2026-12-01: with alpha just above 1/C (so not insufficient_n) the most extreme labelling, exact p = 1/C < alpha, can still come out inconclusive from Monte-Carlo noise (3v4 at alpha = 1.001/35: p = 0.0298; 4v4 at 1.001/70:
def test_two_sample_extreme_labelling_replicates_whenever_not_insufficient():
    bad = {}
    for n_a, n_b in [*SMALL_DESIGNS, (4, 4)]:
        alpha = 1.001 / math.comb(n_a + n_b, n_a)
        r = S.two_sample(np.arange(n_a) + 100.0, np.arange(n_b) * 1.0, alpha=alpha, direction="greater")
        if r.verdict != "replicated":
            bad[(n_a, n_b)] = (r.verdict, r.p, alpha)
    assert not bad, bad


# fixed 2026-12-01 (was a strict xfail): finding 2026-12-01: two_sample's insufficient_n test is C(n_a+n_b, n_a) * alpha <= 1 only; with 9,999 relabellings p >= 1e-4, so at alpha < 1e-4 no data can ever replicate, yet the verdict is 'inconclusive'
def test_two_sample_insufficient_n_below_monte_carlo_floor():
    r = S.two_sample(np.arange(10.0) + 100, np.arange(10.0), alpha=5e-5, direction="greater")
    assert r.verdict == "insufficient_n"


@pytest.mark.xfail(strict=True, reason=(
    "documented limit 2026-12-01: the studentised permutation test is exact under exchangeability (the null the "
    "registry now states for LS-4's steps) but not for 'equal means, unequal shapes' at n = 20 + 20 and alpha_i: "
    "Poisson(10) vs negative binomial (mean 10, var 60) gives ~4x alpha (reports/calibration.md, outside the "
    "registered null); no permutation test of a mean difference is exact there"))
def test_two_sample_level_for_mean_difference_with_unequal_shapes():
    alpha = A_PRIMARY
    rule = lambda AB: S._two_sample_kernel(AB[0], AB[1], alpha, 1)[0]
    null = lambda rng, nsim: (rng.poisson(10, (nsim, 20)).astype(float),
                              rng.negative_binomial(2, 2 / 12, (nsim, 20)).astype(float))
    alt = lambda rng, nsim: (rng.poisson(20, (nsim, 20)).astype(float),
                             rng.negative_binomial(2, 2 / 12, (nsim, 20)).astype(float))
    assert check_calibration(rule, null, alt, alpha=alpha, nsim=2000, seed=1,
                             name="two_sample Poisson vs NegBin, equal means, 20v20").ok


def test_two_sample_invariant_under_a_common_shift():
    """Shifting both groups by the same c changes no relabelled difference: same p, verdict, interval (+0)."""
    rng = np.random.default_rng(8)
    for _ in range(3):
        a, b = np.round(rng.normal(0.9, 1, 8), 1), np.round(rng.normal(0, 1, 7), 1)   # rounded: exact ties
        base = S.two_sample(a, b, alpha=0.05, direction="greater")
        for c in (-37.5, 0.1, 1e3):
            r = S.two_sample(a + c, b + c, alpha=0.05, direction="greater")
            assert (r.verdict, r.p) == (base.verdict, base.p)
            # bounds sit on jumps of the p function, located up to the kernel's tie tolerance 1e-9 (1 + sum|z|)
            tie = 1e-8 * (1 + np.abs(a + c).sum() + np.abs(b + c).sum())
            assert r.ci == pytest.approx(base.ci, abs=tie) and r.estimate == pytest.approx(base.estimate, abs=1e-9)


# fixed 2026-12-01 (was a strict xfail): finding 2026-12-01: _two_sample_kernel's tie tolerance 1e-9 * (1 + sum|z|) grows with a common offset of the data, so the test is not location invariant: a = N(0.003, 0.001), b = N(0, 0.001), 10 + 10 (seed 3) give p = 1e-4 (replic
def test_two_sample_location_invariant_at_large_offsets():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.003, 0.001, 10), rng.normal(0, 0.001, 10)
    base = S.two_sample(a, b, alpha=A_PRIMARY, direction="greater")
    assert base.verdict == "replicated"
    for c in (1e5, 1e6):
        r = S.two_sample(a + c, b + c, alpha=A_PRIMARY, direction="greater")
        assert (r.verdict, r.p) == (base.verdict, base.p), c
