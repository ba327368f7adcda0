"""The committed tables of a grid: their files, columns and how each value is written.

A grid's run directories are tens of MB; the pages need a few numbers per run and
a few columns per round. So a grid is committed as ``PREFIX.csv`` (one row per run),
``PREFIX.config.json`` (the config every run shares, and the types of the config
columns), and xz-compressed per-round, per-client, partition and event tables beside it
(xz, not gzip: about half the size on these float columns; Python's lzma and pandas read it).
Runs of one seed and setting share their partition, so partitions are stored once, by a
digest of their label counts (``partition_id``).
Floats are written as Python's shortest repr, which reads back to the same float,
so the pages rebuilt from the tables show the same numbers as from the runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedmap.reporting.record import method_prunes

FORMAT = 1
"""Version of this layout, in ``PREFIX.config.json``: bump it when a column changes meaning."""

DIGEST_CHARS = 16
"""Hex characters kept of a SHA-256 (64 bits: no accidental collision among a grid's runs)."""

LAST_ROUNDS = 5
"""The final rounds whose test accuracy is averaged (``last5_test_accuracy``)."""

WARMUP_KEYS = ("test_loss", "test_accuracy", "val_accuracy")
"""The metrics of each warm-up round the warm-up digest covers."""

KEY_COLUMNS = (
    "data.partition",
    "data.alpha",
    "data.classes_per_client",
    "pruning.method",
    "pruning.target_sparsity",
    "seed",
)
"""Config keys that are always columns of ``PREFIX.csv``; other keys are when they vary."""

SUMMARY_COLUMNS = {
    "method_revision": "int",
    "rounds": "int",
    "final_test_accuracy": "float",
    "best_test_accuracy": "float",
    "final_sparsity": "float",
    "bytes_total": "int",
    "bytes_dense_fedavg": "int",
    "bytes_ratio_vs_dense": "float",
    "replies_rejected": "int",
    "wall_s": "float",
    "device": "str",
}
"""``summary.json`` keys kept, with their kinds (the machine's are in :data:`MACHINE_COLUMNS`)."""

MACHINE_COLUMNS = {"cpu": "str", "cpu_capability": "str", "torch_threads": "int"}
"""``summary.json``'s ``machine`` keys kept (runs from before the record leave them blank)."""

ROUND_COLUMNS = {
    "round": "int",
    "test_accuracy": "float",
    "test_loss": "float",
    "density": "float",
    "bytes_cum": "int",
    "rejected": "int",
}
"""Per-round metrics kept: what the figures and the claims page read (floats may narrow)."""

EVENT_COLUMNS = {"round": "int", "attempt": "int", "client": "int", "kind": "str", "reason": "str"}
"""``events.jsonl`` keys kept."""

KINDS = ("str", "int", "float", "float32", "bool", "json")
"""How a cell is written: ``float32`` is a float column whose every value is a widened
float32 (accuracies and losses are), written in float32's shortest form: a third of
the characters of float64's, read back to the same float64."""


def table_paths(prefix: Path) -> dict[str, Path]:
    """The files of the grid whose tables start with ``prefix`` (``.../paper_claims``)."""
    return {
        "runs": prefix.with_name(prefix.name + ".csv"),
        "config": prefix.with_name(prefix.name + ".config.json"),
        "rounds": prefix.with_name(prefix.name + ".rounds.csv.xz"),
        "clients": prefix.with_name(prefix.name + ".clients.csv.xz"),
        "partitions": prefix.with_name(prefix.name + ".partitions.csv.xz"),
        "events": prefix.with_name(prefix.name + ".events.csv.xz"),
    }


def prefix_of(runs_csv: Path) -> Path:
    """``.../paper_claims`` from ``.../paper_claims.csv``."""
    return runs_csv.with_name(runs_csv.name.removesuffix(".csv"))


def kind_of(values: list[Any]) -> str:
    """The one kind that writes all of ``values`` exactly (``json`` when types mix or nest)."""
    names = {type(v).__name__ for v in values if v is not None}
    if names == {"float"} and all(_is_float32(v) for v in values if v is not None):
        return "float32"
    if len(names) == 1 and next(iter(names)) in KINDS:
        return next(iter(names))
    return "json"


def encode(value: Any, kind: str) -> str:
    """A cell: blank for None, ``true``/``false``, floats in their shortest exact form."""
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value)
    if kind == "float32":
        return str(np.float32(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def decode(text: str, kind: str) -> Any:
    """The value :func:`encode` wrote as ``text``; None for a blank cell."""
    if text == "":
        return None
    if kind == "json":
        return json.loads(text)
    if kind == "float32":
        return float(np.float32(text))
    if kind == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text == "true"
    if kind not in KINDS:
        raise ValueError(f"unknown column kind {kind!r}, expected one of {KINDS}")
    return {"str": str, "int": int, "float": float}[kind](text)


def _is_float32(value: float) -> bool:
    return math.isnan(value) or float(np.float32(value)) == value


def digest(text: str) -> str:
    """A SHA-256 prefix of ``text`` (:data:`DIGEST_CHARS` hex characters)."""
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def warmup_digest(config: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A digest of the metrics of the dense warm-up rounds; empty where there is none.

    Runs of one seed and setting train the same dense model until their method first
    prunes, so their warm-up rounds should agree to the last bit on one machine; the
    digest lets a table check that without the run directories. A method has a dense
    warm-up here when it prunes, ``pruning.warmup_rounds`` is at least one and the
    model stayed dense (density 1) through those rounds (PruneFL and FedDST start sparse).
    """
    pruning = config.get("pruning", {})
    method = str(pruning.get("method", "fedmap"))
    rounds = int(pruning.get("warmup_rounds", 0))
    warmup = rows[:rounds]
    if not method_prunes(method) or rounds < 1 or len(warmup) < rounds:
        return ""
    if any(row.get("density") != 1.0 for row in warmup):
        return ""
    if any(key not in row for row in warmup for key in WARMUP_KEYS):
        return ""
    lines = [
        ",".join([str(row["round"]), *(repr(float(row[key])) for key in WARMUP_KEYS)])
        for row in warmup
    ]
    return digest("\n".join(lines) + "\n")


def last_mean(rows: list[dict[str, Any]], key: str = "test_accuracy") -> float:
    """Mean of ``key`` over the last :data:`LAST_ROUNDS` rounds (NaN without rows)."""
    tail = [float(row[key]) for row in rows[-LAST_ROUNDS:]]
    return math.fsum(tail) / len(tail) if tail else math.nan
