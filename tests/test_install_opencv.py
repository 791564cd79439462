"""install.sh's choice of OpenCV build: opencv-python (windows) by default, opencv-python-headless with
P2P_OPENCV=headless or where opencv-python cannot load; never both. Run against a stand-in venv python that
logs the pip calls (test_gpu_paths.run_install); .ci/run also does the headless install for real."""
from __future__ import annotations

import os
import subprocess

from conftest import ROOT
from test_gpu_paths import run_install


def test_default_install_has_windows(tmp_path):
    calls = run_install(tmp_path, set(), {"P2P_TORCH": "keep"})
    assert "install -q -e .[cpu,gui,test]" in calls
    assert calls[-1] == "-c import cv2"  # checked that it loads
    assert not any("uninstall" in c or "[cpu,headless" in c or "force-reinstall" in c for c in calls)


def test_headless_install_replaces_the_gui_build(tmp_path):
    calls = run_install(tmp_path, {"opencv-python"}, {"P2P_TORCH": "keep", "P2P_OPENCV": "headless"})
    uninstall, install = "uninstall -q -y opencv-python", "install -q -e .[cpu,headless,test]"
    restore = "install -q --force-reinstall --no-deps opencv-python-headless"  # files the two share
    assert calls.index(uninstall) < calls.index(install) < calls.index(restore)
    assert not any("[cpu,gui" in c for c in calls)


def test_falls_back_to_headless_where_the_gui_build_cannot_load(tmp_path):
    calls = run_install(tmp_path, set(), {"P2P_TORCH": "keep"}, cv2_loads=False)
    gui, headless = calls.index("install -q -e .[cpu,gui,test]"), calls.index("install -q -e .[cpu,headless,test]")
    assert gui < calls.index("-c import cv2") < headless


def test_unknown_opencv_choice_is_one_line():
    bad = subprocess.run(["bash", str(ROOT / "install.sh")], env={**os.environ, "P2P_OPENCV": "qt"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "install.sh: P2P_OPENCV must be gui or headless, not 'qt'"
