"""Lava's CPU runtime with every process model in this OS process, as cooperative greenlets.

Lava 0.10 runs each process model, and each runtime service, in its own forked OS process
(``lava.magma.runtime.message_infrastructure.multiprocessing.MultiProcessing``); every channel
is a shared-memory ring with two cross-process semaphores and a relay thread at each end.  For
MS-ResNet-18 that is about 45 OS processes and 160 messages per time step, and a profile
(BENCHMARKS.md) shows the simulation spending most of its time in those hand-offs, in forking
the workers from a large parent and in joining them, not in the models.  One thread per
model was measured too: where the per-step overhead dominates (small maps) it is slower than
greenlets, since every numpy call releases the GIL and hands it to another of 45 threads.

This module is the same runtime with another message infrastructure, through the interface
Lava defines for that (``MessageInfrastructureInterface``: start, stop, build_actor, actors,
channel_class):

* ``InProcessRuntime`` is Lava's ``Runtime`` with only the infrastructure replaced: the same
  executable (the compiler's builders, the models the run configuration selected), the same
  runtime service and synchronisation protocol, the same channel shapes, dtypes and copies
  (except for read-only arrays, passed as they are since they cannot change),
  the same commands and Var access;
* every actor (process model or runtime service) is a greenlet on one "hub" thread: a model
  runs until it waits for a message, then the hub resumes the next actor that has one.  A
  switch costs about a microsecond, with no kernel, GIL or fork involved.  Only one actor
  runs at a time; work whose result is needed later (a Conv's convolution, sent only at the
  next step) runs on compute threads (``compute_pool``, ``result``) meanwhile;
* ``LocalChannel``: an in-memory queue with Lava's port semantics (``send`` blocks while
  ``size`` messages are in flight, ``recv`` blocks while there are none, ``probe``, ``peek``,
  and the ``observer`` hook of Lava's ``CspSelector``), for greenlets of the hub and for
  ordinary threads (the caller's thread talks to the runtime service through them).

* the runtime service (``_LoihiRuntimeService``) is Lava's, addressing the models in the order
  data flows between them (``_Hub.flow_order``), and a model running Lava's own command loop is
  driven by the same loop less its per-step polling list (``_run_loihi_model``).

What is computed is unchanged: each model still runs its phases when the runtime service
tells it to and exchanges the same arrays (tests compare every spike with Lava's own
multiprocessing runtime).  Nothing is forked, so nothing can outlive this process.

Private Lava attributes used (lava-nc is pinned to 0.10.0): a process model's ``_selector``
(its ``CspSelector``, which would block the hub thread while waiting) is replaced by a
cooperative one with the same ``select`` contract; the command loop reads ``_action``,
``_cmd_handlers``, ``_stopped`` and ``_channel_actions`` as Lava's ``run`` does.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import queue
import sys
import threading
import traceback
import typing as ty

import greenlet
import numpy as np
from lava.magma.compiler.builders.py_builder import PyProcessBuilder
from lava.magma.compiler.channels.interfaces import Channel, ChannelType
from lava.magma.compiler.channels.pypychannel import CspRecvPort, CspSendPort
from lava.magma.core.model.py.model import AbstractPyProcessModel, PyLoihiProcessModel
from lava.magma.core.process.message_interface_enum import ActorType
from lava.magma.runtime.message_infrastructure.message_infrastructure_interface import (
    MessageInfrastructureInterface,
)
from lava.magma.runtime.mgmt_token_enums import MGMT_COMMAND, MGMT_RESPONSE
from lava.magma.runtime.runtime import Runtime, target_fn
from lava.magma.runtime.runtime_services.runtime_service import LoihiPyRuntimeService
from scipy.sparse import csr_matrix

__all__ = [
    "InProcessRuntime",
    "create_runtime",
    "ChannelClosed",
    "is_in_process",
    "compute_pool",
    "result",
]


class ChannelClosed(Exception):
    """A waiting send or receive was released because the runtime is being aborted."""


_get_ident = threading.get_ident
_HUB = threading.local()  # in a hub thread: .pool, the hub's compute threads

#: torch's intra-op threads and numpy's OpenBLAS threads while a hub runs (None: leave them
#: alone).  The compute threads already run the step's convolutions side by side, one per
#: core; with torch's OpenMP threads or OpenBLAS's threads inside each, there are more runnable
#: threads than cores, and both libraries' idle workers spin for a while after each call,
#: taking the cores the hub thread and the other compute thread need (measured: BENCHMARKS.md).
#: Restored when the hub stops.
COMPUTE_THREADS_EACH: ty.Optional[int] = 1

#: The interpreter's switch interval while a hub runs (None: leave it; restored when the hub
#: stops).  The hub holds the GIL while it steps the models; a compute thread whose convolution
#: (GIL released) has finished needs the GIL back to hand over its result and start the next
#: one, and by default waits up to 5 ms for it, i.e. mostly until the hub idles at the end of
#: a step, which serialises the compute threads behind the hub.
SWITCH_INTERVAL_S: ty.Optional[float] = 0.0002


def compute_pool() -> ty.Optional[concurrent.futures.Executor]:
    """In a model running in an in-process runtime: threads for work that may finish later
    in the time step (see ``FastConvModelFixed``); None anywhere else."""
    return getattr(_HUB, "pool", None)


def result(future: concurrent.futures.Future):
    """``future.result()``; in a greenlet of the hub, the other actors run meanwhile."""
    if not future.done():
        hub = getattr(_HUB, "hub", None)
        if hub is not None and hub.in_hub():
            me = greenlet.getcurrent()
            future.add_done_callback(lambda _: hub.schedule(me))
            hub.suspend()
    return future.result()


def compute_threads() -> int:
    """How many compute threads a hub gets: one per core this process may use, or fewer when
    ``OMP_NUM_THREADS`` says so (``simulate --workers N`` gives each of its N processes an
    equal share of the cores that way: N runtimes with a thread per core each would put N
    times more threads than cores to work)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        share = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        share = 0
    return max(1, min(cores or 1, share) if share > 0 else (cores or 1))


