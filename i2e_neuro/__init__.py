"""i2e-neuro: I2E image-to-event conversion, Loihi-deployable spiking networks, Lava export.

``I2E`` and ``i2e`` (the conversion: a callable package, see ``i2e_neuro/i2e/__init__.py``) are
imported on first use, so that commands which do not convert (``--help``, the parent process
of ``simulate --workers``) start without loading torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["I2E", "i2e", "__version__"]


def __getattr__(name: str):
    if name == "i2e":
        return importlib.import_module("i2e_neuro.i2e")
    if name == "I2E":
        return importlib.import_module("i2e_neuro.i2e").I2E
    raise AttributeError(f"module 'i2e_neuro' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "I2E", "i2e"])
