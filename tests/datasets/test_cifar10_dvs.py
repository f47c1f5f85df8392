"""CIFAR10-DVS loading on tiny recordings written in the release's file format (no downloads)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from i2e_neuro.datasets import cifar10_dvs as dvs

HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
    b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n"
)


def dvs128_address(x_raw: int, y_raw: int, bit0: int) -> int:
    """A DVS128 jAER address: x in bits 1-7, y in bits 8-14, polarity bit 0 (0 = ON, 1 = OFF)."""
    assert 0 <= x_raw < 128 and 0 <= y_raw < 128 and bit0 in (0, 1)
    return (y_raw << 8) | (x_raw << 1) | bit0


def write_raw(path: Path, addresses, timestamps, header: bytes = HEADER) -> Path:
    """Write '#' header lines, then big-endian uint32 [address, timestamp] pairs (what SpikingJelly reads)."""
    words = np.empty(2 * len(addresses), dtype=">u4")
    words[0::2], words[1::2] = addresses, timestamps
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + words.tobytes())
    return path


def write_events(path: Path, t, x, y, p) -> Path:
    """Write events given in SpikingJelly's output convention (x, y after its flip; p = 1 is ON)."""
    t, x, y, p = (np.asarray(a, dtype=np.int64) for a in (t, x, y, p))
    # invert load_origin_data: x = 127 - y_raw, y = 127 - x_raw, p = 1 - bit0
    addresses = [dvs128_address(127 - yy, 127 - xx, 1 - pp) for xx, yy, pp in zip(x, y, p)]
    return write_raw(path, addresses, t)


def random_events(rng, n: int):
    t = np.sort(rng.integers(0, 1_000_000, n))
    return t, rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)


# --- file format -----------------------------------------------------------------------------


