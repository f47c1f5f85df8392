#!/usr/bin/env python
"""Training throughput: the QAT slayer model vs the SpikingJelly float reference, same input.

For each configuration (architecture, input size, batch) the three training steps are timed in
one process on the same random I2E-like events (8 % density, T = 8) and labels, interleaved
repeat by repeat so that load from other processes hits all alike:

* ``slayer float``: the lava-dl graph in phase 1 (float weights + BatchNorm),
* ``slayer QAT``: the same graph after ``fold()`` (8-bit weights, straight-through rounding),
* ``SpikingJelly``: the paper's float MS-ResNet (``models/reference.py``).

A step is forward + cross-entropy + backward + SGD step (the I2E conversion is not included;
see scripts/bench_i2e.py). Reported: median samples/s over the repeats and the ratio
QAT / SpikingJelly. The slayer graph runs ``T + depth`` steps per sample (Loihi's hop delays),
SpikingJelly ``T``: that is part of what is measured.

    python scripts/bench_train.py                                  # the two default configurations
    python scripts/bench_train.py --arch msresnet18 --size 128 --batch 8 --repeats 3
    python scripts/bench_train.py --quick                          # msresnet_tiny, batch 8 (seconds)

The last line is JSON: per configuration the median, fastest and slowest repeat in samples/s.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2e_neuro.allocator import keep_freed_memory  # noqa: E402
from i2e_neuro.machine import cpu_name, run_context  # noqa: E402
from i2e_neuro.models.qat import NeuronConfig, SpikingGraph  # noqa: E402
from i2e_neuro.models.reference import build_reference  # noqa: E402
from i2e_neuro.models.spec import build_spec  # noqa: E402

DEFAULTS = [("msresnet_tiny", 32, 64, 5), ("msresnet18", 128, 8, 3)]


def make_step(
    model: torch.nn.Module, events: torch.Tensor, labels: torch.Tensor, device: torch.device
):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step() -> None:
        logits = model(events)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def bench(
    arch: str, size: int, batch: int, repeats: int, device: torch.device, classes: int = 10
) -> dict:
    g = torch.Generator().manual_seed(0)
    events = (torch.rand(8, batch, 2, size, size, generator=g) < 0.08).to(device)
    labels = torch.randint(classes, (batch,), generator=g).to(device)
    torch.manual_seed(0)
    spec = build_spec(arch, (2, size, size), classes, 8)
    slayer_float = SpikingGraph(spec, NeuronConfig()).to(device).train()
    slayer_qat = SpikingGraph(spec, NeuronConfig()).to(device).train()
    slayer_qat.load_state_dict(slayer_float.state_dict())
    slayer_qat.fold()
    reference = build_reference(arch, 2, classes).to(device).train()
    steps = {
        "slayer float": make_step(slayer_float, events, labels, device),
        "slayer QAT": make_step(slayer_qat, events, labels, device),
        "SpikingJelly": make_step(reference, events, labels, device),
    }
    for step in steps.values():  # warm-up (allocations, lazy shapes, cudnn choice)
        step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    rate = {k: batch / statistics.median(v) for k, v in times.items()}
    # QAT / SJ per round (the two steps of a round ran back to back): the ratio's spread
    rounds = [sj / qat for sj, qat in zip(times["SpikingJelly"], times["slayer QAT"])]
    spread = {k: (batch / max(v), batch / min(v)) for k, v in times.items()}
    return {
        "arch": arch,
        "size": size,
        "batch": batch,
        "steps": spec.steps,
        "repeats": repeats,
        "rate": rate,
        "spread": spread,
        "qat_over_sj_rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", help="one configuration: architecture (with --size and --batch)")
    parser.add_argument("--size", type=int, default=32, help="input side (default 32)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed steps per model (default 5; 3 for msresnet18 in the defaults)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda", "all"],
        default="all",
        help="default: cpu, and cuda when available",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--kept-malloc",
        action="store_true",
        help="keep freed memory mapped, as the i2e-neuro commands do (i2e_neuro/allocator.py); "
        "it speeds up both sides, by different amounts (default: glibc's own settings, what "
        "both libraries get out of the box)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="msresnet_tiny 32x32, batch 8, 2 repeats (a smoke run)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    for name, v in (
        ("--threads", args.threads),
        ("--repeats", args.repeats),
        ("--batch", args.batch),
    ):
        if v < 1:
            parser.error(f"{name} {v}: must be at least 1")
    torch.set_num_threads(args.threads)
    malloc = "kept" if args.kept_malloc and keep_freed_memory() else "default"
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    configs = [(args.arch, args.size, args.batch, args.repeats)] if args.arch else DEFAULTS
    if args.quick:
        configs = [(args.arch or "msresnet_tiny", 32, 8, 2)]
    load_before = os.getloadavg()
    print(
        "# training throughput, QAT (lava-dl slayer) vs SpikingJelly — "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"load average {load_before[0]:.2f} before"
    )
    print(
        f"CPU: {cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"
        + (f"; GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    )
    print()
    print(
        "| device | arch | input | batch | slayer steps | slayer float samples/s | slayer QAT samples/s | SpikingJelly samples/s | QAT / SJ |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    records = []
    for dev in devices:
        for arch, size, batch, repeats in configs:
            r = bench(arch, size, batch, repeats, torch.device(dev))
            rate = r["rate"]
            rounds = r["qat_over_sj_rounds"]
            records.append(
                {
                    "device": dev,
                    **{k: r[k] for k in ("arch", "size", "batch", "steps", "repeats")},
                    "samples_per_s": {
                        k: [round(v, 2), round(r["spread"][k][0], 2), round(r["spread"][k][1], 2)]
                        for k, v in rate.items()
                    },
                    "qat_over_sj": round(rate["slayer QAT"] / rate["SpikingJelly"], 3),
                    "qat_over_sj_rounds": {
                        "median": round(statistics.median(rounds), 3),
                        "min": round(min(rounds), 3),
                        "max": round(max(rounds), 3),
                        "values": [round(x, 3) for x in rounds],
                    },
                }
            )
            print(
                f"| {dev} | {arch} | {size}x{size} | {batch} | {r['steps']} (T=8) | {rate['slayer float']:.1f} | "
                f"{rate['slayer QAT']:.1f} | {rate['SpikingJelly']:.1f} | {rate['slayer QAT'] / rate['SpikingJelly']:.2f}x |",
                flush=True,
            )
    load_after = os.getloadavg()
    print(
        "QAT / SJ per round (same round, back to back): "
        + "; ".join(
            f"{r['arch']}@{r['size']}: median {r['qat_over_sj_rounds']['median']:.2f} "
            f"[{r['qat_over_sj_rounds']['min']:.2f}, {r['qat_over_sj_rounds']['max']:.2f}]"
            for r in records
        )
        + f"; malloc {malloc}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        json.dumps(
            {
                "note": "samples/s as [median, slowest, fastest] over the repeats",
                **run_context(load_before, load_after),
                "torch_threads": torch.get_num_threads(),
                "malloc": malloc,
                "rows": records,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
