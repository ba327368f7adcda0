"""A real Flower SuperLink and N SuperNodes on this machine, owned by one object.

Each Flower process runs in its own session with a private ``FLWR_HOME``; every
port is picked free; ``--tls`` makes a throw-away CA and SuperLink certificate;
``--auth`` registers one key per SuperNode through the Control API before the node
starts (an unregistered key is refused by the SuperLink). Whatever happens,
:meth:`LocalDeployment.stop`
kills the whole process tree (the SuperExec and app processes included) and checks
that nothing is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmap.errors import FedMapError
from fedmap.flower.app_files import write_app
from fedmap.flower.certs import write_node_key, write_tls
from fedmap.flower.processes import (
    alive,
    descendants,
    free_port,
    parse_json,
    send_signal,
    terminate_tree,
    with_environment,
)
from fedmap.runs.cores import usable_cores

CONNECTION = "fedmap-local"
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
REJOIN_TIMEOUT_S = 150.0  # a restarted node is refused until its old self is marked offline


class DeployError(FedMapError):
    """The deployment could not start, the run failed, or a process would not stop."""


@dataclass
class LocalDeployment:
    """A SuperLink plus SuperNodes on 127.0.0.1, owned by this object.

    Parameters
    ----------
    workdir
        Certificates, keys, Flower homes, the app folder and every process's log.
    nodes
        Number of SuperNodes; node ``i`` holds partition ``i``.
    tls, auth
        Serve over TLS with a throw-away CA; admit only registered SuperNode keys.
    dense_nodes
        How many of the nodes run the plain dense Flower client instead of FedMap's.
    """

    workdir: Path
    nodes: int
    tls: bool = False
    auth: bool = False
    dense_nodes: int = 0
    port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    node_ports: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_options(self.nodes, self.tls, self.auth, self.dense_nodes)
        self.workdir = self.workdir.resolve()
        self.logs = self.workdir / "logs"
        self.certs = self.workdir / "certs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ processes
    def env(self, home: str) -> dict[str, str]:
        """The environment of every Flower process: offline, quiet, private home.

        N nodes share this machine's cores, so each node's torch gets its share of
        them (oversubscribed threads made rounds several times slower).
        """
        env = dict(os.environ)
        if home.startswith("home-supernode"):
            threads = max(1, usable_cores() // max(1, self.nodes))
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        bin_dir = str(Path(sys.executable).parent)  # SuperExec starts flwr-* apps by name
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env.update(
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_HOME=str(self.workdir / home),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _spawn(self, name: str, args: list[str], home: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env(home),
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def start(self) -> None:
        """Certificates and keys, the SuperLink, key registration, then every SuperNode."""
        self.port = free_port()
        bin_dir = Path(sys.executable).parent
        args = [str(bin_dir / "flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.tls:
            ca, cert, key = write_tls(self.certs)
            args += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert)]
            args += ["--ssl-keyfile", str(key)]
        else:
            args.append("--insecure")
        if self.auth:
            args.append("--enable-supernode-auth")
        args.append("--disable-runtime-dependency-installation")
        process = self._spawn("superlink", args, "home-superlink")
        self._wait_log("superlink", process, "Uvicorn running on", START_TIMEOUT_S)
        self._write_cli_config()
        for i in range(self.nodes):
            if self.auth:
                self.register_key(i)
        for i in range(self.nodes):
            self.start_node(i)

    def node_key(self, i: int) -> Path:
        """SuperNode ``i``'s private key (created on first use)."""
        private = self.certs / f"supernode{i}"
        if not private.exists():
            write_node_key(self.certs, f"supernode{i}")
        return private

    def register_key(self, i: int) -> int:
        """Register SuperNode ``i``'s public key with the SuperLink; return its node id."""
        self.node_key(i)
        out = self.flwr(["supernode", "register", str(self.certs / f"supernode{i}.pub")])
        answer = parse_json(out)
        if not answer.get("success"):
            raise DeployError(f"registering supernode {i}'s key failed: {out.strip()}")
        return int(answer["node-id"])

    def start_node(self, i: int, *, timeout_s: float = START_TIMEOUT_S) -> subprocess.Popen[bytes]:
        """Start SuperNode ``i`` (partition ``i``) and wait until the SuperLink admits it."""
        port = self.node_ports.setdefault(i, free_port())
        dense = i >= self.nodes - self.dense_nodes
        partition = i - (self.nodes - self.dense_nodes) if dense else i
        node_config = f"partition-id={partition} num-partitions={self.nodes}"
        node_config += f' fedmap-dense="{str(dense).lower()}"'
        args = [
            str(Path(sys.executable).parent / "flower-supernode"),
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--port",
            str(port),
            "--node-config",
            node_config,
        ]
        if self.tls:
            args += ["--root-certificates", str(self.certs / "ca.crt")]
        else:
            args.append("--insecure")
        if self.auth:
            args += ["--auth-supernode-private-key", str(self.node_key(i))]
        name = f"supernode{i}"
        (self.logs / f"{name}.log").open("ab").close()
        offset = (self.logs / f"{name}.log").stat().st_size
        process = self._spawn(name, args, f"home-{name}")
        self._wait_log(name, process, "SuperNode ID:", timeout_s, offset)
        return process

    def rejoin_node(self, i: int) -> None:
        """Restart a killed SuperNode with its key; retried until the SuperLink lets it in."""
        deadline = time.monotonic() + REJOIN_TIMEOUT_S
        while True:
            try:
                self.start_node(i, timeout_s=20.0)
                return
            except DeployError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(3.0)

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its app processes: a node lost mid-run."""
        process = self.processes.pop(f"supernode{i}")
        for pid in [process.pid, *descendants(process.pid)]:
            send_signal(pid, signal.SIGKILL)
        process.wait()

    # ------------------------------------------------------------------ runs
    def flwr(self, args: list[str], *, timeout_s: float = 120.0) -> str:
        """Run the ``flwr`` CLI against this deployment; return its standard output."""
        command = [str(Path(sys.executable).parent / "flwr"), *args, CONNECTION]
        if args[0] in ("run", "ls", "supernode"):
            command += ["--format", "json"]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                env=self.env("home-cli"),
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise DeployError(f"flwr {args[0]} did not answer within {timeout_s:.0f} s") from error
        return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")

    def submit(self, run_config: dict[str, Any]) -> int:
        """Start the FedMap app with ``run_config``; return Flower's run id."""
        app = write_app(self.workdir / "app")
        args = ["run", str(app)]
        for key, value in run_config.items():
            args += ["--run-config", f"{key}={json.dumps(value)}"]
        out = self.flwr(args)
        answer = parse_json(out)
        if not answer.get("success"):
            raise DeployError(f"flwr run refused the app: {out.strip()}")
        return int(answer["run-id"])

    def status(self, run_id: int) -> str:
        """Flower's status of ``run_id`` (``finished:completed`` on success)."""
        out = self.flwr(["ls", "--run-id", str(run_id)])
        try:
            run = parse_json(out)["runs"][0]
        except (KeyError, IndexError) as error:
            raise DeployError(f"flwr ls gave no status for run {run_id}: {out.strip()}") from error
        return f"{run['status']}|{run.get('status-details', '')}"

    def wait(self, run_id: int, timeout_s: float, poll_s: float = 1.0) -> str:
        """Wait until ``run_id`` finishes; return its status."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished:"):
                return status
            if self.processes["superlink"].poll() is not None:
                raise DeployError("the SuperLink exited during the run: see logs/superlink.log")
            time.sleep(poll_s)
        self.flwr(["stop", str(run_id)])
        raise DeployError(f"run {run_id} did not finish within {timeout_s:.0f} s (stopped)")

    # ------------------------------------------------------------------ teardown
    def stop(self) -> list[int]:
        """Stop every process this deployment started; return the pids that had to be killed.

        The tree is snapshot first (the SuperExec runs in its own session, so a
        process-group signal alone would miss the app processes), then SIGTERM,
        a grace period, and SIGKILL for what is left.
        """
        roots = [p.pid for p in self.processes.values() if p.poll() is None]
        tree, killed = terminate_tree(roots, self.owned, STOP_GRACE_S)
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()
        time.sleep(0.2)
        left = [pid for pid in sorted(tree | self.owned()) if alive(pid)]
        if left:
            raise DeployError(f"processes still alive after teardown: {left}")
        return killed

    def owned(self) -> set[int]:
        """Live processes started under this deployment (their FLWR_HOME is in its folder)."""
        return with_environment(f"FLWR_HOME={self.workdir}/")

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    def _write_cli_config(self) -> None:
        home = self.workdir / "home-cli"
        home.mkdir(parents=True, exist_ok=True)
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "127.0.0.1:{self.port}"',
        ]
        if self.tls:
            lines.append(f'root-certificates = "{self.certs / "ca.crt"}"')
        else:
            lines.append("insecure = true")
        (home / "config.toml").write_text("\n".join(lines) + "\n")

    def _wait_log(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        pattern: str,
        timeout_s: float,
        offset: int = 0,
    ) -> None:
        path = self.logs / f"{name}.log"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = path.read_bytes()[offset:].decode(errors="replace")
            if pattern in text:
                return
            if process.poll() is not None:
                self.processes.pop(name, None)
                tail = "\n".join(text.strip().splitlines()[-6:])
                raise DeployError(f"{name} exited with status {process.returncode}:\n{tail}")
            time.sleep(0.2)
        raise DeployError(f"{name} did not start within {timeout_s:.0f} s: see {path}")


def check_options(nodes: int, tls: bool, auth: bool, dense_nodes: int) -> None:
    """Refuse options that cannot make a deployment, naming the flag."""
    if auth and not tls:
        raise DeployError("--auth needs --tls: Flower authenticates SuperNodes over TLS only")
    if nodes < 1:
        raise DeployError(f"--nodes must be at least 1, got {nodes}")
    if not 0 <= dense_nodes < nodes:
        raise DeployError(f"--dense-nodes must be in 0..{nodes - 1} (at least one FedMap node)")
