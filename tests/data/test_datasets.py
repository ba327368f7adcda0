"""Tests for fedmap.data.datasets and its file readers; none touches the network."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmap.data import idx_files
from fedmap.data.datasets import (
    DATASET_NAMES,
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    Dataset,
    check_dataset_available,
    load_dataset,
    load_digits_dataset,
    load_fashion_mnist,
    load_npz,
    make_synthetic,
)
from fedmap.data.idx_files import FASHION_MNIST_FILES, read_idx
from fedmap.errors import ConfigError, DataError


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write a uint8 array as a gzip idx file (magic 0x0000 08 ndim unless given)."""
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def write_fake_fashion(directory: Path, num_train: int = 6, num_test: int = 4) -> dict:
    """Build four tiny idx files; return the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(num_train, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(num_test, dtype=np.uint8) % 10,
    }
    for key, name in FASHION_MNIST_FILES.items():
        write_idx(directory / name, arrays[key])
    return arrays


def failing_downloader(url: str, destination: Path) -> None:
    raise OSError(f"network disabled in tests: {url}")


# ---- Fashion-MNIST -------------------------------------------------------------------


def test_fake_fashion_mnist_loads_and_normalises(tmp_path: Path) -> None:
    arrays = write_fake_fashion(tmp_path / "fm")
    data = load_fashion_mnist(str(tmp_path / "fm"), download=False, cache_dir=tmp_path / "cache")
    assert data.name == "fashion_mnist"
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_test.shape == (4, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    expected = (arrays["x_train"][0, 3, 5] / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert data.x_train[0, 0, 3, 5].item() == pytest.approx(expected, abs=1e-5)
    assert data.y_test.tolist() == [0, 1, 2, 3]


def test_fashion_mnist_found_in_cache_dir(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path / "cache")
    data = load_fashion_mnist(
        str(tmp_path / "absent"), cache_dir=tmp_path / "cache", downloader=failing_downloader
    )
    assert data.x_train.shape[0] == 6
    check_dataset_available("fashion_mnist", str(tmp_path / "absent"), cache_dir=tmp_path / "cache")


def test_fashion_mnist_download_writes_into_cache(tmp_path: Path) -> None:
    source = tmp_path / "server"
    write_fake_fashion(source)
    urls = []

    def fake_downloader(url: str, destination: Path) -> None:
        urls.append(url)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((source / url.rsplit("/", 1)[-1]).read_bytes())

    cache = tmp_path / "cache"
    data = load_fashion_mnist(str(tmp_path / "absent"), cache_dir=cache, downloader=fake_downloader)
    assert data.x_test.shape == (4, 1, 28, 28)
    assert sorted(urls) == sorted(
        idx_files.FASHION_MNIST_URL + n for n in FASHION_MNIST_FILES.values()
    )
    assert not idx_files.missing_files(cache)


def test_missing_fashion_mnist_without_download_names_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere") as info:
        load_fashion_mnist(str(missing), download=False, cache_dir=tmp_path / "cache")
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert "data.path" in str(info.value)


def test_failed_download_names_directory_and_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere") as info:
        load_fashion_mnist(
            str(tmp_path / "nowhere"), cache_dir=tmp_path / "cache", downloader=failing_downloader
        )
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert "network disabled" in str(info.value)


def test_check_available_fashion_missing_names_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere") as info:
        check_dataset_available("fashion_mnist", str(tmp_path / "nowhere"), cache_dir=tmp_path)
    assert "dataset-fashion-mnist" in str(info.value)


def test_bad_magic_raises_data_error_naming_file(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    bad = tmp_path / FASHION_MNIST_FILES["x_train"]
    write_idx(bad, np.zeros((6, 28, 28), dtype=np.uint8), magic=0x0000_0903)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*magic"):
        load_fashion_mnist(str(tmp_path), download=False, cache_dir=tmp_path / "c")


def test_truncated_payload_raises(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(struct.pack(">II", 0x0801, 5) + bytes(3))
    with pytest.raises(DataError, match="labels.gz"):
        read_idx(path, 1)


def test_not_gzip_raises(tmp_path: Path) -> None:
    path = tmp_path / "plain.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="plain.gz"):
        read_idx(path, 1)


def test_label_count_mismatch_raises(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path)
    write_idx(tmp_path / FASHION_MNIST_FILES["y_test"], np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="t10k-labels"):
        load_fashion_mnist(str(tmp_path), download=False, cache_dir=tmp_path / "c")


@pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_DIR, FASHION_MNIST_FILES["x_train"]).is_file(),
    reason="Debian dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist() -> None:
    data = load_fashion_mnist(download=False)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert sorted(torch.unique(data.y_train).tolist()) == list(range(10))
    assert abs(data.x_train.mean().item()) < 0.01 and abs(data.x_train.std().item() - 1) < 0.01


# ---- digits, synthetic, load_dataset -------------------------------------------------


def test_digits_shapes_and_stratified_split() -> None:
    data = load_digits_dataset(seed=3)
    assert data.x_train.shape[1:] == (1, 8, 8)
    assert data.x_train.shape[0] + data.x_test.shape[0] == 1797
    assert abs(data.x_test.shape[0] - 0.2 * 1797) <= 10
    train_share = torch.bincount(data.y_train, minlength=10) / data.y_train.numel()
    test_share = torch.bincount(data.y_test, minlength=10) / data.y_test.numel()
    assert torch.allclose(train_share, test_share, atol=0.01)
    assert abs(data.x_train.mean().item()) < 1e-4
    assert torch.equal(load_digits_dataset(seed=3).y_test, data.y_test)
    assert not torch.equal(load_digits_dataset(seed=4).y_test, data.y_test)


def test_synthetic_shapes_and_determinism() -> None:
    a = make_synthetic(5, num_train=40, num_test=10)
    b = make_synthetic(5, num_train=40, num_test=10)
    c = make_synthetic(6, num_train=40, num_test=10)
    assert a.x_train.shape == (40, 3, 32, 32) and a.x_test.shape == (10, 3, 32, 32)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert int(a.y_train.max()) < a.num_classes == 10


def test_synthetic_vectors_and_bad_args() -> None:
    data = make_synthetic(0, num_train=8, num_test=2, shape=(5,), num_classes=3)
    assert data.input_shape == (5,) and data.num_classes == 3
    with pytest.raises(ConfigError, match="num_train"):
        make_synthetic(0, num_train=0)
    with pytest.raises(ConfigError, match="shape"):
        make_synthetic(0, shape=(3, 0, 4))


def test_load_dataset_dispatch_and_unknown_name(tmp_path: Path) -> None:
    assert set(DATASET_NAMES) == {"fashion_mnist", "digits", "npz", "synthetic"}
    assert load_dataset("synthetic", seed=1).input_shape == (3, 32, 32)
    assert load_dataset("digits").input_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match="data.name"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="data.path"):
        load_dataset("npz")


def test_check_available_npz_and_builtin(tmp_path: Path) -> None:
    check_dataset_available("digits", None)
    check_dataset_available("synthetic", None)
    with pytest.raises(DataError, match="missing.npz"):
        check_dataset_available("npz", str(tmp_path / "missing.npz"))
    with pytest.raises(ConfigError, match="data.name"):
        check_dataset_available("mnist", None)


NO_SKLEARN_LINE = "data.name: 'digits' needs scikit-learn: pip install 'fedmap[digits]'"


def test_digits_without_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn is the optional ``digits`` extra: both the check and the loader say so."""
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if it were not installed
    with pytest.raises(DataError) as checked:
        check_dataset_available("digits", None)
    assert str(checked.value) == NO_SKLEARN_LINE
    with pytest.raises(DataError) as loaded:
        load_dataset("digits")
    assert str(loaded.value) == NO_SKLEARN_LINE
    check_dataset_available("synthetic", None)  # the other datasets do not need it


