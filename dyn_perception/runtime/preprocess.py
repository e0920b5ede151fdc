"""
Frames to the first segment's int8 input: resize, channel conversion, normalisation.

One function serves the camera path on the robot and the verification of exported models in
training, so what is verified offline is exactly what runs on line.
"""

from __future__ import annotations

from dyn_perception.runtime.artifacts import InputSpec, TensorSpec
import numpy as np

# ITU-R BT.601 luma weights, what OpenCV's RGB2GRAY uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def rgb_to_grey(image: np.ndarray) -> np.ndarray:
    """Convert RGB uint8 H x W x 3 to grey H x W x 1 with the BT.601 luma weights."""
    grey = np.asarray(image, dtype=np.float32) @ _LUMA
    return grey.round().clip(0, 255).astype(np.uint8)[..., None]


def fit_frame(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Bring an H x W x C uint8 frame (any size, grey or RGB) to the network's shape."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f'frame must be H x W x 1/3/4, got shape {frame.shape}')
    frame = frame[..., :3]
    if frame.shape[2] == 3 and spec.channels == 1:
        frame = rgb_to_grey(frame)
    elif frame.shape[2] == 1 and spec.channels == 3:
        frame = np.repeat(frame, 3, axis=2)
    if frame.shape[:2] != (spec.height, spec.width):
        import cv2  # resizing only; kept lazy so that callers with fitted frames need no OpenCV
        resized = cv2.resize(frame, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
        frame = resized.reshape(spec.height, spec.width, spec.channels)
    return frame


def to_int8_input(images: np.ndarray, spec: InputSpec, tensor: TensorSpec) -> np.ndarray:
    """
    uint8 N x H x W x C images (already fitted) to the quantised network input.

    Normalisation and quantisation fold into one affine map per channel:
    q = round(((p / 255 - mean) / std) / scale) + zero_point.
    """
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    gain = 1.0 / (255.0 * std * tensor.scale)
    offset = -mean / (std * tensor.scale) + tensor.zero_point
    q = np.rint(np.asarray(images, dtype=np.float32) * gain + offset)
    return np.clip(q, -128, 127).astype(np.int8)
