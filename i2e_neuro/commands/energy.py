"""``i2e-neuro energy``: SynOp / energy report of an SNN against the equivalent ANN.

Modes:

* ``--first-layer``: the paper's first-layer comparison from layer shapes alone (ANN conv on RGB vs
  SNN conv on I2E events plus the I2E encoding), e.g.
  ``i2e-neuro energy --first-layer --input-size 224 --timesteps 8 --event-rate 0.0506 --json``;
* ``--model FILE [--data DATA]``: per-layer energy from spikes counted in the Lava simulation
  (or the lava-dl model: ``--engine lava-dl``), the whole network against the ANN, and the
  first layer against the ANN's.

Exit status: 0 on success, 2 for bad arguments or files (one line on stderr naming them).
``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # argparse takes "-4.6e-12" for an option (its pattern for negative numbers has no exponent):
    # read it as a number, which the checks then refuse with a clear message.
    parser._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    mode = parser.add_argument_group("mode")
    mode.add_argument(
        "--first-layer",
        action="store_true",
        help="compare the first conv layer: ANN on RGB vs SNN on I2E events (the paper's analysis)",
    )
    mode.add_argument(
        "--model", metavar="FILE", help="exported network (.h5) or trained checkpoint (.pt)"
    )
    mode.add_argument(
        "--data",
        metavar="DATA",
        help="samples to count spikes on, as for simulate (default digits)",
    )
    mode.add_argument(
        "--root", default=None, help="dataset folder for --data cifar10/... or cifar10-dvs"
    )
    mode.add_argument("--split", default="test", choices=("train", "test"))
    mode.add_argument("--limit", type=int, default=None, help="only the first N samples")
    mode.add_argument(
        "--engine",
        default="lava",
        choices=("lava", "lava-dl"),
        help="count spikes in the Lava simulation (default) or the lava-dl model (same counts, faster)",
    )
    mode.add_argument(
        "--hw",
        default="loihi2",
        metavar="TARGET",
        help="hardware config for Loihi energies with --model (loihi2, loihi1, cpu or a .yaml; default loihi2)",
    )

    layer = parser.add_argument_group("first layer (--first-layer)")
    layer.add_argument(
        "--input-size",
        type=int,
        default=224,
        metavar="N",
        help="square input side in pixels (default 224)",
    )
    layer.add_argument(
        "--kernel", type=int, default=7, metavar="K", help="conv kernel size (default 7)"
    )
    layer.add_argument("--stride", type=int, default=2, metavar="S", help="conv stride (default 2)")
    layer.add_argument(
        "--padding", type=int, default=3, metavar="P", help="conv zero padding per side (default 3)"
    )
    layer.add_argument(
        "--filters", type=int, default=64, metavar="F", help="output channels (default 64)"
    )
    layer.add_argument(
        "--in-channels-ann",
        type=int,
        default=3,
        metavar="C",
        help="ANN input channels (default 3, RGB)",
    )
    layer.add_argument(
        "--in-channels-snn",
        type=int,
        default=2,
        metavar="C",
        help="SNN input channels (default 2, ON/OFF)",
    )
    layer.add_argument(
        "--timesteps", type=int, default=8, metavar="T", help="SNN timesteps (default 8)"
    )
    layer.add_argument(
        "--event-rate",
        type=float,
        default=0.0506,
        metavar="R",
        help="input event rate f_r in [0, 1] (default 0.0506, the paper's ImageNet figure)",
    )

    energy = parser.add_argument_group(
        "energy per operation (defaults: hw_configs/energy_45nm.yaml)"
    )
    energy.add_argument(
        "--e-mac",
        type=float,
        default=None,
        metavar="J",
        help="energy per MAC in joules (default 4.6e-12)",
    )
    energy.add_argument(
        "--e-ac",
        type=float,
        default=None,
        metavar="J",
        help="energy per accumulate in joules (default 0.9e-12)",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help="print one JSON object (last line of stdout)"
    )
    out.add_argument(
        "--chart", metavar="PNG", help="also write a log-scale bar chart to this PNG file"
    )


#: parameter names used by i2e_neuro.energy.model -> the command-line flag they come from
_FLAGS = {
    "input_size": "--input-size",
    "height": "--input-size",
    "width": "--input-size",
    "kernel": "--kernel",
    "stride": "--stride",
    "padding": "--padding",
    "filters": "--filters",
    "in_channels": "--in-channels-ann/--in-channels-snn",
    "timesteps": "--timesteps",
    "event_rate": "--event-rate",
    "e_mac": "--e-mac",
    "e_ac": "--e-ac",
    "rows": "--chart",
}


def _fail(message: str, code: int = 2) -> int:
    print(f"i2e-neuro energy: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from i2e_neuro.atomic import refuse_overwriting_inputs

    try:
        refuse_overwriting_inputs(
            [("--chart", args.chart)],
            [(f"--{k}", getattr(args, k)) for k in ("model", "data", "root", "hw")],
        )
    except ValueError as exc:
        return _fail(str(exc))
    if args.model is not None or args.data is not None:
        if args.first_layer:
            return _fail("--first-layer cannot be combined with --model/--data")
        return run_model(args)
    if not args.first_layer:
        return _fail("choose a mode: --first-layer (shapes only) or --model FILE --data PATH")
    return run_first_layer(args)


def run_first_layer(args: argparse.Namespace) -> int:
    from i2e_neuro.energy.hw import HardwareConfigError
    from i2e_neuro.energy.model import EnergyArgumentError, first_layer_comparison

    # The in-channel flags are checked here because the energy model names both "in_channels".
    for flag, value in (
        ("--in-channels-ann", args.in_channels_ann),
        ("--in-channels-snn", args.in_channels_snn),
    ):
        if value < 1:
            return _fail(f"{flag}: must be >= 1, got {value}")
    try:
        result = first_layer_comparison(
            input_size=args.input_size,
            kernel=args.kernel,
            stride=args.stride,
            padding=args.padding,
            filters=args.filters,
            in_channels_ann=args.in_channels_ann,
            in_channels_snn=args.in_channels_snn,
            timesteps=args.timesteps,
            event_rate=args.event_rate,
            e_mac=args.e_mac,
            e_ac=args.e_ac,
        )
    except EnergyArgumentError as exc:
        return _fail(f"{_FLAGS.get(exc.argument, exc.argument)}: {exc.detail}")
    except HardwareConfigError as exc:
        return _fail(str(exc))
    if args.chart:
        try:
            _chart(result, args.chart)
        except (OSError, EnergyArgumentError) as exc:
            return _fail(f"--chart {args.chart}: {exc}")
        result["chart"] = str(args.chart)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(_table(result))
    return 0


def _chart(result: dict, path: str) -> None:
    from i2e_neuro.energy.model import plot_energy

    rows = [
        {"name": "I2E encoding", "snn_uj": result["i2e_uj"]},
        {
            "name": f"conv {result['kernel']}x{result['kernel']}/{result['stride']}",
            "ann_uj": result["ann_uj"],
            "snn_uj": result["snn_uj"],
        },
        {"name": "first layer total", "ann_uj": result["ann_uj"], "snn_uj": result["snn_total_uj"]},
    ]
    plot_energy(
        rows,
        path,
        title=f"First layer, {result['input_size']}x{result['input_size']} input, T={result['timesteps']}",
    )


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as lines: the first column left-aligned, the others right-aligned, each as wide as
    its widest cell plus two spaces (so huge numbers never run together)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        f"{row[0]:<{widths[0]}}" + "".join(f"  {cell:>{w}}" for cell, w in zip(row[1:], widths[1:]))
        for row in rows
    ]


def _table(r: dict) -> str:
    oh, ow, of = r["output_size"]
    k, s, p = r["kernel"], r["stride"], r["padding"]
    lines = [
        f"first layer: {r['input_size']}x{r['input_size']} input, {k}x{k} conv, stride {s}, padding {p}, "
        f"{r['filters']} filters -> {oh}x{ow}x{of} outputs",
        f"E_MAC = {r['e_mac'] * 1e12:g} pJ, E_AC = {r['e_ac'] * 1e12:g} pJ, T = {r['timesteps']}, "
        f"event rate f_r = {r['event_rate']:.4g}",
        "",
        *_columns(
            [
                ("", "operations", "energy (uJ)"),
                (
                    f"ANN conv, {r['in_channels_ann']} ch (MAC)",
                    f"{r['ann_macs']:,}",
                    f"{r['ann_uj']:.2f}",
                ),
                ("I2E encoding (AC, H*W*T)", f"{r['i2e_ops']:,}", f"{r['i2e_uj']:.2f}"),
                (
                    f"SNN conv, {r['in_channels_snn']} ch (AC, ops*T*f_r)",
                    f"{r['snn_synops']:,.0f}",
                    f"{r['snn_uj']:.2f}",
                ),
                ("SNN + I2E", "", f"{r['snn_total_uj']:.2f}"),
            ]
        ),
        "",
        f"ANN / (SNN + I2E) = {r['ratio_with_encoding']:.2f}x",
    ]
    if r["ratio"] is not None:
        lines.append(f"ANN / SNN (encoding excluded, the paper's ratio) = {r['ratio']:.2f}x")
    if r.get("chart"):
        lines.append(f"chart: {r['chart']}")
    return "\n".join(lines)


def run_model(args: argparse.Namespace) -> int:
    """Per-layer energy of an exported network (or checkpoint) from spikes counted in simulation."""
    import numpy as np

    import export
    from export.lava.runner import simulate
    from export.peers.lava_dl import run_lava_dl
    from export.report import format_energy_report
    from export.synops import energy_report
    from i2e_neuro.datasets.eval_data import load_samples
    from i2e_neuro.energy.model import plot_energy

    if args.model is None:
        return _fail("--data needs --model FILE")
    from i2e_neuro.energy.hw import HardwareConfigError

    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit: must be >= 1, got {args.limit}")
    try:
        desc = export.load(Path(args.model))
        samples = load_samples(
            args.data or "digits", desc.input_shape[1:], args.root, args.split, args.limit
        )
        n = len(samples.labels)
        reference = run_lava_dl(desc, samples)
        if args.engine == "lava":
            counts = simulate(desc, samples.data, events=samples.events).neuron_counts
        else:
            counts = reference.neuron_counts
        report = energy_report(desc, reference.input_counts, counts, n, hw=args.hw)
    except (FileNotFoundError, ValueError, KeyError, HardwareConfigError, RuntimeError) as exc:
        return _fail(str(exc))
    report.update(model=str(args.model), samples=n, engine=args.engine)
    if args.chart:
        try:
            plot_energy(
                report["layers"] + [report["total"]],
                args.chart,
                title=f"{desc.name}: energy per sample",
            )
        except OSError as exc:
            return _fail(f"--chart {args.chart}: {exc}")
        report["chart"] = str(args.chart)
    print(format_energy_report(report))
    if args.json:
        print(
            json.dumps(
                report,
                sort_keys=True,
                default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o),
            )
        )
    return 0
