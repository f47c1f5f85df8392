"""Loihi 2's 24-bit neuron states: the QAT forward computes the chip's wrap of ``u`` and clip of
``v`` exactly, and the deployable network cannot reach them (``SpikingGraph.state_bounds``,
``project_state_range``). Oracle: Lava's own bit-accurate ``PyLifModelBitAcc``, stepped
directly (no runtime), and lava-dl's ``cuba.Neuron`` for what changes without the limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lava.proc.lif.models import PyLifModelBitAcc

from i2e_neuro.models.qat import (
    STATE_LIMIT,
    VOLTAGE_DECAY,
    NeuronConfig,
    SpikingGraph,
    chip_voltage,
    randomize_batchnorm,
)
from i2e_neuro.models.spec import build_spec
from tests.oracles import slayer_spikes

SPEC = build_spec("msresnet_tiny", (2, 32, 32), 10, 8)


def _lava_lif(a_in: np.ndarray, bias_mant: np.ndarray, vth_mant: int):
    """Lava's stock bit-accurate LIF fed ``a_in`` ``[N, T]`` (du 4095 + 1: no current carried
    over, dv 2048, bias exponent 6): ``(u, v, spikes)`` ``[N, T]`` after each step."""
    n, steps = a_in.shape
    lif = PyLifModelBitAcc({"shape": (n,)})
    lif.u, lif.v = np.zeros(n, np.int32), np.zeros(n, np.int32)
    lif.du, lif.dv, lif.vth = 4095, VOLTAGE_DECAY, vth_mant
    lif.bias_mant, lif.bias_exp = bias_mant.astype(np.int16), np.full(n, 6, np.int16)
    out = {k: np.zeros((n, steps), np.int64) for k in "uvs"}
    for t in range(steps):
        lif.scale_bias()
        lif.scale_threshold()
        lif.subthr_dynamics(activation_in=a_in[:, t].astype(np.int32))
        s = lif.spiking_activation()
        lif.reset_voltage(spike_vector=s)
        out["u"][:, t], out["v"][:, t], out["s"][:, t] = lif.u, lif.v, s
    return out["u"], out["v"], out["s"]


def _neuron():
    cfg = NeuronConfig()
    model = SpikingGraph(SPEC, cfg)
    return cfg, model.neurons["readout"]


def test_qat_neuron_equals_lavas_bit_accurate_lif_at_the_24_bit_limits():
    """Inputs that drive u past 2**23 (wrap) and v past +-(2**23 - 1) (clip): the QAT neuron's
    spikes and voltage equal Lava's stock model step for step; lava-dl's own dynamics do not."""
    rng = np.random.default_rng(3)
    n, steps = 3000, 16
    a_in = rng.integers(-(2**18), 2**18, (n, steps))  # u = a_in << 6 up to 2**24: wraps
    a_in[: n // 3] = -(2**17) + rng.integers(0, 2**14, (n // 3, steps))  # v down to the clip
    bias = rng.integers(-4096, 513, n)  # MIN_BIAS .. max_bias, in 1/64 units
    cfg, neuron = _neuron()
    u_lava, v_lava, s_lava = _lava_lif(a_in, bias, cfg.vth_mant)
    assert (np.abs(a_in << 6) > STATE_LIMIT).any() and (v_lava == 1 - STATE_LIMIT).any()

    synaptic = torch.from_numpy(a_in).double().float()[:, None, :] / 64  # weight units
    b = torch.from_numpy(bias).float().view(n, 1, 1) / 64
    # one neuron per sample (bias per sample): [B=n, C=1, T]
    peaks: dict = {}
    voltage = chip_voltage(synaptic, b, cfg.vth_mant << 6, peaks)
    spikes = neuron.spike(voltage)[:, 0].numpy().astype(np.int64)
    v = (voltage[:, 0] * 4096).round().to(torch.int64).numpy()
    assert np.array_equal(spikes, s_lava)
    assert np.array_equal(np.where(s_lava, 0, v), v_lava)
    assert peaks["u"] == int(np.abs(a_in << 6).max()) and peaks["v"] > STATE_LIMIT

    # lava-dl's cuba.Neuron on the same input (bias into the current): spikes differ
    plain = neuron(synaptic + b)[:, 0].numpy().astype(np.int64)
    assert (plain != s_lava).sum() > 100


def test_qat_neuron_gradient_is_slayers_in_range():
    """Within range the chip neuron is lava-dl's cuba.Neuron: same spikes, same gradient."""
    torch.manual_seed(0)
    cfg, neuron = _neuron()
    syn = (torch.randint(-2000, 2000, (4, 10, 12)).float() / 64).requires_grad_()
    bias = (torch.randint(-200, 200, (1, 10, 1)).float() / 64).requires_grad_()
    s_chip = neuron.spike(chip_voltage(syn, bias, cfg.vth_mant << 6))
    (s_chip * torch.arange(12.0)).sum().backward()
    g_chip = (syn.grad.clone(), bias.grad.clone())
    syn.grad = bias.grad = None
    s_slayer = neuron(syn + bias)
    (s_slayer * torch.arange(12.0)).sum().backward()
    assert torch.equal(s_chip, s_slayer) and s_chip.sum() > 10
    assert torch.allclose(g_chip[0], syn.grad) and torch.allclose(g_chip[1], bias.grad)
    assert g_chip[0].abs().sum() > 0


