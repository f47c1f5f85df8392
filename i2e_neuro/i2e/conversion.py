"""The I2E conversion engine: images -> binary ON/OFF event streams ``[T, B, 2, H, W]``.

Exactly Algorithm 1 of the I2E paper (AAAI 2026, arXiv 2511.08065): V = max(R, G, B); the eight
micro-saccade shift-differences of the 1-pixel padded V; a per-image threshold
``ratio * (max V - min V)``; ON where dV > threshold, OFF where -dV > threshold (strict).

Algorithm 1 writes the differences as a 3x3 convolution with eight sparse kernels. Each kernel
has one +1 and one -1, so the same numbers come from one subtraction of two shifted views of
the padded image, compared straight into the boolean output: no float maps for all eight
timesteps, no multiplications by zero.

On the CPU the work is done in numpy (its comparisons are vectorised, torch's bool comparisons
are not, and small torch ops stall on a busy machine), in blocks of images that stay in cache,
spread over ``torch.get_num_threads()`` threads. uint8 images take an integer path that gives
bit-identical results: the float value of a difference ``V[b] - V[a]`` (with V = k / 255 in
float32) depends on the two integers only through ``kb - ka`` up to a tiny spread, so the float
test ``dV > threshold`` is an integer test ``kb - ka >= D`` with ``D`` read from a table per
image; an image whose threshold falls inside that spread (``ratio * range`` exactly at a
multiple of 1/255) is done in float instead. That integer test needs no difference at all:
``kb - ka >= D`` is ``kb > min(ka + D - 1, 255)``, one uint8 comparison per map, done on the
flattened padded image so that both operands are contiguous (:func:`_compare_uint8`).
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from i2e_neuro.i2e.directions import DIRECTION_PAIRS, parse_order, position
from i2e_neuro.i2e.images import as_image_batch

PADDINGS = {"replicate": "replicate", "zeros": "constant", "reflect": "reflect"}
#: CPU work is done this many pixels (images x H x W) at a time: the block's padded V and difference
#: maps stay in cache, and there are few enough numpy calls per image (measured on a 2-core EPYC).
_CPU_BLOCK_PIXELS = 1 << 18


def check_parameters(ratio: float, timesteps: int, order: Any, padding: str) -> tuple[str, ...]:
    """Validate the conversion parameters; return the parsed order. Errors name the argument."""
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, numbers.Real)
        or not (0 <= float(ratio) < float("inf"))
    ):
        raise ValueError(f"ratio={ratio!r}: must be a finite number >= 0 (paper: 0.07 to 0.15)")
    if float(ratio) >= 1:
        raise ValueError(
            f"ratio={ratio!r}: must be below 1 (no difference between two pixels exceeds the "
            "image's range, so a ratio >= 1 never fires; paper: 0.07 to 0.15)"
        )
    if (
        isinstance(timesteps, bool)
        or not isinstance(timesteps, numbers.Integral)
        or not 1 <= timesteps <= 8
    ):
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
    timesteps = int(timesteps)
    batch, batched = as_image_batch(images)
    batch = _within_float_range(batch)
    pairs = draw_pairs(names, random_vectors, generator)
    if batch.device.type == "cpu":
        out = _i2e_cpu(batch.detach(), pairs, float(ratio), PADDINGS[padding])
        return out if batched else out[:, 0]
    v = value_channel(batch)
    out = torch.empty((timesteps, v.shape[0], 2, *v.shape[1:]), dtype=torch.bool, device=v.device)
    step = v.shape[0] if v.is_cuda else max(1, _CPU_BLOCK_PIXELS // (v.shape[1] * v.shape[2]))
    for start in range(0, v.shape[0], step):
        _fire(
            v[start : start + step],
            pairs,
            float(ratio),
            PADDINGS[padding],
            out[:, start : start + step],
        )
    return out if batched else out[:, 0]


def _within_float_range(batch: torch.Tensor) -> torch.Tensor:
    """Float images with huge finite values (e.g. +-3e38) scaled by a power of two (exact, and
    I2E is invariant to scale) so that differences of two pixels cannot overflow to inf."""
    if not batch.is_floating_point():
        return batch
    peak = float(batch.detach().abs().amax())
    if peak <= 2.0**60:
        return batch
    return batch * 2.0 ** -math.ceil(math.log2(peak))


def _fire(
    v: torch.Tensor, pairs: list[tuple[int, int]], ratio: float, mode: str, out: torch.Tensor
) -> None:
    """Write the ON/OFF maps of V ``[b, H, W]`` into ``out`` ``[T, b, 2, H, W]``."""
    b, h, w = v.shape
    padded = F.pad(v[:, None], (1, 1, 1, 1), mode=mode)[:, 0]
    threshold = (ratio * (v.amax(dim=(1, 2)) - v.amin(dim=(1, 2)))).view(b, 1, 1)
    negative = -threshold
    diff = torch.empty_like(v)
    for t, (a, c) in enumerate(pairs):
        (ra, ca), (rc, cc) = position(a), position(c)
        torch.sub(
            padded[:, rc : rc + h, cc : cc + w], padded[:, ra : ra + h, ca : ca + w], out=diff
        )
        torch.gt(diff, threshold, out=out[t, :, 0])
        torch.lt(diff, negative, out=out[t, :, 1])


# --- CPU path (numpy) -------------------------------------------------------------------------

_tables_lock = threading.Lock()
_u8_tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _uint8_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vals, lo, hi)``: V = k/255 as float32, exactly as :func:`value_channel` computes it, and
    per integer difference d = 0..255 the least and largest float32 value of ``V[k+d] - V[k]``."""
    global _u8_tables
    with _tables_lock:
        if _u8_tables is None:
            vals = torch.arange(256).to(torch.uint8).to(torch.float32).div_(255.0)
            diffs = (vals[None, :] - vals[:, None]).numpy()  # [p, q] = V[q] - V[p]
            lo = np.array([np.diagonal(diffs, d).min() for d in range(256)], dtype=np.float32)
            hi = np.array([np.diagonal(diffs, d).max() for d in range(256)], dtype=np.float32)
            # the integer path relies on the float intervals of successive d being disjoint and
            # ordered
            if not (
                lo[0] == hi[0] == 0 and bool((hi[:-1] < lo[1:]).all())
            ):  # pragma: no cover - IEEE float32
                raise RuntimeError(
                    "i2e: float32 differences of k/255 are not ordered by k; the uint8 path is unusable"
                )
            _u8_tables = vals.numpy(), lo, hi
        return _u8_tables


