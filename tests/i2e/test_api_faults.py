"""The Python API against bad or extreme arguments: refused by name, or handled correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from i2e_neuro import i2e


def test_ratio_of_one_or_more_is_refused():
    image = np.random.default_rng(0).random((16, 16))
    for ratio in (1, 1.0, 2.5):
        with pytest.raises(ValueError, match=r"ratio=.*below 1"):
            i2e(image, ratio=ratio)
    assert i2e(image, ratio=0.999).dtype == torch.bool


def test_numpy_integers_and_floats_are_accepted_as_parameters():
    image = np.random.default_rng(0).random((16, 16))
    ref = i2e(image, ratio=0.1, timesteps=8)
    assert torch.equal(i2e(image, ratio=np.float32(0.1), timesteps=np.int64(8)), ref)
    assert i2e(image, timesteps=np.int32(3)).shape[0] == 3


def test_huge_finite_values_give_the_same_events_as_the_scaled_image():
    rng = np.random.default_rng(1)
    image = rng.random((3, 24, 24)).astype(np.float32)
    scaled = image * np.float32(2.0**127)  # up to ~1.7e38, finite
    assert np.isfinite(scaled).all() and scaled.max() > 1e38
    with np.errstate(all="raise"):
        got = i2e(scaled, ratio=0.1)
    assert got.any() and torch.equal(got, i2e(image, ratio=0.1))
    extremes = np.full((8, 8), -3e38, dtype=np.float32)
    extremes[:, 4:] = 3e38
    assert i2e(extremes, ratio=0.1).any()


def test_a_shape_that_is_neither_chw_nor_hwc_is_reported_as_given():
    with pytest.raises(ValueError, match=r"\(4, 20, 30\)"):
        i2e(np.zeros((4, 20, 30), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(2, 4, 20, 30\)"):
        i2e(np.zeros((2, 4, 20, 30), dtype=np.float32))
