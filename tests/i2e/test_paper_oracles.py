"""The I2E conversion checked against the paper itself, not against code that reads the same table.

Source: "I2E: Real-Time Image-to-Event Conversion for High-Performance Spiking Neural Networks"
(AAAI 2026, arXiv 2511.08065), Algorithm 1 and its table of the eight directions. The table is
written out here by hand; the event maps of a one-pixel image are derived by hand in the
comments; the torch path of the engine (``_fire``, what CUDA runs) is run on CPU tensors and
compared bit for bit with the numpy engine.
"""

import numpy as np
import pytest
import torch

from i2e_neuro import i2e
from i2e_neuro.i2e import conversion, directions
from i2e_neuro.i2e.baselines import algorithm1

# --- the paper's table, by hand ---------------------------------------------------------------
# The 3x3 neighbourhood is numbered row-major 1..9 (5 = centre):
#     1 2 3
#     4 5 6
#     7 8 9
# A direction [a, b] has -1 at a and +1 at b. Equivalent pairs have the same displacement
# (where b lies relative to a, as (dy, dx) with y down), the first one is canonical.
PAPER_TABLE = {
    #     displacement   equivalent pairs, canonical first
    "a": ((0, +1), [(5, 6), (1, 2), (2, 3), (4, 5), (7, 8), (8, 9)]),  # alpha, |d| = 1
    "b": ((-1, 0), [(5, 2), (4, 1), (6, 3), (7, 4), (8, 5), (9, 6)]),  # alpha
    "c": ((-1, +1), [(5, 3), (4, 2), (7, 5), (8, 6)]),  # beta, |d| = sqrt 2
    "d": ((-1, -1), [(5, 1), (6, 2), (8, 4), (9, 5)]),  # beta
    "e": ((-1, -2), [(9, 4), (6, 1)]),  # gamma, |d| = sqrt 5
    "f": ((-1, +2), [(4, 3), (7, 6)]),  # gamma
    "g": ((+2, -1), [(3, 8), (2, 7)]),  # gamma
    "h": ((-2, -1), [(8, 1), (9, 2)]),  # gamma
}
# Timestep order gamma, alpha, beta: Algorithm 1's list of kernels.
PAPER_ORDER = "efghabcd"
ALGORITHM1_PAIRS = [(9, 4), (4, 3), (3, 8), (8, 1), (5, 6), (5, 2), (5, 3), (5, 1)]

# Row and column of each position, written out (not computed with the engine's helper).
ROWCOL = {
    1: (0, 0),
    2: (0, 1),
    3: (0, 2),
    4: (1, 0),
    5: (1, 1),
    6: (1, 2),
    7: (2, 0),
    8: (2, 1),
    9: (2, 2),
}


def test_direction_table_is_the_papers():
    assert {k: tuple(v) for k, v in directions.DIRECTION_PAIRS.items()} == {
        k: tuple(pairs) for k, (_, pairs) in PAPER_TABLE.items()
    }
    assert "".join(directions.PAPER_ORDER) == PAPER_ORDER
    assert [directions.DIRECTION_PAIRS[n][0] for n in directions.PAPER_ORDER] == ALGORITHM1_PAIRS
    for name, (disp, pairs) in PAPER_TABLE.items():
        for a, b in pairs:
            (ra, ca), (rb, cb) = ROWCOL[a], ROWCOL[b]
            assert (rb - ra, cb - ca) == disp, (name, a, b)  # the table is self-consistent
            assert directions.displacement((a, b)) == disp, (name, a, b)
            k = np.array(directions.kernel((a, b)))
            assert k[ra, ca] == -1 and k[rb, cb] == 1 and np.abs(k).sum() == 2, (name, a, b)