def numpy_blas_thread_controls() -> list:
    """``(get, set)`` of the thread count of each OpenBLAS that numpy is linked to (``get``
    None where the library has no getter); looked up once per process."""
    global _BLAS_CONTROLS
    if _BLAS_CONTROLS is not None and _BLAS_CONTROLS[0] == os.getpid():
        return _BLAS_CONTROLS[1]
    import ctypes
    import glob

    here = os.path.dirname(np.__file__)
    paths = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "libopenblas*.so*")) + glob.glob(
        os.path.join(here, ".libs", "libopenblas*.so*")
    )
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same handle
        except OSError:
            continue
        for prefix, suffix in (("openblas", "64_"), ("openblas", ""), ("scipy_openblas", "64_")):
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if setter is not None:
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if getter is not None:
                    getter.restype = ctypes.c_int
                controls.append((getter, setter))
                break
    _BLAS_CONTROLS = (os.getpid(), controls)
    return controls


_BLAS_CONTROLS: ty.Optional[tuple] = None


def limit_numpy_blas_threads(threads: int) -> ty.Callable[[], None]:
    """Set numpy's OpenBLAS to at most ``threads`` threads (a process-wide setting); returns
    the function that restores what it was."""
    restore = []
    for get, set_ in numpy_blas_thread_controls():
        before = get() if get is not None else None
        if before is None or before > threads:
            set_(threads)
            if before is not None:
                restore.append((set_, before))

    def undo() -> None:
        for set_, before in restore:
            set_(before)

    return undo


def _limit_threads(threads: ty.Optional[int]) -> ty.Callable[[], None]:
    """Set torch's intra-op threads (when torch is loaded) and numpy's OpenBLAS threads to at
    most ``threads`` (process-wide settings); returns the function that restores them."""
    if threads is None:
        return lambda: None
    undo_blas = limit_numpy_blas_threads(threads)
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else 0
    if before > threads:
        torch.set_num_threads(threads)

    def undo() -> None:
        undo_blas()
        if before > threads:
            torch.set_num_threads(before)

    return undo


