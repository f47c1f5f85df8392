"""A simulation's shards belong to one network by content, not only by path; the temp folder of
``simulate --workers`` never outlives its command for long (issue 25, cases 5 and 7). Lava-free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from export.simulation import TEMP_PREFIX, SimulationJob, file_sha256, merge_counts
from i2e_neuro.workers import OWNER_LOCK, owned_temp_folder, reclaim_temp_folders
from tests.export.shard_parts import shard_part

ROOT = Path(__file__).resolve().parents[2]


def _part(shard: int, shards: int, sha: str, **run) -> dict:
    return shard_part(
        shard, shards, run={"model": "net.h5", "model_sha256": sha, "samples": 4, **run}
    )


def test_the_shard_identity_holds_the_content_of_the_network_file(tmp_path):
    net = tmp_path / "net.h5"
    net.write_bytes(b"first network")
    first = SimulationJob(model=str(net)).identity(4, file_sha256(net))
    net.write_bytes(b"another network, same path")
    second = SimulationJob(model=str(net)).identity(4, file_sha256(net))
    assert first["model"] == second["model"] and first != second
    assert first["model_sha256"] == file_sha256_of(b"first network")


def file_sha256_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_shards_of_two_networks_at_one_path_are_not_merged(order):
    parts = [_part(0, 2, "a" * 64), _part(1, 2, "b" * 64)]
    with pytest.raises(ValueError, match="computed by another network") as e:
        merge_counts([parts[i] for i in order])
    assert "net.h5" in str(e.value) and "changed between the shards" in str(e.value)
    assert merge_counts([_part(0, 2, "a" * 64), _part(1, 2, "a" * 64)])["samples"] == 4


def test_other_run_differences_are_named(tmp_path):
    with pytest.raises(ValueError, match="limit 3 != 4"):
        merge_counts([_part(0, 2, "a", limit=4), _part(1, 2, "a", limit=3)])


HOLD = """
import sys, time
from i2e_neuro.workers import owned_temp_folder
with owned_temp_folder(sys.argv[1]) as folder:
    (folder / "shard-0.log").write_text("log")
    print(folder, flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock and SIGKILL")
def test_the_temp_folder_of_a_killed_run_is_reclaimed_by_the_next(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}

    def start():
        p = subprocess.Popen(
            [sys.executable, "-c", HOLD, TEMP_PREFIX], env=env, stdout=subprocess.PIPE, text=True
        )
        return p, Path(p.stdout.readline().strip())

    killed, left = start()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (left / "shard-0.log").is_file() and (left / OWNER_LOCK).exists()  # left behind
    running, live = start()
    try:
        assert not left.exists()  # the next run reclaimed it when it started
        assert live.is_dir()
        assert reclaim_temp_folders(TEMP_PREFIX, str(tmp_path)) == []  # a live one is kept
        assert live.is_dir()
    finally:
        running.send_signal(signal.SIGTERM)
        running.wait()


def test_an_owned_temp_folder_goes_when_its_block_ends(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with owned_temp_folder(TEMP_PREFIX) as folder:
        assert folder.parent == tmp_path and folder.name.startswith(TEMP_PREFIX)
    assert not folder.exists() and list(tmp_path.iterdir()) == []
