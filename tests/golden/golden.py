"""Golden outputs of tiny runs: the refactor-proof record of what every front door produces.

Each scenario is a tiny digits run (every method; dense and FedMap under dropout,
stragglers, attackers and an intruder; a guard revert; a crashed and resumed run; a
vectorized run; Flower loopback runs). Its ``ledger.csv``, ``metrics.csv`` (less
``wall_s`` and the Flower clients' CPU and memory, which no rerun repeats),
``events.jsonl``, ``nodes.csv`` (Flower, less the same) and a SHA-256 of every
tensor of the final model are stored under ``data/``. ``test_golden.py`` reruns
each scenario and requires byte equality.

Floats are exact only for one torch build, kernel ISA and thread count, so
``data/manifest.json`` records what produced the goldens; the test skips (naming
this command) on anything else. Regenerate after a deliberate change of results
or of the pinned torch version, and say why in the commit::

    .venv/bin/python tests/golden/golden.py --record
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA = Path(__file__).resolve().parent / "data"
DROPPED_COLUMNS = ("wall_s", "client_cpu_s_mean", "client_peak_rss_mb_max")
DROPPED_NODE_COLUMNS = ("cpu_s", "train_s", "peak_rss_mb")

TINY: dict[str, Any] = {
    "seed": 3,
    "rounds": 6,
    "device": "cpu",
    "data": {"name": "digits", "num_clients": 8},
    "model": {"name": "mlp"},
    "client": {"fraction": 0.5, "batch_size": 16, "lr": 0.1, "momentum": 0.5},
    "pruning": {"warmup_rounds": 1, "rounds_per_step": 1, "target_sparsity": 0.6, "rate": 0.2},
}
METHODS = ("fedmap", "none", "local", "oneshot", "gradual", "random", "prunefl", "feddst")
FAULTS = {
    "faults": {
        "dropout": 0.25,
        "straggler_fraction": 0.3,
        "deadline_s": 2.0,
        "min_clients": 3,
        "attack": "scale",
        "attacker_fraction": 0.25,
        "attack_scale": 30.0,
    }
}
GUARDED = {
    "rounds": 12,
    "faults": {"dropout": 0.25},
    "pruning": {
        "warmup_rounds": 8,
        "rounds_per_step": 1,
        "rate": 0.8,
        "target_sparsity": 0.995,
        "guard_delta": 0.0,
    },
}
STATEFUL = {
    "rounds": 9,
    "faults": {"dropout": 0.25, "straggler_fraction": 0.3, "deadline_s": 2.0},
    "pruning": {"guard_delta": 0.02},
}
FLOWER_TINY: dict[str, Any] = {
    "seed": 0,
    "rounds": 4,
    "device": "cpu",
    "data": {"name": "digits", "num_clients": 3},
    "model": {"name": "mlp"},
    "client": {"fraction": 1.0, "batch_size": 32},
    "pruning": {"warmup_rounds": 1, "rounds_per_step": 1, "target_sparsity": 0.5, "rate": 0.2},
}


def merged(base: dict[str, Any], *changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each of ``changes`` applied section by section (no argument is mutated)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for change in changes:
        for key, value in change.items():
            if isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def method(name: str) -> dict[str, Any]:
    return {"pruning": {"method": name}}


def intruder() -> Callable[[int, list[tuple[int, bytes]]], list[tuple[int, bytes]]]:
    """Every round: a replay of the first honest reply, a truncated copy, a stranger's copy."""

    def forge(round: int, honest: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        if not honest:
            return []
        client, data = honest[0]
        return [(client, data), (client, data[: len(data) // 2]), (1000 + round, data)]

    return forge


# ---------------------------------------------------------------- front doors (the API used)
def run_simulation(raw: dict[str, Any], out: Path, **options: Any) -> None:
    """One in-process run of ``raw`` into ``out``."""
    from fedmap.runs.config import config_from_dict
    from fedmap.runs.experiment import build_loop, prepare
    from fedmap.runs.run_dir import create_run_dir
    from fedmap.runs.session import run

    config = config_from_dict(raw)
    experiment = prepare(config)
    create_run_dir(config, out)
    run(experiment, out, loop=build_loop(experiment, **options))


def run_resumed(raw: dict[str, Any], out: Path, crash_round: int = 3) -> None:
    """Run until the process 'dies' after ``crash_round``, then resume it to the end."""
    from fedmap.runs.config import config_from_dict
    from fedmap.runs.experiment import prepare
    from fedmap.runs.run_dir import create_run_dir
    from fedmap.runs.session import open_for_resume, run

    class Crash(Exception):
        pass

    def die(row: dict[str, Any]) -> None:
        if row["round"] == crash_round:
            raise Crash

    config = config_from_dict(raw)
    create_run_dir(config, out)
    try:
        run(prepare(config), out, on_round=die)
    except Crash:
        pass
    resumption = open_for_resume(out)
    assert resumption.next_round == crash_round + 1
    run(resumption.experiment, out, checkpoint=resumption.checkpoint)


def run_flower(raw: dict[str, Any], out: Path, nodes: int, dense: int = 0) -> None:
    """The real ServerApp and ClientApps over Flower's in-process loopback grid."""
    from flwr.app import Context, RecordDict

    from fedmap.flower import client_app
    from fedmap.flower.loopback import LoopbackGrid
    from fedmap.flower.server_app import main as server_main
    from fedmap.runs.config import config_from_dict, dump_toml

    config_path = out.parent / f"{out.name}.toml"
    config_path.write_text(dump_toml(config_from_dict(raw)))
    apps = {100 + i: client_app.app for i in range(nodes + dense)}
    node_configs: dict[int, Any] = {
        100 + i: {"partition-id": i % nodes, "fedmap-dense": "true" if i >= nodes else "false"}
        for i in range(nodes + dense)
    }
    settings: dict[str, Any] = {"config": str(config_path), "out": str(out)}
    grid = LoopbackGrid(apps, node_configs, settings)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=settings)
    server_main(grid, context)


SCENARIOS: dict[str, Callable[[Path], None]] = {
    **{
        f"method-{name}": (lambda out, name=name: run_simulation(merged(TINY, method(name)), out))
        for name in METHODS
    },
    "faults-fedmap": lambda out: run_simulation(merged(TINY, FAULTS), out, intruder=intruder()),
    "faults-none": lambda out: run_simulation(
        merged(TINY, FAULTS, method("none"), {"faults": {"attack": "sign_flip"}}), out
    ),
    "guard-fedmap": lambda out: run_simulation(merged(TINY, GUARDED), out),
    "resumed-fedmap": lambda out: run_resumed(merged(TINY, STATEFUL), out),
    "vectorized-fedmap": lambda out: run_simulation(
        merged(TINY, FAULTS, {"engine": "vectorized"}), out
    ),
    "flower-fedmap": lambda out: run_flower(FLOWER_TINY, out, nodes=3, dense=1),
    "flower-local": lambda out: run_flower(merged(FLOWER_TINY, method("local")), out, nodes=3),
}


# ---------------------------------------------------------------- what is compared
def without_columns(text: str, dropped: tuple[str, ...]) -> str:
    """A CSV without the named columns (those no rerun repeats)."""
    rows = list(csv.reader(io.StringIO(text)))
    keep = [i for i, name in enumerate(rows[0]) if name not in dropped]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([row[i] for i in keep])
    return out.getvalue()


def model_digest(path: Path) -> str:
    """One line per tensor of the final model file: name, dtype, shape, SHA-256 of its bytes."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    lines = []
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest = hashlib.sha256(tensor.view(torch.uint8).numpy().tobytes()).hexdigest()
        lines.append(f"{name} {tensor.dtype} {tuple(tensor.shape)} {digest}")
    return "\n".join(lines) + "\n"


def outputs(run_dir: Path) -> dict[str, str]:
    """The compared files of a finished run directory, as text."""
    found = {
        "ledger.csv": (run_dir / "ledger.csv").read_text(),
        "metrics.csv": without_columns((run_dir / "metrics.csv").read_text(), DROPPED_COLUMNS),
        "events.jsonl": (run_dir / "events.jsonl").read_text()
        if (run_dir / "events.jsonl").is_file()
        else "",
        "model.sha256": model_digest(run_dir / "model.safetensors"),
    }
    if (run_dir / "nodes.csv").is_file():
        nodes = (run_dir / "nodes.csv").read_text()
        found["nodes.csv"] = without_columns(nodes, DROPPED_NODE_COLUMNS)
    return found


def machine() -> dict[str, Any]:
    """What decides the last bits of every float, and what else produced the goldens.

    The test compares :data:`DECIDES_FLOATS` only; numpy and Python are recorded
    for the reader (they draw partitions and cohorts, whose generators are stable).
    """
    from fedmap.runs.machine import machine_info

    info = machine_info(torch.device("cpu"))  # cpu, cpu_capability, torch_threads (measured)
    return {
        "torch": torch.__version__,
        **info,
        "cpu_flags": vector_flags(),
        "numpy": np.__version__,
        "python": ".".join(platform.python_version_tuple()[:2]),
    }


DECIDES_FLOATS = ("torch", "cpu", "cpu_capability", "cpu_flags", "torch_threads")


def vector_flags() -> str:
    """The CPU's vector-instruction flags (what the math libraries dispatch on), sorted."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    prefixes = ("avx", "fma", "f16c", "amx", "sse", "ssse")
    return " ".join(sorted(f for f in line.split(":", 1)[-1].split() if f.startswith(prefixes)))


def run_scenario(name: str, tmp: Path) -> dict[str, str]:
    """Run scenario ``name`` in a fresh folder under ``tmp``; return its compared outputs."""
    out = tmp / name
    SCENARIOS[name](out)
    return outputs(out)


def record(names: list[str]) -> None:
    """Rerun ``names`` and overwrite their goldens and the manifest."""
    import tempfile

    torch.set_num_threads(1)
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            folder = DATA / name
            folder.mkdir(exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
            for file, text in run_scenario(name, Path(tmp)).items():
                (folder / file).write_text(text)
            print(f"recorded {name}", file=sys.stderr)
    (DATA / "manifest.json").write_text(json.dumps(machine(), indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", action="store_true", help="rerun and overwrite the goldens")
    parser.add_argument("names", nargs="*", help="scenarios (default: all)")
    args = parser.parse_args()
    if not args.record:
        parser.error("nothing to do: pass --record")
    record(args.names or list(SCENARIOS))


if __name__ == "__main__":
    main()
