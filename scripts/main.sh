#!/usr/bin/env bash
# The main job: set up, then run the pipeline. Default: a quick but real run (~3 min on 2 cores after set-up)
# writing runs/quick/. `bash scripts/main.sh --full` runs the full sweep, notebooks and book (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mnist-pruning run "$@"
