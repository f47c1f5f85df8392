"""Faults around export's files: disk limits, outputs that are inputs, damaged checkpoints."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export.description import from_deploy
from export.hdf5 import load_hdf5, save_hdf5
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.spec import build_spec

ROOT = Path(__file__).resolve().parents[2]
I2E = {"ratio": 0.1, "order": "efghabcd"}


@pytest.fixture(scope="module")
def deploy() -> dict:
    torch.manual_seed(0)
    model = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 16, 16), 10)), 0)
    model.eval().fold()
    return model.deploy(i2e=I2E)


@pytest.fixture
def checkpoint(tmp_path, deploy) -> Path:
    path = tmp_path / "victim.pt"
    torch.save({"deploy": deploy}, path)
    return path


def cli(*args: str, cwd: Path, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """``i2e-neuro ARGS`` in a subprocess, optionally under ``ulimit -f`` (bytes)."""

    def limit() -> None:
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "i2e_neuro.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )


def hidden_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


def test_export_to_a_full_disk_is_an_error_naming_the_file(tmp_path, checkpoint, deploy):
    out = tmp_path / "x.h5"
    save_hdf5(from_deploy(deploy), out)
    before = out.read_bytes()
    done = cli("export", str(checkpoint), "--out", str(out), cwd=tmp_path, file_limit=4096)
    assert done.returncode == 2, (done.returncode, done.stderr)  # 139 (SIGSEGV) before
    assert "x.h5" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "File too large" in done.stderr
    assert out.read_bytes() == before  # the earlier file is intact
    assert hidden_temporaries(tmp_path) == []
    load_hdf5(out)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_event_files_on_a_full_disk_fail_cleanly(tmp_path, suffix):
    script = (
        "import numpy as np\n"
        "from i2e_neuro.datasets.formats import save_events\n"
        "rng = np.random.default_rng(0)\n"
        f"save_events('ev{suffix}', rng.random((8, 4, 2, 64, 64)) < 0.5, fmt='dense')\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert f"ev{suffix}" in done.stderr and "File too large" in done.stderr, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_outputs_that_are_inputs_are_refused(tmp_path, checkpoint):
    before = checkpoint.read_bytes()
    done = cli("export", str(checkpoint), "--out", str(checkpoint), cwd=tmp_path)
    assert done.returncode == 2 and "victim.pt" in done.stderr and "input" in done.stderr
    link = tmp_path / "link.h5"
    link.symlink_to(checkpoint)
    done = cli("export", str(checkpoint), "--out", str(link), cwd=tmp_path)
    assert done.returncode == 2 and "refusing to overwrite" in done.stderr, done.stderr
    assert checkpoint.read_bytes() == before

    net = tmp_path / "v.h5"
    assert cli("export", str(checkpoint), "--out", str(net), cwd=tmp_path).returncode == 0
    before = net.read_bytes()
    done = cli("energy", "--model", str(net), "--chart", str(net), cwd=tmp_path)
    assert done.returncode == 2 and "--chart" in done.stderr and "input" in done.stderr
    assert net.read_bytes() == before


def test_refuse_overwriting_inputs_names_both_arguments(tmp_path):
    from i2e_neuro.atomic import refuse_overwriting_inputs

    (tmp_path / "images").mkdir()
    (tmp_path / "a.pt").write_bytes(b"x")
    refuse_overwriting_inputs([("--out", tmp_path / "b.pt")], [("--init", tmp_path / "a.pt")])
    with pytest.raises(ValueError, match=r"--out .*a\.pt.*same file or folder as --init"):
        refuse_overwriting_inputs(
            [("--out", tmp_path / "x" / ".." / "a.pt")], [("--init", tmp_path / "a.pt")]
        )
    with pytest.raises(ValueError, match="inside the input folder --root"):
        refuse_overwriting_inputs(
            [("--out", tmp_path / "images" / "events")], [("--root", tmp_path / "images")]
        )
    # a dataset root read by fixed names: only the folder itself is refused
    roots = [("--root", tmp_path / "images")]
    refuse_overwriting_inputs([("--out", tmp_path / "images" / "events")], [], roots)
    with pytest.raises(ValueError, match="same file or folder as --root"):
        refuse_overwriting_inputs([("--out", tmp_path / "images")], [], roots)
