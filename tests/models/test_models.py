"""The QAT graph model (lava-dl slayer) and the SpikingJelly reference: shapes, layouts, timing,
integer parameters, BatchNorm folding, and the SpikingJelly LIF -> Loihi CUBA neuron mapping."""

import pytest
import torch
from spikingjelly.activation_based import neuron as sj_neuron

from i2e_neuro import i2e
from i2e_neuro.datasets.sources import load_digits_source
from i2e_neuro.layouts import i2e_to_slayer, slayer_to_i2e
from i2e_neuro.models import qat
from i2e_neuro.models.qat import (
    CURRENT_DECAY,
    VOLTAGE_DECAY,
    WEIGHT_SCALE,
    NeuronConfig,
    SpikingGraph,
    _key,
)
from i2e_neuro.models.reference import build_reference
from i2e_neuro.models.spec import INPUT, build_spec, msresnet_spec


def digit_events(n: int = 4, size: int = 16, ratio: float = 0.1) -> torch.Tensor:
    """I2E events [8, n, 2, size, size] of the first n test digits."""
    src = load_digits_source("test", channels=1, size=size)
    images = torch.from_numpy(src.images[:n]).permute(0, 3, 1, 2)
    return i2e(images, ratio=ratio)


def tiny_spec(size: int = 16, classes: int = 5):
    """Stem, one plain and one downsampling block (with a membrane shortcut), head, readout."""
    return msresnet_spec(
        "t",
        (1, 1),
        (4, 8),
        input_shape=(2, size, size),
        num_classes=classes,
        stem_kernel=3,
        stem_stride=2,
        stem_padding=1,
    )


# --- shapes, layouts, timing ----------------------------------------------------------------------


def test_qat_model_shapes_layouts_and_hop_delays():
    torch.manual_seed(0)
    spec = build_spec("msresnet_tiny", (2, 32, 32), 10)
    model = SpikingGraph(spec).eval()
    events = digit_events(3, 32)
    assert events.shape == (8, 3, 2, 32, 32) and events.dtype == torch.bool
    with torch.no_grad():
        logits, spikes = model(events, record=True)
    assert logits.shape == (3, 10)
    assert spec.steps == 8 + spec.depths()["readout"]
    nearest = {INPUT: 0}  # fewest hops from the input (membrane shortcuts skip blocks)
    for g in spec.groups:
        nearest[g.name] = 1 + min(nearest[c.source] for c in spec.incoming(g.name))
    for g in spec.groups:
        s = spikes[g.name]
        assert s.shape == (3, *g.shape, spec.steps), g.name  # slayer layout [B, C, H, W, T]
        # Loihi's one-step hop delay: nothing can arrive at a group before step nearest(group)
        assert not s[..., : nearest[g.name]].any(), g.name
    # the layout helpers are inverse to each other and pad time at the end only
    x = i2e_to_slayer(events, spec.steps)
    assert x.shape == (3, 2, 32, 32, spec.steps) and x.dtype == torch.float32
    assert torch.equal(slayer_to_i2e(x[..., :8]).bool(), events) and not x[..., 8:].any()


def test_reference_model_shapes():
    torch.manual_seed(0)
    for arch, size in (("msresnet_tiny", 32), ("msresnet18", 64)):
        model = build_reference(arch, 2, 7)
        events = torch.rand(8, 2, 2, size, size) < 0.1
        with torch.no_grad():
            logits = model(events)
        assert logits.shape == (2, 7), arch
        # the multi-step state is reset on every call: the same input gives the same output
        with torch.no_grad():
            assert torch.equal(model(events), logits)


def test_model_moves_between_dtypes_and_devices():
    # SpikingGraph must not shadow torch.nn.Module._apply (used by .to(), .cuda(), .double())
    model = SpikingGraph(tiny_spec()).to("cpu").double().float()
    assert model.synapses["stem"].weight.dtype == torch.float32


