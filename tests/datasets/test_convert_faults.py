"""``i2e-neuro convert`` against faults: outputs that are inputs, damaged outputs, two runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from i2e_neuro.commands import convert as cmd

SAMPLES = Path(__file__).parents[2] / "i2e_neuro" / "data" / "samples"


def run(*argv) -> int:
    return cmd.main([str(a) for a in argv])


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(SAMPLES.glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_in_an_input_folder_is_refused(photos, capsys, where):
    before = sorted(p.name for p in photos.iterdir())
    out = photos if where == "same" else photos / "events"
    assert run(photos, "--out", out, "--pictures") == 2
    err = capsys.readouterr().err
    assert "--out" in err and "input" in err, err
    assert sorted(p.name for p in photos.iterdir()) == before


def flip_middle_bytes(path: Path, member: str, count: int = 8) -> None:
    """Flip ``count`` bytes in the middle of zip member ``member``'s stored data."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    off = info.header_offset
    name_len = int.from_bytes(data[off + 26 : off + 28], "little")
    extra_len = int.from_bytes(data[off + 28 : off + 30], "little")
    start = off + 30 + name_len + extra_len + info.compress_size // 2
    for k in range(start, start + count):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_event_files_are_refused_naming_the_member(tmp_path):
    import h5py
    import numpy as np

    from i2e_neuro.datasets.formats import load_events, read_header, save_events

    events = np.random.default_rng(0).random((8, 3, 2, 32, 32)) < 0.3
    npz = save_events(tmp_path / "a.npz", events, fmt="dense")
    flip_middle_bytes(npz, "events.npy")
    for read in (load_events, read_header):
        with pytest.raises(ValueError, match=r"a\.npz.*events\.npy"):
            read(npz)
    h5 = save_events(tmp_path / "b.h5", events, fmt="packed")
    with h5py.File(h5, "r+") as f:
        bits = f["bits"][()]
        bits.flat[100] ^= 0xFF
        f["bits"][...] = bits
    for read in (load_events, read_header):
        with pytest.raises(ValueError, match=r"b\.h5.*damaged.*'bits'"):
            read(h5)


def test_a_damaged_output_is_not_taken_as_done(tmp_path, capsys):
    from i2e_neuro.datasets.formats import load_events

    out = tmp_path / "out"
    args = ("--dataset", "digits", "--split", "test", "--limit", 40, "--chunk-size", 20)
    assert run(*args, "-o", out) == 0
    good = load_events(out / "chunk_00001.npz").events
    flip_middle_bytes(out / "chunk_00001.npz", "bits.npy")
    capsys.readouterr()
    assert run(*args, "-o", out) == 0
    assert np_equal(load_events(out / "chunk_00001.npz").events, good)  # rewritten


def np_equal(a, b) -> bool:
    import numpy as np

    return bool(np.array_equal(a, b))


def test_two_conversions_into_one_folder(tmp_path, monkeypatch, capsys):
    """A conversion with other parameters is refused while one runs; its own shards are not."""
    import json
    import threading

    from i2e_neuro.datasets.converter import Converter

    started, release = threading.Event(), threading.Event()
    original = Converter.convert

    def held(self, unit):  # the first run pauses inside its first file
        if threading.current_thread() is not threading.main_thread() and not started.is_set():
            started.set()
            assert release.wait(60)
        return original(self, unit)

    monkeypatch.setattr(Converter, "convert", held)
    out = tmp_path / "out"
    base = ("--dataset", "digits", "--split", "test", "--limit", 40, "--chunk-size", 10)
    first: list[int] = []
    thread = threading.Thread(target=lambda: first.append(run(*base, "--shard", "0/2", "-o", out)))
    thread.start()
    try:
        assert started.wait(60)
        capsys.readouterr()
        assert run(*base, "--ratio", 0.2, "-o", out) == 2
        err = capsys.readouterr().err
        assert "another conversion" in err and f"pid {os.getpid()}" in err, err
        assert run(*base, "--shard", "1/2", "-o", out) == 0  # a shard of the same conversion
    finally:
        release.set()
        thread.join(60)
    assert first == [0]
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["params"]["ratio"] != 0.2
    assert not (out / ".convert.lock").exists()  # the last run of the conversion removes it