class _Hub:
    """One OS thread that runs the actors as greenlets, one at a time, in the order they
    became ready; ``pool``: threads for models' background work (``compute_pool``)."""

    def __init__(self, compute_threads: int):
        self._restore_threads = _limit_threads(COMPUTE_THREADS_EACH)
        self._switch_interval = sys.getswitchinterval()
        if SWITCH_INTERVAL_S is not None:
            sys.setswitchinterval(min(SWITCH_INTERVAL_S, self._switch_interval))
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, compute_threads), thread_name_prefix="lava-in-process-compute"
        )
        self._ready: collections.deque = collections.deque()  # greenlets and callables
        # Per model (by its command channel): the channels it receives from and sends on.
        self._channels: dict = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopped = False
        self._greenlet: ty.Optional[greenlet.greenlet] = None
        self.thread = threading.Thread(target=self._loop, name="lava-in-process", daemon=True)
        self.thread.start()
        self._ident = self.thread.ident

    def in_hub(self) -> bool:
        return _get_ident() == self._ident

    def schedule(self, item) -> None:
        """Resume a waiting greenlet, or run a callable as a new greenlet, soon; from any
        thread."""
        self._ready.append(item)  # deque.append is atomic
        if _get_ident() != self._ident:  # the hub may be waiting for work
            with self._lock:
                self._wake.notify()

    def suspend(self) -> None:
        """From a greenlet of the hub: give way until ``schedule`` resumes this greenlet."""
        self._greenlet.switch()

    def register_model(self, model) -> None:
        """Note the channels a built model receives from and sends on (``flow_order``)."""
        ins, outs = [], []
        for port in model.py_ports:
            for channel in getattr(port, "csp_ports", ()):
                if type(channel) is LocalRecvPort:
                    ins.append(channel._queue)
                elif type(channel) is LocalSendPort:
                    outs.append(channel._queue)
        command = getattr(model.service_to_process, "_queue", None)
        if command is not None:
            self._channels[command] = (ins, outs)

    def flow_order(self, commands: list) -> list:
        """The models, by command channel, in an order data flows: each after every model it
        receives from, as far as the graph allows (a cycle is entered at its first model in
        the order given); unregistered models keep their place among the rest."""
        none = ((), ())
        sender = {q: c for c in commands for q in self._channels.get(c, none)[1]}
        before = {
            c: {sender[q] for q in self._channels.get(c, none)[0] if q in sender} - {c}
            for c in commands
        }
        order, placed, left = [], set(), list(commands)
        while left:
            nxt = next((c for c in left if before[c] <= placed), left[0])
            order.append(nxt)
            placed.add(nxt)
            left.remove(nxt)
        return order

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify()
        if not self.in_hub():
            self.thread.join()
        self.pool.shutdown(wait=True)
        restore, self._restore_threads = self._restore_threads, lambda: None
        restore()  # torch's and OpenBLAS's settings as they were before this hub
        sys.setswitchinterval(self._switch_interval)

    def _loop(self) -> None:
        self._greenlet = greenlet.getcurrent()
        _HUB.pool, _HUB.hub = self.pool, self
        try:
            self._run_ready()
        finally:
            # Drop the references to this thread's main greenlet: with one left when the
            # thread ends, greenlet searches the whole heap for it (gc.get_referrers, about
            # 35 ms with the models of MS-ResNet-18 alive).
            self._greenlet = None
            _HUB.pool = _HUB.hub = None

    def _run_ready(self) -> None:
        ready = self._ready
        while True:
            try:
                item = ready.popleft()
            except IndexError:
                with self._lock:
                    while not ready and not self._stopped:
                        self._wake.wait()
                    if not ready:
                        return
                continue
            if isinstance(item, greenlet.greenlet):
                if not item.dead:
                    item.switch()
            else:
                greenlet.greenlet(item, parent=self._greenlet).switch()


