# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""Frame fitting and the folded normalise-and-quantise map."""

from dyn_perception.runtime.artifacts import InputSpec, TensorSpec
from dyn_perception.runtime.preprocess import fit_frame, to_int8_input
from dyn_perception.runtime.segment import dequantize, quantize, requantize
import numpy as np
import pytest

GREY28 = InputSpec(28, 28, 1, (0.286,), (0.353,))
TENSOR = TensorSpec('in', (1, 28, 28, 1), 0.025, 3)


def test_folded_quantisation_equals_normalise_then_quantise():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 28, 28, 1), dtype=np.uint8)
    normalised = (images / 255.0 - 0.286) / 0.353
    np.testing.assert_array_equal(to_int8_input(images, GREY28, TENSOR),
                                  quantize(normalised, TENSOR))


def test_camera_frame_is_fitted_to_the_network():
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    rgb[:, :320] = (255, 255, 255)
    fitted = fit_frame(rgb, GREY28)
    assert fitted.shape == (28, 28, 1) and fitted.dtype == np.uint8
    assert fitted[:, :13].min() == 255 and fitted[:, 15:].max() == 0
    colour = fit_frame(np.full((28, 28), 7, np.uint8), InputSpec(28, 28, 3, (0,) * 3, (1,) * 3))
    assert colour.shape == (28, 28, 3) and colour.max() == 7
    with pytest.raises(ValueError, match='H x W'):
        fit_frame(np.zeros((2, 3, 4, 5), np.uint8), GREY28)


def test_requantize_is_identity_for_equal_quantisation_and_exact_otherwise():
    q = np.arange(-128, 128, dtype=np.int8)
    same = TensorSpec('b', (256,), 0.025 * (1 + 1e-8), 3)
    assert requantize(q, TENSOR, same) is q
    coarser = TensorSpec('c', (256,), 0.05, 0)
    moved = requantize(q, TENSOR, coarser)
    assert np.abs(dequantize(moved, coarser) - dequantize(q, TENSOR)).max() <= 0.025 + 1e-6


def test_replayed_camera_frame_fits_back_to_the_original():
    from dyn_perception.runtime.frames import letterbox
    rng = np.random.default_rng(2)
    original = rng.integers(0, 256, size=(28, 28, 1), dtype=np.uint8)
    camera = letterbox(original, 640, 480)
    assert camera.shape == (480, 640, 3)
    back = fit_frame(camera, GREY28)
    assert np.abs(back.astype(int) - original.astype(int)).mean() < 12
