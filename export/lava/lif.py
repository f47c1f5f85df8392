"""Fast, bit-exact CPU process models of the stock Lava ``LIF`` and ``LIFReset`` (Loihi 2's
CUBA neuron: 24-bit wrap of u, clip of v, reset to 0), subclasses of Lava's bit-accurate models
with the same results and less work per step."""

from __future__ import annotations

import typing as ty

import numpy as np
from lava.magma.core.decorator import implements, tag
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifModelBitAcc, PyLifResetModelBitAcc
from lava.proc.lif.process import LIF, LIFReset

from export.lava.ports import PlainSetattr, _max, _min, one_message, recv_dense


def _exact_int(x) -> ty.Optional[int]:
    """``x`` as a Python int when it is one integer-valued number (scalar or size-1 array)."""
    a = np.asarray(x)
    if a.size != 1 or a.dtype.kind not in "iub":
        return None
    return int(a.reshape(-1)[0])


def _decay_into(state: np.ndarray, factor: int, scratch: np.ndarray, tmp: np.ndarray) -> None:
    """In place: ``state = sign(p) * (|p| >> 12)`` with ``p = int64(state) * factor``, for
    int32 ``state`` and ``0 <= factor <= 4096``; ``scratch`` is a float64 array of its shape,
    ``tmp`` an int32 one.

    A power of two ``factor = 2**(12 - s)`` is ``state / 2**s`` rounded toward zero, computed
    in int32 as ``(state + ((state >> 31) & (2**s - 1))) >> s`` (for ``s = 1``: ``(state -
    (state >> 31)) >> 1``), exact for every int32 (docs/EXACTNESS.md, section 5).  Any other
    factor: ``state * (factor / 4096)`` in float64, cast back to int32, also exact (same
    section); factor 4096 keeps the state as it is, factor 0 zeroes it.
    """
    if factor == 4096:
        return
    if factor == 0:
        state.fill(0)
        return
    if factor & (factor - 1) == 0:  # 2**(12 - s), 1 <= s <= 12
        s = 12 - (factor.bit_length() - 1)
        np.right_shift(state, 31, out=tmp)  # -1 where negative, else 0
        if s == 1:
            np.subtract(state, tmp, out=state)
        else:
            np.bitwise_and(tmp, (1 << s) - 1, out=tmp)
            np.add(state, tmp, out=state)
        np.right_shift(state, s, out=state)
        return
    np.multiply(state, factor / 4096.0, out=scratch)
    np.copyto(state, scratch, casting="unsafe")


#: ``np.clip``'s ufunc (one pass, no Python wrapper; numpy < 2, which Lava pins).
_clip = np.core.umath.clip


