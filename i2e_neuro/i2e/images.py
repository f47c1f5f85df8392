"""Turning whatever a user holds (torch, numpy, PIL, files) into a checked image batch.

Everything ends as a float tensor ``[B, C, H, W]`` with ``C`` in {1, 3}; uint8 stays uint8 until
the V channel is taken (max commutes with the /255 scaling, so this is exact and saves memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array ``[H, W, 3]``; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


def as_image_batch(images: Any) -> tuple[torch.Tensor, bool]:
    """Check ``images`` and return ``(batch [B, C, H, W], was_batched)``.

    Accepted: torch tensors ``[B,C,H,W]``, ``[C,H,W]``, ``[H,W]`` (C = 1 or 3); numpy arrays in the
    same layouts or channels-last ``[H,W,C]`` / ``[B,H,W,C]``; PIL images; uint8, integer, bool or
    float values (floats are expected in [0, 1], but I2E is invariant to scale).
    """
    batched = True
    if _is_pil(images):
        images = np.asarray(images.convert("RGB"))
    if isinstance(images, np.ndarray):
        if images.dtype.kind not in "biuf":
            raise TypeError(f"images: non-numeric dtype {images.dtype}")
        arr = images
        if arr.ndim == 2:
            arr, batched = arr[None, None], False
        elif arr.ndim == 3:
            batched = False
            arr = arr[None] if arr.shape[0] in (1, 3) else np.moveaxis(arr, -1, 0)[None]
        elif arr.ndim == 4 and arr.shape[1] not in (1, 3) and arr.shape[-1] in (1, 3):
            arr = np.moveaxis(arr, -1, 1)
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(images, torch.Tensor):
        tensor = images
        if tensor.is_complex() or tensor.is_quantized:
            raise TypeError(f"images: non-numeric dtype {tensor.dtype}")
        if tensor.ndim == 2:
            tensor, batched = tensor[None, None], False
        elif tensor.ndim == 3:
            tensor, batched = tensor[None], False
    else:
        raise TypeError(
            f"images: expected a torch.Tensor, numpy array or PIL image, got {type(images).__name__}"
        )
    if tensor.ndim != 4:
        raise ValueError(
            f"images: expected [B,C,H,W], [C,H,W] or [H,W], got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"images: expected 1 (grey) or 3 (RGB) channels, got {tensor.shape[1]} (shape {tuple(tensor.shape)})"
        )
    if tensor.numel() == 0:
        raise ValueError(f"images: empty input of shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    # amin/amax propagate NaN and reach +-inf: two reductions, far cheaper than isfinite()
    if tensor.is_floating_point() and not (
        torch.isfinite(tensor.amin()) and torch.isfinite(tensor.amax())
    ):
        raise ValueError("images: contain NaN or infinite values")
    return tensor, batched


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(obj, Image.Image)
