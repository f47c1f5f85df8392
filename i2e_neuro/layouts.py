"""The one place where tensor layouts are converted.

* I2E / SpikingJelly: ``[T, B, C, H, W]`` (time first; per sample ``[T, C, H, W]``).
* lava-dl slayer: ``[B, C, H, W, T]`` (time last).
* Lava / netx: ``(x, y, f)`` = ``(W, H, C)`` per timestep.
"""

from __future__ import annotations

import numpy as np
import torch


def i2e_to_slayer(events: torch.Tensor, steps: int | None = None) -> torch.Tensor:
    """``[T, B, C, H, W]`` -> float ``[B, C, H, W, steps]`` (contiguous), zero-padded in time
    to ``steps``."""
    x = events.permute(1, 2, 3, 4, 0).to(torch.float32, memory_format=torch.contiguous_format)
    if steps is not None and steps > x.shape[-1]:
        x = torch.nn.functional.pad(x, (0, steps - x.shape[-1]))
    return x


def slayer_to_i2e(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W, T]`` -> ``[T, B, C, H, W]``."""
    return x.permute(4, 0, 1, 2, 3)


def batch_first_to_time_first(x):
    """DataLoader batches of per-sample ``[T, C, H, W]`` arrive as ``[B, T, ...]``; make them ``[T, B, ...]``.

    The same swap turns ``[T, B, ...]`` back into per-sample ``[B, T, ...]`` (tensor or array)."""
    return x.transpose(0, 1) if hasattr(x, "detach") else np.swapaxes(x, 0, 1)


def chw_to_lava(x: np.ndarray) -> np.ndarray:
    """``[..., C, H, W]`` -> ``[..., W, H, C]`` = Lava's ``(x, y, f)``."""
    return np.swapaxes(x, -1, -3)


def lava_to_chw(x: np.ndarray) -> np.ndarray:
    """``[..., W, H, C]`` (Lava ``(x, y, f)``) -> ``[..., C, H, W]``."""
    return np.swapaxes(x, -1, -3)


def chw_shape_to_lava(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(C, H, W)`` -> ``(W, H, C)``; 1-d shapes stay as they are."""
    return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)
