"""The whole chain as a user runs it, on real data: p2p-train → p2p-export → p2p-video and p2p-eval."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import pytest
from conftest import shared_data


def run(*cmd: str) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), cmd[0])
    r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}"
    return r


@pytest.mark.slow
def test_train_export_video_eval_on_real_data(tmp_path):
    photos, clip = shared_data("photos"), shared_data("video", "tree.avi")
    run_dir, model, video = tmp_path / "edges", tmp_path / "edges" / "model.onnx", tmp_path / "out.mp4"
    run("p2p-train", "--data", str(photos), "--task", "edges", "--out", str(run_dir), "--size", "64",
        "--ngf", "8", "--ndf", "8", "--iters", "20", "--no-progress")
    run("p2p-export", str(run_dir), "-o", str(model), "--verify")
    run("p2p-video", str(model), str(clip), str(video), "--max-frames", "12", "--no-progress")
    cap = cv2.VideoCapture(str(video))
    frames = 0
    while cap.read()[0]:
        frames += 1
    src = cv2.VideoCapture(str(clip))
    assert frames == 12
    assert round(cap.get(cv2.CAP_PROP_FPS)) == round(src.get(cv2.CAP_PROP_FPS))
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (
        int(src.get(cv2.CAP_PROP_FRAME_WIDTH)), int(src.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    # the exported file and its checkpoint score the same with the noise off
    scores = [json.loads(run("p2p-eval", str(m), "--data", str(photos), "--noise", "off", "--limit", "4",
                             "--report", str(tmp_path / f"eval{i}"), "--no-progress").stdout)
              for i, m in enumerate((run_dir, model))]
    l1 = [s["metrics"]["l1"] for s in scores]
    assert abs(l1[0] - l1[1]) < 1e-4, scores
