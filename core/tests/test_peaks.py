"""The λ_max peak probe (core/landscape/peaks.py): oracles are trajectories with a known peak, and the
cases that must not be read as a peak (still rising, unconverged Lanczos, diverged)."""
import math

import pytest
import torch

from core import stats
from core.landscape.peaks import peak, peaks

STEPS = torch.arange(0, 101, 5)  # 21 checkpoints, T = 100
TOL = 1e-3


def _bump(height: float, at: float, base: float = 1.0, floor: float = 0.5) -> torch.Tensor:
    """λ(t) rising from `base` to `base·height` at step `at`, then decaying to `floor·base·height`."""
    t = STEPS.double()
    rise = base * (1 + (height - 1) * (t / at).clamp(max=1))
    fall = base * height * (floor + (1 - floor) * torch.exp(-(t - at).clamp(min=0) / 10))
    return torch.where(t <= at, rise, fall)


@pytest.mark.parametrize("height,at", [(1.5, 20), (3.0, 30), (20.0, 45), (1e3, 10)])
def test_a_known_peak_is_recovered_at_every_scale(height, at):
    pk = peak(STEPS, _bump(height, at), torch.zeros(21), tol=TOL)
    assert pk.ok and pk.t_peak == at and pk.T == 100
    assert pk.growth == pytest.approx(math.log(height))
    assert pk.position == pytest.approx(at / 100) and pk.final_ratio < 0.6


def test_still_rising_at_the_end_is_no_peak_not_an_early_one():
    rising = 1 + STEPS.double() / 10  # the first-half max sits at T/2: reading it would fake a peak
    pk = peak(STEPS, rising, torch.zeros(21), tol=TOL)
    assert pk.flag == "no_peak" and not pk.ok


def test_a_late_peak_keeps_its_numbers_as_evidence_against_the_claim():
    late = _bump(5.0, 80, floor=0.9)  # max after T/2, before T, and it stays up
    pk = peak(STEPS, late, torch.zeros(21), tol=TOL)
    assert pk.ok and pk.position == 0.5 and pk.final_ratio > 1.1


@pytest.mark.parametrize("where", [0, 6, 20])
def test_an_unconverged_lanczos_at_lambda0_peak_or_final_is_flagged(where):
    res = torch.zeros(21)
    res[where] = 0.05  # a Ritz value with 5% residual: a lower bound, possibly far below λ_max
    assert peak(STEPS, _bump(3.0, 30), res, tol=TOL).flag == "unconverged"
    res = torch.zeros(21)
    res[10] = 0.05  # elsewhere: the statistics do not use that checkpoint
    assert peak(STEPS, _bump(3.0, 30), res, tol=TOL).ok


def test_nan_from_a_diverged_run_is_flagged_and_never_a_number():
    lam = _bump(3.0, 30)
    lam[12:] = math.nan
    pk = peak(STEPS, lam, torch.zeros(21), tol=TOL)
    assert pk.flag == "diverged" and math.isnan(pk.lam_peak)


def test_bad_trajectories_and_too_many_seeds_give_one_line():
    with pytest.raises(ValueError, match="starting at step 0"):
        peak(torch.tensor([1, 2, 3]), torch.ones(3), torch.zeros(3), tol=TOL)
    art = {"steps": STEPS, "lam": torch.ones(2, 21, 1), "residual": torch.zeros(2, 21, 1)}
    with pytest.raises(ValueError, match="3 seeds asked, the ensemble has 2"):
        peaks(art, 3, tol=TOL)


def test_sd1_rule_on_probe_output_replicates_peaks_and_not_flat_trajectories():
    """The rule over the probe at the planned n = 10: growth 3× at 30% of T replicates; a constant λ
    (the quadratic control's trajectory) cannot."""
    parts = {"type": "intersection_union", "parts": {
        "growth": {"type": "median_threshold", "direction": "greater", "claimed": math.log(2), "refuted": math.log(2)},
        "pos": {"type": "median_threshold", "direction": "less", "claimed": 0.5, "refuted": 0.5},
        "fin": {"type": "median_threshold", "direction": "less", "claimed": 1.1, "refuted": 1.1}}}

    def decide(trajs):
        pks = [peak(STEPS, t, torch.zeros(21), tol=TOL) for t in trajs]
        return stats.decide(parts, 0.003125, {"growth": {"values": [p.growth for p in pks]},
                                              "pos": {"values": [p.position for p in pks]},
                                              "fin": {"values": [p.final_ratio for p in pks]}}).verdict
    assert decide([_bump(3.0 + 0.1 * s, 30) for s in range(10)]) == "replicated"
    flat = [torch.full((21,), 9.74) + 1e-9 * torch.randn(21, generator=torch.Generator().manual_seed(s))
            for s in range(10)]
    assert decide(flat) != "replicated"
