"""``summary.json``: the numbers a reader wants first, computed from the metrics rows."""

from __future__ import annotations

import math
import platform
from typing import Any

import torch

import fedmap
from fedmap.methods.revisions import method_revision
from fedmap.runs.experiment import Experiment
from fedmap.runs.machine import machine_info


def summarise(rows: list[dict[str, Any]], experiment: Experiment, wall_s: float) -> dict[str, Any]:
    """The numbers a reader wants first, from the metrics rows."""
    last = rows[-1]
    dense = sum(r["bytes_dense"] for r in rows)
    return {
        "method": experiment.config.pruning.method,
        "method_revision": method_revision(experiment.config.pruning.method),
        "rounds": last["round"],
        "final_density": last["density"],
        "final_sparsity": 1.0 - last["density"],
        "prune_steps": last["iteration"],
        "final_test_accuracy": last["test_accuracy"],
        "best_test_accuracy": max(r["test_accuracy"] for r in rows),
        "final_client_acc_mean": last["client_acc_mean"],
        "final_client_acc_std": last["client_acc_std"],
        "final_client_acc_min": last["client_acc_min"],
        "bytes_total": last["bytes_cum"],
        "bytes_dense_fedavg": dense,
        "bytes_ratio_vs_dense": last["bytes_cum"] / dense if dense else math.nan,
        "bytes_bitmap": sum(r["bytes_bitmap"] for r in rows),
        "bytes_coo": sum(r["bytes_coo"] for r in rows),
        "clients_sampled": sum(r["sampled"] for r in rows),
        "clients_answered": sum(r["answered"] for r in rows),
        "clients_dropped": sum(r["dropped"] for r in rows),
        "clients_late": sum(r["late"] for r in rows),
        "replies_rejected": sum(r["rejected"] for r in rows),
        "round_retries": sum(r["attempts"] - 1 for r in rows),
        "num_parameters": experiment.layout.numel,
        "num_prunable": experiment.layout.num_prunable,
        "wall_s": round(wall_s, 2),
        "device": str(experiment.device),
        "engine": experiment.engine,
        "versions": {
            "fedmap": fedmap.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "machine": machine_info(experiment.device),
    }