class _Waiter:
    """One suspended greenlet, or one blocked thread, waiting on one or more channels."""

    __slots__ = ("target", "done", "thread")

    def __init__(self, target):
        self.target = target  # a greenlet, or a threading.Event for a thread
        self.done = False
        self.thread = isinstance(target, threading.Event)


class _Queue:
    """What a channel's two ports share: the messages in flight, in order, and who waits.

    Between greenlets of the hub nothing runs concurrently, so no lock is taken.  A channel
    that the caller's thread uses too (the runtime's channels to and from the runtime
    service, ``shared = True``) is guarded by ``lock``."""

    __slots__ = ("hub", "messages", "size", "lock", "shared", "readers", "writers", "aborted")
    __slots__ += ("send_port", "recv_port")

    def __init__(self, hub: _Hub, size: int):
        self.hub = hub
        self.messages: collections.deque = collections.deque()
        self.size = max(1, int(size))
        self.lock = threading.Lock()
        self.shared = False
        self.readers: list[_Waiter] = []  # wait for a message
        self.writers: list[_Waiter] = []  # wait for room
        self.aborted = False

    def wake(self, waiters: list[_Waiter]) -> None:
        """Resume everyone in ``waiters`` (once each); with ``lock`` held if shared."""
        for w in waiters:
            if not w.done:
                w.done = True
                if w.thread:
                    w.target.set()
                else:
                    self.hub.schedule(w.target)
        waiters.clear()


def _wait(queues: list[_Queue], lists: list[list[_Waiter]]) -> None:
    """Register one waiter in every list of ``lists`` and wait until a ``wake``.  Called
    with the ``lock`` of every shared queue in ``queues`` held; releases them."""
    hub = queues[0].hub
    target = greenlet.getcurrent() if hub.in_hub() else threading.Event()
    w = _Waiter(target)
    for waiters in lists:
        waiters.append(w)
    for q in queues:
        if q.shared:
            q.lock.release()
    if isinstance(target, threading.Event):
        target.wait()
    else:
        hub.suspend()


def _notify(observer) -> None:
    if observer is not None:
        observer()


class _LocalPort:
    """What both ends of a ``LocalChannel`` share: Lava's port attributes (``name``,
    ``shape``, ``d_type``, ``size`` read them), the ``observer`` hook of Lava's
    ``CspSelector``, and nothing to start or join (no relay thread, no shared memory)."""

    def __init__(self, name: str, queue_: _Queue, shape, dtype, size: int):
        self._name, self._shape, self._dtype, self._size = name, tuple(shape), dtype, size
        self._queue = queue_
        self.observer: ty.Optional[ty.Callable[[], ty.Any]] = None
        self.thread = None

    def start(self) -> None:
        pass

    def join(self) -> None:
        pass


class LocalSendPort(_LocalPort, CspSendPort):
    """The sending end of a ``LocalChannel`` (a ``CspSendPort``, as Lava's builders require)."""

    def probe(self) -> bool:
        """True when ``send`` will not block."""
        return len(self._queue.messages) < self._queue.size or self._queue.aborted

    def send(self, data) -> None:
        if data.shape != self._shape:
            raise AssertionError(f"{data.shape=} {self._shape=} Mismatch")  # as Lava's port
        if type(data) is np.ndarray and data.dtype == self._dtype:
            # A read-only array (a sender's fresh result, ``export.lava.ports.frozen``) cannot
            # change, so every receiver may have it as it is; anything else is copied.
            message = data if not data.flags.writeable else data.copy()
        else:
            if type(data) is not np.ndarray and isinstance(data, csr_matrix):
                from lava.utils.sparse import find

                data = find(data, explicit_zeros=True)[2]
            # The copy Lava's shared-memory channel makes (assignment into a buffer of the
            # channel's dtype): the receiver gets the same values in an array of its own.
            message = np.array(data, dtype=self._dtype)
        q = self._queue
        if q.shared or q.aborted or len(q.messages) >= q.size:
            self._send_slow(q, message)
        else:  # between greenlets of the hub: nothing runs concurrently
            q.messages.append(message)
            if q.readers:
                q.wake(q.readers)
        observer = q.recv_port.observer
        if observer is not None:
            observer()

    def _send_slow(self, q: _Queue, message: np.ndarray) -> None:
        if q.shared:
            q.lock.acquire()
        while len(q.messages) >= q.size and not q.aborted:
            _wait([q], [q.writers])
            if q.shared:
                q.lock.acquire()
        if q.aborted:
            if q.shared:
                q.lock.release()
            raise ChannelClosed(self._name)
        q.messages.append(message)
        q.wake(q.readers)
        if q.shared:
            q.lock.release()


