"""Fast, bit-exact CPU process models of the stock Lava ``Conv``.

Lava's stock fixed-point Conv model (``lava.proc.conv.models.PyConvModelFixed``) convolves
with ``scipy.signal.convolve2d`` one (output channel, input channel) pair at a time, which makes
it the simulator's bottleneck (BENCHMARKS.md, ``scripts/bench_lava.py``).
``FastConvModelFixed`` implements the *same* stock ``lava.proc.conv.process.Conv`` process
with one torch ``conv2d`` per step (numpy/BLAS where torch is not safe to call) with Loihi 2's
synapse arithmetic (8-bit weights in their sign mode, ``num_weight_bits``, ``weight_exp``), as
Lava's bit-accurate ``Dense`` model has it; the stock Conv model ignores ``weight_exp``, and
both agree bit for bit wherever that does not matter.  :mod:`export.lava.lif` does the same
for the stock ``LIF`` / ``LIFReset`` bit-accurate models (the next bottleneck once Conv was
fast).

They are never picked by Lava's default model search (they live outside ``lava/proc`` and are
tagged ``"fast"``); ask for them explicitly::

    from export.lava.run_config import fast_run_config
    from export.lava.supervision import run_checked
    run_checked(proc, num_steps, fast_run_config())   # or proc.run(..., run_cfg=...)

where ``fast_run_config()`` is ``Loihi2SimCfg(select_tag="fixed_pt",
exception_proc_model_map=fast_exception_map())``, i.e. ``{Conv: FastConvModelFixed, LIF:
FastLifModelBitAcc, LIFReset: FastLifResetModelBitAcc}``.

torch inside Lava's forked workers (one compute thread each, numpy where torch is not safe):
see :mod:`export.lava.conv_plan`.
"""

from __future__ import annotations

import concurrent.futures
import threading
import typing as ty

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv import utils
from lava.proc.conv.models import AbstractPyConvModel, PyConvModelFixed
from lava.proc.conv.process import Conv

from export.lava import conv_plan
from export.lava.conv_plan import (
    _conv_exact,
    _conv_torch,
    _ConvPlan,
    _gather_index,
    _output_size,
    _prepare_worker,
    _torch_is_safe,
)
from export.lava.inprocess_runtime import compute_pool, result
from export.lava.ports import PlainSetattr, frozen, is_silent, recv_dense
from export.lava.synapse import loihi_synapse_weights, shift_by_exponent, synapse_weights_fast

#: Output maps of at most this many positions are convolved in the model's own step, not on a
#: compute thread: their gather product (``conv_plan._conv_gather``) is a few small numpy calls
#: that hold the GIL, so on a compute thread they only add hand-offs of the GIL with the hub
#: (each up to ``sys.getswitchinterval()``) and the cost of waking that thread.
INLINE_MAX_OUTPUTS = 4

#: Larger convolutions are done in the model's own step too when one takes at most this many
#: seconds on 10 % spikes (``conv_plan.step_cost``, measured once per geometry before the first
#: spikes).  Handing work to a compute thread is not free for the hub: besides the hand-off,
#: the hub's own numpy calls then compete with that thread for the GIL and, with one compute
#: thread per core, for a core.  None: hand every larger convolution over.
INLINE_MAX_SECONDS: ty.Optional[float] = 500e-6

