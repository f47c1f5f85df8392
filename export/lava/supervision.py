"""Running a Lava process graph without hangs or orphaned worker processes.

Lava 0.10 deadlocks when a process model raises: the runtime service waits forever for the
neighbours of the dead worker, and ``proc.stop()`` then hangs too, leaving the worker OS
processes behind.  ``run_checked`` is a ``proc.run(RunSteps(n))`` that watches the workers and
raises ``LavaRunError`` instead; ``abort_runtime`` ends every worker of a runtime.

Workers must also end when the main process is killed (SIGKILL, a ``timeout``): ``guard_children``
makes every process forked from here on die with its parent, and ``private_folder`` is a
temporary folder that a tiny watcher process removes once this process and all its forked
workers are gone, whatever killed them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import typing as ty

from lava.magma.core.run_conditions import RunSteps
from lava.magma.runtime.mgmt_token_enums import MGMT_RESPONSE, enum_equal

from i2e_neuro.workers import die_with_parent, libc_prctl


class LavaRunError(RuntimeError):
    """A Lava worker process failed (or the run timed out); the workers have been ended."""


_guard_installed = False
_forking_pid = 0
_prctl = None  # libc's prctl, looked up before any fork (no dlopen in a forked child)


def _record_parent() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    """In a freshly forked child: end (SIGKILL) when the process that forked it ends."""
    if getattr(signal.getsignal(signal.SIGTERM), "ends_main_command", False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a worker ends on SIGTERM, as usual
    die_with_parent(_forking_pid, signal.SIGKILL, _prctl, 1)


def guard_children() -> None:
    """Make every process forked from now on (Lava's workers, its shared-memory manager, ...)
    end when its parent ends, however the parent was killed.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child (fires when the forking *thread*
    ends, so fork Lava runtimes from a thread that outlives them, as ``run_checked`` does);
    elsewhere a watcher thread per child.  Idempotent; children inherit the guard.
    """
    global _guard_installed, _prctl
    if not _guard_installed:
        _prctl = libc_prctl()
        os.register_at_fork(before=_record_parent, after_in_child=_after_fork_in_child)
        _guard_installed = True


def remove_when_gone(folder: str) -> ty.Optional[subprocess.Popen]:
    """Start a watcher that removes ``folder`` once this process and all it forked are gone.

    The watcher (``sh``, in its own session so that Ctrl-C does not reach it) reads a pipe
    whose write end this process and every process it forks hold; when the last of them has
    ended, whatever killed it, the watcher reads end-of-file and removes the folder.  Close the
    returned process's ``stdin`` to let it go early.  ``None`` where there is no ``sh``.
    """
    try:
        return subprocess.Popen(
            ["sh", "-c", 'cat >/dev/null; rm -rf -- "$1"', "i2e-neuro-cleanup", folder],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return None


_mp_tempdir_watched = 0
_watchers: list = []  # kept referenced: they run until this process ends


def _watch_multiprocessing_tempdir() -> None:
    """multiprocessing's ``pymp-*`` folder (the manager's socket) goes too, even on SIGKILL."""
    global _mp_tempdir_watched
    if _mp_tempdir_watched != os.getpid():
        from multiprocessing import util

        _watchers.append(remove_when_gone(util.get_temp_dir()))
        _mp_tempdir_watched = os.getpid()


@contextlib.contextmanager
def private_folder(prefix: str) -> ty.Iterator[str]:
    """A temporary folder removed on exit, and also when this process is killed outright."""
    folder = tempfile.mkdtemp(prefix=prefix)
    watcher = remove_when_gone(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if watcher is not None:
            watcher.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watcher.wait(timeout=5)


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
    from export.lava.inprocess_runtime import is_in_process

    if is_in_process(runtime):  # threads: release every blocked port, they end by themselves
        runtime._messaging_infrastructure.abort()
        runtime._messaging_infrastructure.join(5.0)
        runtime._is_running = runtime._is_started = False
        with contextlib.suppress(Exception):
            runtime.stop()  # only joins the ended threads now
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
    try:
        runtime.stop()  # joins the (dead) actors, shuts down the shared-memory manager
    except Exception:  # noqa: BLE001 - cleanup after another error: do not mask it
        infra = getattr(runtime, "_messaging_infrastructure", None)
        smm = getattr(infra, "smm", None)
        if smm is not None:
            try:
                smm.shutdown()
            except Exception:  # noqa: BLE001
                pass


def _failure_text(actors) -> str:
    lines = []
    for actor in actors:
        exc = actor.exception
        forked = hasattr(actor, "pid")  # Lava's SystemProcess; else an in-process actor
        who = f"worker pid {actor.pid}" if forked else f"in-process actor {actor.name}"
        if exc:
            err, tb = exc
            lines.append(f"{who}: {err!r}\n{tb}")
        elif forked and not actor.is_alive():
            lines.append(f"{who} exited with code {actor.exitcode}")
    return "\n".join(lines)


def run_checked(
    proc,
    num_steps: int,
    run_cfg=None,
    *,
    timeout_s: ty.Optional[float] = None,
    poll_s: float = 0.005,
    in_process: bool = False,
) -> None:
    """``proc.run(RunSteps(num_steps), run_cfg)`` that raises instead of hanging.

    ``in_process``: when ``proc`` has no runtime yet, create Lava's runtime with every model
    inside this process (``export.lava.inprocess_runtime``: greenlets on one thread) instead of a
    forked OS process each; the same models compute the same values, with much less hand-off
    and start-up cost.  A failing model then releases the others at once, so nothing is
    polled.  A runtime created so is run the same way later, whatever ``in_process`` says.

    The run is started non-blocking and watched: when every runtime service has answered
    DONE the run is finished as usual (``proc.wait()``); when a worker process dies (a
    ProcessModel raised) or ``timeout_s`` passes, all workers are ended (``abort_runtime``)
    and ``LavaRunError`` is raised with the workers' tracebacks.  A failure while building
    the workers (``proc.run`` raising) also ends them before re-raising.  Call ``proc.stop()``
    when done, as always (harmless after a failure).
    """
    from export.lava.inprocess_runtime import create_runtime, is_in_process

    if in_process and getattr(proc, "runtime", None) is None:
        create_runtime(proc, run_cfg)  # a model that fails to build is raised from here
    if is_in_process(getattr(proc, "runtime", None)):
        return _run_in_process(proc, num_steps, timeout_s)
    guard_children()
    _watch_multiprocessing_tempdir()
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
                    f"{[port.peek() for port in ports]}):\n" + _failure_text(_actors(runtime))
                )
            actors = _actors(runtime)
            if any((not a.is_alive()) or a.exception for a in actors):
                # Give the other workers' tracebacks a moment to arrive.
                time.sleep(0.05)
                raise LavaRunError("Lava worker process failed:\n" + _failure_text(actors))
            if deadline is not None and time.monotonic() > deadline:
                raise LavaRunError(f"Lava run did not finish {num_steps} steps in {timeout_s} s")
            time.sleep(poll_s)
    except BaseException:
        abort_runtime(proc)
        raise


def _run_in_process(proc, num_steps: int, timeout_s: ty.Optional[float]) -> None:
    from export.lava.inprocess_runtime import ChannelClosed

    infra = proc.runtime._messaging_infrastructure
    timer = None
    if timeout_s is not None:
        timer = threading.Timer(timeout_s, infra.abort)
        timer.daemon = True
        timer.start()
    try:
        proc.run(condition=RunSteps(num_steps=num_steps, blocking=True))
    except BaseException as e:
        failed = _failure_text(infra.actors)
        abort_runtime(proc)
        if failed:
            raise LavaRunError("Lava model failed:\n" + failed) from e
        if isinstance(e, ChannelClosed) and timer is not None and not timer.is_alive():
            raise LavaRunError(f"Lava run did not finish {num_steps} steps in {timeout_s} s") from e
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _is_normal_answer(msg) -> bool:
    return any(
        bool(enum_equal(msg, ok))
        for ok in (MGMT_RESPONSE.DONE, MGMT_RESPONSE.REQ_PAUSE, MGMT_RESPONSE.REQ_STOP)
    )
