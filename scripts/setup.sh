#!/usr/bin/env bash
# Set up everything fedmap needs on a fresh Debian machine with Python 3.11:
# a virtual environment in .venv with the CPU build of PyTorch, fedmap itself (editable,
# with the dev tools and Flower 1.42) and, unless FEDMAP_SKIP_DATA=1, Debian's Fashion-MNIST package.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then  # Debian ships venv separately
    rm -rf .venv
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
    "$PYTHON" -m venv .venv
  fi
fi
# CPU wheel first: the package's own requirement is a range (CUDA users keep theirs), and a
# bare range would pull a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==2.13.0"
fi
.venv/bin/pip install --quiet -e ".[dev,flower]"

if [ "${FEDMAP_SKIP_DATA:-0}" != "1" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
