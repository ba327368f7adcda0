"""Write docs/results.md from the paper-claims grid: the report, then a verdict per target.

Usage::

    .venv/bin/python benchmarks/claims.py                       # from the committed tables
    .venv/bin/python benchmarks/claims.py --runs runs/paper_claims   # from run directories

The grid's runs are committed as tables (benchmarks/results/paper_claims.*, written by
benchmarks/grid_tables.py after the sweep), so the page and its figures are rebuilt in
seconds without the run directories. The full table and figures come from ``fedmap report``
(written to docs/results/); this script adds the claims of issue 3, each judged on the runs
that exist, a table of each baseline against FedMap paired by seed, and says which points of
the grid are missing, so a partial sweep is reported as partial.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from fedmap.methods.registry import all_methods
from fedmap.reporting.grouping import group_runs
from fedmap.reporting.record import Group, RunData
from fedmap.reporting.report import load_runs, render_report
from fedmap.runs.grid import load_sweep

sys.path.insert(0, str(Path(__file__).parent))  # the verdicts beside this script
from claim_verdicts import (  # noqa: E402
    GroupKey,
    accuracy_claims,
    comparison_table,
    std_and_bytes_claims,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmarks" / "paper_claims.toml"
DOCS = ROOT / "docs"
TABLES = Path("benchmarks") / "results" / "paper_claims.csv"
RUNS_COMMIT = "8522aaf"  # the last commit whose tree holds the grid's run directories


def at_chance(run: RunData) -> bool:
    """Whether the run's final accuracy is at most 1.5x chance for its number of classes."""
    classes = len(run.partition[0]) if run.partition else 10
    return float(run.summary["final_test_accuracy"]) <= 1.5 / classes


def chance_level(runs: list[RunData]) -> list[str]:
    """A line per run at chance (:func:`at_chance`), with what round 1 did.

    A mean over seeds hides a collapsed seed behind a large std; this names it. Where
    round 1 was one client (PruneFL's initial pruning), the labels that client held are
    the first thing to look at, so they are listed.
    """
    lines = []
    for run in sorted(runs, key=lambda r: r.name):
        if not at_chance(run) or not run.rows:
            continue
        accuracy = float(run.summary["final_test_accuracy"])
        text = (
            f"- `{run.name}`: final {accuracy:.2%}, test loss after round 1 "
            f"{float(run.rows[0]['test_loss']):.1f}"
        )
        cohort = run.first_cohort
        if len(cohort) == 1 and cohort[0] < len(run.partition):
            counts = run.partition[cohort[0]]
            held = ", ".join(f"label {k}: {n}" for k, n in enumerate(counts) if n)
            text += f"; round 1 was client {cohort[0]} alone, holding {held}"
        lines.append(text + ".")
    return lines


def rejected_replies(runs: list[RunData]) -> list[str]:
    """A line per run whose server refused replies, with the refusals' reasons.

    The grid keeps the library's default screen (``aggregation.norm_threshold`` 10, and
    NaN/Inf checks) for every method, dense FedAvg included. Under strong label skew an
    honest client's update can exceed 10x the cohort's median, so a baseline's mean can
    rest on fewer replies than the paper's unscreened FedAvg; this makes that visible.
    """
    lines = []
    for run in sorted(runs, key=lambda r: r.name):
        count = int(run.summary.get("replies_rejected", 0))
        if not count:
            continue
        reasons: Counter[str] = Counter()
        for event in run.events:
            if event.get("kind") == "rejected":
                reason = str(event.get("reason", ""))
                reasons["update norm over the limit" if "exceeds" in reason else reason] += 1
        detail = ", ".join(f"{n}x {reason}" for reason, n in reasons.most_common())
        lines.append(
            f"- `{run.name}`: {count} {'reply' if count == 1 else 'replies'} rejected"
            + (f" ({detail})" if detail else "")
            + "."
        )
    return lines


def missing_by_target_and_method(names: list[str]) -> str:
    """``target_sparsity0.9: prunefl 11, feddst 3; ...`` from run names (first seen order).

    Names are the sweep's ``[TARGET-]SETTING-METHOD-SEED``: dense FedAvg's have no target.
    """
    counts: dict[str, Counter[str]] = {}
    for name in names:
        parts = name.split("-")
        target = parts[0] if parts[0].startswith("target_sparsity") else "no target"
        counts.setdefault(target, Counter())[parts[-2]] += 1
    return "; ".join(
        f"{target}: " + ", ".join(f"{m} {n}" for m, n in methods.items())
        for target, methods in counts.items()
    )


def data_location(source: Path) -> list[str]:
    """Header lines saying where the page's data lives and how to rebuild the page from it.

    The grid's run directories are tens of MB, so git keeps them only in history
    (:data:`RUNS_COMMIT`); what the page needs is committed as tables, from which
    the page is rebuilt without them.
    """
    if source.suffix == ".csv":
        where = (
            f"The grid's runs are committed as tables: one row per run in `{source}`, and per "
            "round, per client, partitions and events beside it (xz-compressed). "
            "`.venv/bin/python benchmarks/claims.py` rebuilds this page and its figures from "
            "them in seconds, without the run directories."
        )
    else:
        where = (
            f"This page was generated from the run directories under `{source}`; "
            f"`benchmarks/grid_tables.py {source}` writes them as the committed tables "
            f"(`{TABLES}` and beside it) that `benchmarks/claims.py` reads by default."
        )
    history = (
        f" The run directories last lived in git at commit {RUNS_COMMIT} "
        f"(`git show {RUNS_COMMIT} --stat`; unpack them with "
        f"`git archive {RUNS_COMMIT} benchmarks/runs/paper_claims | tar -x` and pass "
        "`--runs benchmarks/runs/paper_claims`), as did an earlier 165-run page whose own run "
        f"directories were lost (`git show {RUNS_COMMIT}:docs/results_archive_62b2a2f.md`)."
    )
    return [where + history, ""]