class LocalRecvPort(_LocalPort, CspRecvPort):
    """The receiving end of a ``LocalChannel``."""

    def probe(self) -> bool:
        """True when ``recv`` will not block (an aborted channel raises at once)."""
        return bool(self._queue.messages) or self._queue.aborted

    def _take(self, pop: bool) -> np.ndarray:
        q = self._queue
        if q.shared:
            q.lock.acquire()
        while not q.messages and not q.aborted:
            _wait([q], [q.readers])
            if q.shared:
                q.lock.acquire()
        if not q.messages:
            if q.shared:
                q.lock.release()
            raise ChannelClosed(self._name)
        if pop:
            message = q.messages.popleft()
            if q.writers:
                q.wake(q.writers)
        else:
            message = q.messages[0].copy()
        if q.shared:
            q.lock.release()
        if pop:
            _notify(q.send_port.observer)
        return message

    def peek(self) -> np.ndarray:
        return self._take(pop=False)

    def recv(self) -> np.ndarray:
        q = self._queue
        if q.shared or not q.messages:
            return self._take(pop=True)
        message = q.messages.popleft()  # between greenlets of the hub: nothing concurrent
        if q.writers:
            q.wake(q.writers)
        observer = q.send_port.observer
        if observer is not None:
            observer()
        return message


class LocalChannel(Channel):
    """Lava's ``PyPyChannel`` contract in memory: the same constructor arguments (the
    watchdogs are accepted and unused, as with Lava's default ``NoOPWatchdog``)."""

    def __init__(self, message_infrastructure, src_name, dst_name, shape, dtype, size, *watchdogs):
        queue_ = _Queue(message_infrastructure.hub, size)
        self._src_port = queue_.send_port = LocalSendPort(src_name, queue_, shape, dtype, size)
        self._dst_port = queue_.recv_port = LocalRecvPort(dst_name, queue_, shape, dtype, size)
        message_infrastructure.register(queue_)

    @property
    def src_port(self) -> LocalSendPort:
        return self._src_port

    @property
    def dst_port(self) -> LocalRecvPort:
        return self._dst_port


class _Selector:
    """Lava's ``CspSelector.select`` contract, waiting cooperatively on ``LocalRecvPort``s:
    run the action of the first channel that has a message."""

    def __init__(self, fallback):
        self._fallback = fallback

    def select(self, *channel_actions):
        if len(channel_actions) == 1:  # the usual case: commands from the runtime service
            port, action = channel_actions[0]
            if type(port) is LocalRecvPort:
                q = port._queue
                if not q.shared:
                    while not q.messages and not q.aborted:
                        _wait([q], [q.readers])
                    return action()
        ports = [channel for channel, _ in channel_actions]
        if not all(isinstance(p, LocalRecvPort) for p in ports):
            return self._fallback.select(*channel_actions)
        while True:
            for channel, action in channel_actions:
                if channel.probe():
                    return action()
            # Wait on every channel at once; the first message (or an abort) resumes us.
            queues = [p._queue for p in ports]
            for q in queues:
                if q.shared:
                    q.lock.acquire()
            if any(q.messages or q.aborted for q in queues):
                for q in queues:
                    if q.shared:
                        q.lock.release()
                continue
            _wait(queues, [q.readers for q in queues])


