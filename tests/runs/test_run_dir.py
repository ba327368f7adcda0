"""Tests for the run directory: creation rules and bit-for-bit reproducible runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmap.errors import ConfigError
from fedmap.runs.config import Config, DataConfig, load_config
from fedmap.runs.experiment import prepare
from fedmap.runs.export import load_model
from fedmap.runs.metrics import COLUMNS, read_metrics
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import run

DESIGN_COLUMNS = (
    "round",
    "iteration",
    "density",
    "test_accuracy",
    "test_loss",
    "client_acc_mean",
    "client_acc_std",
    "client_acc_min",
    "bytes_up",
    "bytes_down",
    "bytes_cum",
    "wall_s",
)


def test_metrics_columns_start_with_the_design_names() -> None:
    assert COLUMNS[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS
    assert len(set(COLUMNS)) == len(COLUMNS)


# --------------------------------------------------------------------------- create_run_dir


def test_create_run_dir_makes_parents_and_writes_the_config(tmp_path: Path) -> None:
    config = Config(rounds=3, data=DataConfig(name="digits", num_clients=5))
    out = tmp_path / "a" / "b" / "run"
    assert create_run_dir(config, out) == out
    assert sorted(p.name for p in out.iterdir()) == ["config.toml"]
    assert load_config(out / "config.toml") == config


def test_create_run_dir_accepts_an_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    create_run_dir(Config(), out)
    assert (out / "config.toml").is_file()


def test_create_run_dir_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match=r"^--out: ") as info:
        create_run_dir(Config(), out)
    assert str(out) in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"


def test_create_run_dir_refuses_an_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "a_file"
    out.write_text("precious")
    with pytest.raises(ConfigError, match=r"^--out: ") as info:
        create_run_dir(Config(), out)
    assert str(out) in str(info.value)
    assert out.read_text() == "precious"


# --------------------------------------------------------------------------- reproducibility


def _run(tmp_path: Path, write_tiny: Callable[..., Path], name: str, seed: int) -> Path:
    cfg = load_config(write_tiny(f"{name}.toml", seed=seed, rounds=3))
    run_dir = create_run_dir(cfg, tmp_path / name)
    run(prepare(cfg), run_dir)
    return run_dir


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _without_wall(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


def test_same_seed_same_run_different_seed_different_run(
    tmp_path: Path, write_tiny: Callable[..., Path]
) -> None:
    first = _run(tmp_path, write_tiny, "first", seed=3)
    second = _run(tmp_path, write_tiny, "second", seed=3)
    other = _run(tmp_path, write_tiny, "other", seed=4)

    rows_a, rows_b = read_metrics(first), read_metrics(second)
    assert len(rows_a) == len(rows_b) == 3
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert list(row_a) == list(row_b) == list(COLUMNS)
        for column in COLUMNS:
            if column != "wall_s":
                assert _same(row_a[column], row_b[column]), (row_a["round"], column)
    # the CSV and the ledger agree byte for byte, wall_s aside
    assert (first / "ledger.csv").read_bytes() == (second / "ledger.csv").read_bytes()
    assert (first / "partition.csv").read_bytes() == (second / "partition.csv").read_bytes()
    # and so do the exported models
    state_a, mask_a, meta_a = load_model(first / "model.safetensors")
    state_b, mask_b, meta_b = load_model(second / "model.safetensors")
    assert mask_a.same_as(mask_b)
    assert meta_a == meta_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)

    rows_c = read_metrics(other)
    assert _without_wall(rows_c) != _without_wall(rows_a)
    assert [r["test_accuracy"] for r in rows_c] != [r["test_accuracy"] for r in rows_a]
    state_c, _, _ = load_model(other / "model.safetensors")
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)
