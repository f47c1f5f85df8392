"""Stage 1, images to events: the I2E conversion, its direction table, image loading, baselines,
pictures.

The package is also the conversion itself: ``i2e_neuro.i2e(images, ratio=...)`` calls
:func:`i2e_neuro.i2e.conversion.i2e`, so ``from i2e_neuro import i2e`` gives one object that is
both the function users call and the package its modules live in (``i2e_neuro.i2e.pictures``),
and no import rebinds the name.
"""

import inspect
import sys
import types

from i2e_neuro.i2e.conversion import I2E
from i2e_neuro.i2e.conversion import i2e as _convert


class _CallablePackage(types.ModuleType):
    __signature__ = inspect.signature(_convert)

    def __call__(self, *args, **kwargs):
        return _convert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
__all__ = ["I2E"]