def _has_stock_loop(model) -> bool:
    """Whether ``model`` runs Lava's own command loop (``AbstractPyProcessModel.run``) with the
    Loihi protocol's port polling, which ``_run_loihi_model`` does with less work."""
    cls = type(model)
    return (
        isinstance(model, PyLoihiProcessModel)
        and cls.run is AbstractPyProcessModel.run
        and cls.add_ports_for_polling is PyLoihiProcessModel.add_ports_for_polling
    )


def _run_loihi_model(model) -> None:
    """Lava's ``AbstractPyProcessModel.run`` for a Loihi-protocol model, step for step, with
    one shortcut: after a spiking phase Lava polls the command channel alone (Var ports are
    polled only in the management and host phases: ``PyLoihiProcessModel.add_ports_for_polling``)
    and so only waits for the next command, which receiving it does too; the list of channel
    actions, its closure and the three phase comparisons are then left out."""
    commands = model.service_to_process
    handlers = model._cmd_handlers
    stop = MGMT_COMMAND.STOP[0]
    spiking = PyLoihiProcessModel.Phase.SPK  # the array ``_spike`` sets as the phase
    while True:
        if model._action == "cmd":
            cmd = commands.recv()[0]
            try:
                handler = handlers.get(cmd)
                if handler is None:
                    raise ValueError(
                        f"Illegal RuntimeService command! ProcessModels of type "
                        f"{model.__class__.__qualname__} {model.model_id} cannot handle "
                        f"command: {cmd} "
                    )
                handler()
                if cmd == stop or model._stopped:
                    return
            except Exception as inst:
                # Inform runtime service about termination (as Lava does)
                model.process_to_service.send(MGMT_RESPONSE.ERROR)
                model.join()
                raise inst
        else:
            model._handle_var_port(model._action)
        if model.phase is spiking or not model.var_ports:
            model._action = "cmd"  # Lava's select would return "cmd" once a command is in
            continue
        model._channel_actions = [(commands, lambda: "cmd")]
        model.add_ports_for_polling()
        model._action = model._selector.select(*model._channel_actions)


class _LoihiRuntimeService(LoihiPyRuntimeService):
    """Lava's ``LoihiPyRuntimeService`` with shortcuts that change nothing it sends or decides:

    * a phase command is sent to every model as one read-only array (each receives the same
      values, which nobody can change; the in-process channels pass it uncopied);
    * a model's response is compared with the six requests only when it is not
      ``STATUS_DONE`` (the value every model sends at almost every step, equal to none);
    * the models are addressed in the order data flows between them (``_Hub.flow_order``;
      its three parallel lists permuted alike).  The hub runs models in the order their
      command came, and a model run before the models it receives from only waits for them.
      The models of a Loihi-protocol step may run in any order (Lava's own runtime runs them
      all at once).
    """

    _ordered = False

    def _send_pm_cmd(self, phase) -> None:
        if not self._ordered:
            self._order_by_flow()
        phase = np.array(phase)
        phase.flags.writeable = False
        for send_port in self.service_to_process:
            send_port.send(phase)

    def _get_pm_resp(self) -> list:
        ports = self.process_to_service
        messages = [ports[i].recv() for i in range(len(self.model_ids))]
        done = LoihiPyRuntimeService.PMResponse.STATUS_DONE[0]
        if all(m[0] == done for m in messages):
            return messages
        return self._flags_of(messages)

    def _order_by_flow(self) -> None:
        self._ordered = True
        n = len(self.model_ids)
        commands = self.service_to_process[:n]
        if len(self.process_to_service) != n or not all(type(p) is LocalSendPort for p in commands):
            return
        hub = commands[0]._queue.hub
        rank = {q: i for i, q in enumerate(hub.flow_order([p._queue for p in commands]))}
        order = sorted(range(n), key=lambda i: rank.get(commands[i]._queue, n))
        for name in ("service_to_process", "process_to_service", "model_ids"):
            items = getattr(self, name)
            setattr(self, name, [items[i] for i in order])

    def _flags_of(self, messages: list) -> list:
        """Lava's checks of ``_get_pm_resp``, on messages already received."""
        queued = collections.deque(messages)

        class _Replay:
            @staticmethod
            def recv():
                return queued.popleft()

        ports = self.process_to_service
        self.process_to_service = [_Replay] * len(messages)
        try:
            return LoihiPyRuntimeService._get_pm_resp(self)
        finally:
            self.process_to_service = ports


