"""Regenerate docs/flower_wire.*: FedMap over Flower per round, against dense Flower FedAvg.

Runs the README's default experiment (configs/fmnist_iid.toml: 100 clients, 10 per
round, the FedAvg CNN, 80 rounds) through FedMap's real ServerApp and ClientApps on
an in-process grid (``fedmap.flower.loopback``): every message is deflated into
Flower's objects and inflated again, so the byte counts are those of Flower's
wire, without sockets. Dense Flower FedAvg is priced with the same measure on the
messages a Flower user sends for the same model (an ``ArrayRecord`` of the
``state_dict`` down; the same plus ``num-examples`` up).

    .venv/bin/python benchmarks/flower_wire.py            # about 10 min on a 2-core CPU
    .venv/bin/python benchmarks/flower_wire.py --rounds 20

Writes docs/flower_wire.csv and docs/flower_wire.png, and its table into docs/flower.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from doc_sections import replace_section  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402

from fedmap.flower import client_app  # noqa: E402
from fedmap.flower.loopback import LoopbackGrid  # noqa: E402
from fedmap.flower.server_app import main as server_main  # noqa: E402
from fedmap.flower.wire import flower_nbytes  # noqa: E402
from fedmap.runs.config import load_config  # noqa: E402
from fedmap.runs.experiment import prepare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CONFIG = ROOT / "configs" / "fmnist_iid.toml"


def dense_fedavg_nbytes(experiment) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Flower bytes of one dense FedAvg downlink and uplink for the experiment's model."""
    state = {n: t.detach().cpu() for n, t in experiment.model.state_dict().items()}
    down = Message(
        RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"lr": 0.05})}),
        dst_node_id=1,
        message_type="train",
    )
    up = Message(
        RecordDict({"arrays": ArrayRecord(state), "metrics": MetricRecord({"num-examples": 600})}),
        reply_to=down,
    )
    return flower_nbytes(down), flower_nbytes(up)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "flower_wire")
    args = parser.parse_args()
    config = load_config(CONFIG, [f"rounds={args.rounds}", 'device="cpu"'])
    experiment = prepare(config)
    shutil.rmtree(args.out, ignore_errors=True)
    n = config.data.num_clients
    settings = {
        "config": str(CONFIG),
        "set": f'rounds={args.rounds}; device="cpu"',
        "out": str(args.out),
    }
    grid = LoopbackGrid(
        {1000 + i: client_app.app for i in range(n)},
        {1000 + i: {"partition-id": i} for i in range(n)},
        settings,
    )
    started = time.perf_counter()
    server_main(grid, Context(1, 0, {}, RecordDict(), settings))
    seconds = time.perf_counter() - started
    rows = [json.loads(x) for x in (args.out / "metrics.jsonl").read_text().splitlines()]
    dense_down, dense_up = dense_fedavg_nbytes(experiment)
    table = []
    dense_cum = fedmap_cum = 0
    for r in rows:
        dense = r["answered"] * dense_up + r["sampled"] * dense_down
        fedmap = r["flower_bytes_up"] + r["flower_bytes_down"]
        dense_cum += dense
        fedmap_cum += fedmap + r["flower_control_bytes"]
        table.append(
            {
                "round": r["round"],
                "density": round(r["density"], 4),
                "test_accuracy": round(r["test_accuracy"], 4),
                "ledger_bytes": r["bytes_up"] + r["bytes_down"],
                "fedmap_flower_bytes": fedmap,
                "control_bytes": r["flower_control_bytes"],
                "dense_flower_fedavg_bytes": dense,
                "fedmap_flower_cum": fedmap_cum,
                "dense_flower_cum": dense_cum,
            }
        )
    DOCS.mkdir(exist_ok=True)
    with (DOCS / "flower_wire.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    plot(table)
    write_markdown(table, dense_down, dense_up, seconds, args.rounds)
    print(
        f"{len(rows)} rounds in {seconds:.0f} s; wrote docs/flower_wire.csv, .png, docs/flower.md"
    )


def plot(table: list[dict]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rounds = [t["round"] for t in table]
    left.plot(rounds, [t["dense_flower_cum"] / 1e6 for t in table], label="dense Flower FedAvg")
    left.plot(rounds, [t["fedmap_flower_cum"] / 1e6 for t in table], label="FedMap over Flower")
    left.set_xlabel("round")
    left.set_ylabel("cumulative bytes on Flower's wire (MB)")
    left.legend()
    right.plot(
        rounds,
        [t["fedmap_flower_bytes"] / t["dense_flower_fedavg_bytes"] for t in table],
        label="FedMap / dense, per round",
    )
    right.plot(rounds, [t["density"] for t in table], "--", label="density (kept share)")
    right.set_xlabel("round")
    right.set_ylabel("share")
    right.set_ylim(0, 1.05)
    right.legend()
    fig.suptitle("Fashion-MNIST, FedAvg CNN, 100 clients, 10 per round (configs/fmnist_iid.toml)")
    fig.tight_layout()
    fig.savefig(DOCS / "flower_wire.png", dpi=120)


def write_markdown(
    table: list[dict], dense_down: int, dense_up: int, seconds: float, rounds: int
) -> None:
    picks = sorted({1, 10, 11, 20, 30, 40, 50, 60, rounds} & {t["round"] for t in table})
    lines = [
        "<!-- generated by benchmarks/flower_wire.py -->",
        f"Command: `.venv/bin/python benchmarks/flower_wire.py --rounds {rounds}` "
        f"({seconds / 60:.0f} min on this machine).",
        "",
        f"Dense Flower FedAvg, one client: {dense_down:,} B down, {dense_up:,} B up.",
        "",
        "| round | density | FedMap ledger (B) | FedMap on Flower's wire (B) "
        "| dense Flower FedAvg (B) | FedMap / dense |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for t in table:
        if t["round"] in picks:
            lines.append(
                f"| {t['round']} | {t['density']:.3f} | {t['ledger_bytes']:,} | "
                f"{t['fedmap_flower_bytes']:,} | {t['dense_flower_fedavg_bytes']:,} | "
                f"{t['fedmap_flower_bytes'] / t['dense_flower_fedavg_bytes']:.1%} |"
            )
    last = table[-1]
    lines += [
        "",
        f"Over {rounds} rounds: FedMap {last['fedmap_flower_cum'] / 1e6:,.1f} MB on Flower's wire "
        f"(hellos included), dense Flower FedAvg {last['dense_flower_cum'] / 1e6:,.1f} MB: "
        f"{last['fedmap_flower_cum'] / last['dense_flower_cum']:.1%}. "
        f"Final test accuracy {last['test_accuracy']:.2%} at density {last['density']:.3f}.",
        "",
    ]
    replace_section(DOCS / "flower.md", "flower_wire", "\n".join(lines))


if __name__ == "__main__":
    main()
