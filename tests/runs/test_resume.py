"""Resume: an interrupted run continues to exactly the metrics of an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fedmap.cli import app
from fedmap.methods.registry import get_method
from fedmap.runs import checkpoint as checkpoint_module
from fedmap.runs.checkpoint import list_checkpoints
from fedmap.runs.config import dump_toml
from fedmap.runs.experiment import prepare
from fedmap.runs.run_dir import create_run_dir
from fedmap.runs.session import open_for_resume
from fedmap.runs.session import run as run_experiment

# Faults, a guard and pruning every round: every kind of state a checkpoint must carry.
STATEFUL = {
    "rounds": 9,
    "faults__dropout": 0.25,
    "faults__straggler_fraction": 0.3,
    "faults__deadline_s": 2.0,
    "pruning__guard_delta": 0.02,
}


# A guard that reverts: dense until round 8, one 80 % step at round 9 costs accuracy, and at
# round 10 the run returns to the guard's fallback (the dense model it kept in memory).
GUARDED = {
    "rounds": 12,
    "faults__dropout": 0.25,
    "pruning__warmup_rounds": 8,
    "pruning__rounds_per_step": 1,
    "pruning__rate": 0.8,
    "pruning__target_sparsity": 0.995,
    "pruning__guard_delta": 0.0,
}


class Crash(Exception):
    """Stands in for the process dying."""


def finished_files(run_dir: Path) -> dict[str, Any]:
    """Everything a finished run leaves, minus wall-clock time."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    csv_lines = (run_dir / "metrics.csv").read_text().splitlines()
    wall = csv_lines[0].split(",").index("wall_s")
    return {
        "rows": [{k: v for k, v in r.items() if k != "wall_s"} for r in rows],
        "csv": [[c for i, c in enumerate(line.split(",")) if i != wall] for line in csv_lines],
        "ledger": (run_dir / "ledger.csv").read_text(),
        "events": (run_dir / "events.jsonl").read_text(),
        "summary": {k: v for k, v in summary.items() if k != "wall_s"},
        "model": {k: v.tolist() for k, v in load_file(run_dir / "model.safetensors").items()},
    }


def fresh(config: Any, run_dir: Path) -> Any:
    create_run_dir(config, run_dir)
    return prepare(config)


def reference_and_crash(config: Any, tmp_path: Path, crash_round: int) -> Path:
    """Run ``config`` to the end in ``ref``, and again in ``cut`` until it dies after a round."""
    run_experiment(fresh(config, tmp_path / "ref"), tmp_path / "ref")

    def die(row: dict[str, Any]) -> None:
        if row["round"] == crash_round:
            raise Crash

    with pytest.raises(Crash):
        run_experiment(fresh(config, tmp_path / "cut"), tmp_path / "cut", on_round=die)
    return tmp_path / "cut"


def resume(run_dir: Path) -> dict[str, Any]:
    resumption = open_for_resume(run_dir)
    return run_experiment(resumption.experiment, run_dir, checkpoint=resumption.checkpoint)


@pytest.mark.parametrize("crash_at", [1, 4, 8])
def test_crash_after_a_round_then_resume_gives_identical_results(tmp_path, tiny_config, crash_at):
    config = tiny_config(**STATEFUL)
    reference_and_crash(config, tmp_path, crash_at)
    assert open_for_resume(tmp_path / "cut").next_round == crash_at + 1
    resume(tmp_path / "cut")
    assert finished_files(tmp_path / "cut") == finished_files(tmp_path / "ref")


def test_a_vectorized_run_resumes_identically(tmp_path, tiny_config):
    config = tiny_config(**STATEFUL, engine="vectorized")
    reference_and_crash(config, tmp_path, 3)
    resume(tmp_path / "cut")
    finished = finished_files(tmp_path / "cut")
    assert finished == finished_files(tmp_path / "ref")
    assert finished["summary"]["engine"] == "vectorized"


