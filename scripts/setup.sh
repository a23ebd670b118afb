#!/usr/bin/env bash
# Sets up a fresh machine for byol: Debian's Fashion-MNIST package (when missing and apt-get
# exists), a virtual environment in .venv and the package with its test tools.
# Usage: bash scripts/setup.sh        (idempotent; re-running only refreshes the install)
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -e "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian's dataset-fashion-mnist (the default dataset)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
  else
    echo "setup: no apt-get here, so Fashion-MNIST was not installed. Put the four files" >&2
    echo "  train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz" >&2
    echo "  t10k-labels-idx1-ubyte.gz in a folder and pass --data-root FOLDER to byol." >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/python -c "import byol, torch; print(f'setup: byol {byol.__version__}, torch {torch.__version__}')"
