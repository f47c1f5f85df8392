#!/usr/bin/env python
"""Thin entry point: same as `i2e-neuro energy`."""

import sys

from i2e_neuro.cli import main

if __name__ == "__main__":
    sys.exit(main(["energy", *sys.argv[1:]]))
