"""The networks of the three papers, built deterministically from a seed.

`build_model(name, num_classes=, input_shape=, seed=, **kwargs)` looks a factory up in `MODELS`,
checks the kwargs against the factory's signature and builds it inside `torch.random.fork_rng`
with the CPU generator seeded by `seed`, so the initial weights are a function of the seed alone
and no global RNG state leaks out. Every model is a plain stack of standard modules (BN as
nn.BatchNorm1d/2d, no in-place ops, no data-dependent control flow), so probes can call it
through `torch.func.functional_call` and `vmap`. Every model starts by reshaping its input to
[-1, *input_shape] (so MNIST-1D's [N, 40] feeds cnn1d as [N, 1, 40]).

Sources: He et al. 2016 (ResNet, CIFAR variant), He et al. 2016b / the SWA code (PreResNet, VGG-16),
Jastrzebski et al. 2019 App. F + kudkudak/dnn_sharpest_directions (SimpleCNN, ResNet-32 noBN),
Fort & Jastrzebski 2019 Sec. 5 (SimpleCNN), papers/PROTOCOLS.md.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.data import UnknownName

__all__ = ["MODELS", "ACTIVATIONS", "build_model", "count_parameters"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
               "gelu": nn.GELU}


# ---------------------------------------------------------------- shared building blocks
class Reshape(nn.Module):
    """x -> x.reshape(-1, *shape); shape-only, so it also works per sample under vmap."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1, *self.shape)


class GlobalAvgPool(nn.Module):
    """[N, C, *spatial] -> [N, C] (mean over positions)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(-1)


def _act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _bn(channels: int, bn: bool, dim: int = 2) -> nn.Module:
    return (nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(channels) if bn else nn.Identity()


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: int | None = None, bias: bool = True):
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2 if pad is None else pad, bias=bias)


def _image_shape(name: str, input_shape, min_side: int) -> tuple[int, int, int]:
    """Validate a (C, H, W) input shape whose sides survive the model's downsampling."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ValueError(f"{name} needs input_shape (C, H, W) with H, W >= {min_side}; got {input_shape}")
    return tuple(input_shape)


