#!/usr/bin/env bash
# Set up p2p in ./.venv on a fresh machine (CPU). Safe to run again.
# GPU machines: install a CUDA build of torch first (see README), then run this with P2P_TORCH=keep.
# OpenCV: opencv-python (p2p-live opens a window) by default; P2P_OPENCV=headless installs
# opencv-python-headless instead (servers, Docker: no GUI system libraries needed). Where the GUI build
# cannot load (e.g. no libGL), this script installs the headless one and says so.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
OPENCV=${P2P_OPENCV:-gui}
case "$OPENCV" in
  gui) other=opencv-python-headless ;;
  headless) other=opencv-python ;;
  *) echo "install.sh: P2P_OPENCV must be gui or headless, not '$OPENCV'" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
if [ "${P2P_TORCH:-cpu}" = "cpu" ]; then
  # pinned: this version is the CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build
  pip install -q "torch==2.13.0"
fi
# Both OpenCV builds install the one module cv2 into one folder: with both, cv2 is whichever came last,
# and uninstalling one deletes files of the other. Switching therefore starts from neither.
if pip show -q "$other" 2>/dev/null; then
  installed=""
  for name in opencv-python opencv-python-headless; do
    if pip show -q "$name" 2>/dev/null; then installed="$installed $name"; fi
  done
  pip uninstall -y -q $installed
fi
if [ "$OPENCV" = gui ]; then
  pip install -q -e ".[test]"
  if ! error=$(.venv/bin/python -c "import cv2" 2>&1); then
    echo "install.sh: opencv-python (windows) cannot load here: $(printf '%s\n' "$error" | tail -n 1)" >&2
    echo "install.sh: installing opencv-python-headless instead (p2p-live then needs --headless); for the" \
         "window, install the system libraries (Debian/Ubuntu: apt-get install libgl1 libglib2.0-0) and run" \
         "./install.sh again" >&2
    exec env P2P_OPENCV=headless bash ./install.sh
  fi
else
  # pyproject asks for opencv-python: install p2p without dependencies, then the same requirements
  # (and the test extra) with the headless build in its place
  pip install -q --no-deps -e .
  mapfile -t requirements < <(.venv/bin/python - <<'PYTHON'
from importlib.metadata import requires
for requirement in requires("p2p"):
    name, _, marker = requirement.partition(";")
    if name.strip().startswith("opencv-python"):
        continue
    if "extra" in marker:  # of the extras, only "test" (pip would drop the marker's requirement as given)
        if 'extra == "test"' in marker:
            print(name.strip())
        continue
    print(requirement.strip())
PYTHON
  )
  pip install -q "${requirements[@]}" opencv-python-headless
fi
echo "p2p installed in $(pwd)/.venv with $([ "$OPENCV" = gui ] && echo "opencv-python (windows)" ||
  echo "opencv-python-headless (no windows: p2p-live --headless)"): activate it with  . .venv/bin/activate"
