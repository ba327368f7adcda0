#!/usr/bin/env bash
# Regenerate docs/results.md: the paper-claims grid (benchmarks/paper_claims.toml, 348 runs of
# 80 rounds on Fashion-MNIST) through `fedmap sweep`, then `fedmap report` and the claims.
# Measured per run: 13-16 min on a 2-core CPU with 2 at a time (client-local, PruneFL and
# FedDST up to twice that; PruneFL's round 1, the initial pruning, alone 350-375 s on a shared
# core), so days for the whole grid; on one H100/H200 with PARALLEL=12,
# 72-115 s (client-local about 320 s), so about an hour for the whole grid. PARALLEL=16 is
# no faster (the GPU is already 95-99 % busy): IID runs took 120-135 s instead of 72-115 s,
# and an H200 finished 63 runs of the 80 % column (no client-local) in 13.3 min. Finished runs
# are skipped: stop it at any time (SIGTERM keeps a checkpoint) and run it again to continue.
# Several machines sharing OUT (or several terminals) split the grid: each run is locked while
# it runs, and a run another sweep holds is reported busy and left to it.
# Run directories go to OUT (default runs/paper_claims, which git ignores: they are tens of MB).
# After the sweep, benchmarks/grid_tables.py writes what the page needs of them as compact tables,
# benchmarks/results/paper_claims.* (one row per run; per round, per client, partitions, events),
# adding to the runs the tables hold already; commit those tables, and docs/results.md, which
# benchmarks/claims.py then rebuilds from them. The run directories of the 348 runs shown last
# lived in git at commit 8522aaf (git archive 8522aaf benchmarks/runs/paper_claims | tar -x).
#
#   bash benchmarks/paper_claims.sh                 # PARALLEL=2 by default
#   PARALLEL=12 bash benchmarks/paper_claims.sh --set data.path=/data/fashion-mnist
#   bash benchmarks/paper_claims.sh --only 'target_sparsity0.9-*'   # a part of the grid
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/paper_claims}
started=$(date +%s)
status=0
"$PY" -m fedmap sweep benchmarks/paper_claims.toml --out "$OUT" --parallel "${PARALLEL:-2}" "$@" \
  || status=$?
elapsed=$(( $(date +%s) - started ))
echo "sweep took $(( elapsed / 60 )) min $(( elapsed % 60 )) s (exit $status)"
"$PY" benchmarks/grid_tables.py "$OUT"
"$PY" benchmarks/claims.py --elapsed "$elapsed"
exit "$status"
