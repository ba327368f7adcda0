"""Tests for fedmap.runs.export (model.safetensors) and the model a tiny FedMap run exports."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fedmap.core.layout import Layout
from fedmap.core.mask import Mask
from fedmap.errors import DataError
from fedmap.models import build_model
from fedmap.runs.config import load_config
from fedmap.runs.experiment import prepare
from fedmap.runs.export import load_model, save_model
from fedmap.runs.metrics import read_metrics
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import run

# --------------------------------------------------------------------------- hand-built model


def _layout() -> Layout:
    # numel = 8 + 2 + 24 = 34; prunable = 8 + 24 = 32
    return Layout(
        names=("conv.weight", "conv.bias", "fc.weight"),
        shapes=((2, 1, 2, 2), (2,), (3, 8)),
        prunable=(True, False, True),
    )


def _mask(layout: Layout) -> Mask:
    bits = torch.arange(layout.num_prunable) % 3 != 0  # prune prunable positions 0, 3, ..., 30
    return Mask.from_prunable_bits(layout, bits)


def _values(layout: Layout) -> torch.Tensor:
    # distinct, non-zero, both signs: -17.5 .. 16.5
    return torch.arange(layout.numel, dtype=torch.float32) - 17.5


def test_hand_built_layout_and_mask() -> None:
    layout = _layout()
    mask = _mask(layout)
    assert (layout.numel, layout.num_prunable) == (34, 32)
    assert mask.num_kept_prunable == 32 - 11
    assert mask.num_kept == 21 + 2
    assert mask.density == 21 / 32


def test_save_load_round_trip(tmp_path: Path) -> None:
    layout, path = _layout(), tmp_path / "model.safetensors"
    mask, values = _mask(layout), _values(layout)
    save_model(path, values, mask, {"mask_version": "3", "density": repr(mask.density)})

    state, loaded_mask, metadata = load_model(path)

    assert list(state) == list(layout.names)
    expected = layout.unflatten(torch.where(mask.flat, values, torch.zeros(())))
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        assert tuple(state[name].shape) == shape
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], expected[name]), name
    # pruned entries are exactly +0.0, kept ones the saved values
    flat = layout.flatten(state)
    assert torch.equal(flat[~mask.flat], torch.zeros(int((~mask.flat).sum())))
    assert not bool(torch.signbit(flat[~mask.flat]).any())
    assert torch.equal(flat[mask.flat], values[mask.flat])
    # the mask comes back bit for bit, with an equal layout
    assert loaded_mask.layout == layout
    assert loaded_mask.same_as(mask)
    assert loaded_mask.density == 21 / 32
    assert metadata["mask_version"] == "3"
    assert float(metadata["density"]) == 21 / 32
    assert json.loads(metadata["layout"])["names"] == list(layout.names)


def test_file_holds_packed_values_and_prunable_masks_only(tmp_path: Path) -> None:
    layout, path = _layout(), tmp_path / "model.safetensors"
    mask, values = _mask(layout), _values(layout)
    save_model(path, values, mask, {})
    tensors = load_file(str(path))
    assert set(tensors) == {"packed", "mask.conv.weight", "mask.fc.weight"}
    assert torch.equal(tensors["packed"], values[mask.flat])  # what the wire carries
    assert tensors["mask.conv.weight"].dtype == torch.bool
    assert tuple(tensors["mask.fc.weight"].shape) == (3, 8)
    assert not (tmp_path / "model.tmp").exists()  # the temporary file was renamed away


def test_dense_mask_round_trip(tmp_path: Path) -> None:
    layout, path = _layout(), tmp_path / "dense.safetensors"
    values = _values(layout)
    save_model(path, values, Mask.dense(layout), {})
    state, mask, _ = load_model(path)
    assert mask.density == 1.0
    assert torch.equal(layout.flatten(state), values)


def test_save_overwrites_an_existing_file(tmp_path: Path) -> None:
    layout, path = _layout(), tmp_path / "model.safetensors"
    save_model(path, _values(layout), Mask.dense(layout), {"mask_version": "0"})
    save_model(path, _values(layout), _mask(layout), {"epoch": "1"})
    _, mask, metadata = load_model(path)
    assert metadata["epoch"] == "1"
    assert mask.same_as(_mask(layout))


def test_garbage_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a safetensors file" * 4)
    with pytest.raises(DataError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_truncated_header_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(DataError):
        load_model(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(DataError) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_safetensors_without_layout_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(DataError, match="not a fedmap model file"):
        load_model(path)


def test_fedmap_file_missing_a_mask_tensor_is_a_data_error(tmp_path: Path) -> None:
    layout, path = _layout(), tmp_path / "model.safetensors"
    save_model(path, _values(layout), _mask(layout), {})
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as opened:  # keep the metadata ...
        metadata = opened.metadata()
    del tensors["mask.fc.weight"]  # ... but drop one mask tensor
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(DataError):
        load_model(path)


# --------------------------------------------------------------------------- a tiny FedMap run


def _run_tiny(tmp_path: Path, write_tiny: Callable[..., Path]) -> Path:
    cfg = load_config(write_tiny(rounds=4))
    experiment = prepare(cfg)
    run_dir = create_run_dir(cfg, tmp_path / "run")
    run(experiment, run_dir)
    return run_dir


def test_tiny_fedmap_run_density_and_exported_model(
    tmp_path: Path, write_tiny: Callable[..., Path]
) -> None:
    run_dir = _run_tiny(tmp_path, write_tiny)
    rows = read_metrics(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    num_prunable = summary["num_prunable"]
    # mlp on 8x8 digits: 64*200 + 200*200 + 200*10 prunable weights
    assert num_prunable == 64 * 200 + 200 * 200 + 200 * 10 == 54_800

    # density by hand: 1.0 (warm-up), then x0.8 per step; each step prunes
    # floor(0.2 * n + 0.5) of the n remaining weights, so allow one weight of slack
    densities = [row["density"] for row in rows]
    assert [row["round"] for row in rows] == [1, 2, 3, 4]
    assert densities == pytest.approx([1.0, 0.8, 0.64, 0.512], abs=1 / num_prunable)
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3]
    assert [row["pruned"] for row in rows] == [False, True, True, True]
    # exactly: 54800 -> 43840 -> 35072 -> 28058 kept
    assert [round(d * num_prunable) for d in densities] == [54_800, 43_840, 35_072, 28_058]
    assert densities[-1] == 28_058 / 54_800

    assert summary["final_density"] == densities[-1]
    assert summary["final_sparsity"] == pytest.approx(1 - densities[-1])
    assert summary["prune_steps"] == 3
    assert summary["rounds"] == 4

    state, mask, metadata = load_model(run_dir / "model.safetensors")
    assert float(metadata["density"]) == summary["final_density"]
    assert metadata["model"] == "mlp"
    assert metadata["dtype"] == "float32"
    assert mask.density == summary["final_density"]
    mask_tensors = {
        k: v
        for k, v in load_file(str(run_dir / "model.safetensors")).items()
        if k.startswith("mask.")
    }
    kept = sum(int(t.sum()) for t in mask_tensors.values())
    total = sum(t.numel() for t in mask_tensors.values())
    assert total == num_prunable
    assert kept / total == pytest.approx(summary["final_density"], abs=1e-12)
    assert mask.layout.numel == summary["num_parameters"]

    # pruned weights are exactly zero in the dense state
    flat = mask.layout.flatten(state)
    assert bool((flat[~mask.flat] == 0).all())

    # the exported weights reproduce the run's final test accuracy
    cfg = load_config(run_dir / "config.toml")
    experiment = prepare(cfg)
    model = build_model("mlp", experiment.dataset.input_shape, experiment.dataset.num_classes)
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(experiment.dataset.x_test)
    accuracy = float((logits.argmax(1) == experiment.dataset.y_test).float().mean())
    n_test = len(experiment.dataset.y_test)
    assert math.isclose(accuracy, summary["final_test_accuracy"], abs_tol=1.5 / n_test)
