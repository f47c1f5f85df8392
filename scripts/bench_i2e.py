#!/usr/bin/env python
"""Time the I2E engine against the paper's Algorithm 1 (conv2d, float maps) and against ODG.

Both converters run in the same process on the same inputs (the four sample photos, resized
and repeated to the batch size), interleaved repeat by repeat so that load from other
processes hits both alike; the table gives the median milliseconds per image. Every
configuration is first checked for identical output (engine == Algorithm 1).

On the CPU each configuration also times the write-bound floor, in the same interleaved
rounds: allocating the engine's output ``[8, B, 2, H, W]`` (bool, 0.80 MB per 224x224 image)
and writing every byte of it once (``np.empty(...).fill``, split over the same number of
threads as the engine), after reading the input images once; the engine cannot be faster than
producing its output, so ``engine / floor`` is its distance to the memory-bandwidth limit of
this machine, and ``output bytes / floor time`` the write bandwidth that limit stands for.

On CUDA the reference runs with TF32 off (cudnn and matmul), every timing is bracketed by
``torch.cuda.synchronize()``, and the engine's achieved memory bandwidth is reported:
(input bytes + output bytes) / time, as a fraction of the device's peak where that can be
determined (else in GB/s).

    python scripts/bench_i2e.py              # full: uint8 and float32 inputs, 5 repeats
    python scripts/bench_i2e.py --quick      # uint8 only, 3 repeats, 128x128 only (seconds)

The last line is JSON: per configuration the median, fastest and slowest repeat (ms per image)
of the engine and of Algorithm 1, and ODG's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2e_neuro import i2e  # noqa: E402
from i2e_neuro.i2e.baselines import algorithm1, odg  # noqa: E402
from i2e_neuro.i2e.images import load_image  # noqa: E402
from i2e_neuro.machine import cpu_name, run_context  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "i2e_neuro" / "data" / "samples"
RATIO = 0.12


def photos(size: int, batch: int) -> torch.Tensor:
    """``[batch, 3, size, size]`` uint8: the sample photos resized, repeated and flipped."""
    from PIL import Image

    base = [
        np.asarray(Image.fromarray(load_image(p)).resize((size, size), Image.BILINEAR))
        for p in sorted(SAMPLES.glob("*.jpg"))
    ]
    out = [
        base[i % len(base)] if (i // len(base)) % 2 == 0 else base[i % len(base)][:, ::-1]
        for i in range(batch)
    ]
    return torch.from_numpy(np.ascontiguousarray(np.stack(out))).permute(0, 3, 1, 2).contiguous()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, x, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn(x)
    sync(device)
    return time.perf_counter() - start


def write_floor(x: torch.Tensor) -> None:
    """Produce a fresh output of the engine's size once: allocate ``[8, B, 2, H, W]`` bool
    and write every byte (after reading the input once), in the engine's thread layout."""
    n, _, h, w = x.shape
    a = x.numpy()
    out = np.empty((8, n, 2, h, w), dtype=bool)
    threads = min(n, max(1, torch.get_num_threads()))
    step = -(-n // threads)

    def part(s: int) -> None:
        a[s : s + step].max()  # the input, read once
        out[:, s : s + step].fill(False)

    if threads == 1:
        part(0)
    else:
        list(_floor_pool(threads).map(part, range(0, n, step)))


_POOLS: dict = {}


def _floor_pool(threads: int):
    """A persistent thread pool, as the engine keeps one (no thread start-up in the timing)."""
    from concurrent.futures import ThreadPoolExecutor

    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads)
    return _POOLS[threads]


