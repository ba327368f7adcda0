"""``fedmap report``: many run directories -> one readable comparison (Markdown + HTML + PNG).

Runs are grouped by data setting (partition and its parameter), method and target
sparsity; seeds are the repetitions, shown as mean ± std. Dense FedAvg has no
target: it is the reference every target of its setting is compared with. The
figures are drawn by :mod:`fedmap.runs.report_plots`.
"""

from __future__ import annotations

import csv
import html
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap.errors import ConfigError
from fedmap.runs.config import tomllib
from fedmap.runs.metrics import read_metrics
from fedmap.strategies.revisions import revision_mismatch

METHOD_LABELS = {
    "fedmap": "FedMap",
    "none": "dense FedAvg",
    "local": "client-local",
    "oneshot": "one-shot",
    "gradual": "gradual (cubic)",
    "random": "random",
    "prunefl": "PruneFL",
    "feddst": "FedDST",
}
METHOD_ORDER = tuple(METHOD_LABELS)
WITHIN_POINTS = 1.0  # "within 1 accuracy point of dense"


@dataclass(frozen=True)
class RunData:
    """One finished run directory, read."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    client_accuracy: list[float]
    partition: list[list[int]]  # per client: label counts (train)

    @property
    def method(self) -> str:
        """``pruning.method``."""
        return str(self.config.get("pruning", {}).get("method", "fedmap"))

    @property
    def target(self) -> float | None:
        """Target sparsity; None for dense FedAvg."""
        if self.method == "none":
            return None
        return float(self.config.get("pruning", {}).get("target_sparsity", math.nan))

    @property
    def seed(self) -> int:
        """Run seed."""
        return int(self.config.get("seed", 0))

    @property
    def client_std(self) -> float | None:
        """The std over clients of the final model's local accuracy; None without them."""
        return statistics.pstdev(self.client_accuracy) if self.client_accuracy else None

    @property
    def setting(self) -> str:
        """The data setting, e.g. ``IID`` or ``Dirichlet(0.5)``."""
        data = self.config.get("data", {})
        partition = data.get("partition", "iid")
        if partition == "dirichlet":
            label = f"Dirichlet({data.get('alpha')})"
        elif partition == "pathological":
            label = f"pathological({data.get('classes_per_client')} classes)"
        else:
            label = "IID"
        return f"{data.get('name', '')} {label}".strip()


@dataclass
class Group:
    """The seeds of one (setting, method, variant, target)."""

    setting: str
    method: str
    target: float | None
    runs: list[RunData]
    variant: str = ""  # the method's settings where they differ from the report's usual ones

    @property
    def label(self) -> str:
        """The method's name in tables and legends."""
        name = METHOD_LABELS.get(self.method, self.method)
        return f"{name} [{self.variant}]" if self.variant else name

    def values(self, key: str) -> list[float]:
        """``key`` of each run's summary."""
        return [float(r.summary[key]) for r in self.runs]


# Keys that do not change what is measured (where and how fast a run ran, where data lives).
NOT_THE_EXPERIMENT = {"seed", "device", "engine", "cohort_chunk", "compile", "checkpoint_every"}
SETTING_KEYS = {"data.partition", "data.alpha", "data.classes_per_client", "data.name", "data.path"}
METHOD_KEYS = {"pruning.method", "pruning.target_sparsity"}


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            flat[key] = value
    return flat


def _differences(rest: dict[str, Any], usual: dict[str, Any]) -> str:
    keys = sorted(set(rest) | set(usual))
    return ", ".join(f"{k}={rest.get(k)}" for k in keys if rest.get(k) != usual.get(k))


