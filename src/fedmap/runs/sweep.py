"""Sweeps: one base config, a grid of overrides, one run directory per point.

A sweep file names a base experiment, fixed overrides (``[set]``) and a grid
(``[grid]``): each grid key is a config key with a list of values, or a list of
tables that set several keys together and carry a ``label`` (a data setting:
``{label = "dir0.5", "data.partition" = "dirichlet", "data.alpha" = 0.5}``). The
runs are the cartesian product. Dense FedAvg ignores every pruning key, so its
points collapse to one run per remaining combination instead of repeating it
once per target sparsity.

Every point is validated before anything runs. Each run is a separate ``fedmap
run`` process (its memory is returned when it ends; a crash costs one run), so
``parallel`` runs proceed at once, each with ``cores / parallel`` torch threads.
A run whose ``summary.json`` exists is skipped; one interrupted after a checkpoint
is resumed; one whose recorded config differs from the sweep's is left alone and
reported, never overwritten. Each run is claimed with a lock on ``logs/NAME.lock``
while it runs, so two sweeps over one ``--out`` (a second terminal, or machines
sharing a folder) split the grid: a run the other sweep holds is reported busy,
never started twice or deleted under it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
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
from fedmap.runs.checkpoint import list_checkpoints
from fedmap.runs.config import Config, apply_override, config_from_dict, dump_toml, read_toml
from fedmap.runs.cores import usable_cores
from fedmap.strategies.revisions import revision_mismatch

PRUNING_ONLY_PREFIX = "pruning."  # keys dense FedAvg ignores


@dataclass(frozen=True)
class SweepRun:
    """One point of the grid: its directory name, overrides and resolved config."""

    name: str
    overrides: dict[str, Any]
    config: Config


@dataclass(frozen=True)
class Sweep:
    """A parsed and validated sweep file."""

    path: Path
    base: Path
    out: Path
    parallel: int
    runs: list[SweepRun]


@dataclass(frozen=True)
class RunOutcome:
    """What became of one run: ``status`` is finished, skipped, failed, stale or busy."""

    name: str
    status: str
    wall_s: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def load_sweep(
    path: Path,
    out: Path | None = None,
    parallel: int | None = None,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
) -> Sweep:
    """Read ``path``, expand its grid and validate every run's config (nothing is written).

    ``overrides`` (``key=value``, as ``--set``) apply to every run after ``[set]``;
    ``only`` keeps the runs whose names match one of its globs.
    """
    raw = read_toml(path, "sweep")
    unknown = set(raw) - {"base", "out", "parallel", "set", "grid"}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown)}")
    if "base" not in raw:
        raise ConfigError(f"{path}: 'base' (the experiment TOML the grid varies) is missing")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base config not found: {base}")
    chosen_out = out or Path(str(raw.get("out", Path("runs") / path.stem)))
    workers = parallel if parallel is not None else raw.get("parallel", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{path}: parallel must be an integer >= 1, got {workers!r}")
    fixed = _flatten(raw.get("set", {}), "set")
    for override in overrides or []:
        key, sep, _ = override.partition("=")
        scratch: dict[str, Any] = {}
        apply_override(scratch, override)
        fixed[key.strip()] = _flatten(scratch, "--set")[key.strip()]
    grid = raw.get("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: [grid] must be a table of lists")
    base_raw = read_toml(base)
    runs = expand(base_raw, fixed, grid)
    if only:
        runs = [r for r in runs if any(fnmatch.fnmatchcase(r.name, g) for g in only)]
        if not runs:
            raise ConfigError(f"--only {only}: no run of {path} matches")
    return Sweep(path, base, chosen_out, workers, runs)


def expand(base_raw: dict[str, Any], fixed: dict[str, Any], grid: dict[str, Any]) -> list[SweepRun]:
    """The grid's runs in file order, dense duplicates collapsed, each config validated."""
    axes: list[list[tuple[str, dict[str, Any]]]] = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{key}: expected a non-empty list")
        axis = []
        for value in values:
            if isinstance(value, dict):
                label = str(value.get("label", "")).strip()
                if not label:
                    raise ConfigError(f"grid.{key}: every table needs a 'label'")
                settings = _flatten({k: v for k, v in value.items() if k != "label"}, key)
                axis.append((label, settings))
            else:
                short = key.rsplit(".", 1)[-1]
                label = str(value) if key == "pruning.method" else f"{short}{value}"
                axis.append((label, {key: value}))
        axes.append(axis)
    runs: dict[str, SweepRun] = {}
    for point in itertools.product(*axes) if axes else [()]:
        overrides = dict(fixed)
        for _, settings in point:
            overrides.update(settings)
        method = overrides.get("pruning.method", base_raw.get("pruning", {}).get("method"))
        labels = [label for label, settings in point if not _dense_ignores(method, settings)]
        if method == "none":
            overrides = {k: v for k, v in overrides.items() if k not in _pruning_axes(point)}
        name = "-".join(_safe(label) for label in labels) or "run"
        raw = _deep_copy(base_raw)
        for key, value in overrides.items():
            apply_override(raw, f"{key}={_toml_literal(value)}")
        try:
            config = config_from_dict(raw)
        except ConfigError as error:
            raise ConfigError(f"sweep run {name}: {error}") from error
        if name in runs:  # dense FedAvg's collapsed points are the same run; anything else clashes
            if dump_toml(runs[name].config) != dump_toml(config):
                raise ConfigError(
                    f"sweep runs {runs[name].overrides} and {overrides} are both named {name!r}: "
                    "give their grid tables distinct labels"
                )
            continue
        runs[name] = SweepRun(name, overrides, config)
    return list(runs.values())


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
    """Whether ``run_dir`` was started with exactly this point's resolved config."""
    recorded = run_dir / "config.toml"
    return recorded.is_file() and recorded.read_text() == dump_toml(run.config)


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


def _flatten(table: Any, where: str) -> dict[str, Any]:
    """``{"data": {"alpha": 0.5}}`` and ``{"data.alpha": 0.5}`` alike -> dotted keys."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of config keys")
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            for sub, inner in _flatten(value, f"{where}.{key}").items():
                flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    return flat


def _dense_ignores(method: Any, settings: dict[str, Any]) -> bool:
    """Whether an axis value only sets pruning keys that dense FedAvg ignores."""
    return method == "none" and all(
        k.startswith(PRUNING_ONLY_PREFIX) and k != "pruning.method" for k in settings
    )


def _pruning_axes(point: tuple[tuple[str, dict[str, Any]], ...]) -> set[str]:
    return {
        k
        for _, settings in point
        for k in settings
        if k.startswith(PRUNING_ONLY_PREFIX) and k != "pruning.method"
    }


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._=+" else "_" for c in label)


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in raw.items()}
