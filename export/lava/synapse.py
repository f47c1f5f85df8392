"""Loihi 2's synapse arithmetic on the host: the weights the synapses hold (sign mode,
8-bit clip, ``num_weight_bits`` truncation) and the scaling by ``2**weight_exp``, as Lava's
bit-accurate Dense model computes them."""

from __future__ import annotations

import numpy as np
from lava.utils.weightutils import SignMode, clip_weights, determine_sign_mode, truncate_weights

from export.lava.ports import _max, _min


def loihi_synapse_weights(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """The weights Loihi 2's synapses hold, as Lava's bit-accurate Dense model derives them
    (``lava.proc.dense.models.AbstractPyDenseModelBitAcc``): the sign mode from the weights
    (``weightutils.determine_sign_mode``), clipped to 8 bits in that mode
    (``weightutils.clip_weights``: mixed [-256, 255], excitatory [0, 255], inhibitory [-255, 0])
    and the low bits beyond ``num_weight_bits`` dropped (``weightutils.truncate_weights``; mixed
    mode drops one more bit, the sign's)."""
    mode = determine_sign_mode(weight) if weight.size else SignMode.EXCITATORY
    w = clip_weights(weight, mode, num_bits=8)
    return truncate_weights(w, mode, int(num_weight_bits)).astype(np.int32)


_CLIP_RANGE = {
    SignMode.MIXED: (-256, 255),
    SignMode.EXCITATORY: (0, 255),
    SignMode.INHIBITORY: (-255, 0),
}


def synapse_weights_fast(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """:func:`loihi_synapse_weights` in two passes over int32 weights instead of Lava's eight
    (copies, casts and shifts of the whole array), and none when the synapses hold the weights
    as they are (then ``weight`` itself is returned), with the same values (tested): the same
    sign mode, the clip in that mode (``clip_weights`` negates, clips and negates back for
    inhibitory weights: the same as clipping to [-255, 0]), and the dropped low bits as a
    mask (``(w >> n) << n`` is ``w & (-1 << n)`` in two's complement; inhibitory weights are
    negated around it, as ``truncate_weights`` does).  Anything else (other dtypes, the most
    negative int32, a shift outside [0, 31]): Lava's functions."""
    w = np.asarray(weight)
    if w.dtype != np.int32 or not w.size:
        return loihi_synapse_weights(weight, num_weight_bits)
    lowest, highest = int(_min(w, axis=None)), int(_max(w, axis=None))
    if lowest >= 0:
        mode = SignMode.EXCITATORY
    elif highest <= 0:
        mode = SignMode.INHIBITORY
    else:
        mode = SignMode.MIXED
    shift = 8 - int(num_weight_bits) + int(mode == SignMode.MIXED)
    if lowest == np.iinfo(np.int32).min or not 0 <= shift < 31:
        return loihi_synapse_weights(weight, num_weight_bits)
    low, high = _CLIP_RANGE[mode]
    if (
        low <= lowest
        and highest <= high
        and not int(np.bitwise_or.reduce(w, axis=None)) & ((1 << shift) - 1)
    ):
        # Already in range, and no value has a bit to drop (negation keeps the low zero bits,
        # so this holds for inhibitory weights too): the synapses hold the weights as given.
        return w
    out = np.clip(w, low, high)
    if shift:
        if mode == SignMode.INHIBITORY:
            np.negative(out, out=out)
        np.bitwise_and(out, -1 << shift, out=out)
        if mode == SignMode.INHIBITORY:
            np.negative(out, out=out)
    return out


def shift_by_exponent(accum: np.ndarray, weight_exp: int) -> np.ndarray:
    """``accum * 2**weight_exp`` as Loihi / Lava's bit-accurate Dense apply it: a left shift,
    or an arithmetic right shift (rounding toward minus infinity) for a negative exponent."""
    if weight_exp >= 0:
        return np.left_shift(accum, weight_exp)
    return np.right_shift(accum, -weight_exp)