class Actor:
    """One process model (or runtime service) as a greenlet of the hub; the part of Lava's
    ``SystemProcess`` interface that the runtime and ``export.lava.supervision`` use."""

    def __init__(self, infra: "InProcessInfrastructure", target_fn, builder, exception_q):
        self.name = f"{type(builder).__name__}-{getattr(builder, '_model_id', '')}"
        self._infra, self._target_fn = infra, target_fn
        self._builder, self._exception_q = builder, exception_q
        self._exception: ty.Optional[tuple] = None
        self._ended = threading.Event()

    def _report(self, error: ty.Optional[BaseException]) -> None:
        """Tell ``Runtime.initialize`` whether the build succeeded."""
        self._exception_q.put(error)

    def main(self) -> None:
        try:
            if isinstance(self._builder, PyProcessBuilder):
                self._run_model()
            else:
                # A runtime service: Lava's own target function.  Between runs it waits for
                # the caller's next command in Lava's CspSelector, which blocks the hub thread;
                # that is harmless, every model is idle then (it is built last, after them).
                self._target_fn(builder=self._builder, exception_q=self._exception_q)
        except ChannelClosed:
            pass  # aborted: not a failure of this actor
        except BaseException as e:  # noqa: BLE001 - reported through .exception, as Lava does
            self._exception = (e, traceback.format_exc())
            self._infra.abort()  # release the others: they may wait for this actor forever
        finally:
            self._builder = None
            self._ended.set()

    def _run_model(self) -> None:
        """Lava's ``target_fn`` for a process model, with the cooperative selector."""
        try:
            model = self._builder.build()
        except Exception as e:
            e.trace = traceback.format_exc()
            self._report(e)
            raise
        self._infra.hub.register_model(model)
        self._report(None)
        model._selector = _Selector(model._selector)
        if _has_stock_loop(model):
            model.run = lambda: _run_loihi_model(model)  # started by model.start()
        model.start()

    def is_alive(self) -> bool:
        return not self._ended.is_set()

    def join(self, timeout: ty.Optional[float] = None) -> None:
        self._ended.wait(timeout)

    @property
    def exception(self) -> ty.Optional[tuple]:
        return self._exception

    @property
    def exitcode(self) -> ty.Optional[int]:
        return None if self.is_alive() else (1 if self._exception else 0)


