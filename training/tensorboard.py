"""--tensorboard: the run's curves and sample grids as TensorBoard event files, in OUT/tensorboard.

    tensorboard --logdir runs          # every run under ./runs, side by side

The same numbers as log.jsonl (losses, learning rate, images/s, validation L1) and the
same grids as samples/. Optional: the tensorboard package (``pip install tensorboard``, or the extra
``tensorboard`` of this checkout).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from p2p.runtime.errors import UserError
from p2p.runtime.install_hints import TENSORBOARD

# log.jsonl keys → TensorBoard tags
SCALARS = {"loss_d": "loss/D", "loss_g_gan": "loss/G_GAN", "loss_g_l1": "loss/G_L1", "lr": "learning_rate",
           "img_per_s": "images_per_s", "val_l1": "validation/L1"}


class TensorBoardMissing(UserError, RuntimeError):
    """--tensorboard without the tensorboard package."""


class TensorBoardLog:
    def __init__(self, folder: Path, start_iteration: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package
        except ImportError:
            raise TensorBoardMissing(f"--tensorboard needs the tensorboard package: {TENSORBOARD} "
                                     "(or leave --tensorboard out: loss.png and samples/ are always written)") from None
        # purge_step: a resumed run drops the events logged after its checkpoint, so curves do not double back
        self.writer = SummaryWriter(str(folder), purge_step=start_iteration or None)

    def record(self, record: dict) -> None:
        """One log.jsonl record: its known numbers at its iteration."""
        for key, tag in SCALARS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], record["iter"])

    def grid(self, bgr: np.ndarray, iteration: int) -> None:
        self.writer.add_image("samples", np.ascontiguousarray(bgr[:, :, ::-1]), iteration, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
