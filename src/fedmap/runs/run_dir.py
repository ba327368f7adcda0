"""The run directory: its files, written so that a reader never sees half of one.

``config.toml`` is written when the run is created, the per-round files
(:data:`ROUND_FILES`) grow by one round at a time, and ``client_accuracy.csv``,
``model.safetensors`` and ``summary.json`` are written atomically at the end
(``summary.json`` last: its presence means the run finished). A checkpoint
records each per-round file's length, so a resumed run cuts them back to it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fedmap.errors import CheckpointError, ConfigError
from fedmap.runs.config import Config, dump_toml

# Files that grow by one round at a time; a checkpoint records their lengths.
ROUND_FILES = ("metrics.jsonl", "metrics.csv", "ledger.csv", "events.jsonl")


def create_run_dir(config: Config, out: Path) -> Path:
    """Create ``out`` (refusing a non-empty one) and write the resolved config."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: directory {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(dump_toml(config))
    return out


def truncate_round_files(run_dir: Path, offsets: dict[str, int]) -> None:
    """Cut each per-round file back to ``offsets`` (0: remove it): drop rounds past a checkpoint."""
    for name in ROUND_FILES:
        path, size = run_dir / name, int(offsets.get(name, 0))
        if size == 0:
            path.unlink(missing_ok=True)
            continue
        if file_size(path) < size:
            raise CheckpointError(f"{path} is shorter than its checkpoint says: it was truncated")
        with path.open("r+b") as handle:
            handle.truncate(size)


def write_client_accuracy(path: Path, accuracy: torch.Tensor) -> None:
    """The final model's accuracy on each client's local test split (the stability claim)."""
    lines = ["client,accuracy"] + [f"{i},{float(a):.6f}" for i, a in enumerate(accuracy)]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def file_size(path: Path) -> int:
    """Bytes in ``path`` (0 when it does not exist)."""
    return path.stat().st_size if path.exists() else 0


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """Push ``path``'s written data to disk (before a checkpoint records its length)."""
    if not path.exists():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
