"""Event formats: lossless round trips through .npz and HDF5, and clear errors for bad files."""

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from i2e_neuro import i2e
from i2e_neuro.datasets.formats import (
    EVENT_DTYPE,
    FORMATS,
    from_event_list,
    load_events,
    pack,
    read_header,
    save_events,
    to_event_list,
    unpack,
)
from i2e_neuro.i2e.images import load_image

SAMPLES = Path(__file__).parents[2] / "i2e_neuro" / "data" / "samples"


def random_events(shape=(8, 3, 2, 11, 13), rate=0.1, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < rate


def photo_events() -> torch.Tensor:
    img = torch.from_numpy(load_image(SAMPLES / "coffee.jpg")).permute(2, 0, 1)[None, :, :64, :72]
    return i2e(img.expand(2, -1, -1, -1).contiguous(), ratio=0.07)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".hdf5"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_lossless(tmp_path, fmt, suffix):
    for k, events in enumerate(
        [random_events(), random_events((2, 1, 2, 1, 1), 0.5, 1), photo_events()]
    ):
        labels = np.arange(events.shape[1]) * 3 - 1
        meta = {"ratio": 0.07, "names": [f"s{i}" for i in range(events.shape[1])]}
        path = save_events(tmp_path / f"e{k}{suffix}", events, labels=labels, fmt=fmt, meta=meta)
        batch = load_events(path)
        expected = events.numpy() if isinstance(events, torch.Tensor) else events
        assert batch.events.dtype == np.bool_ and batch.events.shape == expected.shape
        assert np.array_equal(batch.events, expected)
        assert np.array_equal(batch.labels, labels)
        assert batch.meta == meta
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_zero_and_all_one_batches(tmp_path, fmt):
    for value in (False, True):
        events = np.full((3, 2, 2, 4, 9), value)
        batch = load_events(save_events(tmp_path / f"v{value}.npz", events, fmt=fmt))
        assert np.array_equal(batch.events, events) and batch.labels is None


@pytest.mark.parametrize("fmt", ["packed", "dense"])
def test_empty_batch_round_trip(tmp_path, fmt):
    events = np.zeros((8, 0, 2, 4, 5), bool)
    assert (
        load_events(save_events(tmp_path / "empty.npz", events, fmt=fmt)).events.shape
        == events.shape
    )


def test_empty_batch_round_trip_list(tmp_path):
    events = np.zeros((8, 0, 2, 4, 5), bool)
    assert (
        load_events(save_events(tmp_path / "empty.npz", events, fmt="list")).events.shape
        == events.shape
    )


def test_pack_and_event_list_helpers():
    dense = random_events((4, 2, 2, 7, 17), 0.3, 2)
    packed = pack(dense)
    assert packed.bits.shape == (4, 2, 2, 7, 3) and packed.shape == dense.shape
    assert np.array_equal(unpack(packed), dense)
    sample = dense[:, 1]
    ev = to_event_list(sample)
    assert ev.dtype == EVENT_DTYPE and len(ev) == sample.sum()
    t, c, y, x = np.nonzero(sample)
    assert np.array_equal(ev["t"], t) and np.array_equal(ev["p"], c == 0)
    assert np.array_equal(ev["x"], x) and np.array_equal(ev["y"], y)
    assert np.array_equal(from_event_list(ev, sample.shape), sample)


def test_packed_is_smaller_than_dense(tmp_path):
    events = photo_events()
    sizes = {
        fmt: save_events(tmp_path / f"{fmt}.npz", events, fmt=fmt).stat().st_size for fmt in FORMATS
    }
    raw = events.numel()
    assert sizes["packed"] < raw / 8 + 4096


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_events(tmp_path / "nothere.npz")


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_garbage_files_name_the_file(tmp_path, suffix):
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(b"this is not an event file at all" * 10)
    with pytest.raises(ValueError, match=f"garbage{suffix}.*not a valid i2e-neuro event file"):
        load_events(garbage)


def truncated_and_empty(tmp_path: Path, suffix: str) -> list[Path]:
    data = save_events(tmp_path / f"good{suffix}", random_events(), fmt="packed").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    return [tmp_path / f"cut{suffix}", tmp_path / f"empty{suffix}"]


def test_truncated_and_empty_h5_name_the_file(tmp_path):
    for path in truncated_and_empty(tmp_path, ".h5"):
        with pytest.raises(ValueError, match=path.name):
            load_events(path)


@pytest.mark.parametrize("which", ["cut", "empty"])
def test_truncated_and_empty_npz_name_the_file(tmp_path, which):
    path = tmp_path / f"{which}.npz"
    truncated_and_empty(tmp_path, ".npz")
    with pytest.raises(ValueError, match=path.name):
        load_events(path)


def test_foreign_files_name_the_file(tmp_path):
    foreign_npz = tmp_path / "foreign.npz"
    np.savez(foreign_npz, x=np.arange(3))
    with pytest.raises(ValueError, match="foreign.npz"):
        load_events(foreign_npz)
    foreign_h5 = tmp_path / "foreign.h5"
    with h5py.File(foreign_h5, "w") as f:
        f.create_dataset("data", data=np.arange(3))
    with pytest.raises(ValueError, match="foreign.h5"):
        load_events(foreign_h5)
    unknown_format = tmp_path / "unknown.npz"
    np.savez(
        unknown_format, header=np.asarray('{"format": "bitmap"}'), shape=np.array([1, 1, 2, 1, 1])
    )
    with pytest.raises(ValueError, match="unknown.npz.*bitmap"):
        load_events(unknown_format)
    wrong_shape = tmp_path / "wrong_shape.npz"
    save_events(wrong_shape, random_events(), fmt="dense")
    with np.load(wrong_shape) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["shape"] = np.array([8, 3, 2, 11, 14])
    np.savez(wrong_shape, **arrays)
    with pytest.raises(ValueError, match="wrong_shape.npz.*shape"):
        load_events(wrong_shape)
    other_suffix = tmp_path / "events.txt"
    other_suffix.write_text("x")
    with pytest.raises(ValueError, match="events.txt"):
        load_events(other_suffix)


def test_bad_arguments_to_save(tmp_path):
    with pytest.raises(ValueError, match="events.zip"):
        save_events(tmp_path / "events.zip", random_events())
    with pytest.raises(ValueError, match="fmt"):
        save_events(tmp_path / "e.npz", random_events(), fmt="bitmap")
    with pytest.raises(TypeError, match="bool"):
        save_events(tmp_path / "e.npz", random_events().astype(np.uint8))
    with pytest.raises(ValueError, match=r"\[T, B, 2, H, W\]"):
        save_events(tmp_path / "e.npz", random_events()[:, 0])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "events.npz"
    save_events(target, random_events(seed=3))
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError, match="disk full"):
        save_events(target, random_events(seed=4))
    with pytest.raises(OSError, match="disk full"):
        save_events(tmp_path / "new.npz", random_events(seed=4))
    assert sorted(os.listdir(tmp_path)) == ["events.npz"]
    assert target.read_bytes() == before


