"""Tests for core/models.py: one generic contract over the whole registry (small configs), plus
parameter counts of the paper-scale nets (built, never run) and the init/validation details."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from core.data import UnknownName
from core.models import MODELS, build_model, count_parameters

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: with >1 intra-op thread on a busy shared 2-core box, thread spin-up dominates
    (a 2x3x8x8 ResNet forward took 0.5 s instead of 4 ms). Scoped to this module and restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# (name, kwargs, input_shape): small enough for a forward/backward on a batch of 2 in milliseconds,
# except vgg16, which needs 32x32 inputs for its five poolings.
CONFIGS = [
    ("mlp", dict(widths=(8, 8)), (1, 6, 6)),
    ("mlp", dict(widths=(8,), bn=True, dropout=0.1, activation="tanh"), (10,)),
    ("cnn1d", dict(channels=(4, 4)), (40,)),
    ("cnn1d", dict(channels=(4, 4), bn=True, stride=2), (1, 40)),
    ("simplecnn_root", {}, (3, 12, 12)),
    ("simplecnn_medium", dict(dense=16), (1, 20, 20)),
    ("fort_simplecnn", {}, (3, 8, 8)),
    ("resnet", dict(depth=8), (3, 8, 8)),
    ("resnet", dict(depth=8, bn=False), (3, 8, 8)),
    ("preresnet", dict(depth=8), (3, 8, 8)),
    ("preresnet", dict(depth=11, block="bottleneck", bn=False, width=4), (3, 8, 8)),
    ("vgg16", dict(bn=True), (3, 32, 32)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw, _ in CONFIGS]


def _build(name, kw, shape, seed=0, num_classes=5):
    return build_model(name, num_classes=num_classes, input_shape=shape, seed=seed, **kw)


def test_configs_cover_the_registry():
    assert {n for n, _, _ in CONFIGS} == set(MODELS)


@pytest.mark.parametrize("name,kw,shape", CONFIGS, ids=IDS)
def test_forward_backward_every_parameter_gets_a_finite_gradient(name, kw, shape):
    model = _build(name, kw, shape)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 3])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


@pytest.mark.parametrize("name,kw,shape", CONFIGS, ids=IDS)
def test_seed_determines_the_initial_weights(name, kw, shape):
    rng_before = torch.get_rng_state()
    a, b, c = _build(name, kw, shape, 7), _build(name, kw, shape, 7), _build(name, kw, shape, 8)
    assert torch.equal(torch.get_rng_state(), rng_before), "build_model changed the global RNG"
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa if pa[k].numel() > 1)


@pytest.mark.parametrize("name,kw,shape", CONFIGS, ids=IDS)
def test_functional_call_equals_the_module(name, kw, shape):
    model = _build(name, kw, shape).eval()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with torch.no_grad():
        assert torch.allclose(functional_call(model, (params, buffers), (x,)), model(x), atol=1e-6)


@pytest.mark.parametrize("name,kw,shape", [CONFIGS[3], CONFIGS[7], CONFIGS[10]], ids=["cnn1d-bn", "resnet", "preresnet"])
def test_vmap_over_stacked_params_equals_a_loop(name, kw, shape):
    models = [_build(name, kw, shape, seed=s).eval() for s in range(3)]
    params, buffers = stack_module_state(models)
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batched = vmap(lambda p, b: functional_call(models[0], (p, b), (x,)))(params, buffers)
        looped = torch.stack([m(x) for m in models])
    assert torch.allclose(batched, looped, atol=1e-5)


def test_cnn1d_accepts_flat_and_channel_signals():
    model = _build("cnn1d", {}, (40,)).eval()
    x = torch.randn(4, 40)
    assert torch.equal(model(x), model(x[:, None, :]))


# Reference counts for 10 classes: ResNet-110 1.73M (He et al. 2016a, option A), PreResNet-164
# 1.70M (He et al. 2016b; SWA code), VGG-16 15.25M (SWA code's CIFAR variant).
@pytest.mark.parametrize("name,kw,expected", [("resnet", dict(depth=110), 1.73e6),
                                              ("preresnet", dict(depth=164), 1.70e6),
                                              ("vgg16", {}, 15.25e6)])
def test_paper_scale_parameter_counts(name, kw, expected):
    n = count_parameters(build_model(name, num_classes=10, input_shape=(3, 32, 32), seed=0, **kw))
    assert abs(n - expected) / expected < 0.01, f"{name} {kw}: {n} parameters, expected ~{expected:.3g}"


def test_jastrzebski_resnet32_nobn_init_variance():
    """Every conv He-normal (fan in) with the variance divided by the 15 residual blocks."""
    model = build_model("preresnet", num_classes=10, input_shape=(3, 32, 32), seed=0, depth=32, bn=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    w = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[:2] == (64, 64)][0]
    target = math.sqrt(2 / (64 * 9) / 15)
    assert abs(float(w.detach().std()) / target - 1) < 0.03


def test_simplecnn_medium_layout():
    """conv(100,same)-conv(100,valid)-pool-conv(200,same)-conv(200,valid)-pool-128-10 on 32x32."""
    model = build_model("simplecnn_medium", num_classes=10, input_shape=(3, 32, 32), seed=0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (100, (5, 5), (2, 2)), (100, (5, 5), (0, 0)), (200, (5, 5), (2, 2)), (200, (5, 5), (0, 0))]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(200 * 5 * 5, 128), (128, 10)]


def test_unknown_model_and_bad_kwargs():
    with pytest.raises(UnknownName) as e:
        build_model("resnet9000", num_classes=10, input_shape=(3, 32, 32), seed=0)
    assert str(e.value).startswith("unknown model 'resnet9000'; known: ") and "preresnet" in str(e.value)
    with pytest.raises(ValueError, match="depht.*allowed: depth, bn"):
        build_model("resnet", num_classes=10, input_shape=(3, 32, 32), seed=0, depht=20)
    with pytest.raises(ValueError, match="depth=21"):
        build_model("resnet", num_classes=10, input_shape=(3, 32, 32), seed=0, depth=21)
    with pytest.raises(ValueError, match="activation='swish'"):
        build_model("mlp", num_classes=10, input_shape=(4,), seed=0, activation="swish")
    with pytest.raises(ValueError, match="H, W >= 32"):
        build_model("vgg16", num_classes=10, input_shape=(3, 16, 16), seed=0)
    with pytest.raises(ValueError, match="seed"):
        build_model("mlp", num_classes=10, input_shape=(4,), seed=-1)
