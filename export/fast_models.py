"""Fast, bit-exact CPU process models for stock Lava processes.

Lava's stock fixed-point Conv model (``lava.proc.conv.models.PyConvModelFixed``) convolves
with ``scipy.signal.convolve2d`` one (output channel, input channel) pair at a time, which makes
it the simulator's bottleneck (BENCHMARKS.md, ``scripts/bench_lava.py``).
``FastConvModelFixed`` implements the *same* stock ``lava.proc.conv.process.Conv`` process
with one torch ``conv2d`` per step (numpy/BLAS where torch is not safe to call) with Loihi 2's
synapse arithmetic (8-bit weights in their sign mode, ``num_weight_bits``, ``weight_exp``), as
Lava's bit-accurate ``Dense`` model has it; the stock Conv model ignores ``weight_exp``, and
both agree bit for bit wherever that does not matter.  ``FastLifModelBitAcc`` and
``FastLifResetModelBitAcc`` do the same for the stock ``LIF`` / ``LIFReset`` bit-accurate
models (the next bottleneck once Conv was fast).

They are never picked by Lava's default model search (they live outside ``lava/proc`` and are
tagged ``"fast"``); ask for them explicitly::

    from export.fast_models import fast_run_config
    from export.supervision import run_checked
    run_checked(proc, num_steps, fast_run_config())   # or proc.run(..., run_cfg=...)

where ``fast_run_config()`` is ``Loihi2SimCfg(select_tag="fixed_pt",
exception_proc_model_map=fast_exception_map())``, i.e. ``{Conv: FastConvModelFixed, LIF:
FastLifModelBitAcc, LIFReset: FastLifResetModelBitAcc}``.

torch inside Lava workers: Lava's CPU backend forks one OS process per process model.  When
the main process has already run a multi-threaded torch op (GNU OpenMP pool started), a
multi-threaded torch op in a forked worker hangs (reproduced here with torch 2.3.1; the
reason Lava's own ``lava.proc.conv.utils`` disabled its torch path).  The models therefore
set torch (and numpy's OpenBLAS) to one thread in each worker before any computation, keyed
by process id (``_prepare_worker``); torch is only used where that was done or in a main
process (``_torch_is_safe``), numpy otherwise.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
import typing as ty

import numpy as np

try:
    import torch
    import torch.nn.functional as torch_F
except ImportError:  # pragma: no cover - torch is a dependency of lava-dl
    torch = None

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import (
    IdentityTransformer,
    PyInPort,
    PyInPortVectorDense,
    PyOutPort,
)
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv import utils
from lava.proc.conv.models import AbstractPyConvModel, PyConvModelFixed
from lava.proc.conv.process import Conv
from lava.proc.lif.models import PyLifModelBitAcc, PyLifResetModelBitAcc
from lava.proc.lif.process import LIF, LIFReset
from lava.utils.weightutils import SignMode, clip_weights, determine_sign_mode, truncate_weights

from export.inprocess_runtime import LocalSendPort, compute_pool, result

__all__ = [
    "FastConvModelFixed",
    "FastLifModelBitAcc",
    "FastLifResetModelBitAcc",
    "fast_exception_map",
    "fast_run_config",
    "conv_exact",
    "loihi_synapse_weights",
    "shift_by_exponent",
]

_max, _min = np.maximum.reduce, np.minimum.reduce
#: Convolution geometries torch has already run once in this process (``FastConvModelFixed._warm``).
_WARMED: set = set()
# Largest magnitude below which every integer is exactly representable.
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53
# utils.signed_clamp(x, bits=24) is the identity for -2**23 <= x < 2**23.
_CLAMP_FREE = 1 << 23

# Process id in which _prepare_worker ran.  A pid, not a flag: Lava forks its workers from the
# main process, and a flag set there would be inherited by every worker.
_prepared_pid: ty.Optional[int] = None

# Which convolution routine _conv_exact uses: "auto" (torch where it is safe, else numpy),
# "torch" or "numpy" (tests set this to check both).
_BACKEND = "auto"


def _numpy_blas_thread_setters():
    """``openblas_set_num_threads`` of the OpenBLAS that numpy is linked to (wheels bundle it
    in ``numpy.libs``), found without scanning every loaded library."""
    import ctypes
    import glob

    here = os.path.dirname(np.__file__)
    paths = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "libopenblas*.so*")) + glob.glob(
        os.path.join(here, ".libs", "libopenblas*.so*")
    )
    setters = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same handle
        except OSError:
            continue
        for symbol in (
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
            "scipy_openblas_set_num_threads64_",
        ):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                setters.append(fn)
                break
    return setters


def _prepare_worker() -> None:
    """One compute thread (torch and numpy's OpenBLAS) in this Lava worker process.

    Called from the models' constructors, which Lava runs inside the forked worker process.
    Two reasons:

    * All workers compute each time step concurrently, so threads inside them only compete
      for the same cores.
    * torch after fork: when the main process has already run a multi-threaded torch op
      (GNU OpenMP thread pool started), a multi-threaded torch op in the forked child hangs
      (reproduced here with torch 2.3.1: the worker's conv2d never returns; see
      ``tests/test_fast_models.py::test_fast_model_after_parent_used_torch_threads``).  With
      one thread torch does not enter an OpenMP parallel region.  This is the reason Lava's
      own ``lava.proc.conv.utils`` disabled its torch path.

    Only inside a forked worker (``multiprocessing.parent_process()`` set): a model built by
    hand in a main process leaves that process's settings alone.
    """
    global _prepared_pid
    pid = os.getpid()
    if _prepared_pid == pid or multiprocessing.parent_process() is None:
        return
    if torch is not None:
        torch.set_num_threads(1)
    setters = _numpy_blas_thread_setters()
    for fn in setters:
        fn(1)
    if not setters:  # pragma: no cover - numpy wheels ship numpy.libs/libopenblas*
        try:
            from threadpoolctl import ThreadpoolController  # ~70 ms with torch loaded

            ThreadpoolController().select(internal_api="openblas").limit(limits=1)
        except ImportError:
            pass
    _prepared_pid = pid


def _torch_is_safe() -> bool:
    """torch may run here: a main process (its own thread pool) or a prepared worker."""
    return torch is not None and (
        _prepared_pid == os.getpid() or multiprocessing.parent_process() is None
    )


def _pair(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return int(a[0]), int(a[-1])


def conv_exact(
    input_: np.ndarray, weight: np.ndarray, kernel_size, stride, padding, dilation, groups: int
) -> np.ndarray:
    """Drop-in replacement for ``lava.proc.conv.utils.conv`` on integer data; see
    ``_conv_exact``."""
    return _conv_exact(input_, weight, kernel_size, stride, padding, dilation, groups)[0]


class _ConvPlan:
    """Everything of one convolution that depends only on its weight and geometry: checked
    once, not at every step.

    ``ok`` is False for geometry or dtypes the fast routines do not handle (the stock routine
    runs then); ``l1`` is the largest sum of ``|w|`` over one output channel; ``weights(dtype,
    backend)`` is the flipped kernel in the layout each backend wants, built on first use.
    """

    def __init__(self, weight: np.ndarray, kernel_size, stride, padding, dilation, groups: int):
        self.weight = weight
        self.ok = False
        self._prepared: dict = {}
        if weight.dtype.kind not in "iu" or weight.ndim != 4:
            return
        c_out, _, _, c_g = weight.shape
        self.groups = int(groups)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        if (
            self.groups < 1
            or c_out % self.groups
            or min(*self.stride, *self.dilation) < 1
            or min(self.padding) < 0
        ):
            return
        rows = weight.reshape(c_out, -1)
        if not weight.size:
            self.l1 = 0
        elif weight.itemsize > 4:  # 64-bit weights (never Lava's int32 Var): Python ints
            self.l1 = int(np.abs(rows.astype(object)).sum(axis=1).max())
        else:  # exact in int64, a block of rows at a time (no int64 copy of all the weights)
            block = max(1, (1 << 16) // max(1, rows.shape[1]))
            self.l1 = max(
                int(np.abs(rows[i : i + block], dtype=np.int64).sum(axis=1).max())
                for i in range(0, c_out, block)
            )
        self.ok = True

    def accepts(self, input_: np.ndarray) -> bool:
        """The fast routines compute this input (shape, dtype) exactly as the stock one."""
        if not self.ok or input_.ndim != 3 or input_.dtype.kind not in "biu":
            return False
        w_, h_, c_in = input_.shape
        c_out, k_w, k_h, c_g = self.weight.shape
        (px, py), (dx, dy) = self.padding, self.dilation
        return (
            c_g * self.groups == c_in
            and w_ + 2 * px - dx * (k_w - 1) >= 1
            and h_ + 2 * py - dy * (k_h - 1) >= 1
        )

    def weights(self, dtype, backend: str):
        key = (np.dtype(dtype).str, backend)
        w = self._prepared.get(key)
        if w is None:
            flipped = self.weight[:, ::-1, ::-1, :]
            if backend == "torch":
                # Convolution = correlation with the flipped kernel; (C_out, kW, kH, C_in/g)
                # -> (C_out, C_in/g, kW, kH), channels-last memory like the input.
                w = torch.from_numpy(np.ascontiguousarray(flipped, dtype=dtype)).permute(0, 3, 1, 2)
                w = w.contiguous(memory_format=torch.channels_last)
            else:  # (kW, kH, C_in/g, C_out)
                w = np.ascontiguousarray(flipped.transpose(1, 2, 3, 0), dtype=dtype)
            self._prepared[key] = w
        return w


def _conv_exact(
    input_: np.ndarray,
    weight: np.ndarray,
    kernel_size,
    stride,
    padding,
    dilation,
    groups: int,
    plan: ty.Optional[_ConvPlan] = None,
    weight_exp: int = 0,
) -> tuple[np.ndarray, ty.Optional[int]]:
    """Drop-in replacement for ``lava.proc.conv.utils.conv`` on integer data, same result;
    with ``weight_exp``, that result scaled as Loihi's synapses do (:func:`shift_by_exponent`).

    ``utils.conv`` (scipy path) accumulates in float64 and returns ``output.astype(
    weight.dtype)``; this function returns exactly that array.  Layouts are Lava's: input
    ``(W, H, C_in)``, weight ``(C_out, kW, kH, C_in // groups)``, output ``(W', H', C_out)``;
    stride, padding and dilation are (x, y) pairs.  Lava's "conv" is a true convolution (scipy
    ``convolve2d`` flips the kernel), so the kernel is flipped and then correlated.  ``plan``
    (a ``_ConvPlan`` of this ``weight`` and geometry) saves the per-call weight work; it must
    have been built from this very ``weight`` array, unchanged since.

    Methods (same numbers, see exactness): torch ``conv2d`` (oneDNN ``convolution_direct`` in
    float32, im2col + GEMM in float64) where torch is safe to call (``_torch_is_safe``), else
    numpy: the zero-padded input is flattened to rows ``(x * H_pad + y, c)``; for each kernel
    tap (i, j) the rows shifted by ``i * dx * H_pad + j * dy`` times the tap's ``(C_in/g,
    C_out/g)`` weight matrix (one BLAS gemm) is added to the output rows; this is the stride-1
    output on the padded-width grid, the wrapped-around columns are dropped and the stride is
    applied by slicing.  An all-zero input gives all-zero output without computing.

    Exactness (docs/EXACTNESS.md, section 4): with ``L = max over output channels of sum |w|``
    and ``m = max |input|``, float32 when ``L * m < 2**24``, float64 when ``L * m < 2**53``,
    otherwise (or for non-integer data) ``utils.conv`` itself.

    ``weight_exp`` != 0: on the float paths the sum ``y`` (an exact integer) is scaled in
    float, ``floor(y * 2**e)``, which is exact and equals the arithmetic shift, as long as
    ``L * m * 2**max(e, 0) < 2**30`` (so the int32 result cannot overflow); otherwise the
    integer result is shifted in int64.

    Returns ``(output, bound)``: ``bound`` bounds the magnitude of every output (``L * m``,
    scaled), or None when the stock routine computed the output.
    """
    out, bound, scaled = _convolve(
        input_, weight, kernel_size, stride, padding, dilation, groups, plan, weight_exp
    )
    if weight_exp != 0 and not scaled:
        out = shift_by_exponent(out.astype(np.int64), weight_exp)
        if bound is not None:
            bound = _scaled_bound(bound, weight_exp)
    return out, bound


def _scaled_bound(bound: int, weight_exp: int) -> int:
    """A bound on ``|floor(y * 2**e)|`` given ``|y| <= bound``."""
    return bound << weight_exp if weight_exp >= 0 else (bound >> -weight_exp) + 1


def _convolve(input_, weight, kernel_size, stride, padding, dilation, groups, plan, weight_exp):
    """``_conv_exact`` up to the scaling: ``(output, bound, scaled)``; ``scaled`` tells whether
    the float path already applied ``weight_exp`` (exactly) to the output and the bound."""
    if plan is None:
        plan = _ConvPlan(weight, kernel_size, stride, padding, dilation, groups)
    if not plan.accepts(input_):
        stock = utils.conv(input_, weight, kernel_size, stride, padding, dilation, groups)
        return stock, None, False

    w_, h_, _ = input_.shape
    c_out, k_w, k_h, _ = weight.shape
    (sx, sy), (px, py), (dx, dy) = plan.stride, plan.padding, plan.dilation
    if input_.dtype == np.bool_ or input_.size == 0:
        m = 1
    else:
        m = max(abs(int(input_.max())), abs(int(input_.min())))
    bound = plan.l1 * m
    if bound < _F32_EXACT:
        dtype = np.float32
    elif bound < _F64_EXACT:
        dtype = np.float64
    else:
        stock = utils.conv(input_, weight, kernel_size, stride, padding, dilation, groups)
        return stock, None, False

    if m == 0 or not input_.any():
        # All-zero input: the stock float64 sum is 0 everywhere, cast to 0.
        wo = (w_ + 2 * px - dx * (k_w - 1) - 1) // sx + 1
        ho = (h_ + 2 * py - dy * (k_h - 1) - 1) // sy + 1
        return np.zeros((wo, ho, c_out), weight.dtype), 0, True  # any scaling of 0 is 0

    backend = _BACKEND
    if backend == "auto":
        backend = "torch" if _torch_is_safe() else "numpy"
    conv = _conv_torch if backend == "torch" else _conv_numpy
    out = conv(
        input_,
        plan.weights(dtype, backend),
        dtype,
        plan.stride,
        plan.padding,
        plan.dilation,
        plan.groups,
    )
    if weight_exp != 0 and _scaled_bound(bound, max(weight_exp, 0)) < 1 << 30:
        np.multiply(out, 2.0**weight_exp, out=out)  # exact: a power of two, no underflow
        np.floor(out, out=out)  # = the arithmetic right shift of the integer sum
        return out.astype(np.int32, order="C"), _scaled_bound(bound, weight_exp), True
    if dtype is np.float32:
        # Exact integers below 2**24: the cast is exact, no need for a contiguous copy first.
        return out.astype(weight.dtype, order="C"), bound, False
    # float64: cast a C-contiguous array, as the stock code does (same numpy loop, so the
    # same result even where the cast overflows int32).
    return np.ascontiguousarray(out).astype(weight.dtype), bound, False


def _conv_torch(input_, w, dtype, stride, padding, dilation, groups) -> np.ndarray:
    """``w``: the prepared torch weight of ``_ConvPlan.weights(dtype, "torch")``."""
    # Everything channels-last: (W, H, C) memory is (1, C, W, H) in torch's channels_last
    # format (a view, no copy), and with a channels_last weight too the output comes back
    # channels-last, i.e. already (W', H', C_out) in memory.  (128x128x16, one thread: 0.9 ms
    # for the conv and 0.06 ms to get the result out, against 1.75 ms and 0.7 ms otherwise.)
    cl = torch.channels_last
    x = (
        torch.from_numpy(input_.astype(dtype))
        .permute(2, 0, 1)
        .unsqueeze(0)
        .contiguous(memory_format=cl)
    )
    with torch.no_grad():
        y = torch_F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y[0].permute(1, 2, 0).numpy()  # (W', H', C_out)


def _conv_numpy(input_, wt, dtype, stride, padding, dilation, groups) -> np.ndarray:
    """``wt``: the flipped kernel ``(kW, kH, C_in/g, C_out)`` of ``_ConvPlan.weights``."""
    w_, h_, c_in = input_.shape
    k_w, k_h, c_g, c_out = wt.shape
    (sx, sy), (px, py), (dx, dy) = stride, padding, dilation
    wp, hp = w_ + 2 * px, h_ + 2 * py
    wo1, ho1 = wp - dx * (k_w - 1), hp - dy * (k_h - 1)  # stride-1 output size
    # Padded input as rows (x * hp + y, c), plus slack rows so every tap's slice is in range.
    n_rows = wo1 * hp
    slack = dy * (k_h - 1)
    xp = np.zeros((wp * hp + slack, c_in), dtype)
    xp[: wp * hp].reshape(wp, hp, c_in)[px : px + w_, py : py + h_] = input_
    k_g = c_out // groups
    out = np.zeros((n_rows, c_out), dtype)
    prod = np.empty((n_rows, k_g), dtype)
    for g in range(groups):
        xs = xp[:, g * c_g : (g + 1) * c_g]
        og = out[:, g * k_g : (g + 1) * k_g]
        for i in range(k_w):
            for j in range(k_h):
                wij = wt[i, j, :, g * k_g : (g + 1) * k_g]
                if not wij.any():
                    continue
                off = i * dx * hp + j * dy
                np.matmul(xs[off : off + n_rows], wij, out=prod)
                og += prod
    return out.reshape(wo1, hp, c_out)[::sx, :ho1:sy]


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


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "fast")
class FastConvModelFixed(AbstractPyConvModel):
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
    (it is the identity there).  The dense method is used for binary spikes too (a scatter of
    the active spikes, ``np.add.at``, was slower at the event rates of I2E input).

    In the in-process runtime (``export.inprocess_runtime``) the convolution of step t runs on
    a compute thread while the other models of step t run (its result is only sent at step
    t+1), and the weights are prepared there from the first step.  Its results are fresh arrays
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
        elif pool is None:
            self.a_buf = self._synaptic_input(s_in)
        else:
            self._pending = pool.submit(self._synaptic_input, s_in)

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
            if not (plan.ok and _torch_is_safe()):
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


def _exact_int(x) -> ty.Optional[int]:
    """``x`` as a Python int when it is one integer-valued number (scalar or size-1 array)."""
    a = np.asarray(x)
    if a.size != 1 or a.dtype.kind not in "iub":
        return None
    return int(a.reshape(-1)[0])


def _decay_into(state: np.ndarray, factor: int, scratch: np.ndarray) -> None:
    """In place: ``state = sign(p) * (|p| >> 12)`` with ``p = int64(state) * factor``, for
    int32 ``state`` and ``0 <= factor <= 4096``; ``scratch`` is a float64 array of its shape.

    Computed as ``state * (factor / 4096)`` in float64, cast back to int32, which is exact
    (docs/EXACTNESS.md, section 5); factor 4096 keeps the state as it is, factor 0 zeroes it.
    """
    if factor == 4096:
        return
    if factor == 0:
        state.fill(0)
        return
    np.multiply(state, factor / 4096.0, out=scratch)
    np.copyto(state, scratch, casting="unsafe")


def recv_dense(port) -> np.ndarray:
    """``port.recv()`` of a ``PyInPortVectorDense``, without Lava's ``zeros + x1 + x2 ...``
    where that sum is known: when every channel delivers an integer array of the port's shape,
    all of one dtype that the port's dtype promotes to, the sum is ``x1`` for one channel and
    ``x1 + x2 + ...`` otherwise, in that dtype (same values, same int wrap-around; floats keep
    Lava's way, where ``0.0 + -0.0`` differs from ``-0.0``).  Anything else: ``port.recv()``.

    With one channel the array is returned as it came; it may be read-only (an in-process
    channel passes a sender's read-only array as it is), so callers do not write into it.
    """
    channels = getattr(port, "csp_ports", ())
    if not (
        type(port) is PyInPortVectorDense
        and channels
        and type(getattr(port, "_transformer", None)) is IdentityTransformer
    ):
        return port.recv()
    xs = [c.recv() for c in channels]
    first = xs[0]
    dtype = first.dtype
    if (
        dtype.kind in "iu"
        and np.result_type(port._d_type, dtype) == dtype
        and all(x.shape == port._shape and x.dtype == dtype for x in xs)
    ):
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


def is_silent(x: np.ndarray) -> bool:
    """True when every element of ``x`` is zero (two SIMD reductions: cheaper than
    ``not x.any()`` on integer arrays, which casts to bool first)."""
    if x.dtype == np.bool_:
        return not x.any()
    return not (x.size and (_max(x, axis=None) or _min(x, axis=None)))


def one_message(port, data: np.ndarray):
    """What ``port.send(data)`` should be given: in the in-process runtime, ``data`` cast once
    to the dtype its channels carry and ``frozen``, so that all of the port's channels pass that
    one array (instead of each casting a copy of its own); elsewhere ``data`` as it is."""
    channels = getattr(port, "csp_ports", ())
    if type(data) is np.ndarray and channels and all(type(c) is LocalSendPort for c in channels):
        dtype = channels[0]._dtype
        if all(c._dtype == dtype for c in channels):
            return frozen(np.array(data, dtype=dtype))
    return data


def frozen(x: np.ndarray) -> np.ndarray:
    """``x`` marked read-only (in place) and returned: an in-process channel passes such an
    array to its receivers without copying it.  Only for a fresh result that nothing else
    refers to and nobody writes into again."""
    x.flags.writeable = False
    return x


class _FastLifFixedMixin:
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
        if scratch is None or scratch.shape != u.shape:
            scratch = self._fast_scratch = np.empty(u.shape, np.float64)

        # Current: decay, add the MSB-aligned input; int32 arithmetic (and wrap-around) as in
        # the stock code, done in place in u.
        if factor_u == 0:
            # No current carried over (lava-dl's current_decay = 1): u = 0 + (a_in << shift).
            np.left_shift(activation_in, self.act_shift, out=u)
        else:
            _decay_into(u, factor_u, scratch)
            u += np.left_shift(activation_in, self.act_shift)
        lim = self.max_uv_val
        if u.size and (_max(u, axis=None) > lim or _min(u, axis=None) <= -lim):
            # The stock 24-bit wrap, verbatim (only reached when a value is out of range;
            # otherwise both np.where calls are the identity).
            wrapped = np.where(u > lim, u - 2 * lim, u)
            wrapped = np.where(wrapped <= -lim, u + 2 * lim, wrapped)
            u[:] = wrapped

        # Voltage: decay, add current and bias (int32, in place in v), clip to 24 bits.
        _decay_into(v, factor_v, scratch)
        v += u
        bias = self.effective_bias
        if not (isinstance(bias, int) and bias == 0):
            v += bias
        np.minimum(v, lim - 1, out=v)  # np.clip(v, -lim + 1, lim - 1), in two ufunc calls
        np.maximum(v, 1 - lim, out=v)

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


def fast_exception_map() -> dict:
    """``{Process class: fast ProcessModel class}`` for ``exception_proc_model_map``."""
    return {Conv: FastConvModelFixed, LIF: FastLifModelBitAcc, LIFReset: FastLifResetModelBitAcc}


def fast_run_config(
    select_tag: str = "fixed_pt", exception_proc_model_map: ty.Optional[dict] = None, **kwargs
) -> Loihi2SimCfg:
    """``Loihi2SimCfg`` that runs stock ``Conv``, ``LIF`` and ``LIFReset`` processes with the
    fast models of this module (``fast_exception_map``), everything else as usual: the CPU
    case of :func:`export.run_config.run_config`.

    ``exception_proc_model_map`` entries given here are added on top of (and win over) the
    fast ones; other keyword arguments go to ``Loihi2SimCfg``.  The fast models are
    fixed-point models, so ``select_tag`` should stay ``"fixed_pt"`` (or another tag that
    picks the fixed-point models of the other processes).
    """
    from export.run_config import run_config

    return run_config(
        "cpu", True, select_tag, exception_proc_model_map=exception_proc_model_map, **kwargs
    )