def test_npz_is_a_plain_zip_without_pickles(tmp_path):
    path = save_events(
        tmp_path / "e.npz", random_events(), labels=[0, 1, 2], fmt="list", meta={"k": "v"}
    )
    with zipfile.ZipFile(path) as z:
        assert {"header.npy", "shape.npy", "events.npy", "offsets.npy", "labels.npy"} == set(
            z.namelist()
        )
    np.load(path, allow_pickle=False)["events"]  # no pickled objects


def test_event_lists_with_bad_polarity_or_coordinates_are_refused():
    from i2e_neuro.datasets.formats import EVENT_DTYPE, from_event_list

    ev = np.zeros(1, dtype=EVENT_DTYPE)
    ev["p"] = 2
    with pytest.raises(ValueError, match="polarity"):
        from_event_list(ev, (1, 2, 4, 4))
    ev["p"], ev["x"] = 1, 9
    with pytest.raises(IndexError):
        from_event_list(ev, (1, 2, 4, 4))


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_read_header_reads_the_metadata_without_the_events(tmp_path, fmt, suffix):
    path = save_events(
        tmp_path / f"b{suffix}", random_events(), labels=[1, 2, 3], fmt=fmt, meta={"a": [1]}
    )
    header = read_header(path)
    assert header == {"format": fmt, "a": [1], "shape": [8, 3, 2, 11, 13]}
    assert load_events(path).meta == {"a": [1]}


def test_read_header_refuses_what_load_events_refuses(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.npz"):
        read_header(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        read_header(bad)
    path = tmp_path / "nobits.npz"
    np.savez(path, header=np.asarray('{"format": "packed"}'), shape=np.asarray([1, 1, 2, 1, 1]))
    for read in (read_header, load_events):
        with pytest.raises(ValueError, match="no bits member"):
            read(path)
