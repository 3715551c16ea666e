#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian machine with Python >= 3.11:
#   .venv with dsm-jax (editable), its test tools, the samplers extra (blackjax) and the bench
#   extra (CPU PyTorch, torchebm), plus
#   Debian's Fashion-MNIST IDX files.
# Safe to re-run; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import dsm_jax, pytest, nbclient, blackjax" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.dsm_jax_installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,samplers]"
  touch .venv/.dsm_jax_installed
fi
# The optional bench extra (CPU PyTorch, torchebm, blackjax): only experiments/benchmarks and the
# comparison tests use it, never the library; without it those tests are skipped.
if ! .venv/bin/python -c "import torch, torchebm" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q -e ".[bench]" \
    || echo "setup: PyTorch (bench extra) not installed; the benchmark comparison tests will be skipped" >&2
fi

# Fashion-MNIST (used by the image experiments) from Debian's package; optional for the toys.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  { $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } \
    || echo "setup: could not install Debian package dataset-fashion-mnist (only the image experiments need it)" >&2
fi
echo "setup: ready (.venv/bin/python)"
