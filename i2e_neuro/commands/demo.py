"""``i2e-neuro demo``: the embedded sample photos through I2E (the conversion stage for now).

Writes ``OUT/events/<photo>.npz`` with an animated GIF and a PNG grid per photo and prints the
event rate of each.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)")
    parser.add_argument("--keep-size", action="store_true", help="convert the photos at their own size (default: short side 224)")
    parser.add_argument("--ratio", type=float, default=0.12, help="threshold ratio (default 0.12, ImageNet)")


def run(args) -> int:
    from ..conversion import check_parameters
    from ..demo_conversion import convert_samples, format_table

    try:
        check_parameters(args.ratio, 8, None, "replicate")
    except ValueError as e:
        print(f"i2e-neuro demo: error: --ratio {args.ratio}: {str(e).split(': ', 1)[1]}", file=sys.stderr)
        return 2
    out = Path(args.out) / "events"
    rows = convert_samples(out, short_side=None if args.keep_size else 224, ratio=args.ratio)
    print(format_table(rows))
    print(f"events, GIFs and PNG grids in {out}/")
    return 0
