"""core/landscape/radial.py: the LS-9 angular width on landscapes with known answers.

Oracle: a loss that depends only on the angle φ between the point and w, L = φ/30° nats, crosses
level 1 at exactly 30° along every rotation. Positive control: widths that scale with a landscape
parameter at several scales are recovered. Negative control (what could fool it): a loss of the
weight norm alone never rises along a norm-preserving rotation, so its width is censored at θ_max —
the probe cannot report a norm effect as a wide tunnel and a narrow one differently.
"""

import pytest
import torch

from core.landscape.radial import radial_width, rotation_directions


def _angle_loss(w, scale_deg):
    w_hat = w.double() / w.double().norm()

    def loss(P):
        cos = (P.double() @ w_hat) / P.double().norm(dim=-1)
        return torch.rad2deg(torch.arccos(cos.clamp(-1, 1))) / scale_deg
    return loss


def _w(D=50, seed=0):
    return torch.randn(D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_directions_are_unit_and_orthogonal_to_w():
    w = _w()
    v = rotation_directions(w, 20, generator=torch.Generator().manual_seed(1))
    assert v.shape == (20, 50)
    assert torch.allclose(v.norm(dim=1), torch.ones(20, dtype=v.dtype), atol=1e-12)
    assert float((v @ w).abs().max()) < 1e-10


@pytest.mark.parametrize("scale", [5.0, 12.5, 30.0, 60.0])
def test_known_width_is_recovered_at_several_scales(scale):
    w = _w()
    v = rotation_directions(w, 8, generator=torch.Generator().manual_seed(2))
    r = radial_width(_angle_loss(w, scale), w, v, level=1.0, theta_max=90.0, theta_points=91)
    assert torch.allclose(r.width, torch.full((8,), scale, dtype=torch.float64), atol=1e-6)
    assert not bool(r.censored.any()) and abs(float(r.mean_width) - scale) < 1e-6


def test_rotation_keeps_the_norm_so_a_norm_only_loss_is_censored():
    w = _w()
    v = rotation_directions(w, 5, generator=torch.Generator().manual_seed(3))
    norm = float(w.norm())
    r = radial_width(lambda P: (P.norm(dim=-1) - norm).abs() * 1e6, w, v, level=1.0)
    assert bool(r.censored.all()) and torch.equal(r.width, torch.full((5,), 90.0, dtype=torch.float64))


def _mixed_loss(w, v):
    """Per direction k a different width (10°, 25°, 40°, never), plus a bump above level at 50-52° on
    direction 0 only after its first crossing, so the first crossing, not any crossing, is measured."""
    w_hat, scales = w.double() / w.double().norm(), torch.tensor([10.0, 25.0, 40.0, 1e9], dtype=torch.float64)

    def loss(P):
        P = P.double()
        phi = torch.rad2deg(torch.arccos(((P @ w_hat) / P.norm(dim=-1)).clamp(-1, 1)))
        k = (P @ v.double().T).argmax(-1)  # the direction this point was rotated towards
        return phi / scales[k]
    return loss


@pytest.mark.parametrize("chunk", [1, 4, 7, 91])
def test_the_early_stopped_scan_gives_the_full_scans_widths(chunk):
    """The chunked scan measures what the full scan does: widths, censoring, losses up to each crossing block."""
    w = _w()
    v = rotation_directions(w, 4, generator=torch.Generator().manual_seed(6))
    full = radial_width(_mixed_loss(w, v), w, v, level=1.0)
    calls = []
    def counted(P):
        calls.append(P.shape[:-1].numel())
        return _mixed_loss(w, v)(P)
    part = radial_width(counted, w, v, level=1.0, chunk=chunk)
    # equal up to the rounding of a differently shaped matmul
    assert torch.allclose(part.width, full.width, rtol=1e-12, atol=0) and torch.equal(part.censored, full.censored)
    assert torch.allclose(full.width[:3], torch.tensor([10.0, 25.0, 40.0], dtype=torch.float64), atol=1e-6)
    seen = ~part.losses.isnan()
    assert torch.allclose(part.losses[seen], full.losses[seen], rtol=1e-12, atol=0) and bool(seen[3].all())
    if chunk < 91:
        assert sum(calls) < 4 * 91  # crossed directions stop being evaluated


def test_a_start_above_level_has_width_zero_and_interpolation_is_linear():
    w = _w()
    v = rotation_directions(w, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(radial_width(lambda P: P.norm(dim=-1) * 0 + 5.0, w, v, level=1.0).width,
                       torch.zeros(2, dtype=torch.float64))
    r = radial_width(_angle_loss(w, 33.3), w, v, level=1.0, theta_points=4)  # grid 0, 30, 60, 90
    assert torch.allclose(r.width, torch.full((2,), 33.3, dtype=torch.float64), atol=1e-6)


def test_bad_inputs_give_one_line():
    w = _w()
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        radial_width(_angle_loss(_w(), 30.0), _w(), rotation_directions(_w(), 2, generator=torch.Generator()),
                     level=1.0, chunk=0)
    with pytest.raises(ValueError, match="not orthogonal to w"):
        radial_width(_angle_loss(w, 10), w, w[None].clone(), level=1.0)
    with pytest.raises(ValueError, match="finite, nonzero"):
        rotation_directions(torch.zeros(5), 2, generator=torch.Generator())
    with pytest.raises(ValueError, match="theta_points >= 2"):
        radial_width(_angle_loss(w, 10), w, rotation_directions(w, 1, generator=torch.Generator()), level=1.0,
                     theta_points=1)
