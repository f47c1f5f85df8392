#!/usr/bin/env python
"""Train a QAT MS-ResNet on lava-dl slayer (or the SpikingJelly reference) on I2E events.

The same as ``i2e-neuro train``; with no arguments it trains msresnet_tiny on the embedded
digits (14 float + 3 QAT epochs, a few minutes on a CPU). ``--help`` lists everything.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from i2e_neuro.commands.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