def _check(key: str, ok: bool, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{key}={value!r}; allowed: {allowed}")


def _pos_ints(v) -> bool:
    return isinstance(v, (tuple, list)) and len(v) > 0 and all(
        isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v)


def _glorot(model: nn.Module) -> nn.Module:
    """Keras defaults: glorot_uniform weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _he_convs(model: nn.Module, bn: bool, init_scale: float) -> nn.Module:
    """With BN: N(0, 2 / (k^2 c_out)) as in the fb/SWA code. Without BN: He-normal fan-in with the
    variance times init_scale (Jastrzebski et al.: 1 / number of residual blocks), zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out" if bn else "fan_in", nonlinearity="relu")
            if not bn:
                m.weight.data.mul_(math.sqrt(init_scale))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------- small networks
def mlp(num_classes, input_shape, *, widths=(100, 100), bn=False, dropout=0.0, activation="relu"):
    """Fully connected net: [Linear (-> BN) -> act (-> Dropout)] per width, then Linear. PyTorch's
    default init. Hidden Linear layers drop their bias when followed by BN (it would be a flat
    direction of the loss)."""
    _check("widths", _pos_ints(widths) or widths == (), widths, "a sequence of positive ints")
    _check("dropout", 0 <= dropout < 1, dropout, "0 <= dropout < 1")
    layers, d_in = [Reshape(math.prod(input_shape))], math.prod(input_shape)
    for w in widths:
        layers += [nn.Linear(d_in, w, bias=not bn), _bn(w, bn, 1), _act(activation)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        d_in = w
    return nn.Sequential(*layers, nn.Linear(d_in, num_classes))


def cnn1d(num_classes, input_shape, *, channels=(32, 32, 32), kernel=5, stride=1, bn=False,
          activation="relu"):
    """MNIST-1D conv net: Conv1d(kernel, 'same' padding; stride 1 for the first layer, `stride`
    after) (-> BN) -> act per channel count, global average pooling, Linear. Input [N, L] or
    [N, C, L]. Default: 10.8k parameters for 10 classes, ~97% test accuracy on the package's
    default 4000/1000 split (Adam 1e-2, 30 epochs; stride=2: ~95%, 40 -> 40 -> 20 -> 10 positions)."""
    _check("input_shape", len(input_shape) in (1, 2), input_shape, "(L,) or (C, L)")
    _check("channels", _pos_ints(channels), channels, "a sequence of positive ints")
    _check("kernel", isinstance(kernel, int) and kernel > 0 and kernel % 2 == 1, kernel, "an odd int")
    _check("stride", stride in (1, 2, 3, 4), stride, "1, 2, 3 or 4")
    c_in, length = (1, input_shape[0]) if len(input_shape) == 1 else tuple(input_shape)
    layers = [Reshape(c_in, length)]
    for i, c in enumerate(channels):
        layers += [nn.Conv1d(c_in, c, kernel, stride=1 if i == 0 else stride, padding=kernel // 2,
                             bias=not bn), _bn(c, bn, 1), _act(activation)]
        c_in = c
    return nn.Sequential(*layers, GlobalAvgPool(), nn.Linear(c_in, num_classes))


def _keras_simplecnn(num_classes, input_shape, filters, kernel, dense, bn, dropout, activation):
    """Jastrzebski et al.'s SimpleCNN (their Keras code): conv(f, same)-act-conv(f, valid)-act-
    maxpool2-conv(2f, same)-act-conv(2f, valid)-act-maxpool2-dense-act-dense; Glorot init."""
    c, h, w = _image_shape("simplecnn", input_shape, 2 * kernel + 2)
    _check("dropout", 0 <= dropout < 1, dropout, "0 <= dropout < 1")
    side = lambda s: ((s - kernel + 1) // 2 - kernel + 1) // 2
    if side(h) < 1 or side(w) < 1:
        raise ValueError(f"simplecnn: input_shape {input_shape} is too small for kernel {kernel}")
    block = lambda a, b, pad: [_conv(a, b, kernel, pad=pad, bias=not bn), _bn(b, bn), _act(activation)]
    layers = [Reshape(c, h, w), *block(c, filters, None), *block(filters, filters, 0), nn.MaxPool2d(2),
              *block(filters, 2 * filters, None), *block(2 * filters, 2 * filters, 0), nn.MaxPool2d(2),
              nn.Flatten(), nn.Linear(2 * filters * side(h) * side(w), dense), _bn(dense, bn, 1),
              _act(activation)]
    layers += [nn.Dropout(dropout)] if dropout > 0 else []
    return _glorot(nn.Sequential(*layers, nn.Linear(dense, num_classes)))


def simplecnn_root(num_classes, input_shape, *, dense=128, bn=False, dropout=0.0, activation="relu"):
    """SimpleCNN 'root' (Jastrzebski et al. App. F): 32/32/64/64 filters, 3x3."""
    return _keras_simplecnn(num_classes, input_shape, 32, 3, dense, bn, dropout, activation)


def simplecnn_medium(num_classes, input_shape, *, dense=128, bn=False, dropout=0.0, activation="relu"):
    """SimpleCNN 'medium' (used for NSGD, footnote 10): 100/100/200/200 filters, 5x5."""
    return _keras_simplecnn(num_classes, input_shape, 100, 5, dense, bn, dropout, activation)


def fort_simplecnn(num_classes, input_shape, *, channels=(16, 32, 32), activation="tanh", pool="max"):
    """Fort & Jastrzebski's SimpleCNN: [conv 3x3 'same' -> act -> 2x2 pool] per channel count,
    then Linear. The paper does not name the pooling or the init: max pooling and Keras's
    Glorot-uniform init are our assumptions."""
    _check("channels", _pos_ints(channels), channels, "a sequence of positive ints")
    _check("pool", pool in ("max", "avg"), pool, "max, avg")
    c, h, w = _image_shape("fort_simplecnn", input_shape, 2 ** len(channels))
    layers, c_in = [Reshape(c, h, w)], c
    for ch in channels:
        layers += [_conv(c_in, ch), _act(activation), nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)]
        c_in, h, w = ch, h // 2, w // 2
    return _glorot(nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * h * w, num_classes)))


