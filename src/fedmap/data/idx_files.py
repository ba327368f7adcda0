"""Fashion-MNIST on disk: find, download and parse the four idx ``.gz`` files.

This module deals in files and numpy arrays only; :mod:`fedmap.data.datasets`
turns the arrays into a normalised :class:`~fedmap.data.datasets.Dataset`.
Keeping the file logic apart lets tests build tiny fake idx files and inject a
downloader, so no test ever touches the network.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedmap.errors import DataError

FASHION_MNIST_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist` "
    "or set data.path to a directory holding the idx .gz files"
)
DOWNLOAD_TIMEOUT_SECONDS = 10.0
_IDX_UBYTE = 0x08  # idx type code for unsigned bytes, the only one Fashion-MNIST uses

Downloader = Callable[[str, Path], None]
"""``downloader(url, destination)`` writes the bytes at ``url`` to ``destination``."""


def default_cache_dir() -> Path:
    """Return ``~/.cache/fedmap/fashion-mnist``, where downloaded copies are kept."""
    return Path.home() / ".cache" / "fedmap" / "fashion-mnist"


def missing_files(directory: Path) -> list[str]:
    """Return the Fashion-MNIST file names absent from ``directory`` (all four if it is absent)."""
    return [name for name in FASHION_MNIST_FILES.values() if not (directory / name).is_file()]


def find_fashion_mnist_dir(candidates: Sequence[Path]) -> Path | None:
    """Return the first directory in ``candidates`` that holds all four files, else ``None``.

    Why a list: the user's (or the Debian) directory comes first, the download
    cache second, so a copy fetched once is found again without the network.
    """
    for directory in candidates:
        if not missing_files(directory):
            return directory
    return None


def describe_missing(candidates: Sequence[Path]) -> str:
    """Build the one-line message for files found in none of ``candidates``.

    The message names every directory looked in and the install hint, because
    the user's fix is either to install the package or to point data.path at a copy.
    """
    looked = ", ".join(str(directory) for directory in candidates)
    first_missing = ", ".join(missing_files(candidates[0]))
    return (
        f"Fashion-MNIST not found: looked in {looked} "
        f"(missing in {candidates[0]}: {first_missing}); {FASHION_MNIST_HINT}"
    )


def fetch_url(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` atomically.

    The bytes go to a temporary file in the same directory, renamed into place
    only once complete, so an interrupted download never leaves a half-written
    file that a later run would try to parse.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
        ):
            out.write(response.read())
        os.replace(temp_name, destination)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def download_fashion_mnist(
    cache_dir: Path, candidates: Sequence[Path], downloader: Downloader
) -> Path:
    """Download the missing files into ``cache_dir`` and return it.

    Any failure (no network, timeout, HTTP error) becomes one :class:`DataError`
    naming the directories looked in and the install hint, since on offline
    machines the Debian package is the way to get the data.
    """
    for name in missing_files(cache_dir):
        try:
            downloader(FASHION_MNIST_URL + name, cache_dir / name)
        except Exception as error:  # any downloader failure means "not available"
            message = describe_missing(candidates)
            raise DataError(f"{message}; download of {name} failed: {error}") from error
    return cache_dir


def _read_gz(path: Path) -> bytes:
    """Return the decompressed bytes of ``path``, or raise DataError naming it."""
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read gzip idx file: {error}") from error


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse one gzip-compressed idx file of unsigned bytes into a uint8 array.

    The header is checked (magic number, number of dimensions, payload size)
    so that a truncated or wrong file fails here with its path, not later as a
    shape error deep inside training.

    Parameters
    ----------
    path
        The ``.gz`` file.
    ndim
        Expected number of dimensions: 3 for images, 1 for labels.

    Returns
    -------
    numpy.ndarray
        uint8 array of the shape the header gives.
    """
    data = _read_gz(path)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: idx file too short ({len(data)} bytes) for its header")
    magic = int.from_bytes(data[:4], "big")
    expected_magic = (_IDX_UBYTE << 8) | ndim
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad idx magic number: expected {expected_magic:#010x}, got {magic:#010x}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected_bytes = int(np.prod(shape, dtype=np.int64))
    if len(data) - header_size != expected_bytes:
        raise DataError(
            f"{path}: idx payload has {len(data) - header_size} bytes, "
            f"header shape {shape} needs {expected_bytes}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_fashion_mnist(directory: Path) -> dict[str, np.ndarray]:
    """Read the four files in ``directory`` and check they agree with each other.

    Returns
    -------
    dict[str, numpy.ndarray]
        Keys ``x_train`` (N, 28, 28), ``y_train`` (N,), ``x_test``, ``y_test``; uint8.
    """
    arrays = {
        key: read_idx(directory / name, 3 if key.startswith("x") else 1)
        for key, name in FASHION_MNIST_FILES.items()
    }
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{directory / FASHION_MNIST_FILES['y_' + split]}: {y.shape[0]} labels "
                f"for {x.shape[0]} images in {FASHION_MNIST_FILES['x_' + split]}"
            )
        if y.size and int(y.max()) >= 10:
            raise DataError(
                f"{directory / FASHION_MNIST_FILES['y_' + split]}: label {int(y.max())} "
                "outside the 10 Fashion-MNIST classes"
            )
    return arrays
