"""Checkpoints: one file per finished round, written atomically, verified on load.

:func:`save_state` and :func:`restore_state` hold everything a resumed run needs:
the round loop's memory, every random generator, the config's digest, the
method's revision and the length of each per-round file. A checkpoint is a
standard safetensors file (inspectable with any safetensors
tool) whose metadata holds the run's JSON state and a CRC32 over that state and
every tensor's bytes. It is written to a temporary name, flushed, fsynced and
renamed, so a crash mid-write leaves the previous checkpoint intact; the newest
:data:`KEEP` are kept, so a checkpoint damaged later (disk, user) still has a
predecessor to fall back to. Boolean tensors (masks) are stored as packed bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedmap.errors import CheckpointError
from fedmap.methods.revisions import method_revision, revision_mismatch
from fedmap.rounds.loop import RoundLoop
from fedmap.runs.config import Config, dump_toml
from fedmap.runs.run_dir import (
    ROUND_FILES,
    file_size,
    fsync_file,
    truncate_round_files,
    write_atomic,
)

DIRNAME = "checkpoints"
KEEP = 2
FORMAT = "fedmap-checkpoint-2"  # 2: "mask version" for "epoch"; state of the transport's clients


class CheckpointFormatError(CheckpointError):
    """A checkpoint written by a fedmap release whose format this one does not read."""


_NAME = re.compile(r"^round-(\d{6,})\.ckpt$")


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
    found = header.get("format", "")
    if found.startswith("fedmap-checkpoint-") and found != FORMAT:
        raise CheckpointFormatError(
            f"{path}: written by another fedmap release ({found}); this one reads {FORMAT}: "
            "start the run afresh"
        )
    if found != FORMAT or "state" not in header:
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
    """The newest checkpoint that verifies, and a message for each damaged newer one.

    A checkpoint of another release's format is not damage: it raises
    :class:`CheckpointFormatError` rather than being skipped, since falling back
    past it would silently restart a run that is intact.
    """
    problems: list[str] = []
    for path in list_checkpoints(run_dir):
        try:
            return load_checkpoint(path), problems
        except CheckpointFormatError:
            raise
        except CheckpointError as error:
            problems.append(str(error))
    return None, problems


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``*.damaged``: kept for inspection, never loaded again."""
    target = path.with_name(path.name + ".damaged")
    os.replace(path, target)
    return target


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


def config_digest(config: Config) -> str:
    """SHA-256 of the resolved config: a checkpoint only resumes the run it came from."""
    return hashlib.sha256(dump_toml(config).encode()).hexdigest()


def save_state(loop: RoundLoop, run_dir: Path, config: Config) -> Path:
    """Checkpoint ``loop`` after its last round, with every generator and each file's length."""
    for name in ROUND_FILES:  # on disk before a checkpoint vouches for their lengths
        fsync_file(run_dir / name)
    tensors, meta = loop.state_dict()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys).astype(np.int64))
    meta["numpy_random"] = [kind, int(pos), int(has_gauss), float(gauss)]
    meta["python_random"] = random.getstate()
    meta["offsets"] = {name: file_size(run_dir / name) for name in ROUND_FILES}
    meta["config_sha256"] = config_digest(config)
    meta["method_revision"] = method_revision(config.pruning.method)
    return save_checkpoint(run_dir, loop.round, tensors, meta)


def check_config(checkpoint: Checkpoint, config: Config, run_dir: Path) -> None:
    """Refuse a checkpoint written under another config or another revision of the method.

    An edited ``config.toml`` changes the digest; a code change to the method changes
    its revision (:mod:`fedmap.methods.revisions`), and finishing the run would mix the two.
    """
    if checkpoint.meta.get("config_sha256") != config_digest(config):
        raise CheckpointError(
            f"{checkpoint.path}: written by a different config than {run_dir / 'config.toml'}"
        )
    mismatch = revision_mismatch(config.pruning.method, checkpoint.meta)
    if mismatch is not None:
        raise CheckpointError(f"{checkpoint.path}: {mismatch}; start the run afresh")


def restore_state(loop: RoundLoop, checkpoint: Checkpoint, run_dir: Path, config: Config) -> None:
    """Put ``loop``, every generator and the per-round files back where ``checkpoint`` was."""
    meta, tensors = checkpoint.meta, checkpoint.tensors
    check_config(checkpoint, config, run_dir)
    loop.load_state_dict(tensors, meta)
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(
        (k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
    )
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, gauss = meta["numpy_random"]
    keys = tensors["rng.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))
    version, internal, gauss = meta["python_random"]
    random.setstate((version, tuple(internal), gauss))
    truncate_round_files(run_dir, meta["offsets"])