def test_dataset_rejects_mismatched_lengths() -> None:
    x, y = torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(DataError, match="x_train"):
        Dataset("bad", x, y, x, torch.zeros(3, dtype=torch.int64), 2)


# ---- npz -----------------------------------------------------------------------------


def save_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_round_trip_hwc_to_chw(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 6, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    x_test = rng.integers(0, 256, (7, 6, 5, 3), dtype=np.uint8)
    y_train, y_test = np.arange(20) % 4, np.arange(7) % 3
    path = save_npz(
        tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
    data = load_npz(path)
    assert data.x_train.shape == (20, 3, 6, 5) and data.x_test.shape == (7, 3, 6, 5)
    assert data.num_classes == 4 and data.y_train.tolist() == y_train.tolist()
    scaled = x_train.astype(np.float64) / 255.0
    mean, std = scaled[..., 1].mean(), scaled[..., 1].std()
    expected = (scaled[2, 4, 3, 1] - mean) / std  # sample 2, channel 1, row 4, column 3
    assert data.x_train[2, 1, 4, 3].item() == pytest.approx(expected, abs=1e-4)
    per_channel = data.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-5)


def test_npz_grayscale_and_vectors(tmp_path: Path) -> None:
    y = np.array([0, 1, 1])
    gray = save_npz(
        tmp_path / "g.npz",
        x_train=np.ones((3, 4, 4)),
        y_train=y,
        x_test=np.ones((3, 4, 4)),
        y_test=y,
    )
    assert load_npz(gray).input_shape == (1, 4, 4)
    vec = save_npz(tmp_path / "v.npz", x_train=np.eye(3), y_train=y, x_test=np.eye(3), y_test=y)
    data = load_npz(vec)
    assert data.input_shape == (3,) and data.num_classes == 2
    assert load_dataset("npz", vec).name == "npz"


def test_npz_missing_key_names_key_and_path(tmp_path: Path) -> None:
    path = save_npz(
        tmp_path / "k.npz",
        x_train=np.ones((2, 3)),
        y_train=np.zeros(2, int),
        x_test=np.ones((2, 3)),
    )
    with pytest.raises(DataError, match=r"k\.npz.*y_test"):
        load_npz(path)


def test_npz_missing_file_and_not_npz(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="absent.npz"):
        load_npz(str(tmp_path / "absent.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(DataError, match="junk.npz"):
        load_npz(str(junk))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("y_train", np.array([0.0, 1.0]), "integers"),
        ("y_train", np.array([0, -1]), "negative"),
        ("y_train", np.array([0, 1, 1]), "rows"),
        ("x_test", np.ones((2, 4)), "sample shape"),
        ("x_train", np.array([[np.nan, 1, 1], [1, 1, 1]]), "NaN"),
    ],
)
def test_npz_malformed(tmp_path: Path, field: str, value: np.ndarray, message: str) -> None:
    arrays = {
        "x_train": np.ones((2, 3)),
        "y_train": np.array([0, 1]),
        "x_test": np.ones((2, 3)),
        "y_test": np.array([1, 0]),
    }
    arrays[field] = value
    with pytest.raises(DataError, match=message):
        load_npz(save_npz(tmp_path / "m.npz", **arrays))
