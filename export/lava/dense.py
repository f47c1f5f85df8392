"""A fast, bit-exact CPU model of the stock Lava ``Dense`` (bit-accurate, fixed point).

Lava's ``PyDenseModelBitAcc`` sums, for binary spikes, the weight *columns* of the active inputs
(``weights[:, s_in].sum(axis=1)``, a strided gather of an int32 matrix): for the head of an
MS-ResNet at 224x224 (1,000 outputs, 25,088 inputs) that was 23 ms per time step, a third of the
simulation's step. ``FastDenseModelBitAcc`` keeps the weights once more, transposed and in
float32 (float64 where needed), and sums the *rows* of the active inputs: the same integers
(every partial sum is bounded by the largest ``sum |w|`` of an output, which picks a float type
that holds it exactly: docs/EXACTNESS.md, section 4), cast to the int64 the stock sum gives and
shifted by ``weight_exp`` by the stock code. Graded input (``num_message_bits > 0``) runs the
stock step. Selected by ``fast_run_config`` (``export.lava.run_config``).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.models import PyDenseModelBitAcc
from lava.proc.dense.process import Dense
from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

from export.lava.inprocess_runtime import compute_pool, result
from export.lava.ports import PlainSetattr, recv_dense
from export.lava.synapse import synapse_weights_fast

_F32_EXACT, _F64_EXACT = 1 << 24, 1 << 53


def transposed_exact(weights: np.ndarray):
    """``weights.T`` (inputs x outputs, C order) in the narrowest float type that holds every
    partial sum of binary input exactly (float32 below ``2**24``, float64 below ``2**53``), or
    None (then the stock sum runs)."""
    if weights.dtype.kind not in "iu" or weights.ndim != 2:
        return None
    block = max(1, (1 << 16) // max(1, weights.shape[1]))  # rows at a time: no int64 copy of all
    l1 = max(
        (
            int(np.abs(weights[i : i + block], dtype=np.int64).sum(axis=1).max())
            for i in range(0, weights.shape[0], block)
        ),
        default=0,
    )
    dtype = np.float32 if l1 < _F32_EXACT else np.float64 if l1 < _F64_EXACT else None
    return None if dtype is None else np.ascontiguousarray(weights.T, dtype=dtype)


def binary_sum(weights: np.ndarray, transposed, active: np.ndarray) -> np.ndarray:
    """``weights[:, active].sum(axis=1)`` (int64, as numpy gives it for the stock model), from
    the rows of ``transposed`` (:func:`transposed_exact`) of the active inputs."""
    if transposed is None:
        return weights[:, active].sum(axis=1)
    idx = np.flatnonzero(active)
    if idx.size == 0:
        return np.zeros(weights.shape[0], np.int64)
    return transposed[idx].sum(axis=0).astype(np.int64)


def shifted_binary_sum(weights: np.ndarray, transposed, active: np.ndarray, weight_exp: int):
    """The stock model's ``a_buff`` of one step: :func:`binary_sum` shifted by ``weight_exp``
    as the stock code shifts it."""
    a_accum = binary_sum(weights, transposed, active)
    if weight_exp > 0:
        return np.left_shift(a_accum, weight_exp)
    return np.right_shift(a_accum, -weight_exp)


def prepared_weights(weights: np.ndarray, num_weight_bits: int, sign_mode) -> tuple:
    """The stock model's first-step preparation of ``weights`` (8-bit clip in the sign mode,
    ``num_weight_bits`` truncation) and its :func:`transposed_exact` copy.  Where the sign mode
    is the one the weights determine (no ``sign_mode`` given), :func:`synapse_weights_fast`
    computes the same values in fewer passes; otherwise Lava's functions, verbatim."""
    if not sign_mode and weights.size:
        weights = synapse_weights_fast(weights, num_weight_bits)
    else:
        sign_mode = sign_mode or determine_sign_mode(weights)
        weights = clip_weights(weights, sign_mode, num_bits=8)
        weights = truncate_weights(weights, sign_mode, num_weight_bits)
    return weights, transposed_exact(weights)


@implements(proc=Dense, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt", "fast")
class FastDenseModelBitAcc(PlainSetattr, PyDenseModelBitAcc):
    """Stock Lava ``Dense``, bit for bit as ``PyDenseModelBitAcc``: the same weight preparation
    on the first step (8-bit clip in the sign mode, ``num_weight_bits`` truncation), the same
    one-step buffer, the same int64 sum shifted by ``weight_exp``; the sum of binary input from
    a transposed float copy of the weights (see the module docstring).

    In the in-process runtime the first step's preparation (for the head of an MS-ResNet at
    224x224, 25 million weights: about 0.3 s) runs on a compute thread while the steps go on:
    it is needed only when the first spike arrives (a step without spikes sums no weight, so
    its result is zeros whatever the weights). Each step's sum runs there too, as the Conv's
    convolution does: it is sent only at the next step. The host's reads and writes of a Var
    wait for both (``_get_var``, ``_set_var``)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._preparing = None  # the first step's weight preparation, in flight
        self._summing = None  # the next a_buff, in flight
        self._transposed = None  # (the weights it was made from, transposed_exact of them)

    def run_spk(self):
        if self.num_message_bits.item() > 0:
            self._settle()
            return super().run_spk()
        self.weight_exp = self.proc_params.get("weight_exp", 0)
        if not self.weights_set and self._preparing is None:
            args = (
                self.weights,
                self.proc_params.get("num_weight_bits", 8),
                self.proc_params.get("sign_mode"),
            )
            pool = compute_pool()
            if pool is None:
                self._adopt(prepared_weights(*args))
            else:
                self._preparing = pool.submit(prepared_weights, *args)
        self.a_out.send(self._settled_a_buff())
        active = recv_dense(self.s_in) != 0  # the stock .astype(bool)
        if not active.any():  # no spike sums no weight: zeros, as the stock sum gives
            self.a_buff = np.zeros(self.weights.shape[0], np.int64)
            return
        self._settle()
        prepared = self._transposed
        if prepared is None or prepared[0] is not self.weights:
            prepared = self._transposed = (self.weights, transposed_exact(self.weights))
        args = (self.weights, prepared[1], active, self.weight_exp)
        pool = compute_pool()
        if pool is None:
            self.a_buff = shifted_binary_sum(*args)
        else:  # sent at the next step (the one-step buffer): summed meanwhile
            self._summing = pool.submit(shifted_binary_sum, *args)

    def _settled_a_buff(self) -> np.ndarray:
        """``a_buff``, once the sum of the previous step has finished."""
        if self._summing is not None:
            future, self._summing = self._summing, None
            self.a_buff = result(future)
        return self.a_buff

    def _adopt(self, prepared: tuple) -> None:
        self.weights, transposed = prepared
        self.weights_set = True
        self._transposed = (self.weights, transposed)

    def _settle(self) -> None:
        """The first step's weight preparation, finished and in place."""
        if self._preparing is not None:
            future, self._preparing = self._preparing, None
            self._adopt(result(future))

    def _get_var(self) -> None:
        self._settle()  # the host reads the Vars as the stock model holds them
        self._settled_a_buff()
        super()._get_var()

    def _set_var(self) -> None:
        self._settle()
        self._settled_a_buff()
        super()._set_var()

    def on_var_update(self) -> None:
        self._transposed = None  # the host may have written the weights in place
        super().on_var_update()
