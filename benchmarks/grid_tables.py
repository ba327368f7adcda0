"""Write a grid's finished run directories as the compact tables committed for its page.

Usage (benchmarks/paper_claims.sh calls it after the sweep)::

    .venv/bin/python benchmarks/grid_tables.py runs/paper_claims [--out PREFIX] [--replace]

Runs the tables hold already and the run directories do not are kept (a machine that ran
part of the grid adds to the tables, it does not shrink them; ``--replace`` drops them); a
run in both is taken from its directory. The layout is fedmap.reporting.grid_format's;
benchmarks/claims.py and ``fedmap report benchmarks/results/paper_claims.csv`` read them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedmap.reporting.grid_write import merge_with_tables, write_grid_tables
from fedmap.reporting.run_dirs import find_runs, load_run

PREFIX = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "paper_claims"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run directories or folders of them")
    parser.add_argument("--out", type=Path, default=PREFIX, help="the tables' path, no suffix")
    parser.add_argument("--replace", action="store_true", help="drop runs only the tables hold")
    args = parser.parse_args()
    found, warnings = find_runs(args.runs)
    fresh = [load_run(p) for p in found]
    runs = fresh
    if not args.replace:
        runs, skipped = merge_with_tables(fresh, args.out)
        warnings += skipped
    for warning in warnings:  # unfinished runs, runs of another method revision
        print(f"grid_tables: {warning}", file=sys.stderr)
    paths = write_grid_tables(runs, args.out)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e3:.0f} kB" for p in paths.values())
    kept = len(runs) - len(fresh)
    print(f"grid_tables: {len(fresh)} runs from directories, {kept} kept from the tables: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
