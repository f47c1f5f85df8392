"""Image files of every bit depth and with transparency: scaled as a viewer shows them, or refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from i2e_neuro import i2e
from i2e_neuro.i2e.images import load_image

H, W = 48, 64


def gradient() -> np.ndarray:
    """A smooth horizontal ramp from black to white, in [0, 1]."""
    return np.tile(np.linspace(0.0, 1.0, W), (H, 1))


def events(image: np.ndarray) -> int:
    return int(i2e(image, ratio=0.07).sum())


def test_smooth_gradients_give_no_events_at_every_bit_depth(tmp_path):
    ramp = gradient()
    eight = tmp_path / "g8.png"
    Image.fromarray(np.rint(ramp * 255).astype(np.uint8)).save(eight)
    assert events(load_image(eight)) == 0
    files = {
        "g16.png": Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)),
        "g16.tif": Image.fromarray(np.rint(ramp * 65535).astype(np.uint16)),
        "g32.tif": Image.fromarray(np.rint(ramp * (2**31 - 1)).astype(np.int32)),
        "f32.tif": Image.fromarray(ramp.astype(np.float32)),
    }
    expected = load_image(eight)
    for name, image in files.items():
        image.save(tmp_path / name)
        got = load_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (H, W, 3), name
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, name
        assert events(got) == 0, name
        assert events(image) == 0, f"{name} as a PIL image"


def test_float_images_outside_unit_range_and_negative_integers_are_refused(tmp_path):
    path = tmp_path / "big.tif"
    Image.fromarray((gradient() * 255).astype(np.float32)).save(path)
    with pytest.raises(ValueError, match=r"big\.tif.*\[0, 1\]"):
        load_image(path)
    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32)).save(path)
    with pytest.raises(ValueError, match="nan.tif"):
        load_image(path)
    path = tmp_path / "neg.tif"
    Image.fromarray(np.full((4, 4), -5, dtype=np.int32)).save(path)
    with pytest.raises(ValueError, match="neg.tif.*negative"):
        load_image(path)


def test_transparent_images_are_composited_on_black(tmp_path):
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere, but only the left half is opaque
    rgba[:, : W // 2, 3] = 255
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    got = load_image(path)
    assert (got[:, : W // 2] == 255).all() and (got[:, W // 2 :] == 0).all()
    half = rgba.copy()
    half[..., 3] = 128
    Image.fromarray(half).save(path)
    assert (load_image(path) == 128).all()