# --- a one-pixel image, by hand ------------------------------------------------------------------
# 4 rows x 5 columns (H != W), all 0 except V = 1 at (y, x) = (1, 2). V ranges over [0, 1], so
# with ratio 0.5 the threshold is 0.5 and only differences of +-1 fire. With cross-correlation
#     dV(y, x) = V(y + rb - 1, x + cb - 1) - V(y + ra - 1, x + ca - 1)
# (1-pixel replicate padding: the bright pixel is not on the border, so padding adds zeros only),
# dV = +1 (ON) where the +1 tap b lands on the pixel: (y, x) = (1 - (rb - 1), 2 - (cb - 1)),
# and dV = -1 (OFF) where the -1 tap a lands on it: (y, x) = (1 - (ra - 1), 2 - (ca - 1)).
# Per timestep of the default order, canonical pairs:
#   t0 e [9,4]: a=9 at (2,2), b=4 at (1,0): ON (1-0, 2+1) = (1,3); OFF (1-1, 2-1) = (0,1)
#   t1 f [4,3]: a=4 at (1,0), b=3 at (0,2): ON (1+1, 2-1) = (2,1); OFF (1-0, 2+1) = (1,3)
#   t2 g [3,8]: a=3 at (0,2), b=8 at (2,1): ON (1-1, 2-0) = (0,2); OFF (1+1, 2-1) = (2,1)
#   t3 h [8,1]: a=8 at (2,1), b=1 at (0,0): ON (1+1, 2+1) = (2,3); OFF (1-1, 2-0) = (0,2)
#   t4 a [5,6]: a=5 at (1,1), b=6 at (1,2): ON (1, 1);             OFF (1, 2)
#   t5 b [5,2]: b=2 at (0,1):               ON (2, 2);             OFF (1, 2)
#   t6 c [5,3]: b=3 at (0,2):               ON (2, 1);             OFF (1, 2)
#   t7 d [5,1]: b=1 at (0,0):               ON (2, 3);             OFF (1, 2)
EXPECTED_ON_OFF = [
    ((1, 3), (0, 1)),
    ((2, 1), (1, 3)),
    ((0, 2), (2, 1)),
    ((2, 3), (0, 2)),
    ((1, 1), (1, 2)),
    ((2, 2), (1, 2)),
    ((2, 1), (1, 2)),
    ((2, 3), (1, 2)),
]


def one_pixel_image(dtype=torch.uint8) -> torch.Tensor:
    img = torch.zeros(1, 3, 4, 5, dtype=dtype)
    img[0, 1, 1, 2] = 255 if dtype == torch.uint8 else 1.0  # V = max over RGB: green is enough
    return img


def hand_map() -> np.ndarray:
    out = np.zeros((8, 1, 2, 4, 5), dtype=bool)
    for t, (on, off) in enumerate(EXPECTED_ON_OFF):
        out[(t, 0, 0, *on)] = True
        out[(t, 0, 1, *off)] = True
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_one_pixel_event_map_by_hand(dtype):
    expected = hand_map()
    assert np.array_equal(i2e(one_pixel_image(dtype), ratio=0.5).numpy(), expected)
    assert np.array_equal(algorithm1(one_pixel_image(dtype), ratio=0.5).bool().numpy(), expected)
    # T < 8 takes the first T directions of the order
    assert np.array_equal(i2e(one_pixel_image(dtype), ratio=0.5, timesteps=3).numpy(), expected[:3])


def test_random_vectors_draw_only_the_papers_equivalent_pairs():
    """Training mode draws one equivalent pair per direction: the ON/OFF events of the one-pixel
    image then sit where some pair of the paper's set for that direction puts them."""
    gen = torch.Generator().manual_seed(0)
    allowed = []
    for name in PAPER_ORDER:
        _, pairs = PAPER_TABLE[name]
        allowed.append(
            {
                (
                    (1 - ROWCOL[b][0] + 1, 2 - ROWCOL[b][1] + 1),
                    (1 - ROWCOL[a][0] + 1, 2 - ROWCOL[a][1] + 1),
                )
                for a, b in pairs
            }
        )
    seen = [set() for _ in PAPER_ORDER]
    for _ in range(60):
        ev = i2e(one_pixel_image(), ratio=0.5, random_vectors=True, generator=gen).numpy()[:, 0]
        for t in range(8):
            on, off = np.argwhere(ev[t, 0]), np.argwhere(ev[t, 1])
            if len(on) == 1 and len(off) == 1:
                got = (tuple(on[0]), tuple(off[0]))
            else:  # a pair whose tap falls outside the 4x5 image: events clipped at the border
                got = None
            if got is not None:
                assert got in allowed[t], (PAPER_ORDER[t], got)
                seen[t].add(got)
    # every direction's draws vary (each set has more than one in-image placement)
    assert all(len(s) >= 2 for s in seen), seen


