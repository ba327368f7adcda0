"""A node's reply or hello, whatever it holds, is refused or ignored: it never stops the run."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedmap.flower import client_app
from fedmap.flower.loopback import LoopbackGrid
from fedmap.flower.server_app import main as server_main
from fedmap.flower.wire import RECORD, fedmap_content


def changed_reply(change: Callable[[dict[str, Any], RecordDict], None]) -> Callable:
    def app(message: Message, context: Context) -> Message:
        reply = client_app.app(message, context)
        if message.metadata.message_type.startswith("query") or reply.has_error():
            return reply
        content = RecordDict(dict(reply.content.items()))
        fields = dict(content.config_records.get(RECORD, {}))
        change(fields, content)
        if fields:
            content[RECORD] = ConfigRecord(fields)
        return Message(content, reply_to=message)

    return app


def changed_hello(change: Callable[[dict[str, Any]], None]) -> Callable:
    def app(message: Message, context: Context) -> Message:
        reply = client_app.app(message, context)
        if not message.metadata.message_type.startswith("query"):
            return reply
        fields = dict(reply.content.config_records[RECORD])
        change(fields)
        return Message(fedmap_content(fields), reply_to=message)

    return app


def set_metric(name: str, value: Any) -> Callable[[dict[str, Any], RecordDict], None]:
    def change(fields: dict[str, Any], content: RecordDict) -> None:
        metrics = dict(content.metric_records["metrics"])
        metrics[name] = value
        content["metrics"] = MetricRecord(metrics)

    return change


CASES = {  # name: (the hostile node's app, is it a dense node, rejected per round)
    "wrong mask digest": (changed_reply(lambda f, c: f.update({"mask-sha": "0" * 16})), False, 1),
    "update not bytes": (changed_reply(lambda f, c: f.update({"update": 2**62})), False, 1),
    # the update stands, only the unasked-for scores are refused (as in the simulator)
    "statistics too short": (changed_reply(lambda f, c: f.update({"statistics": b"x"})), False, 0),
    "cost malformed": (
        changed_reply(lambda f, c: c.__setitem__("cost", MetricRecord({"cpu-s": 1.0}))),
        False,
        0,
    ),
    "hello without partition": (changed_hello(lambda f: f.pop("partition")), False, 0),
    "hello partition not int": (changed_hello(lambda f: f.update({"partition": "a"})), False, 0),
    "dense num-examples -1": (changed_reply(set_metric("num-examples", -1)), True, 1),
    "dense loss 1e300": (changed_reply(set_metric("train_loss", 1e300)), True, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_node_is_refused_and_the_run_finishes(name, write_tiny, tmp_path: Path):
    app, dense, rejected = CASES[name]
    path = write_tiny(rounds=2, num_clients=2, fraction=1.0)
    out = tmp_path / "out"
    settings = {"config": str(path), "out": str(out)}
    apps = {100: client_app.app, 101: client_app.app, 102: app}
    configs = {100: {"partition-id": 0}, 101: {"partition-id": 1}}
    configs[102] = {"partition-id": 0, "fedmap-dense": "true" if dense else "false"}
    if not dense:  # the hostile node holds partition 1 itself
        apps, configs = (
            {100: client_app.app, 102: app},
            {100: configs[100], 102: {"partition-id": 1}},
        )
    grid = LoopbackGrid(apps, configs, settings)
    server_main(grid, Context(1, 0, {}, RecordDict(), settings))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and json.loads((out / "summary.json").read_text())["rounds"] == 2
    assert [r["rejected"] for r in rows] == [rejected, rejected]
    if "hello" in name:  # never admitted, and named in the events
        events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
        assert any(e["client"] == 102 and "hello refused" in e["reason"] for e in events)


def test_a_second_node_claiming_a_partition_waits_instead_of_taking_turns(write_tiny, tmp_path):
    path = write_tiny(rounds=4, num_clients=2, fraction=1.0)
    out = tmp_path / "out"
    settings = {"config": str(path), "out": str(out)}
    configs = {100: {"partition-id": 0}, 101: {"partition-id": 1}, 102: {"partition-id": 1}}
    grid = LoopbackGrid({n: client_app.app for n in configs}, configs, settings)
    server_main(grid, Context(1, 0, {}, RecordDict(), settings))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["bootstraps"] for r in rows] == [2, 0, 0, 0]  # nobody re-bootstrapped
    assert all(r["flower_control_bytes"] == 0 for r in rows[1:])  # no hello after round 1
    with (out / "nodes.csv").open() as handle:
        assert {row["node_id"] for row in csv.DictReader(handle)} == {"100", "101"}
