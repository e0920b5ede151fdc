"""
``sensor_msgs/Image`` <-> NumPy, refusing malformed messages with a reason.

A camera driver can send a wrong encoding, a step that does not match the width, or a
truncated buffer; the perception node must count and log such frames and carry on. Each
refusal has one of a few fixed kinds (``MALFORMED_KINDS``), so the counters the node reports
do not grow with the values a broken driver sends.
"""

from __future__ import annotations

from dyn_perception.runtime.preprocess import rgb_to_grey
import numpy as np
from sensor_msgs.msg import Image

CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}
MALFORMED_KINDS = ('encoding', 'empty', 'step', 'size')


class MalformedImage(ValueError):
    """An image message that cannot be read; ``kind`` is one of ``MALFORMED_KINDS``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def image_to_rgb(msg: Image) -> np.ndarray:
    """Return the image as RGB (or grey, for mono8) uint8 H x W x C; MalformedImage if not."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise MalformedImage('encoding', f'unsupported encoding {msg.encoding!r} '
                             f'(supported: {", ".join(CHANNELS)})')
    if msg.height == 0 or msg.width == 0:
        raise MalformedImage('empty', f'empty image {msg.width}x{msg.height}')
    if msg.step < msg.width * channels:
        raise MalformedImage('step', f'step {msg.step} is smaller than width {msg.width} x '
                             f'{channels} bytes')
    if len(msg.data) != msg.step * msg.height:
        raise MalformedImage('size', f'data holds {len(msg.data)} bytes, expected step '
                             f'{msg.step} x height {msg.height} = {msg.step * msg.height}')
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    image = rows[:, :msg.width * channels].reshape(msg.height, msg.width, channels)
    return image[..., ::-1] if msg.encoding == 'bgr8' else image


def rgb_to_image(image: np.ndarray, encoding: str = 'rgb8') -> Image:
    """Wrap an RGB uint8 H x W x 3 array in an Image of the given encoding (no header)."""
    if encoding not in CHANNELS:
        raise ValueError(f'unsupported encoding {encoding!r}')
    if encoding == 'bgr8':
        image = image[..., ::-1]
    elif encoding == 'mono8':
        image = rgb_to_grey(image)
    image = np.ascontiguousarray(image)
    msg = Image(height=image.shape[0], width=image.shape[1], encoding=encoding,
                is_bigendian=0, step=image.shape[1] * image.shape[2])
    msg.data = image.tobytes()
    return msg
