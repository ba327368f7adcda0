"""``flwr run flower_app local``: FedMap in Flower's own simulation runtime (needs Ray).

Skipped where ``flwr[simulation]`` is not installed (CI installs plain ``flwr``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Flower's simulation runtime needs flwr[simulation]")

ROOT = Path(__file__).resolve().parents[2]


def test_flwr_run_in_the_simulation_runtime_gives_the_deployment_numbers(write_tiny, tmp_path):
    from fedmap.runs.config import load_config
    from fedmap.runs.experiment import prepare
    from fedmap.runs.session import run

    path = write_tiny(rounds=3, num_clients=3, fraction=1.0)
    out = tmp_path / "out"
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(tmp_path / "home"),
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    )
    command = [str(Path(sys.executable).parent / "flwr"), "run", str(ROOT / "flower_app")]
    command += ["local", "--stream", "--federation-config", "num-supernodes=3"]
    command += ["--run-config", f'config="{path}" out="{out}"']
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    finally:
        stop_local_superlink(str(tmp_path / "home"))
    assert done.returncode == 0, done.stdout[-2000:]
    assert (out / "summary.json").exists(), done.stdout[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    sim = tmp_path / "sim"
    sim.mkdir()
    run(prepare(load_config(path)), sim)
    sim_rows = [json.loads(x) for x in (sim / "metrics.jsonl").read_text().splitlines()]
    keys = ["mask_sha", "test_accuracy", "bytes_up", "bytes_down"]
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in sim_rows]


def stop_local_superlink(home: str) -> None:
    """The local SuperLink that ``flwr run`` started outlives it: stop it and its children."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"FLWR_HOME={home}" in environ and ("flower-" in cmdline or "flwr" in cmdline):
            pids.append(int(entry.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2.0)
