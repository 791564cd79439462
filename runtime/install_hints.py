"""Every install hint p2p prints, in one place; each runs as printed from a p2p checkout.

p2p is installed from its checkout (``./install.sh``, or ``pip install -e ".[EXTRA]"``), never
by name: the name ``p2p`` on PyPI belongs to an unrelated project, so ``pip install 'p2p[...]'``
would install someone else's code. This project's distribution is called ``p2p-pix2pix``
(free on PyPI when chosen), so that a future ``pip install`` of it can never fetch another one;
the import name ``p2p`` and the commands keep their names.
"""
from __future__ import annotations

DISTRIBUTION = "p2p-pix2pix"

# CUDA 12 packages need driver >= 525, CUDA 13 ones >= 580 (nvidia-smi names the driver's CUDA version)
GPU = ("P2P_GPU=cu12 ./install.sh (CUDA 12, driver ≥ 525) or P2P_GPU=cu13 ./install.sh (CUDA 13, driver ≥ 580) "
       "in the p2p checkout")
GPU_CU12 = "P2P_GPU=cu12 ./install.sh in the p2p checkout"
JETSON = ("on a Jetson, JetPack's TensorRT (sudo apt install python3-libnvinfer) in a venv made with "
          "--system-site-packages")
ORT = ('./install.sh in the p2p checkout (or pip install -e ".[cpu]" there; GPU machines: P2P_GPU=cu12 or cu13 '
       "./install.sh, for onnxruntime-gpu; never both)")
TENSORBOARD = "pip install tensorboard"
