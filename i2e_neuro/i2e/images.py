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
    """Read an image file as an RGB ``uint8`` array ``[H, W, 3]``; errors name the file.

    Every bit depth is scaled to 0..255 as a viewer shows it: 16-bit integers by 255/65535,
    32-bit integers by their full range, floats from [0, 1] (other float ranges, negative
    integers and NaN are refused).  Transparent images are composited on black (the colour of
    "no light", which I2E treats as no event).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(im, path)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"{path}: refused as a possible decompression bomb ({e}); raise "
            "PIL.Image.MAX_IMAGE_PIXELS if the image is genuine"
        ) from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if str(e).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a readable image ({e})") from e


def _to_rgb8(im, path: Path | str) -> np.ndarray:
    """Pillow image of any mode -> RGB uint8, scaled by bit depth (see ``load_image``)."""
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        values = np.asarray(im)
        if mode == "F":
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{path}: float image with values from {lo:g} to {hi:g}; float images "
                    "must hold values in [0, 1] (convert it to 8 or 16 bits, or rescale it)"
                )
            scaled = values.astype(np.float64) * 255.0
        else:
            bits = 16 if mode.startswith("I;16") else _integer_bits(im)
            if values.size and values.min() < 0:
                raise ValueError(
                    f"{path}: {bits}-bit image with negative values (min {values.min()}): "
                    "signed images are not supported; save it as unsigned 8 or 16 bits"
                )
            scaled = values.astype(np.float64) * (255.0 / (2.0**bits - 1))
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA")).astype(np.uint16)
        # composite on black: premultiply by alpha, rounded
        return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)
    return np.array(im.convert("RGB"))


def _integer_bits(im) -> int:
    """Bit depth of a 32-bit-mode ("I") Pillow image: TIFF says it; PNG/PGM "I" are 16-bit."""
    tags = getattr(im, "tag_v2", None)
    if tags is not None and 258 in tags:
        first = lambda v: int(v[0] if isinstance(v, tuple) else v)  # noqa: E731
        signed = 339 in tags and first(tags[339]) == 2
        return first(tags[258]) - (1 if signed else 0)  # signed: 0..2**31-1 is the range
    return 16 if im.format in ("PNG", "PPM") else 32


def as_image_batch(images: Any) -> tuple[torch.Tensor, bool]:
    """Check ``images`` and return ``(batch [B, C, H, W], was_batched)``.

    Accepted: torch tensors ``[B,C,H,W]``, ``[C,H,W]``, ``[H,W]`` (C = 1 or 3); numpy arrays in the
    same layouts or channels-last ``[H,W,C]`` / ``[B,H,W,C]``; PIL images; uint8, integer, bool or
    float values (floats are expected in [0, 1], but I2E is invariant to scale).
    """
    batched = True
    if _is_pil(images):
        images = _to_rgb8(images, "images (PIL image)")
    if isinstance(images, np.ndarray):
        if images.dtype.kind not in "biuf":
            raise TypeError(f"images: non-numeric dtype {images.dtype}")
        arr = images
        if arr.ndim == 2:
            arr, batched = arr[None, None], False
        elif arr.ndim == 3:
            batched = False
            if arr.shape[0] not in (1, 3) and arr.shape[-1] not in (1, 3):
                raise ValueError(
                    f"images: a 3-D array must be [C, H, W] or [H, W, C] with 1 (grey) or 3 "
                    f"(RGB) channels, got shape {arr.shape}"
                )
            arr = arr[None] if arr.shape[0] in (1, 3) else np.moveaxis(arr, -1, 0)[None]
        elif arr.ndim == 4 and arr.shape[1] not in (1, 3):
            if arr.shape[-1] not in (1, 3):
                raise ValueError(
                    f"images: a 4-D array must be [B, C, H, W] or [B, H, W, C] with 1 or 3 "
                    f"channels (grey or RGB), got shape {arr.shape}"
                )
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


def resize(images, size):
    """The project's one image resize: bilinear with antialiasing (torchvision ``v2.Resize`` on
    uint8 tensors, the filter of PIL's ``resize``), used by conversion, training, simulation
    and the pictures alike.

    ``images``: one image ``[H, W, C]`` uint8 numpy array (returned as one), or a uint8 tensor
    ``[..., C, H, W]``. ``size``: ``(H, W)``, or ``(S,)`` / ``S`` for a short side of S pixels
    (aspect kept). Returned unchanged when already that size.
    """
    from torchvision.transforms import v2

    one = isinstance(images, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(2, 0, 1) if one else images
    h, w = x.shape[-2:]
    size = (size,) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) == 1:
        s = size[0]
        new = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
    else:
        new = size
    if tuple(new) == (h, w):
        return images
    out = v2.Resize(new, interpolation=resize_filter(), antialias=True)(x)
    return out.permute(1, 2, 0).numpy() if one else out


def resize_filter():
    """The filter of :func:`resize`, and of the training augmentations that resize."""
    from torchvision.transforms import v2

    return v2.InterpolationMode.BILINEAR
