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


def test_a_start_above_level_has_width_zero_and_interpolation_is_linear():
    w = _w()
    v = rotation_directions(w, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(radial_width(lambda P: P.norm(dim=-1) * 0 + 5.0, w, v, level=1.0).width,
                       torch.zeros(2, dtype=torch.float64))
    r = radial_width(_angle_loss(w, 33.3), w, v, level=1.0, theta_points=4)  # grid 0, 30, 60, 90
    assert torch.allclose(r.width, torch.full((2,), 33.3, dtype=torch.float64), atol=1e-6)


def test_bad_inputs_give_one_line():
    w = _w()
    with pytest.raises(ValueError, match="not orthogonal to w"):
        radial_width(_angle_loss(w, 10), w, w[None].clone(), level=1.0)
    with pytest.raises(ValueError, match="finite, nonzero"):
        rotation_directions(torch.zeros(5), 2, generator=torch.Generator())
    with pytest.raises(ValueError, match="theta_points >= 2"):
        radial_width(_angle_loss(w, 10), w, rotation_directions(w, 1, generator=torch.Generator()), level=1.0,
                     theta_points=1)
