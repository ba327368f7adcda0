#!/usr/bin/env bash
# The README's second command (and what CI runs): set up without the dataset, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
FEDMAP_SKIP_DATA=1 bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
