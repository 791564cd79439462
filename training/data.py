"""What a training step draws from: the paired data, plus (for distillation) images without targets."""
from __future__ import annotations

import numpy as np

from p2p.runtime.pairs import InputDataset, PairDataset


class TrainingSet:
    """Items (input, target, has_target): pairs first, then images whose target the teacher will make."""

    def __init__(self, pairs: PairDataset, extras: InputDataset | None = None):
        self.pairs, self.extras = pairs, extras
        self.folder = pairs.folder
        spec = pairs.spec
        self._no_target = np.zeros((spec.out_channels, spec.height, spec.width), np.float32)

    @property
    def epoch(self) -> int:
        return self.pairs.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.pairs.epoch = value
        if self.extras is not None:
            self.extras.epoch = value

    def __len__(self) -> int:
        return len(self.pairs) + (len(self.extras) if self.extras is not None else 0)

    def check_all(self) -> None:
        self.pairs.check_all()
        if self.extras is not None:
            self.extras.check_all()

    def __getitem__(self, index: int):
        if index < len(self.pairs):
            x, y = self.pairs[index]
            return x, y, np.float32(1)
        return self.extras[index - len(self.pairs)], self._no_target, np.float32(0)
