"""Port helpers of the fast process models: receive without Lava's zeros-and-add, send
read-only arrays that the in-process channels pass uncopied."""

from __future__ import annotations

import numpy as np
from lava.magma.core.model.py.ports import IdentityTransformer, PyInPortVectorDense

from export.lava.inprocess_runtime import LocalSendPort

_max, _min = np.maximum.reduce, np.minimum.reduce

#: Types no Lava port is: setting an attribute to one of them needs none of the bookkeeping
#: of Lava's ``AbstractPyProcessModel.__setattr__``.
_PLAIN = frozenset(
    {np.ndarray, int, float, bool, str, type(None), tuple, list, dict, np.int32, np.int64}
    | {np.float32, np.float64, np.bool_, np.int16, np.int8, np.uint8}
)


class PlainSetattr:
    """Mixin for process models (before Lava's model class in the bases): attributes whose
    value is plainly not a port (an array, a number, a string, ...) are stored directly.

    Lava's ``AbstractPyProcessModel.__setattr__`` stores every value in ``__dict__`` and then
    checks, with two ``isinstance`` tests against abstract base classes, whether it is a port
    to register; a model sets several attributes per time step (``time_step``, ``phase``, its
    state arrays), so those checks were a measurable part of a step on small networks. Same
    effect: a value of these types is never a port, and ports still take Lava's path."""

    __slots__ = ()

    def __setattr__(self, key: str, value) -> None:
        if type(value) in _PLAIN:
            self.__dict__[key] = value
        else:
            super().__setattr__(key, value)


def recv_dense(port) -> np.ndarray:
    """``port.recv()`` of a ``PyInPortVectorDense``, without Lava's ``zeros + x1 + x2 ...``
    where that sum is known: when every channel delivers an integer array of the port's shape,
    all of one dtype that the port's dtype promotes to, the sum is ``x1`` for one channel and
    ``x1 + x2 + ...`` otherwise, in that dtype (same values, same int wrap-around; floats keep
    Lava's way, where ``0.0 + -0.0`` differs from ``-0.0``).  Anything else: ``port.recv()``.

    With one channel the array is returned as it came; it may be read-only (an in-process
    channel passes a sender's read-only array as it is), so callers do not write into it.
    What a port allows is worked out at its first call and kept on it (its channels, type
    and dtype are fixed once the model is built).
    """
    plan = port.__dict__.get("_recv_dense_plan")
    if plan is None:
        plan = port.__dict__["_recv_dense_plan"] = _recv_dense_plan(port)
    if not plan:
        return port.recv()
    channels, shape, summable = plan
    xs = [c.recv() for c in channels]
    first = xs[0]
    dtype = first.dtype
    ok = summable.get(dtype)
    if ok is None:
        ok = summable[dtype] = dtype.kind in "iu" and np.result_type(port._d_type, dtype) == dtype
    if ok and all(x.shape == shape and x.dtype == dtype for x in xs):
        if len(xs) == 1:
            return first
        total = first + xs[1]
        for x in xs[2:]:
            total += x
        return total
    total = np.zeros(port._shape, port._d_type)  # Lava's own sum, in Lava's order
    for x in xs:
        total = total + x
    return total


def _recv_dense_plan(port) -> tuple:
    """``(channels, shape, {dtype: summable})`` for a port ``recv_dense`` may sum itself, or
    ``()`` (Lava's ``recv``)."""
    channels = tuple(getattr(port, "csp_ports", ()))
    if (
        type(port) is PyInPortVectorDense
        and channels
        and type(getattr(port, "_transformer", None)) is IdentityTransformer
    ):
        return channels, tuple(port._shape), {}
    return ()


def is_silent(x: np.ndarray) -> bool:
    """True when every element of ``x`` is zero.  The cheapest exact test by type (measured,
    BENCHMARKS.md): numpy's C ``count_nonzero`` for integers of up to 32 bits and for small
    boolean arrays (0.4 us against 1.7 for ``any`` at 4,096 int32, one pass at any size), the
    short ``any`` for large boolean arrays, and two SIMD reductions for anything else (64-bit
    and float: a zero maximum and minimum, ``-0.0`` included)."""
    kind = x.dtype.kind
    if (kind in "iu" and x.dtype.itemsize <= 4) or (kind == "b" and x.size <= _SMALL_BOOL):
        return not _count_nonzero(x)
    if kind == "b":
        return not x.any()
    return not (x.size and (_max(x, axis=None) or _min(x, axis=None)))


_count_nonzero = np.core._multiarray_umath.count_nonzero  # np.count_nonzero without its wrapper
_SMALL_BOOL = 1 << 15


def one_message(port, data: np.ndarray):
    """What ``port.send(data)`` should be given: in the in-process runtime, ``data`` cast once
    to the dtype its channels carry and ``frozen``, so that all of the port's channels pass that
    one array (instead of each casting a copy of its own); elsewhere ``data`` as it is.  The
    port's channel dtype (or None) is worked out at its first call and kept on it."""
    dtype = port.__dict__.get("_one_message_dtype", _UNSET)
    if dtype is _UNSET:
        dtype = port.__dict__["_one_message_dtype"] = _one_message_dtype(port)
    if dtype is not None and type(data) is np.ndarray:
        return frozen(np.array(data, dtype=dtype))
    return data


_UNSET = object()


def _one_message_dtype(port):
    """The dtype all of ``port``'s channels carry when they are all in-process, else None."""
    channels = getattr(port, "csp_ports", ())
    if channels and all(type(c) is LocalSendPort for c in channels):
        dtype = channels[0]._dtype
        if all(c._dtype == dtype for c in channels):
            return dtype
    return None


def frozen(x: np.ndarray) -> np.ndarray:
    """``x`` marked read-only (in place) and returned: an in-process channel passes such an
    array to its receivers without copying it.  Only for a fresh result that nothing else
    refers to and nobody writes into again."""
    x.flags.writeable = False
    return x
