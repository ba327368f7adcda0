"""``fedmap deploy local``: a real SuperLink and N SuperNodes on this machine, one run, teardown.

The deployment (:class:`~fedmap.flower.deployment.LocalDeployment`) runs the
experiment through FedMap's ServerApp and ClientApps. Success is read from the
run itself: Flower's run status must be ``finished:completed`` *and* the run
directory must hold ``summary.json`` with every round, since ``flwr run`` exits 0
even when the ServerApp failed. Every process is stopped whatever happens, and
every log is kept in the run directory's ``flower_logs/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fedmap.flower.deployment import DeployError, LocalDeployment, check_options


def deploy_local(
    config_path: Path,
    overrides: list[str],
    *,
    nodes: int,
    tls: bool = False,
    auth: bool = False,
    dense_nodes: int = 0,
    out: Path | None = None,
    round_timeout_s: float = 120.0,
    timeout_s: float = 3600.0,
    on_round: Any = None,
) -> tuple[Path, dict[str, Any]]:
    """Run ``config_path`` on a fresh local deployment; return the run directory and summary.

    The config is validated and the data located before any process starts.
    ``data.num_clients`` becomes the number of FedMap nodes (one partition each).
    Raises :class:`DeployError` unless the run really completed.
    """
    from fedmap.data.datasets import check_dataset_available
    from fedmap.runs.config import dump_toml, load_config

    check_options(nodes, tls, auth, dense_nodes)
    fedmap_nodes = nodes - dense_nodes
    config = load_config(config_path, [*overrides, f"data.num_clients={fedmap_nodes}"])
    check_dataset_available(config.data.name, config.data.path or None)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (out or Path("runs") / f"{config_path.stem}-deploy-{stamp}").resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DeployError(f"--out: directory {run_dir} exists and is not empty")
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="fedmap-deploy-"))
    resolved = workdir / "config.toml"
    resolved.write_text(dump_toml(config))
    deployment = LocalDeployment(workdir, nodes, tls=tls, auth=auth, dense_nodes=dense_nodes)
    try:
        try:
            deployment.start()
            run_id = deployment.submit(
                {"config": str(resolved), "out": str(run_dir), "round-timeout": round_timeout_s}
            )
            status = _follow(deployment, run_id, run_dir, timeout_s, on_round)
        finally:
            deployment.stop()
    finally:  # logs kept and keys removed, even when teardown itself failed
        _keep_logs(workdir, run_dir)
    summary_path = run_dir / "summary.json"
    if not status.startswith("finished:completed") or not summary_path.exists():
        raise DeployError(f"the run failed (Flower status {status}); see {run_dir / 'flower_logs'}")
    summary = json.loads(summary_path.read_text())
    if summary.get("rounds") != config.rounds:
        done = summary.get("rounds")
        raise DeployError(f"the run stopped after {done} of {config.rounds} rounds")
    return run_dir, summary


def _follow(
    deployment: LocalDeployment, run_id: int, run_dir: Path, timeout_s: float, on_round: Any
) -> str:
    """Poll the run's status and metrics until it finishes; report each new round."""
    deadline, seen = time.monotonic() + timeout_s, 0
    metrics = run_dir / "metrics.jsonl"
    while True:
        status = deployment.status(run_id)
        if metrics.exists():  # only whole lines: the writer may be half-way through one
            lines = [x for x in metrics.read_text().split("\n")[:-1] if x.strip()]
            for line in lines[seen:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DeployError(f"{metrics}: unreadable line {line[:80]!r}") from error
                if on_round is not None:
                    on_round(row)
            seen = len(lines)
        if status.startswith("finished:"):
            return status
        if time.monotonic() > deadline:
            deployment.flwr(["stop", str(run_id)])
            raise DeployError(f"run {run_id} did not finish within {timeout_s:.0f} s (stopped)")
        time.sleep(1.0)


def _keep_logs(workdir: Path, run_dir: Path) -> None:
    """Copy every process's log into the run directory (created if the run never started)."""
    import shutil

    target = run_dir / "flower_logs"
    target.mkdir(parents=True, exist_ok=True)
    for log in (workdir / "logs").glob("*.log"):
        shutil.copy2(log, target / log.name)
    shutil.rmtree(workdir, ignore_errors=True)
