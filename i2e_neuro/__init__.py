"""i2e-neuro: I2E image-to-event conversion, Loihi-deployable spiking networks, Lava export."""

from i2e_neuro import i2e  # the conversion: a callable package (see i2e_neuro/i2e/__init__.py)
from i2e_neuro.i2e.conversion import I2E

__version__ = "0.1.0"
__all__ = ["I2E", "i2e", "__version__"]
