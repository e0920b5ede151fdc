"""
Frame sources for the camera node: V4L2 device, video file, image folder, data-set replay.

Every source yields RGB uint8 frames (H x W x 3) and, for the replay, the true class of each
frame, so the perception node can measure accuracy live. OpenCV is imported lazily, only by
the sources that read devices or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from dyn_perception.runtime.datasets import IMAGE_SUFFIXES, load_dataset
import numpy as np

SOURCES = ('replay', 'v4l2', 'video', 'folder')


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # RGB uint8, H x W x 3
    class_id: Optional[int] = None


def letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale a grey or RGB image into width x height RGB, keeping its aspect; pad with black."""
    import cv2
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[top:top + h, left:left + w] = resized
    return canvas


def replay_frames(dataset: str, width: int, height: int, seed: int = 0,
                  loop: bool = True) -> Iterator[Frame]:
    """Test-split images of ``dataset`` upscaled to camera size, in a seeded order, with labels."""
    test = load_dataset(dataset).test
    rng = np.random.default_rng(seed)
    while True:
        for i in rng.permutation(len(test)):
            yield Frame(letterbox(test.images[i], width, height), int(test.labels[i]))
        if not loop:
            return


def capture_frames(uri: str, width: int, height: int, loop: bool = True) -> Iterator[Frame]:
    """Frames from a V4L2 device (a number or /dev/videoN) or a video file, as RGB."""
    import cv2
    device = int(uri) if uri.isdigit() else uri
    while True:
        capture = cv2.VideoCapture(device)
        if not capture.isOpened():
            raise ValueError(f'cannot open video source {uri!r}')
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield Frame(letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height))
        finally:
            capture.release()
        if not loop or isinstance(device, int):
            return


def folder_frames(folder: str, width: int, height: int, loop: bool = True) -> Iterator[Frame]:
    """Every image below ``folder`` in sorted order, as RGB frames."""
    import cv2
    paths = sorted(p for p in Path(folder).rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {folder!r}')
    while True:
        for path in paths:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                yield Frame(letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), width, height))
        if not loop:
            return


def open_source(kind: str, uri: str, width: int, height: int, dataset: str,
                loop: bool = True, seed: int = 0) -> Iterator[Frame]:
    """Open a frame source by kind; ``uri`` is the device, file or folder (unused by replay)."""
    if kind == 'replay':
        return replay_frames(dataset, width, height, seed, loop)
    if kind in ('v4l2', 'video'):
        return capture_frames(uri, width, height, loop)
    if kind == 'folder':
        return folder_frames(uri, width, height, loop)
    raise ValueError(f'unknown source {kind!r}; known: {", ".join(SOURCES)}')
