"""One folder walk and one image reader for every path (issue 25, cases 1, 2 and 6).

Folder walk: a symbolic link is followed once; a link that loops back into the tree, or that
leads into a folder read anyway, is refused naming the link (no hang, no duplicated or
mislabelled images), by ``train --dataset imagefolder``, ``convert`` and ``simulate --data``
alike. Image reader: one pixel limit checked before decoding, for every format and path; the
EXIF orientation applied.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2e_neuro.datasets.sources import ImageFiles, SourceError, find_images
from i2e_neuro.datasets.train_data import DataError, _read_image, build_imagefolder
from i2e_neuro.folders import FolderLinkError, walk_files
from i2e_neuro.i2e.images import load_image


def _tree(root: Path, classes=("cla", "clb"), per_class=2) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                pixels = (rng.random((12, 12, 3)) * 255).astype("uint8")
                Image.fromarray(pixels).save(root / split / c / f"{k}.png")


#: loop shapes: (where the link lies, relative to ROOT/train, what it points to)
LOOPS = {
    "up to the split": [("cla/up", "..")],
    "to itself": [("cla/self", ".")],
    "to the dataset root": [("cla/top", "../..")],
    "above the root": [("cla/far", "../../..")],
    "two loops": [("cla/up", ".."), ("clb/up", "..")],
    "deep chain": [("cla/x/y/back", "../../..")],
}


@pytest.mark.parametrize("shape", sorted(LOOPS))
def test_a_link_that_loops_is_refused_naming_it(tmp_path, shape):
    root = tmp_path / "data"
    _tree(root)
    for where, target in LOOPS[shape]:
        link = root / "train" / where
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
    first = root / "train" / LOOPS[shape][0][0]
    for walk in (lambda: walk_files(root / "train"), lambda: find_images(root / "train")):
        with pytest.raises(FolderLinkError, match="loops back") as e:
            walk()
        assert str(first) in str(e.value) and "->" in str(e.value)
    with pytest.raises(SourceError, match="loops back"):
        ImageFiles([root / "train"])
    from i2e_neuro.train import resolve_config

    with pytest.raises(DataError, match="loops back") as e:
        build_imagefolder(resolve_config(dataset="imagefolder", root=str(root), size=16))
    assert str(first) in str(e.value)


def test_a_link_into_another_class_is_refused_not_mislabelled(tmp_path):
    root = tmp_path / "data"
    _tree(root)
    os.symlink("../clb", root / "train" / "cla" / "more")
    from i2e_neuro.train import resolve_config

    with pytest.raises(DataError, match="read already") as e:
        build_imagefolder(resolve_config(dataset="imagefolder", root=str(root), size=16))
    assert str(root / "train" / "cla" / "more") in str(e.value)


def test_a_link_to_a_folder_outside_is_followed_once(tmp_path):
    root = tmp_path / "data"
    _tree(root)
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.fromarray(np.zeros((12, 12, 3), "uint8")).save(extra / "e.png")
    os.symlink(extra, root / "train" / "cla" / "more")
    from i2e_neuro.train import resolve_config

    train_set, _, _ = build_imagefolder(
        resolve_config(dataset="imagefolder", root=str(root), size=16)
    )
    assert len(train_set) == 5  # 4 + the linked one, under its class
    assert sorted(train_set.targets) == [0, 0, 0, 1, 1]
    assert len(find_images(root)) == 9


def test_train_and_convert_refuse_a_looping_folder_in_one_line(tmp_path, capsys):
    from i2e_neuro.commands import convert, train

    root = tmp_path / "data"
    _tree(root)
    os.symlink("..", root / "train" / "cla" / "up")
    link = str(root / "train" / "cla" / "up")
    code = train.main(
        ["--dataset", "imagefolder", "--root", str(root), "--out", str(tmp_path / "run")]
        + ["--epochs", "1", "--qat-epochs", "0", "--size", "16", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and link in err and "loops back" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
    code = convert.main([str(root / "train"), "-o", str(tmp_path / "ev"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and link in err and "loops back" in err and "Traceback" not in err, err


# --- the one image reader ---------------------------------------------------------------------


def _png_bomb(path: Path, width: int, height: int) -> None:
    """A bilevel PNG of ``width x height`` black pixels: a few hundred KB for a huge picture."""
    row = b"\0" + bytes((width + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(30000, 30000), (10000, 10000), (100000, 1000)])
def test_png_bombs_are_refused_before_decoding_on_every_path(tmp_path, size):
    """30000x30000 (PIL refuses it on open), 10000x10000 (PIL only warns: torchvision decoded it
    for training) and a thin 100000x1000 strip: all over the one limit."""
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, *size)
    assert bomb.stat().st_size < 2_000_000
    for read in (load_image, _read_image, _through_source):
        with pytest.raises(ValueError, match="decompression bomb") as e:
            read(bomb)
        assert str(bomb) in str(e.value)


def _through_source(path: Path):
    """What convert and simulate --data read: an ImageFiles item (its error raised)."""
    item = ImageFiles([path])[0]
    if not item.ok:
        raise item.image
    return item.image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"])
def test_the_pixel_limit_is_one_for_every_format(tmp_path, monkeypatch, fmt):
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(np.full((90, 100, 3), 128, "uint8")).save(path, format=fmt)
    assert load_image(path).shape == (90, 100, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 90 * 100 - 1)  # the user's setting, lowered
    for read in (load_image, _read_image, _through_source):
        with pytest.raises(ValueError, match="decompression bomb.*9000 pixels"):
            read(path)


def test_training_skips_a_bomb_naming_it(tmp_path, capsys):
    root = tmp_path / "data"
    _tree(root)
    _png_bomb(root / "train" / "cla" / "bomb.png", 30000, 30000)
    from i2e_neuro.train import resolve_config

    train_set, _, _ = build_imagefolder(
        resolve_config(dataset="imagefolder", root=str(root), size=16)
    )
    items = [train_set[i] for i in range(len(train_set))]
    assert len(items) == 5 and all(x.shape[-2:] == (16, 16) for x, _ in items)
    err = capsys.readouterr().err
    assert "skipping unreadable image" in err and "bomb.png" in err and "bomb" in err, err


# --- EXIF orientation -------------------------------------------------------------------------


def _oriented(path: Path, orientation: int, fmt: str) -> np.ndarray:
    """Save a 40-wide, 64-tall picture with an EXIF orientation; return the upright pixels."""
    rng = np.random.default_rng(orientation)
    stored = (rng.random((64, 40, 3)) * 255).astype("uint8")
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(
        path,
        format=fmt,
        exif=exif.tobytes(),
        **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}),
    )
    turn = {
        1: lambda a: a,
        3: lambda a: np.rot90(a, 2),
        6: lambda a: np.rot90(a, -1),
        8: lambda a: np.rot90(a, 1),
    }
    return turn[orientation](np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied_on_every_path(tmp_path, fmt, orientation):
    path = tmp_path / f"phone.{fmt.lower()}"
    upright = _oriented(path, orientation, fmt)
    want = (40, 64) if orientation in (6, 8) else (64, 40)
    got = load_image(path)
    assert got.shape[:2] == want
    if fmt != "JPEG":
        assert np.array_equal(got, upright)
    assert tuple(_read_image(str(path)).shape[-2:]) == want  # training
    assert ImageFiles([path])[0].image.shape[:2] == want  # convert, simulate --data


def test_convert_makes_events_of_the_upright_photo(tmp_path):
    from i2e_neuro.commands import convert
    from i2e_neuro.datasets.formats import load_events

    _oriented(tmp_path / "phone.jpg", 6, "JPEG")
    out = tmp_path / "ev"
    assert convert.main([str(tmp_path / "phone.jpg"), "-o", str(out), "--no-progress"]) == 0
    (f,) = out.glob("*.npz")
    assert load_events(f).events.shape[-2:] == (40, 64)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_own_turn(tmp_path, orientation):
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray((rng.random((64, 40, 3)) * 255).astype("uint8")).save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(load_image(path), want)


def test_different_class_folders_are_named(tmp_path):
    root = tmp_path / "data"
    _tree(root)
    (root / "train" / "clb").rename(root / "train" / "dog")
    (root / "val" / "cla").rename(root / "val" / "cat")
    from i2e_neuro.train import resolve_config

    with pytest.raises(DataError) as e:
        build_imagefolder(resolve_config(dataset="imagefolder", root=str(root), size=16))
    assert "only in train/: cla, dog; only in val/: cat, clb" in str(e.value), e.value
