"""i2e-neuro: I2E image-to-event conversion, Loihi-deployable spiking networks, Lava export."""

from i2e_neuro.i2e.conversion import I2E, i2e

__version__ = "0.1.0"
__all__ = ["I2E", "i2e", "__version__"]
