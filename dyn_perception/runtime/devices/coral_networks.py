"""
Coral's benchmark networks as layer lists, with the latencies Coral publishes for them.

The Edge TPU timing model is calibrated on a few rows of Coral's table and tested on the
others; their int8 graphs are not available here (no TensorFlow, two shared cores), so each
architecture is written from its paper or reference implementation with :class:`LayerBuilder`
(weights never matter for timing). Rows are split once: ``CALIBRATION`` may be fitted on,
``HELD_OUT`` never is (it is the test of the model).

Sources of the published figures (ms per inference, batch 1):
- ``coral.ai/docs/edgetpu/benchmarks``, table 1: columns "Desktop CPU + USB Accelerator
  (USB 3.0) with Edge TPU" (``usb``) and "Dev Board with Edge TPU" (``pcie``: the Dev Board's
  Edge TPU sits on PCIe). Its SSD rows are labelled 224x224; the Coral SSD models are 300x300
  (coral.ai/models/object-detection gives 6.5 and 7.3 ms for them at 300x300, the table's
  6.5 and 7.2), so they are built at 300.
- ``coral.ai/models/all`` (one latency per model, on the USB Accelerator): the held-out rows
  the table lacks (Inception v3 at 299, MobileNet v1 0.25 at 128) and EfficientNet-L, whose
  table row is cut off in every stored copy of the page. The page's Inception v3 at 224
  (12.0 MB, half the 299 model's 23.9 MB) is another network than the one built here, so it
  is left out.
The table has no Inception v2 row, so it is neither fitted on nor tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Callable, Optional

from dyn_perception.runtime.devices.layers import LayerBuilder, Network, Shape

CLASSES = 1001  # TF-slim and Coral's classifiers keep a background class


@dataclass(frozen=True)
class PublishedLatency:
    """One published row: the network builder and the latency per host link (None: absent)."""

    model: str
    build: Callable[[], Network]
    usb_ms: Optional[float]
    pcie_ms: Optional[float]
    source: str = 'coral.ai/docs/edgetpu/benchmarks'

    def published_ms(self, interface: str) -> Optional[float]:
        return self.usb_ms if interface == 'usb' else self.pcie_ms


def _classifier(b: LayerBuilder, name: str, size: int, pool: bool = True) -> Network:
    if pool:
        b.mean()
    b.fc(CLASSES)
    return b.network(name, size * size * 3, CLASSES)


def _channels(c: float, divisor: int = 8) -> int:
    """Round a scaled width as MobileNet and EfficientNet do (multiple of 8, at most -10%)."""
    rounded = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * c else rounded


def mobilenet_v1(size: int = 224, alpha: float = 1.0, head: bool = True) -> LayerBuilder:
    """Howard et al. 2017, table 1: a 3x3 stem and 13 depthwise-separable blocks."""
    b = LayerBuilder(size, size).conv(_channels(32 * alpha), 3, 2)
    for channels, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                             *([(512, 1)] * 5), (1024, 2), (1024, 1)):
        b.depthwise(3, stride).conv(_channels(channels * alpha))
    return b


def _inverted_residual(b: LayerBuilder, expand: int, channels: int, stride: int,
                       kernel: int = 3, fused: bool = False, skip: bool = True) -> None:
    """Add MobileNet v2's block; ``fused``: EfficientNet-EdgeTpu's k x k expansion instead."""
    start = b.shape
    hidden = start[2] * expand
    if fused:
        b.conv(hidden, kernel, stride)
    else:
        if expand != 1:
            b.conv(hidden)
        b.depthwise(kernel, stride)
    b.conv(channels)
    if skip and stride == 1 and start[2] == channels:
        b.vector('ADD')


MOBILENET_V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(size: int = 224, taps: Optional[list] = None) -> LayerBuilder:
    """Sandler et al. 2018, table 2; ``taps`` collects the 19x19 expansion SSD predicts from."""
    b = LayerBuilder(size, size).conv(32, 3, 2)
    for index, (expand, channels, repeats, stride) in enumerate(MOBILENET_V2_BLOCKS):
        for i in range(repeats):
            if taps is not None and index == 5 and i == 0:
                b.conv(b.shape[2] * expand)  # layer 15's expansion: SSD's first feature map
                taps.append(b.shape)
                b.depthwise(3, stride).conv(channels)
                continue
            _inverted_residual(b, expand, channels, stride if i == 0 else 1)
    return b.conv(1280)


def _branches(b: LayerBuilder, branches: list[Callable[[LayerBuilder], None]]) -> None:
    """Run each branch from the current shape and concatenate their outputs."""
    start, outs = b.shape, []
    for branch in branches:
        b.shape = start
        branch(b)
        outs.append(b.shape)
    b.concat(outs)


def _inception_v1_module(b: LayerBuilder, c1: int, r3: int, c3: int, r5: int, c5: int,
                         pool: int) -> None:
    _branches(b, [lambda x: x.conv(c1), lambda x: x.conv(r3).conv(c3, 3),
                  lambda x: x.conv(r5).conv(c5, 3),  # TF-slim's v1 uses 3x3 here
                  lambda x: x.pool(3, 1).conv(pool)])


def inception_v1(size: int = 224) -> Network:
    """Szegedy et al. 2015 (GoogLeNet) as in TF-slim's inception_v1, which Coral ships."""
    b = LayerBuilder(size, size).conv(64, 7, 2).pool(3, 2).conv(64).conv(192, 3).pool(3, 2)
    for spec in ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)):
        _inception_v1_module(b, *spec)
    b.pool(3, 2)
    for spec in ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                 (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                 (256, 160, 320, 32, 128, 128)):
        _inception_v1_module(b, *spec)
    b.pool(2, 2)
    for spec in ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)):
        _inception_v1_module(b, *spec)
    return _classifier(b, 'Inception v1', size)


