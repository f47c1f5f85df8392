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


def small_images(folder: Path, n: int = 3, size: int = 40) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        path = folder / f"img{k}.png"
        Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths


def test_a_decompression_bomb_is_listed_and_the_rest_converted(tmp_path, monkeypatch, capsys):
    import json

    import numpy as np
    from PIL import Image

    folder = tmp_path / "in"
    small_images(folder)
    Image.fromarray(np.zeros((300, 300, 3), dtype="uint8")).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # 300x300 is over twice that
    out = tmp_path / "out"
    code = run(folder, "--out", out)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bomb.png" in err and "decompression bomb" in err, err
    assert code != 0
    index = json.loads((out / "index.json").read_text())
    assert sorted(e["file"] for e in index["files"]) == ["img0.npz", "img1.npz", "img2.npz"]
    assert [f["name"] for f in index["failures"]] == ["bomb"]


def test_pictures_of_files_converted_before_an_interruption_are_made_on_rerun(
    tmp_path, monkeypatch
):
    from i2e_neuro.datasets.converter import Converter

    small_images(tmp_path / "in")
    out = tmp_path / "out"
    original = Converter._pictures

    def interrupted(self, *args):
        raise KeyboardInterrupt  # Ctrl-C after the first event file, before its pictures

    monkeypatch.setattr(Converter, "_pictures", interrupted)
    assert run(tmp_path / "in", "--out", out, "--pictures") == 130
    assert (out / "img0.npz").is_file() and not (out / "pictures" / "img0.png").exists()
    monkeypatch.setattr(Converter, "_pictures", original)
    assert run(tmp_path / "in", "--out", out, "--pictures") == 0
    for k in range(3):
        assert (out / "pictures" / f"img{k}.png").is_file(), k
        assert (out / "pictures" / f"img{k}.gif").is_file(), k


def test_temporaries_left_by_a_killed_run_are_removed_by_the_next(tmp_path):
    small_images(tmp_path / "in", n=1)
    out = tmp_path / "out"
    (out / "pictures").mkdir(parents=True)
    stale = [out / ".img0.npz.abc123.tmp.npz", out / "pictures" / ".img0.png.x1.tmp.png"]
    for p in stale:
        p.write_bytes(b"half written")
    assert run(tmp_path / "in", "--out", out) == 0
    assert not any(p.exists() for p in stale)
    assert not any(".tmp" in p.name for p in out.rglob("*"))


def test_a_size_beyond_memory_is_refused_with_an_estimate(tmp_path, capsys):
    small_images(tmp_path / "in", n=1)
    assert run(tmp_path / "in", "--out", tmp_path / "out", "--size", 100000, 100000) == 2
    err = capsys.readouterr().err
    assert "--size 100000 100000" in err and "GiB" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_events_are_counted_without_widening_them():
    import tracemalloc

    import numpy as np
    import torch

    from i2e_neuro.datasets.converter import count_events

    events = torch.from_numpy(np.random.default_rng(0).random((8, 2, 2, 256, 256)) < 0.3)
    tracemalloc.start()
    counts = count_events(events)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert counts.tolist() == events.sum(dim=(0, 2, 3, 4)).tolist()
    assert peak < events.numel()  # an int64 copy would be 8x the bool events


def test_a_dataset_root_of_random_bytes_is_a_one_line_error(tmp_path, capsys):
    import os as _os

    from i2e_neuro.commands import train

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (raw / name).write_bytes(_os.urandom(4096))
    assert run("--dataset", "mnist", "--root", tmp_path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "mnist" in err and "cannot read" in err and "Traceback" not in err, err
    code = train.main(
        ["--dataset", "mnist", "--root", str(tmp_path), "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot read" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