# ---------------------------------------------------------------- residual networks
class PadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by `stride`, zero-pad the new channels."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Post-activation block (He et al. 2016a): relu(bn(conv(relu(bn(conv x)))) + shortcut x)."""
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, bn: bool):
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, planes, 3, stride, bias=not bn), _bn(planes, bn)
        self.conv2, self.bn2 = _conv(planes, planes, 3, bias=not bn), _bn(planes, bn)
        self.shortcut = PadShortcut(c_in, planes, stride) if stride != 1 or c_in != planes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreBlock(nn.Module):
    """Pre-activation block (He et al. 2016b, SWA code): x + convs of relu(bn(.)); the bottleneck
    variant is 1x1 -> 3x3 (stride) -> 1x1 with 4x output channels. The shortcut is a 1x1 conv of
    the raw input when the shape changes."""

    def __init__(self, c_in: int, planes: int, stride: int, bn: bool, bottleneck: bool):
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        c_out = planes * self.expansion
        shapes = [(c_in, planes, 1, 1), (planes, planes, 3, stride), (planes, c_out, 1, 1)] if bottleneck \
            else [(c_in, planes, 3, stride), (planes, planes, 3, 1)]
        self.bns = nn.ModuleList(_bn(a, bn) for a, *_ in shapes)
        self.convs = nn.ModuleList(_conv(a, b, k, s, bias=not bn) for a, b, k, s in shapes)
        self.shortcut = _conv(c_in, c_out, 1, stride, pad=0, bias=not bn) \
            if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = x
        for norm, conv in zip(self.bns, self.convs):
            out = conv(F.relu(norm(out)))
        return out + self.shortcut(x)


def _cifar_resnet(num_classes, input_shape, blocks_per_stage, make_block, width, pre, bn):
    """Stem conv 3x3 -> three stages (width, 2 width, 4 width channels; stride 2 between stages)
    -> (pre-activation nets: BN -> ReLU) -> global average pool -> Linear."""
    c, h, w = _image_shape("resnet", input_shape, 4)
    layers, c_in = [Reshape(c, h, w), _conv(c, width, bias=not bn)], width
    layers += [] if pre else [_bn(width, bn), nn.ReLU()]
    for stage in range(3):
        for i in range(blocks_per_stage):
            block = make_block(c_in, width * 2 ** stage, 2 if stage > 0 and i == 0 else 1)
            layers.append(block)
            c_in = width * 2 ** stage * getattr(block, "expansion", 1)
    layers += [_bn(c_in, bn), nn.ReLU()] if pre else []
    return nn.Sequential(*layers, GlobalAvgPool(), nn.Linear(c_in, num_classes))


def _depth_blocks(name: str, depth: int, per_block: int) -> int:
    if not isinstance(depth, int) or depth < per_block * 3 + 2 or (depth - 2) % (per_block * 3):
        ex = ", ".join(str(per_block * 3 * k + 2) for k in (1, 2, 3, 5, 18))
        raise ValueError(f"{name} depth={depth!r} must be {per_block * 3}k+2 (e.g. {ex})")
    return (depth - 2) // (per_block * 3)