def _bottleneck(b: LayerBuilder, width: int, stride: int, preact: bool) -> None:
    start = b.shape
    out = 4 * width
    if preact:
        b.vector('MUL')  # v2's pre-activation batch norm cannot fold into a convolution
    b.conv(width).conv(width, 3, stride).conv(out)
    if start[2] != out or stride != 1:
        end = b.shape
        b.shape = start
        b.conv(out, 1, stride)
        b.shape = end
    b.vector('ADD')


def resnet(depths: tuple[int, ...], size: int, preact: bool, name: str) -> Network:
    """He et al. 2016 bottleneck ResNets (v2: He et al., identity mappings)."""
    b = LayerBuilder(size, size).conv(64, 7, 2).pool(3, 2)
    for stage, repeats in enumerate(depths):
        for i in range(repeats):
            _bottleneck(b, 64 << stage, 2 if (i == 0 and stage > 0) else 1, preact)
    if preact:
        b.vector('MUL')
    return _classifier(b, name, size)


def vgg(depths: tuple[int, ...], name: str, size: int = 224) -> Network:
    """Simonyan and Zisserman 2015: 3x3 convolutions, five pools, three dense layers."""
    b = LayerBuilder(size, size)
    for stage, repeats in enumerate(depths):
        for _ in range(repeats):
            b.conv(min(64 << stage, 512), 3)
        b.pool(2, 2)
    b.fc(4096).fc(4096).fc(1000)
    return b.network(name, size * size * 3, 1000)


