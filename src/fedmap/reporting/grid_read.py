"""Read a grid's committed tables (:mod:`fedmap.reporting.grid_write`) back into RunData."""

from __future__ import annotations

import csv
import io
import json
import lzma
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap.errors import ConfigError
from fedmap.methods.revisions import revision_mismatch
from fedmap.reporting.grid_format import (
    EVENT_COLUMNS,
    FORMAT,
    MACHINE_COLUMNS,
    SUMMARY_COLUMNS,
    decode,
    prefix_of,
    table_paths,
)
from fedmap.reporting.record import RunData, nested_config


def read_grid_tables(runs_csv: Path) -> tuple[list[RunData], list[str]]:
    """The runs of the grid whose run table is ``runs_csv``, and warnings.

    As for run directories, a run made under another revision of its method than
    this code runs is left out with a warning.
    """
    paths = table_paths(prefix_of(runs_csv))
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"report: grid table {runs_csv} lacks {', '.join(missing)}")
    meta = json.loads(paths["config"].read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(
            f"report: {paths['config']}: format {meta.get('format')!r}, this code reads {FORMAT}"
        )
    tables = _Tables(
        meta=meta,
        rounds=_by_run(_read_xz_csv(paths["rounds"])),
        clients=_by_run(_read_xz_csv(paths["clients"])),
        events=_by_run(_read_xz_csv(paths["events"])),
        partitions=_read_partitions(paths["partitions"]),
    )
    runs: list[RunData] = []
    warnings: list[str] = []
    with runs_csv.open(newline="") as stream:
        for row in csv.DictReader(stream):
            run = tables.run(row, str(runs_csv))
            mismatch = revision_mismatch(run.method, run.summary)
            if mismatch is None:
                runs.append(run)
            else:
                warnings.append(f"{runs_csv}: {run.name}: {mismatch}, left out")
    return runs, warnings


@dataclass(frozen=True)
class _Tables:
    """A grid's tables other than the run table, by run (partitions by name)."""

    meta: dict[str, Any]
    rounds: dict[str, list[dict[str, str]]]
    clients: dict[str, list[dict[str, str]]]
    events: dict[str, list[dict[str, str]]]
    partitions: dict[str, list[list[int]]]

    def run(self, row: dict[str, str], source: str) -> RunData:
        """The run of ``row`` of the run table."""
        name, kinds = row["run"], self.meta["kinds"]
        flat = dict(self.meta["shared_config"])
        for key, kind in kinds["config"].items():
            value = decode(row[key], kind)
            if value is not None:
                flat[key] = value
        config = nested_config(flat)
        accuracy = kinds["clients"]["accuracy"]
        return RunData(
            name=name,
            source=source,
            config=config,
            summary=_summary(row, str(config.get("pruning", {}).get("method", "fedmap"))),
            rows=[_typed(r, kinds["rounds"]) for r in self.rounds.get(name, [])],
            client_accuracy=[decode(r["accuracy"], accuracy) for r in self.clients.get(name, [])],
            partition=self.partitions.get(row["partition_id"], []),
            events=[_typed(r, EVENT_COLUMNS) for r in self.events.get(name, [])],
            first_cohort=[int(c) for c in row["first_cohort"].split()],
            warmup_digest=row["warmup_digest"],
        )


def _summary(row: dict[str, str], method: str) -> dict[str, Any]:
    """The part of ``summary.json`` the table keeps (blank cells: keys the run lacked)."""
    summary: dict[str, Any] = {"method": method, **_typed(row, SUMMARY_COLUMNS)}
    machine = _typed(row, MACHINE_COLUMNS)
    if machine:
        summary["machine"] = machine
    return summary


def _typed(row: dict[str, str], columns: dict[str, str]) -> dict[str, Any]:
    """``row``'s cells under ``columns`` as their types, blank cells left out."""
    typed = {k: decode(row.get(k, ""), kind) for k, kind in columns.items()}
    return {k: v for k, v in typed.items() if v is not None}


def _read_xz_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(lzma.decompress(path.read_bytes()).decode())))


def _by_run(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        grouped[row["run"]].append(row)
    return grouped


def _read_partitions(path: Path) -> dict[str, list[list[int]]]:
    """Partition name -> per client, samples per label."""
    partitions: dict[str, list[list[int]]] = defaultdict(list)
    for row in _read_xz_csv(path):
        counts = [int(v) for k, v in row.items() if k.startswith("label_") and v != ""]
        partitions[row["partition_id"]].append(counts)
    return partitions