def _strong_model(seed: int = 0, gain: float = 12.0, project: bool = True) -> SpikingGraph:
    """Random excitatory weights (``|w|``), ``gain`` times larger than the init: with dense
    input, states far beyond 24 bits unless projected (``project=False`` scales the weights
    after ``fold``, as a model trained without the projection could have them)."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(SpikingGraph(SPEC), seed)
    with torch.no_grad():
        for syn in model.synapses.values():
            syn.weight.abs_()
            if project:
                syn.weight.mul_(gain)
    model.eval().fold()
    if not project:
        with torch.no_grad():
            for i, syn in enumerate(model.synapses.values()):
                syn.weight.mul_(gain)
                model.exponents[i] = min(7, int(model.exponents[i]) + 4)
    return model


def test_state_bounds_are_reached_by_the_worst_input():
    """The data-free bound of ``u`` is exact: the input that spikes through every positive
    weight of the stem into one neuron, at once, drives that neuron's ``u`` to the bound."""
    model = _strong_model(project=True)
    bounds = model.state_bounds()
    w = model.integer_parameters()["conns"]["stem"]
    weight = w["weight"] << w["exponent"]  # [16, 2, 7, 7]
    ch = int(weight.clamp(min=0).sum(dim=(1, 2, 3)).argmax())
    events = torch.zeros(SPEC.timesteps, 1, 2, 32, 32)
    # stem: kernel 7, stride 4, padding 3, so output (1, 1) reads inputs 1..7, all in bounds
    events[0, 0, :, 1:8, 1:8] = (weight[ch] > 0).float()
    peaks: dict = {}
    model(events, states=peaks)
    assert peaks["s0b0.sn1"]["u"] == bounds["s0b0.sn1"]["u_high"]
    assert peaks["s0b0.sn1"]["u"] <= bounds["s0b0.sn1"]["u"] < STATE_LIMIT


def test_projection_keeps_every_group_in_range_whatever_the_weights():
    for seed, gain in [(0, 12.0), (1, 40.0)]:
        model = _strong_model(seed, gain, project=True)
        for g, b in model.state_bounds().items():
            assert b["u"] < STATE_LIMIT and b["v"] < STATE_LIMIT, (seed, g, b)
        raw = _strong_model(seed, gain, project=False)
        assert max(max(b["u"], b["v"]) for b in raw.state_bounds().values()) > STATE_LIMIT
        assert raw.project_state_range() > 0
        assert all(b["v"] < STATE_LIMIT for b in raw.state_bounds().values())


def test_projection_of_unit_mantissas_converges_in_one_pass():
    """Small mantissas (3) at the largest exponent, as a release checkpoint mapped onto the chip
    can give: 0.9 * 3 rounded to the nearest mantissa is 3 again (the old projection gave up
    after 20 passes); rounded toward zero, one call brings every group into range and a second
    moves nothing."""
    torch.manual_seed(3)
    model = randomize_batchnorm(SpikingGraph(SPEC), 3)
    model.eval().fold()
    with torch.no_grad():
        for i, syn in enumerate(model.synapses.values()):
            model.exponents[i] = 7
            syn.weight.fill_(3 * 2.0**7 / 64)  # mantissa 3: 0.9 * 3 rounds back to 3
    assert max(max(b["u"], b["v"]) for b in model.state_bounds().values()) > STATE_LIMIT
    assert model.project_state_range() > 0
    assert all(max(b["u"], b["v"]) < STATE_LIMIT for b in model.state_bounds().values())
    assert model.project_state_range() == 0


