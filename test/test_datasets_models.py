# Copyright 2026 dyn_perception maintainers. Apache-2.0.
"""The other data sources (CIFAR-10 pickles, image folders) and every architecture's shapes."""

import pickle

import cv2
from dyn_perception.runtime.datasets import DatasetError, load_dataset
from dyn_perception.training.export import export_segments
from dyn_perception.training.models import ARCHITECTURES, build_network
from dyn_perception.training.tflite_ops import float_ops, list_ops
from dyn_perception.training.train import to_tensor
import numpy as np
import pytest
import torch


def test_cifar10_pickles_are_read_and_split(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in [(f'data_batch_{i}', 20) for i in range(1, 6)] + [('test_batch', 10)]:
        batch = {b'data': rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 b'labels': list(rng.integers(0, 10, count))}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    dataset = load_dataset('cifar10', tmp_path, val_fraction=0.2)
    assert dataset.image_shape == (32, 32, 3)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (80, 20, 10)
    assert len(dataset.mean) == 3 and all(0 < s for s in dataset.std)
    (tmp_path / 'test_batch').write_bytes(b'garbage')
    with pytest.raises(DatasetError, match='test_batch'):
        load_dataset('cifar10', tmp_path)
    with pytest.raises(DatasetError, match='--data-root'):
        load_dataset('cifar10')


def test_image_folder_with_train_and_test(tmp_path):
    for split, count in (('train', 6), ('test', 2)):
        for label in ('cat', 'dog'):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = np.full((40, 50, 3), 60 if label == 'cat' else 200, np.uint8)
                cv2.imwrite(str(folder / f'{i}.png'), image)
    dataset = load_dataset('image_folder', tmp_path, val_fraction=0.5, image_size=16,
                           channels=1)
    assert dataset.labels == ('cat', 'dog') and dataset.image_shape == (16, 16, 1)
    assert len(dataset.test) == 4 and len(dataset.train) + len(dataset.val) == 12
    with pytest.raises(DatasetError, match='unknown data set'):
        load_dataset('imagenet')


@pytest.mark.parametrize('arch, shape, options', [
    ('blenet', (28, 28, 1), {}),
    ('resnet_ee', (28, 28, 1), {}),
    ('resnet_ee', (32, 32, 3), {'stem': 'patch', 'widths': (8, 16, 24, 32)}),
    ('mobilenetv2_ee', (96, 96, 3), {'width': 0.35}),
])
def test_architectures_end_every_segment_chain_in_an_exit(arch, shape, options):
    net = build_network(arch, 7, shape, **options).eval()
    outputs = net(torch.zeros(2, shape[2], shape[0], shape[1]))
    assert len(outputs) == net.num_exits >= 2
    assert all(tuple(o.shape) == (2, 7) for o in outputs)
    assert not net.segments[-1].emits_features
    assert set(ARCHITECTURES) == {'blenet', 'resnet_ee', 'mobilenetv2_ee'}


@pytest.mark.parametrize('channels', [1, 3])
def test_training_batches_are_nchw_in_memory_not_channels_last(channels):
    # Channels-last batches send a pruned strided 1x1 convolution's weight gradient to
    # oneDNN's AVX2 kernel that corrupts the heap (uxlfoundation/oneDNN#6035; test_pruning's
    # recorded command aborted on an AVX2-only CPU before this).
    images = np.arange(2 * 4 * 4 * channels, dtype=np.uint8).reshape(2, 4, 4, channels)
    x = to_tensor(images, (0.5,) * channels, (0.25,) * channels)
    assert x.stride() == torch.empty(2, channels, 4, 4).stride()
    np.testing.assert_allclose(x.permute(0, 2, 3, 1).numpy(), (images / 255 - 0.5) / 0.25,
                               rtol=1e-6)


def test_mobilenet_segments_export_to_full_int8(tmp_path):
    torch.manual_seed(0)
    net = build_network('mobilenetv2_ee', 5, (64, 64, 3), width=0.35).eval()
    calibration = np.random.default_rng(0).normal(size=(16, 64, 64, 3)).astype(np.float32)
    specs = export_segments(net, calibration, tmp_path)
    assert len(specs) == net.num_exits
    for spec in specs:
        assert float_ops(tmp_path / spec.file) == []
        assert 'TRANSPOSE' not in {op.name for op in list_ops(tmp_path / spec.file)}
    with pytest.raises(ValueError, match='unknown architecture'):
        build_network('vgg', 10, (28, 28, 1))
