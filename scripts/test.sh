#!/usr/bin/env bash
# The README's second command (and what CI runs): set up without the dataset, check the tracked
# files' sizes (scripts/check_sizes.py: run directories and data stay out of git), lint,
# type-check, test.
# Tests run in FEDMAP_TEST_WORKERS processes (default 2, pytest-xdist): much of the suite waits on
# subprocesses (CLI runs, real Flower deployments), so two workers use a 2-core machine fully. The
# Flower deployment tests share one worker (xdist_group), one after another. FEDMAP_TEST_WORKERS=0
# runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
FEDMAP_SKIP_DATA=1 bash scripts/setup.sh
.venv/bin/python scripts/check_sizes.py
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -n "${FEDMAP_TEST_WORKERS:-2}" --dist loadgroup "$@"
