"""p2p-live on a file: its own timeline unless --as-fast-as-possible; the key hints fit a small window."""
from __future__ import annotations

import time

import numpy as np
from test_video import FakeCapture

from p2p.video.capture import LatestFrameReader, Pacer, Source
from p2p.video.display import label_width, render, text_scale, wrap_hint
from p2p.video.live import KEY_HINT


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_file_plays_on_its_timestamps_not_on_its_picture_count():
    """tree.avi: 68 pictures over 30 s at 15 fps (empty chunks repeat the previous picture)."""
    clock = FakeClock()
    pacer = Pacer(15.0, clock)
    assert pacer.delay(0.0) == 0.0  # the first picture: at once
    clock.now += 0.05  # translating it took 50 ms
    assert abs(pacer.delay(733.337) - (0.733337 - 0.05)) < 1e-9  # the second is due 733 ms after the first
    clock.now += 0.733337 - 0.05
    clock.now += 1.0  # a slow frame: the next one is late already, so it comes at once
    assert pacer.delay(1133.339) == 0.0


def test_without_timestamps_picture_k_is_due_at_k_over_fps():
    clock = FakeClock()
    pacer = Pacer(10.0, clock)
    delays = []
    for _ in range(4):
        delays.append(pacer.delay(0.0))
        clock.now += delays[-1]
    assert np.allclose(delays, [0, 0.1, 0.1, 0.1])


class FakeFile(Source):
    def __init__(self, frames: int):
        super().__init__("file", "fake.avi")
        object.__setattr__(self, "capture", FakeCapture(frames))  # numbered pictures, decoded at once

    def open(self):
        return self.capture


def test_as_fast_as_possible_hands_out_every_frame_of_a_file():
    reader = LatestFrameReader(FakeFile(30), pace=False).start()
    seen = []
    while (frame := reader.read(timeout=5)) is not None:
        seen.append(int(frame[0, 0, 0]))
        time.sleep(0.002)  # a consumer slower than the decoder skips nothing
    reader.stop()
    assert seen == list(range(1, 31)) and reader.dropped == 0


def test_the_key_hints_wrap_in_a_small_window_instead_of_being_cut_off():
    width = 320
    scale = text_scale(width)
    lines = wrap_hint(KEY_HINT, width - 16, scale)
    assert len(lines) > 1 and " | ".join(lines) == KEY_HINT
    assert all(label_width(line, scale) <= width - 16 for line in lines)
    view = np.full((120, 320, 3), 200, np.uint8)
    shown = render(view, (width, 120), "12.0 fps | ort-cpu", KEY_HINT)
    bottom_right = shown[40:100, width // 2:]  # above the status line, right half: the wrapped keys
    assert (bottom_right < 100).any()
    wide = render(np.full((300, 1600, 3), 200, np.uint8), (1600, 300), "12.0 fps | ort-cpu", KEY_HINT)
    assert (wide[-60:, 1000:] < 100).any() and not (wide[150:230, 1000:] < 100).any()  # one line, beside the status
