"""Report grouping and table cells, on runs built in memory."""

from __future__ import annotations

from typing import Any

import pytest

from fedmap.reporting.grouping import group_runs
from fedmap.reporting.record import RunData
from fedmap.reporting.rows import best_within, fmt, table_rows


def run(seed: int, method: str = "fedmap", acc: float = 0.9, total: float = 300.0, **k: Any):
    config: dict[str, Any] = {
        "seed": seed,
        "rounds": 10,
        "device": "cuda" if seed else "cpu",  # where it ran does not split groups
        "data": {"name": "digits", "partition": "iid", "num_clients": 8, "path": f"/d{seed}"},
        "pruning": {"method": method, "target_sparsity": 0.9, "rate": k.get("rate", 0.2)},
    }
    if "num_clients" in k:
        config["data"]["num_clients"] = k["num_clients"]
    summary = {
        "final_test_accuracy": acc,
        "best_test_accuracy": acc,
        "final_sparsity": 0.0 if method == "none" else 0.9,
        "bytes_total": total,
        "bytes_ratio_vs_dense": 0.5,
        "wall_s": k.get("wall_s", 1.0),
        "device": config["device"] + (":0" if seed else ""),
    }
    return RunData(f"{method}{seed}", "/runs", config, summary, [], [0.8, 1.0], [])


def test_runs_differing_only_in_seed_and_location_form_one_group():
    groups = group_runs([run(0, acc=0.90), run(1, acc=0.92), run(0, "none", 0.93, 1000.0)])
    assert [(g.method, len(g.runs), g.variant) for g in groups] == [
        ("none", 1, ""),
        ("fedmap", 2, ""),
    ]
    row = table_rows(groups)[1]
    assert row["final acc %"] == "91.00 ± 1.41"  # sample std over the two seeds
    assert row["vs dense (points)"] == "-2.00"
    assert row["bytes vs dense %"] == "30.0 ± 0.0"  # against the dense runs measured beside it
    assert row["client acc std (points)"] == "10.00 ± 0.00"


def test_other_settings_split_groups_and_are_named():
    runs = [run(0), run(1), run(2, rate=0.5), run(3, num_clients=16), run(0, "none", 0.9)]
    groups = group_runs(runs)
    labels = sorted((g.setting, g.label, len(g.runs)) for g in groups)
    assert ("digits IID", "FedMap", 2) in labels
    assert ("digits IID", "FedMap [pruning.rate=0.5]", 1) in labels
    assert ("digits IID [data.num_clients=16]", "FedMap", 1) in labels
    lone = next(r for r in table_rows(groups) if r["setting"].endswith("[data.num_clients=16]"))
    assert lone["vs dense (points)"] == ""  # no dense run of that setting: no comparison


def test_a_repeated_seed_is_shown_not_counted_twice():
    row = table_rows(group_runs([run(0), run(0)]))[0]
    assert row["seeds"] == "1 (2 runs)"


@pytest.mark.parametrize(
    "values, expected",
    [([], "—"), ([float("nan")], "—"), ([0.5], "50.00"), ([1234.0], "123,400.00")],
)
def test_fmt(values, expected):
    assert fmt(values) == expected


def test_wall_seconds_are_averaged_per_device_kind_only():
    runs = [run(0, wall_s=900.0), run(1, wall_s=80.0), run(2, wall_s=100.0)]
    row = table_rows(group_runs(runs))[0]
    assert row["wall s"] == "900 (cpu) / 90 ± 14 (cuda)"


def test_pruning_keys_of_the_dense_reference_split_nothing():
    """Dense FedAvg ignores pruning settings: another rate must not make it a variant."""
    groups = group_runs([run(0), run(1), run(0, "none", rate=0.5), run(1, "none", rate=0.2)])
    dense = [g for g in groups if g.method == "none"]
    assert [(g.label, g.target, len(g.runs)) for g in dense] == [("dense FedAvg", None, 2)]
    assert groups[0] is dense[0]  # the reference comes first in its setting


def test_an_unregistered_method_keeps_its_name_and_goes_after_the_registered_ones():
    groups = group_runs([run(0, "mystery"), run(0), run(0, "none")])
    assert [g.label for g in groups] == ["dense FedAvg", "FedMap", "mystery"]


def test_best_within_names_the_highest_sparsity_within_a_point_of_dense():
    close, far = run(0, acc=0.925), run(0, "random", acc=0.9)
    rows = best_within(group_runs([close, far, run(0, "none", 0.93)]))
    assert rows == [
        {
            "setting": "digits IID",
            "method": "FedMap",
            "highest sparsity within 1 point of dense": "90.0 %",
        },
        {
            "setting": "digits IID",
            "method": "random",
            "highest sparsity within 1 point of dense": "none",
        },
    ]