# --- the torch path (_fire, what CUDA runs) on CPU tensors ----------------------------------------


def _fire_on_cpu(images: torch.Tensor, pairs, ratio: float, mode: str) -> torch.Tensor:
    v = conversion.value_channel(images)
    out = torch.empty((len(pairs), v.shape[0], 2, *v.shape[1:]), dtype=torch.bool)
    conversion._fire(v, pairs, ratio, mode, out)
    return out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("padding", ["replicate", "zeros", "reflect"])
@pytest.mark.parametrize("size", [(24, 40), (17, 17)])
def test_torch_path_equals_the_numpy_engine_bit_for_bit(dtype, padding, size):
    gen = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (5, 3, *size), generator=gen, dtype=torch.uint8)
    imgs[1] = imgs[1] // 4  # a narrow range; image 2 flat (no events), image 3 of two values
    imgs[2] = 77
    imgs[3] = torch.where(imgs[3] > 128, 200, 10).to(torch.uint8)
    if dtype == torch.float32:
        imgs = imgs.float() / 255
    mode = conversion.PADDINGS[padding]
    for ratio in (0.0, 0.07, 0.12, 0.5):
        for random_vectors in (False, True):
            g = torch.Generator().manual_seed(7)
            pairs = conversion.draw_pairs(directions.PAPER_ORDER, random_vectors, g)
            engine = i2e(
                imgs,
                ratio=ratio,
                padding=padding,
                random_vectors=random_vectors,
                generator=torch.Generator().manual_seed(7),
            )
            fired = _fire_on_cpu(imgs, pairs, ratio, mode)
            assert torch.equal(engine, fired), (ratio, random_vectors)
            if padding != "zeros":  # a flat image gives no events (zero padding makes edges)
                assert engine[:, 2].sum() == 0
    assert engine.any()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("padding", ["replicate", "zeros", "reflect"])
@pytest.mark.parametrize("size", [(1, 1), (1, 6), (6, 1), (2, 2), (2, 5), (5, 3)])
def test_tiny_images_equal_the_torch_path(dtype, padding, size):
    """Images of one to three rows or columns, where the engine's first and last columns (and
    rows) are all there is."""
    imgs = torch.randint(
        0, 256, (6, 3, *size), generator=torch.Generator().manual_seed(3), dtype=torch.uint8
    )
    if dtype == torch.float32:
        imgs = imgs.float() / 255
    if padding == "reflect" and min(size) < 2:  # nothing to mirror: a clear error
        with pytest.raises(ValueError, match="reflect.*2x2 pixels"):
            i2e(imgs, ratio=0.12, padding=padding)
        return
    for ratio in (0.0, 0.12, 0.5):
        for seed in range(3):
            pairs = conversion.draw_pairs(
                directions.PAPER_ORDER, seed > 0, torch.Generator().manual_seed(seed)
            )
            engine = i2e(
                imgs,
                ratio=ratio,
                padding=padding,
                random_vectors=seed > 0,
                generator=torch.Generator().manual_seed(seed),
            )
            fired = _fire_on_cpu(imgs, pairs, ratio, conversion.PADDINGS[padding])
            assert torch.equal(engine, fired), (ratio, seed)


def test_non_square_engine_matches_algorithm1_and_its_transpose():
    """24 x 40: the engine equals Algorithm 1; transposing the image transposes the events with
    the directions mirrored (x <-> y), which catches any H/W mix-up in the engine."""
    gen = torch.Generator().manual_seed(2)
    imgs = torch.randint(0, 256, (3, 3, 24, 40), generator=gen, dtype=torch.uint8)
    ev = i2e(imgs, ratio=0.1)
    assert ev.shape == (8, 3, 2, 24, 40)
    assert torch.equal(ev, algorithm1(imgs, ratio=0.1).bool())
    # mirror each pair across the main diagonal: position (r, c) -> (c, r)
    mirror = {p: 1 + 3 * ROWCOL[p][1] + ROWCOL[p][0] for p in ROWCOL}
    pairs = [(mirror[a], mirror[b]) for a, b in ALGORITHM1_PAIRS]
    transposed = algorithm1(imgs.transpose(2, 3), ratio=0.1, pairs=pairs).bool()
    assert transposed.shape == (8, 3, 2, 40, 24)
    assert torch.equal(transposed.transpose(3, 4), ev)
