"""``fedmap deploy local`` end to end: real SuperLink and SuperNode processes on loopback.

Slow by nature (every Flower round starts one ClientApp process per node), so the
runs are tiny: digits, an MLP, a few rounds. What the issue asks of a deployment
is checked on the real wire: TLS and node authentication, the run's real outcome,
density on schedule, accuracy rising, Flower's bytes beside the ledger, the same
masks as ``fedmap run``, a node killed and brought back, a dense Flower client, an
unregistered node refused, and no process left behind.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmap.flower.deployment import DeployError, LocalDeployment
from fedmap.flower.wire import FRAMING_BOUND_NBYTES

FLOWER_PROGRAMS = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-")

# Under ``pytest -n``, these tests run one after another on one worker: each saturates
# the cores with a ClientApp process per node and round, and two at once would push
# healthy replies past the round timeout.
pytestmark = pytest.mark.xdist_group("flower-deploy")


def flower_processes_of(marker: str) -> list[int]:
    """Live Flower processes whose environment mentions ``marker`` (a deployment's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(p in cmdline for p in FLOWER_PROGRAMS) and marker in environ:
            found.append(int(entry.name))
    return found


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tls_auth_deployment_matches_fedmap_run(write_tiny, tmp_path):
    from fedmap.runs.config import load_config
    from fedmap.runs.experiment import prepare
    from fedmap.runs.session import run

    path = write_tiny(rounds=3, num_clients=3, fraction=1.0)
    run_dir = tmp_path / "flower"
    command = [sys.executable, "-m", "fedmap", "deploy", "local", str(path), "--nodes", "3"]
    command += ["--tls", "--auth", "--out", str(run_dir), "--timeout", "500"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 3: density 0.640" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["flower"]["local_rounds"] == 9
    rows = rows_of(run_dir)
    assert summary["rounds"] == 3 and len(rows) == 3
    assert [r["density"] for r in rows] == pytest.approx([1.0, 0.8, 0.64], abs=1e-3)
    assert rows[-1]["test_accuracy"] > rows[0]["test_accuracy"]
    assert all(r["answered"] == 3 for r in rows)
    # Flower's bytes: the ledger's plus a bounded framing, message by message.
    with (run_dir / "nodes.csv").open() as handle:
        nodes = list(csv.DictReader(handle))
    assert len(nodes) == 9
    for node in nodes:
        for way in ("down", "up"):
            framing = int(node[f"flower_{way}"]) - int(node[f"ledger_{way}"])
            assert 0 < framing <= FRAMING_BOUND_NBYTES, (node, way)
        assert float(node["cpu_s"]) > 0 and float(node["peak_rss_mb"]) > 50
    # The same config and seed in the simulator: the same masks, round by round.
    sim = tmp_path / "sim"
    sim.mkdir()
    run(prepare(load_config(path)), sim)
    sim_rows = rows_of(sim)
    assert [r["mask_sha"] for r in rows] == [r["mask_sha"] for r in sim_rows]
    assert abs(rows[-1]["test_accuracy"] - sim_rows[-1]["test_accuracy"]) <= 0.005
    assert (run_dir / "ledger.csv").read_text() == (sim / "ledger.csv").read_text()
    assert flower_processes_of("fedmap-deploy-") == []  # nothing left behind
    assert (run_dir / "flower_logs" / "superlink.log").exists()


def test_unregistered_node_is_refused(tmp_path):
    with LocalDeployment(tmp_path / "d", nodes=1, tls=True, auth=True) as deployment:
        deployment.start()
        deployment.nodes = 2  # a second key, generated but never registered
        with pytest.raises(DeployError, match="supernode1 exited"):
            deployment.start_node(1)
        log = (tmp_path / "d" / "logs" / "supernode1.log").read_text()
        assert "Failed to activate SuperNode" in log or "Exit Code" in log
    assert flower_processes_of(str(tmp_path / "d")) == []


def test_killed_node_rejoins_with_a_bootstrap_and_a_dense_client_is_charged_dense(
    write_tiny, tmp_path
):
    from fedmap.runs.config import dump_toml, load_config
    from fedmap.runs.experiment import prepare

    path = write_tiny(rounds=4, num_clients=2, fraction=1.0)
    config = load_config(path, ["faults.min_clients=2"])
    resolved = tmp_path / "config.toml"
    resolved.write_text(dump_toml(config))
    out = tmp_path / "run"
    workdir = tmp_path / "d"
    with LocalDeployment(workdir, nodes=3, dense_nodes=1) as deployment:
        deployment.start()
        run_id = deployment.submit(
            {"config": str(resolved), "out": str(out), "round-timeout": 45.0}
        )
        wait_for_round(out, 1, deployment, run_id)
        deployment.kill_node(1)
        # Restarted at once, it still misses round 2: its old node id holds partition 1
        # until that round finds it late. No auth, so it returns under a new node id and
        # is bootstrapped in round 3 or 4.
        deployment.rejoin_node(1)
        status = deployment.wait(run_id, timeout_s=400)
    assert status.startswith("finished:completed"), status
    assert flower_processes_of(str(workdir)) == []
    rows = rows_of(out)
    assert len(rows) == 4 and json.loads((out / "summary.json").read_text())["rounds"] == 4
    missed = [r for r in rows if r["dropped"] + r["late"] > 0]
    assert missed and all(r["answered"] >= 2 for r in rows)  # those rounds went on without it
    back = [r for r in rows if r["round"] > missed[0]["round"] and r["bootstraps"] >= 1]
    assert back, "the restarted node was never bootstrapped"
    assert rows[-1]["answered"] == 3  # both FedMap nodes and the dense one
    assert rows[-1]["density"] < 1.0
    numel = prepare(config).layout.numel
    with (out / "nodes.csv").open() as handle:
        dense = [n for n in csv.DictReader(handle) if n["kind"] == "dense"]
    assert dense and all(int(n["ledger_down"]) == numel * 4 for n in dense)
    assert all(int(n["ledger_up"]) == numel * 4 for n in dense if int(n["flower_up"]) > 0)


def wait_for_round(out: Path, round: int, deployment: LocalDeployment, run_id: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= round:
            return
        status = deployment.status(run_id)
        assert not status.startswith("finished:"), status
        time.sleep(0.5)
    raise AssertionError(f"round {round} did not finish in time")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "2", "--auth"], "--auth needs --tls"),
        (["--nodes", "0"], "--nodes must be at least 1"),
        (["--nodes", "2", "--dense-nodes", "2"], "at least one FedMap node"),
        (["--nodes", "2", "--set", "rounds=-1"], "rounds"),
    ],
)
def test_deploy_refuses_bad_options_before_starting_anything(write_tiny, tmp_path, args, message):
    from typer.testing import CliRunner

    from fedmap.cli import app

    path = write_tiny()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["deploy", "local", str(path), "--out", str(out), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert not out.exists()


def test_deploy_names_a_missing_config(tmp_path):
    from typer.testing import CliRunner

    from fedmap.cli import app

    missing = tmp_path / "nope.toml"
    result = CliRunner().invoke(app, ["deploy", "local", str(missing), "--nodes", "2"])
    assert result.exit_code == 1 and "nope.toml" in result.output
