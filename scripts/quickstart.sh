#!/usr/bin/env bash
# The README's first command: set up, then run the default experiment
# (FedMap on Fashion-MNIST, 100 clients, 10 per round, FedAvg CNN, p = 0.2 to 90 % sparsity).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedmap run configs/fmnist_iid.toml "$@"
