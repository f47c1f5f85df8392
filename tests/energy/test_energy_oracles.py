"""Whole-network ANN MACs and SNN SynOps of the digits model, computed here from first principles
and compared with ``export.synops`` / ``i2e_neuro.energy`` (which set the demo's energy ratio).

The ANN is the same network with dense multiply-accumulates, once per image, on RGB input; per
connection: the kernel taps that land inside the input (padded positions cost nothing) x output
channels x input channels, summed over output positions. A pooled-dense connection (global
sum-pool then dense) is an ANN's sum-pool (adds) and one dense layer, K x C MACs. The earlier
figure (padded positions counted, the head as a dense layer over every position) is kept as
``macs_ann_padded_tiled``. SNN synapses: a pooled-dense connection has every source neuron reach
every output.
"""

import numpy as np
import pytest
import torch

from export.synops import ann_macs, ann_macs_padded_tiled, energy_report
from i2e_neuro import i2e
from i2e_neuro.datasets.sources import load_digits_source
from i2e_neuro.models.spec import build_spec
from tests.oracles import (
    dense_by_convolution,
    effective_synops_by_convolution,
    random_folded_description,
    record_counts,
    synops_by_convolution,
)

# msresnet_tiny on the digits (2 x 32 x 32 events; the ANN sees 3 x 32 x 32 RGB), 10 classes.
# In-bounds taps of a 3x3 pad-1 conv along an axis of n outputs at stride 1: 3n - 2 (the two
# border outputs lose one each); stride 2 from 8 to 4: 2 + 3 + 3 + 3 = 11. The stem, 7x7 stride 4
# pad 3 from 32 to 8: output i reads inputs 4i - 3 .. 4i + 3, so 4 (i = 0) + 7 x 7 = 53 per axis.
#   stem        7x7 stride 4 pad 3, 3 -> 16:  taps 53 x 53 = 2809;  2809 x 16 x 3   = 134,832
#   s0b0.conv1  3x3 stride 1 pad 1, 16 -> 16: taps 22 x 22 = 484;   484 x 16 x 16   = 123,904
#   s0b0.conv2  the same                                                            = 123,904
#   s1b0.conv1  3x3 stride 2 pad 1, 16 -> 32: taps 11 x 11 = 121;   121 x 16 x 32   =  61,952
#   s1b0.down   1x1 stride 2 pad 0, 16 -> 32: 16 positions;          16 x 16 x 32   =   8,192
#   s1b0.conv2  3x3 stride 1 pad 1, 32 -> 32: taps 10 x 10 = 100;   100 x 32 x 32   = 102,400
#   fc          sum-pool (adds) then dense 32 -> 10                 32 x 10         =     320
DIGITS_MACS = {
    "stem": 134_832,
    "s0b0.conv1": 123_904,
    "s0b0.conv2": 123_904,
    "s1b0.conv1": 61_952,
    "s1b0.down": 8_192,
    "s1b0.conv2": 102_400,
    "fc": 320,
}
DIGITS_TOTAL = 555_504

# The earlier figure, padded positions counted and the head tiled over the 4x4 map:
#   stem        7x7 stride 4 pad 3, 3 -> 16:  out 8x8x16 = 1024;   1024 x 49 x 3  = 150,528
#   s0b0.conv1  3x3 stride 1 pad 1, 16 -> 16: out 8x8x16 = 1024;   1024 x 9 x 16  = 147,456
#   s0b0.conv2  3x3 stride 1 pad 1, 16 -> 16: out 8x8x16 = 1024;   1024 x 9 x 16  = 147,456
#   s1b0.conv1  3x3 stride 2 pad 1, 16 -> 32: out 4x4x32 = 512;     512 x 9 x 16  =  73,728
#   s1b0.down   1x1 stride 2 pad 0, 16 -> 32: out 4x4x32 = 512;     512 x 1 x 16  =   8,192
#   s1b0.conv2  3x3 stride 1 pad 1, 32 -> 32: out 4x4x32 = 512;     512 x 9 x 32  = 147,456
#   fc          sum-pool 32 x 4x4 -> dense 10: 32 x 16 sources x 10             =   5,120
DIGITS_MACS_PADDED_TILED = {
    "stem": 150_528,
    "s0b0.conv1": 147_456,
    "s0b0.conv2": 147_456,
    "s1b0.conv1": 73_728,
    "s1b0.down": 8_192,
    "s1b0.conv2": 147_456,
    "fc": 5_120,
}
DIGITS_TOTAL_PADDED_TILED = 679_936

