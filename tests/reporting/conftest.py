"""Finished run directories written by hand: every file the report reads, a few rounds each."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIG = """\
seed = {seed}
rounds = {rounds}
device = "cpu"

[data]
name = "digits"
partition = "iid"

[pruning]
method = "{method}"
target_sparsity = {target}
warmup_rounds = {warmup}
"""


def write_run_dir(
    path: Path,
    method: str = "fedmap",
    seed: int = 0,
    target: float = 0.5,
    accuracy: tuple[float, ...] = (0.5, 0.6, 0.7),
    warmup: int = 1,
) -> Path:
    """A finished run: density 1 during the warm-up, then ``1 - target``; two clients."""
    rounds = len(accuracy)
    path.mkdir(parents=True)
    (path / "config.toml").write_text(
        CONFIG.format(seed=seed, rounds=rounds, method=method, target=target, warmup=warmup)
    )
    dense = method == "none"
    rows = [
        {
            "round": r + 1,
            "test_accuracy": acc,
            "test_loss": 2.0 - acc,
            "val_accuracy": acc + 0.01,
            "density": 1.0 if dense or r < warmup else 1.0 - target,
            "bytes_cum": 1000 * (r + 1),
            "rejected": int(r == 0),
        }
        for r, acc in enumerate(accuracy)
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {
        "method": method,
        "rounds": rounds,
        "final_test_accuracy": accuracy[-1],
        "best_test_accuracy": max(accuracy),
        "final_sparsity": 1.0 - rows[-1]["density"],
        "bytes_total": rows[-1]["bytes_cum"],
        "bytes_dense_fedavg": 1000 * rounds,
        "bytes_ratio_vs_dense": rows[-1]["bytes_cum"] / (1000 * rounds),
        "replies_rejected": 1,
        "wall_s": 1.5,
        "device": "cpu",
        "machine": {"cpu": "test cpu", "cpu_capability": "AVX2", "torch_threads": 1},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "client_accuracy.csv").write_text(f"client,accuracy\n0,{accuracy[-1]}\n1,0.25\n")
    (path / "partition.csv").write_text(
        "client,num_train,num_test,label_0,label_1\n0,3,1,1,2\n1,4,1,4,0\n"
    )
    (path / "ledger.csv").write_text(
        "round,client,direction,total\n1,1,down,9\n1,1,up,9\n2,0,up,9\n"
    )
    reason = "update norm 26 exceeds 18"
    (path / "events.jsonl").write_text(
        json.dumps({"round": 1, "attempt": 0, "client": 1, "kind": "rejected", "reason": reason})
        + "\n"
    )
    return path


@pytest.fixture
def write_run() -> Callable[..., Path]:
    """Return :func:`write_run_dir` (``write(path, method=, seed=, ...) -> path``)."""
    return write_run_dir


@pytest.fixture
def grid(tmp_path: Path) -> Callable[[], Path]:
    """Return ``make() -> folder``: dense FedAvg and FedMap, two seeds each, in one folder."""

    def make() -> Path:
        folder = tmp_path / "grid"
        for seed in (0, 1):
            write_run_dir(folder / f"none-seed{seed}", "none", seed, accuracy=(0.6, 0.7, 0.8))
            write_run_dir(folder / f"fedmap-seed{seed}", "fedmap", seed, accuracy=(0.6, 0.7, 0.75))
        return folder

    return make
