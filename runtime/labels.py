"""Label colours of the datasets p2p knows, for code on both sides of torch (evaluation, the web page).

CMP facades (the paper's labels→photo data): 12 classes, RGB, in class-id order (index 0 = id 1).
"""
from __future__ import annotations

CMP_CLASSES = ("background", "facade", "window", "door", "cornice", "sill",
               "balcony", "blind", "deco", "molding", "pillar", "shop")
CMP_PALETTE = ((0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
               (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0))
