"""The ``fedmap`` command line: each command parses its options and calls the library.

Errors a user can fix (bad config, missing data) print one line and exit 1,
without a traceback and without a run directory. What is printed lives in
:mod:`fedmap.terminal`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from fedmap import terminal
from fedmap.errors import ConfigError, FedMapError
from fedmap.terminal import say

if TYPE_CHECKING:
    from fedmap.runs.session import OpenedRun

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="FedMap: federated learning with iterative magnitude pruning.",
)

Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
]
RunDir = Annotated[
    Path | None, typer.Option("--out", help="Run directory (default runs/<config>-<time>).")
]
Resume = Annotated[
    Path | None, typer.Option("--resume", help="Continue the interrupted run in this directory.")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bar.")]


@app.callback()
def _root() -> None:
    """FedMap: federated learning with iterative magnitude pruning."""


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment TOML file (omit with --resume).")
    ] = None,
    set_: Overrides = None,
    out: RunDir = None,
    resume: Resume = None,
    quiet: Quiet = False,
) -> None:
    """Run one experiment and write its run directory (or continue one with --resume)."""
    from fedmap.runs.session import open_run

    try:
        opened = open_run(config, set_ or [], out, resume)
    except FedMapError as error:
        _fail(error)
    for problem in opened.problems:
        terminal.warn(problem)
    if opened.finished:
        say(f"run {escape(str(resume))} already finished; nothing to resume")
        return
    if resume is not None:
        say(f"resuming {escape(str(opened.run_dir))} at round {opened.next_round}")
    summary = _run_with_progress(opened, quiet)
    terminal.print_run_summary(summary, opened.run_dir)


def _run_with_progress(opened: OpenedRun, quiet: bool) -> dict[str, Any]:
    """Run ``opened`` under a progress bar; Ctrl-C says how to resume."""
    from fedmap.runs.session import run as run_experiment

    experiment, run_dir, cfg = opened.experiment, opened.run_dir, opened.experiment.config
    for note in experiment.notes:
        terminal.warn(note)
    say(
        f"fedmap: {cfg.pruning.method} on {cfg.data.name}/{cfg.data.partition}, "
        f"{cfg.model.name}, {cfg.rounds} rounds, {experiment.engine} engine on {experiment.device} "
        f"-> {escape(str(run_dir))}"
    )
    with terminal.progress_bar(quiet) as progress:
        done = opened.next_round - 1
        task = progress.add_task("round", total=cfg.rounds, completed=done, status="")

        def on_round(row: dict[str, Any]) -> None:
            progress.update(task, completed=row["round"], status=terminal.round_status(row))

        try:
            return run_experiment(
                experiment, run_dir, checkpoint=opened.checkpoint, on_round=on_round
            )
        except FedMapError as error:
            _fail(error)
        except KeyboardInterrupt:
            progress.stop()
            say(f"interrupted; resume with: fedmap run --resume {escape(str(run_dir))}")
            raise typer.Exit(130) from None


@app.command()
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep TOML: base, [set], [grid].")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder of run directories (default: the file's).")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option("--parallel", min=1, help="Runs at once (processes).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override for every run: section.key=value (repeatable)."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only names matching this glob (repeatable)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs, run nothing.")] = False,
) -> None:
    """Run every point of a grid (methods x settings x seeds ...), skipping finished runs."""
    import signal

    from fedmap.runs.grid import load_sweep
    from fedmap.runs.sweep import run_sweep

    try:
        plan = load_sweep(sweep_file, out, parallel, set_ or [], only or [])
    except FedMapError as error:
        _fail(error)
    say(
        f"sweep {escape(str(sweep_file))}: {len(plan.runs)} runs, {plan.parallel} at a time "
        f"-> {escape(str(plan.out))}"
    )
    if dry_run:
        for item in plan.runs:
            print(item.name)
        return
    started = time.perf_counter()

    def on_outcome(outcome: Any, done: int, total: int) -> None:
        line = terminal.sweep_line(outcome, done, total, time.perf_counter() - started)
        terminal.err.print(line, soft_wrap=True, highlight=False)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill/timeout: stop runs too
    try:
        outcomes = run_sweep(plan, on_outcome)
    except KeyboardInterrupt:
        say(
            "interrupted: running runs stopped at their last checkpoint; "
            "run the same command again to continue"
        )
        raise typer.Exit(130) from None
    statuses = [o.status for o in outcomes]
    count = terminal.print_sweep_end(statuses, plan.out, time.perf_counter() - started)
    if count["failed"] or count["stale"]:
        raise typer.Exit(1)


@app.command()
def report(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Run directories, or folders of them (a sweep's --out).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where report.md, report.html and PNGs go.")],
) -> None:
    """Compare runs: tables (mean ± std over seeds) and figures, as Markdown and HTML."""
    from fedmap.reporting.report import write_report

    try:
        md_path, warnings = write_report(run_dirs, out)
    except FedMapError as error:
        _fail(error)
    for warning in warnings:
        terminal.warn(warning)
    say(f"report: {escape(str(md_path))} and {escape(str(out / 'report.html'))}")


deploy_app = typer.Typer(no_args_is_help=True, help="Run FedMap on a real Flower deployment.")
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("local")
def deploy_local(
    config: Annotated[Path, typer.Argument(help="Experiment TOML file.")],
    nodes: Annotated[int, typer.Option("--nodes", help="SuperNodes to start (one client each).")],
    tls: Annotated[bool, typer.Option("--tls", help="TLS with a throw-away local CA.")] = False,
    auth: Annotated[
        bool, typer.Option("--auth", help="Admit only registered SuperNode keys (needs --tls).")
    ] = False,
    dense_nodes: Annotated[
        int, typer.Option("--dense-nodes", help="Of the nodes, how many run a plain dense client.")
    ] = 0,
    set_: Overrides = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Run directory (default runs/<config>-deploy-<time>)."),
    ] = None,
    round_timeout: Annotated[
        float, typer.Option("--round-timeout", help="Seconds a round waits for replies.")
    ] = 120.0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds the whole run may take.")
    ] = 3600.0,
) -> None:
    """A SuperLink and N SuperNodes on this machine, one run, everything stopped after.

    Success means the run really completed (Flower's status and the run directory
    both say so); every Flower process is stopped whatever happens.
    """
    try:
        from fedmap.flower.deploy import deploy_local as run_deployment
    except ImportError as error:
        extra = "fedmap deploy needs the flower extra: pip install 'fedmap[flower]'"
        _fail(ConfigError(f"{extra} ({error})"))
    extras = [f"{dense_nodes} dense"] * bool(dense_nodes) + ["TLS"] * tls + ["node auth"] * auth
    say(f"fedmap deploy: {nodes} SuperNodes ({', '.join(extras) or 'insecure'}); starting Flower")
    try:
        run_dir, summary = run_deployment(
            config,
            set_ or [],
            nodes=nodes,
            tls=tls,
            auth=auth,
            dense_nodes=dense_nodes,
            out=out,
            round_timeout_s=round_timeout,
            timeout_s=timeout,
            on_round=lambda row: say(terminal.deploy_round_line(row)),
        )
    except FedMapError as error:
        _fail(error)
    keys = ("method", "rounds", "final_sparsity", "final_test_accuracy", "bytes_total")
    print(json.dumps({**{k: summary[k] for k in keys}, "flower": summary["flower"]}, indent=2))
    say(f"run directory: {escape(str(run_dir))} (Flower logs in flower_logs/)")


def _fail(error: FedMapError) -> NoReturn:
    """Print one error line and exit 1."""
    terminal.error(str(error))
    raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
