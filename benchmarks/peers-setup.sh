#!/usr/bin/env bash
# Creates benchmarks/.peers-venv: the same torch/torchvision as the project's own environment,
# lucidrains' byol-pytorch and lightly from PyPI, and this package (editable), so that
# benchmarks/peers.py can time all three implementations in one process.
#
# Usage: bash benchmarks/peers-setup.sh      (idempotent; PYTHON=python3.11 to pick the interpreter)
#
# torch and torchvision are pinned on every pip call (a constraints file), so that installing the
# peers can never pull in a different torch: the comparison is only fair on the same build.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
VENV=benchmarks/.peers-venv
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIN="$VENV/torch-pin.txt"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" > "$PIN"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$PIN" "$@"; }

pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# The peers as published, with their declared dependencies (none of them caps torch); the pin
# makes pip fail loudly rather than replace torch if that ever changes.
pip_install byol-pytorch lightly
pip_install -e .

"$VENV/bin/python" - "$TORCH_VERSION" <<'PY'
import sys
from importlib.metadata import version

import byol
import byol_pytorch  # noqa: F401
import lightly  # noqa: F401
import torch

wanted = sys.argv[1]
if torch.__version__.split("+")[0] != wanted:
    sys.exit(f"peers-setup: torch {torch.__version__} was installed instead of {wanted}")
names = ("torch", "torchvision", "byol-pytorch", "lightly")
print("peers-setup: " + ", ".join(f"{n} {version(n)}" for n in names) + f", byol {byol.__version__}")
PY
echo "peers-setup: now run  $VENV/bin/python benchmarks/peers.py"
