#!/usr/bin/env bash
# The accelerator check (experiments/accelerator_check.py) from the source tree, no install:
#   bash scripts/accelerator_check.sh --out runs/accel              # on a GPU/TPU machine (~5 min)
#   bash scripts/accelerator_check.sh --out /tmp/accel --dry-run    # tiny sizes on a CPU
# Python: $PYTHON, else this checkout's .venv, else python3 (the accelerator machine's own jax).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m experiments.accelerator_check "$@"
