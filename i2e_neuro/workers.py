"""Child processes that never outlive the process that started them, and a command sharded over
several of them (``simulate --workers``). Lava's forked workers use :func:`die_with_parent` too
(``export.lava.supervision``)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import typing as ty
from pathlib import Path

#: Environment variable naming the parent of a worker started by :func:`run_children`.
PARENT_ENV = "I2E_NEURO_PARENT"
PR_SET_PDEATHSIG = 1


def libc_prctl() -> ty.Optional[ty.Callable]:
    """libc's ``prctl`` (Linux), looked up now: not after a fork, where dlopen may deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(
    parent: int, sig: int, prctl: ty.Optional[ty.Callable], exit_code: int, grace_s=None
) -> None:
    """End this process when ``parent`` ends.

    ``prctl(PR_SET_PDEATHSIG, sig)`` where there is one; exit at once (``exit_code``) if the
    parent is already gone. A watch thread covers the rest: without ``grace_s`` it exits when
    the parent is gone (only where prctl is missing); with ``grace_s`` it always runs, sends
    ``sig`` itself when the parent is gone (a signal can be lost while the child forks) and
    exits ``grace_s`` later if the handler of ``sig`` has not ended the process by then.
    """
    armed = prctl is not None and prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    if os.getppid() != parent:
        os._exit(exit_code)
    if armed and grace_s is None:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        if grace_s is not None:
            os.kill(os.getpid(), sig)
            time.sleep(grace_s)
        os._exit(exit_code)

    threading.Thread(target=watch, name="i2e-neuro-parent-watch", daemon=True).start()


def arm_worker(grace_s: float = 10.0) -> None:
    """In a worker of :func:`run_children`: SIGTERM when the parent dies (the command's clean
    path, which unwinds like Ctrl-C), a forced exit ``grace_s`` later; nothing elsewhere."""
    parent = os.environ.get(PARENT_ENV)
    if parent is not None:
        die_with_parent(int(parent), signal.SIGTERM, libc_prctl(), 130, grace_s)


def end(children: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every child still running, SIGKILL those alive after ``grace`` seconds."""
    for c in children:
        if c.poll() is None:
            c.terminate()
    deadline = time.monotonic() + grace
    for c in children:
        try:
            c.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def run_children(commands: list[list[str]], folder: Path, what: str) -> None:
    """Run ``commands`` in parallel, each logging to ``folder/shard-I.log``, until all succeed;
    stop the others at the first failure and raise RuntimeError naming it (``what``, e.g.
    ``--workers``) with its last ``error:`` line (or its log's tail). Children get
    :data:`PARENT_ENV` (see :func:`arm_worker`), the package on ``PYTHONPATH``, no torchrun
    rank, and an equal share of the cores for their threads; none outlives this call."""
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    for key in ("RANK", "WORLD_SIZE"):
        env.pop(key, None)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(commands))))
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    children: list[subprocess.Popen] = []
    logs = []
    try:
        for i, cmd in enumerate(commands):
            log = open(Path(folder) / f"shard-{i}.log", "w+b")  # noqa: SIM115 - closed below
            logs.append(log)
            children.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            )
        while any(c.poll() is None for c in children):
            if any(c.poll() not in (None, 0) for c in children):
                break
            time.sleep(0.1)
        failed = [i for i, c in enumerate(children) if c.poll() not in (None, 0)]
        if failed:
            i = failed[0]
            logs[i].seek(0)
            tail = logs[i].read().decode(errors="replace").strip().splitlines()[-15:]
            errors = [line for line in tail if line.startswith("error:")]
            raise RuntimeError(
                f"{what}: shard {i}/{len(commands)} failed (exit {children[i].returncode}): "
                + (errors[-1][len("error: ") :] if errors else "\n".join(tail))
            )
    finally:
        end(children)
        for log in logs:
            log.close()
