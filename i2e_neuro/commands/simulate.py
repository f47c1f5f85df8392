"""``i2e-neuro simulate``: run an exported network in Lava (CPU simulator or Loihi 2) on real samples.

Reports accuracy, per-layer spike counts and rates, and the agreement with the lava-dl model of
the same integers; ``--check N`` compares every spike of every group on the first N samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="network file (.h5 from export) or a checkpoint (.pt)",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits (default), cifar10, cifar100, mnist, fashion-mnist, cifar10-dvs, or an image file/folder",
    )
    p.add_argument("--root", default=None, help="dataset folder for cifar10/... and cifar10-dvs")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument(
        "--backend",
        default="cpu",
        choices=("cpu", "loihi2"),
        help="Lava CPU simulation (default) or Loihi 2 hardware",
    )
    p.add_argument(
        "--check",
        type=int,
        nargs="?",
        const=10,
        default=0,
        metavar="N",
        help="compare every spike of every group with lava-dl on the first N samples (default 10)",
    )
    p.add_argument(
        "--stock",
        action="store_true",
        help="use Lava's stock Conv model instead of the fast exact one",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build the hardware graph (adapters included; no lava-loihi needed), check it against "
        "Loihi 2's register formats, print the core and chip mapping and exit without running",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def dry_run(args: argparse.Namespace) -> int:
    """Build the deployable graph, check legality, print the mapping; run nothing."""
    import export
    from export.legality import deployable_report
    from export.run_config import loihi_extension_missing

    try:
        desc = export.load(args.model)
        report = deployable_report(desc, "loihi2")
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.table())
    missing = loihi_extension_missing() if args.backend == "loihi2" else None
    adapters = (
        "stubbed (lava-loihi not installed: PyToNx/NxToPy adapter models not loaded)"
        if missing
        else "lava-loihi PyToNxAdapter / NxToPyAdapter"
        if args.backend == "loihi2"
        else "same-step CPU pass-through"
    )
    print(
        f"\ndry run, --backend {args.backend}: {desc.name}, window {desc.window} steps "
        f"({desc.steps} trained, padded to a power of two); adapters {adapters}; nothing was run"
    )
    if args.json:
        print(json.dumps({"dry_run": True, "backend": args.backend, **report.to_dict()}))
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> int:

    import export
    from export.lava_dl_run import run_lava_dl
    from export.runner import BackendUnavailable, simulate
    from i2e_neuro.datasets.eval_data import load_samples

    for flag, value in (("--limit", args.limit), ("--check", args.check)):
        if value is not None and value < (1 if flag == "--limit" else 0):
            print(
                f"error: {flag}: must be {'>= 1' if flag == '--limit' else '>= 0'}, got {value}",
                file=sys.stderr,
            )
            return 2
    if args.dry_run:
        return dry_run(args)
    try:
        desc = export.load(args.model)
        samples = load_samples(args.data, desc.input_shape[1:], args.root, args.split, args.limit)
        start = time.perf_counter()
        result = simulate(
            desc,
            samples.data,
            events=samples.events,
            backend=args.backend,
            record=args.check,
            fast=not args.stock,
        )
        seconds = time.perf_counter() - start
        reference = run_lava_dl(desc, samples, args.check)
    except BackendUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ref_preds, ref_trains = reference.predictions, reference.trains
    n = len(samples.labels)
    labelled = samples.labels >= 0
    accuracy = (
        float((result.predictions[labelled] == samples.labels[labelled]).mean())
        if labelled.any()
        else None
    )
    agreement = float((result.predictions == ref_preds).mean())
    mismatches = (
        int(sum((result.trains[g] != ref_trains[g]).sum() for g in ref_trains))
        + result.padding_spikes  # a spike in a padding step is one lava-dl does not have
        if args.check
        else None
    )
    layers = []
    for g in desc.spiking_groups:
        spikes = int(result.counts[g.name].sum())
        layers.append(
            {
                "group": g.name,
                "neurons": g.size,
                "spikes": spikes,
                "rate": spikes / (g.size * desc.steps * n),
            }
        )
    print(f"{'group':<14} {'neurons':>8} {'spikes':>10} {'rate':>8}")
    for row in layers:
        print(f"{row['group']:<14} {row['neurons']:>8} {row['spikes']:>10} {row['rate']:>8.4f}")
    acc_text = f"{accuracy:.4f}" if accuracy is not None else "n/a (no labels)"
    print(
        f"\nLava {args.backend}: {n} samples in {seconds:.1f} s ({seconds / n:.3f} s/sample); accuracy {acc_text}; "
        f"agreement with lava-dl {agreement:.4f}"
        + (
            f"; spike mismatches on {min(args.check, n)} samples: {mismatches}"
            if args.check
            else ""
        )
    )
    summary = {
        "accuracy": accuracy,
        "samples": n,
        "agreement": agreement,
        "spike_mismatches": mismatches,
        "checked_samples": min(args.check, n),
        "seconds": seconds,
        "seconds_per_sample": seconds / n,
        "backend": args.backend,
        "layers": layers,
    }
    if args.json:
        print(json.dumps(summary))
    return 0 if (mismatches in (None, 0)) else 1