def strong_events(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Dense, high-contrast event input ``[T, n, 2, 32, 32]`` (about half the pixels firing
    in every frame): saturated noise, the hardest case for the states."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(SPEC.timesteps, n, 2, 32, 32, generator=g) < 0.5).float()


@pytest.mark.parametrize("project", [True, False], ids=["projected", "unprojected"])
def test_strong_inputs_qat_forward_is_the_chip_and_lava_dl_only_in_range(project: bool):
    """With the projection, no state can reach 24 bits and lava-dl's own dynamics agree with
    the chip's; without it (the mechanism removed), the strong input overflows and lava-dl's
    dynamics (no wrap, no clip) spike differently from the chip's that the QAT model computes."""
    model = _strong_model(0, 12.0, project=project)
    events = strong_events()
    peaks: dict = {}
    with torch.no_grad():
        _, chip = model(events, record=True, states=peaks)
    plain = slayer_spikes(model, events)
    top = max(max(p["u"], p["v"]) for p in peaks.values())
    differ = sum(int((chip[g] != plain[g]).sum()) for g in chip)
    first = {g: p["overflow_step"] for g, p in peaks.items() if "overflow_step" in p}
    if project:
        assert top < STATE_LIMIT and differ == 0 and not first
    else:
        assert top > STATE_LIMIT and differ > 0
        # the first overflow: a step at which the group has synaptic input (one hop on)
        assert first and all(1 <= t < SPEC.steps for t in first.values())


def strong_images() -> "Samples":  # noqa: F821 - the eval_data type, imported lazily
    """The sample photos at 32x32 and saturated digits (every non-zero pixel at 255): dense,
    high-contrast images, converted by I2E into many events."""
    from i2e_neuro.datasets.eval_data import Samples, load_samples
    from i2e_neuro.datasets.sample_photos import SAMPLES

    photos = load_samples(str(SAMPLES), (32, 32))
    digits = load_samples("digits", (32, 32), limit=4)
    saturated = np.where(digits.data > 0, 255, 0).astype(np.uint8)
    if saturated.shape[1] != photos.data.shape[1]:
        saturated = np.repeat(saturated[:, :1], photos.data.shape[1], axis=1)
    data = np.concatenate([photos.data, saturated])
    return Samples(data, np.full(len(data), -1), [*photos.names, *digits.names])


@pytest.mark.slow
@pytest.mark.parametrize("project", [True, False], ids=["projected", "unprojected"])
def test_strong_images_lava_equals_the_qat_model_spike_for_spike(project: bool):
    """Photos and saturated digits through the exported network: Lava with the fast models and
    with Lava's stock bit-accurate models spike exactly as the QAT (lava-dl) model, projected
    (every state in range: legal) or not (states past 24 bits: the chip's wrap and clip,
    computed by both sides)."""
    from export.description import from_deploy
    from export.lava.runner import simulate
    from export.peers.lava_dl import run_lava_dl, state_peaks

    model = _strong_model(0, 12.0, project=project)
    classes = [str(i) for i in range(10)]
    desc = from_deploy(model.deploy(i2e={"ratio": 0.1, "order": "efghabcd"}, classes=classes))
    samples = strong_images()
    n = len(samples.data)
    reference = run_lava_dl(desc, samples, record=n)
    peaks = state_peaks(desc, samples)
    top = max(max(p["u"], p["v"]) for p in peaks.values())
    assert (top < STATE_LIMIT) if project else (top > STATE_LIMIT)
    for fast in (True, False):
        lava = simulate(desc, samples.data, record=n, fast=fast)
        assert lava.padding_spikes == 0
        for g in desc.groups:
            assert np.array_equal(lava.trains[g.name], reference.trains[g.name]), (fast, g.name)
        assert (lava.predictions == reference.predictions).all()
    assert sum(int(t.sum()) for t in reference.trains.values()) > 1000
    # lava-dl's own dynamics (no wrap, no clip) agree with Lava only while the states fit
    from export.peers.lava_dl import sample_events

    plain = slayer_spikes(model, sample_events(desc, samples, 0, n))
    differ = sum(
        int((plain[g.name].movedim(-1, 1).numpy() != lava.trains[g.name]).sum())
        for g in desc.groups
    )
    assert (differ == 0) if project else (differ > 100)
