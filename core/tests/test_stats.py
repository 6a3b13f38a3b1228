"""Tests for core/stats.py: calibration by simulation, a miscalibrated rule being caught, properties, oracles.

Calibration runs the rules' own vectorised kernels (the public functions call the same kernels on one row;
`test_kernels_match_public_rules` checks that row by row) on NSIM simulated data sets at the planned n, at
the boundary of the claimed region (false-"replicated" rate must be <= alpha + binomial tolerance) and under
a clearly-true alternative (power). Run with -s to see the table of rates.
"""
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as hs
from scipy import stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from core import stats as S

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
