"""
Frames to the first segment's int8 input: resize, channel conversion, normalisation.

One function serves the camera path on the robot and the verification of exported models in
training, so what is verified offline is exactly what runs on line.
"""

from __future__ import annotations

from dyn_perception.runtime.artifacts import InputSpec, TensorSpec
import numpy as np


def rgb_to_grey(image: np.ndarray) -> np.ndarray:
    """Convert RGB uint8 H x W x 3 to grey H x W x 1 with the BT.601 luma weights."""
    import cv2  # its SIMD conversion is ~10x NumPy's on a camera frame
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return grey.reshape(image.shape[0], image.shape[1], 1)


def center_crop(frame: np.ndarray, aspect: float, height: int = 0) -> np.ndarray:
    """Cut the centred window of ``aspect`` (width / height), ``height`` rows or the most."""
    h, w = frame.shape[:2]
    rows = min(height or h, h, int(w / aspect))
    cols = min(w, max(1, round(rows * aspect)))
    top, left = (h - rows) // 2, (w - cols) // 2
    return frame[top:top + rows, left:left + cols]


def fit_frame(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """
    Bring an H x W x C uint8 frame (any size, grey or RGB) to the network's shape.

    The frame is centre-cropped to the network's aspect ratio first, as classifiers are
    evaluated, so a 4:3 camera frame around a square subject is not squashed.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f'frame must be H x W x 1/3/4, got shape {frame.shape}')
    # Crop, go grey, then shrink: each step leaves less for the next. The crop also trims the
    # frame to a whole multiple of the network size, where OpenCV's area interpolation takes
    # its fast path (non-integer factors cost it 4-10x more).
    frame = center_crop(frame[..., :3], spec.width / spec.height)
    factor = min(frame.shape[0] // spec.height, frame.shape[1] // spec.width)
    if factor > 1:
        frame = center_crop(frame, spec.width / spec.height, factor * spec.height)
    if frame.shape[2] == 3 and spec.channels == 1:
        frame = rgb_to_grey(frame)
    if frame.shape[:2] != (spec.height, spec.width):
        import cv2  # resizing only; kept lazy so that callers with fitted frames need no OpenCV
        resized = cv2.resize(np.ascontiguousarray(frame), (spec.width, spec.height),
                             interpolation=cv2.INTER_AREA)
        frame = resized.reshape(spec.height, spec.width, frame.shape[2])
    if frame.shape[2] == 1 and spec.channels == 3:
        frame = np.repeat(frame, 3, axis=2)
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
