#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment in .venv holding mnist_pruning (editable) with its
# test, book, dask and onnx extras, and verified MNIST in data/MNIST/raw. Safe to rerun: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
EXTRAS=test,book,dask,onnx  # onnx: so the tests exercise the ONNX export path too
# The stamp holds a hash of pyproject.toml and the extras: reinstall only when the dependencies changed.
stamp=.venv/.mnist-pruning-installed
want=$( (cat pyproject.toml; echo "$EXTRAS") | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import mnist_pruning, torch" 2>/dev/null; then
  echo "[setup] installing mnist_pruning[$EXTRAS] and its dependencies (torch: ~2 min on first install)"
  # (this machine's pip configuration names local package folders that may be absent; drop those warnings)
  .venv/bin/python -m pip install --disable-pip-version-check -q -e ".[$EXTRAS]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
fi
.venv/bin/mnist-pruning fetch-data >/dev/null
echo "[setup] ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')), MNIST verified"
