"""``i2e-neuro export``: trained checkpoint -> network description (HDF5) + layer and resource tables."""

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


def run(args: argparse.Namespace) -> int:
    from export.description import from_checkpoint
    from export.hdf5 import save_hdf5
    from export.report import layer_table
    from export.resources import DoesNotFit, format_report, resource_report

    try:
        desc = from_checkpoint(args.checkpoint)
        rows = resource_report(desc, args.hardware, args.chips)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, DoesNotFit) else 3
    out = args.out or args.checkpoint.with_name("network.h5")
    try:
        save_hdf5(desc, out)
    except OSError as e:
        print(f"error: --out {out}: {e}", file=sys.stderr)
        return 2
    print(layer_table(desc))
    print()
    print(format_report(rows, args.hardware))
    print(
        f"\n{desc.name}: {len(desc.groups)} neuron groups, {len(desc.connections)} connections, "
        f"{desc.timesteps} frames + {desc.steps - desc.timesteps} latency steps per sample -> {out}"
    )
    return 0
