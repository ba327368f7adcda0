"""scripts/check_sizes.py on temporary git repositories."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_sizes.py"
LIMIT = 100  # bytes: small limits keep the files these tests write small


@pytest.fixture
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_sizes", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def track(repo: Path, name: str, nbytes: int) -> None:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * nbytes)
    subprocess.run(["git", "-C", str(repo), "add", name], check=True)


def test_the_limits_are_one_and_fifteen_megabytes(check):
    assert (check.MAX_FILE_BYTES, check.MAX_TOTAL_BYTES) == (10**6, 15 * 10**6)


def test_a_large_file_outside_the_docs_images_is_named(repo, check):
    track(repo, "small.csv", LIMIT)
    track(repo, "data/big.csv", LIMIT + 1)
    track(repo, "docs/figure.png", LIMIT * 5)  # documentation images may be larger
    track(repo, "figure.png", LIMIT + 1)  # ... but only under docs/
    (repo / "untracked.bin").write_bytes(b"x" * LIMIT * 5)  # not tracked: not counted
    problems = check.find_problems(check.tracked_sizes(repo), LIMIT, LIMIT * 10)
    assert len(problems) == 2
    assert "data/big.csv is 0.00 MB" in problems[0] and "figure.png" in problems[1]
    assert not any("docs/figure.png" in line or "small.csv" in line for line in problems)


def test_a_total_at_the_limit_fails_and_names_the_largest_folders(repo, check):
    for i in range(LIMIT // 10):
        track(repo, f"runs/grid/run{i}/metrics.csv", LIMIT - 1)  # many files, each allowed
    track(repo, "docs/results/figure.png", LIMIT * 2)
    track(repo, "README.md", LIMIT)
    sizes = check.tracked_sizes(repo)
    total = sum(sizes.values())
    assert check.find_problems(sizes, LIMIT, total + 1) == []
    problems = check.find_problems(sizes, LIMIT, total)
    assert problems[0].startswith(f"check_sizes: tracked files total {total / 1e6:.2f} MB")
    assert [line.split()[1] for line in problems[1:]] == ["runs/grid", "docs/results", "README.md"]
    assert problems[1].endswith(f"in {LIMIT // 10} files")


def test_outside_a_git_repository_it_says_so_and_fails(tmp_path, check, capsys):
    assert check.tracked_sizes(tmp_path) is None
    assert check.main(["check_sizes.py", str(tmp_path)]) == 1
    assert (
        capsys.readouterr().err.strip().endswith("is not a git repository (CI checks a git clone)")
    )


def test_a_small_repository_passes(repo, check, capsys):
    track(repo, "README.md", LIMIT)
    assert check.main(["check_sizes.py", str(repo)]) == 0
    assert "ok, 0.00 MB in 1 tracked files" in capsys.readouterr().out
