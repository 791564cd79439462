#!/usr/bin/env bash
# Set up p2p in ./.venv on a fresh machine (CPU). Safe to run again.
# GPU machines: install a CUDA build of torch first (see README), then run this with P2P_TORCH=keep.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${P2P_TORCH:-cpu}" = "cpu" ]; then
  # pinned: this version is the CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
echo "p2p installed in $(pwd)/.venv: activate it with  . .venv/bin/activate"
