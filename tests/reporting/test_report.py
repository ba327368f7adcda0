"""``fedmap report`` end to end: run directories and grid tables in, one page out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedmap.cli import app
from fedmap.errors import ConfigError
from fedmap.reporting.grid_write import write_grid_tables
from fedmap.reporting.report import FIGURES, load_runs, write_report
from fedmap.reporting.run_dirs import load_run


def test_fedmap_report_on_run_directories_writes_tables_and_every_figure(grid, tmp_path):
    result = CliRunner().invoke(app, ["report", str(grid()), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert "4 runs from " in text
    row = next(line for line in text.splitlines() if line.startswith("| digits IID | 50 %"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:4] == ["FedMap", "2"]
    assert cells[6] == "-5.00"  # final accuracy 75 % against dense FedAvg's 80 %
    for name, _ in FIGURES:
        assert (tmp_path / "r" / name).stat().st_size > 0, name


def test_the_report_from_grid_tables_is_the_report_from_the_run_directories(grid, tmp_path):
    folder = grid()
    runs, _ = load_runs([folder])
    paths = write_grid_tables(runs, tmp_path / "tables" / "grid")
    from_dirs, _ = write_report([folder], tmp_path / "a")
    from_tables, _ = write_report([paths["runs"]], tmp_path / "b")
    dirs_text = from_dirs.read_text().replace(str(folder), "SOURCE")
    tables_text = from_tables.read_text().replace(str(paths["runs"]), "SOURCE")
    assert tables_text == dirs_text
    assert "4 runs from SOURCE." in tables_text


def test_without_matplotlib_the_report_fails_with_one_line_naming_the_extra(
    grid, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises
    result = CliRunner().invoke(app, ["report", str(grid()), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "pip install 'fedmap[report]'" in lines[0], result.output
    assert not (tmp_path / "r").exists()  # it says so before reading or writing anything


def test_runs_of_another_method_revision_are_left_out_with_a_warning(grid, write_run):
    folder = grid()
    stale = write_run(folder / "fedmap-seed2", seed=2)
    summary = (stale / "summary.json").read_text()
    (stale / "summary.json").write_text(
        summary.replace('"method"', '"method_revision": 9, "method"')
    )
    runs, warnings = load_runs([folder])
    assert len(runs) == 4 and len(warnings) == 1
    assert "fedmap-seed2" in warnings[0] and "revision 9" in warnings[0]


def lone_table(folder: Path) -> Path:
    """A run table without the files beside it."""
    (folder / "x.csv").write_text("run\n")
    return folder / "x.csv"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda folder: folder / "missing", "is not a directory"),
        (lambda folder: folder, "holds no run directory"),
        (lone_table, "lacks"),
    ],
)
def test_a_path_with_no_runs_is_named(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message):
        write_report([make(tmp_path)], tmp_path / "out")


def test_a_run_directory_reads_its_first_cohort_events_and_warmup_digest(tmp_path, write_run):
    run = load_run(write_run(tmp_path / "fedmap-seed0"))
    assert run.name == "fedmap-seed0" and run.source == str(tmp_path)
    assert run.first_cohort == [1]  # round 1's replies; the ledger's round 2 is not read
    assert [e["kind"] for e in run.events] == ["rejected"]
    assert len(run.warmup_digest) == 16
    assert run.partition == [[1, 2], [4, 0]]
