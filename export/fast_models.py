"""Fast, bit-exact CPU process models for stock Lava processes.

Lava's stock fixed-point Conv model (``lava.proc.conv.models.PyConvModelFixed``) convolves
with ``scipy.signal.convolve2d`` one (output channel, input channel) pair at a time, which makes
a 16-channel 128x128 layer cost a quarter of a second per time step.  ``FastConvModelFixed``
below implements the *same* stock ``lava.proc.conv.process.Conv`` process with one
``torch.nn.functional.conv2d`` call per step and gives bit-for-bit the same ``a_out`` as the
stock model.

It is never picked by Lava's default model search (it lives outside ``lava/proc/conv`` and is
tagged ``"fast"`` besides ``"fixed_pt"``); ask for it explicitly::

    from export.fast_models import fast_run_config
    proc.run(condition=RunSteps(num_steps=n), run_cfg=fast_run_config())

which is ``Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Conv:
FastConvModelFixed})``.

The module also has ``run_checked``, a ``proc.run(RunSteps(n))`` that cannot hang: Lava 0.10
deadlocks when a process model raises (the runtime service waits forever for the neighbours of
the dead worker) and ``proc.stop()`` then hangs too, leaving the worker OS processes behind.
"""
from __future__ import annotations

import multiprocessing
import time
import typing as ty

import numpy as np
import torch
import torch.nn.functional as F

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.magma.runtime.mgmt_token_enums import MGMT_RESPONSE, enum_equal
from lava.proc.conv import utils
from lava.proc.conv.models import AbstractPyConvModel
from lava.proc.conv.process import Conv

__all__ = [
    "FastConvModelFixed",
    "fast_exception_map",
    "fast_run_config",
    "conv_exact",
    "run_checked",
    "abort_runtime",
    "LavaRunError",
]

# Largest magnitude for which every integer is exactly representable.
_F32_EXACT = 1 << 24
_F64_EXACT = 1 << 53

_torch_ready = False


def _prepare_torch_in_child() -> None:
    """One intra-op thread for torch, in a Lava worker process only.

    Lava's CPU backend forks one OS process per process model, and all of them run each time
    step concurrently, so extra intra-op threads only compete for the same cores.  One thread
    also keeps torch away from the OpenMP thread pool, which is not fork-safe: a forked child
    that enters an OpenMP parallel region the parent already used can hang (the reason Lava's
    own ``lava.proc.conv.utils`` disables torch).  In the parent process (a model driven by
    hand, not through a Lava runtime) the thread setting is left alone.
    """
    global _torch_ready
    if _torch_ready:
        return
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
    _torch_ready = True


def _as_int(v) -> int:
    return int(np.asarray(v).reshape(-1)[0])


def _pair(v) -> tuple[int, int]:
    a = np.asarray(v).reshape(-1)
    return int(a[0]), int(a[-1])


