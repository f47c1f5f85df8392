#!/usr/bin/env python
"""Run an exported network in a real NIR consumer (Norse) and compare it with Lava.

Exports the model (checkpoint or exported .h5) to a ``.nir`` file, reads the file back with
``nir.read``, builds it from Norse 1.1.0's NIR modules (``Conv2d``, ``CubaLIF``; the graph is
wired by ``nirtorch.nir_to_torch``, see ``export.peers.norse.norse_module``), runs the test split
through it in float64, and compares predictions and spikes, group by group, with lava-dl's
spike-exact forward of the same integers (``export.peers.lava_dl.run_lava_dl``, spike-identical
to Lava). ``--lava N`` also runs the first N samples through the Lava CPU simulator
(``export.lava.runner.simulate``) and checks that Lava equals lava-dl there. The last line is JSON.

``--quick`` (no --model needed): a random-weight msresnet_tiny on 32 digits, well under a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import export.lava.runner  # noqa: F401  (Lava first: it fixes multiprocessing's start method)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        type=Path,
        help="checkpoint or exported .h5 (default with --quick: random msresnet_tiny)",
    )
    p.add_argument("--data", default="digits", help="dataset of the test split (default digits)")
    p.add_argument("--root", help="dataset folder (all but digits)")
    p.add_argument("--limit", type=int, help="first N test samples only (default: all)")
    p.add_argument(
        "--lava",
        type=int,
        default=4,
        metavar="N",
        help="also run N samples in Lava (default 4; 0: skip)",
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument(
        "--nudge",
        type=float,
        default=None,
        help="threshold nudge in weight units (default export.nir.THRESHOLD_NUDGE = 63/4096; 0: plain v > vth)",
    )
    p.add_argument(
        "--quick", action="store_true", help="32 samples, 2 in Lava; random model unless --model"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.limit = min(args.limit or 32, 32)
        args.lava = min(args.lava, 2)
    if args.model is None and not args.quick:
        p.error("--model is required (or use --quick for a random-weight network)")
    return args


def random_description():
    import torch

    from export.description import from_deploy
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(0)
    model = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 32, 32), 10)))
    model.eval().fold()
    return from_deploy(model.deploy(i2e={"ratio": 0.07, "order": "efghabcd"}))


def main(argv=None) -> int:
    args = parse_args(argv)
    import nir
    import numpy as np
    import torch

    from export import load
    from export.nir import THRESHOLD_NUDGE, save_nir
    from export.peers.lava_dl import run_lava_dl, sample_events
    from export.peers.norse import run_norse
    from i2e_neuro.datasets.eval_data import load_samples

    torch.set_num_threads(2)
    desc = load(args.model) if args.model else random_description()
    samples = load_samples(args.data, tuple(desc.input_shape[1:]), args.root, "test", args.limit)
    n = len(samples.data)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        nudge = THRESHOLD_NUDGE if args.nudge is None else args.nudge
        path = save_nir(desc, Path(tmp) / "net.nir", nudge)
        graph = nir.read(path)
    events = torch.cat(
        [sample_events(desc, samples, i, i + args.batch) for i in range(0, n, args.batch)], dim=1
    )
    pred, counts, trains = run_norse(graph, events.numpy(), desc.steps, record=n, batch=args.batch)
    t_nir = time.perf_counter() - start
    start = time.perf_counter()
    ref = run_lava_dl(desc, samples, record=n, batch=args.batch)
    t_ref = time.perf_counter() - start
    labels = samples.labels
    rows = {}
    differ = np.zeros(n, dtype=bool)
    for g in desc.groups:  # the readout group included
        mism = trains[g.name] != ref.trains[g.name]
        differ |= mism.reshape(n, -1).any(1)
        rows[g.name] = {
            "nir": int(counts[g.name].sum()),
            "lava_dl": int(ref.neuron_counts[g.name].sum()),
            "mismatched_spikes": int(mism.sum()),
        }
    lava = None
    if args.lava > 0:
        from export.lava.runner import simulate

        m = min(args.lava, n)
        res = simulate(desc, samples.data[:m], events=samples.events, record=m)
        lava = {
            "samples": m,
            "predictions_equal_lava_dl": bool(np.array_equal(res.predictions, ref.predictions[:m])),
            "spikes_equal_lava_dl": all(  # Lava's window is padded with silent steps
                np.array_equal(res.trains[g][:, : desc.steps], ref.trains[g][:m])
                and not res.trains[g][:, desc.steps :].any()
                for g in ref.trains
            ),
        }
    known = labels >= 0
    summary = {
        "consumer": f"norse {_version('norse')} (nirtorch {_version('nirtorch')}, nir {nir.version})",
        "reference": "lava-dl spike-exact forward (export.peers.lava_dl.run_lava_dl)",
        "model": str(args.model) if args.model else "random msresnet_tiny",
        "samples": n,
        "threshold_nudge": nudge,
        "agreement": float((pred == ref.predictions).mean()),
        "accuracy_nir": float((pred[known] == labels[known]).mean()) if known.any() else None,
        "accuracy_lava_dl": float((ref.predictions[known] == labels[known]).mean())
        if known.any()
        else None,
        "samples_with_any_spike_difference": int(differ.sum()),
        "groups": rows,
        "lava": lava,
        "seconds_nir": round(t_nir, 2),
        "seconds_lava_dl": round(t_ref, 2),
    }
    print(f"{'group':<14}{'spikes NIR (Norse)':>20}{'spikes lava-dl':>16}{'mismatched':>12}")
    for g, r in rows.items():
        print(f"{g:<14}{r['nir']:>20}{r['lava_dl']:>16}{r['mismatched_spikes']:>12}")
    print(
        f"{n} samples: prediction agreement {summary['agreement']:.2%}; "
        f"{summary['samples_with_any_spike_difference']} samples with any spike difference; "
        f"Lava check: {lava}"
    )
    print(json.dumps(summary))
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