def progress(done: set[str], planned: list[str]) -> list[str]:
    """How much of the grid has run, and what is missing by target and method."""
    missing = [name for name in planned if name not in done]
    return [
        "",
        f"Runs finished: {len(done)} of the grid's {len(planned)}."
        + (
            f" Missing ({len(missing)}), by target and method: "
            + missing_by_target_and_method(missing)
            + ". Rerun `bash benchmarks/paper_claims.sh`: finished runs are skipped."
            if missing
            else ""
        ),
    ]


def run_sections(runs: list[RunData]) -> list[str]:
    """The sections about single runs: those at chance, and those whose replies were refused."""
    lines: list[str] = []
    collapsed = chance_level(runs)
    prunefl_collapsed = any(r.method == "prunefl" and at_chance(r) for r in runs)
    if collapsed:
        lines += [
            "",
            "## Runs at chance level",
            "",
            ("1 run ends" if len(collapsed) == 1 else f"{len(collapsed)} runs end")
            + " at most 1.5x chance accuracy (15 % for 10 classes); "
            "their seeds' means above include them."
            + (
                " PruneFL's round 1 is one client's initially pruned model, unaveraged and "
                "unscreened (docs/methods.md)."
                if prunefl_collapsed
                else ""
            ),
            "",
            *collapsed,
        ]
    refused = rejected_replies(runs)
    if refused:
        lines += [
            "",
            "## Replies the server refused",
            "",
            "Every method runs with the library's default screen (`aggregation.norm_threshold` "
            "10: an update more than 10x the cohort's median distance is refused; NaN/Inf replies "
            "always are). Under strong label skew it refuses some honest updates, including "
            "dense FedAvg's, so those baselines average fewer replies than an unscreened FedAvg "
            "would; the means above include these runs.",
            "",
            *refused,
        ]
    return lines


def header(runs: list[RunData], source: Path, elapsed: float | None) -> list[str]:
    """The page's title and the paragraphs that say what the grid is and where it lives."""
    devices = sorted({str(r.summary.get("device")) for r in runs})
    revisions = ", ".join(
        f"{m.name} {m.revision}"
        for m in sorted(all_methods(), key=lambda m: m.name)
        if m.revision != 1
    )
    return [
        "# Results: FedMap and its baselines on Fashion-MNIST",
        "",
        "Rerun the grid with `bash benchmarks/paper_claims.sh` (the grid is "
        "`benchmarks/paper_claims.toml`: 100 clients, 10 per round, FedAvg CNN, 80 rounds; IID, "
        "Dirichlet 0.5 and 0.1, pathological 2 classes; target sparsity 50/80/90/95 %; 8 methods; "
        "3 seeds). Finished runs are skipped, so it can be stopped and continued. Devices of the "
        f"runs shown: {', '.join(devices)}."
        + (f" This regeneration took {elapsed / 60:.1f} min." if elapsed else ""),
        "",
        "Methods, each in one paragraph with its reference, are in `docs/methods.md`; the report "
        "below is `fedmap report` of the sweep (also as `docs/results/report.html`). Method "
        f"revisions shown (runs of another revision are left out): {revisions}, "
        "every other method 1.",
        "",
        *data_location(source),
    ]


def judged_groups(runs: list[RunData]) -> dict[GroupKey, Group]:
    """The groups the claims are judged on: the grid's own settings, no variants.

    Variants (other rates, rounds ...) that other runs in the folder add are shown in
    the report's table but judged by no claim.
    """
    grouped = group_runs(runs)
    skipped = [g for g in grouped if g.variant or "[" in g.setting]
    if skipped:
        print(f"claims: {len(skipped)} groups with other settings are not judged", file=sys.stderr)
    return {(g.setting, g.method, g.target): g for g in grouped if not g.variant}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tables", type=Path, default=TABLES, help="a grid's run table (.csv)")
    source.add_argument("--runs", type=Path, default=None, help="a folder of run directories")
    parser.add_argument("--elapsed", type=float, default=None, help="sweep seconds, for the doc")
    args = parser.parse_args()
    os.chdir(ROOT)  # relative paths in the doc
    chosen: Path = args.runs if args.runs is not None else args.tables
    chosen = chosen.resolve().relative_to(ROOT) if chosen.is_absolute() else chosen
    planned = [r.name for r in load_sweep(SWEEP).runs]
    runs, warnings = load_runs([chosen])
    for warning in warnings:  # unfinished runs, runs of another method revision
        print(f"claims: {warning}", file=sys.stderr)
    md_path = render_report(runs, Path("docs") / "results")
    groups = judged_groups(runs)
    lines = ["## Claims (issue 3), judged on the runs above", ""]
    lines += accuracy_claims(groups) + std_and_bytes_claims(groups)
    done = {r.name for r in runs}
    lines += progress(done, planned)
    comparison = comparison_table(groups)
    if comparison:
        lines += ["", *comparison]
    lines += run_sections(runs)
    body = md_path.read_text().split("\n", 1)[1]  # drop the report's own title
    body = body.replace("](", "](results/")
    page = "\n".join(header(runs, chosen, args.elapsed) + lines) + "\n" + body
    (DOCS / "results.md").write_text(page)
    print(f"wrote {DOCS / 'results.md'} ({len(done)} of {len(planned)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
