"""Datasets as plain, normalised tensors: Fashion-MNIST, digits, user ``.npz`` files, synthetic.

Every loader returns the same frozen :class:`Dataset`, already normalised, so
the models, engines and partitioners never need to know where data came from.
Randomness (the digits split, synthetic data) is derived from an explicit
``seed`` through a local :class:`numpy.random.Generator`, never from global state.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedmap.data.idx_files import (
    Downloader,
    default_cache_dir,
    describe_missing,
    download_fashion_mnist,
    fetch_url,
    find_fashion_mnist_dir,
    read_fashion_mnist,
)
from fedmap.data.npz_files import read_npz_arrays
from fedmap.errors import ConfigError, DataError

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATASET_NAMES = ("fashion_mnist", "digits", "npz", "synthetic")
NO_SCIKIT_LEARN = "data.name: 'digits' needs scikit-learn: pip install 'fedmap[digits]'"
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
SYNTHETIC_SIGNAL_NORM = 5.5  # norm of a class pattern; the noise has unit std per element
_MIN_STD = 1e-8  # a constant channel is centred but not divided by ~0


@dataclass(frozen=True)
class Dataset:
    """A train/test pair of normalised inputs and integer labels.

    Attributes
    ----------
    name
        Loader name (one of :data:`DATASET_NAMES`), kept for reports.
    x_train, x_test
        float32, (N, C, H, W) for images or (N, D) for vectors, normalised.
    y_train, y_test
        int64, (N,), values in ``[0, num_classes)``.
    num_classes
        Number of classes the model must output.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        """Reject inconsistent splits here, so that no caller sees a half-valid dataset."""
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0] or y.dim() != 1:
                raise DataError(
                    f"{self.name}: x_{split} has {x.shape[0]} rows but y_{split} "
                    f"has shape {tuple(y.shape)}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: x_train sample shape {tuple(self.x_train.shape[1:])} differs "
                f"from x_test sample shape {tuple(self.x_test.shape[1:])}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``x_train.shape[1:]``; models are built from it."""
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, path: str | None = None, *, seed: int = 0) -> Dataset:
    """Load a dataset by its config name (``data.name``), with ``data.path`` where it applies.

    ``path`` is the idx directory for ``fashion_mnist`` (default
    :data:`DEFAULT_FASHION_MNIST_DIR`), the file for ``npz`` (required) and is
    ignored for ``digits`` and ``synthetic``. ``seed`` drives the digits split
    and synthetic data.
    """
    _check_name(name)
    if name == "fashion_mnist":
        return load_fashion_mnist(path)
    if name == "digits":
        return load_digits_dataset(seed)
    if name == "npz":
        if path is None:
            raise ConfigError("data.path: expected a .npz file path for data.name='npz', got None")
        return load_npz(path)
    return make_synthetic(seed)


def check_dataset_available(
    name: str, path: str | None, *, cache_dir: str | Path | None = None
) -> None:
    """Fail fast, before a run directory exists, when the data cannot be found.

    Only existence is checked (no parsing), so config validation stays cheap.
    Fashion-MNIST counts as available when its four files are in ``path``
    (default :data:`DEFAULT_FASHION_MNIST_DIR`) or in the download cache.

    Raises
    ------
    ConfigError
        Unknown ``name``, or ``npz`` without a path.
    DataError
        The data is missing; the message names the path (and the install hint),
        or for ``digits`` the extra that brings scikit-learn.
    """
    _check_name(name)
    if name == "digits":
        _require_scikit_learn()
    elif name == "fashion_mnist":
        candidates = _fashion_candidates(path, cache_dir)
        if find_fashion_mnist_dir(candidates) is None:
            raise DataError(describe_missing(candidates))
    elif name == "npz":
        if path is None:
            raise ConfigError("data.path: expected a .npz file path for data.name='npz', got None")
        if not Path(path).is_file():
            raise DataError(f"{path}: npz dataset file not found (data.path)")


