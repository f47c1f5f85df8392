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
``kb - ka >= D`` is ``kb > min(ka + D - 1, 255)``, one uint8 comparison per map, of two
contiguous runs of the flattened V straight into the output, with the first and last column
redone from the padded edges (:func:`_cpu_block_uint8`).
"""

from __future__ import annotations

import functools
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
#: CPU work on float images is done this many pixels (images x H x W) at a time, on uint8 ones up
#: to 8x as many (:func:`_block_images`): the block's padded V and difference maps stay in cache,
#: and there are few enough numpy calls per image (measured on a 2-core EPYC).
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
    threads = max(1, torch.get_num_threads())
    step = _block_images(n, h * w, 8 if x.dtype == np.uint8 else 1, threads)
    work = [(x[s : s + step], o[:, s : s + step]) for s in range(0, n, step)]
    workers = min(len(work), threads)
    if workers == 1:
        for xb, ob in work:
            _cpu_block(xb, ob, pairs, ratio, mode)
    else:
        for f in [
            _executor(workers).submit(_cpu_block, xb, ob, pairs, ratio, mode) for xb, ob in work
        ]:
            f.result()
    return out


def _block_images(n: int, pixels: int, scale: int, threads: int) -> int:
    """Images per block for ``n`` images of ``pixels`` each: blocks of at most ``scale *
    _CPU_BLOCK_PIXELS`` pixels (uint8: 8, measured: its maps are a quarter of the bytes of float
    ones, and fewer, larger blocks make fewer numpy calls), as many as a multiple of ``threads``
    once there is more than one ``_CPU_BLOCK_PIXELS`` of work, so that the threads share it
    evenly."""
    blocks = -(-n * pixels // (scale * _CPU_BLOCK_PIXELS))
    if n * pixels > _CPU_BLOCK_PIXELS:
        blocks = -(-max(blocks, threads) // threads) * threads
    return -(-n // min(blocks, n))


def _cpu_block(
    x: np.ndarray, out: np.ndarray, pairs: list[tuple[int, int]], ratio: float, mode: str
) -> None:
    """Events of a block ``x`` ``[b, C, H, W]`` into ``out`` ``[T, b, 2, H, W]``."""
    if x.dtype == np.uint8:
        _cpu_block_uint8(x, out, pairs, ratio, mode)
        return
    v = _channel_max(x)
    flat = v.reshape(v.shape[0], -1)
    vmax, vmin = torch.from_numpy(flat.max(axis=1)), torch.from_numpy(flat.min(axis=1))
    threshold = (ratio * (vmax - vmin)).numpy()
    _compare(v, threshold, pairs, mode, out)


def _channel_max(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """V = max over the channels of ``x`` ``[b, C, H, W]``, as ``[b, H, W]`` (into ``out``)."""
    if x.shape[1] == 1:
        if out is None:
            return x[:, 0]
        np.copyto(out, x[:, 0])
        return out
    v = np.maximum(x[:, 0], x[:, 1], out=out)
    for c in range(2, x.shape[1]):
        np.maximum(v, x[:, c], out=v)
    return v


@functools.lru_cache(maxsize=16)
def _uint8_cuts(ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(threshold, limit, exact)``, each ``[256, 256]`` indexed by an image's (max V, min V) as
    uint8: the float threshold exactly as the float path computes it, the integer limit
    ``D - 1`` of the test ``kb - ka >= D``, and whether that test is exact (False: the threshold
    lies inside the float spread of ``d = D - 1``, the image takes the float path). Entries with
    max < min are never looked up."""
    vals, lo, hi = _uint8_tables()
    v = torch.from_numpy(vals)
    threshold = (ratio * (v[:, None] - v[None, :])).numpy()
    # least d with every V[k+d] - V[k] > threshold
    cut = np.maximum(np.searchsorted(lo, threshold, side="right"), 1)
    return threshold, (cut - 1).astype(np.uint8), hi[cut - 1] <= threshold


