"""Exact integer convolution for the fast Conv model: torch ``conv2d`` or numpy gemms in
float32 / float64 where that is provably exact (docs/EXACTNESS.md, section 4), else Lava's
stock ``lava.proc.conv.utils.conv``; plans of the per-weight work; one compute thread per
forked Lava worker.

torch inside Lava workers: Lava's CPU backend forks one OS process per process model.  When
the main process has already run a multi-threaded torch op (GNU OpenMP pool started), a
multi-threaded torch op in a forked worker hangs (reproduced here with torch 2.3.1; the
reason Lava's own ``lava.proc.conv.utils`` disabled its torch path).  The models therefore
set torch (and numpy's OpenBLAS) to one thread in each worker before any computation, keyed
by process id (``_prepare_worker``); torch is only used where that was done or in a main
process (``_torch_is_safe``), numpy otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import typing as ty

import numpy as np

try:
    import torch
    import torch.nn.functional as torch_F
except ImportError:  # pragma: no cover - torch is a dependency of lava-dl
    torch = None

from lava.proc.conv import utils

from export.lava.inprocess_runtime import numpy_blas_thread_controls
from export.lava.synapse import shift_by_exponent
from i2e_neuro.models.spec import pair

# Largest magnitude below which every integer is exactly representable.
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53


# Process id in which _prepare_worker ran.  A pid, not a flag: Lava forks its workers from the
# main process, and a flag set there would be inherited by every worker.
_prepared_pid: ty.Optional[int] = None

# Which convolution routine _conv_exact uses: "auto" (``_conv_gather`` for small output maps,
# else ``_conv_events`` for binary spikes where its measured cost is lower, else torch where it
# is safe, else numpy), "torch", "numpy", "gather" or "events" (tests check each; "events"
# falls back to torch / numpy for what it does not handle: graded input, groups).
_BACKEND = "auto"

# Output maps of at most this many positions go to ``_conv_gather`` under "auto": there the
# weights, not the arithmetic, are the work (a 3x3 512 -> 512 kernel on a 1x1 map is 9.4 MB of
# float32 read for 0.26 M useful multiply-adds, 8 of 9 taps meeting only padding).
_GATHER_MAX_OUTPUTS = 4


def _numpy_blas_thread_setters():
    """``openblas_set_num_threads`` of the OpenBLAS that numpy is linked to (wheels bundle it
    in ``numpy.libs``), found without scanning every loaded library."""
    return [setter for _, setter in numpy_blas_thread_controls()]


def _prepare_worker() -> None:
    """One compute thread (torch and numpy's OpenBLAS) in this Lava worker process.

    Called from the models' constructors, which Lava runs inside the forked worker process.
    Two reasons:

    * All workers compute each time step concurrently, so threads inside them only compete
      for the same cores.
    * torch after fork: when the main process has already run a multi-threaded torch op
      (GNU OpenMP thread pool started), a multi-threaded torch op in the forked child hangs
      (reproduced here with torch 2.3.1: the worker's conv2d never returns; see
      ``tests/export/test_fast_models.py::test_fast_model_after_parent_used_torch_threads``).  With
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


def _ints(v) -> tuple[int, int]:
    a, b = pair(v)
    return int(a), int(b)


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
        self.stride, self.padding, self.dilation = _ints(stride), _ints(padding), _ints(dilation)
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
            elif backend == "events":  # (C_in, kW * kH * C_out): what one input channel adds
                k = flipped.transpose(3, 1, 2, 0)  # (C_in/g, kW, kH, C_out)
                w = torch.from_numpy(np.ascontiguousarray(k, dtype=dtype).reshape(k.shape[0], -1))
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
    # Event by event: binary spikes, one group, stride 1 (a strided convolution would sum
    # every tap at every input position, most of them for no output).
    events_ok = (
        input_.dtype == np.bool_ and plan.groups == 1 and plan.stride == (1, 1) and _torch_is_safe()
    )
    if backend == "auto":
        small = plan.groups == 1 and _output_size(plan, input_.shape) <= _GATHER_MAX_OUTPUTS
        if small:
            backend = "gather"
        elif events_ok and _events_cheaper(plan, input_):
            backend = "events"
        else:
            backend = "torch" if _torch_is_safe() else "numpy"
    if backend == "gather" and plan.groups == 1:
        out = _conv_gather(input_, plan, dtype)
    elif backend == "events" and events_ok:
        out = _conv_events(input_, plan, dtype)
    else:
        if backend not in ("torch", "numpy"):
            backend = "torch" if _torch_is_safe() else "numpy"
        conv = _conv_torch if backend == "torch" else _conv_numpy
        out = conv(
            input_,
            plan.weights(dtype, "torch" if backend == "torch" else "numpy"),
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


def _output_size(plan: _ConvPlan, in_shape) -> int:
    """Positions of the output map, ``W' * H'``."""
    w_, h_ = in_shape[0], in_shape[1]
    _, k_w, k_h, _ = plan.weight.shape
    (sx, sy), (px, py), (dx, dy) = plan.stride, plan.padding, plan.dilation
    return ((w_ + 2 * px - dx * (k_w - 1) - 1) // sx + 1) * (
        (h_ + 2 * py - dy * (k_h - 1) - 1) // sy + 1
    )


def _gather_index(plan: _ConvPlan, w_: int, h_: int) -> np.ndarray:
    """``[W' * H', kW * kH]``: the input position (``x * H + y``) each kernel tap of each
    output position reads, ``W * H`` (a zero row) where it reads the padding; cached."""
    key = ("gather", w_, h_)
    idx = plan._prepared.get(key)
    if idx is None:
        _, k_w, k_h, _ = plan.weight.shape
        (sx, sy), (px, py), (dx, dy) = plan.stride, plan.padding, plan.dilation
        wo = (w_ + 2 * px - dx * (k_w - 1) - 1) // sx + 1
        ho = (h_ + 2 * py - dy * (k_h - 1) - 1) // sy + 1
        xs = np.arange(wo)[:, None] * sx + np.arange(k_w)[None, :] * dx - px  # [W', kW]
        ys = np.arange(ho)[:, None] * sy + np.arange(k_h)[None, :] * dy - py  # [H', kH]
        x = xs[:, None, :, None]  # [W', 1, kW, 1]
        y = ys[None, :, None, :]  # [1, H', 1, kH]
        inside = (x >= 0) & (x < w_) & (y >= 0) & (y < h_)
        idx = np.where(inside, x * h_ + y, w_ * h_).reshape(wo * ho, k_w * k_h)
        plan._prepared[key] = idx = (idx, wo, ho)
    return idx


def _conv_gather(input_: np.ndarray, plan: _ConvPlan, dtype) -> np.ndarray:
    """The convolution as one product ``A[:, used] @ W[used]`` (groups = 1): ``A`` ``[W' * H',
    kW * kH * C_in]`` holds what each output position's taps read (im2col, padding as zeros),
    ``W`` the flipped kernel as ``[kW * kH * C_in, C_out]``, and ``used`` the columns of ``A``
    with a nonzero value: on small maps of sparse spikes only those rows of the weights are read
    (a 1x1 map with 3x3 taps: the centre tap's rows of the active channels), not all of them.
    Same numbers as the other routines: every partial sum of integer products is bounded by
    the plan's ``l1 * m``, which chose ``dtype`` to hold it exactly, in any order."""
    w_, h_, c_in = input_.shape
    idx, wo, ho = _gather_index(plan, w_, h_)
    rows = np.zeros((w_ * h_ + 1, c_in), dtype)  # + a zero row for the padding
    rows[:-1] = input_.reshape(w_ * h_, c_in)
    a = rows[idx].reshape(idx.shape[0], -1)  # [W' * H', kW * kH * C_in]
    w = plan.weights(dtype, "numpy")  # (kW, kH, C_in, C_out): rows in A's column order
    w = w.reshape(-1, w.shape[-1])
    used = np.flatnonzero(a.any(axis=0))
    if 3 * len(used) < a.shape[1]:
        out = a[:, used] @ w[used]
    else:
        out = a @ w
    return out.reshape(wo, ho, w.shape[-1])


def _conv_events(input_: np.ndarray, plan: _ConvPlan, dtype) -> np.ndarray:
    """The convolution of binary spikes as Loihi computes it, event by event (groups = 1):
    every spike at input position ``q`` in channel ``c`` adds channel ``c``'s weights of every
    tap, ``Y[q] = sum of W[c, taps, :]`` over the channels that spiked at ``q`` (one torch
    ``embedding_bag``: a sum of table rows per position), and each output then sums its taps'
    entries, ``out[o] = sum over taps t of Y[o * stride + t * dilation - padding, t]`` (one
    slice addition per tap).  The work follows the spikes, not the map: at a few percent
    activity on small maps with many channels (the deep stages) it is a fraction of a dense
    convolution, which ``_events_cheaper`` measures.  Same numbers: every partial sum is a sum
    of weights of a subset of the inputs, bounded by the plan's ``l1``, exact in ``dtype``."""
    w_, h_, c_in = input_.shape
    c_out, k_w, k_h, _ = plan.weight.shape
    (sx, sy), (px, py), (dx, dy) = plan.stride, plan.padding, plan.dilation
    wo = (w_ + 2 * px - dx * (k_w - 1) - 1) // sx + 1
    ho = (h_ + 2 * py - dy * (k_h - 1) - 1) // sy + 1
    position, channel = np.nonzero(input_.reshape(w_ * h_, c_in))  # by position (C order)
    offsets = np.zeros(w_ * h_, np.int64)
    np.cumsum(np.bincount(position, minlength=w_ * h_)[:-1], out=offsets[1:])
    table = plan.weights(dtype, "events")
    with torch.no_grad():
        y = torch_F.embedding_bag(
            torch.from_numpy(channel), table, torch.from_numpy(offsets), mode="sum"
        )
    y = y.numpy().reshape(w_, h_, k_w, k_h, c_out)
    out = np.zeros((wo, ho, c_out), dtype)
    for i in range(k_w):
        x0, x1 = _tap_range(i * dx - px, sx, w_, wo)
        if x0 >= x1:
            continue
        xs = slice(x0 * sx + i * dx - px, (x1 - 1) * sx + i * dx - px + 1, sx)
        for j in range(k_h):
            y0, y1 = _tap_range(j * dy - py, sy, h_, ho)
            if y0 < y1:
                ys = slice(y0 * sy + j * dy - py, (y1 - 1) * sy + j * dy - py + 1, sy)
                out[x0:x1, y0:y1] += y[xs, ys, i, j]
    return out


def _tap_range(shift: int, stride: int, size: int, n_out: int) -> tuple[int, int]:
    """The outputs ``o`` in ``[lo, hi)`` whose tap reads inside the map: ``0 <= o * stride +
    shift < size`` and ``0 <= o < n_out``."""
    lo = max(0, -(shift // stride)) if shift < 0 else 0
    hi = min(n_out, (size - 1 - shift) // stride + 1) if size - 1 - shift >= 0 else 0
    return lo, hi


#: Per convolution geometry: ``(a, b, dense)`` seconds, the measured cost of ``_conv_events``
#: as ``a + b * spikes`` and of torch's dense ``conv2d`` (``_event_costs``).
_EVENT_COSTS: dict = {}
_EVENT_COSTS_LOCK = threading.Lock()


def _events_cheaper(plan: _ConvPlan, input_: np.ndarray) -> bool:
    """Whether ``_conv_events`` is expected to be faster than torch's dense convolution on
    this input, from the costs measured for its geometry (``_event_costs``).  Either way the
    result is the same; only the time differs."""
    a, b, dense = _event_costs(plan, input_.shape)
    return a + b * np.count_nonzero(input_) < dense


def _event_costs(plan: _ConvPlan, in_shape) -> tuple[float, float, float]:
    """``(a, b, dense)`` for this geometry, measured on first use in this process (best of
    two runs each: the event form at 2 % and 20 % spikes, fitted as ``a + b * spikes``, and
    torch's conv2d), and kept; ``FastConvModelFixed._warm`` asks for it before the first
    spikes arrive."""
    key = _geometry(plan, in_shape)
    costs = _EVENT_COSTS.get(key)
    if costs is not None:
        return costs
    with _EVENT_COSTS_LOCK:
        costs = _EVENT_COSTS.get(key)
        if costs is None:
            costs = _EVENT_COSTS[key] = _measure_event_costs(plan, tuple(in_shape))
    return costs


def _measure_event_costs(plan: _ConvPlan, in_shape) -> tuple[float, float, float]:
    """``_event_costs``'s measurement, on random spikes of a fixed seed."""
    rng = np.random.default_rng(0)
    points = []
    for density in (0.02, 0.2):
        x = rng.random(in_shape) < density
        best = min(_timed(time.perf_counter, _conv_events, x, plan, np.float32) for _ in range(2))
        points.append((np.count_nonzero(x), best))
    (n1, t1), (n2, t2) = points
    b = max(0.0, (t2 - t1) / max(1, n2 - n1))
    x = rng.random(in_shape) < 0.1
    w = plan.weights(np.float32, "torch")
    args = (np.float32, plan.stride, plan.padding, plan.dilation, plan.groups)
    dense = min(_timed(time.perf_counter, _conv_torch, x, w, *args) for _ in range(2))
    return t1 - b * n1, b, dense


#: Per convolution geometry: seconds of one convolution of 10 % binary spikes (``step_cost``).
_STEP_COSTS: dict = {}
_STEP_COSTS_LOCK = threading.Lock()


def step_cost(plan: _ConvPlan, in_shape) -> float:
    """Seconds one convolution of this geometry takes on 10 % binary spikes, by the routine
    ``_convolve`` chooses for it: the calling thread's CPU time (what other threads do
    meanwhile does not count), best of three runs on random spikes of a fixed seed; measured
    on first use in this process and kept.  ``FastConvModelFixed`` asks for it before the first
    spikes arrive, to decide where its convolutions run."""
    key = _geometry(plan, in_shape)
    cost = _STEP_COSTS.get(key)
    if cost is not None:
        return cost
    x = np.random.default_rng(0).random(key[0]) < 0.1
    k_wh = plan.weight.shape[1:3]
    args = (x, plan.weight, k_wh, plan.stride, plan.padding, plan.dilation, plan.groups, plan, 0)
    with _STEP_COSTS_LOCK:
        cost = _STEP_COSTS.get(key)
        if cost is None:
            _convolve(*args)  # any one-off set-up (event costs, index, torch's primitive) first
            cost = _STEP_COSTS[key] = min(
                _timed(time.thread_time, _convolve, *args) for _ in range(3)
            )
    return cost


def _geometry(plan: _ConvPlan, in_shape) -> tuple:
    """What a convolution's cost depends on: the input's shape and the plan's geometry."""
    in_shape = tuple(int(n) for n in in_shape)
    return (in_shape, plan.weight.shape, plan.stride, plan.padding, plan.dilation, plan.groups)


def _timed(clock, fn, *args) -> float:
    """Seconds of ``fn(*args)`` by ``clock`` (``time.perf_counter``, ``time.thread_time``)."""
    start = clock()
    fn(*args)
    return clock() - start


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
