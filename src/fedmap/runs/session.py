"""Open a run (new or resumed) and run it into its run directory: what every front door calls.

:func:`open_run` is the one call behind ``fedmap run`` and ``fedmap run --resume``:
it validates the config and loads the data *before* creating anything, or finds a
run's newest intact checkpoint. :func:`run` then runs the rounds, appending each
round's metrics, ledger and events and checkpointing after it, and finishes with
the per-client accuracies, the model and ``summary.json`` (written last).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmap.core.ledger import append_csv
from fedmap.data.partition import write_partition_csv
from fedmap.errors import CheckpointError, ConfigError
from fedmap.rounds.loop import RoundLoop
from fedmap.runs.checkpoint import (
    Checkpoint,
    check_config,
    list_checkpoints,
    load_latest,
    restore_state,
    save_state,
    set_aside,
)
from fedmap.runs.config import load_config
from fedmap.runs.experiment import Experiment, build_loop, prepare
from fedmap.runs.export import save_model
from fedmap.runs.metrics import COLUMNS, MetricsWriter, append_events, metrics_row, read_metrics
from fedmap.runs.run_dir import (
    ROUND_FILES,
    create_run_dir,
    truncate_round_files,
    write_atomic,
    write_client_accuracy,
)
from fedmap.runs.summary import summarise


@dataclass
class OpenedRun:
    """A run ready to go: its experiment, its directory and where it continues from."""

    experiment: Experiment
    run_dir: Path
    checkpoint: Checkpoint | None = None  # None: start at round 1
    problems: list[str] = field(default_factory=list)  # one line per damaged checkpoint skipped
    finished: bool = False  # the run had already written its summary

    @property
    def next_round(self) -> int:
        """The first round that will run."""
        return 1 if self.checkpoint is None else self.checkpoint.round + 1


def open_run(
    config: Path | None = None,
    overrides: Sequence[str] = (),
    out: Path | None = None,
    resume: Path | None = None,
) -> OpenedRun:
    """A new run of ``config`` (with ``overrides``) in ``out``, or the run in ``resume``.

    A new run's directory defaults to ``runs/<config name>-<time>``; it is created
    only after the config validated and the data loaded, so a bad config leaves
    nothing behind.
    """
    if resume is not None:
        if config is not None or overrides or out is not None:
            raise ConfigError("--resume takes the run directory only (no CONFIG, --set, --out)")
        return open_for_resume(resume)
    if config is None:
        raise ConfigError("missing CONFIG (or --resume RUN_DIR)")
    resolved = load_config(config, list(overrides))
    experiment = prepare(resolved)  # data located and loaded before anything is written
    run_dir = out or Path("runs") / f"{config.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    create_run_dir(resolved, run_dir)
    return OpenedRun(experiment, run_dir)


def open_for_resume(run_dir: Path) -> OpenedRun:
    """Rebuild the experiment of ``run_dir`` and find its newest intact checkpoint.

    Everything a run needs is in its directory: the resolved ``config.toml``
    rebuilds the identical experiment. Damaged checkpoints newer than the one found
    are renamed ``*.damaged`` (named in ``problems``) so they neither take a slot
    nor get tried again. Nothing else is written here: a checkpoint from another
    config is refused first.
    """
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: {run_dir} is not a directory")
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise ConfigError(f"--resume: {run_dir} is not a run directory (no config.toml)")
    experiment = prepare(load_config(config_path))
    checkpoint, problems = load_latest(run_dir)
    if checkpoint is not None:
        check_config(checkpoint, experiment.config, run_dir)
    for path in list_checkpoints(run_dir):  # newest first: the damaged ones precede it
        if checkpoint is not None and path == checkpoint.path:
            break
        set_aside(path)
    finished = (run_dir / "summary.json").is_file()
    return OpenedRun(experiment, run_dir, checkpoint, problems, finished)


def run(
    experiment: Experiment,
    run_dir: Path,
    *,
    loop: RoundLoop | None = None,
    checkpoint: Checkpoint | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run all rounds (after ``checkpoint``'s, if given), writing the run directory as it goes.

    ``loop`` replaces the in-process simulation (the Flower ServerApp passes one
    over its own transport: its columns join every row, its per-round files the run
    directory, its summary ``summary.json``). ``on_round`` sees every metrics row.
    Only a transport whose clients live in this process is checkpointed (a Flower
    node keeps its own memory).
    """
    config, data = experiment.config, experiment.dataset
    write_partition_csv(
        run_dir / "partition.csv", experiment.clients, data.y_train.numpy(), data.num_classes
    )
    loop = loop or build_loop(experiment)
    if checkpoint is None:
        truncate_round_files(run_dir, dict.fromkeys(ROUND_FILES, 0))
    elif not loop.transport.resumable:
        raise CheckpointError("this transport's clients keep their own state: it cannot resume")
    else:
        restore_state(loop, checkpoint, run_dir, config)
    writer = MetricsWriter(run_dir, COLUMNS + loop.transport.columns)
    try:
        for record in loop.run(config.rounds):
            row = metrics_row(record)
            writer.write(row)
            append_csv(run_dir / "ledger.csv", record.ledger)
            append_events(run_dir / "events.jsonl", record.events)
            for file in record.files:
                append_csv(run_dir / file.name, file.rows, file.row_type)
            due = record.round % config.checkpoint_every == 0 or record.round == config.rounds
            if due and loop.transport.resumable:
                save_state(loop, run_dir, config)
            if on_round is not None:
                on_round(row)
    finally:
        writer.close()
    return finish(loop, experiment, run_dir)


def finish(loop: RoundLoop, experiment: Experiment, run_dir: Path) -> dict[str, Any]:
    """Write the final files; ``summary.json`` last, so its presence means the run finished."""
    config, model = experiment.config, loop.server.model
    summary = summarise(read_metrics(run_dir), experiment, loop.wall_s)
    summary.update(loop.transport.summary())
    final = loop.evaluator.evaluate(model.values)  # the final model, per client
    write_client_accuracy(run_dir / "client_accuracy.csv", final.client_accuracy)
    metadata = {
        "mask_version": str(model.version),
        "model": config.model.name,
        "density": repr(model.mask.density),
        "dtype": config.transport.dtype,
    }
    save_model(run_dir / "model.safetensors", model.values, model.mask, metadata)
    write_atomic(run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary
