"""benchmarks/claims.py and claim_verdicts.py: verdicts, and the runs a mean over seeds hides."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib

from fedmap.reporting.record import Group, RunData


def fake_run(name: str, accuracy: float, cohort: list[int], **summary: Any) -> RunData:
    return RunData(
        name=name,
        source="runs",
        config={},
        summary={"final_test_accuracy": accuracy, **summary},
        rows=[{"round": 1, "test_loss": 18.19}],
        client_accuracy=[],
        partition=[[5, 5, 0, 0, 0, 0, 0, 0, 0, 0], [0, 294, 250, 0, 0, 0, 0, 0, 0, 0]],
        first_cohort=cohort,
    )


def test_only_runs_near_chance_are_listed_with_the_lone_round_one_clients_labels(load_benchmark):
    claims = load_benchmark("claims")
    lone = fake_run("lone", 0.10, [1])
    cohort = fake_run("cohort", 0.12, [0, 1])
    unknown = fake_run("unknown", 0.15, [])
    fine = fake_run("fine", 0.151, [1])
    lines = claims.chance_level([fine, unknown, lone, cohort])
    assert lines == [
        "- `cohort`: final 12.00%, test loss after round 1 18.2.",
        "- `lone`: final 10.00%, test loss after round 1 18.2; round 1 was client 1 alone, "
        "holding label 1: 294, label 2: 250.",
        "- `unknown`: final 15.00%, test loss after round 1 18.2.",
    ]


def seeded(tmp_path: Path, name: str, seed: int, clients: list[float]) -> RunData:
    return RunData(
        name=name,
        source=str(tmp_path),
        config={"seed": seed},
        summary={"final_sparsity": 0.9},
        rows=[],
        client_accuracy=clients,
        partition=[],
    )


def test_the_stability_claim_compares_only_the_seeds_both_methods_ran(tmp_path, load_benchmark):
    claims = load_benchmark("claim_verdicts")
    # seed 0's partition is mild, seeds 1-2 are harsh; client-local has finished seed 0 only
    fedmap = [
        seeded(tmp_path, "f0", 0, [0.5, 0.7]),  # std 10 points
        seeded(tmp_path, "f1", 1, [0.2, 0.8]),  # std 30 points
        seeded(tmp_path, "f2", 2, [0.2, 0.8]),
    ]
    local = [seeded(tmp_path, "l0", 0, [0.4, 0.8])]  # std 20 points
    verdict = claims.std_verdict(fedmap, local)
    assert verdict == (
        "FedMap 10.00 vs client-local 20.00 points (sparsity 90.0% vs 90.0%; seed 0): **met**"
    )
    assert "not met" in claims.std_verdict(local, fedmap)
    assert claims.std_verdict(fedmap, [seeded(tmp_path, "l5", 5, [0.1, 0.9])]) is None


def test_missing_runs_are_counted_by_target_and_method(load_benchmark):
    claims = load_benchmark("claims")
    names = [
        "target_sparsity0.9-dir0.1-prunefl-seed1",
        "target_sparsity0.9-iid-prunefl-seed0",
        "target_sparsity0.9-iid-feddst-seed0",
        "target_sparsity0.5-iid-local-seed2",
        "iid-none-seed0",
    ]
    assert claims.missing_by_target_and_method(names) == (
        "target_sparsity0.9: prunefl 2, feddst 1; target_sparsity0.5: local 1; no target: none 1"
    )


def test_the_page_says_where_its_data_lives_and_which_commit_held_the_run_directories(
    load_benchmark,
):
    claims = load_benchmark("claims")
    tables = " ".join(claims.data_location(Path("benchmarks/results/paper_claims.csv")))
    assert "`benchmarks/results/paper_claims.csv`" in tables
    assert "`.venv/bin/python benchmarks/claims.py` rebuilds this page" in tables
    assert f"git archive {claims.RUNS_COMMIT} benchmarks/runs/paper_claims" in tables
    dirs = " ".join(claims.data_location(Path("runs/paper_claims")))
    assert "run directories under `runs/paper_claims`" in dirs
    assert "benchmarks/grid_tables.py runs/paper_claims" in dirs


def test_runs_with_refused_replies_are_listed_with_their_reasons(load_benchmark):
    claims = load_benchmark("claims")
    events = [
        {"round": 1, "client": 4, "kind": "rejected", "reason": "update norm 26 exceeds 18"},
        {"round": 2, "client": 4, "kind": "capped", "reason": "sample count 9 capped to 5"},
        {"round": 3, "client": 1, "kind": "rejected", "reason": "reply contains NaN or Inf"},
        {"round": 5, "client": 2, "kind": "rejected", "reason": "update norm 29 exceeds 20"},
    ]
    screened = fake_run("screened", 0.7, [], replies_rejected=3)
    screened.events.extend(events)
    clean = fake_run("clean", 0.9, [], replies_rejected=0)
    unlogged = fake_run("unlogged", 0.9, [], replies_rejected=1)
    assert claims.rejected_replies([unlogged, clean, screened]) == [
        "- `screened`: 3 replies rejected (2x update norm over the limit, "
        "1x reply contains NaN or Inf).",
        "- `unlogged`: 1 reply rejected.",
    ]


def test_the_bytes_claim_is_judged_at_the_claim_targets_and_lists_the_others(load_benchmark):
    claims = load_benchmark("claim_verdicts")
    ratios = [("IID", 0.9, 0.30), ("Dir", 0.8, 0.33), ("IID", 0.5, 0.49)]
    line = claims.bytes_verdict(ratios)
    assert "between 30.0% and 33.0%" in line and "(largest: Dir at 80%)" in line
    assert "**met**" in line and "Not judged (other targets): IID at 50% 49.0%." in line
    over = claims.bytes_verdict([("IID", 0.95, 0.36), ("IID", 0.5, 0.49)])
    assert "**not met**" in over and "36.0%" in over
    assert "no FedMap run" in claims.bytes_verdict([("IID", 0.5, 0.49)])


def scored(tmp_path: Path, seed: int, accuracy: float) -> RunData:
    return RunData(
        name=f"s{seed}",
        source=str(tmp_path),
        config={"seed": seed},
        summary={"final_test_accuracy": accuracy},
        rows=[],
        client_accuracy=[],
        partition=[],
    )


def test_baselines_are_compared_with_fedmap_seed_by_seed(tmp_path, load_benchmark):
    claims = load_benchmark("claim_verdicts")
    # seed 1's partition is harder for everyone: unpaired means would mix that in
    fedmap = [scored(tmp_path, 0, 0.90), scored(tmp_path, 1, 0.80), scored(tmp_path, 2, 0.95)]
    gradual = [scored(tmp_path, 0, 0.89), scored(tmp_path, 1, 0.79)]
    assert claims.paired_gap(fedmap, gradual) == "-1.00 ± 0.00 (2)"
    assert claims.paired_gap(fedmap, [scored(tmp_path, 2, 0.97)]) == "+2.00 (1)"
    assert claims.paired_gap(fedmap, [scored(tmp_path, 7, 0.5)]) == "–"
    groups = {
        ("fashion_mnist IID", "fedmap", 0.9): Group("fashion_mnist IID", "fedmap", 0.9, fedmap),
        ("fashion_mnist IID", "gradual", 0.9): Group("fashion_mnist IID", "gradual", 0.9, gradual),
        ("fashion_mnist IID", "gradual", 0.8): Group("fashion_mnist IID", "gradual", 0.8, gradual),
        ("fashion_mnist IID", "none", None): Group("fashion_mnist IID", "none", None, fedmap),
    }
    table = claims.comparison_table(groups)
    assert table[4].startswith("| setting | target | gradual (cubic) | one-shot |")
    assert table[6:] == ["| IID | 90% | -1.00 ± 0.00 (2) | – | – | – | – | – |"]
    assert claims.comparison_table({k: v for k, v in groups.items() if k[1] != "fedmap"}) == []


def test_the_grid_runs_into_an_ignored_folder_and_commits_only_its_tables():
    """Run directories are tens of MB: they stay out of git; the tables are the record."""
    root = Path(__file__).resolve().parents[2]
    script = (root / "benchmarks" / "paper_claims.sh").read_text()
    out = re.search(r"^OUT=\$\{OUT:-(.+)\}$", script, re.MULTILINE)
    assert out is not None and "git add" not in script
    assert 'benchmarks/grid_tables.py "$OUT"' in script
    sweep = tomllib.loads((root / "benchmarks" / "paper_claims.toml").read_text())
    assert sweep.get("out", "runs/paper_claims") == out.group(1)  # sweep and script agree
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(root), "rev-parse"], check=False).returncode:
        pytest.skip("not a git checkout")
    run = f"{out.group(1)}/target_sparsity0.9-iid-fedmap-seed0/summary.json"
    assert subprocess.run([git, "-C", str(root), "check-ignore", "-q", run]).returncode == 0
    tables = subprocess.run(
        [git, "-C", str(root), "check-ignore", "-q", "benchmarks/results/paper_claims.csv"]
    )
    assert tables.returncode == 1  # not ignored: committed