def _most_common(items: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[json.dumps(item, sort_keys=True)] += 1
    return json.loads(max(counts, key=lambda k: counts[k])) if counts else {}


def find_runs(paths: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """Finished run directories under ``paths`` (a run, or a folder of runs), and warnings.

    A run made under another revision of its method than this code runs is left out
    with a warning (fedmap.strategies.revisions): its numbers are not this code's.
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
    summary = json.loads((path / "summary.json").read_text())
    rows = read_metrics(path)
    clients: list[float] = []
    if (path / "client_accuracy.csv").is_file():
        with (path / "client_accuracy.csv").open() as stream:
            clients = [float(r["accuracy"]) for r in csv.DictReader(stream)]
    partition: list[list[int]] = []
    if (path / "partition.csv").is_file():
        with (path / "partition.csv").open() as stream:
            for row in csv.DictReader(stream):
                partition.append([int(v) for k, v in row.items() if k.startswith("label_")])
    return RunData(path, config, summary, rows, clients, partition)


def group_runs(runs: list[RunData]) -> list[Group]:
    """Group runs that differ only in their seed; order: setting, target, method.

    Everything else that differs (rounds, model, client settings, a method's rate or
    schedule) splits groups: the setting's label, or the method's, names the keys
    that differ from the settings most runs share, so runs are never averaged with
    runs of another experiment.
    """
    shared, own = [], []
    for run in runs:
        flat = {k: v for k, v in _flat(run.config).items() if k not in NOT_THE_EXPERIMENT}
        shared.append(
            {
                k: v
                for k, v in flat.items()
                if not k.startswith("pruning.") and k not in SETTING_KEYS
            }
        )
        own.append(
            {}
            if run.method == "none"
            else {
                k: v for k, v in flat.items() if k.startswith("pruning.") and k not in METHOD_KEYS
            }
        )
    usual_shared = _most_common(shared)
    usual_own = _most_common([o for o, r in zip(own, runs, strict=True) if r.method != "none"])
    groups: dict[tuple[str, str, str, float | None], Group] = {}
    for run, rest, mine in zip(runs, shared, own, strict=True):
        setting = run.setting
        if rest != usual_shared:
            setting += f" [{_differences(rest, usual_shared)}]"
        variant = _differences(mine, usual_own) if mine else ""
        key = (setting, run.method, variant, run.target)
        group = groups.setdefault(key, Group(setting, run.method, run.target, [], variant))
        group.runs.append(run)
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(
        groups.values(),
        key=lambda g: (
            g.setting,
            -1.0 if g.target is None else g.target,
            rank.get(g.method, 99),
            g.method,
            g.variant,
        ),
    )


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


def table_rows(groups: list[Group]) -> list[dict[str, str]]:
    """One row per group, formatted for both Markdown and HTML."""
    dense = {g.setting: g for g in groups if g.method == "none"}
    rows = []
    for g in groups:
        reference = dense.get(g.setting)
        gap = ""
        if reference is not None:
            diff = (
                mean_std(g.values("final_test_accuracy"))[0]
                - mean_std(reference.values("final_test_accuracy"))[0]
            )
            gap = f"{diff * 100:+.2f}"
        ratio = g.values("bytes_ratio_vs_dense")  # vs what dense would have sent, per run
        if reference is not None:  # vs the dense runs actually measured beside it
            dense_bytes = mean_std(reference.values("bytes_total"))[0]
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
        g.setting: mean_std(g.values("final_test_accuracy"))[0]
        for g in groups
        if g.method == "none"
    }
    best: dict[tuple[str, int, str], float] = {}
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    for g in groups:
        if g.setting not in dense or g.method == "none":
            continue
        acc = mean_std(g.values("final_test_accuracy"))[0]
        sparsity = mean_std(g.values("final_sparsity"))[0]
        key = (g.setting, rank.get(g.method, 99), g.label)
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


def markdown_table(rows: list[dict[str, str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    if not rows:
        return "_no runs_\n"
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict[str, str]]) -> str:
    """The same table as HTML."""
    if not rows:
        return "<p>no runs</p>"
    head = list(rows[0])
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[h])}</td>" for h in head) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


FLOWER_CAPTION = "Runs over Flower: per-client cost of a local round, and Flower's framing"

FIGURES = (
    ("accuracy_vs_round.png", "Test accuracy per round (mean over seeds, band: ± std)"),
    ("density_vs_round.png", "Density of the global model per round"),
    ("accuracy_vs_bytes.png", "Test accuracy against cumulative bytes on the wire"),
    ("accuracy_vs_sparsity.png", "Best test accuracy against final sparsity"),
    ("client_accuracy.png", "Final accuracy on each client's local test split"),
    ("partition.png", "Label distribution of each client's training data"),
)


def write_report(paths: list[Path], out: Path) -> tuple[Path, list[str]]:
    """Write ``report.md``, ``report.html`` and the figures into ``out``; return md and warnings."""
    from fedmap.runs import report_plots

    found, warnings = find_runs(paths)
    if not found:
        why = "".join(f"; {w}" for w in warnings[:3])
        raise ConfigError(f"report: no run to report under the given directories{why}")
    runs = [load_run(p) for p in found]
    groups = group_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    report_plots.draw_all(groups, out)
    rows = table_rows(groups)
    within = best_within(groups)
    figures = [(name, caption) for name, caption in FIGURES if (out / name).is_file()]
    sources = sorted({str(r.path.parent if r.path.parent != Path() else r.path) for r in runs})
    md = [
        "# fedmap report\n",
        f"{len(runs)} runs from {', '.join(sources)}. Accuracies in %, mean ± std over seeds; "
        "'vs dense' is the final accuracy minus dense FedAvg's in the same setting; bytes are "
        "every encoded message, both directions; 'client acc std' is the spread of the final "
        "model's accuracy over the clients' local test splits; 'wall s' is per run and per "
        "device kind, and runs that shared a machine (`fedmap sweep --parallel`) slowed each "
        "other.\n",
        "## Results\n",
        markdown_table(rows),
        "## Highest sparsity within 1 point of dense FedAvg\n",
        markdown_table(within),
    ]
    flower = flower_rows(groups)
    if flower:
        md += [f"## {FLOWER_CAPTION}\n", markdown_table(flower)]
    md += [f"## {caption}\n\n![{caption}]({name})\n" for name, caption in figures]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))
    figure_html = "".join(
        f"<figure><img src='{name}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in figures
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>fedmap report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:right}th{background:#f0f0f0}img{max-width:100%}"
        "figure{margin:2em 0}</style></head><body><h1>fedmap report</h1>"
        f"<p>{html.escape(md[1])}</p><h2>Results</h2>{html_table(rows)}"
        f"<h2>Highest sparsity within 1 point of dense FedAvg</h2>{html_table(within)}"
        + (f"<h2>{html.escape(FLOWER_CAPTION)}</h2>{html_table(flower)}" if flower else "")
        + f"{figure_html}</body></html>"
    )
    (out / "report.html").write_text(page)
    return md_path, warnings