# The same network on 24 x 40 events (H != W):
#   stem        out 6x10; taps 4 + 5 x 7 = 39 rows, 4 + 9 x 7 = 67 columns:
#               39 x 67 = 2613;       2613 x 16 x 3                             = 125,424
#   s0b0.conv1  out 6x10, taps (3*6-2) x (3*10-2) = 16 x 28 = 448: 448 x 16 x 16 = 114,688
#   s0b0.conv2  the same                                                        = 114,688
#   s1b0.conv1  out 3x5; rows 2+3+3 = 8, columns 2+3+3+3+3 = 14: 112 x 16 x 32  = 57,344
#   s1b0.down   out 3x5 = 15:         15 x 16 x 32                              = 7,680
#   s1b0.conv2  out 3x5, taps 7 x 13 = 91:  91 x 32 x 32                        = 93,184
#   fc          32 x 10                                                         = 320
WIDE_MACS = {
    "stem": 125_424,
    "s0b0.conv1": 114_688,
    "s0b0.conv2": 114_688,
    "s1b0.conv1": 57_344,
    "s1b0.down": 7_680,
    "s1b0.conv2": 93_184,
    "fc": 320,
}
E_MAC_PJ = 4.6  # the paper's 32-bit float MAC at 45 nm (Horowitz, ISSCC 2014)
E_AC_PJ = 0.9


@pytest.fixture(scope="module")
def digits_model():
    return random_folded_description(build_spec("msresnet_tiny", (2, 32, 32), 10), seed=0)


@pytest.fixture(scope="module")
def wide_model():
    return random_folded_description(build_spec("msresnet_tiny", (2, 24, 40), 10), seed=1)


def digit_events(n: int) -> torch.Tensor:
    src = load_digits_source("test", channels=1, size=32)
    return i2e(torch.from_numpy(src.images[:n]).permute(0, 3, 1, 2), ratio=0.10)


@pytest.mark.parametrize("which", ["digits", "wide"])
def test_ann_macs_by_hand(which, digits_model, wide_model):
    _, desc = digits_model if which == "digits" else wide_model
    expected = DIGITS_MACS if which == "digits" else WIDE_MACS
    got = {c.name: ann_macs(desc, c) for c in desc.connections}
    assert got == expected
    if which == "digits":
        assert sum(expected.values()) == DIGITS_TOTAL
        old = {c.name: ann_macs_padded_tiled(desc, c) for c in desc.connections}
        assert old == DIGITS_MACS_PADDED_TILED
        assert sum(old.values()) == DIGITS_TOTAL_PADDED_TILED
    # the energy report's ANN column is the same whole-network count, at 4.6 pJ per MAC
    _, h, w = desc.input_shape
    zero = {g.name: np.zeros(g.shape, dtype=np.int64) for g in desc.groups}
    report = energy_report(desc, np.zeros(desc.input_shape, dtype=np.int64), zero, 1)
    assert report["total"]["macs_ann"] == sum(expected.values())
    assert report["total"]["ann_uj"] == pytest.approx(sum(expected.values()) * E_MAC_PJ * 1e-6)
    assert report["layers"][0]["macs_ann"] == expected["stem"]


@pytest.mark.parametrize("which", ["digits", "wide"])
def test_synops_from_independent_counts_and_fanout(which, digits_model, wide_model):
    """SynOps = sum over spikes of the synapses each reaches; here from the lava-dl forward pass's
    own spike records and a convolution with an all-ones kernel (no fan-out map)."""
    model, desc = digits_model if which == "digits" else wide_model
    n = 4
    if which == "digits":
        events = digit_events(n)
    else:
        gen = torch.Generator().manual_seed(4)
        events = i2e(
            torch.randint(0, 256, (n, 3, 24, 40), generator=gen, dtype=torch.uint8), ratio=0.1
        )
    input_counts = events.sum(dim=(0, 1)).numpy().astype(np.int64)
    counts = record_counts(model, events, desc.groups)
    for g in desc.spiking_groups:
        assert counts[g.name].sum() > 0, f"{g.name}: silent, the SynOps check would be weak"
    expected = synops_by_convolution(desc, input_counts, counts)
    report = energy_report(desc, input_counts, counts, n)
    by_row = {r["name"]: r["synops"] * n for r in report["layers"]}
    assert by_row.pop("i2e input") == pytest.approx(expected.pop("input"), rel=1e-12)
    assert by_row == pytest.approx(expected, rel=1e-12)
    total = sum(synops_by_convolution(desc, input_counts, counts).values())
    assert report["total"]["synops"] * n == pytest.approx(total, rel=1e-12)
    assert report["total"]["snn_uj"] * n == pytest.approx(total * E_AC_PJ * 1e-6, rel=1e-12)


