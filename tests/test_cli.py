"""Tests for the ``fedmap`` command line: clean one-line failures and a complete tiny run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fedmap.cli import app
from fedmap.runs.config import load_config
from fedmap.runs.export import load_model
from fedmap.runs.metrics import COLUMNS

DESIGN_COLUMNS = list(COLUMNS[:12])  # pinned to docs/design.md in tests/runs/test_run_dir.py
INT_COLUMNS = {"round", "iteration", "bytes_up", "bytes_down", "bytes_cum"}


@pytest.fixture(autouse=True)
def _sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """cwd = tmp_path (so the default runs/ lands there) and an empty HOME (no Fashion-MNIST
    download cache); tests/conftest.py keeps torch on one thread."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield


@pytest.fixture
def config_file(write_tiny: Callable[..., Path]) -> Path:
    return write_tiny(num_clients=6, fraction=0.34)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def assert_one_line_error(result: Result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --------------------------------------------------------------------------- errors

ERROR_CASES: dict[str, tuple[list[str], list[str]]] = {
    # name: (--set overrides, strings the one line must contain); {tmp} is tmp_path
    "bad value": (["client.lr=-1"], ["client.lr", "-1"]),
    "bad choice": (["model.name=vgg"], ["model.name", "'vgg'"]),
    "wrong type": (['rounds="three"'], ["rounds", "'three'"]),
    "unknown key": (["data.num_client=5"], ["data.num_client", "did you mean data.num_clients"]),
    "unknown section": (["optimizer.lr=0.1"], ["optimizer"]),
    "bad --set": (["rounds"], ["--set", "'rounds'"]),
    "missing npz": (
        ['data.name="npz"', 'data.path="{tmp}/nowhere/data.npz"'],
        ["{tmp}/nowhere/data.npz"],
    ),
    "missing fashion_mnist": (
        ['data.name="fashion_mnist"', 'data.path="{tmp}/no-fmnist"'],
        ["{tmp}/no-fmnist", "Fashion-MNIST"],
    ),
}


@pytest.mark.parametrize("with_out", [True, False], ids=["--out", "default-out"])
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_config_or_data_fails_cleanly(
    tmp_path: Path, config_file: Path, case: str, with_out: bool
) -> None:
    overrides, needles = ERROR_CASES[case]
    args: list[str | Path] = ["run", config_file]
    for override in overrides:
        args += ["--set", override.format(tmp=tmp_path)]
    out = tmp_path / "out"
    if with_out:
        args += ["--out", out]
    before = snapshot(tmp_path)

    result = invoke(*args)

    assert_one_line_error(result, *(n.format(tmp=tmp_path) for n in needles))
    assert not out.exists()
    assert not (tmp_path / "runs").exists()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("with_out", [True, False], ids=["--out", "default-out"])
def test_digits_without_scikit_learn_fails_cleanly(
    tmp_path: Path, config_file: Path, with_out: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found before the run directory: one line naming the extra, nothing written."""
    monkeypatch.setitem(sys.modules, "sklearn", None)  # as if it were not installed
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = invoke("run", config_file, *(["--out", out] if with_out else []))
    assert_one_line_error(result, "data.name: 'digits' needs scikit-learn", "fedmap[digits]")
    assert result.exit_code == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("with_out", [True, False], ids=["--out", "default-out"])
def test_missing_config_file_fails_cleanly(tmp_path: Path, with_out: bool) -> None:
    missing = tmp_path / "absent.toml"
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    result = invoke("run", missing, *(["--out", out] if with_out else []))
    assert_one_line_error(result, str(missing))
    assert not out.exists()
    assert not (tmp_path / "runs").exists()
    assert snapshot(tmp_path) == before


def test_invalid_toml_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("rounds = = 3\n")
    result = invoke("run", path)
    assert_one_line_error(result, str(path), "TOML")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dirname", ["exp[bold]", "exp[/x]"])
def test_error_line_keeps_brackets_in_paths(tmp_path: Path, dirname: str) -> None:
    """Paths are printed as text, never read as rich markup."""
    missing = tmp_path / dirname / "c.toml"
    result = invoke("run", missing)
    assert_one_line_error(result, str(missing))


def test_non_empty_out_dir_fails_cleanly(tmp_path: Path, config_file: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    before = snapshot(tmp_path)
    result = invoke("run", config_file, "--out", out)
    assert_one_line_error(result, "--out", str(out))
    assert snapshot(tmp_path) == before
    assert (out / "keep.txt").read_text() == "precious"


def test_out_pointing_to_a_file_fails_cleanly(tmp_path: Path, config_file: Path) -> None:
    out = tmp_path / "a_file"
    out.write_text("precious")
    result = invoke("run", config_file, "--out", out)
    assert_one_line_error(result, str(out))
    assert out.read_text() == "precious"


def test_console_script_exit_code(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "fedmap"
    if not script.exists():
        pytest.skip("fedmap console script not installed next to the interpreter")
    missing = tmp_path / "absent.toml"
    proc = subprocess.run(
        [str(script), "run", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: config file not found: {missing}"]
    assert not (tmp_path / "runs").exists()


def test_help_lists_run() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "run" in result.output


# --------------------------------------------------------------------------- a tiny run


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _as_number(column: str, text: str) -> Any:
    return int(text) if column in INT_COLUMNS else float(text)


def test_tiny_run_writes_a_complete_run_directory(tmp_path: Path, config_file: Path) -> None:
    out = tmp_path / "run"
    result = invoke("run", config_file, "--out", out, "--set", "seed=2")
    assert result.exit_code == 0, result.output
    summary_out = json.loads(result.stdout)
    assert summary_out["method"] == "fedmap" and summary_out["rounds"] == 3
    assert not (tmp_path / "runs").exists()  # --out given: nothing under the default

    # every promised file
    for name in (
        "config.toml",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "model.safetensors",
        "partition.csv",
        "ledger.csv",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))

    # config.toml is the resolved config: it loads back to the one that ran
    resolved = load_config(out / "config.toml")
    assert resolved == load_config(config_file, ["seed=2"])
    assert resolved.seed == 2

    # metrics.jsonl: one row per round, the DESIGN columns first, in order
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert list(row)[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS
    assert [row["round"] for row in rows] == [1, 2, 3]
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert [row["density"] for row in rows] == pytest.approx([1.0, 0.8, 0.64], abs=1e-4)

    # metrics.csv: same header order, same numbers
    header, csv_rows = _read_csv(out / "metrics.csv")
    assert header[: len(DESIGN_COLUMNS)] == DESIGN_COLUMNS
    assert len(csv_rows) == 3
    for row, csv_row in zip(rows, csv_rows, strict=True):
        for column in DESIGN_COLUMNS:
            assert _as_number(column, csv_row[column]) == row[column], column

    # bytes_cum is the running sum of bytes_up + bytes_down
    running = 0
    for row in rows:
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0
        running += row["bytes_up"] + row["bytes_down"]
        assert row["bytes_cum"] == running
    # pruning shrinks the uplink: two clients each round, 64% of the prunable weights by round 3
    assert rows[2]["bytes_up"] < rows[0]["bytes_up"]

    # client accuracies are a distribution over clients
    for row in rows:
        assert 0.0 <= row["client_acc_min"] <= row["client_acc_mean"] <= 1.0
        assert row["client_acc_std"] >= 0.0
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["test_loss"] > 0.0
    assert [row["wall_s"] for row in rows] == sorted(row["wall_s"] for row in rows)

    # ledger.csv: per-round totals equal the metrics' bytes_up / bytes_down
    _, ledger = _read_csv(out / "ledger.csv")
    for row in rows:
        entries = [e for e in ledger if int(e["round"]) == row["round"]]
        up = sum(int(e["total"]) for e in entries if e["direction"] == "up")
        down = sum(int(e["total"]) for e in entries if e["direction"] == "down")
        assert (up, down) == (row["bytes_up"], row["bytes_down"]), row["round"]
        assert len({e["client"] for e in entries}) == 2  # round(0.34 * 6) = 2 clients
    assert {e["direction"] for e in ledger} == {"up", "down"}

    # partition.csv: one row per client, label counts adding up to num_train
    p_header, partition = _read_csv(out / "partition.csv")
    assert p_header[:3] == ["client", "num_train", "num_test"]
    assert len(partition) == 6
    assert [int(r["client"]) for r in partition] == list(range(6))
    for r in partition:
        labels = sum(int(r[c]) for c in p_header if c.startswith("label_"))
        assert labels == int(r["num_train"])

    # summary.json agrees with the last row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 3
    assert summary["final_density"] == rows[-1]["density"]
    assert summary["bytes_total"] == rows[-1]["bytes_cum"]
    assert summary["final_test_accuracy"] == rows[-1]["test_accuracy"]
    for key in (
        "final_sparsity",
        "final_test_accuracy",
        "best_test_accuracy",
        "bytes_total",
        "bytes_ratio_vs_dense",
    ):
        assert summary_out[key] == summary[key]

    # model.safetensors: the final mask
    _, mask, metadata = load_model(out / "model.safetensors")
    assert mask.density == summary["final_density"]
    assert float(metadata["density"]) == summary["final_density"]