def _executor(workers: int) -> ThreadPoolExecutor:
    """A process-wide thread pool (re-created after a fork or a change of torch's thread count)."""
    global _pool
    with _tables_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != workers:
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="i2e"))
        return _pool[2]


def _i2e_cpu(
    batch: torch.Tensor, pairs: list[tuple[int, int]], ratio: float, mode: str
) -> torch.Tensor:
    """The CPU engine: numpy blocks of images, spread over a thread pool."""
    if batch.dtype not in (torch.uint8, torch.float32, torch.float64):
        batch = batch.to(
            torch.float32
        )  # other ints as they are, half precision in float32 (value_channel)
    x = batch.numpy()
    n, _, h, w = x.shape
    # numpy's allocator asks the kernel for huge pages on large arrays: 5x fewer page faults than
    # torch.empty for this fresh 0.8 MB-per-image output, which used to cost more than the
    # conversion
    o = np.empty((len(pairs), n, 2, h, w), dtype=bool)
    out = torch.from_numpy(o)
    step = max(1, _CPU_BLOCK_PIXELS // (h * w))
    starts = range(0, n, step)
    work = [(x[s : s + step], o[:, s : s + step]) for s in starts]
    workers = min(len(work), max(1, torch.get_num_threads()))
    if workers == 1:
        for xb, ob in work:
            _cpu_block(xb, ob, pairs, ratio, mode)
    else:
        for f in [
            _executor(workers).submit(_cpu_block, xb, ob, pairs, ratio, mode) for xb, ob in work
        ]:
            f.result()
    return out


def _cpu_block(
    x: np.ndarray, out: np.ndarray, pairs: list[tuple[int, int]], ratio: float, mode: str
) -> None:
    """Events of a block ``x`` ``[b, C, H, W]`` into ``out`` ``[T, b, 2, H, W]``."""
    b = x.shape[0]
    if x.shape[1] == 1:
        v = x[:, 0]
    else:
        v = np.maximum(x[:, 0], x[:, 1])
        for c in range(2, x.shape[1]):
            np.maximum(v, x[:, c], out=v)
    flat = v.reshape(b, -1)
    vmax, vmin = flat.max(axis=1), flat.min(axis=1)
    if x.dtype != np.uint8:
        threshold = (ratio * (torch.from_numpy(vmax) - torch.from_numpy(vmin))).numpy()
        _compare(v, threshold, pairs, mode, out)
        return
    vals, lo, hi = _uint8_tables()
    # float threshold exactly as the float path computes it, then the integer cut-off per image
    threshold = (ratio * (torch.from_numpy(vals[vmax]) - torch.from_numpy(vals[vmin]))).numpy()
    cut = np.searchsorted(
        lo, threshold, side="right"
    )  # least d with every V[k+d] - V[k] > threshold
    exact = hi[cut - 1] <= threshold  # False: the threshold lies inside the spread of d = cut - 1
    _compare_uint8(v, (cut - 1).astype(np.uint8), pairs, mode, out)
    for i in np.flatnonzero(~exact):
        _compare(vals[v[i : i + 1]], threshold[i : i + 1], pairs, mode, out[:, i : i + 1])


def _compare_uint8(
    v: np.ndarray, limit: np.ndarray, pairs: list[tuple[int, int]], mode: str, out: np.ndarray
) -> None:
    """:func:`_compare` for uint8 ``v`` and integer limits ``0 <= limit <= 255`` (per image),
    without the differences: ``V[c] - V[a] > limit`` is ``V[c] > min(V[a] + limit, 255)`` and
    ``V[c] - V[a] < -limit`` is ``V[a] > min(V[c] + limit, 255)`` (no uint8 exceeds 255, so
    the cap at 255 changes no answer).

    Each map is one comparison of two uint8 arrays on the padded grid, flattened (the shifted
    views are then contiguous 1-D slices: no per-row loop), into a scratch map whose valid
    ``H x W`` part is copied into ``out``: a third of the bytes of subtracting into int16 and
    comparing that twice, and contiguous."""
    b, h, w = v.shape
    wp = w + 2
    size = b * (h + 2) * wp
    slack = 2 * wp + 2  # the largest shift: every slice below stays inside
    flat = np.zeros(size + slack, np.uint8)
    padded = flat[:size].reshape(b, h + 2, wp)
    _pad(v, mode, np.uint8, into=padded)
    lim = limit.reshape(b, 1, 1)
    raised_flat = np.zeros(size + slack, np.uint8)
    raised = raised_flat[:size].reshape(b, h + 2, wp)
    np.minimum(padded, 255 - lim, out=raised)  # V + limit, capped at 255, in uint8
    raised += lim
    scratch = np.empty(size, bool)
    valid = scratch.reshape(b, h + 2, wp)[:, :h, :w]
    for t, (a, c) in enumerate(pairs):
        (ra, ca), (rc, cc) = position(a), position(c)
        oa, oc = ra * wp + ca, rc * wp + cc
        np.greater(flat[oc : oc + size], raised_flat[oa : oa + size], out=scratch)
        np.copyto(out[t, :, 0], valid)
        np.greater(flat[oa : oa + size], raised_flat[oc : oc + size], out=scratch)
        np.copyto(out[t, :, 1], valid)


def _pad(v: np.ndarray, mode: str, dtype: Any, into: np.ndarray | None = None) -> np.ndarray:
    """V ``[b, H, W]`` with a 1-pixel border in ``mode`` (replicate, constant, reflect), in a
    new array or ``into`` (``[b, H + 2, W + 2]``)."""
    b, h, w = v.shape
    padded = np.empty((b, h + 2, w + 2), dtype=dtype) if into is None else into
    padded[:, 1:-1, 1:-1] = v
    if mode == "replicate":
        padded[:, 1:-1, 0], padded[:, 1:-1, -1] = v[:, :, 0], v[:, :, -1]
        padded[:, 0], padded[:, -1] = padded[:, 1], padded[:, -2]
    elif mode == "constant":
        padded[:, 1:-1, 0] = padded[:, 1:-1, -1] = 0
        padded[:, 0] = padded[:, -1] = 0
    else:  # reflect
        if h < 2 or w < 2:
            raise ValueError(f"padding='reflect' needs images of at least 2x2 pixels, got {h}x{w}")
        padded[:, 1:-1, 0], padded[:, 1:-1, -1] = v[:, :, 1], v[:, :, -2]
        padded[:, 0], padded[:, -1] = padded[:, 2], padded[:, -3]
    return padded


def _compare(
    v: np.ndarray,
    limit: np.ndarray,
    pairs: list[tuple[int, int]],
    mode: str,
    out: np.ndarray,
    dtype: Any = None,
) -> None:
    """ON where ``dV > limit``, OFF where ``dV < -limit`` (per image), into ``out`` ``[T, b, 2, H, W]``."""
    b, h, w = v.shape
    padded = _pad(v, mode, dtype or v.dtype)
    upper = (
        limit[0] if b == 1 else limit.reshape(b, 1, 1)
    )  # a scalar compares faster than a broadcast
    lower = -upper
    diff = np.empty((b, h, w), dtype=padded.dtype)
    for t, (a, c) in enumerate(pairs):
        (ra, ca), (rc, cc) = position(a), position(c)
        np.subtract(
            padded[:, rc : rc + h, cc : cc + w], padded[:, ra : ra + h, ca : ca + w], out=diff
        )
        np.greater(diff, upper, out=out[t, :, 0])
        np.less(diff, lower, out=out[t, :, 1])


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
        self.ratio, self.timesteps, self.padding, self.generator = (
            ratio,
            timesteps,
            padding,
            generator,
        )

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
