"""Fail when the repository grows too large: run directories and data belong outside git.

A grid's run directories once made the tracked tree 70 MB; their record is now a
few compact tables (benchmarks/results/). This check (run by scripts/test.sh, so
by CI) keeps it that way: it fails, naming each offending file on its own line,
when a tracked file other than a documentation image (docs/**/*.png) exceeds
MAX_FILE_BYTES, or when the tracked files total MAX_TOTAL_BYTES or more. Outside
a git repository it says so and fails: CI runs on a git clone, where a check
that silently passed would check nothing.

Usage::

    .venv/bin/python scripts/check_sizes.py [ROOT]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MAX_FILE_BYTES = 1_000_000
"""1 MB: the largest tracked file allowed outside docs/**/*.png."""

MAX_TOTAL_BYTES = 15_000_000
"""15 MB: the tracked files must total less."""

LARGEST_SHOWN = 5
"""Folders named when the total is over: the largest ones, where a cut would help most."""

FOLDER_DEPTH = 2
"""Path components that name a folder in that list (``benchmarks/runs``, ``docs/results``)."""


def tracked_sizes(root: Path) -> dict[str, int] | None:
    """Bytes of each file git tracks under ``root`` (working tree); None outside a repository."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=False
        )
    except FileNotFoundError:  # no git at all
        return None
    if listed.returncode != 0:
        return None
    names = [name for name in listed.stdout.decode().split("\0") if name]
    return {name: (root / name).stat().st_size for name in names if (root / name).is_file()}


def is_doc_image(path: str) -> bool:
    """Whether ``path`` is a documentation image (``docs/**/*.png``), exempt from the file limit."""
    return path.startswith("docs/") and path.endswith(".png")


def find_problems(
    sizes: dict[str, int], max_file: int = MAX_FILE_BYTES, max_total: int = MAX_TOTAL_BYTES
) -> list[str]:
    """One line per problem (empty: none), each naming the file or the cause."""
    problems = [
        f"check_sizes: {name} is {_mb(size)}, over the {_mb(max_file)} limit for a tracked file "
        "(only docs/**/*.png may be larger)"
        for name, size in sorted(sizes.items())
        if size > max_file and not is_doc_image(name)
    ]
    total = sum(sizes.values())
    if total >= max_total:
        problems.append(
            f"check_sizes: tracked files total {_mb(total)}, the limit is under {_mb(max_total)}; "
            f"the largest {LARGEST_SHOWN} folders:"
        )
        folders = by_folder(sizes)
        largest = sorted(folders.items(), key=lambda item: (-item[1][0], item[0]))[:LARGEST_SHOWN]
        problems += [
            f"check_sizes:   {name} {_mb(nbytes)} in {count} files"
            for name, (nbytes, count) in largest
        ]
    return problems


def by_folder(sizes: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Bytes and files per folder of :data:`FOLDER_DEPTH` components (a top-level file: itself).

    Thousands of small files (run directories) outweigh any one large file, so the
    total's culprits are named by folder.
    """
    folders: dict[str, tuple[int, int]] = {}
    for name, size in sizes.items():
        parts = name.split("/")
        key = "/".join(parts[: min(FOLDER_DEPTH, len(parts) - 1)]) or name
        nbytes, count = folders.get(key, (0, 0))
        folders[key] = (nbytes + size, count + 1)
    return folders


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.2f} MB"


def main(argv: list[str]) -> int:
    """Check ``argv[1]`` (default: this repository); print the problems, exit 1 if any."""
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    sizes = tracked_sizes(root)
    if sizes is None:
        problems = [f"check_sizes: {root} is not a git repository (CI checks a git clone)"]
    else:
        problems = find_problems(sizes)
    for line in problems:
        print(line, file=sys.stderr)
    if problems or sizes is None:
        return 1
    print(f"check_sizes: ok, {_mb(sum(sizes.values()))} in {len(sizes)} tracked files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