def peak_bandwidth() -> float | None:
    """Peak device memory bandwidth in bytes/s, or None where it cannot be determined."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_khz, bus_bits = (
        getattr(props, "memory_clock_rate", None),
        getattr(props, "memory_bus_width", None),
    )
    if not (clock_khz and bus_bits):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            clock_khz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM) * 1000
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
        except Exception:  # pynvml missing or the query unsupported
            return None
    return 2.0 * clock_khz * 1e3 * bus_bits / 8  # double data rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per configuration (default 5, --quick 3)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="uint8 inputs at 128x128 only, 3 repeats, 4 ODG images (a smoke run)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda", "all"],
        default="all",
        help="default: cpu, and cuda when available",
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's, the number of cores)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats {repeats}: must be at least 1")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.device != "all":
        devices = [args.device]
    dtypes = ["uint8"] if args.quick else ["uint8", "float32"]

    load_before = os.getloadavg()
    print(
        "# I2E engine vs Algorithm 1 vs ODG — "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"load average {load_before[0]:.2f} before"
    )
    print(
        f"CPU: {cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )
    if "cuda" in devices:
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(
        f"ratio {RATIO}, T = 8, median of {repeats} interleaved repeats (after an untimed check run); ms per image"
    )
    print(
        f"command: python scripts/bench_i2e.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip()
        + "\n"
    )

    rows, engine_ms, records = [], {}, []
    sizes = (128,) if args.quick else (224, 128)
    for device in devices:
        peak = peak_bandwidth() if device == "cuda" else None
        for size in sizes:
            for batch in (1, 64):
                for dtype in dtypes:
                    x = photos(size, batch).to(device)
                    if dtype == "float32":
                        x = x.float() / 255
                    torch.backends.cudnn.allow_tf32 = False
                    torch.backends.cuda.matmul.allow_tf32 = False
                    if not torch.equal(i2e(x, ratio=RATIO), algorithm1(x, ratio=RATIO).bool()):
                        print(
                            f"MISMATCH engine vs Algorithm 1 at {device} {size} {batch} {dtype}",
                            file=sys.stderr,
                        )
                        return 1
                    eng, ref, floor = [], [], []
                    for _ in range(repeats):
                        eng.append(timed(lambda im: i2e(im, ratio=RATIO), x, device))
                        ref.append(timed(lambda im: algorithm1(im, ratio=RATIO), x, device))
                        if device == "cpu":
                            floor.append(timed(write_floor, x, device))
                    e, r = (
                        statistics.median(eng) / batch * 1e3,
                        statistics.median(ref) / batch * 1e3,
                    )
                    engine_ms[(device, size, batch, dtype)] = e
                    out_bytes = 8 * 2 * size * size  # per image
                    floor_rec = {}
                    if floor:
                        f = statistics.median(floor) / batch * 1e3
                        rounds = [a / b for a, b in zip(eng, floor)]
                        floor_rec = {
                            "write_floor_ms": [
                                round(f, 4),
                                round(min(floor) / batch * 1e3, 4),
                                round(max(floor) / batch * 1e3, 4),
                            ],
                            "write_floor_gb_s": round(out_bytes / (f / 1e3) / 1e9, 2),
                            "engine_over_floor": [
                                round(statistics.median(rounds), 3),
                                round(min(rounds), 3),
                                round(max(rounds), 3),
                            ],
                        }
                    ratios = [b_ / a_ for a_, b_ in zip(eng, ref)]
                    records.append(
                        {
                            "device": device,
                            "size": size,
                            "batch": batch,
                            "input": dtype,
                            "repeats": repeats,
                            "engine_ms": [
                                round(e, 4),
                                round(min(eng) / batch * 1e3, 4),
                                round(max(eng) / batch * 1e3, 4),
                            ],
                            "algorithm1_ms": [
                                round(r, 4),
                                round(min(ref) / batch * 1e3, 4),
                                round(max(ref) / batch * 1e3, 4),
                            ],
                            "speedup_rounds": [
                                round(statistics.median(ratios), 2),
                                round(min(ratios), 2),
                                round(max(ratios), 2),
                            ],
                            **floor_rec,
                        }
                    )
                    bw = ""
                    if floor_rec:
                        bw = (
                            f"floor {floor_rec['write_floor_ms'][0]:.3f} ms/img "
                            f"({floor_rec['write_floor_gb_s']:.1f} GB/s), engine "
                            f"{floor_rec['engine_over_floor'][0]:.2f}x the floor"
                        )
                    if device == "cuda":
                        moved = x.numel() * x.element_size() + 8 * batch * 2 * size * size
                        rate = moved / (e / 1e3 * batch)
                        bw = (
                            f"{rate / peak:.0%} of {peak / 1e9:.0f} GB/s"
                            if peak
                            else f"{rate / 1e9:.1f} GB/s"
                        )
                    rows.append(
                        (
                            device,
                            f"{size}x{size}",
                            batch,
                            dtype,
                            f"{e:.3f}",
                            f"{r:.3f}",
                            f"{r / e:.1f}x [{min(ratios):.1f}, {max(ratios):.1f}]",
                            bw,
                        )
                    )
                    del x
                    if device == "cuda":
                        torch.cuda.empty_cache()

    header = (
        "device",
        "image",
        "batch",
        "input",
        "engine ms/img",
        "Algorithm 1 ms/img",
        "speed-up (medians) [per round: min, max]",
        "memory bound (CPU: write floor; CUDA: bandwidth)",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")

    # ODG: one image at a time (as ES-ImageNet was produced), 224x224 uint8 HWC
    n = 4 if args.quick else 16
    images = photos(224, n).permute(0, 2, 3, 1).numpy()
    odg(images[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for im in images:
            odg(im)
        times.append((time.perf_counter() - start) / n)
    o = statistics.median(times) * 1e3
    odg_ms = [round(o, 3), round(min(times) * 1e3, 3), round(max(times) * 1e3, 3)]
    print(f"\nODG (numpy, one image at a time, 224x224 uint8, {n} images): {o:.2f} ms/img")
    for (device, size, batch, dtype), e in engine_ms.items():
        if size == 224 and dtype == "uint8":
            print(
                f"  engine {device} batch {batch}: {e:.3f} ms/img -> {o / e:.0f}x faster than ODG"
            )
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    summary = {
        "note": "ms per image as [median, fastest, slowest] over the repeats",
        **run_context(load_before, load_after),
        "torch_threads": torch.get_num_threads(),
        "rows": records,
        "odg_ms": odg_ms,
        "odg_images": n,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
