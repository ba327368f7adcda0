"""Rounds under faults: dropouts, stragglers, retries, attackers, and the bootstrap after a miss."""

import json

import pytest

from fedmap.errors import FedMapError
from fedmap.runs.experiment import prepare
from fedmap.runs.session import run as run_experiment

EVERYONE = {"data__num_clients": 6, "client__fraction": 1.0}  # all six clients every round


def events(tmp_path, name):
    lines = (tmp_path / name / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_fault_free_rounds_have_everyone_answer_and_no_events(tmp_path, run_tiny):
    _, _, rows = run_tiny("clean")
    assert all(r["answered"] == r["sampled"] == 4 for r in rows)
    assert all(r["dropped"] == r["late"] == r["rejected"] == 0 and r["attempts"] == 1 for r in rows)
    assert events(tmp_path, "clean") == []


def test_dropouts_shrink_the_round_and_every_client_is_accounted_for(tmp_path, run_tiny):
    _, summary, rows = run_tiny("drop", faults__dropout=0.4, rounds=8, **EVERYONE)
    assert sum(r["dropped"] for r in rows) > 0
    for row in rows:
        assert row["sampled"] == row["answered"] + row["dropped"] + row["late"] + row["rejected"]
    logged = [e for e in events(tmp_path, "drop") if e["kind"] == "dropped"]
    assert len(logged) == sum(r["dropped"] for r in rows)
    assert summary["final_test_accuracy"] > 0.5  # digits, chance 0.1: the run still learns


def test_a_client_that_dropped_during_a_prune_step_is_brought_back_by_bootstrap(tmp_path, run_tiny):
    """Replay the events: who must need the mask each round, given who dropped when."""
    _, _, clean = run_tiny("clean", rounds=6, **EVERYONE)
    assert [r["bootstraps"] for r in clean] == [6, 0, 0, 0, 0, 0]  # in step: no mask sent
    _, _, rows = run_tiny("drop", rounds=8, faults__dropout=0.3, **EVERYONE)
    dropped: dict[int, set[int]] = {}
    for event in events(tmp_path, "drop"):
        dropped.setdefault(event["round"], set()).add(event["client"])
    held: dict[int, int | None] = dict.fromkeys(range(6))  # client -> mask epoch it holds
    epoch, missed_step = 0, 0
    for row in rows:
        expected = sum(held[c] != epoch for c in held)  # everyone is sampled every round
        assert row["bootstraps"] == expected, row["round"]
        epoch += row["pruned"]
        for client in held:
            if client in dropped.get(row["round"], ()):
                missed_step += row["pruned"] and held[client] is not None
            else:
                held[client] = epoch
    assert missed_step > 0  # the path under test did happen
    # each client that answered held the server's mask: the simulator checks it every round
    # and raises ProtocolError otherwise, so finishing the run is part of the assertion.


def test_stragglers_past_the_deadline_are_left_out_and_waiting_costs_time(run_tiny):
    common = {"rounds": 4, "faults__straggler_fraction": 0.5, **EVERYONE}
    _, _, cut = run_tiny("cut", faults__deadline_s=1.5, **common)
    _, _, wait = run_tiny("wait", **common)
    assert sum(r["late"] for r in cut) > 0 and sum(r["late"] for r in wait) == 0
    assert all(r["sim_time_s"] <= 1.5 for r in cut)
    assert sum(r["sim_time_s"] for r in wait) > sum(r["sim_time_s"] for r in cut)
    assert sum(r["answered"] for r in cut) < sum(r["answered"] for r in wait)


def test_too_few_replies_retry_the_round_with_a_fresh_sample(tmp_path, run_tiny):
    _, _, rows = run_tiny(
        "retry", rounds=5, faults__dropout=0.5, faults__min_clients=4, faults__max_attempts=50
    )
    assert any(r["attempts"] > 1 for r in rows)
    assert all(r["answered"] >= 4 for r in rows)
    assert sum(r["discarded"] for r in rows) > 0
    for row in rows:  # every sampled client of every attempt is accounted for exactly once
        parts = row["answered"] + row["discarded"] + row["dropped"] + row["late"] + row["rejected"]
        assert row["sampled"] == parts
    retries = [e for e in events(tmp_path, "retry") if e["kind"] == "retry"]
    assert len(retries) == sum(r["attempts"] - 1 for r in rows)
    assert "faults.min_clients" in retries[0]["reason"]


def test_giving_up_after_max_attempts_names_the_setting(tmp_path, tiny_config):
    config = tiny_config(faults__dropout=0.9, faults__min_clients=4, faults__max_attempts=2)
    (tmp_path / "r").mkdir()
    with pytest.raises(FedMapError, match=r"faults\.min_clients=4.*faults\.max_attempts"):
        run_experiment(prepare(config), tmp_path / "r")


def test_faulty_runs_are_reproducible(run_tiny, without_wall):
    faults = {"faults__dropout": 0.3, "faults__straggler_fraction": 0.3, "faults__deadline_s": 2.0}
    _, _, a = run_tiny("a", **faults)
    _, _, b = run_tiny("b", **faults)
    assert without_wall(a) == without_wall(b)


ATTACK = {
    "rounds": 8,
    "data__num_clients": 10,
    "client__fraction": 1.0,
    "pruning__method": "none",
    "faults__attacker_fraction": 0.2,
}


def test_boosted_updates_are_refused_by_the_norm_screen(run_tiny):
    _, clean, _ = run_tiny("clean", **{**ATTACK, "faults__attacker_fraction": 0.0})
    _, summary, rows = run_tiny(
        "boost", faults__attack="scale", faults__attack_scale=100.0, **ATTACK
    )
    assert [r["rejected"] for r in rows] == [2] * 8  # both attackers, every round
    assert summary["final_test_accuracy"] > clean["final_test_accuracy"] - 0.05


def test_sign_flips_wreck_the_mean_and_the_median_shrugs_them_off(run_tiny):
    flip = {"faults__attack": "sign_flip", "faults__attack_scale": 8.0, **ATTACK}
    _, clean, _ = run_tiny("clean", **{**ATTACK, "faults__attacker_fraction": 0.0})
    _, mean, rows = run_tiny("mean", **flip)
    _, median, _ = run_tiny("median", aggregation__rule="median", **flip)
    assert sum(r["rejected"] for r in rows) == 0  # within the screen: only the rule can help
    assert mean["final_test_accuracy"] < clean["final_test_accuracy"] - 0.2
    assert median["final_test_accuracy"] > clean["final_test_accuracy"] - 0.05