def resnet(num_classes, input_shape, *, depth=20, bn=True, width=16, init_scale=None):
    """CIFAR ResNet-depth (He et al. 2016a): depth = 6k+2, basic post-activation blocks, option-A
    shortcuts (ResNet-110: 1.73M parameters). bn=False drops every BN, adds conv biases and uses
    He-normal init with variance x init_scale (default 1 / number of blocks)."""
    n = _depth_blocks("resnet", depth, 2)
    model = _cifar_resnet(num_classes, input_shape, n, lambda a, b, s: BasicBlock(a, b, s, bn),
                          width, False, bn)
    return _he_convs(model, bn, 1.0 / (3 * n) if init_scale is None else init_scale)


def preresnet(num_classes, input_shape, *, depth=164, bn=True, block="auto", width=16, init_scale=None):
    """PreResNet-depth as in the SWA / He et al. 2019 code: block="auto" means bottleneck blocks
    (depth = 9k+2) for depth >= 44, else basic (6k+2); PreResNet-164: 1.70M parameters.
    bn=False: no BN, conv biases, He-normal variance x init_scale (default 1 / number of blocks) -
    Jastrzebski et al.'s ResNet-32 without BN is preresnet(depth=32, bn=False)."""
    if block not in ("auto", "basic", "bottleneck"):
        raise ValueError(f"block={block!r}; allowed: auto, basic, bottleneck")
    bottleneck = block == "bottleneck" or (block == "auto" and isinstance(depth, int) and depth >= 44)
    n = _depth_blocks(f"preresnet ({'bottleneck' if bottleneck else 'basic'})", depth, 3 if bottleneck else 2)
    model = _cifar_resnet(num_classes, input_shape, n,
                          lambda a, b, s: PreBlock(a, b, s, bn, bottleneck), width, True, bn)
    return _he_convs(model, bn, 1.0 / (3 * n) if init_scale is None else init_scale)


# ---------------------------------------------------------------- VGG
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(num_classes, input_shape, *, bn=False, dropout=0.5):
    """VGG-16, CIFAR variant of the SWA code: 13 conv 3x3 (+BN) + ReLU, 5 max-pools, classifier
    Dropout-512-ReLU-Dropout-512-ReLU-Linear; conv init N(0, 2 / (9 c_out)), zero bias.
    15.25M parameters for CIFAR-10."""
    c, h, w = _image_shape("vgg16", input_shape, 32)
    _check("dropout", 0 <= dropout < 1, dropout, "0 <= dropout < 1")
    layers, c_in = [Reshape(c, h, w)], c
    for v in VGG16_CFG:
        layers += [nn.MaxPool2d(2)] if v == "M" else [_conv(c_in, v), _bn(v, bn), nn.ReLU()]
        c_in = c_in if v == "M" else v
    drop = lambda: [nn.Dropout(dropout)] if dropout > 0 else []
    head = [nn.Flatten(), *drop(), nn.Linear(512 * (h // 32) * (w // 32), 512), nn.ReLU(), *drop(),
            nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)]
    return _he_convs(nn.Sequential(*layers, *head), True, 1.0)


# ---------------------------------------------------------------- registry
MODELS = {"mlp": mlp, "cnn1d": cnn1d, "simplecnn_root": simplecnn_root,
          "simplecnn_medium": simplecnn_medium, "fort_simplecnn": fort_simplecnn,
          "resnet": resnet, "preresnet": preresnet, "vgg16": vgg16}


def _allowed_kwargs(factory) -> list[str]:
    return [p.name for p in inspect.signature(factory).parameters.values() if p.kind == p.KEYWORD_ONLY]


def build_model(name: str, *, num_classes: int, input_shape, seed: int, **kwargs) -> nn.Module:
    """Build MODELS[name] with initial weights determined by `seed` alone (CPU, float32, train
    mode). Global RNG state is saved and restored (torch.random.fork_rng)."""
    if name not in MODELS:
        raise UnknownName("model", name, MODELS)
    allowed = _allowed_kwargs(MODELS[name])
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ValueError(f"model {name!r} got unknown kwarg(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1; got {num_classes!r}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints; got {input_shape!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are untouched
        return MODELS[name](num_classes, shape, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
