"""Write a grid's runs as the compact tables :mod:`fedmap.reporting.grid_read` reads back.

The layout is :mod:`fedmap.reporting.grid_format`'s. Runs are written sorted by
name and xz keeps no time or file name, so the same runs always give the same
bytes and a commit of regenerated tables shows only what changed.
"""

from __future__ import annotations

import csv
import io
import json
import lzma
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedmap.reporting.grid_format import (
    EVENT_COLUMNS,
    FORMAT,
    KEY_COLUMNS,
    MACHINE_COLUMNS,
    ROUND_COLUMNS,
    SUMMARY_COLUMNS,
    digest,
    encode,
    kind_of,
    last_mean,
    table_paths,
)
from fedmap.reporting.grid_read import read_grid_tables
from fedmap.reporting.record import RunData, flat_config

XZ_PRESET = 9 | lzma.PRESET_EXTREME  # written once per sweep, read often: the smallest files


def write_grid_tables(runs: Iterable[RunData], prefix: Path) -> dict[str, Path]:
    """Write ``runs`` as the tables of ``prefix`` (``.../paper_claims``); return their paths."""
    ordered = sorted(runs, key=lambda r: r.name)
    names = [r.name for r in ordered]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"grid tables: run names must be unique, repeated: {twice}")
    paths = table_paths(prefix)
    paths["runs"].parent.mkdir(parents=True, exist_ok=True)
    flats = [flat_config(r.config) for r in ordered]
    shared, columns = split_config(flats)
    partitions = {r.name: _partition_digest(r.partition) for r in ordered}
    body = [
        [r.name, r.setting]
        + [encode(flat.get(k), columns[k]) for k in columns]
        + summary_cells(r, partitions[r.name])
        for r, flat in zip(ordered, flats, strict=True)
    ]
    _write_csv(paths["runs"], ["run", "setting", *columns, *summary_header()], body)
    rounds = _kinds(ROUND_COLUMNS, [row for r in ordered for row in r.rows])
    accuracy = kind_of([a for r in ordered for a in r.client_accuracy])
    meta = {
        "format": FORMAT,
        "shared_config": shared,
        "kinds": {"config": columns, "rounds": rounds, "clients": {"accuracy": accuracy}},
    }
    paths["config"].write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    _write_xz_csv(paths["rounds"], ["run", *rounds], _rows(ordered, rounds))
    clients = [
        [r.name, i, encode(a, accuracy)] for r in ordered for i, a in enumerate(r.client_accuracy)
    ]
    _write_xz_csv(paths["clients"], ["run", "client", "accuracy"], clients)
    _write_partitions(paths["partitions"], ordered, partitions)
    events = [
        [r.name, *(encode(e.get(k), kind) for k, kind in EVENT_COLUMNS.items())]
        for r in ordered
        for e in r.events
    ]
    _write_xz_csv(paths["events"], ["run", *EVENT_COLUMNS], events)
    return paths


def merge_with_tables(runs: list[RunData], prefix: Path) -> tuple[list[RunData], list[str]]:
    """``runs`` plus the runs the tables of ``prefix`` hold under other names, and warnings.

    A machine that ran part of a grid adds its runs to the committed tables instead
    of shrinking them to its part; a run in both is taken from ``runs``.
    """
    runs_csv = table_paths(prefix)["runs"]
    if not runs_csv.is_file():
        return list(runs), []
    held, warnings = read_grid_tables(runs_csv)
    fresh = {r.name for r in runs}
    return [*(r for r in held if r.name not in fresh), *runs], warnings


def split_config(flats: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config every run shares, and the columns (key -> type name) for the rest.

    :data:`~fedmap.reporting.grid_format.KEY_COLUMNS` are columns whenever a run has
    them, so a reader sees each run's partition, method, target and seed in its row.
    """
    keys = sorted({k for flat in flats for k in flat})
    shared = {
        k: flats[0][k]
        for k in keys
        if k not in KEY_COLUMNS and all(k in f and f[k] == flats[0][k] for f in flats)
    }
    varying = [k for k in KEY_COLUMNS if k in keys] + [
        k for k in keys if k not in shared and k not in KEY_COLUMNS
    ]
    return shared, {k: kind_of([f.get(k) for f in flats]) for k in varying}


def summary_header() -> list[str]:
    """The columns of ``PREFIX.csv`` after the config's."""
    return [
        *SUMMARY_COLUMNS,
        "last5_test_accuracy",
        "client_acc_std",
        *MACHINE_COLUMNS,
        "warmup_digest",
        "first_cohort",
        "partition_id",
    ]


def summary_cells(run: RunData, partition: str) -> list[str]:
    """One run's cells under :func:`summary_header`."""
    machine = run.summary.get("machine") or {}
    return [
        *(encode(run.summary.get(k), kind) for k, kind in SUMMARY_COLUMNS.items()),
        encode(last_mean(run.rows), "float") if run.rows else "",
        encode(run.client_std, "float"),
        *(encode(machine.get(k), kind) for k, kind in MACHINE_COLUMNS.items()),
        run.warmup_digest,
        " ".join(str(c) for c in run.first_cohort),
        partition,
    ]


def _kinds(columns: dict[str, str], rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each column's kind: float columns narrow to ``float32`` where every value allows it."""
    return {
        k: kind_of([row.get(k) for row in rows]) if kind == "float" else kind
        for k, kind in columns.items()
    }


def _rows(runs: list[RunData], kinds: dict[str, str]) -> list[list[Any]]:
    return [
        [r.name, *(encode(row.get(k), kinds[k]) for k in kinds)] for r in runs for row in r.rows
    ]


def _partition_digest(partition: list[list[int]]) -> str:
    """A name for a partition (runs of one seed and setting share it); empty for none."""
    if not partition:
        return ""
    return digest("\n".join(",".join(map(str, counts)) for counts in partition))


def _write_partitions(path: Path, runs: list[RunData], names: dict[str, str]) -> None:
    """Each distinct partition once: its name, then per client the samples per label."""
    unique = {names[r.name]: r.partition for r in runs if r.partition}
    labels = max((len(counts) for p in unique.values() for counts in p), default=0)
    header = ["partition_id", "client", *(f"label_{k}" for k in range(labels))]
    rows = [
        [name, client, *counts]
        for name, partition in sorted(unique.items())
        for client, counts in enumerate(partition)
    ]
    _write_xz_csv(path, header, rows)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_xz_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(lzma.compress(text.getvalue().encode(), preset=XZ_PRESET))
