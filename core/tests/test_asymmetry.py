"""Oracle tests for core.landscape.asymmetry (He et al. 2019, Definition 1) with closed-form answers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.landscape.asymmetry import asymmetry_index, outward_slopes, radius_for_rise

F64 = torch.float64


def grid(R: float = 3.0, n: int = 61) -> torch.Tensor:
    return torch.linspace(-R, R, n, dtype=F64)


def vee(steps: torch.Tensor, a: float, c: float, flat: int = 1) -> torch.Tensor:
    """Piecewise-linear valley: slope a on the flat side, c·a on the sharp side, kink at 0."""
    x = steps * flat
    return torch.where(x >= 0, a * x, -c * a * x)


@pytest.mark.parametrize("flat", [1, -1])
@pytest.mark.parametrize("a,c", [(0.5, 5.0), (2.0, 1.5), (1e-3, 40.0)])
def test_piecewise_linear_valley_gives_exact_c_and_flat_side(flat, a, c):
    res = asymmetry_index(grid(), vee(grid(), a, c, flat))
    assert res.c.item() == pytest.approx(c, rel=1e-12)
    assert res.flat_side.item() == flat
    assert res.p.item() == pytest.approx(a, rel=1e-12)
    assert res.q.item() == pytest.approx(c * a, rel=1e-12)
    assert bool(res.is_valley) and bool(res.asymmetric) == (c > 2.0)


def test_symmetric_vee_gives_c_one_and_is_not_asymmetric():
    res = asymmetry_index(grid(), grid().abs())
    assert res.c.item() == pytest.approx(1.0, abs=1e-12)
    assert bool(res.is_valley) and not bool(res.asymmetric)


def test_symmetric_quadratic_gives_inner_over_outer_slope():
    """L = l²: slopes 2m at midpoints m, so c = min/max = m_first/m_last of the window (< 1)."""
    steps = grid(3.0, 61)  # h = 0.1, R = 3, r = 0.9: window intervals [0.9, 1.0] ... [2.9, 3.0]
    res = asymmetry_index(steps, steps**2)
    assert res.c.item() == pytest.approx(0.95 / 2.95, rel=1e-9)
    assert not bool(res.asymmetric)


def test_decreasing_side_is_not_a_valley():
    steps = grid()
    res = asymmetry_index(steps, torch.where(steps >= 0, -0.5 * steps, -3.0 * steps))
    assert not bool(res.is_valley) and not bool(res.asymmetric)
    assert math.isnan(res.c.item()) and res.flat_side.item() == 1
    assert res.p.item() == pytest.approx(-0.5)


def test_c_exactly_at_threshold_is_not_asymmetric():
    res = asymmetry_index(grid(), vee(grid(), 1.0, 2.0))
    assert res.c.item() == pytest.approx(2.0) and not bool(res.asymmetric)


def test_window_ignores_the_core_and_respects_R():
    """Core |l| ≤ 0.5 inside r (0.9 for R = 3, 0.6 for R = 2) never enters; a smaller R drops the outer part."""
    steps = grid()
    x = steps
    core = torch.where(x >= 0, 10 * x, -10 * x)  # steep symmetric core would give c = 1 if it leaked in
    line = torch.where(x.abs() <= 0.5, core, torch.where(x > 0, 5 + 0.2 * (x - 0.5), 5 + 2.0 * (-x - 0.5)))
    assert asymmetry_index(steps, line).c.item() == pytest.approx(10.0, rel=1e-9)
    outer = torch.where(x.abs() <= 2.0, line, line + 5.0 * (x.abs() - 2.0))  # both sides steepen past 2
    assert asymmetry_index(steps, outer).c.item() < 2
    assert asymmetry_index(steps, outer, R=2.0).c.item() == pytest.approx(10.0, rel=1e-9)


def test_batching_equals_looping():
    g = torch.Generator().manual_seed(0)
    steps = grid(2.0, 41)
    a = torch.rand(3, 4, 1, generator=g, dtype=F64) + 0.1
    c = 1 + 5 * torch.rand(3, 4, 1, generator=g, dtype=F64)
    noise = 0.01 * torch.rand(3, 4, 41, generator=g, dtype=F64)
    lines = torch.where(steps >= 0, a * steps, -c * a * steps) + steps**2 * noise
    lines[0, 0] = -steps  # one non-valley in the batch
    R = 0.5 + 1.5 * torch.rand(3, 4, generator=g, dtype=F64)
    R[1, 2] = torch.inf
    res = asymmetry_index(steps, lines, R=R)
    for i in range(3):
        for j in range(4):
            one = asymmetry_index(steps, lines[i, j], R=float(R[i, j]))
            for name in ("c", "p", "q", "r"):
                torch.testing.assert_close(getattr(res, name)[i, j], getattr(one, name), equal_nan=True)
            for name in ("flat_side", "is_valley", "asymmetric", "has_window"):
                assert getattr(res, name)[i, j] == getattr(one, name), name
    assert not bool(res.has_window[1, 2]) and math.isnan(res.c[1, 2].item())
    assert not bool(res.is_valley[0, 0])


def test_even_grid_and_float32_are_supported():
    steps = torch.linspace(-3, 3, 60)  # no zero point
    res = asymmetry_index(steps, vee(steps, 1.0, 3.0))
    assert res.c.item() == pytest.approx(3.0, rel=1e-5) and res.c.dtype == torch.float32


def test_outward_slopes_shapes_and_values():
    steps = grid(1.0, 5)  # -1, -0.5, 0, 0.5, 1
    slopes, mids = outward_slopes(steps, torch.tensor([4.0, 1.0, 0.0, 0.5, 2.0], dtype=F64))
    torch.testing.assert_close(mids, torch.tensor([0.25, 0.75], dtype=F64))
    torch.testing.assert_close(slopes, torch.tensor([[1.0, 3.0], [2.0, 6.0]], dtype=F64))


@pytest.mark.parametrize(
    "steps,match",
    [
        (torch.linspace(-1, 2, 31, dtype=F64), "symmetric"),
        (torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=F64), "uniform"),
        (torch.zeros(2, 5, dtype=F64), r"\(2, 5\)"),
        (torch.linspace(-1, 1, 3, dtype=F64), "at least 4"),
    ],
)
def test_invalid_grid_raises_naming_the_value(steps, match):
    with pytest.raises(ValueError, match=match):
        asymmetry_index(steps, torch.zeros(steps.shape[-1], dtype=F64))


@pytest.mark.parametrize("r_frac", [0.0, 1.0, 1.5, -0.2])
def test_r_frac_outside_open_unit_interval_raises(r_frac):
    with pytest.raises(ValueError, match=f"r_frac.*{r_frac}"):
        asymmetry_index(grid(), grid().abs(), r_frac=r_frac)


def test_wrong_losses_shape_and_nonfinite_and_R_raise():
    with pytest.raises(ValueError, match=r"\[\.\.\., 61\].*\(3, 60\)"):
        asymmetry_index(grid(), torch.zeros(3, 60, dtype=F64))
    bad = grid().abs()
    bad[7] = torch.nan
    with pytest.raises(ValueError, match=r"non-finite.*\(7,\)"):
        asymmetry_index(grid(), bad)
    with pytest.raises(ValueError, match="R must lie in"):
        asymmetry_index(grid(), grid().abs(), R=4.0)
    with pytest.raises(ValueError, match=r"broadcast.*\(3,\)"):
        asymmetry_index(grid(), torch.zeros(2, 61, dtype=F64), R=torch.ones(3, dtype=F64))


@pytest.mark.parametrize("flat", [1, -1])
def test_radius_for_rise_closed_form(flat):
    """Steeper side slope c·a reaches Δ at Δ/(c·a); linear interpolation is exact for lines."""
    steps = grid(3.0, 61)
    R = radius_for_rise(steps, vee(steps, 0.5, 4.0, flat), 0.7)
    assert R.item() == pytest.approx(0.7 / 2.0, rel=1e-12)


def test_radius_for_rise_quadratic_interpolates_and_never_reached_is_inf():
    steps = grid(3.0, 61)
    lines = torch.stack([steps**2, 0.01 * steps.abs(), steps**2 + 5.0])
    R = radius_for_rise(steps, lines, 0.5)
    # l² crosses 0.5 between 0.7 (0.49) and 0.8 (0.64): 0.7 + 0.1·(0.01/0.15)
    assert R[0].item() == pytest.approx(0.7 + 0.1 * 0.01 / 0.15, rel=1e-9)
    assert R[1].item() == math.inf
    assert R[2].item() == pytest.approx(R[0].item(), rel=1e-12)  # vertical offsets do not matter


def test_radius_for_rise_rejects_even_grid_and_bad_delta():
    with pytest.raises(ValueError, match="odd"):
        radius_for_rise(torch.linspace(-1, 1, 10), torch.zeros(10), 0.1)
    with pytest.raises(ValueError, match="delta.*-1"):
        radius_for_rise(grid(), grid().abs(), -1)


@settings(max_examples=40, deadline=None)
@given(
    a=st.floats(1e-3, 10.0),
    c=st.floats(1.01, 50.0),
    flat=st.sampled_from([1, -1]),
    r_frac=st.floats(0.05, 0.9),
    offset=st.floats(-5.0, 5.0),
)
def test_property_exact_c_for_any_piecewise_linear_valley(a, c, flat, r_frac, offset):
    steps = grid(2.0, 81)
    res = asymmetry_index(steps, vee(steps, a, c, flat) + offset, r_frac=r_frac)
    assert res.c.item() == pytest.approx(c, rel=1e-8)
    assert res.flat_side.item() == flat
