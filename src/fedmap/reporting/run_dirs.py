"""Read finished run directories (what ``fedmap run`` and ``fedmap sweep`` write) into RunData."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedmap.errors import ConfigError
from fedmap.methods.revisions import revision_mismatch
from fedmap.reporting.grid_format import warmup_digest
from fedmap.reporting.record import RunData
from fedmap.runs.config import tomllib
from fedmap.runs.metrics import read_metrics


def find_runs(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Finished run directories under ``paths`` (a run, or a folder of runs), and warnings.

    A run made under another revision of its method than this code runs is left out
    with a warning (fedmap.methods.revisions): its numbers are not this code's.
    """
    found: list[Path] = []
    warnings: list[str] = []
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"report: {path} is not a directory")
        if (path / "summary.json").is_file():
            children = [path]
        else:
            children = sorted(p for p in path.iterdir() if (p / "config.toml").is_file())
            if not children:
                raise ConfigError(f"report: {path} holds no run directory (no config.toml)")
        for child in children:
            if not (child / "summary.json").is_file():
                warnings.append(f"{child}: unfinished (no summary.json), left out")
                continue
            summary = json.loads((child / "summary.json").read_text())
            mismatch = revision_mismatch(str(summary.get("method", "fedmap")), summary)
            if mismatch is not None:
                warnings.append(f"{child}: {mismatch}, left out")
                continue
            found.append(child)
    return found, warnings


def load_run(path: Path) -> RunData:
    """Read one finished run directory."""
    config = tomllib.loads((path / "config.toml").read_text())
    rows = read_metrics(path)
    return RunData(
        name=path.name,
        source=str(path.parent if path.parent != Path() else path),
        config=config,
        summary=json.loads((path / "summary.json").read_text()),
        rows=rows,
        client_accuracy=_read_client_accuracy(path / "client_accuracy.csv"),
        partition=_read_partition(path / "partition.csv"),
        events=_read_events(path / "events.jsonl"),
        first_cohort=_read_first_cohort(path / "ledger.csv"),
        warmup_digest=warmup_digest(config, rows),
    )


def _read_client_accuracy(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with path.open() as stream:
        return [float(r["accuracy"]) for r in csv.DictReader(stream)]


def _read_partition(path: Path) -> list[list[int]]:
    """Per client, its training samples per label (the ``label_*`` columns)."""
    if not path.is_file():
        return []
    with path.open() as stream:
        return [
            [int(v) for k, v in row.items() if k.startswith("label_")]
            for row in csv.DictReader(stream)
        ]


def _read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_first_cohort(path: Path) -> list[int]:
    """The clients whose reply of round 1 the ledger holds (it is written round by round)."""
    if not path.is_file():
        return []
    clients: set[int] = set()
    with path.open() as stream:
        for row in csv.DictReader(stream):
            if int(row["round"]) > 1:
                break
            if row["round"] == "1" and row["direction"] == "up":
                clients.add(int(row["client"]))
    return sorted(clients)