class _FastLifFixedMixin(PlainSetattr):
    """Same results as ``AbstractPyLifModelFixed.subthr_dynamics`` / ``scale_bias`` /
    ``reset_voltage``, with fewer passes over the arrays.

    Falls back to the stock methods for anything outside the cases proven equal: decay
    constants that are not integers in [0, 4096], state arrays that are not int32.
    """

    def run_spk(self):
        # The stock ``run_spk`` of both models, step for step (LIFReset also zeroes u and v
        # at the start of each reset interval); only the input is read by ``recv_dense``.
        a_in_data = recv_dense(self.a_in)
        if hasattr(self, "reset_interval") and (
            self.time_step % self.reset_interval == self.reset_offset
        ):
            self.u *= 0
            self.v *= 0
        self.scale_bias()
        if not self.isthrscaled:
            self.scale_threshold()
        self.subthr_dynamics(activation_in=a_in_data)
        self.s_out_buff = self.spiking_activation()
        self.reset_voltage(spike_vector=self.s_out_buff)
        self.s_out.send(one_message(self.s_out, self.s_out_buff))

    def scale_bias(self):
        """The stock scaling, done again only when ``bias_mant`` or ``bias_exp`` changed (the
        stock model redoes it every step; the host replaces a Var's array when it sets it, and
        ``on_var_update`` follows every ``set``)."""
        source = getattr(self, "_bias_source", None)
        if source is not None and source[0] is self.bias_mant and source[1] is self.bias_exp:
            return
        # A zero mantissa gives a zero effective bias whatever the exponent (0 << e == 0 >> e
        # == 0); the stock method would build that array of zeros.
        if not np.any(self.bias_mant):
            self.effective_bias = 0
            self.isbiasscaled = True
        else:
            super().scale_bias()
        self._bias_source = (self.bias_mant, self.bias_exp)

    def on_var_update(self):
        self._bias_source = self._decay_source = None
        super().on_var_update()

    def _decay_factors(self) -> ty.Optional[tuple[int, int]]:
        """``(factor_u, factor_v)`` when both are integers in [0, 4096] (else None), derived
        again only when ``du`` or ``dv`` changed (as for the bias)."""
        source = getattr(self, "_decay_source", None)
        if source is None or source[0] is not self.du or source[1] is not self.dv:
            factor_u = _exact_int(self.decay_unity - (self.du + self.ds_offset))
            factor_v = _exact_int(self.decay_unity - (self.dv + self.dm_offset))
            ok = (
                factor_u is not None
                and factor_v is not None
                and 0 <= factor_u <= self.decay_unity
                and 0 <= factor_v <= self.decay_unity
            )
            source = self._decay_source = (self.du, self.dv, (factor_u, factor_v) if ok else None)
        return source[2]

    def subthr_dynamics(self, activation_in: np.ndarray):
        factors = self._decay_factors()
        u, v = self.u, self.v
        if factors is None or u.dtype != np.int32 or v.dtype != np.int32:
            return super().subthr_dynamics(activation_in)
        factor_u, factor_v = factors

        scratch = getattr(self, "_fast_scratch", None)
        if scratch is None or scratch[0].shape != u.shape:
            scratch = self._fast_scratch = (np.empty(u.shape, np.float64), np.empty_like(u))

        # Current: decay, add the MSB-aligned input; int32 arithmetic (and wrap-around) as in
        # the stock code, done in place in u.
        if factor_u == 0:
            # No current carried over (lava-dl's current_decay = 1): u = 0 + (a_in << shift).
            np.left_shift(activation_in, self.act_shift, out=u)
        else:
            _decay_into(u, factor_u, *scratch)
            u += np.left_shift(activation_in, self.act_shift)
        lim = self.max_uv_val
        if u.size and (_max(u, axis=None) > lim or _min(u, axis=None) <= -lim):
            # The stock 24-bit wrap, verbatim (only reached when a value is out of range;
            # otherwise both np.where calls are the identity).
            wrapped = np.where(u > lim, u - 2 * lim, u)
            wrapped = np.where(wrapped <= -lim, u + 2 * lim, wrapped)
            u[:] = wrapped

        # Voltage: decay, add current and bias (int32, in place in v), clip to 24 bits.
        _decay_into(v, factor_v, *scratch)
        v += u
        bias = self.effective_bias
        if not (isinstance(bias, int) and bias == 0):
            v += bias
        _clip(v, 1 - lim, lim - 1, out=v)  # np.clip(v, -lim + 1, lim - 1), in place

    def reset_voltage(self, spike_vector: np.ndarray):
        if (
            isinstance(spike_vector, np.ndarray)
            and spike_vector.dtype == np.bool_
            and spike_vector.shape == self.v.shape
        ):
            # v * 0 = 0 where it spiked, v * 1 = v elsewhere: constant time at any spike
            # density (np.putmask / boolean indexing slow down as more neurons spike: 22 and
            # 212 us against 10 us at 5 % and 50 % of 65,536 neurons).
            np.multiply(self.v, ~spike_vector, out=self.v)
        else:
            super().reset_voltage(spike_vector)


@implements(proc=LIF, protocol=LoihiProtocol)
@tag("fast")
class FastLifModelBitAcc(_FastLifFixedMixin, PyLifModelBitAcc):
    """Stock Lava ``LIF``, bit-for-bit equal to ``PyLifModelBitAcc``, with less work per step.

    A subclass of the stock model (same ports, Vars, types, step order, threshold and bias
    scaling, 24-bit wrap of u and clip of v, reset to 0); only the arithmetic of the
    sub-threshold update is rearranged and done in place in u and v (see ``_decay_into`` for
    why it is exact), and the all-zero bias array is not rebuilt each step.  Tags:
    those of the stock model plus ``"fast"``; selected only through
    ``exception_proc_model_map`` (``fast_run_config``).
    """


@implements(proc=LIFReset, protocol=LoihiProtocol)
@tag("fast")
class FastLifResetModelBitAcc(_FastLifFixedMixin, PyLifResetModelBitAcc):
    """Stock Lava ``LIFReset``, bit-for-bit equal to ``PyLifResetModelBitAcc``; see
    ``FastLifModelBitAcc``."""
