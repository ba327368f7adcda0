"""User datasets in ``.npz`` files: read, check and bring to the (N, C, H, W) layout.

This module deals in files and numpy arrays only; :mod:`fedmap.data.datasets`
standardises the arrays and wraps them in a :class:`~fedmap.data.datasets.Dataset`.
Every check raises :class:`DataError` naming the path and the key, because a
user's own file is the most likely place for a layout mistake.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmap.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read and check the four arrays of a dataset ``.npz``.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``x_train``/``x_test`` as float32 (N, D) or (N, C, H, W) (uint8 divided
        by 255), ``y_train``/``y_test`` as int64 (N,), non-negative.

    Raises
    ------
    DataError
        Missing or unreadable file, a missing key, wrong shapes or dtypes,
        non-finite inputs or negative labels; the message names path and key.
    """
    raw = _read_npz(path)
    arrays = {key: _npz_inputs(raw[key], path, key) for key in ("x_train", "x_test")}
    arrays.update({key: _npz_labels(raw[key], path, key) for key in ("y_train", "y_test")})
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{path}: x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"{path}: x_train sample shape {arrays['x_train'].shape[1:]} differs from "
            f"x_test sample shape {arrays['x_test'].shape[1:]}"
        )
    if arrays["x_train"].shape[0] == 0:
        raise DataError(f"{path}: x_train is empty")
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four arrays of an npz file (no pickles), or raise DataError naming path/key."""
    if not path.is_file():
        raise DataError(f"{path}: npz dataset file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: cannot read npz file: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive with keys {', '.join(NPZ_KEYS)}")
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            raise DataError(
                f"{path}: missing key(s) {', '.join(missing)}; expected {', '.join(NPZ_KEYS)}"
            )
        try:
            return {key: archive[key] for key in NPZ_KEYS}
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read npz file: {error}") from error


def _npz_inputs(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Bring one input array to float32 (N, D) or (N, C, H, W)."""
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{path}: {key} must have 2, 3 or 4 dimensions, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: {key} must be numeric, got dtype {x.dtype}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / np.float32(scale)
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {key} contains NaN or infinite values")
    return x


def _npz_labels(y: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Check labels are a 1-D array of non-negative integers and return them as int64."""
    if y.ndim != 1:
        raise DataError(f"{path}: {key} must be 1-D, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} must hold integers, got dtype {y.dtype}")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{path}: {key} has negative label {int(y.min())}")
    return y.astype(np.int64)