def load_fashion_mnist(
    path: str | None = None,
    *,
    download: bool = True,
    cache_dir: str | Path | None = None,
    downloader: Downloader | None = None,
) -> Dataset:
    """Load Fashion-MNIST (60k/10k, (N, 1, 28, 28)), scaled to [0, 1] then standardised.

    Files are looked for in ``path`` (default :data:`DEFAULT_FASHION_MNIST_DIR`),
    then in ``cache_dir`` (default ``~/.cache/fedmap/fashion-mnist``). Only when
    both lack them and ``download`` is true are they fetched into ``cache_dir``;
    ``downloader`` replaces the HTTP fetch (tests inject one that never touches
    the network).

    Raises
    ------
    DataError
        Files missing and not downloadable (names the directories and the
        install hint), or malformed (names the file).
    """
    candidates = _fashion_candidates(path, cache_dir)
    directory = find_fashion_mnist_dir(candidates)
    if directory is None:
        if not download:
            raise DataError(describe_missing(candidates))
        directory = download_fashion_mnist(candidates[-1], candidates, downloader or fetch_url)
    arrays = read_fashion_mnist(directory)
    return Dataset(
        name="fashion_mnist",
        x_train=_fashion_tensor(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=_fashion_tensor(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
    )


def load_digits_dataset(seed: int = 0) -> Dataset:
    """Load scikit-learn's 8x8 digits (1,797 images) as (N, 1, 8, 8): small enough for CI.

    Pixels (0..16) are divided by 16, then standardised with the train split's
    mean and std; the split is a stratified 80/20 one drawn from ``seed``, so
    every class appears in both halves in the same proportion.

    Raises
    ------
    DataError
        scikit-learn, an optional extra (``fedmap[digits]``), is not installed.
    """
    _require_scikit_learn()
    from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = _stratified_split(y, 0.2, np.random.default_rng(seed))
    return _standardised_dataset(
        "digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], num_classes=10
    )


def load_npz(path: str) -> Dataset:
    """Load a user's ``.npz`` with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    This is how real data the machine cannot download (CIFAR, SVHN, ...) gets in.
    Images (N, H, W) become (N, 1, H, W); (N, H, W, C) with C in {1, 3} and the
    second axis not in {1, 3} become (N, C, H, W); any other 4-D array is taken
    as (N, C, H, W) already; (N, D) vectors stay as they are. uint8 inputs are
    divided by 255. Inputs are then standardised per channel (per feature for
    vectors) with train-split statistics. ``num_classes`` is the largest label + 1.

    Raises
    ------
    DataError
        Missing or unreadable file, a missing key, or inconsistent shapes,
        non-integer or negative labels, non-finite inputs; the message names
        the path and the key.
    """
    arrays = read_npz_arrays(Path(path))
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    num_classes = int(max(y_train.max(), y_test.max(initial=0))) + 1
    return _standardised_dataset(
        "npz", arrays["x_train"], y_train, arrays["x_test"], y_test, num_classes
    )


def make_synthetic(
    seed: int = 0,
    *,
    num_train: int = 2000,
    num_test: int = 500,
    shape: tuple[int, ...] = (3, 32, 32),
    num_classes: int = 10,
) -> Dataset:
    """Generate learnable class-conditional data, to exercise 32x32x3 code paths offline.

    Each class has a random mean pattern; a sample is its class pattern plus
    unit Gaussian noise. For (C, H, W) shapes the pattern is drawn on a grid 4x
    coarser and upsampled, so it survives the pooling of a CNN. Patterns are
    scaled to norm about :data:`SYNTHETIC_SIGNAL_NORM` whatever the shape, so
    the task is equally hard for every shape: far below the noise per pixel (no
    pixel gives the label away) but clear in aggregate (a linear model on the
    default 3x32x32 data scores about 0.99 on test, chance being 0.1).
    Everything comes from ``numpy.random.default_rng(seed)``: same seed, same data.
    """
    _check_synthetic_args(num_train, num_test, shape, num_classes)
    rng = np.random.default_rng(seed)
    signal = SYNTHETIC_SIGNAL_NORM / math.sqrt(math.prod(shape))
    patterns = signal * _class_patterns(rng, num_classes, tuple(shape))  # (K, *shape)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, num_classes, size=count)
        noise = rng.standard_normal((count, *shape), dtype=np.float32)
        return patterns[labels] + noise, labels.astype(np.int64)

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)
    return _standardised_dataset("synthetic", x_train, y_train, x_test, y_test, num_classes)


def _check_name(name: str) -> None:
    """Raise ConfigError unless ``name`` is one of :data:`DATASET_NAMES`."""
    if name not in DATASET_NAMES:
        raise ConfigError(f"data.name: expected one of {', '.join(DATASET_NAMES)}, got {name!r}")


def _require_scikit_learn() -> None:
    """Raise DataError naming the extra when scikit-learn (the digits' source) is missing.

    Only the digits need it, so it is the ``digits`` extra, not a dependency; the
    module is looked up, not imported, to keep this check cheap.
    """
    if importlib.util.find_spec("sklearn") is None:
        raise DataError(NO_SCIKIT_LEARN)


def _fashion_candidates(path: str | None, cache_dir: str | Path | None) -> list[Path]:
    """Return the directories to search, in order: the given one, then the cache."""
    first = Path(path if path is not None else DEFAULT_FASHION_MNIST_DIR).expanduser()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return [first] if first == cache else [first, cache]


def _fashion_tensor(images: np.ndarray) -> torch.Tensor:
    """Scale uint8 (N, 28, 28) to [0, 1], standardise with the published statistics.

    Through a 256-entry table: the same float32 arithmetic per pixel value, done
    once per value instead of three passes over 47 M pixels (start-up time).
    """
    table = (np.arange(256, dtype=np.float32) / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    return torch.from_numpy(table.astype(np.float32)[images][:, None])  # (N, 1, 28, 28)


def _stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so each class puts round(test_fraction * its size) samples in test."""
    train_parts, test_parts = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_test = int(round(test_fraction * members.size))
        test_parts.append(members[:num_test])
        train_parts.append(members[num_test:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def _standardised_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
) -> Dataset:
    """Standardise with train statistics (per channel, or per feature for vectors).

    Test data uses the train mean and std, so no information leaks from test.
    """
    axes = (0,) if x_train.ndim == 2 else tuple(i for i in range(x_train.ndim) if i != 1)
    x_train = x_train.astype(np.float32)
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = np.maximum(x_train.std(axis=axes, keepdims=True, dtype=np.float64), _MIN_STD)

    def normalise(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - mean) / std).astype(np.float32))

    return Dataset(
        name=name,
        x_train=normalise(x_train),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=normalise(x_test.astype(np.float32)),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        num_classes=num_classes,
    )


def _class_patterns(
    rng: np.random.Generator, num_classes: int, shape: tuple[int, ...]
) -> np.ndarray:
    """Draw one standard-normal mean pattern per class, smooth for (C, H, W) shapes."""
    if len(shape) != 3:
        return rng.standard_normal((num_classes, *shape), dtype=np.float32)
    channels, height, width = shape
    coarse_h, coarse_w = -(-height // 4), -(-width // 4)  # ceil division
    coarse = rng.standard_normal((num_classes, channels, coarse_h, coarse_w), dtype=np.float32)
    fine = coarse.repeat(4, axis=2).repeat(4, axis=3)  # (K, C, 4*ch, 4*cw)
    return np.ascontiguousarray(fine[:, :, :height, :width])


def _check_synthetic_args(
    num_train: int, num_test: int, shape: tuple[int, ...], num_classes: int
) -> None:
    """Raise ConfigError naming the first bad argument of :func:`make_synthetic`."""
    checks = (
        ("num_train", num_train, 1),
        ("num_test", num_test, 0),
        ("num_classes", num_classes, 2),
    )
    for field, value, lowest in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ConfigError(
                f"make_synthetic.{field}: expected an integer >= {lowest}, got {value!r}"
            )
    dims = tuple(shape)
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ConfigError(
            f"make_synthetic.shape: expected a tuple of positive integers, got {shape!r}"
        )
