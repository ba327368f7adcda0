"""The Flower transport and ClientApp in one process, over Flower's serialisation.

Fast checks of what the deployment test checks end to end: the same masks and
accuracy as ``fedmap run``, ledger beside Flower's bytes, a dense Flower client,
a node that vanishes and comes back.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from fedmap.flower import client_app
from fedmap.flower.loopback import LoopbackGrid
from fedmap.flower.server_app import main as server_main


def test_same_masks_bytes_and_accuracy_as_fedmap_run(
    write_tiny, tmp_path, without_wall, over_loopback
):
    from fedmap.runs.config import load_config
    from fedmap.runs.experiment import prepare
    from fedmap.runs.session import run

    path = write_tiny(rounds=4, num_clients=3, fraction=1.0)
    sim = tmp_path / "sim"
    sim.mkdir()
    run(prepare(load_config(path)), sim)
    _, rows = over_loopback(path, tmp_path / "flower", nodes=3)
    sim_rows = [json.loads(x) for x in (sim / "metrics.jsonl").read_text().splitlines()]
    assert [r["mask_sha"] for r in rows] == [r["mask_sha"] for r in sim_rows]
    assert [r["density"] for r in rows][-1] < 1.0
    keys = ["test_accuracy", "bytes_up", "bytes_down", "bootstraps", "density"]
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in sim_rows]
    ledger = (tmp_path / "flower" / "ledger.csv").read_text()
    assert ledger == (sim / "ledger.csv").read_text()


def test_a_plain_dense_client_joins_and_is_charged_its_dense_bytes(
    write_tiny, tmp_path, over_loopback
):
    path = write_tiny(rounds=3, num_clients=2, fraction=1.0)
    _, rows = over_loopback(path, tmp_path / "out", nodes=2, dense=1)
    nodes = (tmp_path / "out" / "nodes.csv").read_text().splitlines()
    dense = [line.split(",") for line in nodes[1:] if ",dense," in line]
    fedmap = [line.split(",") for line in nodes[1:] if ",fedmap," in line]
    assert len(dense) == 3 and all(r[1] == r[2] for r in dense)  # client id = node id
    from fedmap.runs.config import load_config
    from fedmap.runs.experiment import prepare

    numel = prepare(load_config(path)).layout.numel
    assert {int(r[4]) for r in dense} == {numel * 4}  # downlink: every tensor, float32
    assert {int(r[6]) for r in dense} == {numel * 4}  # uplink: what it really sent
    assert int(fedmap[-1][6]) < numel * 4  # FedMap nodes send only kept values
    assert all(r["answered"] == 3 and r["rejected"] == 0 for r in rows)
    assert rows[-1]["density"] < 1.0


def test_flower_bytes_exceed_the_ledger_by_a_bounded_framing(write_tiny, tmp_path, over_loopback):
    from fedmap.flower.wire import FRAMING_BOUND_NBYTES

    path = write_tiny(rounds=3, num_clients=3, fraction=1.0)
    over_loopback(path, tmp_path / "out", nodes=3)
    lines = (tmp_path / "out" / "nodes.csv").read_text().splitlines()[1:]
    for line in lines:
        row = line.split(",")
        down, fdown, up, fup = (int(x) for x in row[4:8])
        assert 0 < fdown - down <= FRAMING_BOUND_NBYTES
        assert 0 < fup - up <= FRAMING_BOUND_NBYTES


def test_a_node_that_leaves_is_dropped_and_comes_back_with_a_bootstrap(write_tiny, tmp_path):
    path = write_tiny(rounds=5, num_clients=3, fraction=1.0)
    apps = {100 + i: client_app.app for i in range(3)}
    configs = {100 + i: {"partition-id": i} for i in range(3)}
    out = tmp_path / "out"
    settings = {"config": str(path), "out": str(out)}
    grid = LoopbackGrid(apps, configs, settings)
    calls = {"n": 0}
    original = grid.send_and_receive

    def send_and_receive(messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train.fedmap":
            calls["n"] += 1
            if calls["n"] == 2:  # round 2: node 101 dies mid-round, losing its memory
                grid.offline.add(101)
            if calls["n"] == 3:  # round 3: it restarts under a new node id, state empty
                grid.offline.discard(101)
                del grid.apps[101]
                grid.apps[201] = client_app.app
                from flwr.app import Context, RecordDict

                grid.contexts[201] = Context(
                    run_id=1,
                    node_id=201,
                    node_config={"partition-id": 1},
                    state=RecordDict(),
                    run_config=settings,
                )
        return original(messages, timeout=timeout)

    grid.send_and_receive = send_and_receive  # type: ignore[method-assign]
    from flwr.app import Context, RecordDict

    server_main(
        grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=settings)
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["answered"] for r in rows] == [3, 2, 2, 3, 3]  # round 3 greets it first
    assert rows[1]["dropped"] == 1
    bootstraps = [r["bootstraps"] for r in rows]
    assert bootstraps[0] == 3 and sum(bootstraps[3:]) >= 1  # brought back with a bootstrap
    assert json.loads((out / "summary.json").read_text())["rounds"] == 5


def test_the_repository_flower_app_is_what_deploy_writes(tmp_path):
    from fedmap.flower.app_files import FILES, write_app

    root = Path(__file__).resolve().parents[2] / "flower_app"
    write_app(tmp_path)
    for name in FILES:
        assert (root / name).read_text() == (tmp_path / name).read_text(), name


def test_a_run_without_a_config_fails_with_a_clear_message(tmp_path, over_loopback):
    from fedmap.errors import ConfigError

    with pytest.raises(ConfigError, match="'config' is empty"):
        over_loopback(Path(""), tmp_path / "out", nodes=1, config="")


def test_a_malformed_reply_is_rejected_and_never_aggregated(write_tiny, tmp_path):
    from flwr.app import Message

    from fedmap.flower.wire import fedmap_content

    def hostile(message, context):
        honest = client_app.app(message, context)  # keeps its state in step, then lies
        if message.metadata.message_type.startswith("query"):
            return honest
        fields = dict(honest.content.config_records["fedmap"])
        fields["update"] = b"\x00" * next(sizes)  # shorter than a header, then a bad header
        return Message(fedmap_content(fields), reply_to=message)

    sizes = iter([3, 100, 100])

    path = write_tiny(rounds=3, num_clients=3, fraction=1.0)
    out = tmp_path / "out"
    settings = {"config": str(path), "out": str(out)}
    apps = {100: client_app.app, 101: client_app.app, 102: hostile}
    grid = LoopbackGrid(apps, {100 + i: {"partition-id": i} for i in range(3)}, settings)
    from flwr.app import Context, RecordDict

    server_main(grid, Context(1, 0, {}, RecordDict(), settings))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["rejected"] for r in rows] == [1, 1, 1]
    assert [r["answered"] for r in rows] == [2, 2, 2]
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert {e["client"] for e in events} == {2}
    assert all("undecodable" in e["reason"] for e in events)


def test_the_report_summarises_the_per_client_cost_of_flower_runs(
    write_tiny, tmp_path, over_loopback
):
    from fedmap.reporting.report import FLOWER_CAPTION, write_report

    path = write_tiny(rounds=2, num_clients=2, fraction=1.0)
    over_loopback(path, tmp_path / "runs" / "flower", nodes=2)
    md_path, _ = write_report([tmp_path / "runs"], tmp_path / "report")
    text = md_path.read_text()
    assert FLOWER_CAPTION in text
    row = next(line for line in text.splitlines() if line.startswith("| digits IID | FedMap"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3].split()[0]) > 0  # CPU seconds of a local round
    assert float(cells[5].split()[0]) > 50  # peak RSS in MB
    assert html.escape(FLOWER_CAPTION) in (tmp_path / "report" / "report.html").read_text()


def test_a_fedmap_node_whose_hello_fails_is_named_not_taken_for_a_dense_client(
    write_tiny, tmp_path
):
    path = write_tiny(rounds=2, num_clients=2, fraction=1.0)
    out = tmp_path / "out"
    settings = {"config": str(path), "out": str(out)}
    configs = {100: {"partition-id": 0}, 101: {"partition-id": 1}, 102: {"partition-id": 7}}
    grid = LoopbackGrid({n: client_app.app for n in configs}, configs, settings)
    from flwr.app import Context, RecordDict

    server_main(grid, Context(1, 0, {}, RecordDict(), settings))
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    bad = [e for e in events if e["client"] == 102]
    assert bad and all("partition-id: 7 is outside" in e["reason"] for e in bad)
    with (out / "nodes.csv").open() as handle:
        assert ",dense," not in handle.read()
