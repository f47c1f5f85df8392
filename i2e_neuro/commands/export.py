"""``i2e-neuro export``: trained checkpoint -> network description (HDF5) + layer and resource
tables; the Lava graph Loihi 2 would run is built and checked against the chip's register formats
(``export.legality``) first, and an illegal one is refused naming process, parameter, value and
limit (exit 3)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        type=Path,
        help="checkpoint of a quantized lava-dl model (train --backend slayer)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="HDF5 file to write (default: network.h5 beside the checkpoint)",
    )
    p.add_argument(
        "--hardware",
        default="loihi2",
        help="hw_configs target for the resource check (loihi2, loihi1)",
    )
    p.add_argument(
        "--chips", type=int, default=1, help="chips available to the network (default 1)"
    )


def check_legal(desc, chips: int):
    """Build the deployable Lava graph and refuse it (IllegalGraph) if Loihi 2 cannot hold it."""
    from export.legality import IllegalGraph, deployable_report

    report = deployable_report(desc, "loihi2", chips)
    if not report.ok:
        raise IllegalGraph("not legal on loihi2: " + "; ".join(c.text() for c in report.violations))
    return report


def run(args: argparse.Namespace) -> int:
    from export.description import from_checkpoint
    from export.hdf5 import save_hdf5
    from export.legality import IllegalGraph
    from export.report import layer_table
    from export.resources import DoesNotFit, format_report, resource_report

    try:
        desc = from_checkpoint(args.checkpoint)
        rows = resource_report(desc, args.hardware, args.chips)
        legality = check_legal(desc, args.chips) if args.hardware == "loihi2" else None
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, (DoesNotFit, IllegalGraph)) else 2
    out = args.out or args.checkpoint.with_name("network.h5")
    try:
        save_hdf5(desc, out)
    except OSError as e:
        print(f"error: --out {out}: {e}", file=sys.stderr)
        return 2
    print(layer_table(desc))
    print()
    print(format_report(rows, args.hardware))
    if legality is not None:
        print(
            f"\nLoihi 2 legality: LEGAL ({len(legality.checks)} checks, "
            f"{len(legality.warnings)} risks; `i2e-neuro deploy-check {out}` prints them)"
        )
    print(
        f"\n{desc.name}: {len(desc.groups)} neuron groups, {len(desc.connections)} connections, "
        f"{desc.timesteps} frames + {desc.steps - desc.timesteps} latency steps per sample -> {out}"
    )
    return 0