def conv_exact(input_: np.ndarray,
               weight: np.ndarray,
               kernel_size,
               stride,
               padding,
               dilation,
               groups: int) -> np.ndarray:
    """Drop-in replacement for ``lava.proc.conv.utils.conv`` on integer data, same result.

    ``utils.conv`` (scipy path) accumulates in float64 and returns ``output.astype(
    weight.dtype)``; this function returns exactly that array.  Layouts are Lava's: input
    ``(W, H, C_in)``, weight ``(C_out, kW, kH, C_in // groups)``, output ``(W', H', C_out)``;
    stride, padding and dilation are (x, y) pairs.  Lava's "conv" is a true convolution (scipy
    ``convolve2d`` flips the kernel), so the kernel is flipped before torch's correlation.

    Exactness.  Let ``L = max over output channels of sum |w|`` and ``m = max |input|``.  Every
    partial sum of the products feeding one output is an integer of magnitude <= ``L * m``:

    * ``L * m < 2**24``: computed in float32.  Every integer of magnitude below 2**24 is a
      float32, so each addition / fused multiply-add is exact whatever order the kernel sums
      in.  torch's CPU conv2d uses oneDNN ``convolution_direct`` or im2col + GEMM here (no
      Winograd/FFT), i.e. plain products and sums.
    * ``L * m < 2**53``: the same argument in float64 (torch's im2col + GEMM path).  The result
      equals the stock float64 sum exactly, so the final ``astype`` (and its wrap-around on
      int32 overflow) is the same operation on the same numbers.
    * otherwise, or for non-integer input or weights: falls back to ``utils.conv`` itself
      (stock code, stock speed), so the result is still identical.
    """
    kind_ok = (input_.dtype.kind in "biu") and (weight.dtype.kind in "iu")
    if not kind_ok or input_.ndim != 3 or weight.ndim != 4:
        return utils.conv(input_, weight, kernel_size, stride, padding, dilation, groups)

    w64 = weight.astype(np.int64, copy=False)
    l1 = int(np.abs(w64).reshape(w64.shape[0], -1).sum(axis=1).max()) if w64.size else 0
    if input_.dtype == np.bool_:
        m = 1 if input_.size else 0
    elif input_.size:
        m = max(abs(int(input_.max())), abs(int(input_.min())))
    else:
        m = 0
    bound = l1 * m
    if bound < _F32_EXACT:
        dtype = np.float32
    elif bound < _F64_EXACT:
        dtype = np.float64
    else:
        return utils.conv(input_, weight, kernel_size, stride, padding, dilation, groups)

    _prepare_torch_in_child()
    # (W, H, C) -> (1, C, W, H) as a view: torch sees a channels-last tensor, no copy.
    x = torch.from_numpy(input_.astype(dtype)).permute(2, 0, 1).unsqueeze(0)
    # Convolution = correlation with the kernel flipped in both spatial axes;
    # (C_out, kW, kH, C_in/g) -> (C_out, C_in/g, kW, kH).
    w = torch.from_numpy(
        np.ascontiguousarray(weight[:, ::-1, ::-1, :].transpose(0, 3, 1, 2), dtype=dtype))
    with torch.no_grad():
        y = F.conv2d(x, w, stride=_pair(stride), padding=_pair(padding),
                     dilation=_pair(dilation), groups=int(groups))
    # (1, C_out, W', H') -> (W', H', C_out); contiguous before the cast, like the stock array.
    out = np.ascontiguousarray(y[0].permute(1, 2, 0).numpy())
    return out.astype(weight.dtype)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "fast")
class FastConvModelFixed(AbstractPyConvModel):
    """Stock Lava ``Conv`` in fixed point, bit-for-bit equal to ``PyConvModelFixed``, fast.

    Same semantics as the stock fixed-point model, step for step:

    * one-step buffer: each step first SENDS ``a_buf`` (the previous step's result, zeros at
      the first step), then receives ``s_in``, convolves and stores the result in ``a_buf``;
    * input is cast to ``bool`` when ``num_message_bits == 0`` (binary spikes), used as
      received (graded) otherwise;
    * the convolution result is cast to the weight dtype (int32), then wrapped to 24 signed
      bits with ``utils.signed_clamp(x, bits=24)``;
    * ``weight_exp`` is IGNORED, as the stock fixed-point model ignores it.  This is
      deliberate so that results equal the stock model exactly; a graph builder that needs a
      weight exponent must fold it into the weights (or the neuron) itself.

    The convolution itself is ``conv_exact`` (torch conv2d in float32 or float64 when that is
    provably exact, else the stock scipy routine); see its docstring for the argument.  Dense
    torch conv is used for binary spikes too: at 128x128x16 one step costs a few milliseconds,
    which a sparse scatter of the active spikes in numpy does not beat at a few % activity.

    Only selected when asked for: ``exception_proc_model_map={Conv: FastConvModelFixed}``
    (see ``fast_run_config``).  Inside a Lava worker process it sets torch to one intra-op
    thread (see ``_prepare_torch_in_child``).
    """

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    weight: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def run_spk(self) -> None:
        if self.a_buf is None:  # as in the stock model (never true: the Var has init=0)
            self.a_buf = np.zeros_like(self.a_out.shape)

        self.a_out.send(self.a_buf)

        if self.num_message_bits.item() > 0:
            s_in = self.s_in.recv()
        else:
            s_in = self.s_in.recv().astype(bool)

        a_out = conv_exact(
            s_in, self.weight,
            self.kernel_size, self.stride, self.padding, self.dilation,
            _as_int(self.groups),
        )
        self.a_buf = self.clamp_precision(a_out)

    def clamp_precision(self, x: np.ndarray) -> np.ndarray:
        return utils.signed_clamp(x, bits=24)


def fast_exception_map() -> dict:
    """``{Process class: fast ProcessModel class}`` for ``exception_proc_model_map``."""
    return {Conv: FastConvModelFixed}