def test_synops_by_convolution_on_a_hand_example():
    """The oracle itself: one spike in the corner of an 8x8 map through 3x3 stride 1 pad 1 with 16
    outputs reaches 4 positions x 16 = 64 synapses; one in the middle 9 x 16 = 144; through the
    stride-2 3x3 pad-1 conv (4x4 outputs) a corner spike reaches only output (0, 0): 32."""
    from types import SimpleNamespace

    conv = SimpleNamespace(
        source="input", kind="conv", weight=np.zeros((16, 1, 3, 3)), kernel=3, stride=1, padding=1
    )
    desc = SimpleNamespace(connections=[conv])
    counts = np.zeros((1, 8, 8), dtype=np.int64)
    counts[0, 0, 0] = 1
    assert synops_by_convolution(desc, counts, {}) == {"input": 64}
    counts[0, 0, 0], counts[0, 4, 4] = 0, 1
    assert synops_by_convolution(desc, counts, {}) == {"input": 144}
    down = SimpleNamespace(
        source="input", kind="conv", weight=np.zeros((32, 1, 3, 3)), kernel=3, stride=2, padding=1
    )
    counts[0, 4, 4], counts[0, 0, 0] = 0, 1
    assert synops_by_convolution(SimpleNamespace(connections=[down]), counts, {}) == {"input": 32}


@pytest.mark.parametrize("which", ["digits", "wide"])
def test_neurobench_convention_from_independent_counts(which, digits_model, wide_model):
    """Effective SynOps (nonzero weights only), Dense, activation sparsity, connection sparsity
    and footprint, against convolutions of the lava-dl model's own spike records and by hand."""
    model, desc = digits_model if which == "digits" else wide_model
    n = 3
    if which == "digits":
        events = digit_events(n)
    else:
        gen = torch.Generator().manual_seed(5)
        events = i2e(
            torch.randint(0, 256, (n, 3, 24, 40), generator=gen, dtype=torch.uint8), ratio=0.1
        )
    input_counts = events.sum(dim=(0, 1)).numpy().astype(np.int64)
    counts = record_counts(model, events, desc.groups)
    report = energy_report(desc, input_counts, counts, n)
    rows = {r["name"]: r for r in report["connections"]}
    effective = effective_synops_by_convolution(desc, input_counts, counts)
    dense = dense_by_convolution(desc)
    for c in desc.connections:
        r = rows[c.name]
        assert r["effective_synops"] * n == pytest.approx(effective[c.name], rel=1e-12), c.name
        assert r["dense"] == dense[c.name] * desc.steps, c.name
        zeros = int((c.weight == 0).sum())
        assert (r["weights"], r["zero_weights"]) == (c.weight.size, zeros)
    # zero weights exist here, so the two conventions differ, and only by them
    assert report["total"]["effective_synops"] < report["total"]["synops"]
    assert report["neurobench"]["Effective_ACs"] == report["total"]["effective_synops"]
    assert report["neurobench"]["Dense"] == sum(dense.values()) * desc.steps
    spikes = sum(int(counts[g.name].sum()) for g in desc.groups)
    slots = sum(int(np.prod(g.shape)) for g in desc.groups) * desc.steps * n
    assert report["activation_sparsity"]["overall"] == pytest.approx(1 - spikes / slots)
    readout = desc.readout
    assert report["activation_sparsity"][readout.name] == pytest.approx(
        1 - counts[readout.name].sum() / (readout.shape[0] * desc.steps * n)
    )
    if which == "digits":  # 1568 + 2304 + 2304 + 4608 + 512 + 9216 + 320 mantissas
        assert report["footprint"]["weights"] == 20_832
        zeros = sum(int((c.weight == 0).sum()) for c in desc.connections)
        assert report["neurobench"]["ConnectionSparsity"] == zeros / 20_832


def test_one_input_event_rate_per_report(digits_model):
    """The input row and the first-layer line both divide by the T frames (the paper's f_r)."""
    _, desc = digits_model
    events = digit_events(2)
    input_counts = events.sum(dim=(0, 1)).numpy().astype(np.int64)
    zero = {g.name: np.zeros(g.shape, dtype=np.int64) for g in desc.groups}
    report = energy_report(desc, input_counts, zero, 2)
    rate = input_counts.sum() / 2 / (np.prod(desc.input_shape) * desc.timesteps)
    assert desc.steps > desc.timesteps  # the two divisors would differ
    assert report["layers"][0]["event_rate"] == pytest.approx(rate, rel=1e-12)
    assert report["input_event_rate"] == pytest.approx(rate, rel=1e-12)
    assert report["first_layer"]["event_rate"] == pytest.approx(rate, rel=1e-12)
