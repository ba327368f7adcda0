"""A grid's committed tables: written from runs, read back as the same runs, byte-stable."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from fedmap.errors import ConfigError
from fedmap.reporting.grid_format import ROUND_COLUMNS
from fedmap.reporting.grid_read import read_grid_tables
from fedmap.reporting.grid_write import merge_with_tables, split_config, write_grid_tables
from fedmap.reporting.record import RunData, flat_config
from fedmap.reporting.report import load_runs


def comparable(run: RunData) -> dict:
    """What the tables keep of a run (the summary's kept keys, the rows' kept columns)."""
    summary_keys = ("method", "final_test_accuracy", "bytes_total", "wall_s", "machine")
    return {
        "name": run.name,
        "config": flat_config(run.config),
        "summary": {k: run.summary.get(k) for k in summary_keys},
        "rows": [{k: row[k] for k in ROUND_COLUMNS} for row in run.rows],
        "clients": run.client_accuracy,
        "partition": run.partition,
        "events": run.events,
        "cohort": run.first_cohort,
        "digest": run.warmup_digest,
    }


def test_runs_read_back_from_the_tables_equal_the_run_directories(grid, tmp_path):
    runs, _ = load_runs([grid()])
    paths = write_grid_tables(runs, tmp_path / "grid")
    back, warnings = read_grid_tables(paths["runs"])
    assert warnings == []
    assert [comparable(r) for r in back] == [
        comparable(r) for r in sorted(runs, key=lambda r: r.name)
    ]
    assert {r.source for r in back} == {str(paths["runs"])}


def test_the_same_runs_give_the_same_bytes(grid, tmp_path):
    runs, _ = load_runs([grid()])
    first = write_grid_tables(runs, tmp_path / "a" / "grid")
    second = write_grid_tables(list(reversed(runs)), tmp_path / "b" / "grid")
    for kind, path in first.items():
        assert path.read_bytes() == second[kind].read_bytes(), kind


def test_accuracies_narrow_to_float32_text_and_read_back_exactly(grid, tmp_path):
    runs, _ = load_runs([grid()])
    widened = [
        replace(r, rows=[{**row, "test_accuracy": widen(row["test_accuracy"])} for row in r.rows])
        for r in runs
    ]
    widened[0].rows[0]["density"] = 0.1  # not a float32 value: its column stays float64
    paths = write_grid_tables(widened, tmp_path / "grid")
    kinds = json.loads(paths["config"].read_text())["kinds"]["rounds"]
    assert kinds["test_accuracy"] == "float32" and kinds["density"] == "float"
    back = {r.name: r for r in read_grid_tables(paths["runs"])[0]}
    for run in widened:
        assert back[run.name].rows == [{k: row[k] for k in ROUND_COLUMNS} for row in run.rows]


def widen(value: float) -> float:
    """``value`` rounded to float32 and widened back, as torch's accuracies arrive."""
    return float(np.float32(value))


def test_the_run_table_names_each_run_and_keeps_the_shared_config_apart(grid, tmp_path):
    runs, _ = load_runs([grid()])
    paths = write_grid_tables(runs, tmp_path / "grid")
    with paths["runs"].open() as stream:
        rows = {r["run"]: r for r in csv.DictReader(stream)}
    dense, fedmap = rows["none-seed1"], rows["fedmap-seed1"]
    assert (fedmap["setting"], fedmap["pruning.method"], fedmap["seed"]) == (
        "digits IID",
        "fedmap",
        "1",
    )
    assert fedmap["last5_test_accuracy"] == repr((0.6 + 0.7 + 0.75) / 3)
    assert fedmap["cpu_capability"] == "AVX2" and fedmap["first_cohort"] == "1"
    assert len(fedmap["warmup_digest"]) == 16 and dense["warmup_digest"] == ""
    assert fedmap["partition_id"] == dense["partition_id"]  # one partition, stored once
    shared = json.loads(paths["config"].read_text())["shared_config"]
    assert shared["data.name"] == "digits" and "seed" not in shared


def test_split_config_makes_columns_of_the_key_fields_and_of_what_varies():
    flats = [
        {"seed": 0, "rounds": 3, "data.partition": "iid", "model": "mlp"},
        {"seed": 0, "rounds": 4, "data.partition": "iid", "model": "mlp"},
    ]
    shared, columns = split_config(flats)
    assert shared == {"model": "mlp"}
    assert columns == {"data.partition": "str", "seed": "int", "rounds": "int"}


def test_a_run_of_another_revision_is_left_out_of_the_tables_read(grid, tmp_path):
    runs, _ = load_runs([grid()])
    stale = replace(runs[0], summary={**runs[0].summary, "method_revision": 9})
    paths = write_grid_tables([stale, *runs[1:]], tmp_path / "grid")
    back, warnings = read_grid_tables(paths["runs"])
    assert len(back) == len(runs) - 1
    assert len(warnings) == 1 and stale.name in warnings[0] and "revision 9" in warnings[0]


def test_repeated_run_names_are_refused(grid, tmp_path):
    runs, _ = load_runs([grid()])
    with pytest.raises(ValueError, match="repeated"):
        write_grid_tables([runs[0], runs[0]], tmp_path / "grid")


def test_tables_of_another_format_are_refused(grid, tmp_path):
    runs, _ = load_runs([grid()])
    paths = write_grid_tables(runs, tmp_path / "grid")
    meta = json.loads(paths["config"].read_text())
    paths["config"].write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(ConfigError, match="format 99"):
        read_grid_tables(paths["runs"])


def test_nan_and_missing_values_survive(grid, tmp_path):
    runs, _ = load_runs([grid()])
    bare = replace(
        runs[0],
        summary={k: v for k, v in runs[0].summary.items() if k != "machine"},
        client_accuracy=[math.nan, 0.5],
        events=[],
        first_cohort=[],
    )
    paths = write_grid_tables([bare], tmp_path / "grid")
    (back,), _ = read_grid_tables(paths["runs"])
    assert "machine" not in back.summary and back.client_std == 0.0  # NaN: no test split
    assert math.isnan(back.client_accuracy[0]) and back.client_accuracy[1] == 0.5
    assert back.events == [] and back.first_cohort == []


def test_merging_keeps_the_runs_only_the_tables_hold_and_takes_the_rest_fresh(grid, tmp_path):
    runs, _ = load_runs([grid()])
    old = {r.name: r for r in runs}
    write_grid_tables(runs, tmp_path / "grid")
    rerun = replace(old["fedmap-seed0"], summary={**old["fedmap-seed0"].summary, "wall_s": 9.0})
    merged, warnings = merge_with_tables([rerun], tmp_path / "grid")
    assert warnings == [] and sorted(r.name for r in merged) == sorted(old)
    assert next(r for r in merged if r.name == "fedmap-seed0").summary["wall_s"] == 9.0
    assert merge_with_tables([rerun], tmp_path / "none")[0] == [rerun]  # no tables yet
