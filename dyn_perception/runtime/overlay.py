"""The annotated frame the perception node publishes on ``~/overlay``."""

from __future__ import annotations

import numpy as np

GREEN, RED, WHITE = (40, 200, 40), (220, 40, 40), (255, 255, 255)


def annotate(image: np.ndarray, record: dict) -> np.ndarray:
    """Return an RGB copy of ``image`` with the label, score, exit and mode written on it."""
    import cv2
    frame = np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)
    frame = frame.copy()
    if record['status'] == 'ok':
        colour = WHITE if record['correct'] is None else GREEN if record['correct'] else RED
        lines = [f'{record["label"]} {100 * record["score"]:.0f}%',
                 f'exit {record["exit"] + 1}/{record["exits"]}  {record["mode"]}',
                 f'{record["inference_ms"]:.2f} ms  {1e3 * record["energy_j"]:.2f} mJ']
    else:
        colour, lines = RED, [record['status'], record['error'] or '']
    scale = max(0.4, frame.shape[0] / 600)
    for i, line in enumerate(lines):
        origin = (8, int((i + 1) * 28 * scale))
        cv2.putText(frame, line, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(frame, line, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return frame
