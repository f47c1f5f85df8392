"""``i2e-neuro convert`` end to end: folders, datasets, resume, shards, failures, pictures."""

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2e_neuro import i2e
from i2e_neuro.commands import convert as cmd
from i2e_neuro.datasets.formats import load_events
from i2e_neuro.datasets.sources import load_digits_source
from i2e_neuro.i2e.images import load_image, resize

SAMPLES = Path(__file__).parents[2] / "i2e_neuro" / "data" / "samples"


def run(*argv) -> int:
    """The command as ``i2e-neuro convert ARGV`` runs it (exit status; 130 when interrupted)."""
    return cmd.main([str(a) for a in argv])


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def temp_files(folder: Path) -> list[str]:
    return [f for f in files(folder) if ".tmp" in f]


def same_outputs(a: Path, b: Path) -> None:
    assert files(a) == files(b)
    for name in files(a):
        if name.endswith((".npz", ".h5")):
            x, y = load_events(a / name), load_events(b / name)
            assert (
                np.array_equal(x.events, y.events)
                and np.array_equal(x.labels, y.labels)
                and x.meta == y.meta
            )
        else:
            assert (a / name).read_text() == (b / name).read_text(), name


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for p in sorted(SAMPLES.glob("*.jpg")):
        target = folder / ("outdoor" if p.stem == "rocket" else "") / p.name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(p, target)
    return folder


@pytest.fixture(scope="module")
def digits_full(tmp_path_factory) -> Path:
    """One uninterrupted run: digits test split (360 images) in chunks of 100."""
    out = tmp_path_factory.mktemp("full")
    assert run("--dataset", "digits", "--split", "test", "--chunk-size", 100, "-o", out) == 0
    return out


DIGITS = ("--dataset", "digits", "--split", "test", "--chunk-size", 100)
CHUNKS = [f"chunk_0000{k}.npz" for k in range(4)]


def test_help_is_useful(capsys):
    with pytest.raises(SystemExit) as e:
        cmd.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "--dataset",
        "--shard",
        "--chunk-size",
        "--ratio",
        "cifar-10-batches-py",
        "examples",
        "exit status",
        "resume",
    ):
        assert needle in text


