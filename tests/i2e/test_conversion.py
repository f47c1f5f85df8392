"""The I2E engine against a transcription of the paper's Algorithm 1, and its invariants."""

from pathlib import Path

import numpy as np
import pytest
import torch

from i2e_neuro import I2E, i2e
from i2e_neuro.i2e.baselines import algorithm1
from i2e_neuro.i2e.directions import DIRECTION_PAIRS, PAPER_ORDER, displacement
from i2e_neuro.i2e.images import load_image

SAMPLES = sorted((Path(__file__).parents[2] / "i2e_neuro" / "data" / "samples").glob("*.jpg"))


def photo(name: str, size: int | None = None) -> torch.Tensor:
    img = torch.from_numpy(load_image(next(p for p in SAMPLES if p.stem == name))).permute(2, 0, 1)
    return img if size is None else img[:, :size, :size]


def test_sample_photos_ship_with_the_package():
    assert {p.stem for p in SAMPLES} == {"astronaut", "chelsea", "coffee", "rocket"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_equals_algorithm1_on_sample_photos(path):
    img = torch.from_numpy(load_image(path)).permute(2, 0, 1)[None]
    for ratio in (0.07, 0.12):
        ours = i2e(img, ratio=ratio)
        ref = algorithm1(img, ratio=ratio)
        assert ours.dtype == torch.bool and ours.shape == (8, 1, 2, *img.shape[-2:])
        assert torch.equal(ours, ref.bool())
        assert 0 < ours.float().mean() < 0.5


@pytest.mark.parametrize(
    "shape", [(4, 3, 37, 53), (2, 3, 1, 9), (3, 3, 8, 1), (1, 1, 16, 16), (64, 3, 40, 40)]
)
def test_equals_algorithm1_on_random_tensors(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    if shape[1] == 1:
        ref = algorithm1(x.expand(-1, 3, -1, -1))
    else:
        ref = algorithm1(x)
    assert torch.equal(i2e(x), ref.bool())
    u8 = (x * 255).round().to(torch.uint8)
    ref8 = algorithm1(u8 if shape[1] == 3 else u8.expand(-1, 3, -1, -1))
    assert torch.equal(i2e(u8), ref8.bool())


def test_flat_image_gives_no_events():
    for value in (0.0, 0.5, 1.0):
        assert not i2e(torch.full((2, 3, 12, 10), value)).any()


def test_events_are_invariant_to_brightness_scaling():
    x = photo("chelsea").float()[None] / 255
    base = i2e(x)
    for scale in (0.5, 0.25, 2.0):  # powers of two scale exactly in floating point
        assert torch.equal(i2e(x * scale), base)


def test_order_and_timesteps():
    x = photo("coffee", 64)[None]
    full = i2e(x)
    assert torch.equal(i2e(x, timesteps=3), full[:3])
    order = "abcdefgh"
    permuted = i2e(x, order=order)
    for t, name in enumerate(order):
        assert torch.equal(permuted[t], full[PAPER_ORDER.index(name)])
    assert torch.equal(i2e(x, order=list(order)), permuted)


def test_random_vectors_translate_the_canonical_maps():
    x = torch.rand(2, 3, 30, 30, generator=torch.Generator().manual_seed(0))
    canonical = i2e(x)
    seen = set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        drawn = i2e(x, random_vectors=True, generator=g)
        g = torch.Generator().manual_seed(seed)
        pairs = [
            DIRECTION_PAIRS[n][int(torch.randint(len(DIRECTION_PAIRS[n]), (1,), generator=g))]
            for n in PAPER_ORDER
        ]
        assert torch.equal(drawn, algorithm1(x, pairs=pairs).bool())
        for t, (name, pair) in enumerate(zip(PAPER_ORDER, pairs)):
            seen.add(pair)
            canon = DIRECTION_PAIRS[name][0]
            assert displacement(pair) == displacement(canon)
            # same displacement at another place: the map is the canonical one shifted by the offset
            (ay, ax), (cy, cx) = divmod(pair[0] - 1, 3), divmod(canon[0] - 1, 3)
            dy, dx = ay - cy, ax - cx
            inner = (slice(2, -2), slice(2, -2))
            shifted = torch.roll(canonical[t], shifts=(-dy, -dx), dims=(-2, -1))
            assert torch.equal(drawn[t][..., inner[0], inner[1]], shifted[..., inner[0], inner[1]])
    assert len(seen) > 16  # the draw really varies


def test_input_forms_agree():
    rgb = photo("rocket", 48)
    ref = i2e(rgb[None])
    hwc = rgb.permute(1, 2, 0).numpy()
    assert torch.equal(i2e(hwc), ref[:, 0])
    assert torch.equal(i2e(hwc[None]), ref)
    assert torch.equal(i2e(rgb), ref[:, 0])
    assert torch.equal(i2e(rgb.float() / 255), ref[:, 0])
    from PIL import Image

    assert torch.equal(i2e(Image.fromarray(hwc)), ref[:, 0])
    grey = rgb.amax(0)
    assert torch.equal(i2e(grey), ref[:, 0])
    assert torch.equal(i2e(grey[None, None].numpy()), ref)


def test_module_trains_with_random_vectors_and_evaluates_canonically():
    x = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    module = I2E(ratio=0.1, timesteps=4)
    assert torch.equal(module.eval()(x), i2e(x, ratio=0.1, timesteps=4))
    module.train()
    outs = {module(x).numpy().tobytes() for _ in range(10)}
    assert len(outs) > 1


def test_module_as_dataloader_transform():
    from torch.utils.data import DataLoader, TensorDataset

    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    transform = I2E(ratio=0.1).eval()

    class Converted(TensorDataset):
        def __getitem__(self, i):
            return transform(images[i])

    loader = DataLoader(Converted(images), batch_size=3, num_workers=2)
    batches = torch.cat(list(loader))
    assert torch.equal(batches.transpose(0, 1), i2e(images, ratio=0.1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.rand(8, 3, 64, 64)
    out = i2e(x.cuda())
    assert out.is_cuda and torch.equal(out.cpu(), i2e(x))


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (torch.full((1, 3, 4, 4), float("nan")), {}, "NaN"),
        (torch.tensor([[[[0.0, float("inf")]]]]).expand(1, 3, 1, 2), {}, "NaN or infinite"),
        (torch.zeros(0, 3, 4, 4), {}, "empty"),
        (torch.zeros(1, 4, 4, 4), {}, "channels"),
        (np.zeros((2, 2, 5, 5)), {}, "channels"),
        (np.array([["a"]]), {}, "non-numeric"),
        ("image.jpg", {}, "expected a torch.Tensor"),
        (torch.zeros(5), {}, "shape"),
        (torch.rand(1, 3, 4, 4), {"ratio": -0.1}, "ratio"),
        (torch.rand(1, 3, 4, 4), {"ratio": float("nan")}, "ratio"),
        (torch.rand(1, 3, 4, 4), {"timesteps": 9}, "timesteps"),
        (torch.rand(1, 3, 4, 4), {"timesteps": 0}, "timesteps"),
        (torch.rand(1, 3, 4, 4), {"order": "abcdefgx"}, "order"),
        (torch.rand(1, 3, 4, 4), {"order": "abcd"}, "order"),
        (torch.rand(1, 3, 4, 4), {"padding": "circular"}, "padding"),
    ],
)
def test_bad_input_names_the_problem(images, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        i2e(images, **kwargs)


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
