"""Subcommands of ``i2e-neuro``; each module has ``add_arguments(parser)`` and ``run(args) -> int``.

Keep module-level imports light (argparse, stdlib): every module is imported to build ``--help``.
"""