def test_folder_of_photos(tmp_path, photos, capsys):
    out = tmp_path / "out"
    assert run(photos, "-o", out, "--size", 48, "--pictures", 2, "--no-progress") == 0
    assert files(out) == [
        "astronaut.npz",
        "chelsea.npz",
        "coffee.npz",
        "index.json",
        "outdoor/rocket.npz",
        "pictures/astronaut.gif",
        "pictures/astronaut.png",
        "pictures/chelsea.gif",
        "pictures/chelsea.png",
    ]
    index = json.loads((out / "index.json").read_text())
    assert (
        index["complete"]
        and index["params"]["ratio"] == 0.12
        and index["source"]["kind"] == "images"
    )
    assert [e["file"] for e in index["files"]] == [
        "astronaut.npz",
        "chelsea.npz",
        "coffee.npz",
        "outdoor/rocket.npz",
    ]
    for entry in index["files"]:
        batch = load_events(out / entry["file"])
        image = resize(load_image(next(photos.rglob(Path(entry["file"]).stem + ".jpg"))), (48,))
        expected = i2e(torch.from_numpy(image).permute(2, 0, 1)[None], ratio=0.12).numpy()
        assert np.array_equal(batch.events, expected)
        assert min(batch.events.shape[-2:]) == 48 and entry["shape"] == list(expected.shape)
        assert entry["event_counts"] == [int(expected.sum())] and entry["labels"] == [-1]
    summary = capsys.readouterr().out
    assert (
        "converted 4 image(s)" in summary and "mean event rate" in summary and "images/s" in summary
    )
    with Image.open(out / "pictures" / "chelsea.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 8
    with Image.open(out / "pictures" / "astronaut.png") as png:
        assert (
            png.format == "PNG" and png.size[0] > png.size[1] * 4
        )  # image + 8 panels side by side
        png.verify()


def test_digits_in_chunks(digits_full):
    assert files(digits_full) == CHUNKS + ["index.json"]
    index = json.loads((digits_full / "index.json").read_text())
    assert index["complete"] and index["missing"] == []
    assert index["source"] == {
        "kind": "dataset",
        "dataset": "digits",
        "split": "test",
        "count": 360,
    }
    assert index["params"]["ratio"] == 0.10 and index["params"]["order"] == "efghabcd"
    assert [len(e["samples"]) for e in index["files"]] == [100, 100, 100, 60]
    assert index["totals"]["samples"] == 360
    source = load_digits_source("test")
    images = torch.from_numpy(np.stack([source[i].image for i in range(len(source))])).permute(
        0, 3, 1, 2
    )
    expected = i2e(images, ratio=0.10).numpy()
    got = np.concatenate([load_events(digits_full / c).events for c in CHUNKS], axis=1)
    assert got.shape == (8, 360, 2, 32, 32) and np.array_equal(got, expected)
    labels = np.concatenate([load_events(digits_full / c).labels for c in CHUNKS])
    assert np.array_equal(labels, source.labels)
    assert (
        sum(sum(e["event_counts"]) for e in index["files"])
        == index["totals"]["events"]
        == int(expected.sum())
    )


def test_interrupted_run_resumes_without_rewriting(tmp_path, digits_full, monkeypatch, capsys):
    out = tmp_path / "out"
    original = np.savez_compressed
    calls = []

    def interrupt_second_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing the second chunk
        return original(*args, **kwargs)

    monkeypatch.setattr(np, "savez_compressed", interrupt_second_write)
    assert run(*DIGITS, "-o", out) == 130
    monkeypatch.setattr(np, "savez_compressed", original)
    assert files(out) == ["chunk_00000.npz"]  # no temp file, no half-written chunk
    assert "rerun the same command to resume" in capsys.readouterr().err
    old = 1_000_000_000_000_000_000
    os.utime(out / "chunk_00000.npz", ns=(old, old))
    assert run(*DIGITS, "-o", out) == 0
    assert (out / "chunk_00000.npz").stat().st_mtime_ns == old
    assert "1 file(s) already done, skipped" in capsys.readouterr().out
    same_outputs(out, digits_full)
    # a deleted output is redone, and only that one
    for c in CHUNKS:
        os.utime(out / c, ns=(old, old))
    (out / CHUNKS[2]).unlink()
    assert run(*DIGITS, "-o", out) == 0
    assert [(out / c).stat().st_mtime_ns == old for c in CHUNKS] == [True, True, False, True]
    same_outputs(out, digits_full)
    # a corrupt output is redone too
    (out / CHUNKS[1]).write_bytes(b"garbage")
    assert run(*DIGITS, "-o", out) == 0
    same_outputs(out, digits_full)


def test_other_parameters_reconvert(tmp_path, digits_full):
    out = tmp_path / "out"
    shutil.copytree(digits_full, out)
    assert run(*DIGITS, "-o", out, "--ratio", 0.2, "--timesteps", 4) == 0
    batch = load_events(out / CHUNKS[0])
    assert batch.events.shape[0] == 4 and batch.meta["i2e"]["ratio"] == 0.2
    assert json.loads((out / "index.json").read_text())["params"]["timesteps"] == 4


def test_shards_give_the_same_files(tmp_path, digits_full, monkeypatch, capsys):
    out = tmp_path / "out"
    assert run(*DIGITS, "-o", out, "--shard", "1/2") == 0
    index = json.loads((out / "index.json").read_text())
    assert files(out) == [CHUNKS[1], CHUNKS[3], "index.json"]
    assert not index["complete"] and index["missing"] == [CHUNKS[0], CHUNKS[2]]
    monkeypatch.setenv("RANK", "0")  # as set by torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(*DIGITS, "-o", out) == 0
    assert "shard 0/2" in capsys.readouterr().out
    same_outputs(out, digits_full)


def test_corrupt_and_missing_images_are_listed(tmp_path, photos, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "outdoor" / "notes.txt").write_text("not an image, ignored")
    out = tmp_path / "out"
    assert run(folder, tmp_path / "missing.png", "-o", out, "--size", 32) == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "missing.png" in err and "2 image(s) failed" in err
    assert files(out) == [
        "astronaut.npz",
        "chelsea.npz",
        "coffee.npz",
        "index.json",
        "outdoor/rocket.npz",
    ]
    assert temp_files(out) == []
    index = json.loads((out / "index.json").read_text())
    assert not index["complete"] and "broken.npz" in index["missing"]


def test_images_of_the_same_name(tmp_path, capsys):
    for folder, suffix in (("a", ".jpg"), ("a", ".png"), ("b", ".png")):
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.fromarray(load_image(SAMPLES / "coffee.jpg")[:20, :30]).save(
            tmp_path / folder / f"x{suffix}"
        )
    out = tmp_path / "out"
    assert run(tmp_path / "a", tmp_path / "b", "-o", out) == 1
    assert files(out) == ["index.json", "x.jpg.npz", "x.png.npz"]
    assert "same name 'x.png'" in capsys.readouterr().err
    assert load_events(out / "x.png.npz").meta["samples"] == ["x.png"]
    index = json.loads((out / "index.json").read_text())
    assert not index["complete"] and len(index["files"]) == 2 and len(index["failures"]) == 1
    assert run(tmp_path / "a", tmp_path / "b", "-o", out) == 1  # the rerun reports it again


def test_chunk_with_a_bad_item_is_redone(tmp_path, monkeypatch, capsys):
    """A dataset chunk written with a failed item is not 'done': the next run redoes it."""
    from i2e_neuro.datasets import sources

    real = sources.ArraySource.__getitem__

    def flaky(self, index):
        item = real(self, index)
        return item._replace(image=OSError(f"{item.name}: read error")) if index == 5 else item

    monkeypatch.setattr(sources.ArraySource, "__getitem__", flaky)
    out = tmp_path / "out"
    assert run(*DIGITS, "-o", out, "--limit", 150) == 1
    assert "test_00005: read error" in capsys.readouterr().err
    assert len(load_events(out / CHUNKS[0]).labels) == 99
    monkeypatch.setattr(sources.ArraySource, "__getitem__", real)
    assert run(*DIGITS, "-o", out, "--limit", 150) == 0
    assert len(load_events(out / CHUNKS[0]).labels) == 100
    assert json.loads((out / "index.json").read_text())["complete"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ratio", "-0.1"], "--ratio -0.1"),
        (["--ratio", "nan"], "--ratio nan"),
        (["--order", "abcdefgx"], "--order abcdefgx"),
        (["--order", "abc"], "--order abc"),
        (["--timesteps", "9"], "--timesteps 9"),
        (["--timesteps", "0"], "--timesteps 0"),
        (["--shard", "2/2"], "--shard 2/2"),
        (["--shard", "one/two"], "--shard one/two"),
        (["--shard", "0/0"], "--shard 0/0"),
        (["--size", "0"], "--size 0"),
        (["--size", "1", "2", "3"], "--size 1 2 3"),
        (["--chunk-size", "0"], "--chunk-size 0"),
        (["--limit", "-1"], "--limit -1"),
        (["photo.jpg"], "not both"),
    ]
    + (
        []
        if torch.cuda.is_available()
        else [(["--device", "cuda"], "--device cuda: CUDA is not available")]
    ),
)
def test_bad_arguments(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert run(*DIGITS, "-o", out, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("i2e-neuro convert: error:")
    assert not out.exists()


def test_bad_shard_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(*DIGITS, "-o", tmp_path / "out") == 2
    assert "RANK=3, WORLD_SIZE=2" in capsys.readouterr().err


def test_unwritable_output(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("a file, not a folder")
    assert run(*DIGITS, "--limit", 10, "-o", out) == 1
    err = capsys.readouterr().err
    assert err.startswith("i2e-neuro convert: error: cannot write") and str(out) in err


def test_nothing_to_convert(tmp_path, capsys):
    assert run("-o", tmp_path / "out") == 2
    assert "nothing to convert" in capsys.readouterr().err


def test_missing_dataset_shows_the_layout(tmp_path, capsys):
    assert run("--dataset", "cifar10", "--root", tmp_path, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "cifar-10-batches-py" in err and "data_batch_1" in err and str(tmp_path) in err
    assert run("--dataset", "mnist", "-o", tmp_path / "out") == 2
    assert "--root" in capsys.readouterr().err


def test_other_conversion_in_the_folder_is_refused(tmp_path, digits_full, capsys):
    out = tmp_path / "out"
    shutil.copytree(digits_full, out)
    assert run("--dataset", "digits", "--split", "train", "-o", out) == 2
    assert "belongs to another conversion" in capsys.readouterr().err


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(str(path) + ".gz", "wb") as f:
        f.write(magic + array.astype(np.uint8).tobytes())
    path.write_bytes(gzip.decompress(Path(str(path) + ".gz").read_bytes()))


def test_local_mnist_to_h5_event_lists(tmp_path):
    """A small MNIST-format dataset on disk through torchvision (download=False), HDF5 + list format."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = {
        "train": rng.integers(0, 256, (12, 28, 28)),
        "t10k": rng.integers(0, 256, (3, 28, 28)),
    }
    labels = {"train": rng.integers(0, 10, 12), "t10k": rng.integers(0, 10, 3)}
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", images[split])
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels[split])
    out = tmp_path / "out"
    assert (
        run(
            "--dataset",
            "mnist",
            "--root",
            tmp_path / "data",
            "--chunk-size",
            5,
            "--format",
            "list",
            "--suffix",
            ".h5",
            "-o",
            out,
        )
        == 0
    )
    assert files(out) == ["chunk_00000.h5", "chunk_00001.h5", "chunk_00002.h5", "index.json"]
    got = [load_events(out / f"chunk_0000{k}.h5") for k in range(3)]
    assert got[0].meta["samples"] == [
        "train_00000",
        "train_00001",
        "train_00002",
        "train_00003",
        "train_00004",
    ]
    events = np.concatenate([b.events for b in got], axis=1)
    expected = i2e(torch.from_numpy(images["train"].astype(np.uint8))[:, None], ratio=0.10).numpy()
    assert np.array_equal(events, expected)
    assert np.array_equal(np.concatenate([b.labels for b in got]), labels["train"])


def test_picture_colours_and_checks(tmp_path):
    from i2e_neuro.i2e.pictures import OFF_COLOUR, ON_COLOUR, event_frames, save_gif, save_grid

    events = np.zeros((3, 2, 5, 6), bool)
    events[0, 0, 1, 2] = events[1, 1, 3, 4] = True
    frames = event_frames(torch.from_numpy(events))
    assert frames.shape == (3, 5, 6, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 1, 2]) == ON_COLOUR and tuple(frames[1, 3, 4]) == OFF_COLOUR
    assert frames.sum() == sum(ON_COLOUR) + sum(OFF_COLOUR)
    with Image.open(save_gif(tmp_path / "e.gif", events)) as gif:  # no source image; 5x6 enlarged
        assert gif.n_frames == 3 and min(gif.size) >= 128
    save_grid(tmp_path / "e.png", events, np.full((5, 6), 128, np.uint8))  # grey source image
    with pytest.raises(ValueError, match="differs"):
        save_grid(tmp_path / "bad.png", events, np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[T, 2, H, W\]"):
        save_gif(tmp_path / "bad.gif", events[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.gif", "e.png"]


def test_demo_conversion_of_the_sample_photos(tmp_path):
    from i2e_neuro.datasets.sample_photos import convert_samples, format_table

    rows = convert_samples(tmp_path, short_side=40)
    assert [r["name"] for r in rows] == ["astronaut", "chelsea", "coffee", "rocket"]
    for r in rows:
        assert min(r["height"], r["width"]) == 40 and 0 < r["event_rate"] < 0.5
        assert set(r["files"]) == {"events", "gif", "png"} and all(
            Path(f).is_file() for f in r["files"].values()
        )
        assert load_events(r["files"]["events"]).events.sum() == r["events"]
    assert "astronaut" in format_table(rows)
