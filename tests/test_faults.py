"""Faults from outside: the main process killed (SIGTERM, SIGKILL) while Lava runs.

Each case starts the real command in a subprocess tagged with a unique environment variable,
kills its main process once the Lava workers are up, and then looks for any process still
carrying the tag and for temporary folders or files it made.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

# Starts Lava runtimes (OS processes per process model): left out of `make test-fast`.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Path:
    """A tiny random network for 16x16 digits, exported to HDF5 (no training needed)."""
    import torch

    from export.description import from_deploy
    from export.hdf5 import save_hdf5
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(0)
    model = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 16, 16), 10)), 0)
    model.eval().fold()
    desc = from_deploy(model.deploy(i2e={"ratio": 0.1, "order": "efghabcd"}))
    path = tmp_path_factory.mktemp("net") / "net.h5"
    save_hdf5(desc, path)
    return path


def tagged(tag: str) -> list[int]:
    """Processes (other than this one) whose environment carries ``tag``."""
    found = []
    needle = f"I2E_FAULT_TAG={tag}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    with open(f"/proc/{pid}/stat") as s:
                        if s.read().split(")")[-1].split()[0] != "Z":
                            found.append(int(pid))
        except OSError:
            pass
    return found


def lava_runs(processes: int, stdout: str) -> bool:
    """Lava runs inside the main process: it and the watcher of the monitors' folder."""
    return processes >= 2


def lava_workers_run(processes: int, stdout: str) -> bool:
    return processes >= 5  # the main process and Lava's manager and forked workers


def kill_when(args: list[str], sig: int, cwd: Path, ready=lava_runs) -> tuple:
    """Start ``i2e-neuro ARGS`` in ``cwd``, wait until ``ready(processes, stdout)``, then send
    ``sig`` to its main process.

    Returns (exit code, stderr, processes left 5 s later, temporary files left: anything in
    its TMPDIR and hidden ``.*tmp*`` files under ``cwd``).
    """
    tag = uuid.uuid4().hex
    tmp = cwd / "tmp"
    tmp.mkdir()
    env = {**os.environ, "I2E_FAULT_TAG": tag, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    err = tempfile.TemporaryFile()  # not pipes: orphaned workers would hold them open
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "i2e_neuro.cli", *args],
        cwd=cwd,
        env=env,
        stdout=out,
        stderr=err,
        start_new_session=True,  # Ctrl-C of the test run is not this case
    )

    def text(f) -> str:
        f.seek(0)
        return f.read().decode(errors="replace")

    try:
        deadline = time.monotonic() + 240
        while not ready(len(tagged(tag)), text(out)):
            assert proc.poll() is None, text(err)
            assert time.monotonic() < deadline, "the command never reached the point to kill"
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=60)
        deadline = time.monotonic() + 5
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        files = [p for p in tmp.rglob("*")] + [p for p in cwd.rglob(".*tmp*")]
        return code, text(err), tagged(tag), files
    finally:
        for pid in tagged(tag):  # never leave anything behind, even when the test fails
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
        out.close()


CASES = {
    "simulate": (lambda net: ["simulate", "--model", str(net), "--limit", "360"], lava_runs),
    "energy": (lambda net: ["energy", "--model", str(net), "--limit", "360"], lava_runs),
    # Lava's own runtime: one forked OS process per model, all must die with the command.
    "simulate-lava-processes": (
        lambda net: ["simulate", "--model", str(net), "--limit", "360", "--lava-processes"],
        lava_workers_run,
    ),
    # Training comes before Lava in the demo: killed while it trains (forked data loaders).
    "demo": (
        lambda net: ["demo", "--out", "run", "--epochs", "1", "--qat-epochs", "1", "--limit", "8"],
        lambda processes, stdout: "2/5" in stdout,
    ),
}


@pytest.mark.parametrize("command", sorted(CASES))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_killed_main_process_leaves_no_workers_and_no_temp_folder(net, tmp_path, command, sig):
    args, ready = CASES[command]
    code, err, left, files = kill_when(args(net), sig, tmp_path, ready)
    assert left == [], f"processes left after {sig.name}: {left}\n{err}"
    assert files == [], f"temporary files left after {sig.name}: {files}"
    if sig == signal.SIGTERM:
        assert code == 143 and "terminated" in err and "Traceback" not in err, err
