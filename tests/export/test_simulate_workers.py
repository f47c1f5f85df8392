"""``i2e-neuro simulate`` over several Lava runtimes: ``--workers N``, ``--shard I/N`` (or
RANK/WORLD_SIZE) and ``--merge DIR`` report exactly what one runtime over all samples reports,
and no worker process outlives the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from export.description import from_deploy
from export.hdf5 import save_hdf5
from export.simulation import SHARD_KIND, TIMING_FIELDS, merge_counts
from i2e_neuro.cli import main
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.spec import build_spec
from i2e_neuro.shards import shard_bounds
from tests.export.shard_parts import shard_part

ROOT = Path(__file__).resolve().parents[2]
LIMIT, CHECK = "5", "3"  # 5 samples: shards of 2 and 3; the checked samples span both shards


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small MS-ResNet with random weights (BatchNorm folded), on the digits' input shape."""
    torch.manual_seed(0)
    net = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 32, 32), 10)))
    net.eval().fold()
    path = tmp_path_factory.mktemp("net") / "tiny.h5"
    save_hdf5(from_deploy(net.deploy(i2e={"ratio": 0.12, "order": "efghabcd"})), path)
    return path


def _summary(capsys, argv: list[str]) -> dict:
    code = main(["simulate", *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    return {k: v for k, v in summary.items() if k not in TIMING_FIELDS}


def _base(model: Path) -> list[str]:
    return ["--model", str(model), "--limit", LIMIT, "--check", CHECK, "--json"]


@pytest.fixture(scope="module")
def single(model) -> dict:
    """The one-runtime report (captured by hand: capsys is function-scoped)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["simulate", *_base(model)]) == 0
    summary = json.loads(buf.getvalue().strip().splitlines()[-1])
    # The comparison means something: spikes in every layer, checked spikes, SynOps counted.
    assert summary["samples"] == 5 and summary["checked_samples"] == 3
    assert summary["spike_mismatches"] == 0 and summary["agreement"] == 1.0
    assert all(row["spikes"] > 0 and row["synops"] > 0 for row in summary["layers"])
    assert summary["synops_per_sample"] > summary["input_synops_per_sample"] > 0
    return {k: v for k, v in summary.items() if k not in TIMING_FIELDS}


pytestmark = pytest.mark.slow  # Lava runtimes (one OS process per process model)


def test_workers_report_equals_one_runtime(model, single, capsys):
    assert _summary(capsys, [*_base(model), "--workers", "2"]) == single


def test_shards_merged_equal_one_runtime(model, single, capsys, tmp_path, monkeypatch):
    folder = tmp_path / "shards"
    assert main(["simulate", *_base(model), "--shard", "1/2", "--shard-dir", str(folder)]) == 0
    monkeypatch.setenv("RANK", "0")  # torchrun's variables pick the other shard
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["simulate", *_base(model), "--shard-dir", str(folder)]) == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["shard-00000-of-00002.json", "shard-00001-of-00002.json"]  # nothing else
    part = json.loads((folder / files[1]).read_text())
    assert part["kind"] == SHARD_KIND and (part["start"], part["stop"]) == shard_bounds(5, 1, 2)
    capsys.readouterr()
    assert _summary(capsys, ["--merge", str(folder), "--json"]) == single


def test_merge_refuses_shards_of_a_network_replaced_between_them(model, capsys, tmp_path):
    """Case 5 of issue 25: the file at --model is replaced between two shards."""
    import shutil

    net, folder = tmp_path / "net.h5", tmp_path / "shards"
    shutil.copy(model, net)
    args = ["simulate", "--model", str(net), "--limit", "2", "--shard-dir", str(folder)]
    assert main([*args, "--shard", "0/2"]) == 0
    torch.manual_seed(1)  # another network, same shape, same path
    other = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 32, 32), 10)))
    other.eval().fold()
    save_hdf5(from_deploy(other.deploy(i2e={"ratio": 0.12, "order": "efghabcd"})), net)
    assert main([*args, "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main(["simulate", "--merge", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "computed by another network" in err and str(net) in err, err


def test_merge_refuses_incomplete_or_mixed_shards(tmp_path, capsys):
    merged = merge_counts([shard_part(1, 2), shard_part(0, 2)])
    assert merged["samples"] == 4 and merged["spikes"] == {"g": 10}
    assert merged["synops"] == {"i2e input": 14, "g": 6} and merged["correct"] == 2
    with pytest.raises(ValueError, match="missing \\[1\\]"):
        merge_counts([shard_part(0, 2)])
    with pytest.raises(ValueError, match="exactly once"):
        merge_counts([shard_part(0, 2), shard_part(0, 2), shard_part(1, 2)])
    with pytest.raises(ValueError, match="another run"):
        merge_counts([shard_part(0, 2), shard_part(1, 2, run={"model": "other.h5", "samples": 4})])
    (tmp_path / "shard-00000-of-00002.json").write_text(json.dumps(shard_part(0, 2)))
    assert main(["simulate", "--merge", str(tmp_path)]) == 2
    assert "missing [1]" in capsys.readouterr().err
    assert main(["simulate", "--merge", str(tmp_path / "none")]) == 2
    assert main(["simulate", "--model", "m.h5", "--shard", "2/2"]) == 2
    assert "0 <= I < N" in capsys.readouterr().err


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc/PID/stat`` field 22), None when it is gone or a
    zombie; with the pid it names one process even if the pid is reused later."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_workers_do_not_outlive_a_killed_command(model):
    from export.simulation import TEMP_PREFIX
    from i2e_neuro.workers import reclaim_temp_folders

    tmp = model.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    cmd = [sys.executable, "-m", "i2e_neuro.cli", "simulate", "--model", str(model)]
    parent = subprocess.Popen(
        [*cmd, "--limit", "360", "--workers", "2"],  # long enough to be caught running
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Wait until both shards run their Lava runtimes: the in-process runtime's hub and
        # compute threads (no OS process per model any more).
        deadline = time.monotonic() + 240
        seen: dict[int, str | None] = {}
        running: set[int] = set()
        while time.monotonic() < deadline and len(running) < 2:
            assert parent.poll() is None, "the command ended before both shards were seen"
            for pid in _descendants(parent.pid) - seen.keys():
                seen[pid] = _start_time(pid)
            running |= {pid for pid in seen if _threads(pid) >= 4}
            time.sleep(0.1)
        assert len(running) >= 2, f"shards did not start: {sorted(seen)}"
        parent.send_signal(signal.SIGKILL)  # no chance to clean up: the children must notice
        parent.wait()

        def left() -> list[int]:
            return [p for p, t in seen.items() if t is not None and _start_time(p) == t]

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and left():
            time.sleep(0.5)
        assert not left(), f"processes left behind: {left()}"
        # its temp folder stays after a SIGKILL; the next run's start reclaims it
        (stale,) = tmp.glob(f"{TEMP_PREFIX}*")
        assert reclaim_temp_folders(TEMP_PREFIX, str(tmp)) == [stale] and not stale.exists()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
