"""p2p-train's progress: the bar, images/s, the seconds trained, and the expected time once it is known."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

PACE_PROBE = 5  # iterations timed before the expected duration is said


class Pace:
    """The progress bar, the seconds the run has trained, images/s, and the expected time once known."""

    def __init__(self, trainer, total: int):
        self.trainer, self.total, self.start = trainer, total, trainer.iteration
        t = trainer
        if t.main and total > t.iteration:
            tqdm.write(f"training {total - t.iteration} iterations into {t.out} ({t.steps_per_epoch} "
                       f"batches an epoch); the expected time follows after {PACE_PROBE}", file=sys.stderr)
        self.bar = tqdm(total=total, initial=min(t.iteration, total), disable=not (t.cfg.progress and t.main),
                        unit="it", dynamic_ncols=True)
        self.t_begin = self.t_last = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()

    def tick(self, losses: dict, images: int) -> float:
        """After an iteration: the trainer's seconds, the bar, and the images/s of this iteration."""
        t, now = self.trainer, time.perf_counter()
        t.seconds += now - self.t_last
        rate = images / max(now - self.t_last, 1e-9)
        self.t_last = now
        self.bar.update(1)
        if t.iteration - self.start == PACE_PROBE and self.total - t.iteration > PACE_PROBE:
            self._say_expected_time(time.perf_counter() - self.t_begin)
        n_epochs = t.cfg.epochs + t.cfg.epochs_decay
        self.bar.set_postfix_str(f"ep {t.epoch_of(t.iteration - 1) + 1}/{n_epochs} " + " ".join(
            f"{k} {v:.3f}" for k, v in losses.items()) + f" {rate:.1f} img/s")
        return rate

    def _say_expected_time(self, seconds: float) -> None:
        """Once the pace is known: how long the rest will take here (on stderr, above the progress bar)."""
        t = self.trainer
        if not t.main:
            return
        pace = seconds / PACE_PROBE
        left = (self.total - t.iteration) * pace
        done = time.strftime("%H:%M", time.localtime(time.time() + left))
        tqdm.write(f"{self.total - t.iteration} iterations to go at {pace:.2f} s each: about "
                   + (f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s") + f" here (done around {done})",
                   file=sys.stderr)
