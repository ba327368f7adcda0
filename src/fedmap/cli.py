"""The ``fedmap`` command line.

Errors a user can fix (bad config, missing data) print one line and exit 1,
without a traceback and without a run directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedmap.errors import FedMapError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="FedMap: federated learning with iterative magnitude pruning.",
)
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """FedMap: federated learning with iterative magnitude pruning."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/<config>-<time>).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run one experiment and write its run directory."""
    from fedmap.runs.config import load_config
    from fedmap.runs.experiment import create_run_dir, prepare
    from fedmap.runs.experiment import run as run_experiment

    try:
        cfg = load_config(config, set_ or [])
        experiment = prepare(cfg)  # data located and loaded before anything is written
        run_dir = out or Path("runs") / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        create_run_dir(cfg, run_dir)
    except FedMapError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    err.print(
        f"fedmap: {cfg.pruning.method} on {cfg.data.name}/{cfg.data.partition}, "
        f"{cfg.model.name}, {cfg.rounds} rounds, device {experiment.device} "
        f"-> {escape(str(run_dir))}",
        soft_wrap=True,
    )
    with _progress(quiet) as progress:
        task = progress.add_task("round", total=cfg.rounds, status="")

        def on_round(row: dict[str, Any]) -> None:
            status = (
                f"density {row['density']:.3f}  acc {row['test_accuracy']:.4f}  "
                f"{row['bytes_cum'] / 1e6:,.1f} MB"
            )
            progress.update(task, completed=row["round"], status=status)

        try:
            summary = run_experiment(experiment, run_dir, on_round)
        except FedMapError as error:
            err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "method",
                    "rounds",
                    "final_sparsity",
                    "final_test_accuracy",
                    "best_test_accuracy",
                    "bytes_total",
                    "bytes_ratio_vs_dense",
                    "wall_s",
                )
            },
            indent=2,
        )
    )
    err.print(f"run directory: {escape(str(run_dir))}", soft_wrap=True)


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
