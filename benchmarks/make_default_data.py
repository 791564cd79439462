"""Rebuild the embedded default data (training/default_data) from OpenCV's sample clips.

    python benchmarks/make_default_data.py [--video ../shared/data/video]

Frames are resized to 320x240. Validation frames come from a later stretch of each clip
than the training frames, with a gap between them, so validation scores are not
flattered by near-duplicates of training frames:

- tree.avi (hand-held, 68 decodable frames): train 0, 2, ..., 48; val 56, 60, 64, 67
- vtest_first10s.mp4 (fixed camera, 100 frames): train 0, 3, ..., 72; val 84, 89, 94, 99
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2

SPLITS = {
    "tree": ("tree.avi", list(range(0, 49, 2)), [56, 60, 64, 67]),
    "vtest": ("vtest_first10s.mp4", list(range(0, 73, 3)), [84, 89, 94, 99]),
}
SIZE = (320, 240)


def frames(path: Path, wanted: set[int]) -> dict[int, "cv2.Mat"]:
    cap = cv2.VideoCapture(str(path))
    found, index = {}, 0
    while len(found) < len(wanted):
        ok, frame = cap.read()
        if not ok:
            break
        if index in wanted:
            found[index] = cv2.resize(frame, SIZE, interpolation=cv2.INTER_AREA)
        index += 1
    cap.release()
    missing = sorted(wanted - set(found))
    if missing:
        raise SystemExit(f"{path}: frames {missing} could not be decoded")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--video", type=Path, default=root.parent / "shared" / "data" / "video")
    ap.add_argument("--out", type=Path, default=root / "training" / "default_data")
    args = ap.parse_args()
    for split in ("train", "val"):
        folder = args.out / split
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.jpg"):
            old.unlink()
    for name, (clip, train, val) in SPLITS.items():
        images = frames(args.video / clip, set(train) | set(val))
        for split, indices in (("train", train), ("val", val)):
            for i in indices:
                cv2.imwrite(str(args.out / split / f"{name}_{i:04d}.jpg"), images[i], [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(f"{clip}: {len(train)} training frames ({train[0]}-{train[-1]}), {len(val)} validation frames "
              f"({val[0]}-{val[-1]})")


if __name__ == "__main__":
    main()
