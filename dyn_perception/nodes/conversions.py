"""
``sensor_msgs/Image`` <-> NumPy, refusing malformed messages with a reason.

A camera driver can send a wrong encoding, a step that does not match the width, or a
truncated buffer; the perception node must count and log such frames and carry on.
"""

from __future__ import annotations

from dyn_perception.runtime.preprocess import rgb_to_grey
import numpy as np
from sensor_msgs.msg import Image

CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1}


def image_to_rgb(msg: Image) -> np.ndarray:
    """Return the image as RGB (or grey, for mono8) uint8 H x W x C; ValueError if malformed."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(f'unsupported encoding {msg.encoding!r} '
                         f'(supported: {", ".join(CHANNELS)})')
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f'empty image {msg.width}x{msg.height}')
    if msg.step < msg.width * channels:
        raise ValueError(f'step {msg.step} is smaller than width {msg.width} x {channels} bytes')
    if len(msg.data) != msg.step * msg.height:
        raise ValueError(f'data holds {len(msg.data)} bytes, expected step {msg.step} x '
                         f'height {msg.height} = {msg.step * msg.height}')
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