def test_integer_parameters_are_8bit_mantissas_with_an_exponent_per_connection():
    torch.manual_seed(1)
    spec = tiny_spec()
    model = SpikingGraph(spec)
    with pytest.raises(RuntimeError, match="fold"):
        model.integer_parameters()
    with torch.no_grad():  # some weights large enough to need exponents > 0
        model.synapses["stem"].weight.mul_(40)
    model(digit_events(4))  # BN running stats of a training-mode pass
    model.eval().fold()
    ints = model.integer_parameters()
    assert set(ints["conns"]) == {c.name for c in spec.conns}
    assert set(ints["groups"]) == {g.name for g in spec.groups}
    exps = set()
    for c in spec.conns:
        p = ints["conns"][c.name]
        w = p["weight"]
        assert w.dtype == torch.int64 and int(w.min()) >= -128 and int(w.max()) <= 127, c.name
        assert isinstance(p["exponent"], int) and 0 <= p["exponent"] <= qat.MAX_EXPONENT
        exps.add(p["exponent"])
        expected = (
            (c.out_channels, c.in_channels, c.kernel, c.kernel)
            if c.kind == "conv"
            else (c.out_channels, c.in_channels)
        )
        assert tuple(w.shape) == expected
    assert len(exps) > 1
    for g in spec.groups:
        b = ints["groups"][g.name]["bias"]
        assert b.dtype == torch.int64 and b.shape == (g.shape[0],)
        assert int(b.max()) <= model.neuron_config.max_bias * 64


# --- BatchNorm folding ---------------------------------------------------------------------------


def _set_exact_bn(model: SpikingGraph, gen: torch.Generator) -> None:
    """Weights, BN statistics and affine parameters for which folding is exact in float32.

    Per channel gamma / sqrt(var + eps) = gamma / 16 * s with s in {1/2, 1, 2} (var + eps in
    {1024, 256, 64}, eps = 0.25 so var is exact too), so the folded weight is
    threshold * gamma/sigma * w = gamma * s * w: raw weights are chosen as m * 2**e / 64 / (gamma s)
    with integer mantissas m (one at 127, fixing the exponent e). Means on the 1/32 grid and
    betas chosen so that every folded bias is an integer number of 1/64 within Loihi's range.
    """
    th = model.neuron_config.threshold
    for i, c in enumerate(model.spec.conns):
        syn = model.synapses[_key(c.name)]
        e = i % 3 + 1  # exponents 1, 2, 3
        m = torch.randint(-90, 128, syn.weight.shape, generator=gen).float()
        m.view(-1)[0] = 127
        folded = m * 2.0**e / WEIGHT_SCALE
        if not c.batchnorm:
            syn.weight.data.copy_(folded)
            continue
        bn = model.norms[_key(c.name)]
        k = c.out_channels
        s = 2.0 ** torch.randint(-1, 2, (k,), generator=gen).float()
        gamma = (
            torch.where(torch.rand(k, generator=gen) < 0.5, -1.0, 1.0)
            * 2.0 ** torch.randint(0, 2, (k,), generator=gen).float()
        )
        bn.eps = 0.25
        bn.running_var.copy_((16.0 / s) ** 2 - 0.25)
        bn.weight.data.copy_(gamma)
        inv = gamma / torch.sqrt(bn.running_var + bn.eps)
        assert torch.equal(inv, gamma * s / 16)  # exact powers of two
        shape = (-1,) + (1,) * (syn.weight.ndim - 1)
        syn.weight.data.copy_(folded / (th * inv).view(shape))
        mean = torch.randint(-64, 64, (k,), generator=gen).float() / 32
        bias = (
            torch.randint(-96, 64, (k,), generator=gen).float() / 64
        )  # added to each target group
        bn.running_mean.copy_(mean)
        # folded shift th * (beta - mean * inv) == bias  <=>  beta = bias / th + mean * inv
        bn.bias.data.copy_(bias / th + mean * inv)
        assert torch.equal(th * (bn.bias - bn.running_mean * inv), bias)


