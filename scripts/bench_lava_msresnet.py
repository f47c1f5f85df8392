#!/usr/bin/env python
"""Time an MS-ResNet (default msresnet18, 2x128x128 input, T=8): Lava CPU simulator vs lava-dl.

Each repeat runs, in this one process, the lava-dl (slayer) forward of the integer network
(``batch 1``, one sample after the other, as the simulator streams them) and the Lava simulation
with the fast exact models (``export.lava.conv`` and ``export.lava.lif``; with ``--stock`` also Lava's stock models),
checks that every spike of every group is identical, and records seconds per sample, wall and
CPU (this process plus its Lava worker processes: less sensitive to other load on the machine).
Both timings include their setup (model build; Lava compile and worker start-up).

It prints one row per repeat, the Lava / lava-dl ratio with its spread over the repeats, the
load average before and after, and a JSON object as the last line.  The network has random
weights and BatchNorm statistics folded to Loihi integers; the images are random.

    python scripts/bench_lava_msresnet.py --repeats 3        # msresnet18, 128x128, 2 samples
    python scripts/bench_lava_msresnet.py --quick            # msresnet_tiny 32x32, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import export.lava.runner  # noqa: F401  (Lava first: it fixes multiprocessing's start method)


def _cpu() -> float:
    """User + system CPU seconds of this process and of its reaped children (Lava workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _timed(fn):
    wall, cpu = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - wall, _cpu() - cpu


def _spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default=None, help="msresnet18 (default; --quick: msresnet_tiny)")
    p.add_argument("--size", type=int, default=None, help="input size (default 128; --quick 32)")
    p.add_argument("--samples", type=int, default=None, help="samples per repeat (default 2)")
    p.add_argument("--repeats", type=int, default=1, help="repeats (report the spread)")
    p.add_argument("--stock", action="store_true", help="also time Lava's stock models (slow)")
    p.add_argument("--quick", action="store_true", help="msresnet_tiny at 32x32, 2 samples")
    args = p.parse_args()
    arch = args.arch or ("msresnet_tiny" if args.quick else "msresnet18")
    size = args.size or (32 if args.quick else 128)
    n = args.samples or 2
    if n < 1 or args.repeats < 1:
        p.error("--samples and --repeats must be >= 1")

    import numpy as np
    import torch

    from export.description import from_deploy
    from export.lava.runner import simulate
    from export.peers.lava_dl import run_lava_dl
    from i2e_neuro.datasets.eval_data import Samples
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    spec = build_spec(arch, (2, size, size), 10)
    model = randomize_batchnorm(SpikingGraph(spec))
    model.eval().fold()
    desc = from_deploy(model.deploy(i2e={"ratio": 0.12, "order": "efghabcd"}))
    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(n, 3, size, size, generator=gen) * 255).to(torch.uint8).numpy()
    samples = Samples(images, np.full(n, -1), [str(i) for i in range(n)])
    neurons = sum(g.size for g in desc.groups)
    print(
        f"{arch} {size}x{size}: {len(desc.groups)} groups, {len(desc.connections)} connections, "
        f"{neurons} neurons, {desc.steps} steps/sample, {n} samples x {args.repeats} repeats"
    )
    load_before = os.getloadavg()
    configs = [("lava_fast", True)] + ([("lava_stock", False)] if args.stock else [])
    rows, identical, spikes = [], True, 0
    for r in range(args.repeats):
        ref, t_dl, c_dl = _timed(lambda: run_lava_dl(desc, samples, record=n, batch=1))
        row = {"lava_dl": t_dl / n, "lava_dl_cpu": c_dl / n}
        for name, fast in configs:
            res, t, c = _timed(lambda fast=fast: simulate(desc, images, record=n, fast=fast))
            row[name], row[name + "_cpu"] = t / n, c / n
            # Lava's window is the trained steps padded to a power of two: silence there too.
            same = bool(ref.trains) and res.padding_spikes == 0
            same = same and all(np.array_equal(res.trains[g], ref.trains[g]) for g in ref.trains)
            identical = identical and same
            spikes = sum(int(res.counts[g].sum()) for g in res.counts) / n
        row["ratio"] = row["lava_fast"] / row["lava_dl"]
        row["ratio_cpu"] = row["lava_fast_cpu"] / row["lava_dl_cpu"]
        rows.append(row)
        print(
            f"repeat {r + 1}: lava-dl {row['lava_dl']:.2f} s/sample (cpu {row['lava_dl_cpu']:.2f}),"
            f" Lava fast {row['lava_fast']:.2f} s/sample (cpu {row['lava_fast_cpu']:.2f}),"
            f" ratio {row['ratio']:.2f} (cpu {row['ratio_cpu']:.2f})"
            + (f", Lava stock {row['lava_stock']:.2f} s/sample" if args.stock else "")
            + f"; spikes identical: {same}",
            flush=True,
        )
    load_after = os.getloadavg()
    keys = [k for k in rows[0]]
    summary = {k: _spread([row[k] for row in rows]) for k in keys}
    ratio = summary["ratio"]
    print(
        f"Lava / lava-dl seconds per sample: median {ratio['median']:.2f}"
        f" (min {ratio['min']:.2f}, max {ratio['max']:.2f}, {args.repeats} repeats);"
        f" CPU ratio median {summary['ratio_cpu']['median']:.2f};"
        f" spikes per sample {spikes:.0f}, identical in every group and repeat: {identical};"
        f" load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        json.dumps(
            {
                "arch": arch,
                "size": size,
                "samples": n,
                "repeats": args.repeats,
                "steps_per_sample": desc.steps,
                "spikes_per_sample": spikes,
                "identical": identical,
                "seconds_per_sample": summary,
                "load_average": {"before": load_before, "after": load_after},
            }
        )
    )
    if not identical:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
