"""What the command line prints: progress, summaries and one-line errors, on standard error.

Standard output carries only the machine-readable results (a run's summary as
JSON, a dry run's names), so ``fedmap run ... > summary.json`` works; everything
for a person goes to standard error through :data:`err`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True)
SUMMARY_KEYS = (
    "method",
    "rounds",
    "final_sparsity",
    "final_test_accuracy",
    "best_test_accuracy",
    "bytes_total",
    "bytes_ratio_vs_dense",
    "wall_s",
)
STATUS_COLOURS = {
    "finished": "green",
    "skipped": "cyan",
    "failed": "red",
    "stale": "yellow",
    "busy": "magenta",
}


def say(text: str) -> None:
    """One line for a person (markup allowed; interpolate user text through :func:`escape`)."""
    err.print(text, soft_wrap=True)


def warn(text: str) -> None:
    """A warning line (``text`` is printed as it is, never as markup)."""
    err.print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True)


def error(text: str) -> None:
    """The one error line of a failed command (``text`` is printed as it is)."""
    err.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)


def progress_bar(quiet: bool) -> Progress:
    """A bar of rounds with a status column (off with ``quiet``)."""
    return Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    )


def round_status(row: dict[str, Any]) -> str:
    """A round's metrics row in one short line: density, accuracy, bytes so far, faults."""
    status = (
        f"density {row['density']:.3f}  acc {row['test_accuracy']:.4f}  "
        f"{row['bytes_cum'] / 1e6:,.1f} MB"
    )
    if row["rejected"] or row["dropped"] or row["late"]:
        status += f"  drop {row['dropped']} late {row['late']} rej {row['rejected']}"
    return status


def print_run_summary(summary: dict[str, Any], run_dir: Path) -> None:
    """The headline numbers as JSON on standard output; faults and the directory on error."""
    print(json.dumps({k: summary[k] for k in SUMMARY_KEYS}, indent=2))
    trouble = {
        "dropped": summary["clients_dropped"],
        "late": summary["clients_late"],
        "rejected": summary["replies_rejected"],
        "retried rounds": summary["round_retries"],
    }
    if any(trouble.values()):
        listed = ", ".join(f"{v} {k}" for k, v in trouble.items() if v)
        say(f"faults: {listed} (each with its reason in events.jsonl)")
    say(f"run directory: {escape(str(run_dir))}")


def sweep_line(outcome: Any, done: int, total: int, elapsed_s: float) -> str:
    """One finished (or skipped, failed, stale, busy) run of a sweep, in one line."""
    colour = STATUS_COLOURS[outcome.status]
    line = f"[{done}/{total}] [{colour}]{outcome.status:8}[/] {outcome.name}"
    if outcome.summary:
        s = outcome.summary
        line += (
            f"  acc {s['final_test_accuracy']:.4f}  sparsity {s['final_sparsity'] * 100:.1f} %"
            f"  {s['bytes_total'] / 1e6:,.0f} MB"
        )
    if outcome.status == "finished":
        line += f"  {outcome.wall_s:.0f} s"
    if outcome.detail:
        line += f"  {escape(outcome.detail)}"
    return line + f"  (elapsed {elapsed_s / 60:.1f} min)"


def print_sweep_end(statuses: Iterable[str], out: Path, elapsed_s: float) -> Counter[str]:
    """What a sweep did, where its logs are, and how to report it; the count per status."""
    count = Counter(statuses)
    say(
        f"sweep done in {elapsed_s / 60:.1f} min: "
        f"{count['finished']} run, {count['skipped']} skipped (finished before), "
        f"{count['failed']} failed, {count['stale']} stale; "
        f"logs in {escape(str(out / 'logs'))}"
    )
    if count["busy"]:
        say(
            f"{count['busy']} run(s) were running in another sweep over {escape(str(out))}; "
            "run this command again once it ends to include them"
        )
    err.print(f"report: fedmap report {escape(str(out))} --out {escape(str(out / 'report'))}")
    return count


def deploy_round_line(row: dict[str, Any]) -> str:
    """A Flower round: the ledger's bytes beside Flower's, and who answered."""
    return (
        f"round {row['round']}: density {row['density']:.3f}  acc {row['test_accuracy']:.4f}  "
        f"ledger {row['bytes_up'] + row['bytes_down']:,} B  "
        f"flower {row['flower_bytes_up'] + row['flower_bytes_down']:,} B  "
        f"answered {row['answered']}/{row['sampled']}"
    )
