"""Checkpoint files: round trip, atomic replacement, damage detection, fallback."""

import pytest
import torch

from fedmap.runs.checkpoint import (
    KEEP,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)


def state(seed=0):
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        "values": torch.randn(1000, generator=gen),
        "mask": torch.rand(1003, generator=gen) > 0.3,  # odd length: packed bits must not pad
        "rng": torch.get_rng_state(),
    }
    return tensors, {"round": 4, "nested": {"epochs": {"3": 1}}, "best": float("-inf")}


def test_round_trip_is_exact_including_bool_masks_and_infinities(tmp_path):
    tensors, meta = state()
    save_checkpoint(tmp_path, 4, tensors, meta)
    loaded = load_checkpoint(checkpoint_path(tmp_path, 4))
    assert loaded.round == 4 and loaded.meta == meta
    for name, tensor in tensors.items():
        assert loaded.tensors[name].dtype == tensor.dtype
        assert torch.equal(loaded.tensors[name], tensor)


def test_masks_are_stored_as_bits(tmp_path):
    mask = torch.ones(80_000, dtype=torch.bool)
    path = save_checkpoint(tmp_path, 1, {"mask": mask}, {})
    assert path.stat().st_size < 80_000 / 8 + 2_000


def test_only_the_newest_checkpoints_are_kept_and_no_temp_file_remains(tmp_path):
    tensors, meta = state()
    for rnd in range(1, 6):
        save_checkpoint(tmp_path, rnd, tensors, meta)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        f"round-{r:06d}.ckpt" for r in range(5, 5 - KEEP, -1)
    ]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("where", ["tensor", "header", "truncate", "empty"])
def test_any_damage_is_detected_and_named(tmp_path, where):
    tensors, meta = state()
    path = save_checkpoint(tmp_path, 3, tensors, meta)
    data = bytearray(path.read_bytes())
    if where == "tensor":
        data[-100] ^= 0x01  # one bit of a value
    elif where == "header":
        data[20] ^= 0xFF
    elif where == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"round-000003\.ckpt"):
        load_checkpoint(path)


def test_latest_falls_back_past_a_damaged_newest_checkpoint(tmp_path):
    tensors, meta = state()
    save_checkpoint(tmp_path, 6, tensors, meta)
    newest = save_checkpoint(tmp_path, 7, tensors, meta)
    newest.write_bytes(newest.read_bytes()[:-10] + b"0123456789")
    loaded, problems = load_latest(tmp_path)
    assert loaded is not None and loaded.round == 6
    assert len(problems) == 1 and "round-000007" in problems[0] and "checksum" in problems[0]


def test_no_checkpoint_at_all(tmp_path):
    assert load_latest(tmp_path) == (None, [])


def test_a_checkpoint_of_another_release_is_refused_not_skipped(tmp_path):
    """Falling back past it as if damaged would restart an intact run from round 1."""
    from safetensors.torch import save as save_safetensors

    from fedmap.runs.checkpoint import CheckpointFormatError, checkpoint_path

    tensors, meta = state()
    save_checkpoint(tmp_path, 6, tensors, meta)
    old = checkpoint_path(tmp_path, 7)
    old.write_bytes(
        save_safetensors({"x": torch.zeros(1)}, metadata={"format": "fedmap-checkpoint-1"})
    )
    with pytest.raises(CheckpointFormatError, match="fedmap-checkpoint-1.*start the run afresh"):
        load_latest(tmp_path)
