"""What a person looks at during a run: sample grids and the loss curve."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from p2p.runtime.files import atomic_write
from p2p.runtime.images import input_to_bgr, output_to_bgr, write_image
from p2p.runtime.spec import ModelSpec


def sample_grid(x, fake, y, spec: ModelSpec) -> np.ndarray:
    """Rows of input | output | target as one BGR image (tensors NCHW in [-1, 1])."""
    rows = []
    for xi, fi, yi in zip(x.cpu().numpy(), fake.detach().float().cpu().numpy(), y.cpu().numpy()):
        rows.append(np.concatenate([input_to_bgr(xi, spec), output_to_bgr(fi, spec, xi),
                                    output_to_bgr(yi, spec, xi)], axis=1))
    return np.concatenate(rows, axis=0)


def write_sample_grid(path: Path, x, fake, y, spec: ModelSpec) -> np.ndarray:
    """Write the grid to ``path``; returns it (BGR) for other viewers."""
    grid = sample_grid(x, fake, y, spec)
    write_image(path, grid)
    return grid


def plot_losses(history: list[dict], path: Path) -> None:
    """Loss curves (D, G's GAN term, G's L1 term, validation L1) against iterations, as a PNG."""
    keys = [("loss_d", "D"), ("loss_g_gan", "G GAN"), ("loss_g_l1", "G L1"), ("val_l1", "val L1")]
    series = {k: [(r["iter"], r[k]) for r in history if k in r] for k, _ in keys}
    panels = [(k, label) for k, label in keys if series[k]]
    if not panels:
        return
    # a bare Figure (no pyplot): no global backend or figure registry is touched
    fig = Figure(figsize=(4 * len(panels), 3))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (k, label) in zip(axes[0], panels):
        it, v = zip(*series[k])
        ax.plot(it, v, lw=1)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=80)
