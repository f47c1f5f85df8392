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


def flip_bytes_in_largest_member(path: Path, count: int = 8) -> str:
    """Flip ``count`` bytes in the middle of the largest stored member of a zip; its name."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    for k in range(start, start + count):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


def test_a_damaged_checkpoint_is_refused_naming_the_member(tmp_path, checkpoint):
    member = flip_bytes_in_largest_member(checkpoint)
    done = cli("export", str(checkpoint), "--out", str(tmp_path / "x.h5"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout  # exported wrong weights with exit 0 before
    assert "victim.pt" in done.stderr and member in done.stderr and "CRC" in done.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"just some text\n", "not a PyTorch checkpoint"),
        (b"\x89HDF\r\n\x1a\n" + bytes(64), "not a PyTorch checkpoint"),
    ],
    ids=["empty", "text", "hdf5"],
)
def test_files_that_are_not_checkpoints_are_named_plainly(tmp_path, content, message):
    from export.description import from_checkpoint
    from i2e_neuro.train.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    for load, error in ((from_checkpoint, ValueError), (load_checkpoint, CheckpointError)):
        with pytest.raises(error) as info:
            load(path)
        text = str(info.value)
        assert "bad.pt" in text and message in text and "weights_only" not in text, text


def test_pickles_of_other_objects_never_suggest_weights_only_false(tmp_path):
    import argparse

    from export.description import from_checkpoint

    path = tmp_path / "obj.pt"
    torch.save({"deploy": argparse.Namespace(a=1)}, path)  # an object: not a plain value
    with pytest.raises(ValueError) as info:
        from_checkpoint(path)
    assert "obj.pt" in str(info.value) and "weights_only" not in str(info.value)


def test_bit_rot_in_a_network_file_is_detected(tmp_path, deploy):
    import h5py

    path = tmp_path / "net.h5"
    save_hdf5(from_deploy(deploy), path)
    with h5py.File(path, "r+") as f:  # the netx copy of the first conv's weights
        w = f["layer/1/weight"][()]
        w.flat[0] = -w.flat[0] - 1
        f["layer/1/weight"][...] = w
    with pytest.raises(ValueError, match=r"net\.h5: damaged: dataset 'layer/1/weight'"):
        load_hdf5(path)