#: Convolution geometries torch has already run once in this process (``FastConvModelFixed._warm``).
_WARMED: set = set()
# utils.signed_clamp(x, bits=24) is the identity for -2**23 <= x < 2**23.
_CLAMP_FREE = 1 << 23


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "fast")
class FastConvModelFixed(PlainSetattr, AbstractPyConvModel):
    """Stock Lava ``Conv`` in fixed point with Loihi 2's synapse arithmetic, fast.

    Step for step as the stock fixed-point model (``PyConvModelFixed``):

    * one-step buffer: each step first SENDS ``a_buf`` (the previous step's result, zeros at
      the first step), then receives ``s_in``, convolves and stores the result in ``a_buf``;
    * input is cast to ``bool`` when ``num_message_bits == 0`` (binary spikes), used as
      received (graded) otherwise;
    * the result is wrapped to 24 signed bits with ``utils.signed_clamp(x, bits=24)``.

    Unlike the stock model, and like Loihi 2 and Lava's bit-accurate ``Dense``, the weights are
    those the synapses can hold (:func:`loihi_synapse_weights`: sign mode, 8-bit clip,
    ``num_weight_bits`` truncation) and the accumulated sum is scaled by ``2**weight_exp``
    (:func:`shift_by_exponent`). The stock model IGNORES ``weight_exp`` and ``num_weight_bits``
    and uses any int32 weight as given (``tests/export/test_fast_models.py`` pins the
    difference); for weights Loihi can hold exactly (e.g. even mixed-sign values in [-256, 254])
    and ``weight_exp = 0`` both models are bit-for-bit equal.

    The convolution itself is ``_conv_exact`` (torch conv2d or numpy gemms, in float32 or
    float64 when that is provably exact, else the stock scipy routine); see its docstring
    for the argument.  When the bound shows ``|a_out| < 2**23`` the 24-bit wrap is skipped
    (it is the identity there).  Binary spikes on a stride-1 convolution are convolved event
    by event (``conv_plan._conv_events``: each spike adds its channel's weights of every tap)
    where the costs measured for the geometry show that faster than the dense routine.

    In the in-process runtime (``export.lava.inprocess_runtime``) the convolution of step t runs on
    a compute thread while the other models of step t run (its result is only sent at step
    t+1), unless its measured cost is small (``INLINE_MAX_SECONDS``): then in this model's step.
    The weights are prepared on a compute thread from the first step.  Its results are fresh arrays
    it never writes into again, so it marks them read-only (``frozen``) and the in-process
    channels pass them without a copy; before the host writes ``a_buf`` it is copied back to a
    writable array.

    Only selected when asked for: ``exception_proc_model_map={Conv: FastConvModelFixed}``
    (see ``fast_run_config``).  Its constructor, in a forked worker of Lava's own runtime,
    sets torch and numpy's OpenBLAS to one thread there (see ``_prepare_worker``).
    """

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        _prepare_worker()  # at build time, in the worker process, not in the first step
        self._synapse = None  # see _prepared
        self._synapse_lock = threading.Lock()
        self._warming: ty.Optional[concurrent.futures.Future] = None
        self._pending: ty.Optional[concurrent.futures.Future] = None  # next a_buf, computing
        self._zeros: ty.Optional[np.ndarray] = None  # see _silence
        self._step_seconds: ty.Optional[float] = None  # conv_plan.step_cost, from _warm

    def run_spk(self) -> None:
        self.a_out.send(self._settled_a_buf())

        s_in = recv_dense(self.s_in)
        # The result is only sent at the next step (the synaptic delay), so in the in-process
        # runtime it is computed on a compute thread while the other models run this step.
        pool = compute_pool()
        if pool is not None and self._warming is None:
            # Prepare the weights while the first layers run: they are needed only when the
            # first spikes arrive here.
            self._warming = pool.submit(self._warm)
        if is_silent(s_in):
            self.a_buf = self._silence()  # no spike, no synaptic input
        elif pool is None or self._inline():
            self.a_buf = self._synaptic_input(s_in)
        else:
            self._pending = pool.submit(self._synaptic_input, s_in)

    def _inline(self) -> bool:
        """Whether this step's convolution runs here rather than on a compute thread: small
        output maps always, others once their measured cost is known to be small
        (``INLINE_MAX_SECONDS``)."""
        if self.a_out.shape[0] * self.a_out.shape[1] <= INLINE_MAX_OUTPUTS:
            return True
        cost, limit = self._step_seconds, INLINE_MAX_SECONDS
        return cost is not None and limit is not None and cost <= limit

    def _silence(self) -> np.ndarray:
        """The synaptic input of a step without spikes: one read-only array of zeros, sent
        without a copy (``frozen``) as often as needed."""
        if self._zeros is None:
            self._zeros = frozen(np.zeros(self.a_out.shape, np.int32))
        return self._zeros

    def _settled_a_buf(self) -> np.ndarray:
        """``a_buf``, once the convolution of the previous step has finished."""
        if self._pending is not None:
            self.a_buf, self._pending = result(self._pending), None
        if self.a_buf is None:  # as in the stock model (never true: the Var has init=0)
            self.a_buf = np.zeros_like(self.a_out.shape)
        return self.a_buf

    def _synaptic_input(self, s_in: np.ndarray) -> np.ndarray:
        """The convolution of ``s_in`` as Loihi 2's synapses compute it, wrapped to 24 bits;
        binary spikes (``num_message_bits == 0``) count as 1 where nonzero, as in the stock
        model."""
        if self.num_message_bits.item() == 0:
            s_in = s_in.astype(bool)
        weight, weight_exp, plan = self._prepared()
        a_out, bound = _conv_exact(
            s_in,
            weight,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            int(np.asarray(self.groups).reshape(-1)[0]),
            plan=plan,
            weight_exp=weight_exp,
        )
        if bound is not None and bound < _CLAMP_FREE and a_out.dtype.kind == "i":
            # |a_out| <= bound < 2**23: the 24-bit wrap-around is the identity.
            return frozen(a_out.astype(np.int32, copy=False))
        # A fresh result nobody writes into: sent without a copy in the in-process runtime.
        return frozen(self.clamp_precision(a_out).astype(np.int32))

    def _quiet(self) -> None:
        """No work of this model in flight (before the host reads or writes a Var)."""
        self._settled_a_buf()
        if self._warming is not None:
            result(self._warming)

    def _get_var(self) -> None:
        self._quiet()  # the host reads the Vars as they are after the last step
        super()._get_var()

    def _set_var(self) -> None:
        self._quiet()
        if not self.a_buf.flags.writeable:  # Lava writes a Var's array in place
            self.a_buf = self.a_buf.copy()
        super()._set_var()

    def clamp_precision(self, x: np.ndarray) -> np.ndarray:
        return utils.signed_clamp(x, bits=24)

    def _warm(self) -> None:
        """Prepare the weights, and let torch set up this convolution on a silent frame of the
        input's shape (oneDNN builds a primitive per shape on first use), once per process."""
        try:
            _, _, plan = self._prepared()
            if (
                plan.ok
                and plan.groups == 1
                and _output_size(plan, self.s_in.shape) <= conv_plan._GATHER_MAX_OUTPUTS
            ):
                # The gather product's weight rows and index (built once; this model runs it
                # in its own step, where building them would hold up every other model).
                plan.weights(np.float32, "numpy")
                _gather_index(plan, *self.s_in.shape[:2])
                return
            if not plan.ok:
                return
            # Measured here, not in a step: the cost that decides where the convolutions run,
            # and with it (its first run) the costs that choose the routine for binary spikes
            # (conv_plan._events_cheaper).
            self._step_seconds = conv_plan.step_cost(plan, self.s_in.shape)
            if not _torch_is_safe():
                return
            weights = plan.weights(np.float32, "torch")
            shapes = (self.s_in.shape, weights.shape, plan.stride, plan.padding, plan.dilation)
            if (shapes, plan.groups) in _WARMED:
                return  # torch keeps what it set up for the life of the process
            _WARMED.add((shapes, plan.groups))
            silent = np.zeros(self.s_in.shape, np.float32)
            _conv_torch(
                silent, weights, np.float32, plan.stride, plan.padding, plan.dilation, plan.groups
            )
        except Exception:  # noqa: BLE001 - only a head start: the convolution redoes this
            pass  # and reports any error where it belongs

    def _prepared(self) -> tuple[np.ndarray, int, _ConvPlan]:
        """(weights as the synapses hold them, weight_exp, their ``_ConvPlan``): derived once
        from the Vars (static weights, no learning); again after the host set a Var
        (``on_var_update``) or when the weight array was replaced (a RefPort write)."""
        with self._synapse_lock:
            return self._prepare_locked()

    def _prepare_locked(self) -> tuple[np.ndarray, int, _ConvPlan]:
        prepared = self._synapse
        if prepared is None or prepared[3] is not self.weight:
            weight = synapse_weights_fast(self.weight, int(self.num_weight_bits.item()))
            plan = _ConvPlan(
                weight,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                int(np.asarray(self.groups).reshape(-1)[0]),
            )
            weight_exp = int(np.asarray(self.weight_exp).reshape(-1)[0])
            prepared = self._synapse = (weight, weight_exp, plan, self.weight)
        return prepared[:3]

    def on_var_update(self) -> None:
        self._synapse, self._warming = None, None


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "loihi_reference")
class LoihiConvModelReference(PyConvModelFixed):
    """The slow reference for ``FastConvModelFixed``: Lava's stock fixed-point Conv model
    (``PyConvModelFixed``, scipy convolution) with only the synapse arithmetic added that the
    stock model leaves out (:func:`loihi_synapse_weights`, :func:`shift_by_exponent`). Selected
    by ``run_config(fast=False)`` / ``simulate --stock``; never by Lava's default search."""

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        if self.num_message_bits.item() > 0:
            s_in = self.s_in.recv()
        else:
            s_in = self.s_in.recv().astype(bool)
        weight = loihi_synapse_weights(self.weight, int(self.num_weight_bits.item()))
        a_out = utils.conv(
            s_in,
            weight,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups[0],
        ).astype(np.int64)
        a_out = shift_by_exponent(a_out, int(np.asarray(self.weight_exp).reshape(-1)[0]))
        self.a_buf = self.clamp_precision(a_out).astype(np.int32)