def fast_run_config(select_tag: str = "fixed_pt",
                    exception_proc_model_map: ty.Optional[dict] = None,
                    **kwargs) -> Loihi2SimCfg:
    """``Loihi2SimCfg`` that runs stock ``Conv`` processes with ``FastConvModelFixed``.

    ``exception_proc_model_map`` entries given here are added on top of (and win over) the
    fast ones; other keyword arguments go to ``Loihi2SimCfg``.  The fast models are
    fixed-point models, so ``select_tag`` should stay ``"fixed_pt"`` (or another tag that
    picks the fixed-point models of the other processes).
    """
    mapping = fast_exception_map()
    mapping.update(exception_proc_model_map or {})
    return Loihi2SimCfg(select_tag=select_tag, exception_proc_model_map=mapping, **kwargs)


# --------------------------------------------------------------------------------------------
# Running without hangs or orphaned worker processes
# --------------------------------------------------------------------------------------------

class LavaRunError(RuntimeError):
    """A Lava worker process failed (or the run timed out); the workers have been ended."""


def _actors(runtime) -> list:
    infra = getattr(runtime, "_messaging_infrastructure", None)
    return list(getattr(infra, "actors", None) or [])


def abort_runtime(proc) -> None:
    """End every worker OS process of ``proc``'s runtime and release its shared memory.

    For a runtime that failed or hangs; a healthy one is stopped with ``proc.stop()``.  After
    this ``proc.stop()`` returns at once (and may still be called, e.g. from a ``finally``).
    Only the processes this runtime forked are signalled (SIGTERM, then SIGKILL after 5 s).
    """
    runtime = getattr(proc, "runtime", None)
    if runtime is None:
        return
    actors = _actors(runtime)
    for actor in actors:
        if actor.is_alive():
            actor.terminate()
    for actor in actors:
        multiprocessing.Process.join(actor, 5.0)
        if actor.is_alive():
            actor.kill()
            multiprocessing.Process.join(actor, 5.0)
    # Mark the runtime as not started: Runtime.stop() then skips the STOP handshake with the
    # (now dead) runtime services and only joins the actors and shuts the shared-memory
    # manager down; Runtime.__del__ does nothing more.
    runtime._is_running = False
    runtime._is_started = False
    try:
        runtime.join()  # the runtime's own channel ports in this process
    except Exception:  # noqa: BLE001 - best effort, the ports may be half built
        pass
    runtime.stop()


def _failure_text(actors) -> str:
    lines = []
    for actor in actors:
        exc = actor.exception
        if exc:
            err, tb = exc
            lines.append(f"worker pid {actor.pid}: {err!r}\n{tb}")
        elif not actor.is_alive():
            lines.append(f"worker pid {actor.pid} exited with code {actor.exitcode}")
    return "\n".join(lines)


def run_checked(proc, num_steps: int, run_cfg=None, *, timeout_s: ty.Optional[float] = None,
                poll_s: float = 0.005) -> None:
    """``proc.run(RunSteps(num_steps), run_cfg)`` that raises instead of hanging.

    The run is started non-blocking and watched: when every runtime service has answered
    DONE the run is finished as usual (``proc.wait()``); when a worker process dies (a
    ProcessModel raised) or ``timeout_s`` passes, all workers are ended (``abort_runtime``)
    and ``LavaRunError`` is raised with the workers' tracebacks.  A failure while building
    the workers (``proc.run`` raising) also ends them before re-raising.  Call ``proc.stop()``
    when done, as always (harmless after a failure).
    """
    try:
        proc.run(condition=RunSteps(num_steps=num_steps, blocking=False), run_cfg=run_cfg)
    except BaseException:
        abort_runtime(proc)
        raise
    runtime = proc.runtime
    ports = list(runtime.service_to_runtime)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            if all(port.probe() for port in ports):
                if all(_is_normal_answer(port.peek()) for port in ports):
                    runtime.wait()  # reads the answers (DONE, or a pause/stop request)
                    return
                raise LavaRunError(
                    "Lava run failed (a runtime service answered "
                    f"{[port.peek() for port in ports]}):\n"
                    + _failure_text(_actors(runtime)))
            actors = _actors(runtime)
            if any((not a.is_alive()) or a.exception for a in actors):
                # Give the other workers' tracebacks a moment to arrive.
                time.sleep(0.05)
                raise LavaRunError("Lava worker process failed:\n" + _failure_text(actors))
            if deadline is not None and time.monotonic() > deadline:
                raise LavaRunError(f"Lava run did not finish {num_steps} steps in "
                                   f"{timeout_s} s")
            time.sleep(poll_s)
    except BaseException:
        abort_runtime(proc)
        raise


def _is_normal_answer(msg) -> bool:
    return any(bool(enum_equal(msg, ok)) for ok in
               (MGMT_RESPONSE.DONE, MGMT_RESPONSE.REQ_PAUSE, MGMT_RESPONSE.REQ_STOP))
