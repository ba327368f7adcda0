"""The report's tables as rows of formatted cells (one dict per row, shared by Markdown and HTML).

Each setting's dense reference (the method that does not prune: dense FedAvg) is
what every other group of that setting is compared with.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from fedmap.reporting.record import Group, method_rank

WITHIN_POINTS = 1.0
""""Within 1 accuracy point of dense": the accuracy gap the sparsity table allows."""


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of ``values * scale`` (no ± for one value, "—" for none)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "—"
    mean, std = mean_std([v * scale for v in values])
    if len(values) == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {std:,.{digits}f}"


def client_std(group: Group) -> list[float]:
    """Per run: the std over clients of the final model's local accuracy."""
    return [r.client_std for r in group.runs if r.client_std is not None]


def wall_cell(group: Group) -> str:
    """Wall seconds per run, averaged only over runs on the same kind of device.

    A sweep may finish on a GPU what it started on a CPU; one mean over both would
    say nothing about either, so each device kind gets its own ``mean ± std (kind)``.
    """
    by_device: dict[str, list[float]] = defaultdict(list)
    for r in group.runs:
        kind = str(r.summary.get("device", "?")).split(":")[0]
        by_device[kind].append(float(r.summary["wall_s"]))
    return " / ".join(
        f"{fmt(walls, scale=1.0, digits=0)} ({kind})" for kind, walls in sorted(by_device.items())
    )


def references(groups: list[Group]) -> dict[str, Group]:
    """Per setting, its dense reference group."""
    return {g.setting: g for g in groups if g.is_reference}


def table_rows(groups: list[Group]) -> list[dict[str, str]]:
    """One row per group, formatted for both Markdown and HTML."""
    dense = references(groups)
    rows = []
    for g in groups:
        reference = dense.get(g.setting)
        gap = ""
        ratio = g.values("bytes_ratio_vs_dense")  # vs what dense would have sent, per run
        if reference is not None:
            diff = (
                mean_std(g.values("final_test_accuracy"))[0]
                - mean_std(reference.values("final_test_accuracy"))[0]
            )
            gap = f"{diff * 100:+.2f}"
            dense_bytes = mean_std(reference.values("bytes_total"))[0]  # measured beside it
            ratio = [b / dense_bytes for b in g.values("bytes_total")]
        seeds = len({r.seed for r in g.runs})
        rows.append(
            {
                "setting": g.setting,
                "target": "—" if g.target is None else f"{g.target * 100:.0f} %",
                "method": g.label,
                "seeds": str(seeds) if seeds == len(g.runs) else f"{seeds} ({len(g.runs)} runs)",
                "final sparsity %": fmt(g.values("final_sparsity"), digits=1),
                "final acc %": fmt(g.values("final_test_accuracy")),
                "vs dense (points)": gap,
                "best acc %": fmt(g.values("best_test_accuracy")),
                "client acc std (points)": fmt(client_std(g)),
                "total MB": fmt(g.values("bytes_total"), scale=1e-6, digits=0),
                "bytes vs dense %": fmt(ratio, digits=1),
                "wall s": wall_cell(g),
            }
        )
    return rows


def best_within(groups: list[Group]) -> list[dict[str, str]]:
    """Per setting and method: the highest sparsity whose final accuracy is within a point."""
    dense = {
        setting: mean_std(g.values("final_test_accuracy"))[0]
        for setting, g in references(groups).items()
    }
    best: dict[tuple[str, int, str], float] = {}
    for g in groups:
        if g.setting not in dense or g.is_reference:
            continue
        acc = mean_std(g.values("final_test_accuracy"))[0]
        sparsity = mean_std(g.values("final_sparsity"))[0]
        key = (g.setting, method_rank(g.method), g.label)
        best.setdefault(key, -1.0)
        if (dense[g.setting] - acc) * 100 <= WITHIN_POINTS:
            best[key] = max(best[key], sparsity)
    return [
        {
            "setting": setting,
            "method": label,
            "highest sparsity within 1 point of dense": (
                "none" if value < 0 else f"{value * 100:.1f} %"
            ),
        }
        for (setting, _, label), value in sorted(best.items())
    ]


def flower_rows(groups: list[Group]) -> list[dict[str, str]]:
    """Per group of runs made over Flower: what one client's local round cost, and the framing."""
    rows = []
    for g in groups:
        runs = [r for r in g.runs if "flower" in r.summary]
        if not runs:
            continue
        flower = [r.summary["flower"] for r in runs]

        def over(key: str, stat: str, flower: list[dict[str, Any]] = flower) -> list[float]:
            return [float(f[key][stat]) for f in flower if f.get(key)]

        framing = [f["framing_bytes_per_message"] for f in flower]
        ledger = [float(r.summary["bytes_total"]) for r in runs]
        wire = [float(f["bytes_total"]) for f in flower]
        rows.append(
            {
                "setting": g.setting,
                "method": g.label,
                "runs": str(len(runs)),
                "client CPU s per round": fmt(over("client_cpu_s", "mean"), scale=1.0),
                "client wall s per round": fmt(over("client_train_s", "mean"), scale=1.0),
                "peak RSS MB (max)": fmt(over("client_peak_rss_mb", "max"), scale=1.0, digits=0),
                "client kB per round": fmt(over("client_bytes_per_round", "mean"), scale=1e-3),
                "Flower framing B/message": (
                    f"{min(f['min'] for f in framing)}-{max(f['max'] for f in framing)}"
                ),
                "Flower MB / ledger MB": fmt(
                    [w / b for w, b in zip(wire, ledger, strict=True)], scale=1.0, digits=3
                ),
            }
        )
    return rows
