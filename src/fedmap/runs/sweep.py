"""Sweeps: every point of a grid (:mod:`fedmap.runs.grid`) run in its own process, resumably.

Each run is a separate ``fedmap run`` process (its memory is returned when it
ends; a crash costs one run), so ``parallel`` runs proceed at once, each with
``cores / parallel`` torch threads. A run whose ``summary.json`` exists is
skipped; one interrupted after a checkpoint is resumed; one whose recorded config
differs from the sweep's is left alone and reported, never overwritten. Each run
is claimed with a lock on ``logs/NAME.lock`` while it runs, so two sweeps over
one ``--out`` (a second terminal, or machines sharing a folder) split the grid:
a run the other sweep holds is reported busy, never started twice or deleted
under it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedmap.errors import ConfigError
from fedmap.methods.revisions import revision_mismatch
from fedmap.runs.checkpoint import list_checkpoints
from fedmap.runs.config import config_from_text, dump_toml
from fedmap.runs.cores import usable_cores
from fedmap.runs.grid import Sweep, SweepRun


@dataclass(frozen=True)
class RunOutcome:
    """What became of one run: ``status`` is finished, skipped, failed, stale or busy."""

    name: str
    status: str
    wall_s: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def run_sweep(
    sweep: Sweep,
    on_outcome: Callable[[RunOutcome, int, int], None] | None = None,
    python: str = sys.executable,
) -> list[RunOutcome]:
    """Run every unfinished run, ``sweep.parallel`` at a time; outcomes in completion order."""
    sweep.out.mkdir(parents=True, exist_ok=True)
    (sweep.out / "configs").mkdir(exist_ok=True)
    (sweep.out / "logs").mkdir(exist_ok=True)
    threads = max(1, usable_cores() // sweep.parallel)
    outcomes: list[RunOutcome] = []
    total = len(sweep.runs)

    def report(outcome: RunOutcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome, len(outcomes), total)

    pending = []
    for run in sweep.runs:
        early = _already_done(sweep, run)
        if early is not None:
            report(early)
        else:
            pending.append(run)
    children = _Children()
    pool = ThreadPoolExecutor(max_workers=sweep.parallel)
    try:
        futures = [pool.submit(_run_one, sweep, run, python, threads, children) for run in pending]
        for future in as_completed(futures):
            report(future.result())
    except BaseException:  # Ctrl-C: start nothing more, stop what runs (resumable later)
        children.stopping = True
        pool.shutdown(wait=False, cancel_futures=True)
        children.terminate()
        raise
    pool.shutdown()
    return outcomes


class _Children:
    """The ``fedmap run`` processes in flight, so an interrupted sweep can stop them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def start(
        self, args: list[str], log: Any, env: dict[str, str], claim: int | None
    ) -> subprocess.Popen[bytes]:
        """Start a child that also holds ``claim`` (the run's lock) until it exits."""
        with self.lock:
            if self.stopping:
                raise RuntimeError("the sweep is stopping")
            process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=() if claim is None else (claim,),
            )
            self.running.add(process)
            return process

    def done(self, process: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.running.discard(process)

    def terminate(self, grace_s: float = 30.0) -> None:
        """SIGTERM every child (each keeps its last checkpoint); SIGKILL what outlives the grace."""
        with self.lock:
            running = list(self.running)
        deadline = time.monotonic() + grace_s
        try:
            for process in running:
                process.terminate()
            for process in running:
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        finally:  # also after a second Ctrl-C during the wait
            for process in running:
                if process.poll() is None:
                    process.kill()


def _already_done(sweep: Sweep, run: SweepRun) -> RunOutcome | None:
    """Skipped (finished with this config) or stale (another config or method revision)."""
    run_dir = sweep.out / run.name
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return None
    if not _same_config(run_dir, run):
        return RunOutcome(
            run.name, "stale", detail=f"{run_dir} holds a different config; delete it to rerun"
        )
    summary = json.loads(summary_path.read_text())
    mismatch = revision_mismatch(run.config.pruning.method, summary)
    if mismatch is not None:
        return RunOutcome(run.name, "stale", detail=f"{run_dir} {mismatch}; delete it to rerun")
    return RunOutcome(run.name, "skipped", summary=summary)


def _same_config(run_dir: Path, run: SweepRun) -> bool:
    """Whether ``run_dir`` was started with exactly this point's resolved config.

    Compared as configs, not as text: a key added to fedmap since the run (with a
    default that changes nothing) must not make a finished run stale.
    """
    recorded = run_dir / "config.toml"
    if not recorded.is_file():
        return False
    try:
        config = config_from_text(recorded.read_text(), str(recorded))
    except ConfigError:  # a key fedmap no longer knows, or a value it no longer accepts
        return False
    return dump_toml(config) == dump_toml(run.config)


def _run_one(
    sweep: Sweep, run: SweepRun, python: str, threads: int, children: _Children
) -> RunOutcome:
    """Claim the run, then start it unless another sweep finished it since this one began."""
    with _claim(sweep.out / "logs" / f"{run.name}.lock") as claim:
        if claim is False:
            detail = f"another sweep is running it (holds logs/{run.name}.lock)"
            return RunOutcome(run.name, "busy", detail=detail)
        done = _already_done(sweep, run)
        if done is not None:
            return done
        return _start_run(sweep, run, python, threads, children, claim)


@contextlib.contextmanager
def _claim(lock_path: Path) -> Iterator[int | Literal[False] | None]:
    """An exclusive lock on the run, not waited for: its descriptor, or False if another holds it.

    ``flock`` rather than a marker file, which a killed sweep would leave behind
    and which would then need a staleness rule: the OS drops the lock when the
    last process holding it exits. The run's process inherits the descriptor, so
    a sweep killed with SIGKILL leaves the claim with the run it orphaned, not free
    for a second copy. Without ``fcntl`` (Windows) runs are not claimed (None), and
    two sweeps over one folder must not overlap.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield None
        return
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield handle.fileno()  # closing the last descriptor to it releases the lock


def _start_run(
    sweep: Sweep,
    run: SweepRun,
    python: str,
    threads: int,
    children: _Children,
    claim: int | None,
) -> RunOutcome:
    """One ``fedmap run`` process (or ``--resume`` after a checkpoint); its log in logs/."""
    run_dir = sweep.out / run.name
    config_path = sweep.out / "configs" / f"{run.name}.toml"
    config_path.write_text(dump_toml(run.config))
    if list_checkpoints(run_dir):
        if not _same_config(run_dir, run):
            return RunOutcome(
                run.name,
                "stale",
                detail=f"{run_dir} was started with a different config; delete it to rerun",
            )
        args = ["run", "--resume", str(run_dir), "--quiet"]
    else:
        if run_dir.exists():  # started, never checkpointed: nothing worth keeping
            shutil.rmtree(run_dir)
        args = ["run", str(config_path), "--out", str(run_dir), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    started = time.perf_counter()
    log_path = sweep.out / "logs" / f"{run.name}.log"
    with log_path.open("a") as log:
        log.write(f"$ fedmap {' '.join(args)}\n")
        log.flush()
        offset = log.tell()  # this attempt's output starts here
        process = children.start([python, "-m", "fedmap", *args], log, env, claim)
        try:
            code = process.wait()
        finally:
            children.done(process)
    wall = time.perf_counter() - started
    summary_path = run_dir / "summary.json"
    if code != 0 or not summary_path.is_file():
        with log_path.open() as log:
            log.seek(offset)
            tail = log.read().strip().splitlines()[-1:]
        return RunOutcome(
            run.name, "failed", wall, detail=f"exit {code}: {tail[0] if tail else 'no output'}"
        )
    return RunOutcome(run.name, "finished", wall, summary=json.loads(summary_path.read_text()))
