"""
Early-exit CNNs as an ordered list of segments, each optionally ending in an exit head.

A segment is one pipeline stage: it maps a feature map to the next one and, when it ends at
an exit, also to class logits. Heads pool or flatten in NHWC order (``permute`` first) so the
exported int8 graphs contain no TRANSPOSE: the Edge TPU maps every op of such a head.

Architectures:
- ``blenet``: BranchyNet's B-LeNet for 28 px digits (one branch after the first conv).
- ``resnet_ee``: a small residual net with two early exits for 28-32 px inputs.
- ``mobilenetv2_ee``: MobileNetV2 inverted residuals with exits, for 96-224 px inputs.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn


class NHWCMean(nn.Module):
    """Global average pool computed on the NHWC view (maps to one MEAN op, no TRANSPOSE)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).mean((1, 2))


class NHWCFlatten(nn.Module):
    """Flatten in NHWC order, as a TFLite RESHAPE of the NHWC tensor would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


class Segment(nn.Module):
    """
    ``body`` maps features to features; ``head`` (optional) maps them to logits.

    The last segment of a network returns only logits: ``emits_features`` is False there.
    """

    def __init__(self, body: nn.Module, head: Optional[nn.Module], emits_features: bool = True):
        super().__init__()
        self.body = body
        self.head = head
        self.emits_features = emits_features

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        features = self.body(x)
        return features, (self.head(features) if self.head is not None else None)


class EarlyExitNet(nn.Module):
    """A chain of segments; ``forward`` returns the logits of every exit, first to last."""

    def __init__(self, segments: Sequence[Segment], arch: str, input_shape: tuple[int, int, int],
                 num_classes: int):
        super().__init__()
        if segments[-1].head is None:
            raise ValueError('the last segment must end at an exit')
        self.segments = nn.ModuleList(segments)
        self.arch = arch
        self.input_shape = input_shape  # H, W, C
        self.num_classes = num_classes

    @property
    def num_exits(self) -> int:
        return sum(s.head is not None for s in self.segments)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for segment in self.segments:
            x, out = segment(x)
            if out is not None:
                logits.append(out)
        return logits


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            act: Optional[Callable[[], nn.Module]] = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3, 1, act=None)
        self.shortcut = (conv_bn(cin, cout, 1, stride, act=None)
                         if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual if same."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def pooled_head(cin: int, num_classes: int, conv: int = 0, stride: int = 1) -> nn.Sequential:
    """Exit head: optional conv-bn-relu, global average pool, linear classifier."""
    layers = [conv_bn(cin, conv, 3, stride)] if conv else []
    return nn.Sequential(*layers, NHWCMean(), nn.Linear(conv or cin, num_classes))


def blenet(num_classes: int = 10, input_shape: tuple = (28, 28, 1)) -> EarlyExitNet:
    """
    B-LeNet as in BranchyNet's published code (Chainer), one branch after conv1.

    Chainer pools with ``cover_all``, hence ``ceil_mode`` here: the branch flattens 8x8x10
    (640) and the trunk 6x6x20 (720) values, as in the original. The original applies ReLU
    after each max pool; ReLU and max pooling commute, so it comes first here, where the
    converter fuses it into the convolution (the Edge TPU maps no pool with a fused ReLU).
    """
    c = input_shape[2]

    def conv_relu_pool(cin: int, cout: int, k: int, pad: int) -> list:
        return [nn.Conv2d(cin, cout, k, 1, pad), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True)]

    seg0 = Segment(nn.Sequential(nn.Conv2d(c, 5, 5, 1, 3), nn.ReLU()), nn.Sequential(
        nn.MaxPool2d(2, 2, ceil_mode=True), *conv_relu_pool(5, 10, 3, 1), NHWCFlatten(),
        nn.LazyLinear(num_classes)))
    trunk = nn.Sequential(nn.MaxPool2d(2, 2, ceil_mode=True), *conv_relu_pool(5, 10, 5, 3),
                          *conv_relu_pool(10, 20, 5, 3))
    seg1 = Segment(trunk, nn.Sequential(NHWCFlatten(), nn.LazyLinear(84),
                                        nn.Linear(84, num_classes)), emits_features=False)
    return EarlyExitNet([seg0, seg1], 'blenet', input_shape, num_classes)


def resnet_ee(num_classes: int = 10, input_shape: tuple = (28, 28, 1),
              widths: Sequence[int] = (16, 32, 48, 96), stem: str = 'conv',
              final_blocks: int = 2) -> EarlyExitNet:
    """
    Residual early-exit net for 28-32 px: a cheap first exit, a middle one, the final one.

    ``stem='conv'`` starts with a 3x3 convolution at full resolution; ``stem='patch'`` with
    a 2x2 stride-2 convolution (patchify). The patch stem matters on CPUs: a convolution
    with one or two input channels at full resolution runs at a few GMAC/s in LiteRT
    (XNNPACK's kernels work on channel blocks), which made the first segment as slow as
    the rest of the network; at half resolution it costs a quarter of that.
    """
    if stem not in ('conv', 'patch'):
        raise ValueError(f"stem must be 'conv' or 'patch', got {stem!r}")
    w0, w1, w2, w3 = widths
    first = conv_bn(input_shape[2], w0) if stem == 'conv' else conv_bn(input_shape[2], w0, 2, 2)
    second = conv_bn(w0, w1, 3, 2) if stem == 'conv' else conv_bn(w0, w1)
    seg0 = Segment(nn.Sequential(first, second), pooled_head(w1, num_classes, conv=w1, stride=2))
    seg1 = Segment(BasicBlock(w1, w2), pooled_head(w2, num_classes, conv=w2, stride=2))
    seg2 = Segment(nn.Sequential(BasicBlock(w2, w3, 2),
                                 *(BasicBlock(w3, w3) for _ in range(final_blocks - 1))),
                   pooled_head(w3, num_classes), emits_features=False)
    return EarlyExitNet([seg0, seg1, seg2], 'resnet_ee', input_shape, num_classes)


# MobileNetV2 stages: expansion, output channels, repeats, first stride (Sandler et al. 2018).
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``width`` and rounded to a multiple of 8, as MobileNetV2 does."""
    scaled = max(8, int(channels * width + 4) // 8 * 8)
    return scaled + 8 if scaled < 0.9 * channels * width else scaled


def mobilenetv2_ee(num_classes: int = 10, input_shape: tuple = (96, 96, 3), width: float = 1.0,
                   exits_after: Sequence[int] = (2, 4)) -> EarlyExitNet:
    """
    MobileNetV2 with an exit after the stages listed in ``exits_after`` and at the end.

    Each exit ends a segment; the stem joins the first segment, the 1x1 head conv the last.
    """
    cin = _scaled(32, width)
    blocks: list[list[nn.Module]] = [[conv_bn(input_shape[2], cin, 3, 2, act=nn.ReLU6)]]
    channels = []
    for stage, (t, c, n, s) in enumerate(MOBILENETV2_STAGES):
        cout = _scaled(c, width)
        for i in range(n):
            blocks[-1].append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
        channels.append(cout)
        if stage in exits_after:
            blocks.append([])
    last = _scaled(1280, max(1.0, width))
    blocks[-1].append(conv_bn(cin, last, 1, act=nn.ReLU6))
    segments = [Segment(nn.Sequential(*b), pooled_head(ch, num_classes))
                for b, ch in zip(blocks[:-1], (channels[i] for i in exits_after))]
    segments.append(Segment(nn.Sequential(*blocks[-1]),
                            nn.Sequential(NHWCMean(), nn.Dropout(0.2),
                                          nn.Linear(last, num_classes)),
                            emits_features=False))
    return EarlyExitNet(segments, 'mobilenetv2_ee', input_shape, num_classes)


ARCHITECTURES: dict[str, Callable[..., EarlyExitNet]] = {
    'blenet': blenet,
    'resnet_ee': resnet_ee,
    'mobilenetv2_ee': mobilenetv2_ee,
}


def _materialise(net: EarlyExitNet) -> EarlyExitNet:
    """Run one dummy frame so lazy layers get their shapes (needed before saving/pruning)."""
    h, w, c = net.input_shape
    with torch.no_grad():
        net.eval()(torch.zeros(1, c, h, w))
    return net


def build_network(arch: str, num_classes: int, input_shape: tuple[int, int, int],
                  **options) -> EarlyExitNet:
    """Build an architecture by name, with every lazy layer materialised."""
    if arch not in ARCHITECTURES:
        raise ValueError(f'unknown architecture {arch!r}; known: {", ".join(ARCHITECTURES)}')
    return _materialise(ARCHITECTURES[arch](num_classes=num_classes, input_shape=input_shape,
                                            **options))
