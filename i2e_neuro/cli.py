"""The ``i2e-neuro`` command line: one subcommand per stage of the pipeline.

Each subcommand lives in its own module under ``i2e_neuro.commands`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
command runs, so ``--help`` stays fast and Lava is loaded only by the commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from i2e_neuro.allocator import keep_freed_memory

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C."""


def _sigterm_as_interrupt(signum, frame):
    raise Terminated


_sigterm_as_interrupt.ends_main_command = True  # forked workers put the default back


def _lost_exception_hook(previous):
    """``sys.unraisablehook`` that signals again when ``Terminated`` was swallowed.

    A signal handler's exception is lost when it fires inside an at-fork hook or a ``__del__``
    (Lava forks dozens of workers); a moment later, from another thread, SIGTERM is sent again
    so that it lands in ordinary code.
    """

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, Terminated):
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    hook.previous = previous
    return hook


def _run(command, args) -> int:
    """Run one command; SIGTERM takes the same clean path as Ctrl-C (exit 130, nothing left)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        sys.unraisablehook = _lost_exception_hook(sys.unraisablehook)
    keep_freed_memory()
    try:
        return int(command.run(args) or 0)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            sys.unraisablehook = sys.unraisablehook.previous


def run_command(name: str, argv: list[str] | None = None) -> int:
    """Run one subcommand on its own (``python -m i2e_neuro.commands.<name>``, the scripts)."""
    module, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"i2e-neuro {name}", description=help_text)
    command = _module(module)
    command.add_arguments(parser)
    return _run(command, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return _run(_module(args._module), args)


if __name__ == "__main__":
    sys.exit(main())