def test_reader_matches_spikingjelly(tmp_path, monkeypatch):
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS as SJ

    rng = np.random.default_rng(0)
    t, x, y, p = random_events(rng, 500)
    path = write_events(tmp_path / "rec.aedat", t, x, y, p)

    ours = dvs.load_recording(path)
    for key, expected in zip("txyp", (t, x, y, p)):
        np.testing.assert_array_equal(ours[key], expected, err_msg=key)

    # SpikingJelly's own reader, with the np.bool alias it needs back in place (NumPy >= 1.24
    # removed it)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # numpy's note on reading np.bool
        monkeypatch.setattr(np, "bool", bool, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its np.fromstring
        theirs = SJ.load_origin_data(str(path))
    for key in "txyp":
        np.testing.assert_array_equal(
            ours[key], np.asarray(theirs[key]).astype(np.int64), err_msg=key
        )


def test_dvs128_address_bits_land_on_the_right_pixel_and_polarity(tmp_path):
    path = write_raw(
        tmp_path / "bits.aedat",
        [dvs128_address(5, 10, 0), dvs128_address(5, 10, 1), dvs128_address(127, 0, 0)],
        [100, 200, 300],
    )
    ev = dvs.load_recording(path)
    np.testing.assert_array_equal(ev["x"], [117, 117, 127])  # 127 - y_raw
    np.testing.assert_array_equal(ev["y"], [122, 122, 0])  # 127 - x_raw
    np.testing.assert_array_equal(ev["p"], [1, 0, 1])  # bit 0 clear = ON
    frames = dvs.integrate_frames(ev, timesteps=1)
    assert frames.dtype == np.bool_ and frames.shape == (1, 2, 128, 128)
    assert frames[0, 0, 122, 117] and frames[0, 1, 122, 117] and frames[0, 0, 0, 127]
    assert frames.sum() == 3


def test_events_land_in_the_right_frame_pixel_and_polarity(tmp_path):
    # 16 events, T = 8, split by number: events 2i and 2i+1 go to frame i
    t = np.arange(16) * 10
    x = np.array([3, 3, 10, 11, 0, 0, 127, 127, 50, 50, 1, 2, 3, 4, 5, 6])
    y = np.array([4, 4, 20, 21, 0, 0, 127, 0, 60, 60, 1, 2, 3, 4, 5, 6])
    p = np.array([1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    ev = dvs.load_recording(write_events(tmp_path / "frames.aedat", t, x, y, p))
    frames = dvs.integrate_frames(ev, timesteps=8)
    assert frames.shape == (8, 2, 128, 128) and frames.dtype == np.bool_
    expected = np.zeros_like(frames)
    for i in range(16):
        expected[i // 2, 0 if p[i] == 1 else 1, y[i], x[i]] = True
    np.testing.assert_array_equal(frames, expected)
    assert frames[0, 0, 4, 3] and frames[0].sum() == 1  # two ON events on one pixel -> one True
    assert frames[1, 1, 20, 10] and frames[1, 0, 21, 11]  # OFF then ON
    assert frames[2, 0, 0, 0] and frames[2, 1, 0, 0]  # both polarities on one pixel


def test_frames_equal_spikingjellys_integration(tmp_path):
    from spikingjelly.datasets import integrate_events_by_fixed_frames_number

    rng = np.random.default_rng(1)
    ev = dvs.load_recording(write_events(tmp_path / "r.aedat", *random_events(rng, 1003)))
    for split_by in ("number", "time"):
        sj = integrate_events_by_fixed_frames_number(ev, split_by, 8, 128, 128)
        ours = dvs.integrate_frames(ev, timesteps=8, split_by=split_by)
        np.testing.assert_array_equal(ours[:, 0], sj[:, 1] > 0, err_msg=f"{split_by} ON")
        np.testing.assert_array_equal(ours[:, 1], sj[:, 0] > 0, err_msg=f"{split_by} OFF")


def test_time_split_tolerates_empty_windows():
    # all events at the start and the end: windows 1..6 are empty (SpikingJelly raises IndexError
    # here)
    ev = {
        "t": np.array([0, 1, 799, 800]),
        "x": np.array([1, 2, 3, 4]),
        "y": np.array([1, 2, 3, 4]),
        "p": np.array([1, 1, 0, 0]),
    }
    frames = dvs.integrate_frames(ev, timesteps=8, split_by="time")
    assert frames[0, 0, 1, 1] and frames[0, 0, 2, 2]
    assert frames[7, 1, 3, 3] and frames[7, 1, 4, 4]
    assert not frames[1:7].any()
    empty = {k: np.zeros(0, dtype=np.int64) for k in "txyp"}
    for split_by in ("number", "time"):
        assert not dvs.integrate_frames(empty, 8, split_by).any()


def test_bad_files_and_arguments(tmp_path):
    path = tmp_path / "cut.aedat"
    path.write_bytes(HEADER + b"\x00" * 12)
    with pytest.raises(ValueError, match=r"cut\.aedat: truncated event data"):
        dvs.load_recording(path)
    ev = {k: np.zeros(1, dtype=np.int64) for k in "txyp"}
    with pytest.raises(ValueError, match="timesteps"):
        dvs.integrate_frames(ev, timesteps=0)
    with pytest.raises(ValueError, match="split_by"):
        dvs.integrate_frames(ev, split_by="duration")


# --- the dataset -----------------------------------------------------------------------------

COUNTS = {"airplane": 11, "bird": 10, "truck": 4}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar10dvs")
    rng = np.random.default_rng(2)
    for name, count in COUNTS.items():
        for i in range(count):
            write_events(root / name / f"cifar10_{name}_{i}.aedat", *random_events(rng, 40))
    (root / "bird" / "notes.txt").write_text("not a recording")
    # one recording with known content: a single ON event at (x=7, y=9) in the first frame
    write_events(
        root / "truck" / "cifar10_truck_0.aedat",
        [0] + list(range(1, 16)),
        [7] + [100] * 15,
        [9] + [100] * 15,
        [1] + [0] * 15,
    )
    return root


def test_dataset_split_shapes_and_labels(root):
    classes = tuple(COUNTS)
    train = dvs.CIFAR10DVS(root, split="train", classes=classes)
    test = dvs.CIFAR10DVS(root, split="test", classes=classes)
    everything = dvs.CIFAR10DVS(root, split="all", classes=classes)
    # ceil(0.9 n) per class for training: 10 of 11, 9 of 10, 4 of 4
    assert len(train) == 10 + 9 + 4 and len(test) == 1 + 1 + 0 and len(everything) == 25
    assert {p for p, _ in train.samples}.isdisjoint(p for p, _ in test.samples)
    assert sorted(train.samples + test.samples) == sorted(everything.samples)
    # files sorted by name: the lexicographically last airplane file (_9, after _10) is the test one
    assert [p.name for p, _ in test.samples] == ["cifar10_airplane_9.aedat", "cifar10_bird_9.aedat"]
    assert set(train.targets) == {0, 2, 9} and test.targets == [0, 2]  # CIFAR-10 label indices
    # deterministic
    assert dvs.CIFAR10DVS(root, split="train", classes=classes).samples == train.samples

    sample, label = train[0]
    assert isinstance(sample, torch.Tensor) and sample.dtype == torch.bool
    assert tuple(sample.shape) == (8, 2, 128, 128) and label == 0

    index = next(i for i, (p, _) in enumerate(train.samples) if p.name == "cifar10_truck_0.aedat")
    sample, label = train[index]
    assert label == 9
    assert (
        sample[0, 0, 9, 7] and sample[0].sum() == 2
    )  # 16 events / 8 frames: events 0 and 1 in frame 0
    assert sample[:, 1, 100, 100].all() and sample.sum() == 1 + 8

    t4 = dvs.CIFAR10DVS(
        root,
        split="test",
        classes=classes,
        timesteps=4,
        transform=lambda s: s.float(),
        target_transform=lambda y: y + 100,
    )
    s, y = t4[0]
    assert s.dtype == torch.float32 and tuple(s.shape) == (4, 2, 128, 128) and y == 100


def test_dataloader_time_first(root):
    data = dvs.CIFAR10DVS(root, split="train", classes=("bird",))
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=dvs.collate_time_first)
    events, labels = next(iter(loader))
    assert tuple(events.shape) == (8, 3, 2, 128, 128) and events.dtype == torch.bool
    assert labels.tolist() == [2, 2, 2]
    torch.testing.assert_close(events[:, 1], data[1][0])


def test_missing_root_and_folders(tmp_path, root):
    with pytest.raises(
        FileNotFoundError,
        match=r"does not exist; expected .*/<class>/\*\.aedat.*airplane, automobile",
    ):
        dvs.CIFAR10DVS(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        dvs.CIFAR10DVS(root)  # all ten classes by default; only three are there
    message = str(info.value)
    assert "lacks the class folder(s) automobile, cat, deer, dog, frog, horse, ship" in message
    assert "airplane/cifar10_airplane_0.aedat" in message
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"cat: no \.aedat recordings"):
        dvs.CIFAR10DVS(empty, classes=("cat",))
    with pytest.raises(ValueError, match="CIFAR-10 class names"):
        dvs.CIFAR10DVS(root, classes=("airplane", "unicorn"))
    with pytest.raises(ValueError, match="split="):
        dvs.CIFAR10DVS(root, split="val", classes=("bird",))


def test_spikingjelly_download_layout_is_accepted(tmp_path):
    rng = np.random.default_rng(3)
    write_events(tmp_path / "extract" / "ship" / "cifar10_ship_0.aedat", *random_events(rng, 10))
    data = dvs.CIFAR10DVS(tmp_path, split="all", classes=("ship",))
    assert len(data) == 1 and data.targets == [8]
