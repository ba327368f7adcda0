"""The ``fedmap`` command line.

Errors a user can fix (bad config, missing data) print one line and exit 1,
without a traceback and without a run directory.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedmap.errors import ConfigError, FedMapError

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
    config: Annotated[
        Path | None, typer.Argument(help="Experiment TOML file (omit with --resume).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/<config>-<time>).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Continue the interrupted run in this run directory."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run one experiment and write its run directory (or continue one with --resume)."""
    from fedmap.runs.checkpoint import Checkpoint
    from fedmap.runs.config import load_config
    from fedmap.runs.experiment import create_run_dir, prepare
    from fedmap.runs.experiment import run as run_experiment
    from fedmap.runs.resume import open_for_resume

    checkpoint: Checkpoint | None = None
    try:
        if resume is not None:
            if config is not None or set_ or out is not None:
                raise ConfigError("--resume takes the run directory only (no CONFIG, --set, --out)")
            resumption = open_for_resume(resume)
            for problem in resumption.problems:
                err.print(f"[yellow]warning:[/yellow] {escape(problem)}", soft_wrap=True)
            if resumption.finished:
                err.print(
                    f"run {escape(str(resume))} already finished; nothing to resume",
                    soft_wrap=True,
                )
                return
            experiment, checkpoint, run_dir = resumption.experiment, resumption.checkpoint, resume
            cfg = experiment.config
            err.print(
                f"resuming {escape(str(run_dir))} at round {resumption.next_round}",
                soft_wrap=True,
            )
        else:
            if config is None:
                raise ConfigError("missing CONFIG (or --resume RUN_DIR)")
            cfg = load_config(config, set_ or [])
            experiment = prepare(cfg)  # data located and loaded before anything is written
            run_dir = out or Path("runs") / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            create_run_dir(cfg, run_dir)
    except FedMapError as error:
        _fail(error)
    for note in experiment.notes:
        err.print(f"[yellow]warning:[/yellow] {escape(note)}", soft_wrap=True)
    err.print(
        f"fedmap: {cfg.pruning.method} on {cfg.data.name}/{cfg.data.partition}, "
        f"{cfg.model.name}, {cfg.rounds} rounds, {experiment.engine} engine on {experiment.device} "
        f"-> {escape(str(run_dir))}",
        soft_wrap=True,
    )
    with _progress(quiet) as progress:
        done = 0 if checkpoint is None else checkpoint.round
        task = progress.add_task("round", total=cfg.rounds, completed=done, status="")

        def on_round(row: dict[str, Any]) -> None:
            status = (
                f"density {row['density']:.3f}  acc {row['test_accuracy']:.4f}  "
                f"{row['bytes_cum'] / 1e6:,.1f} MB"
            )
            if row["rejected"] or row["dropped"] or row["late"]:
                status += f"  drop {row['dropped']} late {row['late']} rej {row['rejected']}"
            progress.update(task, completed=row["round"], status=status)

        try:
            summary = run_experiment(experiment, run_dir, on_round, checkpoint=checkpoint)
        except FedMapError as error:
            _fail(error)
        except KeyboardInterrupt:
            progress.stop()
            err.print(
                f"interrupted; resume with: fedmap run --resume {escape(str(run_dir))}",
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
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
    trouble = {
        "dropped": summary["clients_dropped"],
        "late": summary["clients_late"],
        "rejected": summary["replies_rejected"],
        "retried rounds": summary["round_retries"],
    }
    if any(trouble.values()):
        listed = ", ".join(f"{v} {k}" for k, v in trouble.items() if v)
        err.print(f"faults: {listed} (each with its reason in events.jsonl)", soft_wrap=True)
    err.print(f"run directory: {escape(str(run_dir))}", soft_wrap=True)


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
    from fedmap.runs.sweep import load_sweep, run_sweep

    try:
        plan = load_sweep(sweep_file, out, parallel, set_ or [], only or [])
    except FedMapError as error:
        _fail(error)
    err.print(
        f"sweep {escape(str(sweep_file))}: {len(plan.runs)} runs, {plan.parallel} at a time "
        f"-> {escape(str(plan.out))}",
        soft_wrap=True,
    )
    if dry_run:
        for item in plan.runs:
            print(item.name)
        return
    started = time.perf_counter()

    def on_outcome(outcome: Any, done: int, total: int) -> None:
        colour = {
            "finished": "green",
            "skipped": "cyan",
            "failed": "red",
            "stale": "yellow",
            "busy": "magenta",
        }
        line = f"[{done}/{total}] [{colour[outcome.status]}]{outcome.status:8}[/] {outcome.name}"
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
        elapsed = time.perf_counter() - started
        line += f"  (elapsed {elapsed / 60:.1f} min)"
        err.print(line, soft_wrap=True, highlight=False)

    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill/timeout: stop runs too
    try:
        outcomes = run_sweep(plan, on_outcome)
    except KeyboardInterrupt:
        err.print(
            "interrupted: running runs stopped at their last checkpoint; "
            "run the same command again to continue",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    count = Counter(o.status for o in outcomes)
    err.print(
        f"sweep done in {(time.perf_counter() - started) / 60:.1f} min: "
        f"{count['finished']} run, {count['skipped']} skipped (finished before), "
        f"{count['failed']} failed, {count['stale']} stale; "
        f"logs in {escape(str(plan.out / 'logs'))}",
        soft_wrap=True,
    )
    if count["busy"]:
        err.print(
            f"{count['busy']} run(s) were running in another sweep over {escape(str(plan.out))}; "
            "run this command again once it ends to include them",
            soft_wrap=True,
        )
    err.print(
        f"report: fedmap report {escape(str(plan.out))} --out {escape(str(plan.out / 'report'))}"
    )
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
    from fedmap.runs.report import write_report

    try:
        md_path, warnings = write_report(run_dirs, out)
    except FedMapError as error:
        _fail(error)
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    err.print(
        f"report: {escape(str(md_path))} and {escape(str(out / 'report.html'))}", soft_wrap=True
    )


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
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
    ] = None,
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
        _fail(
            ConfigError(
                f"fedmap deploy needs the flower extra: pip install 'fedmap[flower]' ({error})"
            )
        )
    extras = [f"{dense_nodes} dense"] if dense_nodes else []
    extras += ["TLS"] * tls + ["node auth"] * auth
    err.print(
        f"fedmap deploy: {nodes} SuperNodes ({', '.join(extras) or 'insecure'}); starting Flower",
        soft_wrap=True,
    )

    def on_round(row: dict[str, Any]) -> None:
        err.print(
            f"round {row['round']}: density {row['density']:.3f}  acc {row['test_accuracy']:.4f}  "
            f"ledger {row['bytes_up'] + row['bytes_down']:,} B  "
            f"flower {row['flower_bytes_up'] + row['flower_bytes_down']:,} B  "
            f"answered {row['answered']}/{row['sampled']}",
            soft_wrap=True,
        )

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
            on_round=on_round,
        )
    except FedMapError as error:
        _fail(error)
    keys = ("method", "rounds", "final_sparsity", "final_test_accuracy", "bytes_total")
    print(json.dumps({**{k: summary[k] for k in keys}, "flower": summary["flower"]}, indent=2))
    err.print(
        f"run directory: {escape(str(run_dir))} (Flower logs in flower_logs/)", soft_wrap=True
    )


def _fail(error: FedMapError) -> NoReturn:
    """Print one error line and exit 1."""
    err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


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