def _ssd(b: LayerBuilder, maps: list[Shape], name: str, size: int) -> Network:
    """
    Add SSD's extra feature maps and heads, as in the object detection API configs.

    Coral compiled those configs: 1x1 box predictors, 3 anchors on the first map and 6 on the
    others, 91 classes; extra feature maps halve in size with a 1x1 reduction and a strided
    3x3. Non-maximum suppression runs on the host.
    """
    for channels in (512, 256, 256, 128):
        b.conv(channels // 2).conv(channels, 3, 2)
        maps.append(b.shape)
    anchors = 0
    for i, shape in enumerate(maps):
        per_cell = 3 if i == 0 else 6
        anchors += shape[0] * shape[1] * per_cell
        for outputs in (4, 91):
            b.shape = shape
            b.conv(per_cell * outputs)
    b.shape = (1, anchors, 91)
    b.vector('LOGISTIC')
    scores = anchors * (91 + 4)
    b.host('TFLite_Detection_PostProcess', anchors * 91)
    return b.network(name, size * size * 3, scores)


def ssd_mobilenet_v1(size: int = 300) -> Network:
    b = LayerBuilder(size, size).conv(32, 3, 2)
    maps = []
    for i, (channels, stride) in enumerate(((64, 1), (128, 2), (128, 1), (256, 2), (256, 1),
                                            (512, 2), *([(512, 1)] * 5), (1024, 2),
                                            (1024, 1))):
        b.depthwise(3, stride).conv(channels)
        if i in (10, 12):
            maps.append(b.shape)
    return _ssd(b, maps, 'SSD MobileNet v1', size)


def ssd_mobilenet_v2(size: int = 300) -> Network:
    maps: list[Shape] = []
    b = mobilenet_v2(size, taps=maps)
    maps.append(b.shape)
    return _ssd(b, maps, 'SSD MobileNet v2', size)


def inception_v3(size: int = 299) -> Network:
    """Build Inception v3 (Szegedy et al. 2016) as TF-slim writes it, with a valid stem."""
    b = _stem_v3(size)
    for pool in (32, 64, 64):
        _branches(b, [lambda x: x.conv(64), lambda x: x.conv(48).conv(64, 5),
                      lambda x: x.conv(64).conv(96, 3).conv(96, 3),
                      lambda x, p=pool: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(p)])
    _branches(b, [lambda x: x.conv(384, 3, 2, valid=True),
                  lambda x: x.conv(64).conv(96, 3).conv(96, 3, 2, valid=True),
                  lambda x: x.pool(3, 2, valid=True)])
    for c in (128, 160, 160, 192):
        _branches(b, [lambda x: x.conv(192),
                      lambda x, c=c: x.conv(c).conv(c, (1, 7)).conv(192, (7, 1)),
                      lambda x, c=c: x.conv(c).conv(c, (7, 1)).conv(c, (1, 7)).conv(c, (7, 1))
                      .conv(192, (1, 7)),
                      lambda x: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(192)])
    _branches(b, [lambda x: x.conv(192).conv(320, 3, 2, valid=True),
                  lambda x: x.conv(192).conv(192, (1, 7)).conv(192, (7, 1))
                  .conv(192, 3, 2, valid=True),
                  lambda x: x.pool(3, 2, valid=True)])
    for _ in range(2):
        _branches(b, [lambda x: x.conv(320), lambda x: _pair(384)(x.conv(384)),
                      lambda x: _pair(384)(x.conv(448).conv(384, 3)),
                      lambda x: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(192)])
    return _classifier(b, f'Inception v3 ({size})', size)


def _stem_v3(size: int) -> LayerBuilder:
    """Build the valid-padded stem Inception v3 and Inception-ResNet v2 share (to 35x35)."""
    b = LayerBuilder(size, size).conv(32, 3, 2, valid=True).conv(32, 3, valid=True).conv(64, 3)
    return b.pool(3, 2, valid=True).conv(80, valid=True).conv(192, 3, valid=True).pool(
        3, 2, valid=True)


def _pair(c: int, kernel: int = 3) -> Callable[[LayerBuilder], None]:
    """Split into a 1xk and a kx1 convolution and concatenate them (Inception's last blocks)."""
    return lambda x: _branches(x, [lambda y: y.conv(c, (1, kernel)),
                                   lambda y: y.conv(c, (kernel, 1))])


def inception_v4(size: int = 299) -> Network:
    """Build Inception v4 (Szegedy et al. 2017) as TF-slim writes it."""
    b = LayerBuilder(size, size).conv(32, 3, 2, valid=True).conv(32, 3, valid=True).conv(64, 3)
    _branches(b, [lambda x: x.pool(3, 2, valid=True), lambda x: x.conv(96, 3, 2, valid=True)])
    _branches(b, [lambda x: x.conv(64).conv(96, 3, valid=True),
                  lambda x: x.conv(64).conv(64, (1, 7)).conv(64, (7, 1)).conv(96, 3, valid=True)])
    _branches(b, [lambda x: x.conv(192, 3, 2, valid=True), lambda x: x.pool(3, 2, valid=True)])
    for _ in range(4):
        _branches(b, [lambda x: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(96), lambda x: x.conv(96),
                      lambda x: x.conv(64).conv(96, 3),
                      lambda x: x.conv(64).conv(96, 3).conv(96, 3)])
    _branches(b, [lambda x: x.conv(384, 3, 2, valid=True),
                  lambda x: x.conv(192).conv(224, 3).conv(256, 3, 2, valid=True),
                  lambda x: x.pool(3, 2, valid=True)])
    for _ in range(7):
        _branches(b, [lambda x: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(128), lambda x: x.conv(384),
                      lambda x: x.conv(192).conv(224, (1, 7)).conv(256, (7, 1)),
                      lambda x: x.conv(192).conv(192, (7, 1)).conv(224, (1, 7))
                      .conv(224, (7, 1)).conv(256, (1, 7))])
    _branches(b, [lambda x: x.conv(192).conv(192, 3, 2, valid=True),
                  lambda x: x.conv(256).conv(256, (1, 7)).conv(320, (7, 1))
                  .conv(320, 3, 2, valid=True),
                  lambda x: x.pool(3, 2, valid=True)])
    for _ in range(3):
        _branches(b, [lambda x: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(256), lambda x: x.conv(256),
                      lambda x: _pair(256)(x.conv(384)),
                      lambda x: _pair(256)(x.conv(384).conv(448, (3, 1)).conv(512, (1, 3)))])
    return _classifier(b, 'Inception v4', size)


def _residual(b: LayerBuilder, branches: list[Callable[[LayerBuilder], None]]) -> None:
    """Add an Inception-ResNet block: branches, a 1x1 back to the width, scale, add."""
    channels = b.shape[2]
    _branches(b, branches)
    b.conv(channels).vector('MUL').vector('ADD')


def inception_resnet_v2(size: int = 299) -> Network:
    """Build Inception-ResNet v2 (Szegedy et al. 2017) as TF-slim writes it."""
    b = _stem_v3(size)
    _branches(b, [lambda x: x.conv(96), lambda x: x.conv(48).conv(64, 5),
                  lambda x: x.conv(64).conv(96, 3).conv(96, 3),
                  lambda x: x.pool(3, 1, 'AVERAGE_POOL_2D').conv(64)])
    for _ in range(10):
        _residual(b, [lambda x: x.conv(32), lambda x: x.conv(32).conv(32, 3),
                      lambda x: x.conv(32).conv(48, 3).conv(64, 3)])
    _branches(b, [lambda x: x.conv(384, 3, 2, valid=True),
                  lambda x: x.conv(256).conv(256, 3).conv(384, 3, 2, valid=True),
                  lambda x: x.pool(3, 2, valid=True)])
    for _ in range(20):
        _residual(b, [lambda x: x.conv(192),
                      lambda x: x.conv(128).conv(160, (1, 7)).conv(192, (7, 1))])
    _branches(b, [lambda x: x.conv(256).conv(384, 3, 2, valid=True),
                  lambda x: x.conv(256).conv(288, 3, 2, valid=True),
                  lambda x: x.conv(256).conv(288, 3).conv(320, 3, 2, valid=True),
                  lambda x: x.pool(3, 2, valid=True)])
    for _ in range(10):
        _residual(b, [lambda x: x.conv(192),
                      lambda x: x.conv(192).conv(224, (1, 3)).conv(256, (3, 1))])
    return _classifier(b.conv(1536), 'Inception-ResNet v2', size)


def densenet121(size: int = 224) -> Network:
    """Huang et al. 2017, DenseNet-121: growth 32, bottleneck 4x, compression 0.5."""
    b = LayerBuilder(size, size).conv(64, 7, 2).pool(3, 2)
    for block, layers in enumerate((6, 12, 24, 16)):
        for _ in range(layers):
            start = b.shape
            b.vector('MUL')  # pre-activation batch norm of the concatenated features
            b.conv(128).conv(32, 3)
            b.concat([start, b.shape])
        if block < 3:
            b.vector('MUL').conv(b.shape[2] // 2).pool(2, 2, 'AVERAGE_POOL_2D')
    return _classifier(b.vector('MUL'), 'DenseNet-121', size)


# EfficientNet-EdgeTpu (Gupta and Tan 2019; tensorflow/tpu efficientnet_edgetpu_builder):
# (repeats, kernel, stride, expansion, in, out, fused, skip); ReLU, no squeeze-excitation.
EDGETPU_BLOCKS = ((1, 3, 1, 4, 32, 24, True, False), (2, 3, 2, 8, 24, 32, True, True),
                  (4, 3, 2, 8, 32, 48, True, True), (5, 5, 2, 8, 48, 96, False, True),
                  (4, 5, 1, 8, 96, 144, False, True), (2, 5, 2, 8, 144, 192, False, True))


def efficientnet_edgetpu(width: float, depth: float, size: int, name: str) -> Network:
    b = LayerBuilder(size, size).conv(_channels(32 * width), 3, 2)
    for repeats, kernel, stride, expand, _, out, fused, skip in EDGETPU_BLOCKS:
        for i in range(int(ceil(repeats * depth))):
            _inverted_residual(b, expand, _channels(out * width), stride if i == 0 else 1,
                               kernel, fused, skip)
    b.conv(_channels(1280 * width))
    return _classifier(b, name, size)


def _mobilenet_classifier(size: int, alpha: float, name: str) -> Network:
    return _classifier(mobilenet_v1(size, alpha), name, size)


CALIBRATION = (
    PublishedLatency('MobileNet v1 (224)', lambda: _mobilenet_classifier(
        224, 1.0, 'MobileNet v1 (224)'), 2.4, 2.4),
    PublishedLatency('MobileNet v2 (224)', lambda: _classifier(
        mobilenet_v2(224), 'MobileNet v2 (224)', 224), 2.6, 2.6),
    PublishedLatency('Inception v1 (224)', inception_v1, 3.4, 4.1),
    PublishedLatency('ResNet-50 V1 (299)', lambda: resnet(
        (3, 4, 6, 3), 299, False, 'ResNet-50 V1 (299)'), 49.0, 56.0),
    PublishedLatency('ResNet-152 V2 (299)', lambda: resnet(
        (3, 8, 36, 3), 299, True, 'ResNet-152 V2 (299)'), 128.0, 151.0),
    PublishedLatency('VGG16 (224)', lambda: vgg((2, 2, 3, 3, 3), 'VGG16 (224)'), 296.0, 343.0),
    PublishedLatency('SSD MobileNet v1 (300)', ssd_mobilenet_v1, 6.5, 11.0),
    PublishedLatency('SSD MobileNet v2 (300)', ssd_mobilenet_v2, 7.2, 14.0),
)

HELD_OUT = (
    PublishedLatency('EfficientNet-EdgeTpu-S (224)', lambda: efficientnet_edgetpu(
        1.0, 1.0, 224, 'EfficientNet-EdgeTpu-S'), 5.1, 5.5),
    PublishedLatency('EfficientNet-EdgeTpu-M (240)', lambda: efficientnet_edgetpu(
        1.0, 1.1, 240, 'EfficientNet-EdgeTpu-M'), 8.7, 10.6),
    PublishedLatency('EfficientNet-EdgeTpu-L (300)', lambda: efficientnet_edgetpu(
        1.2, 1.4, 300, 'EfficientNet-EdgeTpu-L'), 21.3, None, 'coral.ai/models/all'),
    PublishedLatency('DenseNet-121 (224)', densenet121, 20.0, 25.0),
    PublishedLatency('Inception v3 (299)', lambda: inception_v3(299), 42.8, None,
                     'coral.ai/models/all'),
    PublishedLatency('Inception v4 (299)', inception_v4, 85.0, 102.0),
    PublishedLatency('Inception-ResNet v2 (299)', inception_resnet_v2, 57.0, 69.0),
    PublishedLatency('ResNet-50 V2 (299)', lambda: resnet(
        (3, 4, 6, 3), 299, True, 'ResNet-50 V2 (299)'), 50.0, 59.0),
    PublishedLatency('VGG19 (224)', lambda: vgg((2, 2, 4, 4, 4), 'VGG19 (224)'), 308.0, 357.0),
    PublishedLatency('MobileNet v1 0.25 (128)', lambda: _mobilenet_classifier(
        128, 0.25, 'MobileNet v1 0.25 (128)'), 0.9, None, 'coral.ai/models/all'),
)
