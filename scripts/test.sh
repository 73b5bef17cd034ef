#!/usr/bin/env bash
# The test suite: set up, lint, then unit tests and every notebook under nbval in the smoke configuration
# (MNIST_PRUNING_SMOKE=1: small subsets and 1 epoch; outputs under runs/smoke/, never results/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
export MNIST_PRUNING_SMOKE=1 OMP_NUM_THREADS=1
# Notebook 05 reads the fixture CSVs: in a fresh checkout the other notebooks may not have written theirs yet.
export MNIST_PRUNING_RESULTS=tests/fixtures
# Two workers, one torch thread each: two processes with 2 OpenMP threads each slow each other 3-30x.
# --dist loadfile keeps all cells of a notebook on one worker (nbval runs them in one kernel, in order).
.venv/bin/python -m pytest -n 2 --dist loadfile --nbval-lax tests notebooks "$@"
# The published book: the committed full run's executed chapters and CSVs, built offline with warnings as errors.
if [ -d results/notebooks ]; then
  .venv/bin/python -m mnist_pruning.book --executed results/notebooks --results results --require-all
fi