class InProcessInfrastructure(MessageInfrastructureInterface):
    """Actors as greenlets of one hub thread, channels as in-memory queues."""

    def __init__(self):
        self.hub: ty.Optional[_Hub] = None
        self._actors: list[Actor] = []
        self._queues: list[_Queue] = []

    @property
    def actors(self) -> list[Actor]:
        return self._actors

    @property
    def smm(self):  # no shared memory: nothing crosses a process boundary
        return None

    def start(self) -> None:
        self.hub = _Hub(compute_threads=compute_threads())

    def register(self, queue_: _Queue) -> None:
        self._queues.append(queue_)

    def build_actor(self, target_fn, builder, exception_q=None) -> Actor:
        actor = Actor(self, target_fn, builder, exception_q)
        self._actors.append(actor)
        self.hub.schedule(actor.main)
        return actor

    def abort(self) -> None:
        """Release every waiting send and receive, now and later: they raise
        ``ChannelClosed``, which ends their actor quietly.  Safe from any thread."""
        for q in self._queues:
            with q.lock:
                q.aborted = True
                q.wake(q.readers)
                q.wake(q.writers)
            _notify(q.recv_port.observer)  # a selector of a thread, or Lava's in the service
            _notify(q.send_port.observer)
        if self.hub is not None and not self.hub.in_hub():
            # A greenlet may have checked ``aborted`` just before this call and be about to
            # wait: wake everyone again from inside the hub, where nothing runs concurrently.
            self.hub.schedule(self._wake_all)

    def _wake_all(self) -> None:
        for q in self._queues:
            q.wake(q.readers)
            q.wake(q.writers)

    def join(self, timeout_s: ty.Optional[float] = None) -> None:
        """Wait for the actors to end (each at most ``timeout_s``), then for the hub."""
        for actor in self._actors:
            actor.join(timeout_s)
        if all(not a.is_alive() for a in self._actors) and self.hub is not None:
            self.hub.stop()

    def stop(self) -> None:
        """After the runtime's STOP handshake every actor returns; wait for them."""
        self.join()

    def channel_class(self, channel_type: ChannelType) -> type[Channel]:
        if channel_type == ChannelType.PyPy:
            return LocalChannel
        raise NotImplementedError(
            f"the in-process runtime has Python-Python channels only, not {channel_type!r} "
            "(a C or Loihi process model needs Lava's own runtime)"
        )


class InProcessRuntime(Runtime):
    """Lava's ``Runtime`` with ``InProcessInfrastructure`` as its message infrastructure."""

    def _build_message_infrastructure(self) -> None:
        self._messaging_infrastructure = InProcessInfrastructure()
        self._messaging_infrastructure.start()

    # Lava's two methods (lava-nc 0.10.0, runtime.py) with one change: the queue on which each
    # actor reports its build is a ``queue.SimpleQueue``, not a multiprocessing queue (whose
    # feeder thread would outlive the run).
    def _build_processes(self) -> None:
        for proc, proc_builder in (self._executable.proc_builders or {}).items():
            if isinstance(proc_builder, PyProcessBuilder):
                proc._runtime = self
                exception_q = queue.SimpleQueue()
                self.exception_q.append(exception_q)
                self._create_external_channels(proc, proc_builder)
                self._messaging_infrastructure.build_actor(target_fn, proc_builder, exception_q)

    def _build_runtime_services(self) -> None:
        for rs_builder in (self._executable.runtime_service_builders or {}).values():
            if rs_builder.rs_class is LoihiPyRuntimeService:
                rs_builder.rs_class = _LoihiRuntimeService
            self.exception_q.append(queue.SimpleQueue())
            self._messaging_infrastructure.build_actor(target_fn, rs_builder, self.exception_q[-1])

    def _build_sync_channels(self) -> None:
        super()._build_sync_channels()
        # The runtime's own ports are used from the caller's thread: lock those channels.
        for port in [*self.runtime_to_service, *self.service_to_runtime]:
            port._queue.shared = True


def is_in_process(runtime) -> bool:
    return isinstance(getattr(runtime, "_messaging_infrastructure", None), InProcessInfrastructure)


def create_runtime(proc, run_cfg, compile_config: ty.Optional[dict] = None) -> InProcessRuntime:
    """``proc.create_runtime(run_cfg)`` with an ``InProcessRuntime``: compile the network of
    ``proc``, assign the runtime to all of its processes and initialize it (build every
    model).  Then ``proc.run(...)``, ``proc.wait()``, ``proc.stop()`` as usual."""
    executable = proc.compile(run_cfg, compile_config)
    runtime = InProcessRuntime(
        executable, ActorType.MultiProcessing, loglevel=proc._log_config.level
    )
    executable.assign_runtime_to_all_processes(runtime)
    try:
        runtime.initialize()
    except BaseException:
        infra = runtime._messaging_infrastructure
        if infra is not None:
            infra.abort()
            infra.join(5.0)
        raise
    return runtime
