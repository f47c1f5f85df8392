"""``i2e-neuro export``: trained checkpoint (or exported HDF5) -> network description in HDF5 or
NIR + layer and resource tables; the Lava graph Loihi 2 would run is built and checked against the
chip's register formats (``export.lava.legality``) first, and an illegal one is refused naming process,
parameter, value and limit (exit 3). ``--target NAME`` checks the network against a named Loihi 2
system (``hw_configs/<NAME>.yaml``) and refuses one that cannot fit it (exit 3), naming the group
and the limit."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        type=Path,
        help="checkpoint of a quantized lava-dl model (train --backend slayer), an exported .h5, "
        "or a .nir graph in the form export.nir writes",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="file to write (default: network.h5 / network.nir beside the checkpoint; "
        "for an .h5 input, the same name with .nir)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="hdf5 (netx layout + residual extension) or nir (Neuromorphic Intermediate "
        "Representation); default from the --out suffix (.nir -> nir), else hdf5",
    )
    p.add_argument(
        "--hardware",
        default="loihi2",
        help="hw_configs target for the resource check (loihi2, loihi1)",
    )
    p.add_argument(
        "--chips", type=int, default=1, help="chips available to the network (default 1)"
    )
    p.add_argument(
        "--target",
        metavar="NAME",
        default=None,
        help="a named Loihi 2 system (oheo-gulch, kapoho-point, hala-point): its chips and "
        "cores replace --hardware/--chips; a network that cannot fit it is refused (exit 3)",
    )
    p.add_argument(
        "--dt",
        type=float,
        default=None,
        metavar="SECONDS",
        help="NIR only: the length of one step; every tau and delay is multiplied by it, r and "
        "w_in are kept and dt is recorded (default 1: taus in steps; 1e-4 for snnTorch)",
    )


def check_legal(desc, chips: int):
    """Build the deployable Lava graph and refuse it (IllegalGraph) if Loihi 2 cannot hold it."""
    from export.lava.legality import IllegalGraph, deployable_report

    report = deployable_report(desc, "loihi2", chips)
    if not report.ok:
        raise IllegalGraph("not legal on loihi2: " + "; ".join(c.text() for c in report.violations))
    return report


def target_fit(desc, target: str):
    """The fit report on a named target (``export.resources.fit_report``); DoesNotFit naming
    every broken limit when the network cannot fit it, ValueError for an unknown target."""
    from export.resources import fit_report, require_fit
    from i2e_neuro.energy.hw import HardwareConfigError

    try:
        report = fit_report(desc, target)
    except HardwareConfigError as e:
        raise ValueError(f"--target {e}") from None
    return require_fit(report)


FORMATS = ("hdf5", "nir")


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    return "nir" if args.out is not None and args.out.suffix == ".nir" else "hdf5"


def output_path(args: argparse.Namespace, fmt: str) -> Path:
    """``--out``, or a default beside the input."""
    from export import CHECKPOINT_SUFFIXES

    src = args.checkpoint
    if args.out is not None:
        out = args.out
    elif src.suffix in CHECKPOINT_SUFFIXES:
        out = src.with_name("network.nir" if fmt == "nir" else "network.h5")
    else:
        out = src.with_suffix(".nir" if fmt == "nir" else ".h5")
    return out


def run(args: argparse.Namespace) -> int:
    from export import load
    from export.hdf5 import save_hdf5
    from export.lava.legality import IllegalGraph
    from export.report import layer_table
    from export.resources import DoesNotFit, format_report, resource_report
    from i2e_neuro.atomic import refuse_overwriting_inputs

    if args.chips < 1:
        print(f"error: --chips {args.chips}: must be at least 1", file=sys.stderr)
        return 2
    fmt = output_format(args)
    if args.dt is not None and fmt != "nir":
        print("error: --dt applies to --format nir only", file=sys.stderr)
        return 2
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        print(f"error: --dt {args.dt}: must be a positive number of seconds", file=sys.stderr)
        return 2
    fit = None
    try:
        desc = load(args.checkpoint)
        if args.target is not None:
            fit = target_fit(desc, args.target)
            args.hardware, args.chips = fit.target.chip, fit.target.chips
        rows = resource_report(desc, args.hardware, args.chips)
        legality = check_legal(desc, args.chips) if args.hardware == "loihi2" else None
        out = output_path(args, fmt)
        refuse_overwriting_inputs([("--out", out)], [("checkpoint", args.checkpoint)])
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if isinstance(e, (DoesNotFit, IllegalGraph)) else 2
    try:
        if fmt == "nir":
            from export.nir import save_nir

            save_nir(desc, out, dt=1.0 if args.dt is None else args.dt)
        else:
            save_hdf5(desc, out)
    except ValueError as e:
        print(f"error: {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: --out {out}: {e}", file=sys.stderr)
        return 2
    print(layer_table(desc))
    print()
    print(format_report(rows, args.hardware))
    if fit is not None:
        print(f"\n{fit.text()}")
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
