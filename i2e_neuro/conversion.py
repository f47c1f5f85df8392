"""The I2E conversion engine: images -> binary ON/OFF event streams ``[T, B, 2, H, W]``.

Exactly the paper's algorithm (PAPER-FACTS.md section 1): V = max(R, G, B); the eight
micro-saccade shift-differences of the 1-pixel padded V; a per-image threshold
``ratio * (max V - min V)``; ON where dV > threshold, OFF where -dV > threshold (strict).

Algorithm 1 writes the differences as a 3x3 convolution with eight sparse kernels. Each kernel
has one +1 and one -1, so the same numbers come from one subtraction of two shifted views of
the padded image, compared straight into the boolean output: no float maps for all eight
timesteps, no multiplications by zero. CPU batches are cut into blocks that stay in cache.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .directions import DIRECTION_PAIRS, parse_order, position
from .images import as_image_batch

PADDINGS = {"replicate": "replicate", "zeros": "constant", "reflect": "reflect"}
#: CPU work is done this many pixels (images x H x W) at a time so that V and the maps stay in cache.
_CPU_BLOCK_PIXELS = 1 << 16


def check_parameters(ratio: float, timesteps: int, order: Any, padding: str) -> tuple[str, ...]:
    """Validate the conversion parameters; return the parsed order. Errors name the argument."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0 <= float(ratio) < float("inf")):
        raise ValueError(f"ratio={ratio!r}: must be a finite number >= 0 (paper: 0.07 to 0.15)")
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or not 1 <= timesteps <= 8:
        raise ValueError(f"timesteps={timesteps!r}: must be an integer from 1 to 8")
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}: must be one of {sorted(PADDINGS)}")
    return parse_order(order)


def value_channel(batch: torch.Tensor) -> torch.Tensor:
    """V = max over channels of a ``[B, C, H, W]`` batch, as float ``[B, H, W]``.

    uint8 is scaled to [0, 1] (max commutes with /255, so taking it first is exact); other
    integer types are used as they are; float16/bfloat16 are computed in float32.
    """
    v = batch.amax(dim=1) if batch.shape[1] > 1 else batch[:, 0]
    if v.dtype == torch.uint8:
        return v.to(torch.float32).div_(255.0)
    if not v.is_floating_point() or v.dtype in (torch.float16, torch.bfloat16):
        return v.to(torch.float32)
    return v


def draw_pairs(
    order: Sequence[str], random_vectors: bool, generator: torch.Generator | None
) -> list[tuple[int, int]]:
    """One pair per direction: canonical, or drawn uniformly from its equivalent set."""
    pairs = []
    for name in order:
        options = DIRECTION_PAIRS[name]
        k = int(torch.randint(len(options), (1,), generator=generator)) if random_vectors else 0
        pairs.append(options[k])
    return pairs


def i2e(
    images: Any,
    ratio: float = 0.12,
    timesteps: int = 8,
    order: str | Sequence[str] | None = None,
    random_vectors: bool = False,
    generator: torch.Generator | None = None,
    padding: str = "replicate",
) -> torch.Tensor:
    """Convert images to I2E events.

    Args:
        images: ``[B,3,H,W]``, ``[3,H,W]``, ``[B,1,H,W]``, ``[H,W]`` torch/numpy, channels-last
            numpy, or a PIL image; uint8 or float in [0, 1]; CPU or CUDA.
        ratio: dynamic threshold ratio ``S_th0`` (ImageNet 0.12, CIFAR 0.07, MNIST 0.10).
        timesteps: T <= 8; the first T directions of ``order`` are used.
        order: permutation of ``"abcdefgh"`` (default: the paper's ``"efghabcd"``).
        random_vectors: draw one equivalent pair per direction for this call (training).
        generator: torch RNG for the draw (CPU generator).
        padding: ``"replicate"`` (reference), ``"zeros"`` or ``"reflect"``.

    Returns:
        bool tensor ``[T, B, 2, H, W]`` (channel 0 ON, 1 OFF) on the input's device;
        ``[T, 2, H, W]`` for a single unbatched image.
    """
    names = check_parameters(ratio, timesteps, order, padding)[:timesteps]
    batch, batched = as_image_batch(images)
    pairs = draw_pairs(names, random_vectors, generator)
    v = value_channel(batch)
    out = torch.empty((timesteps, v.shape[0], 2, *v.shape[1:]), dtype=torch.bool, device=v.device)
    step = v.shape[0] if v.is_cuda else max(1, _CPU_BLOCK_PIXELS // (v.shape[1] * v.shape[2]))
    for start in range(0, v.shape[0], step):
        _fire(v[start : start + step], pairs, float(ratio), PADDINGS[padding], out[:, start : start + step])
    return out if batched else out[:, 0]


def _fire(v: torch.Tensor, pairs: list[tuple[int, int]], ratio: float, mode: str, out: torch.Tensor) -> None:
    """Write the ON/OFF maps of V ``[b, H, W]`` into ``out`` ``[T, b, 2, H, W]``."""
    b, h, w = v.shape
    padded = F.pad(v[:, None], (1, 1, 1, 1), mode=mode)[:, 0]
    threshold = (ratio * (v.amax(dim=(1, 2)) - v.amin(dim=(1, 2)))).view(b, 1, 1)
    negative = -threshold
    diff = torch.empty_like(v)
    for t, (a, c) in enumerate(pairs):
        (ra, ca), (rc, cc) = position(a), position(c)
        torch.sub(padded[:, rc : rc + h, cc : cc + w], padded[:, ra : ra + h, ca : ca + w], out=diff)
        torch.gt(diff, threshold, out=out[t, :, 0])
        torch.lt(diff, negative, out=out[t, :, 1])


class I2E(torch.nn.Module):
    """I2E as a torch module / transform.

    In training mode each call draws random equivalent vectors (augmentation); in eval mode the
    canonical ones are used. Works batched inside a model on the GPU, and on single samples in
    DataLoader workers (an image ``[3,H,W]`` gives ``[T,2,H,W]``).
    """

    def __init__(
        self,
        ratio: float = 0.12,
        timesteps: int = 8,
        order: str | Sequence[str] | None = None,
        padding: str = "replicate",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.order = check_parameters(ratio, timesteps, order, padding)
        self.ratio, self.timesteps, self.padding, self.generator = ratio, timesteps, padding, generator

    def forward(self, images: Any) -> torch.Tensor:
        return i2e(
            images,
            ratio=self.ratio,
            timesteps=self.timesteps,
            order=self.order,
            random_vectors=self.training,
            generator=self.generator,
            padding=self.padding,
        )

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, timesteps={self.timesteps}, order={''.join(self.order)!r}, padding={self.padding!r}"
