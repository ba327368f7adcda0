"""Tests for the machine record in ``summary.json``: what a bit-for-bit rerun must match."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedmap.runs.config import load_config
from fedmap.runs.experiment import prepare
from fedmap.runs.machine import machine_info
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import run


def _run(tmp_path: Path, write_tiny: Callable[..., Path], name: str) -> Path:
    cfg = load_config(write_tiny(f"{name}.toml", seed=5, rounds=3))
    run_dir = create_run_dir(cfg, tmp_path / name)
    run(prepare(cfg), run_dir)
    return run_dir


def test_the_summary_names_the_cpu_kernels_and_threads_the_run_used(
    tmp_path: Path, write_tiny: Callable[..., Path]
) -> None:
    torch.set_num_threads(2)  # the autouse fixture restores it
    summary = json.loads((_run(tmp_path, write_tiny, "run") / "summary.json").read_text())
    machine = summary["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["torch_threads"] == 2
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert "gpu" not in machine  # a CPU run names no GPU


def test_a_cuda_device_is_named_by_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Fake GPU {device}")
    assert machine_info(torch.device("cuda:0"))["gpu"] == "Fake GPU cuda:0"
