#!/usr/bin/env python
"""Thin entry point: same as `i2e-neuro export`."""

import sys

from i2e_neuro.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
