#!/usr/bin/env python
"""Time an MS-ResNet (default msresnet18, 2x128x128 input, T=8) through the Lava CPU simulator.

Runs, in one process: the lava-dl (slayer) forward of the same integer network, and the Lava
simulation with the fast exact Conv model (and with ``--stock`` also Lava's stock Conv model),
checks that every spike of every group is identical, and prints seconds per sample and ratios.
The network has random weights and BatchNorm statistics folded to Loihi integers.
"""

from __future__ import annotations

import argparse
import json
import time

import export.runner  # noqa: F401  (Lava first: it fixes multiprocessing's start method)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="msresnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--stock", action="store_true", help="also time Lava's stock Conv model (slow)")
    args = p.parse_args()

    import numpy as np
    import torch

    from export.description import from_deploy
    from export.lava_dl_run import run_lava_dl
    from export.runner import simulate
    from i2e_neuro.datasets.eval_data import Samples
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(0)
    torch.set_num_threads(2)
    spec = build_spec(args.arch, (2, args.size, args.size), 10)
    model = randomize_batchnorm(SpikingGraph(spec))
    model.eval().fold()
    desc = from_deploy(model.deploy(i2e={"ratio": 0.12, "order": "efghabcd"}))
    images = (
        (
            torch.rand(
                args.samples, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)
            )
            * 255
        )
        .to(torch.uint8)
        .numpy()
    )
    samples = Samples(images, np.full(args.samples, -1), [str(i) for i in range(args.samples)])
    neurons = sum(g.size for g in desc.groups)
    print(
        f"{args.arch}: {len(desc.groups)} groups, {len(desc.connections)} connections, {neurons} neurons, {desc.steps} steps/sample"
    )

    start = time.perf_counter()
    ref = run_lava_dl(desc, samples, record=args.samples, batch=1)
    t_slayer = (time.perf_counter() - start) / args.samples
    rows = {"lava-dl (slayer) forward": t_slayer}
    configs = [("Lava fast Conv", True)] + ([("Lava stock Conv", False)] if args.stock else [])
    identical = {}
    for name, fast in configs:
        start = time.perf_counter()
        res = simulate(desc, images, record=args.samples, fast=fast)
        rows[name] = (time.perf_counter() - start) / args.samples
        identical[name] = all(np.array_equal(res.trains[g], ref.trains[g]) for g in ref.trains)
        spikes = sum(int(res.counts[g].sum()) for g in res.counts)
    print(f"{'engine':<28}{'s / sample':>12}{'x slayer':>10}")
    for name, t in rows.items():
        print(f"{name:<28}{t:>12.2f}{t / t_slayer:>10.1f}")
    if args.stock:
        print(f"stock / fast: {rows['Lava stock Conv'] / rows['Lava fast Conv']:.1f}x")
    print(
        f"spikes per sample: {spikes / args.samples:.0f}; identical spikes in every group: {identical}"
    )
    print(
        json.dumps(
            {
                "arch": args.arch,
                "size": args.size,
                "samples": args.samples,
                "seconds_per_sample": rows,
                "identical": identical,
            }
        )
    )


if __name__ == "__main__":
    main()