def test_the_guards_fallback_model_survives_a_crash(tmp_path, tiny_config):
    config = tiny_config(**GUARDED)
    reference_and_crash(config, tmp_path, 9)  # the fallback lives only in the checkpoint now
    rows = finished_files(tmp_path / "ref")["rows"]
    assert [r["density"] for r in rows[8:10]] == [0.2, 1.0]  # the revert under test happens
    resume(tmp_path / "cut")
    assert finished_files(tmp_path / "cut") == finished_files(tmp_path / "ref")


def test_rounds_written_after_the_last_checkpoint_are_cut_back_and_redone(
    tmp_path, tiny_config, monkeypatch
):
    """A crash between writing round 5's metrics and its checkpoint leaves an extra row."""
    config = tiny_config(**STATEFUL)
    run_experiment(fresh(config, tmp_path / "ref"), tmp_path / "ref")
    real = checkpoint_module.save_checkpoint

    def save_then_die(run_dir: Path, round: int, *args: Any) -> Path:
        if round == 5:
            raise Crash
        return real(run_dir, round, *args)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_then_die)
    with pytest.raises(Crash):
        run_experiment(fresh(config, tmp_path / "cut"), tmp_path / "cut")
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["round"] == 5  # written, but not checkpointed
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", real)
    assert open_for_resume(tmp_path / "cut").next_round == 5
    resume(tmp_path / "cut")
    assert finished_files(tmp_path / "cut") == finished_files(tmp_path / "ref")


def test_checkpoint_every_n_rounds_resumes_from_the_last_one(tmp_path, tiny_config):
    config = tiny_config(**STATEFUL, checkpoint_every=4)
    reference_and_crash(config, tmp_path, 7)
    assert open_for_resume(tmp_path / "cut").next_round == 5
    resume(tmp_path / "cut")
    assert finished_files(tmp_path / "cut") == finished_files(tmp_path / "ref")


# --------------------------------------------------------------------------- the real thing


KILL_TOML = """\
seed = 5
rounds = 24
device = "cpu"

[data]
name = "digits"
num_clients = 10

[model]
name = "mlp"

[client]
fraction = 1.0
epochs = 3
batch_size = 8

[pruning]
warmup_rounds = 2
rounds_per_step = 2
target_sparsity = 0.8

[faults]
dropout = 0.2
"""


