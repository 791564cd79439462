#!/usr/bin/env bash
# Set up p2p in ./.venv on a fresh machine. Safe to run again.
#   ./install.sh                    CPU: torch 2.13.0 (CPU build, from this machine's disk) and onnxruntime
#   P2P_GPU=cu12 ./install.sh       CUDA 12 (driver >= 525): onnxruntime-gpu, TensorRT 10, cuda-python 12
#   P2P_GPU=cu13 ./install.sh       CUDA 13 (driver >= 580): the same for CUDA 13
# GPU machines: install a CUDA build of torch into .venv first and add P2P_TORCH=keep (see README).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
case "${P2P_GPU:-}" in
  "") extras=cpu ort=onnxruntime other=onnxruntime-gpu ;;
  cu12|cu13) extras="gpu-${P2P_GPU}" ort=onnxruntime-gpu other=onnxruntime ;;
  *) echo "install.sh: P2P_GPU must be cu12 or cu13 (or unset for the CPU), not '${P2P_GPU}'" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
if [ "${P2P_TORCH:-cpu}" = "cpu" ]; then
  # pinned: this version is the CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build
  pip install -q "torch==2.13.0"
fi
# onnxruntime and onnxruntime-gpu install the same module: never both. Removing one deletes files
# the other shares, so the one we keep is reinstalled afterwards.
swapped=no
if pip show -q "$other" >/dev/null 2>&1; then
  pip uninstall -q -y "$other"
  swapped=yes
fi
pip install -q -e ".[${extras},test]"
if [ "$swapped" = yes ]; then
  pip install -q --force-reinstall --no-deps "$ort"
fi
echo "p2p installed in $(pwd)/.venv (${extras}): activate it with  . .venv/bin/activate"
