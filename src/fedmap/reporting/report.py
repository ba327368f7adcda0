"""``fedmap report``: many runs -> one readable comparison (Markdown + HTML + PNG).

Runs are read from run directories, or from a grid's committed tables (a path
ending in ``.csv``, :mod:`fedmap.reporting.grid_read`); both give the same
:class:`~fedmap.reporting.record.RunData`. They are grouped by data setting,
method and target sparsity; seeds are the repetitions, shown as mean ± std. The
dense reference has no target: every target of its setting is compared with it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from fedmap.errors import ConfigError
from fedmap.reporting import figures
from fedmap.reporting.grid_read import read_grid_tables
from fedmap.reporting.grouping import group_runs
from fedmap.reporting.record import RunData
from fedmap.reporting.rows import best_within, flower_rows, table_rows
from fedmap.reporting.run_dirs import find_runs, load_run

FLOWER_CAPTION = "Runs over Flower: per-client cost of a local round, and Flower's framing"
WITHIN_CAPTION = "Highest sparsity within 1 point of dense FedAvg"

FIGURES = (
    ("accuracy_vs_round.png", "Test accuracy per round (mean over seeds, band: ± std)"),
    ("density_vs_round.png", "Density of the global model per round"),
    ("accuracy_vs_bytes.png", "Test accuracy against cumulative bytes on the wire"),
    ("accuracy_vs_sparsity.png", "Best test accuracy against final sparsity"),
    ("client_accuracy.png", "Final accuracy on each client's local test split"),
    ("partition.png", "Label distribution of each client's training data"),
)

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
    "padding:3px 6px;text-align:right}th{background:#f0f0f0}img{max-width:100%}"
    "figure{margin:2em 0}"
)


def load_runs(paths: Iterable[Path]) -> tuple[list[RunData], list[str]]:
    """The finished runs under ``paths`` (run directories, folders of them, grid tables)."""
    runs: list[RunData] = []
    warnings: list[str] = []
    for path in paths:
        if path.is_file() and path.name.endswith(".csv"):
            found, skipped = read_grid_tables(path)
        else:
            dirs, skipped = find_runs([path])
            found = [load_run(p) for p in dirs]
        runs += found
        warnings += skipped
    return runs, warnings


def write_report(paths: list[Path], out: Path) -> tuple[Path, list[str]]:
    """Write ``report.md``, ``report.html`` and the figures into ``out``; return md and warnings."""
    figures.require_matplotlib()  # before reading runs: say what is missing at once
    runs, warnings = load_runs(paths)
    if not runs:
        why = "".join(f"; {w}" for w in warnings[:3])
        raise ConfigError(f"report: no run to report under the given directories{why}")
    return render_report(runs, out), warnings


def render_report(runs: list[RunData], out: Path) -> Path:
    """Write the report of ``runs`` into ``out``; return the Markdown page's path."""
    groups = group_runs(runs)
    out.mkdir(parents=True, exist_ok=True)
    figures.draw_all(groups, out)
    rows, within, flower = table_rows(groups), best_within(groups), flower_rows(groups)
    shown = [(name, caption) for name, caption in FIGURES if (out / name).is_file()]
    intro = introduction(runs)
    md = ["# fedmap report\n", intro, "## Results\n", markdown_table(rows)]
    md += [f"## {WITHIN_CAPTION}\n", markdown_table(within)]
    if flower:
        md += [f"## {FLOWER_CAPTION}\n", markdown_table(flower)]
    md += [f"## {caption}\n\n![{caption}]({name})\n" for name, caption in shown]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))
    figure_html = "".join(
        f"<figure><img src='{name}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in shown
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>fedmap report</title>"
        f"<style>{STYLE}</style></head><body><h1>fedmap report</h1>"
        f"<p>{html.escape(intro)}</p><h2>Results</h2>{html_table(rows)}"
        f"<h2>{WITHIN_CAPTION}</h2>{html_table(within)}"
        + (f"<h2>{html.escape(FLOWER_CAPTION)}</h2>{html_table(flower)}" if flower else "")
        + f"{figure_html}</body></html>"
    )
    (out / "report.html").write_text(page)
    return md_path


def introduction(runs: list[RunData]) -> str:
    """The paragraph that says where the runs come from and how to read the tables."""
    sources = sorted({r.source for r in runs})
    return (
        f"{len(runs)} runs from {', '.join(sources)}. Accuracies in %, mean ± std over seeds; "
        "'vs dense' is the final accuracy minus dense FedAvg's in the same setting; bytes are "
        "every encoded message, both directions; 'client acc std' is the spread of the final "
        "model's accuracy over the clients' local test splits; 'wall s' is per run and per "
        "device kind, and runs that shared a machine (`fedmap sweep --parallel`) slowed each "
        "other.\n"
    )


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
