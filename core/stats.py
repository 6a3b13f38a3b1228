"""Pre-registered decision rules: one number per unit of replication -> a three-valued verdict.

Every rule reads one number per unit (training seed, run, pair) and a one-sided level alpha (a primary
claim's Bonferroni share, DESIGN.md "Statistics"). It reports the two-sided (1 - 2 alpha) interval
[lo, hi] = the two one-sided level-alpha bounds, and decides

    replicated      iff [lo, hi] lies inside the claimed region (a one-sided level-alpha test),
    refuted         iff [lo, hi] lies inside the refutation region,
    inconclusive    otherwise;
    insufficient_n  iff n is below the least n with which the rule could ever replicate.

p is the one-sided p-value of H0 "claim false" at the claimed boundary; p < alpha <=> replicated for the t
rules (p <= alpha for the sign and permutation rules, whose p takes discrete values), n permitting.

* t rules (mean_threshold, paired, log_ratio, non_inferiority, equivalence), any n >= 2, no bootstrap:
  m +- t_{1-alpha, n-1} s / sqrt(n);  p = P(T_{n-1} >= (m - c) sqrt(n) / s) for "greater".
  s = 0 (all values equal): the interval collapses to {m}; p = 0 if m is strictly beyond c, else 1.
* existence, k of n units succeed: Clopper-Pearson lo = B^-1(alpha; k, n-k+1), hi = B^-1(1-alpha; k+1, n-k);
  p = P(Bin(n, c) >= k). lo(k = n) = alpha^(1/n), so replication needs alpha^(1/n) > c (c = 1/2: 2^-n < alpha).
* equivalence: TOST (statsmodels), p = max of the two one-sided t p-values; replicated iff low < lo, hi < high.
* trend: Spearman rho (Pearson correlation of average ranks). The exact permutation law of
  T = sum_i 2r(x_i) 2r(y_pi(i)) given the tie pattern comes from a dynamic programme over the multiset
  of unused y ranks; p = P(T' >= T) ("increasing"). insufficient_n iff the smallest attainable p >= alpha
  (no ties: 1/n!). Too large for the programme -> Monte-Carlo permutations, p = (1 + #{T' >= T}) / (1 + R).
  ci is descriptive only: Fisher z with the Bonett-Wright se sqrt((1 + rho^2/2) / (n - 3)).
* toy_tolerance: deterministic law; replicated iff every value is strictly beyond the threshold; p = nan.
* intersection_union: H0 is the union of the part nulls, so no adjustment is needed (Berger 1982);
  p = max part p (a deterministic part counts 0 if replicated, else 1).
Across claims: bonferroni_share in-test; holm (step-down) and benjamini_hochberg (step-up) in the report.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as st
from statsmodels.stats.weightstats import DescrStatsW

__all__ = ["VERDICTS", "Result", "existence", "mean_threshold", "paired", "log_ratio", "equivalence",
           "non_inferiority", "trend", "toy_tolerance", "median_threshold", "median_paired", "median_log_ratio",
           "median_equivalence", "median_non_inferiority", "two_sample", "two_sample_floor", "sign_rank",
           "intersection_union", "decide",
           "bonferroni_share", "holm", "benjamini_hochberg"]

VERDICTS = ("replicated", "refuted", "inconclusive", "insufficient_n", "error", "not_run")
_NAMES = np.array(VERDICTS)        # vectorised kernels return verdict strings via these codes
_REP, _REF, _INC, _INS = 0, 1, 2, 3
_SIGNS = {"greater": 1, "less": -1, "increasing": 1, "decreasing": -1}
_NAN2 = (math.nan, math.nan)
_EXACT_COST = 4e8                  # trend: DP cost (states * n * support) above which we sample; n=13: 0.3 s
_MC_DRAWS = 20_000                 # trend: Monte-Carlo permutations when exact is too costly


def _json(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


@dataclass(frozen=True)
class Result:
    rule: str                                  # rule type, e.g. "mean_threshold"
    estimate: float                            # on the rule's scale (mean, rate, rho, log ratio ...)
    ci: tuple[float, float]                    # two-sided (1 - 2 alpha) interval
    p: float                                   # one-sided p of H0 "claim false"; nan for toy rules
    alpha: float
    n: int                                     # units of replication used
    verdict: str
    reason: str
    parts: tuple[tuple[str, "Result"], ...] = ()

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"Result: verdict {self.verdict!r} not one of {VERDICTS}")

    def to_dict(self) -> dict:
        """JSON-ready (strict JSON: non-finite floats become None), parts as [{name, ...}]."""
        return {"rule": self.rule, "estimate": _json(float(self.estimate)),
                "ci": [_json(float(c)) for c in self.ci], "p": _json(float(self.p)),
                "alpha": float(self.alpha), "n": int(self.n), "verdict": self.verdict,
                "reason": self.reason, "parts": [{"name": k, **r.to_dict()} for k, r in self.parts]}


# ---------------------------------------------------------------- validation at the boundary
def _alpha(rule, alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 0.5:
        raise ValueError(f"{rule}: alpha={alpha!r}; allowed: a number in (0, 0.5)")
    return float(alpha)


def _data(rule, name, values):
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{rule}: {name} must be numbers, one per unit ({e})") from None
    if x.ndim != 1:
        raise ValueError(f"{rule}: {name} must be 1-D (one number per unit), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{rule}: {name}[{bad[0]}] = {x[bad[0]]}; every entry must be finite")
    return x


def _num(rule, name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
        raise ValueError(f"{rule}: {name}={v!r}; allowed: a finite number")
    return float(v)


def _sign(rule, direction, allowed):
    if direction not in allowed:
        raise ValueError(f"{rule}: direction={direction!r}; allowed: {', '.join(allowed)}")
    return _SIGNS[direction]


def _f(v):
    return f"{v:.3g}"


# ---------------------------------------------------------------- vectorised kernels (rows = simulations)
def _t_interval(x, alpha):
    """x [..., n], n >= 2 -> mean, lo, hi, se; a zero-variance row gets se = 0 (interval = the point)."""
    n = x.shape[-1]
    flat = np.ptp(x, axis=-1) == 0
    m = np.where(flat, x[..., 0], x.mean(-1))
    se = np.where(flat, 0.0, x.std(-1, ddof=1) / math.sqrt(n))
    half = st.t.ppf(1 - alpha, n - 1) * se
    return m, m - half, m + half, se


def _t_p(m, se, c, df, sign):
    """One-sided p of H0 sign * (mu - c) <= 0; degenerate se = 0 gives 0 or 1."""
    d = sign * (m - c)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = st.t.sf(d / se, df)
    return np.where(se > 0, p, np.where(d > 0, 0.0, 1.0))


def _region(lo, hi, sign, claimed, refuted):
    rep = lo > claimed if sign > 0 else hi < claimed
    ref = hi < refuted if sign > 0 else lo > refuted
    return np.select([rep, ref], [_REP, _REF], _INC)


def _threshold_kernel(x, alpha, sign, claimed, refuted):
    """t rule on rows of x [nsim, n] -> (verdicts, mean, lo, hi, p, se); shared by all t-threshold rules."""
    if x.shape[-1] < 2:
        m = x.mean(-1) if x.shape[-1] else np.full(x.shape[:-1], np.nan)
        nan = np.full_like(m, np.nan)
        return _NAMES[np.full(m.shape, _INS)], m, nan, nan, np.ones_like(m), nan
    m, lo, hi, se = _t_interval(x, alpha)
    return _NAMES[_region(lo, hi, sign, claimed, refuted)], m, lo, hi, _t_p(m, se, claimed, x.shape[-1] - 1, sign), se


def _equivalence_kernel(x, alpha, low, high):
    if x.shape[-1] < 2:
        return _threshold_kernel(x, alpha, 1, low, low)
    m, lo, hi, se = _t_interval(x, alpha)
    codes = np.select([(lo > low) & (hi < high), (lo > high) | (hi < low)], [_REP, _REF], _INC)
    df = x.shape[-1] - 1
    return _NAMES[codes], m, lo, hi, np.maximum(_t_p(m, se, low, df, 1), _t_p(m, se, high, df, -1)), se


def _cp_bounds(k, n, alpha):
    lo = np.where(k > 0, st.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    hi = np.where(k < n, st.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1)), 1.0)
    return lo, hi


def _existence_kernel(k, n, alpha, claimed_above, refuted_below, require_all):
    """k successes of n per row -> (verdicts, rate, lo, hi, p)."""
    k = np.asarray(k)
    lo, hi = _cp_bounds(k, n, alpha)
    p = st.binom.sf(k - 1, n, claimed_above)
    rep = lo > claimed_above
    if require_all:                          # IUT of "every unit succeeds" (p 0/1) and the binomial test
        rep, p = rep & (k == n), np.where(k == n, p, 1.0)
    codes = np.select([rep, hi < refuted_below], [_REP, _REF], _INC)
    if n == 0 or alpha ** (1 / n) <= claimed_above:
        codes = np.full(k.shape, _INS)
    return _NAMES[codes], k / max(n, 1), lo, hi, p


def _ranks2(v):
    return np.rint(2 * st.rankdata(v, axis=-1)).astype(np.int64)   # doubled average ranks: integers


@functools.lru_cache(maxsize=256)
def _exact_null(a: tuple, b: tuple):
    """Law of T = sum_i a_i b_pi(i) over all n! permutations: (support, pmf). DP over unused b counts."""
    vals, counts = np.unique(b, return_counts=True)
    size = int(np.dot(sorted(a), sorted(b))) + 1          # max T, rearrangement inequality
    layer = {tuple(int(c) for c in counts): np.eye(1, size)[0]}
    for ai in a:
        nxt = {}
        for free, ways in layer.items():
            for j, c in enumerate(free):
                if c:
                    s = int(ai * vals[j])
                    acc = nxt.setdefault(free[:j] + (c - 1,) + free[j + 1:], np.zeros(size))
                    acc[s:] += c * ways[:size - s]
        layer = nxt
    (ways,) = layer.values()
    sup = np.flatnonzero(ways)
    return sup, ways[sup] / ways.sum()


def _null(a, b, rng):
    """Exact null when the DP is cheap, else R Monte-Carlo permutations. Returns (support, pmf, R or 0)."""
    states = math.prod(int(c) + 1 for c in np.unique(b, return_counts=True)[1])  # int: numpy int64 overflows
    if states * len(a) * (int(np.dot(a, b)) + 1) <= _EXACT_COST:
        return (*_exact_null(a, b), 0)
    rng = np.random.default_rng(0) if rng is None else rng
    tiled = np.tile(np.asarray(b), (10_000, 1))
    draws = np.concatenate([rng.permuted(tiled, axis=1) @ np.asarray(a) for _ in range(_MC_DRAWS // 10_000)])
    sup, cnt = np.unique(draws, return_counts=True)
    return sup, cnt / cnt.sum(), draws.size


def _tails(T, sup, pmf, draws):
    """P(T' >= T), P(T' <= T) and the smallest attainable p in each direction."""
    ge = np.concatenate([np.cumsum(pmf[::-1])[::-1], [0.0]])[np.searchsorted(sup, T, "left")]
    le = np.concatenate([[0.0], np.cumsum(pmf)])[np.searchsorted(sup, T, "right")]
    fix = (lambda q: (1 + draws * q) / (1 + draws)) if draws else (lambda q: q)
    return fix(ge), fix(le), fix(pmf[-1]), fix(pmf[0])


def _trend_kernel(x, Y, alpha, sign, rng=None):
    """Spearman trend test of rows of Y [nsim, n] against x [n] -> (verdicts, rho, p_claimed)."""
    a, B = _ranks2(x), _ranks2(Y)
    ac, Bc = a - a.mean(), B - B.mean(-1, keepdims=True)
    den = np.sqrt((ac @ ac) * (Bc ** 2).sum(-1))
    rho = np.where(den > 0, (Bc @ ac) / np.where(den > 0, den, 1), 0.0)
    T, p_up, p_down, p_min, mc = B @ a, *np.ones((4,) + B.shape[:-1])
    keys, inv = np.unique(np.sort(B, -1), axis=0, return_inverse=True)
    for g, key in enumerate(keys):                         # one null law per tie pattern of y
        rows = inv.reshape(-1) == g
        sup, pmf, draws = _null(tuple(sorted(a)), tuple(key), rng)
        up, down, min_up, min_down = _tails(T[rows], sup, pmf, draws)
        p_up[rows], p_down[rows], p_min[rows], mc[rows] = up, down, min_up if sign > 0 else min_down, draws
    p, q = (p_up, p_down) if sign > 0 else (p_down, p_up)
    codes = np.select([p_min >= alpha, p < alpha, q < alpha], [_INS, _REP, _REF], _INC)
    return _NAMES[codes], rho, p, p_min, mc        # mc: number of random permutations (0 = exact)


# ---------------------------------------------------------------- distribution-free kernels (sign test, permutation)
@functools.lru_cache(maxsize=512)
def sign_rank(n: int, alpha: float) -> int:
    """Largest k >= 1 with P(Bin(n, 1/2) <= k - 1) <= alpha, exactly (integer binomial sums); 0 if none.

    x_(k) is then a one-sided level-alpha lower confidence bound of the median for ANY distribution:
    P(x_(k) > m) = P(#{x_i <= m} <= k - 1) <= P(Bin(n, 1/2) <= k - 1) when P(X <= m) >= 1/2, which holds at
    every median m, with atoms and ties included. k = 0 means no order statistic can bound the median at
    this n (2^-n > alpha): the rule can never decide."""
    total, acc, k = 2 ** n, 0, 0
    for j in range(n):
        acc += math.comb(n, j)
        if acc * 1.0 > alpha * total:
            break
        k = j + 1
    return k


def _sign_kernel(x, alpha, sign, claimed, refuted):
    """Sign test on rows of x [nsim, n] -> (verdicts, median, lo, hi, p, k).

    Estimand: the median unit. "greater": H0 P(X <= claimed) >= 1/2; replicated iff lo = x_(k) > claimed,
    refuted iff hi = x_(n-k+1) < refuted. p = P(Bin(n, 1/2) >= #{x > claimed}) (ties at the threshold count
    against the claim), so p >= 2^-n always."""
    n = x.shape[-1]
    k = sign_rank(n, alpha) if n else 0
    med = np.median(x, -1) if n else np.full(x.shape[:-1], np.nan)
    if k == 0:
        nan = np.full(x.shape[:-1], np.nan)
        return _NAMES[np.full(x.shape[:-1], _INS)], med, nan, nan, np.ones(x.shape[:-1]), 0
    xs = np.sort(x, -1)
    lo, hi = xs[..., k - 1], xs[..., n - k]
    beyond = (sign * (x - claimed) > 0).sum(-1)
    p = st.binom.sf(beyond - 1, n, 0.5)
    return _NAMES[_region(lo, hi, sign, claimed, refuted)], med, lo, hi, p, k


def _sign_equivalence_kernel(x, alpha, low, high):
    """Median inside (low, high): both one-sided sign tests at alpha (TOST); refuted iff wholly outside."""
    v, med, lo, hi, p_low, k = _sign_kernel(x, alpha, 1, low, low)
    if k == 0:
        return v, med, lo, hi, p_low, k
    p_high = st.binom.sf((x < high).sum(-1) - 1, x.shape[-1], 0.5)
    codes = np.select([(lo > low) & (hi < high), (lo > high) | (hi < low)], [_REP, _REF], _INC)
    return _NAMES[codes], med, lo, hi, np.maximum(p_low, p_high), k


_PERMUTATIONS = 9_999              # two_sample: seeded random relabellings when enumeration is too costly


@functools.lru_cache(maxsize=64)
def _membership(n_a: int, n_b: int) -> tuple[np.ndarray, bool]:
    """([R, n_a + n_b] 0/1 rows: which pooled positions a relabelling gives to group a, exact).

    Every C(n_a + n_b, n_a) relabelling when there are at most _PERMUTATIONS of them (exact=True: the
    identity is among them, p = #{T* >= T} / C >= 1/C); else _PERMUTATIONS seeded random ones (generator 0,
    the same on every machine) plus the identity, p = (1 + #{T* >= T}) / (1 + R) >= 1/(1 + R)."""
    n = n_a + n_b
    if math.comb(n, n_a) <= _PERMUTATIONS:
        idx = np.array(list(itertools.combinations(range(n), n_a)))
        exact = True
    else:
        idx = np.random.default_rng(0).permuted(np.tile(np.arange(n), (_PERMUTATIONS, 1)), axis=1)[:, :n_a]
        exact = False
    m = np.zeros((len(idx), n))
    np.put_along_axis(m, idx, 1.0, axis=1)
    return m, exact


def _welch(sa, qa, sb, qb, n_a, n_b):
    """Welch t from group sums and sums of squares (any broadcastable shapes); 0 where both variances are 0."""
    ma, mb = sa / n_a, sb / n_b
    va = np.maximum(qa - n_a * ma ** 2, 0.0) / max(n_a - 1, 1)
    vb = np.maximum(qb - n_b * mb ** 2, 0.0) / max(n_b - 1, 1)
    se = np.sqrt(va / n_a + vb / n_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, (ma - mb) / np.where(se > 0, se, 1.0), 0.0)


def two_sample_floor(n_a: int, n_b: int) -> float:
    """The smallest p the two_sample kernel can return for these group sizes."""
    m, exact = _membership(n_a, n_b)
    return 1.0 / len(m) if exact else 1.0 / (1 + len(m))


def _two_sample_kernel(a, b, alpha, sign, chunk=128):
    """Studentised permutation test on rows a [nsim, n_a], b [nsim, n_b] -> (verdicts, diff, p, q).

    Statistic: Welch's t of mean(a) - mean(b). Exact under exchangeability (a's law equals b's). For H0
    "equal means" with unequal shapes it is only asymptotically valid (Janssen 1997; Chung & Romano 2013;
    with unequal group sizes the plain mean difference is not even that; with equal sizes the two
    statistics are monotone in each other and give the same p). Data are centred on their pooled mean first, so the tie
    tolerance (relative 1e-9: equal multisets may sum differently in the last bit) does not grow with a
    common offset. p: see `_membership`; verdicts: replicated iff p <= alpha, refuted iff the opposite
    one-sided p <= alpha, insufficient_n iff the floor p is above alpha."""
    n_a, n_b = a.shape[-1], b.shape[-1]
    z = np.concatenate([a, b], -1)
    z = z - z.mean(-1, keepdims=True)
    m, exact = _membership(n_a, n_b)
    za, zb = z[..., :n_a], z[..., n_a:]
    t = _welch(za.sum(-1), (za ** 2).sum(-1), zb.sum(-1), (zb ** 2).sum(-1), n_a, n_b)
    tot, tot2 = z.sum(-1, keepdims=True), (z ** 2).sum(-1, keepdims=True)
    ge, le = np.empty(t.shape), np.empty(t.shape)
    for s in range(0, z.shape[0], chunk):
        zc = z[s:s + chunk]
        sa, qa = zc @ m.T, (zc ** 2) @ m.T                       # [chunk, R] relabelled group-a sums
        tp = _welch(sa, qa, tot[s:s + chunk] - sa, tot2[s:s + chunk] - qa, n_a, n_b)
        tol = 1e-9 * (1.0 + np.abs(t[s:s + chunk]))[:, None]
        ge[s:s + chunk] = (tp >= t[s:s + chunk, None] - tol).sum(-1)
        le[s:s + chunk] = (tp <= t[s:s + chunk, None] + tol).sum(-1)
    extra = 0 if exact else 1
    up, down = (extra + ge) / (extra + len(m)), (extra + le) / (extra + len(m))
    p, q = (up, down) if sign > 0 else (down, up)
    codes = np.select([two_sample_floor(n_a, n_b) > alpha + np.zeros(p.shape), p <= alpha, q <= alpha],
                      [_INS, _REP, _REF], _INC)
    return _NAMES[codes], a.mean(-1) - b.mean(-1), p, q


# ---------------------------------------------------------------- reasons
def _say(label, est, lo, hi, verdict, sign, claimed, refuted, ctext, rtext, tail):
    gt, lt = (">", "<") if sign > 0 else ("<", ">")
    head = f"{label} {_f(est)} [{_f(lo)}, {_f(hi)}]"
    rword = "required" if refuted == claimed else "refutation bound"
    body = {"replicated": f"{gt} required {ctext}", "refuted": f"{lt} {rword} {rtext}",
            "insufficient_n": f"can never be {gt} required {ctext} at this n and alpha",
            "inconclusive": (f"overlaps required {ctext}" if refuted == claimed else
                             f"neither {gt} required {ctext} nor {lt} refutation bound {rtext}")}[verdict]
    return f"{head} {body} {tail} -> {verdict}"


def _t_result(rule, x, alpha, sign, claimed, refuted, label, ctext=None, rtext=None):
    v, m, lo, hi, p, se = (a[0] for a in _threshold_kernel(x[None], alpha, sign, claimed, refuted))
    if x.size < 2:
        return Result(rule, float(m), _NAN2, 1.0, alpha, x.size, "insufficient_n",
                      f"{label} {_f(m)} from n={x.size}: a t interval needs n >= 2 -> insufficient_n")
    note = "; zero variance: the t interval collapses to the point" if se == 0 else ""
    reason = _say(label, m, lo, hi, str(v), sign, claimed, refuted, ctext or _f(claimed), rtext or _f(refuted),
                  f"(n={x.size}, p={p:.2g}, alpha={alpha:.4g}{note})")
    return Result(rule, float(m), (float(lo), float(hi)), float(p), alpha, x.size, str(v), reason)


# ---------------------------------------------------------------- rules
def existence(successes, *, alpha, claimed_above, refuted_below, require_all=False) -> Result:
    """Per-unit booleans; replicated iff the CP lower bound > claimed_above (and all succeed if require_all)."""
    alpha, x = _alpha("existence", alpha), _data("existence", "successes", successes)
    c, r = _num("existence", "claimed_above", claimed_above), _num("existence", "refuted_below", refuted_below)
    if not 0 <= r <= c < 1:
        raise ValueError(f"existence: need 0 <= refuted_below ({r}) <= claimed_above ({c}) < 1")
    bad = np.flatnonzero((x != 0) & (x != 1))
    if bad.size:
        raise ValueError(f"existence: successes[{bad[0]}] = {x[bad[0]]}; allowed: booleans or 0/1")
    k, n = int(x.sum()), x.size
    if n == 0:
        return Result("existence", math.nan, (0.0, 1.0), 1.0, alpha, 0, "insufficient_n", "no units -> insufficient_n")
    v, rate, lo, hi, p = (a[0] for a in _existence_kernel(np.array([k]), n, alpha, c, r, bool(require_all)))
    need = "; every unit must succeed" if require_all else ""
    tail = f"({k}/{n} units, p={p:.2g}, alpha={alpha:.4g}, best attainable lower bound {alpha ** (1 / n):.3g}{need})"
    reason = _say("success rate", rate, lo, hi, str(v), 1, c, r, _f(c), _f(r), tail)
    return Result("existence", float(rate), (float(lo), float(hi)), float(p), alpha, n, str(v), reason)


def _threshold_args(rule, values, alpha, direction, claimed, refuted):
    """(alpha, x, sign, claimed, refuted) of a one-sample threshold rule, validated at the boundary."""
    alpha, x = _alpha(rule, alpha), _data(rule, "values", values)
    sign, c = _sign(rule, direction, ("greater", "less")), _num(rule, "claimed", claimed)
    r = c if refuted is None else _num(rule, "refuted", refuted)
    if sign * (c - r) < 0:
        raise ValueError(f"{rule}: refuted={r} must not lie on the claimed side of claimed={c}")
    return alpha, x, sign, c, r


def _paired_args(rule, a, b, alpha, direction, margin):
    """(alpha, a - b, sign, margin) of a paired rule."""
    alpha, a, b = _alpha(rule, alpha), _data(rule, "a", a), _data(rule, "b", b)
    if a.size != b.size:
        raise ValueError(f"{rule}: a has {a.size} units but b has {b.size}; pairs must match")
    return alpha, a - b, _sign(rule, direction, ("greater", "less")), _num(rule, "margin", margin)


def _log_ratio_args(rule, ratios, alpha, claimed_factor, refuted_factor, base, direction):
    """(alpha, log_base(ratios), sign, log claimed, log refuted, claimed_factor, refuted_factor, base)."""
    alpha, x = _alpha(rule, alpha), _data(rule, "ratios", ratios)
    bad = np.flatnonzero(x <= 0)
    if bad.size:
        raise ValueError(f"{rule}: ratios[{bad[0]}] = {x[bad[0]]}; ratios must be > 0")
    cf, rf, base = (_num(rule, k, v) for k, v in
                    (("claimed_factor", claimed_factor), ("refuted_factor", refuted_factor), ("base", base)))
    sign = _sign(rule, direction, ("greater", "less"))
    if min(cf, rf) <= 0 or base <= 1 or sign * (cf - rf) < 0:
        raise ValueError(f"{rule}: need factors > 0, base > 1, refuted_factor ({rf}) not on the "
                         f"claimed side of claimed_factor ({cf}) for direction {direction!r}")
    return alpha, np.log(x) / math.log(base), sign, math.log(cf, base), math.log(rf, base), cf, rf, base


def mean_threshold(values, *, alpha, direction, claimed, refuted=None) -> Result:
    """One-sample t; "greater": replicated iff lo > claimed, refuted iff hi < refuted (default claimed)."""
    alpha, x, sign, c, r = _threshold_args("mean_threshold", values, alpha, direction, claimed, refuted)
    return _t_result("mean_threshold", x, alpha, sign, c, r, "mean")


def paired(a, b, *, alpha, direction, margin=0.0) -> Result:
    """t on d = a - b per unit; "greater": replicated iff lo(d) > margin, refuted iff hi(d) < margin."""
    alpha, d, sign, m = _paired_args("paired", a, b, alpha, direction, margin)
    return _t_result("paired", d, alpha, sign, m, m, "mean difference a-b")


def log_ratio(ratios, *, alpha, claimed_factor, refuted_factor, base=10.0, direction="greater") -> Result:
    """t on log_base(ratio); "greater": replicated iff lo > log(claimed_factor), refuted iff hi < log(refuted_f.)."""
    alpha, x, sign, c, r, cf, rf, base = _log_ratio_args("log_ratio", ratios, alpha, claimed_factor, refuted_factor,
                                                        base, direction)
    return _t_result("log_ratio", x, alpha, sign, c, r, f"mean log{base:g} ratio",
                     f"{_f(c)} ({cf:g}x)", f"{_f(r)} ({rf:g}x)")


def equivalence(values, *, alpha, low, high) -> Result:
    """TOST: replicated iff the (1-2 alpha) t interval lies inside (low, high); refuted iff wholly outside."""
    alpha, x = _alpha("equivalence", alpha), _data("equivalence", "values", values)
    low, high = _num("equivalence", "low", low), _num("equivalence", "high", high)
    if not low < high:
        raise ValueError(f"equivalence: need low < high, got low={low}, high={high}")
    if x.size < 2:
        return _t_result("equivalence", x, alpha, 1, low, low, "mean")
    v, m, lo, hi, p, se = (a[0] for a in _equivalence_kernel(x[None], alpha, low, high))
    if se > 0:
        p = DescrStatsW(x).ttost_mean(low, high)[0]        # same number as the kernel's, from statsmodels
    body = {"replicated": "inside", "refuted": "entirely outside"}.get(str(v), "not inside")
    note = "; zero variance: the t interval collapses to the point" if se == 0 else ""
    reason = (f"mean {_f(m)} [{_f(lo)}, {_f(hi)}] {body} the equivalence region ({_f(low)}, {_f(high)}) "
              f"(n={x.size}, TOST p={p:.2g}, alpha={alpha:.4g}{note}) -> {v}")
    return Result("equivalence", float(m), (float(lo), float(hi)), float(p), alpha, x.size, str(v), reason)


def non_inferiority(values, *, alpha, margin) -> Result:
    """values = new - reference (larger is better); replicated iff lo > -margin, refuted iff hi < -margin."""
    alpha, x = _alpha("non_inferiority", alpha), _data("non_inferiority", "values", values)
    m = _num("non_inferiority", "margin", margin)
    if m < 0:
        raise ValueError(f"non_inferiority: margin={m}; allowed: >= 0 (the claim is mean > -margin)")
    return _t_result("non_inferiority", x, alpha, 1, -m, -m, "mean difference", f"-margin {_f(-m)}", f"{_f(-m)}")


def _fisher_ci(rho, n, alpha):
    """Descriptive (1 - 2 alpha) interval for Spearman rho: Fisher z, Bonett-Wright se; (-1, 1) for n <= 3."""
    if n <= 3:
        return -1.0, 1.0
    z, se = math.atanh(max(-0.999999, min(0.999999, rho))), math.sqrt((1 + rho ** 2 / 2) / (n - 3))
    return tuple(math.tanh(z + s * st.norm.ppf(1 - alpha) * se) for s in (-1, 1))


def trend(x, y, *, alpha, direction="increasing", rng=None) -> Result:
    """Spearman rho, exact one-sided permutation p; replicated iff p < alpha, refuted iff opposite p < alpha."""
    alpha, x, y = _alpha("trend", alpha), _data("trend", "x", x), _data("trend", "y", y)
    if x.size != y.size:
        raise ValueError(f"trend: x has {x.size} entries but y has {y.size}; they must match")
    sign, n = _sign("trend", direction, ("increasing", "decreasing")), x.size
    if n == 0:
        return Result("trend", math.nan, _NAN2, 1.0, alpha, 0, "insufficient_n", "no data (n=0) -> insufficient_n")
    v, rho, p, p_min, mc = (a[0] for a in _trend_kernel(x, y[None], alpha, sign, rng))
    ci = _fisher_ci(float(rho), n, alpha)
    flat = "; x or y is constant" if np.ptp(x) == 0 or np.ptp(y) == 0 else ""
    how = f"{int(mc)} random permutations" if mc else "exact"
    reason = (f"Spearman rho {_f(rho)} [{_f(ci[0])}, {_f(ci[1])}], one-sided permutation p={p:.2g} ({how}) for "
              f"{direction} vs alpha={alpha:.4g} (n={n}, smallest attainable p={p_min:.2g}{flat}) -> {v}")
    return Result("trend", float(rho), ci, float(p), alpha, n, str(v), reason)


def toy_tolerance(values, *, alpha, threshold, direction="greater") -> Result:
    """Deterministic law: replicated iff every value is strictly beyond threshold, else refuted."""
    alpha, x = _alpha("toy_tolerance", alpha), _data("toy_tolerance", "values", values)
    sign, t = _sign("toy_tolerance", direction, ("greater", "less")), _num("toy_tolerance", "threshold", threshold)
    if x.size == 0:
        return Result("toy_tolerance", math.nan, _NAN2, math.nan, alpha, 0, "insufficient_n",
                      "no values (n=0) -> insufficient_n")
    bad = np.flatnonzero(sign * (x - t) <= 0)
    worst, v = float(x.min() if sign > 0 else x.max()), "refuted" if bad.size else "replicated"
    gt = ">" if sign > 0 else "<"
    what = f"{bad.size} of {x.size} values not {gt} {_f(t)} (first at index {bad[0]})" if bad.size else \
        f"all {x.size} values {gt} {_f(t)}"
    reason = f"worst value {_f(worst)} (range [{_f(x.min())}, {_f(x.max())}]): {what} -> {v}"
    return Result("toy_tolerance", worst, (float(x.min()), float(x.max())), math.nan, alpha, x.size, v, reason)


# ---------------------------------------------------------------- distribution-free rules (estimand: the median unit)
def _sign_result(rule, x, alpha, sign, claimed, refuted, label, ctext=None, rtext=None) -> Result:
    v, med, lo, hi, p, k = (a[0] if isinstance(a, np.ndarray) else a
                            for a in _sign_kernel(x[None], alpha, sign, claimed, refuted))
    n = x.size
    if k == 0:
        return Result(rule, float(med), _NAN2, 1.0, alpha, n, "insufficient_n",
                      f"{label} {_f(med)} from n={n}: a sign test can never reach p < alpha={alpha:.4g} "
                      f"(smallest attainable p = 2^-{n} = {0.5 ** n:.3g}) -> insufficient_n")
    beyond = int((sign * (x - claimed) > 0).sum())
    word = ">" if sign > 0 else "<"
    note = "; all values equal" if n and np.ptp(x) == 0 else ""
    tail = (f"(sign test: {beyond} of {n} units {word} {_f(claimed)}, p={p:.2g}, alpha={alpha:.4g}; interval = "
            f"order statistics x_({k}), x_({n - k + 1}){note})")
    reason = _say(label, med, lo, hi, str(v), sign, claimed, refuted, ctext or _f(claimed), rtext or _f(refuted), tail)
    return Result(rule, float(med), (float(lo), float(hi)), float(p), alpha, n, str(v), reason)


def median_threshold(values, *, alpha, direction, claimed, refuted=None) -> Result:
    """Sign test of the median; "greater": replicated iff x_(k) > claimed, refuted iff x_(n-k+1) < refuted."""
    alpha, x, sign, c, r = _threshold_args("median_threshold", values, alpha, direction, claimed, refuted)
    return _sign_result("median_threshold", x, alpha, sign, c, r, "median")


def median_paired(a, b, *, alpha, direction, margin=0.0) -> Result:
    """Sign test of the median paired difference d = a - b against margin."""
    alpha, d, sign, m = _paired_args("median_paired", a, b, alpha, direction, margin)
    return _sign_result("median_paired", d, alpha, sign, m, m, "median difference a-b")


def median_log_ratio(ratios, *, alpha, claimed_factor, refuted_factor, base=10.0, direction="greater") -> Result:
    """Sign test of the median log ratio (logs are monotone, so the test and interval are those of the
    median ratio; for even n the point estimate is the mean of the two middle logs)."""
    alpha, x, sign, c, r, cf, rf, base = _log_ratio_args("median_log_ratio", ratios, alpha, claimed_factor,
                                                        refuted_factor, base, direction)
    return _sign_result("median_log_ratio", x, alpha, sign, c, r, f"median log{base:g} ratio",
                        f"{_f(c)} ({cf:g}x)", f"{_f(r)} ({rf:g}x)")


def median_non_inferiority(values, *, alpha, margin) -> Result:
    """values = new - reference (larger is better); sign test: replicated iff x_(k) > -margin."""
    alpha, x = _alpha("median_non_inferiority", alpha), _data("median_non_inferiority", "values", values)
    m = _num("median_non_inferiority", "margin", margin)
    if m < 0:
        raise ValueError(f"median_non_inferiority: margin={m}; allowed: >= 0 (the claim is median > -margin)")
    return _sign_result("median_non_inferiority", x, alpha, 1, -m, -m, "median difference",
                        f"-margin {_f(-m)}", f"{_f(-m)}")


def median_equivalence(values, *, alpha, low, high) -> Result:
    """Two one-sided sign tests: replicated iff x_(k) > low and x_(n-k+1) < high; refuted iff wholly outside."""
    alpha, x = _alpha("median_equivalence", alpha), _data("median_equivalence", "values", values)
    low, high = _num("median_equivalence", "low", low), _num("median_equivalence", "high", high)
    if not low < high:
        raise ValueError(f"median_equivalence: need low < high, got low={low}, high={high}")
    v, med, lo, hi, p, k = (a[0] if isinstance(a, np.ndarray) else a
                            for a in _sign_equivalence_kernel(x[None], alpha, low, high))
    if k == 0:
        return _sign_result("median_equivalence", x, alpha, 1, low, low, "median")
    body = {"replicated": "inside", "refuted": "entirely outside"}.get(str(v), "not inside")
    reason = (f"median {_f(med)} [{_f(lo)}, {_f(hi)}] {body} the equivalence region ({_f(low)}, {_f(high)}) "
              f"(two one-sided sign tests, n={x.size}, p={p:.2g}, alpha={alpha:.4g}; interval = order statistics "
              f"x_({k}), x_({x.size - k + 1})) -> {v}")
    return Result("median_equivalence", float(med), (float(lo), float(hi)), float(p), alpha, x.size, str(v), reason)


def _shift_bound(a, b, alpha, sign):
    """One-sided (1 - alpha) bound of a location shift: the shift at which the permutation test of
    a - shift vs b stops rejecting (bisection on a bracket that provably contains the crossing)."""
    span = float(np.ptp(np.concatenate([a, b]))) + 1.0
    lo, hi = float(a.mean() - b.mean()) - 2 * span, float(a.mean() - b.mean()) + 2 * span
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        _, _, p, q = _two_sample_kernel((a - mid)[None], b[None], alpha, 1)
        # lower bound: shifts still rejected by the upward test lie below it; upper bound: mirrored
        below = (p[0] <= alpha) if sign > 0 else (q[0] > alpha)
        lo, hi = (mid, hi) if below else (lo, mid)
    return 0.5 * (lo + hi)


def two_sample(a, b, *, alpha, direction) -> Result:
    """Studentised permutation test of mean(a) - mean(b); "greater": replicated iff p <= alpha, refuted iff
    the opposite one-sided p <= alpha. Interval: the (1 - 2 alpha) location-shift interval."""
    alpha, a, b = _alpha("two_sample", alpha), _data("two_sample", "a", a), _data("two_sample", "b", b)
    sign = _sign("two_sample", direction, ("greater", "less"))
    if min(a.size, b.size) < 2 or two_sample_floor(a.size, b.size) > alpha:
        return Result("two_sample", math.nan, _NAN2, 1.0, alpha, min(a.size, b.size), "insufficient_n",
                      f"n_a={a.size}, n_b={b.size}: the smallest attainable p "
                      f"{two_sample_floor(a.size, b.size) if min(a.size, b.size) >= 1 else 1:.3g} exceeds "
                      f"alpha={alpha:.4g} (or a group has < 2 units) -> insufficient_n")
    v, d, p, q = (r[0] for r in _two_sample_kernel(a[None], b[None], alpha, sign))
    ci = (_shift_bound(a, b, alpha, 1), _shift_bound(a, b, alpha, -1))
    how = "all relabellings" if _membership(a.size, b.size)[1] else f"{_PERMUTATIONS} seeded relabellings"
    word = ">" if sign > 0 else "<"
    reason = (f"mean difference a-b {_f(d)} [{_f(ci[0])}, {_f(ci[1])}] (studentised permutation test of {word} 0, "
              f"{how}, n_a={a.size}, n_b={b.size}: p={p:.2g}, opposite p={q:.2g}, alpha={alpha:.4g}) -> {v}")
    return Result("two_sample", float(d), ci, float(p), alpha, min(a.size, b.size), str(v), reason)


def _iut_verdict(verdicts):
    for v, cond in (("replicated", all), ("refuted", any), ("error", any), ("insufficient_n", any),
                    ("not_run", any)):
        if cond(u == v for u in verdicts):
            return v
    return "inconclusive"


def intersection_union(parts: Mapping[str, Result], *, alpha) -> Result:
    """Replicated iff all parts are; refuted iff any is; then error, insufficient_n, not_run; else inconclusive."""
    alpha = _alpha("intersection_union", alpha)
    if not isinstance(parts, Mapping) or not parts:
        raise ValueError("intersection_union: parts must be a non-empty mapping name -> Result")
    for name, r in parts.items():
        if not isinstance(r, Result) or not math.isclose(r.alpha, alpha):
            raise ValueError(f"intersection_union: part {name!r} must be a Result decided at alpha={alpha}")
    v = _iut_verdict([r.verdict for r in parts.values()])
    ps = [r.p if math.isfinite(r.p) else float(r.verdict != "replicated") for r in parts.values()]
    p = max(ps) if any(math.isfinite(r.p) for r in parts.values()) else math.nan
    k = sum(r.verdict == "replicated" for r in parts.values())
    others = "; ".join(f"{name}: {r.verdict}" for name, r in parts.items() if r.verdict != "replicated")
    reason = f"{k}/{len(parts)} parts replicated" + (f" ({others})" if others else "") + f" -> {v}"
    return Result("intersection_union", k / len(parts), _NAN2, p, alpha, min(r.n for r in parts.values()),
                  v, reason, tuple(parts.items()))


# ---------------------------------------------------------------- dispatch and multiplicity
_RULES = {"existence": (existence, ("successes",)), "mean_threshold": (mean_threshold, ("values",)),
          "paired": (paired, ("a", "b")), "log_ratio": (log_ratio, ("ratios",)),
          "equivalence": (equivalence, ("values",)), "non_inferiority": (non_inferiority, ("values",)),
          "trend": (trend, ("x", "y")), "toy_tolerance": (toy_tolerance, ("values",)),
          "median_threshold": (median_threshold, ("values",)), "median_paired": (median_paired, ("a", "b")),
          "median_log_ratio": (median_log_ratio, ("ratios",)), "median_equivalence": (median_equivalence, ("values",)),
          "median_non_inferiority": (median_non_inferiority, ("values",)), "two_sample": (two_sample, ("a", "b"))}


def _keys(what, given, required, allowed):
    missing, extra = [k for k in required if k not in given], [k for k in given if k not in allowed]
    if missing or extra:
        raise ValueError(f"{what}: missing {missing}, unknown {extra}; allowed: {', '.join(allowed)}")


def decide(rule: Mapping, alpha: float, data: Mapping) -> Result:
    """Dispatch on rule["type"]; other keys are the rule's params; data keys are its data arguments."""
    if not isinstance(rule, Mapping) or not isinstance(data, Mapping):
        raise ValueError(f"decide: rule and data must be mappings, got {type(rule).__name__}, {type(data).__name__}")
    kind = rule.get("type")
    if kind == "intersection_union":
        subrules = rule.get("parts")
        if not isinstance(subrules, Mapping) or not subrules or set(rule) != {"type", "parts"}:
            raise ValueError("intersection_union: rule needs exactly 'type' and a non-empty 'parts' table")
        _keys("intersection_union data", data, list(subrules), list(subrules))
        return intersection_union({k: decide(r, alpha, data[k]) for k, r in subrules.items()}, alpha=alpha)
    if kind not in _RULES:
        raise ValueError(f"unknown rule type {kind!r}; allowed: {', '.join([*_RULES, 'intersection_union'])}")
    fn, args = _RULES[kind]
    sig = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "alpha"]
    params = {k: v for k, v in rule.items() if k != "type"}
    _keys(f"{kind} rule params", params, [p.name for p in sig if p.default is p.empty], [p.name for p in sig])
    _keys(f"{kind} data", data, args, args)
    return fn(*(data[k] for k in args), alpha=alpha, **params)


def bonferroni_share(family_alpha: float, n_primary: int) -> float:
    """alpha_i = family_alpha / n_primary: each primary's in-test share of the family-wise level."""
    if isinstance(n_primary, bool) or not isinstance(n_primary, (int, np.integer)) or n_primary < 1:
        raise ValueError(f"bonferroni_share: n_primary={n_primary!r}; allowed: an integer >= 1")
    if not 0 < family_alpha < 1:
        raise ValueError(f"bonferroni_share: family_alpha={family_alpha!r}; allowed: (0, 1)")
    return family_alpha / n_primary


def _pvec(name, pvals):
    p = np.asarray([math.nan if v is None else v for v in np.ravel(np.asarray(pvals, dtype=object))], dtype=float)
    p = np.where(np.isnan(p), 1.0, p)          # a claim not run / without p counts as p = 1
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"{name}: p-values must lie in [0, 1] (or be nan/None), got {p[(p < 0) | (p > 1)][0]}")
    return p, np.argsort(p, kind="stable")


def holm(pvals) -> np.ndarray:
    """Holm step-down adjusted p: max_{j <= i} min(1, (m - j + 1) p_(j)), in the input order."""
    p, order = _pvec("holm", pvals)
    adj, out = np.maximum.accumulate(np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])), np.empty(p.size)
    out[order] = adj
    return out


def benjamini_hochberg(pvals) -> np.ndarray:
    """BH step-up adjusted p: min_{j >= i} min(1, m p_(j) / j), in the input order."""
    p, order = _pvec("benjamini_hochberg", pvals)
    scaled = p.size * p[order] / np.arange(1, p.size + 1)
    out = np.empty(p.size)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out