def cli(*args: str | Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same threads in every process: same floats
    return subprocess.Popen(
        [sys.executable, "-m", "fedmap.cli", *map(str, args), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def rounds_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigkill_at_random_rounds_then_resume_matches_an_uninterrupted_run(tmp_path):
    config = tmp_path / "kill.toml"
    config.write_text(KILL_TOML)
    reference = cli("run", config, "--out", tmp_path / "ref")
    run_dir = tmp_path / "cut"
    process = cli("run", config, "--out", run_dir)
    rng = random.Random(12345)
    kills = []
    for low, high in ((2, 7), (9, 14), (16, 21)):
        target = rng.randint(low, high)
        deadline = time.monotonic() + 120
        while rounds_done(run_dir) < target and process.poll() is None:
            assert time.monotonic() < deadline, "the run stalled"
            time.sleep(0.01)
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills.append(rounds_done(run_dir))
        process = cli("run", "--resume", run_dir)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    assert b"resuming" in err
    assert reference.wait(timeout=300) == 0
    assert len(kills) == 3 and kills == sorted(kills) and kills[-1] < 24
    assert finished_files(run_dir) == finished_files(tmp_path / "ref")


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one_with_a_message(
    tmp_path, tiny_config
):
    config = tiny_config(**STATEFUL)
    reference_and_crash(config, tmp_path, 6)
    newest = list_checkpoints(tmp_path / "cut")[0]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10
    newest.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path / "cut"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "round-000006.ckpt" in result.output and "damaged" in result.output
    assert "at round 6" in result.output  # checkpoint 5 is the previous one
    assert newest.with_name(newest.name + ".damaged").exists()  # set aside, never tried again
    assert finished_files(tmp_path / "cut") == finished_files(tmp_path / "ref")


def test_resume_refuses_what_it_cannot_continue(tmp_path, tiny_config):
    runner = CliRunner()
    config = tiny_config(rounds=2)
    run_experiment(fresh(config, tmp_path / "done"), tmp_path / "done")
    done = runner.invoke(app, ["run", "--resume", str(tmp_path / "done")])
    assert done.exit_code == 0 and "already finished" in done.output

    both = runner.invoke(app, ["run", "x.toml", "--resume", str(tmp_path / "done")])
    assert both.exit_code == 1 and "--resume takes the run directory only" in both.output

    nothing = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert nothing.exit_code == 1 and "no config.toml" in nothing.output

    (tmp_path / "done" / "summary.json").unlink()
    edited = tiny_config(rounds=2, seed=99)
    (tmp_path / "done" / "config.toml").write_text(dump_toml(edited))
    changed = runner.invoke(app, ["run", "--resume", str(tmp_path / "done")])
    assert changed.exit_code == 1 and "different config" in changed.output


def test_resume_refuses_a_checkpoint_of_another_method_revision(tmp_path, tiny_config, monkeypatch):
    """Finishing a run under changed method code would mix two versions in one run."""
    cut = reference_and_crash(tiny_config(rounds=3), tmp_path, 2)
    monkeypatch.setattr(get_method("fedmap"), "revision", 2)
    refused = CliRunner().invoke(app, ["run", "--resume", str(cut)])
    assert refused.exit_code == 1
    assert "fedmap revision 1, this code runs revision 2" in " ".join(refused.output.split())
    assert not (cut / "summary.json").exists()


def test_global_random_generators_are_restored(tmp_path, tiny_config):
    """torch, numpy and Python generators continue from the checkpoint, not from the new process."""
    import numpy as np
    import torch

    def snapshot() -> tuple[Any, ...]:
        return torch.get_rng_state().tolist(), np.random.get_state()[1].tolist(), random.getstate()

    config = tiny_config(rounds=4)
    seen: dict[str, Any] = {}

    def die(row: dict[str, Any]) -> None:
        if row["round"] == 2:
            seen["crash"] = snapshot()
            raise Crash

    with pytest.raises(Crash):
        run_experiment(fresh(config, tmp_path / "cut"), tmp_path / "cut", on_round=die)
    torch.manual_seed(999)
    np.random.seed(999)
    random.seed(999)
    assert snapshot() != seen["crash"]
    resumption = open_for_resume(tmp_path / "cut")

    def look(row: dict[str, Any]) -> None:
        seen.setdefault("resumed", snapshot())

    run_experiment(
        resumption.experiment, tmp_path / "cut", on_round=look, checkpoint=resumption.checkpoint
    )
    assert seen["resumed"] == seen["crash"]


@pytest.mark.parametrize("method", ["prunefl", "feddst", "local", "gradual"])
def test_baselines_resume_identically(tmp_path, tiny_config, method):
    """PruneFL's pending importance and FedDST's count live only in the checkpoint after round 4."""
    config = tiny_config(
        rounds=7,
        pruning__method=method,
        pruning__warmup_rounds=1,
        pruning__rounds_per_step=2,
        pruning__target_sparsity=0.7,
    )
    reference_and_crash(config, tmp_path, 4)
    resume(tmp_path / "cut")
    assert finished_files(tmp_path / "cut") == finished_files(tmp_path / "ref")


def test_a_checkpoint_of_another_release_ends_resume_with_one_line(tmp_path, tiny_config):
    """Not taken for damage: skipping it would start an intact run again from round 1."""
    from safetensors.torch import save as save_safetensors

    run_dir = reference_and_crash(tiny_config(**STATEFUL), tmp_path, 3)
    newest = list_checkpoints(run_dir)[0]
    old = save_safetensors({"x": torch.zeros(1)}, metadata={"format": "fedmap-checkpoint-1"})
    newest.write_bytes(old)
    before = sorted(p.name for p in run_dir.rglob("*"))
    result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "fedmap-checkpoint-1" in lines[0] and "afresh" in lines[0]
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing renamed or cut
