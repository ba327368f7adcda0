"""Checkpoints: one file per finished round, written atomically, verified on load.

A checkpoint is a standard safetensors file (inspectable with any safetensors
tool) whose metadata holds the run's JSON state and a CRC32 over that state and
every tensor's bytes. It is written to a temporary name, flushed, fsynced and
renamed, so a crash mid-write leaves the previous checkpoint intact; the newest
:data:`KEEP` are kept, so a checkpoint damaged later (disk, user) still has a
predecessor to fall back to. Boolean tensors (masks) are stored as packed bits.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedmap.errors import FedMapError

DIRNAME = "checkpoints"
KEEP = 2
FORMAT = "fedmap-checkpoint-1"
_NAME = re.compile(r"^round-(\d{6,})\.ckpt$")


class CheckpointError(FedMapError):
    """A checkpoint is missing, unreadable or fails its checksum."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the round it follows, its tensors and JSON state."""

    path: Path
    round: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def checkpoint_path(run_dir: Path, round: int) -> Path:
    """Where the checkpoint taken after ``round`` lives."""
    return run_dir / DIRNAME / f"round-{round:06d}.ckpt"


def save_checkpoint(
    run_dir: Path, round: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write the checkpoint for ``round`` atomically; keep only the newest :data:`KEEP`."""
    stored, packed = {}, {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype == torch.bool:
            packed[name] = tensor.numel()
            tensor = torch.from_numpy(np.packbits(tensor.numpy()))
        stored[name] = tensor
    state = json.dumps({"round": round, "packed_bool": packed, "meta": meta}, sort_keys=True)
    data = save_safetensors(
        stored, metadata={"format": FORMAT, "state": state, "crc32": str(_crc(state, stored))}
    )
    path = checkpoint_path(run_dir, round)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    for old in list_checkpoints(run_dir)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files in ``run_dir``, newest round first."""
    folder = run_dir / DIRNAME
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint; any damage raises :class:`CheckpointError`."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror})") from error
    try:
        stored = load_safetensors(data)
        header = _safetensors_metadata(data)
    except Exception as error:  # noqa: BLE001 - any parse failure means a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from error
    if header.get("format") != FORMAT or "state" not in header:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    state = header["state"]
    if str(_crc(state, stored)) != header.get("crc32"):
        raise CheckpointError(f"{path}: checksum mismatch (the file is damaged)")
    parsed = json.loads(state)
    tensors = {}
    for name, tensor in stored.items():
        if name in parsed["packed_bool"]:
            count = parsed["packed_bool"][name]
            tensor = torch.from_numpy(np.unpackbits(tensor.numpy(), count=count).astype(bool))
        tensors[name] = tensor
    return Checkpoint(path, int(parsed["round"]), tensors, parsed["meta"])


def load_latest(run_dir: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that verifies, and a message for each damaged newer one."""
    problems: list[str] = []
    for path in list_checkpoints(run_dir):
        try:
            return load_checkpoint(path), problems
        except CheckpointError as error:
            problems.append(str(error))
    return None, problems


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


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``*.damaged``: kept for inspection, never loaded again."""
    target = path.with_name(path.name + ".damaged")
    os.replace(path, target)
    return target


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


def _crc(state: str, tensors: dict[str, torch.Tensor]) -> int:
    crc = zlib.crc32(state.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode(), crc)
        crc = zlib.crc32(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes(), crc)
    return crc


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a table")
    return metadata
