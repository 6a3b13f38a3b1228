"""core/netloss.py: a network's loss on flat parameter vectors. Oracles: the model called once per
point (a Python loop, fp64), autograd of that loop, and core.connectors' projected Adam, whose iterate
must stay on its hyperplane whatever the loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from core import connectors as C
from core.models import build_model
from core.netloss import net_loss

F64 = torch.float64
MODELS = {"mlp": dict(widths=(5, 4), activation="tanh"), "cnn1d": dict(channels=(2, 3), kernel=3, activation="tanh")}


def _rows(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _net(name="mlp", seed=0, **kw):
    model = build_model(name, num_classes=3, input_shape=(8,), seed=seed, **MODELS[name])
    x, y = _rows()
    return model, net_loss(model, dict(model.named_parameters()), x, y, **kw)


def _points(nl, k=5, seed=1, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, nl.dim, generator=g, dtype=dtype) * 0.5


def _looped(model, nl, P, x=None, y=None, rows=None):
    """The oracle: one forward of the model per point, fp64 rows, mean CE (optionally on `rows` [R, B])."""
    x, y = (nl.x if x is None else x).to(P.dtype), nl.y if y is None else y
    out = []
    for r, p in enumerate(P.reshape(-1, nl.dim)):
        xs, ys = (x, y) if rows is None else (x[rows[r]], y[rows[r]])
        out.append(F.cross_entropy(functional_call(model, nl.unflatten(p), (xs,)), ys))
    return torch.stack(out).view(P.shape[:-1])


# ---------------------------------------------------------------- loss, layout
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("chunk", [7, 50, 2 ** 14])  # rows split into blocks; 2 points per chunk; one chunk
def test_vmapped_loss_equals_a_loop_over_points(name, chunk):
    model, nl = _net(name, chunk=chunk)
    P = _points(nl, 6).view(2, 3, -1)  # two leading dims
    got = nl.loss(P)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, _looped(model, nl, P), rtol=1e-6, atol=0)


def test_flatten_unflatten_round_trip_and_views():
    model, nl = _net("cnn1d")
    params = dict(model.named_parameters())
    vec = nl.flatten(params)
    assert vec.shape == (nl.dim,) == (sum(p.numel() for p in params.values()),)
    back = nl.unflatten(vec)
    assert list(back) == list(params) and all(torch.equal(back[n], params[n]) for n in params)
    lo, hi = vec.data_ptr(), vec.data_ptr() + vec.numel() * vec.element_size()
    assert all(lo <= t.data_ptr() < hi for t in back.values())  # views into vec, no copies
    batch = _points(nl, 4).view(2, 2, -1)
    assert torch.equal(torch.stack([torch.cat([t[i, j].reshape(-1) for t in nl.unflatten(batch).values()])
                                    for i in range(2) for j in range(2)]).view_as(batch), batch)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", list(MODELS))
def test_full_batch_gradient_equals_autograd_of_the_loop(name):
    model, nl = _net(name, chunk=30)  # 1 point per chunk, rows in blocks of 20
    P = _points(nl, 3)
    Q = P.clone().requires_grad_(True)
    want = torch.autograd.grad(_looped(model, nl, Q).sum(), Q)[0]
    torch.testing.assert_close(nl.grad(P), want, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(nl.grad(P, scratch=C.Scratch()), want, rtol=1e-6, atol=1e-12)


def test_minibatches_are_per_point_permutation_epochs_and_their_gradient_is_the_loops():
    model, nl = _net("mlp")
    P, B = _points(nl, 3), 6  # 20 rows: 3 batches of 6 per permutation, 2 rows skipped
    grad, loss = nl.minibatch_grad(B, torch.Generator().manual_seed(5)), nl.minibatch_loss(B, torch.Generator().manual_seed(5))
    order = torch.rand(3, 20, generator=torch.Generator().manual_seed(5)).argsort(-1)
    for step in range(3):
        rows = order[:, step * B:(step + 1) * B]
        Q = P.clone().requires_grad_(True)
        want = torch.autograd.grad(_looped(model, nl, Q, rows=rows).sum(), Q)[0]
        torch.testing.assert_close(grad(P), want, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(loss(P), _looped(model, nl, P, rows=rows), rtol=1e-6, atol=0)
    assert not torch.equal(grad(P), want)  # step 4: a new permutation
    with pytest.raises(ValueError, match="same number every call"):
        grad(P[:2])


# ---------------------------------------------------------------- with core.connectors
def test_projected_adam_on_a_network_stays_on_its_hyperplane():
    model, nl = _net("mlp")
    a, b = _points(nl, 2, seed=3)
    u = ((b - a) / (b - a).norm())[None, None]  # [1, K = 1, D]
    start = (a + 0.3 * (b - a))[None]
    cfg = C.OptimConfig(method="adam", steps=60, lr=1e-2, schedule="constant")
    x = C.descend(nl.minibatch_grad(8, torch.Generator().manual_seed(0)), start, cfg, C.affine_projector(start, u))
    moved = (x - start).norm()
    assert moved > 0.1 and nl.loss(x) < nl.loss(start)  # it optimised
    assert float(((x - start) @ u[0, 0]).abs().max()) <= 1e-6 * float(moved)
    x32 = C.descend(nl.minibatch_grad(8, torch.Generator().manual_seed(0)), start.float(), cfg,
                    C.affine_projector(start.float(), u.float()))
    assert float(((x32.double() - start) @ u[0, 0]).abs().max()) <= 1e-6 * float(start.norm())


def test_tunnel_and_connector_accept_the_network_loss():
    model, nl = _net("mlp")
    ends = _points(nl, 3, seed=4)
    cfg = C.OptimConfig(method="adam", steps=20, lr=1e-2, schedule="constant")
    tun = C.build_tunnel(nl.loss, ends[None, 0], ends[None, 1], fractions=[0.25, 0.5, 0.75], config=cfg,
                         points_per_segment=5)
    torch.testing.assert_close(tun.linear_losses[0, [0, -1]], nl.loss(ends[:2]), rtol=1e-12, atol=0)
    mb = nl.minibatch_loss(8, torch.Generator().manual_seed(0))
    con = C.build_connector(nl.loss, ends[None], objective=lambda c, o: mb(c), config=cfg, points_per_segment=5)
    off = torch.einsum("bkD,bD->bk", con.normals, con.centre - con.hull_point)
    assert float(off.abs().max()) <= 1e-9 and con.segment_losses.shape == (1, 3, 5)


# ---------------------------------------------------------------- predictions
def test_predictions_accuracy_and_agreement_equal_the_loop():
    model, nl = _net("cnn1d", chunk=9)
    P = _points(nl, 4)
    xt, yt = _rows(11, seed=7)
    logits = torch.stack([functional_call(model, nl.unflatten(p), (xt.double(),)) for p in P])
    assert torch.equal(nl.predict(P, xt), logits.argmax(-1))
    torch.testing.assert_close(nl.accuracy(P, xt, yt), (logits.argmax(-1) == yt).double().mean(-1))
    torch.testing.assert_close(nl.on(xt, yt).accuracy(P), nl.accuracy(P, xt, yt))
    agree = nl.agreement(P, P[-1], xt)
    assert agree[-1] == 1 and torch.equal(agree, (logits.argmax(-1) == logits[-1].argmax(-1)).double().mean(-1))


# ---------------------------------------------------------------- refusals
def test_bad_inputs_give_one_clear_line():
    x, y = _rows()
    bn = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="buffers .*BatchNorm"):
        net_loss(bn, dict(bn.named_parameters()), x, y)
    model, nl = _net("mlp")
    params = dict(model.named_parameters())
    with pytest.raises(ValueError, match="do not match the model's parameters"):
        net_loss(model, {**params, "1.weight": torch.zeros(5, 7)}, x, y)
    with pytest.raises(ValueError, match="does not fit the model"):
        net_loss(model, params, torch.randn(20, 9), y)
    with pytest.raises(ValueError, match=r"labels span 0\.\.3; allowed: 0\.\.2"):
        net_loss(model, params, x, y.clone().index_fill_(0, torch.tensor([0]), 3))
    with pytest.raises(ValueError, match=r"allowed: floating \[\.\.\., D = "):
        nl.loss(torch.zeros(2, nl.dim + 1))
    with pytest.raises(ValueError, match="batch_size=21"):
        nl.minibatch_grad(21, torch.Generator())