def test_bn_folding_is_exact_spike_for_spike():
    torch.manual_seed(0)
    spec = tiny_spec(16, 5)
    model = SpikingGraph(spec).eval()
    _set_exact_bn(model, torch.Generator().manual_seed(3))
    events = digit_events(6, 16)
    with torch.no_grad():
        logits, before = model(events, record=True)
        model.fold()
        expected = [i % 3 + 1 for i in range(len(spec.conns))]
        assert model.exponents.tolist() == expected
        q_logits, after = model(events, record=True)
    for g in spec.groups:
        assert before[g.name].sum() > 0, f"{g.name}: silent, the test would prove nothing"
        assert torch.equal(before[g.name], after[g.name]), g.name
    assert torch.equal(logits, q_logits)
    # and the deployable integers reproduce the same weights exactly
    ints = model.integer_parameters()
    for c in spec.conns:
        w = model.synapses[_key(c.name)].weight
        p = ints["conns"][c.name]
        assert torch.equal(
            p["weight"].to(w.dtype).reshape(w.shape) * 2.0 ** p["exponent"] / WEIGHT_SCALE, w
        )


def test_bn_folding_matches_in_float_without_quantization(monkeypatch):
    """General BN statistics: folded float weights + biases give the unfolded conv -> BN currents
    up to float rounding (on the same input spikes), and nearly the same spikes and logits."""
    torch.manual_seed(0)
    spec = tiny_spec(16, 5)
    model = SpikingGraph(spec)
    events = digit_events(8, 16)
    with torch.no_grad():
        for c in spec.conns:  # strong enough weights for activity in every group
            model.synapses[_key(c.name)].weight.mul_(3.0)
        model.train()
        for _ in range(2):
            model(events)  # running statistics from data
        for bn in model.norms.values():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        model.eval()
        logits, before = model(events, record=True)
        before[INPUT] = i2e_to_slayer(events, spec.steps)

        def currents():
            out = {}
            for g in spec.groups:
                total = sum(model._synapse(c, before[c.source]) for c in spec.incoming(g.name))
                if bool(model.folded):
                    total = total + qat.quantize_bias(model.biases[_key(g.name)], 0).view(
                        1, -1, *([1] * (total.ndim - 2))
                    )
                out[g.name] = total
            return out

        unfolded = currents()
        monkeypatch.setattr(qat, "quantize_weight", lambda w, e: w)
        monkeypatch.setattr(qat, "quantize_bias", lambda b, m: b)
        model.fold()
        folded = currents()
        f_logits, after = model(events, record=True)
    for g in spec.groups:
        assert unfolded[g.name].abs().max() > 1, g.name
        torch.testing.assert_close(
            folded[g.name], unfolded[g.name], rtol=1e-5, atol=1e-4, msg=g.name
        )
    total = agree = 0
    for g in spec.groups:
        if not g.readout:
            assert before[g.name].sum() > 0, g.name
            total += before[g.name].numel()
            agree += int((before[g.name] == after[g.name]).sum())
    # whole-network spikes can flip only where a voltage lies within rounding of the threshold
    # (slayer truncates currents to 1/4096), and a flip propagates; it stays rare
    assert agree / total > 0.999, f"{total - agree} of {total} spikes differ"
    torch.testing.assert_close(f_logits, logits, rtol=0, atol=0.05)


# --- the neuron mapping -------------------------------------------------------------------------


