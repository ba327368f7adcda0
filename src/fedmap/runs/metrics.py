"""Metrics rows: one per round, written to ``metrics.jsonl`` and ``metrics.csv`` as they come.

The first twelve columns are the names docs/design.md §5 fixes; the rest add
detail (validation accuracy, bootstraps, what dense/bitmap/COO would have cost,
how many sampled clients answered, dropped, were late or were rejected).
Rows are flushed every round so a long run can be watched (and plotted) live.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from fedmap.rounds.records import Event, RoundRecord

COLUMNS = (
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
    "val_accuracy",
    "train_loss",
    "pruned",
    "bootstraps",
    "rejected",
    "bytes_mask",
    "bytes_header",
    "bytes_dense",
    "bytes_bitmap",
    "bytes_coo",
    "sampled",
    "answered",
    "dropped",
    "late",
    "discarded",
    "attempts",
    "sim_time_s",
    "mask_sha",
)


def metrics_row(record: RoundRecord) -> dict[str, Any]:
    """Flatten a :class:`RoundRecord` into the metrics columns."""
    accs = record.evaluation.client_accuracy
    accs = accs[~torch.isnan(accs)]
    b = record.bytes
    return {
        "round": record.round,
        "iteration": record.iteration,
        "density": record.density,
        "test_accuracy": record.evaluation.test_accuracy,
        "test_loss": record.evaluation.test_loss,
        "client_acc_mean": float(accs.mean()) if len(accs) else math.nan,
        "client_acc_std": float(accs.std(correction=0)) if len(accs) else math.nan,
        "client_acc_min": float(accs.min()) if len(accs) else math.nan,
        "bytes_up": b.up,
        "bytes_down": b.down,
        "bytes_cum": record.bytes_cum,
        "wall_s": round(record.wall_s, 3),
        "val_accuracy": record.evaluation.val_accuracy,
        "train_loss": record.train_loss,
        "pruned": record.pruned,
        "bootstraps": record.counts.bootstraps,
        "rejected": record.counts.rejected,
        "bytes_mask": b.mask,
        "bytes_header": b.header,
        "bytes_dense": b.dense,
        "bytes_bitmap": b.bitmap,
        "bytes_coo": b.coo,
        "sampled": record.counts.sampled,
        "answered": record.answered,
        "dropped": record.counts.dropped,
        "late": record.counts.late,
        "discarded": record.counts.discarded,
        "attempts": record.attempts,
        "sim_time_s": round(record.sim_time_s, 4),
        "mask_sha": record.mask_sha,
        **record.extra,
    }


class MetricsWriter:
    """Appends rows to ``metrics.jsonl`` and ``metrics.csv`` in ``run_dir``."""

    def __init__(self, run_dir: Path, columns: tuple[str, ...] = COLUMNS) -> None:
        self.jsonl = (run_dir / "metrics.jsonl").open("a")
        csv_path = run_dir / "metrics.csv"
        is_new = not csv_path.exists() or csv_path.stat().st_size == 0
        if not is_new:  # a resumed run keeps its file's columns (it may predate new ones)
            with csv_path.open(newline="") as handle:
                columns = tuple(next(csv.reader(handle), columns))
        self.csv_file = csv_path.open("a", newline="")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=columns, extrasaction="ignore")
        if is_new:
            self.csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row to both files and flush."""
        self.jsonl.write(json.dumps(row) + "\n")
        self.csv.writerow(row)
        self.jsonl.flush()
        self.csv_file.flush()

    def close(self) -> None:
        """Close both files."""
        self.jsonl.close()
        self.csv_file.close()


def append_events(path: Path, events: Iterable[Event]) -> None:
    """Append a round's fault and rejection events to ``events.jsonl`` (created if absent)."""
    with path.open("a") as handle:
        for event in events:
            handle.write(json.dumps(dataclasses.asdict(event)) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (for reports and tests)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
