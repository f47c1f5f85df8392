#!/usr/bin/env python
"""Run an exported network in other frameworks' NIR readers (Norse, snnTorch) and compare with Lava.

Exports the model (checkpoint or exported .h5) to ``.nir`` files, reads each back with
``nir.read`` and runs the test split through every chosen reader: Norse 1.1.0's NIR modules on
the file in steps (``dt = 1``, float64; ``export.peers.norse.norse_module``) and snnTorch
1.0.0's NIR modules on the file written with ``dt = 1e-4`` (float32;
``export.peers.snntorch.snntorch_module``), each graph wired by ``nirtorch.nir_to_torch`` with
a one-step ``Delay`` buffer. Predictions and spikes are compared, group by group, with
lava-dl's spike-exact forward of the same integers (``export.peers.lava_dl.run_lava_dl``,
spike-identical to Lava). ``--lava N`` also runs the first N samples through the Lava CPU
simulator (``export.lava.runner.simulate``) and checks that Lava equals lava-dl there. The last
line is JSON.

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
        "--reader",
        choices=("norse", "snntorch", "all"),
        default="all",
        help="which NIR reader(s) to run (default all)",
    )
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
    from export.peers.snntorch import SNNTORCH_DT, run_snntorch
    from i2e_neuro.datasets.eval_data import load_samples

    torch.set_num_threads(2)
    desc = load(args.model) if args.model else random_description()
    samples = load_samples(args.data, tuple(desc.input_shape[1:]), args.root, "test", args.limit)
    n = len(samples.data)
    readers = {"norse": (run_norse, 1.0), "snntorch": (run_snntorch, SNNTORCH_DT)}
    if args.reader != "all":
        readers = {args.reader: readers[args.reader]}
    nudge = THRESHOLD_NUDGE if args.nudge is None else args.nudge
    events = torch.cat(
        [sample_events(desc, samples, i, i + args.batch) for i in range(0, n, args.batch)], dim=1
    ).numpy()
    start = time.perf_counter()
    ref = run_lava_dl(desc, samples, record=n, batch=args.batch)
    t_ref = time.perf_counter() - start
    labels = samples.labels
    known = labels >= 0
    results = {}
    for name, (run, dt) in readers.items():
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            graph = nir.read(save_nir(desc, Path(tmp) / "net.nir", nudge, dt=dt))
        pred, counts, trains = run(graph, events, desc.steps, record=n, batch=args.batch)
        seconds = time.perf_counter() - start
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
        results[name] = {
            "consumer": f"{name} {_version(name)} (nirtorch {_version('nirtorch')}, nir {nir.version})",
            "dt": dt,
            "agreement": float((pred == ref.predictions).mean()),
            "accuracy_nir": float((pred[known] == labels[known]).mean()) if known.any() else None,
            "samples_with_any_spike_difference": int(differ.sum()),
            "mismatched_spikes": sum(r["mismatched_spikes"] for r in rows.values()),
            "groups": rows,
            "seconds": round(seconds, 2),
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
    summary = {
        "reference": "lava-dl spike-exact forward (export.peers.lava_dl.run_lava_dl)",
        "model": str(args.model) if args.model else "random msresnet_tiny",
        "samples": n,
        "threshold_nudge": nudge,
        "accuracy_lava_dl": float((ref.predictions[known] == labels[known]).mean())
        if known.any()
        else None,
        "readers": results,
        "lava": lava,
        "seconds_lava_dl": round(t_ref, 2),
    }
    for name, r in results.items():
        print(f"\n{r['consumer']}, dt = {r['dt']:g}")
        print(f"{'group':<14}{'spikes NIR':>12}{'spikes lava-dl':>16}{'mismatched':>12}")
        for g, row in r["groups"].items():
            print(f"{g:<14}{row['nir']:>12}{row['lava_dl']:>16}{row['mismatched_spikes']:>12}")
        print(
            f"{n} samples: prediction agreement {r['agreement']:.2%}; "
            f"{r['samples_with_any_spike_difference']} samples with any spike difference"
        )
    print(f"Lava check: {lava}")
    print(json.dumps(summary))
    return 0


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