def _cpu_block_uint8(
    x: np.ndarray, out: np.ndarray, pairs: list[tuple[int, int]], ratio: float, mode: str
) -> None:
    """:func:`_cpu_block` for uint8 ``x``, in integers (exact: :func:`_uint8_cuts`).

    ``V[c] - V[a] > limit`` is ``V[c] > min(V[a] + limit, 255)`` and ``V[c] - V[a] < -limit``
    is ``V[a] > min(V[c] + limit, 255)`` (no uint8 exceeds 255, so the cap changes no answer):
    one uint8 comparison per map, no differences. V gets its padding rows above and below and
    is flattened, with a spare byte before it; each map is then one comparison of two
    contiguous runs of ``H * W`` bytes per image, shifted by ``dy * W + dx``, straight into
    ``out``. That is right except in the first and last column, where a shift of one column
    reads the end of the neighbouring row instead of the padding; those columns are compared
    again from the column-padded edges of V.
    """
    b, _, h, w = x.shape
    _check_reflect(mode, h, w)
    size = b * (h + 2) * w
    flat = np.empty(size + 2 * w + 2, np.uint8)  # with slack: every run below stays inside
    rows = flat[1 : size + 1].reshape(b, h + 2, w)
    flat[0] = flat[size + 1 :] = 0  # read only for the edge columns, which are redone
    v = _channel_max(x, out=rows[:, 1:-1])
    _pad_rows(rows, mode)
    inner = v.reshape(b, -1)
    vmax, vmin = inner.max(axis=1), inner.min(axis=1)
    thresholds, limits, exacts = _uint8_cuts(ratio)
    limit = limits[vmax, vmin].reshape(b, 1, 1)
    raised_flat = np.empty_like(flat)
    raised_flat[0] = raised_flat[size + 1 :] = 0
    _raise(rows, limit, out=raised_flat[1 : size + 1].reshape(b, h + 2, w))

    # neighbourhood position -> (row, col), and its value and raised value at every pixel: runs
    # of the flat arrays shifted by row * W + col
    places = {p: position(p) for pair in pairs for p in pair}
    runs = {
        p: tuple(
            a[r * w + c : r * w + c + size].reshape(b, h + 2, w)[:, :h] for a in (flat, raised_flat)
        )
        for p, (r, c) in places.items()
    }

    # V's first (last) two columns, padded and transposed (``[b, 3, H + 2]``, for contiguous
    # rows): the three padded columns that the first (last) column of every map reads, as the
    # neighbourhood's columns 0, 1, 2; a map is wrong there when it reads neighbourhood
    # column 0 (2)
    edges = [
        (col, edge, _raise(edge, limit), wrong)
        for col, edge, wrong in (
            (0, _pad(v[:, :, :2].transpose(0, 2, 1), mode, np.uint8)[:, :3], 0),
            (w - 1, _pad(v[:, :, -2:].transpose(0, 2, 1), mode, np.uint8)[:, -3:], 2),
        )
    ]
    for t, (a, c) in enumerate(pairs):
        # ON: V[c] > raised[a], OFF: V[a] > raised[c]; each map's edge columns are redone right
        # after it, while its lines are still in cache
        for k, (p, q) in enumerate(((a, c), (c, a))):
            (rp, cp), (rq, cq) = places[p], places[q]
            np.greater(runs[q][0], runs[p][1], out=out[t, :, k])
            for col, edge, raised_edge, wrong in edges:
                if wrong in (cp, cq):
                    np.greater(
                        edge[:, cq, rq : rq + h],
                        raised_edge[:, cp, rp : rp + h],
                        out=out[t, :, k, :, col],
                    )
    vals = _uint8_tables()[0]
    for i in np.flatnonzero(~exacts[vmax, vmin]):
        threshold = thresholds[vmax[i], vmin[i]].reshape(1)
        _compare(vals[v[i : i + 1]], threshold, pairs, mode, out[:, i : i + 1])


def _raise(v: np.ndarray, limit: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``min(v + limit, 255)`` in uint8, ``limit`` per image (``[b, 1, 1]``)."""
    # numpy's minimum against a broadcast operand is not vectorised (20x slower than against a
    # full array), its add is: the cap is spelled out in full
    cap = np.empty_like(v)
    np.copyto(cap, 255 - limit)
    raised = np.minimum(v, cap, out=out)
    raised += limit
    return raised


def _check_reflect(mode: str, h: int, w: int) -> None:
    """Reflect padding needs a second row and column to mirror."""
    if mode == "reflect" and (h < 2 or w < 2):
        raise ValueError(f"padding='reflect' needs images of at least 2x2 pixels, got {h}x{w}")


def _pad_rows(padded: np.ndarray, mode: str) -> None:
    """Fill the first and last row of ``padded`` ``[b, H + 2, W]`` from its inner rows."""
    if mode == "replicate":
        padded[:, 0], padded[:, -1] = padded[:, 1], padded[:, -2]
    elif mode == "constant":
        padded[:, 0] = padded[:, -1] = 0
    else:  # reflect
        padded[:, 0], padded[:, -1] = padded[:, 2], padded[:, -3]


def _pad(v: np.ndarray, mode: str, dtype: Any) -> np.ndarray:
    """V ``[b, H, W]`` with a 1-pixel border in ``mode`` (replicate, constant, reflect)."""
    b, h, w = v.shape
    _check_reflect(mode, h, w)
    padded = np.empty((b, h + 2, w + 2), dtype=dtype)
    padded[:, 1:-1, 1:-1] = v
    if mode == "replicate":
        padded[:, 1:-1, 0], padded[:, 1:-1, -1] = v[:, :, 0], v[:, :, -1]
    elif mode == "constant":
        padded[:, 1:-1, 0] = padded[:, 1:-1, -1] = 0
    else:  # reflect
        padded[:, 1:-1, 0], padded[:, 1:-1, -1] = v[:, :, 1], v[:, :, -2]
    _pad_rows(padded, mode)
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
