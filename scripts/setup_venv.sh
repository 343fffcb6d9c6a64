#!/usr/bin/env bash
# Create the in-project .venv (if missing) and install explainnn with its test and documentation extras.
# torch is installed first from TORCH_SPEC so pip keeps that build instead of
# resolving a different one for the package's "torch>=2.1" requirement.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[dev,docs]"
.venv/bin/python -c "import torch, explainnn; print(f'explainnn {explainnn.__version__} ready (torch {torch.__version__})')"
