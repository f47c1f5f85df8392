"""Reference converters that the engine is checked and timed against.

* :func:`algorithm1` is a plain transcription of the paper's Algorithm 1: the 3x3 kernels as a
  ``conv2d``, float maps, thresholds by comparison. It is the ground truth for tests.
* :func:`odg` is the prior converter of ES-ImageNet (ES-ImageNet, Lin et al., Front. Neurosci. 2021), one image at a
  time with a Python loop over steps, as that dataset was produced. It is a speed baseline only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from i2e_neuro.i2e.directions import DIRECTION_PAIRS, kernel, parse_order


def algorithm1(
    images: torch.Tensor,
    ratio: float = 0.12,
    timesteps: int = 8,
    order: str | Sequence[str] | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Algorithm 1 on a float ``[B, 3, H, W]`` batch; returns float ``[T, B, 2, H, W]``.

    ``pairs`` overrides the canonical pair of each direction (random-vector checks).
    """
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if pairs is None:
        pairs = [DIRECTION_PAIRS[n][0] for n in parse_order(order)[:timesteps]]
    v = images.max(dim=1, keepdim=True).values
    padded = F.pad(v, (1, 1, 1, 1), mode="replicate")
    kernels = torch.tensor([kernel(p) for p in pairs], dtype=v.dtype, device=v.device)[:, None]
    dv = F.conv2d(padded, kernels)  # [B, T, H, W]
    threshold = (ratio * (v.amax(dim=(1, 2, 3)) - v.amin(dim=(1, 2, 3)))).view(-1, 1, 1, 1)
    on = (dv > threshold).to(v.dtype)
    off = (-dv > threshold).to(v.dtype)
    return torch.stack([on, off], dim=2).transpose(0, 1)


#: ES-ImageNet's 9-point trajectory (rows, cols) and fixed threshold on [0, 1] values.
ODG_ROWS = (1, 0, 2, 1, 0, 2, 1, 1, 2)
ODG_COLS = (0, 2, 1, 0, 1, 2, 0, 1, 1)
ODG_THRESHOLD = 0.18
ODG_LONG_SIDE = 254


def odg(image: np.ndarray) -> list[np.ndarray]:
    """ODG on one ``uint8 [H, W, 3]`` image: per step an ``[n, 3]`` array of (y, x, polarity)."""
    v = image.max(axis=2).astype(np.float32) / 255.0
    h, w = v.shape
    scale = ODG_LONG_SIDE / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = (np.arange(nh) * h / nh).astype(np.int64)
    cols = (np.arange(nw) * w / nw).astype(np.int64)
    v = v[rows][:, cols]
    previous = None
    events = []
    for r, c in zip(ODG_ROWS, ODG_COLS):
        canvas = np.zeros((nh + 4, nw + 4), dtype=np.float32)
        canvas[r : r + nh, c : c + nw] = v
        if previous is not None:
            diff = canvas - previous
            diff[:2, :] = 0
            diff[-2:, :] = 0
            diff[:, :2] = 0
            diff[:, -2:] = 0
            on = np.argwhere(diff > ODG_THRESHOLD)
            off = np.argwhere(diff < -ODG_THRESHOLD)
            events.append(
                np.concatenate(
                    [
                        np.column_stack([on, np.ones(len(on), np.int64)]),
                        np.column_stack([off, np.zeros(len(off), np.int64)]),
                    ]
                )
            )
        previous = canvas
    return events
