"""The ``i2e-neuro`` command line: one subcommand per stage of the pipeline.

Each subcommand lives in its own module under ``i2e_neuro.commands`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
command runs, so ``--help`` stays fast and Lava is loaded only by the commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command name -> (module under i2e_neuro.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("convert", "convert images, folders or datasets to I2E event files"),
    "train": (
        "train",
        "train a QAT MS-ResNet (lava-dl) or the SpikingJelly reference on I2E events",
    ),
    "export": ("export", "export a trained checkpoint to the network description (HDF5 or NIR)"),
    "deploy-check": (
        "deploy_check",
        "check an exported network against Loihi 2's register formats; print the core mapping",
    ),
    "simulate": ("simulate", "run an exported network in the Lava CPU simulator or on Loihi 2"),
    "energy": ("energy", "synaptic-operation energy report against the ANN"),
    "demo": ("demo", "the whole pipeline on the embedded data, end to end"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="i2e-neuro", description=__doc__.splitlines()[0])
    from i2e_neuro import __version__

    parser.add_argument("--version", action="version", version=f"i2e-neuro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        _module(module).add_arguments(p)
    return parser


def _module(name: str):
    return importlib.import_module(f"i2e_neuro.commands.{name}")


def run_command(name: str, argv: list[str] | None = None) -> int:
    """Run one subcommand on its own (``python -m i2e_neuro.commands.<name>``, the scripts)."""
    module, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"i2e-neuro {name}", description=help_text)
    command = _module(module)
    command.add_arguments(parser)
    try:
        return int(command.run(parser.parse_args(argv)) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
