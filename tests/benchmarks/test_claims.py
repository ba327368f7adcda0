"""benchmarks/claims.py names the runs that collapsed, which a mean over seeds hides."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

from fedmap.runs.report import Group, RunData

CLAIMS = Path(__file__).resolve().parents[2] / "benchmarks" / "claims.py"


def fake_run(path: Path, accuracy: float, ledger: str | None) -> RunData:
    path.mkdir()
    if ledger is not None:
        (path / "ledger.csv").write_text("round,client,direction,total\n" + ledger)
    return RunData(
        path=path,
        config={},
        summary={"final_test_accuracy": accuracy},
        rows=[{"round": 1, "test_loss": 18.19}],
        client_accuracy=[],
        partition=[[5, 5, 0, 0, 0, 0, 0, 0, 0, 0], [0, 294, 250, 0, 0, 0, 0, 0, 0, 0]],
    )


def test_only_runs_near_chance_are_listed_with_the_lone_round_one_clients_labels(
    tmp_path, load_benchmark
):
    claims = load_benchmark("claims")
    lone = fake_run(tmp_path / "lone", 0.10, "1,1,down,9\n1,1,up,9\n2,0,up,9\n")
    cohort = fake_run(tmp_path / "cohort", 0.12, "1,0,up,9\n1,1,up,9\n")
    unknown = fake_run(tmp_path / "unknown", 0.15, None)
    fine = fake_run(tmp_path / "fine", 0.151, "1,1,up,9\n")
    lines = claims.chance_level([fine, unknown, lone, cohort])
    assert lines == [
        "- `cohort`: final 12.00%, test loss after round 1 18.2.",
        "- `lone`: final 10.00%, test loss after round 1 18.2; round 1 was client 1 alone, "
        "holding label 1: 294, label 2: 250.",
        "- `unknown`: final 15.00%, test loss after round 1 18.2.",
    ]


def seeded(tmp_path: Path, name: str, seed: int, clients: list[float]) -> RunData:
    return RunData(
        path=tmp_path / name,
        config={"seed": seed},
        summary={"final_sparsity": 0.9},
        rows=[],
        client_accuracy=clients,
        partition=[],
    )


def test_the_stability_claim_compares_only_the_seeds_both_methods_ran(tmp_path, load_benchmark):
    claims = load_benchmark("claims")
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


def test_archived_pages_are_linked_from_the_regenerated_page(tmp_path, load_benchmark):
    claims = load_benchmark("claims")
    assert claims.archived_pages(tmp_path) == []
    (tmp_path / "results.md").write_text("current")
    (tmp_path / "results_archive_62b2a2f.md").write_text("old")
    (tmp_path / "results_archive_0abc.md").write_text("older")
    lines = claims.archived_pages(tmp_path)
    assert "[`docs/results_archive_0abc.md`](results_archive_0abc.md), " in lines[0]
    assert lines[0].endswith("[`docs/results_archive_62b2a2f.md`](results_archive_62b2a2f.md).")
    assert "(results.md)" not in lines[0]  # the current page is not an archive


def test_the_grid_keeps_its_finished_runs_in_git_but_not_their_checkpoints():
    """Ignored run directories are lost with the checkout that made them (165 runs were)."""
    root = CLAIMS.parents[1]
    sweep = tomllib.loads((root / "benchmarks" / "paper_claims.toml").read_text())
    assert sweep["out"] == "benchmarks/runs/paper_claims"
    assert 'ROOT / "benchmarks" / "runs" / "paper_claims"' in CLAIMS.read_text()
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(root), "rev-parse"], check=False).returncode:
        pytest.skip("not a git checkout")

    def ignored(relative: str) -> bool:
        check = subprocess.run([git, "-C", str(root), "check-ignore", "-q", relative], check=False)
        return check.returncode == 0

    run = "benchmarks/runs/paper_claims/target_sparsity0.9-iid-fedmap-seed0"
    for kept in ("config.toml", "summary.json", "metrics.jsonl", "metrics.csv", "ledger.csv"):
        assert not ignored(f"{run}/{kept}"), kept
    for kept in ("client_accuracy.csv", "partition.csv", "events.jsonl"):
        assert not ignored(f"{run}/{kept}"), kept
    assert ignored(f"{run}/checkpoints/round-000040.ckpt")
    assert ignored(f"{run}/model.safetensors")
    assert ignored("benchmarks/runs/paper_claims/logs/x.lock")


def test_runs_with_refused_replies_are_listed_with_their_reasons(tmp_path, load_benchmark):
    claims = load_benchmark("claims")
    screened = fake_run(tmp_path / "screened", 0.7, None)
    screened.summary["replies_rejected"] = 3
    (screened.path / "events.jsonl").write_text(
        '{"round": 1, "client": 4, "kind": "rejected", "reason": "update norm 26 exceeds 18"}\n'
        '{"round": 2, "client": 4, "kind": "capped", "reason": "sample count 9 capped to 5"}\n'
        '{"round": 3, "client": 1, "kind": "rejected", "reason": "reply contains NaN or Inf"}\n'
        '{"round": 5, "client": 2, "kind": "rejected", "reason": "update norm 29 exceeds 20"}\n'
    )
    clean = fake_run(tmp_path / "clean", 0.9, None)
    clean.summary["replies_rejected"] = 0
    unlogged = fake_run(tmp_path / "unlogged", 0.9, None)
    unlogged.summary["replies_rejected"] = 1
    assert claims.rejected_replies([unlogged, clean, screened]) == [
        "- `screened`: 3 replies rejected (2x update norm over the limit, "
        "1x reply contains NaN or Inf).",
        "- `unlogged`: 1 reply rejected.",
    ]


def test_the_bytes_claim_is_judged_at_the_claim_targets_and_lists_the_others(load_benchmark):
    claims = load_benchmark("claims")
    ratios = [("IID", 0.9, 0.30), ("Dir", 0.8, 0.33), ("IID", 0.5, 0.49)]
    line = claims.bytes_verdict(ratios)
    assert "between 30.0% and 33.0%" in line and "(largest: Dir at 80%)" in line
    assert "**met**" in line and "Not judged (other targets): IID at 50% 49.0%." in line
    over = claims.bytes_verdict([("IID", 0.95, 0.36), ("IID", 0.5, 0.49)])
    assert "**not met**" in over and "36.0%" in over
    assert "no FedMap run" in claims.bytes_verdict([("IID", 0.5, 0.49)])


def scored(tmp_path: Path, seed: int, accuracy: float) -> RunData:
    return RunData(
        path=tmp_path / f"s{seed}",
        config={"seed": seed},
        summary={"final_test_accuracy": accuracy},
        rows=[],
        client_accuracy=[],
        partition=[],
    )


def test_baselines_are_compared_with_fedmap_seed_by_seed(tmp_path, load_benchmark):
    claims = load_benchmark("claims")
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
