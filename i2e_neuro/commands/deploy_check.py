"""``i2e-neuro deploy-check FILE``: is the exported network legal on Loihi 2? The whole table.

Builds the Lava graph that Loihi 2 would run (``export.lava.graph.build``, adapters included,
with the host input and readout counter attached), checks every process against the register
formats of ``hw_configs/loihi2.yaml`` (``export.lava.legality``) and prints every check with the core
and chip mapping. ``--data`` also runs the lava-dl model of the same integers on a few samples
to measure the largest ``|u|``, ``|v|`` and flag 24-bit overflow risk. ``--target NAME`` (a named
system of ``hw_configs/``: oheo-gulch, kapoho-point, hala-point) also prints its fit (cores, chips,
every group's fan-in against the per-core limit) and counts a network that cannot fit as not
deployable. Exit 0 legal (and fits), 1 illegal or does not fit, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="network file (.h5 from export) or a checkpoint (.pt)")
    p.add_argument("--hardware", default="loihi2", help="hw_configs target (default loihi2)")
    p.add_argument(
        "--chips", type=int, default=None, help="chips available (default: as many as needed)"
    )
    p.add_argument(
        "--target",
        metavar="NAME",
        default=None,
        help="a named Loihi 2 system (oheo-gulch, kapoho-point, hala-point): its chips replace "
        "--chips, and the network must fit it (cores, every group's fan-in) to be deployable",
    )
    p.add_argument(
        "--data",
        default=None,
        help="measure the largest |u|, |v| on samples of this data set (digits, cifar10, ...)",
    )
    p.add_argument("--root", default=None, help="dataset folder for --data")
    p.add_argument(
        "--config", default=None, help="--data i2e-hf: the release's config (I2E-CIFAR10, ...)"
    )
    p.add_argument("--limit", type=int, default=32, help="samples for --data (default 32)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> int:
    from export import load as load_description
    from export.rules import first_overflow
    from i2e_neuro.energy.hw import CHIP_NAMES, HardwareConfigError, load_hw_config
    from i2e_neuro.models.deploy import STATE_LIMIT

    problems = []
    if args.chips is not None and args.chips < 1:
        problems.append(f"--chips {args.chips}: must be >= 1")
    if args.limit < 1:
        problems.append(f"--limit {args.limit}: must be >= 1")
    try:
        target = load_hw_config(args.hardware, CHIP_NAMES)
        if "limits" not in target:
            problems.append(
                f"--hardware {args.hardware}: an energy table without per-core limits, not a "
                f"chip a network can be mapped onto (chips: {', '.join(CHIP_NAMES)})"
            )
    except HardwareConfigError as e:
        problems.append(f"--hardware {e}")
    system = None
    if args.target is not None:
        from i2e_neuro.energy.hw import load_target

        try:
            system = load_target(args.target)
            args.hardware, args.chips = system.chip, system.chips
        except HardwareConfigError as e:
            problems.append(f"--target {e}")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    try:
        desc = load_description(args.model)
        from export.lava.legality import deployable_report  # Lava: once the network is read

        peaks, measured = None, None
        if args.data:
            from export.peers.lava_dl import state_peaks
            from i2e_neuro.datasets.eval_data import load_samples

            samples = load_samples(
                args.data, desc.input_shape[1:], args.root, "test", args.limit, args.config
            )
            peaks, measured = state_peaks(desc, samples), f"{len(samples.data)} {args.data} samples"
        elif desc.measured_states:
            peaks, measured = desc.measured_states, "the training data (recorded by train)"
        report = deployable_report(desc, args.hardware, args.chips, peaks)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.table())
    fit = None
    if system is not None:
        from export.resources import fit_report

        fit = fit_report(desc, system)
        print(fit.text())
    order = [g.name for g in desc.groups]
    overflow = first_overflow(peaks, order, STATE_LIMIT)
    if measured:
        print(
            f"24-bit states measured on {measured}: "
            + (
                f"first past the limit in group {overflow[0]} at step {overflow[1]} (Loihi wraps "
                "u / clips v from there; the lava-dl model computes the same)"
                if overflow
                else "every group in range"
            )
        )
    if args.json:
        out = report.to_dict()
        out["first_overflow"] = {"group": overflow[0], "step": overflow[1]} if overflow else None
        if fit is not None:
            out["target"] = fit.to_dict()
        print(json.dumps(out))
    return 0 if report.ok and (fit is None or fit.fits) else 1