def test_spikingjelly_lif_maps_to_loihi_cuba_except_at_exact_ties():
    """SJ LIFNode(tau=2, decay_input=False, v_th=1, v_reset=0) on x == slayer CUBA(threshold 16,
    du 4096, dv 2048, scale 64) on 16 x, for x on the 2^-8 grid over 8 steps (every halving exact);
    they differ only at H == 1 exactly: SpikingJelly fires there, Loihi (v > threshold) does not."""
    cfg = NeuronConfig()
    assert (CURRENT_DECAY, VOLTAGE_DECAY, cfg.threshold) == (4096, 2048, 16.0)
    gen = torch.Generator().manual_seed(0)
    T, n = 8, 20000
    x = torch.randint(-160, 300, (T, n), generator=gen).float() / 256  # [T, N], multiples of 2^-8
    sj = sj_neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="m")
    lo = qat.slayer.neuron.cuba.Neuron(
        threshold=cfg.threshold,
        current_decay=CURRENT_DECAY / 4096,
        voltage_decay=VOLTAGE_DECAY / 4096,
        scale=WEIGHT_SCALE,
    )
    with torch.no_grad():
        s_sj = sj(x).T  # [N, T]
        s_lo = lo((cfg.threshold * x).T[None])[0]  # slayer [B, N, T]
    # SpikingJelly's membrane before firing, H[t], from its own recurrence (to locate the ties)
    v = torch.zeros(n, dtype=torch.float64)
    h = torch.empty(T, n, dtype=torch.float64)
    for t in range(T):
        h[t] = v / 2 + x[t].double()
        v = torch.where(h[t] >= 1, torch.zeros_like(v), h[t])
    assert torch.equal((h >= 1).float().T, s_sj)
    tie = (h == 1).T  # [N, T]
    first_tie = torch.where(tie.any(1), tie.float().argmax(1), torch.full((n,), T))
    steps = torch.arange(T)[None]
    before_tie = steps < first_tie[:, None]
    # no tie yet: identical spike trains
    assert torch.equal(s_sj[before_tie], s_lo[before_tie])
    # the tie rule: at the first tie SpikingJelly fires and Loihi does not
    rows = torch.nonzero(first_tie < T).squeeze(1)
    assert len(rows) > 100, "too few ties to test the rule"
    at = first_tie[rows]
    assert (s_sj[rows, at] == 1).all() and (s_lo[rows, at] == 0).all()
    # neurons that never tie agree over all steps (most of them)
    never = first_tie == T
    assert never.float().mean() > 0.5 and torch.equal(s_sj[never], s_lo[never])
    assert s_sj.sum() > 1000


def test_projected_bn_shifts_fold_without_clipping():
    """project_bn_shifts keeps every group's folded bias <= max_bias, so fold() clips nothing."""
    torch.manual_seed(0)
    spec = tiny_spec(16, 5)
    model = SpikingGraph(spec).train()
    with torch.no_grad():
        model(digit_events(6, 16))  # running statistics
        for bn in model.norms.values():
            bn.bias.uniform_(-1.0, 1.5)  # shifts up to +24: neurons that would fire without input
    limit = model.neuron_config.max_bias

    def folded_sums():
        return {
            g.name: sum(model._bn_shift(c) for c in spec.incoming(g.name) if c.batchnorm)
            for g in spec.groups
            if not g.readout
        }

    assert max(float(v.max()) for v in folded_sums().values()) > limit
    assert model.project_bn_shifts() > 0
    for name, v in folded_sums().items():
        assert float(v.max()) <= limit + 1e-5, name
    model.fold()
    for g in spec.groups:
        if not g.readout:
            assert float(model.biases[_key(g.name)].max()) <= limit + 1e-5, g.name
    assert model.project_bn_shifts() == 0  # nothing to do once folded


def test_projected_bn_shifts_stay_above_the_bias_mantissa_floor():
    """Shifts below Loihi's lowest bias (13-bit mantissa -4096 at exponent 6) are moved back up,
    so fold() clips nothing there either (clipping them cost 47 points on digits)."""
    torch.manual_seed(0)
    spec = tiny_spec(16, 5)
    model = SpikingGraph(spec).train()
    with torch.no_grad():
        model(digit_events(6, 16))
        for bn in model.norms.values():
            bn.bias.uniform_(-8.0, -5.0)  # shifts down to -128: far below the floor of -64

    def lowest():
        return min(
            float(sum(model._bn_shift(c) for c in spec.incoming(g.name) if c.batchnorm).min())
            for g in spec.groups
            if not g.readout
        )

    assert lowest() < qat.MIN_BIAS
    assert model.project_bn_shifts() > 0
    assert lowest() >= qat.MIN_BIAS - 1e-4
    model.fold()
    for g in spec.groups:
        if not g.readout:
            assert float(model.biases[_key(g.name)].min()) >= qat.MIN_BIAS - 1e-4, g.name
