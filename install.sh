#!/usr/bin/env bash
# Set up p2p in ./.venv on a fresh machine. Safe to run again.
#   ./install.sh                    CPU: torch 2.13.0 (CPU build, from this machine's disk) and onnxruntime
#   P2P_GPU=cu12 ./install.sh       CUDA 12 (driver >= 525): onnxruntime-gpu, TensorRT 10, cuda-python 12
#   P2P_GPU=cu13 ./install.sh       CUDA 13 (driver >= 580): the same for CUDA 13
#   P2P_OPENCV=headless ./install.sh  opencv-python-headless instead of opencv-python (servers, Docker:
#                                   no GUI system libraries needed; p2p-live then runs with --headless)
# Every install also fetches onnxruntime-web (pinned, sha512-checked) for the web page into ~/.cache/p2p.
# GPU machines: install a CUDA build of torch into .venv first and add P2P_TORCH=keep (see README).
# Where opencv-python cannot load (e.g. no libGL), this script installs the headless build and says so.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
case "${P2P_GPU:-}" in
  "") extras=cpu ort=onnxruntime other=onnxruntime-gpu ;;
  cu12|cu13) extras="gpu-${P2P_GPU}" ort=onnxruntime-gpu other=onnxruntime ;;
  *) echo "install.sh: P2P_GPU must be cu12 or cu13 (or unset for the CPU), not '${P2P_GPU}'" >&2; exit 2 ;;
esac
case "${P2P_OPENCV:-gui}" in
  gui) opencv=gui cv=opencv-python other_cv=opencv-python-headless ;;
  headless) opencv=headless cv=opencv-python-headless other_cv=opencv-python ;;
  *) echo "install.sh: P2P_OPENCV must be gui or headless, not '${P2P_OPENCV}'" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
if [ "${P2P_TORCH:-cpu}" = "cpu" ]; then
  # pinned: this version is the CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build
  pip install -q "torch==2.13.0"
fi
# onnxruntime and onnxruntime-gpu install the same module, and so do opencv-python and
# opencv-python-headless: never both. Removing one deletes files the other shares, so the one we
# keep is reinstalled afterwards.
swapped=no
if pip show -q "$other" >/dev/null 2>&1; then
  pip uninstall -q -y "$other"
  swapped=yes
fi
cv_swapped=no
if pip show -q "$other_cv" >/dev/null 2>&1; then
  pip uninstall -q -y "$other_cv"
  cv_swapped=yes
fi
# Until issue 19 this checkout installed itself as the distribution "p2p", which on PyPI is an unrelated
# project (so a dist of that name here is either our stale install or that project): remove it, so that
# p2p-pix2pix alone owns the p2p package and the p2p-* commands.
if pip show -q p2p >/dev/null 2>&1; then
  pip uninstall -q -y p2p
fi
rm -rf p2p.egg-info  # that install's metadata in the checkout: importlib.metadata would still find it here
pip install -q -e ".[${extras},${opencv},test]"
if [ "$swapped" = yes ]; then
  pip install -q --force-reinstall --no-deps "$ort"
fi
if [ "$cv_swapped" = yes ]; then
  pip install -q --force-reinstall --no-deps "$cv"
fi
if [ "$opencv" = gui ] && ! error=$(.venv/bin/python -c "import cv2" 2>&1); then
  echo "install.sh: opencv-python (windows) cannot load here: $(printf '%s\n' "$error" | tail -n 1)" >&2
  echo "install.sh: installing opencv-python-headless instead (p2p-live then needs --headless); for the" \
       "window, install the system libraries (Debian/Ubuntu: apt-get install libgl1 libglib2.0-0) and run" \
       "./install.sh again" >&2
  exec env P2P_OPENCV=headless bash ./install.sh
fi
# onnxruntime-web for the web page (p2p-export --web, p2p-web): pinned, from the npm registry (npm pack where
# npm is installed, else plain HTTPS), checked against its sha512, kept in ~/.cache/p2p. The rest of p2p
# works without it, so a failed download only warns.
if ! .venv/bin/p2p-web --fetch-runtime >/dev/null; then
  echo "install.sh: onnxruntime-web was not downloaded; the web page needs it: run .venv/bin/p2p-web --fetch-runtime" >&2
fi
echo "p2p installed in $(pwd)/.venv (${extras}, ${cv}): activate it with  . .venv/bin/activate"
