"""Continue an interrupted run from its newest intact checkpoint.

Everything a run needs is in its directory: the resolved ``config.toml`` rebuilds
the identical experiment (data, partition and initial model all follow from the
seed), and the newest checkpoint that passes its checksum restores the round
loop. Damaged newer checkpoints are reported and skipped, never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedmap.errors import ConfigError
from fedmap.runs.checkpoint import Checkpoint, list_checkpoints, load_latest, set_aside
from fedmap.runs.config import load_config
from fedmap.runs.experiment import Experiment, check_config, prepare


@dataclass
class Resumption:
    """A run ready to continue: the experiment, where to continue from, and what was skipped."""

    experiment: Experiment
    checkpoint: Checkpoint | None  # None: no intact checkpoint, start again from round 1
    problems: list[str]  # one line per damaged checkpoint that was skipped
    finished: bool  # the run had already written its summary

    @property
    def next_round(self) -> int:
        """The first round that will run."""
        return 1 if self.checkpoint is None else self.checkpoint.round + 1


def open_for_resume(run_dir: Path) -> Resumption:
    """Rebuild the experiment of ``run_dir`` and find its newest intact checkpoint.

    Damaged checkpoints newer than it are renamed ``*.damaged`` (named in
    ``problems``) so they neither take a slot nor get tried again. Nothing else is
    written here: a checkpoint from another config is refused first.
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
    return Resumption(experiment, checkpoint, problems, finished)
