"""The models checked for values, with every group active.

* Loihi's one-step hop delay: with strong positive weights and dense input every group spikes,
  and each group's first spike is exactly at its hop depth (fewest hops from the input).
* The SpikingJelly reference against a hand-built forward pass of the paper's MS-ResNet
  (LIF tau 2, decay_input False, v_th 1, hard reset to 0; stem conv -> BN -> max-pool; blocks
  sn -> conv3x3 -> BN -> sn -> conv3x3 -> BN plus the membrane shortcut; downsample
  sn -> conv1x1 -> BN; head average pool -> sn -> fc; logits averaged over time).
"""

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import neuron as sj_neuron

from i2e_neuro.models.qat import SpikingGraph, _key
from i2e_neuro.models.reference import build_reference
from i2e_neuro.models.spec import INPUT, build_spec


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 24, 40)])
def test_every_group_spikes_first_at_its_hop_depth(shape):
    spec = build_spec("msresnet_tiny", shape, 10)
    model = SpikingGraph(spec).eval()
    with torch.no_grad():
        for c in spec.conns:  # BatchNorm at its defaults (identity), no shift
            model.synapses[_key(c.name)].weight.fill_(1.0)
    events = torch.ones(8, 2, *shape, dtype=torch.bool)
    events[:, 1] = False  # ON everywhere, OFF nowhere
    with torch.no_grad():
        _, spikes = model(events, record=True)
    nearest = {INPUT: 0}  # fewest hops from the input (membrane shortcuts skip blocks)
    for g in spec.groups:
        nearest[g.name] = 1 + min(nearest[c.source] for c in spec.incoming(g.name))
    # stem -> s0b0.sn1 and s1b0.sn1 (1 hop), s0b0.sn2, s1b0.sn2, head.sn (2), readout (3)
    assert sorted({nearest[g.name] for g in spec.groups}) == [1, 2, 3]
    for g in spec.groups:
        if g.readout:
            continue
        s = spikes[g.name]  # [B, C, H, W, steps]
        assert s.sum() > 0, f"{g.name}: silent"
        fired = s.flatten(0, 3).any(0).nonzero().flatten()
        assert int(fired[0]) == nearest[g.name], (g.name, fired[:3].tolist())


# --- the SpikingJelly reference, by hand ------------------------------------------------------


def lif(x: torch.Tensor) -> torch.Tensor:
    """Multi-step LIF [T, ...]: H = V/2 + X; spike where H >= 1; V = 0 after a spike, else H."""
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v * 0.5 + x[t]
        s = (h >= 1.0).to(x.dtype)
        v = h * (1.0 - s)
        out.append(s)
    return torch.stack(out)


def per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a single-step op to [T, B, ...] frame by frame (as SpikingJelly's multi-step layers)."""
    y = fn(x.flatten(0, 1))
    return y.view(x.shape[0], x.shape[1], *y.shape[1:])


def conv_bn(x, conv, bn, stride, padding):
    return per_frame(
        lambda z: F.batch_norm(
            F.conv2d(z, conv.weight, None, stride, padding),
            bn.running_mean,
            bn.running_var,
            bn.weight,
            bn.bias,
            False,
            0.0,
            bn.eps,
        ),
        x,
    )


def hand_forward(model, events: torch.Tensor) -> torch.Tensor:
    """MS-ResNet (msresnet_tiny widths 16, 32, one block each) from the paper's description, with
    the reference model's parameters."""
    x = events.float()
    stem_conv, stem_bn = model.stem[0], model.stem[1]
    x = conv_bn(x, stem_conv, stem_bn, 2, 1)  # 3x3 stride 2 (the tiny stem)
    x = per_frame(lambda z: F.max_pool2d(z, 3, 2, 1), x)
    strides = [1, 2]
    for block, stride in zip(model.blocks, strides):
        r = block.residual  # lif, conv, bn, lif, conv, bn
        s1 = lif(x)
        y = conv_bn(s1, r[1], r[2], stride, 1)
        y = conv_bn(lif(y), r[4], r[5], 1, 1)
        if block.shortcut is None:
            x = y + x  # membrane shortcut: the residual stream is synaptic input, not spikes
        else:
            sc = block.shortcut  # lif, conv1x1, bn (the lif sees the same x as s1)
            x = y + conv_bn(s1, sc[1], sc[2], stride, 0)
    pooled = x.mean(dim=(3, 4))  # [T, B, C]
    logits = F.linear(lif(pooled), model.fc.weight, model.fc.bias)
    return logits.mean(0)


def test_spikingjelly_reference_equals_the_hand_built_network():
    torch.manual_seed(0)
    model = build_reference("msresnet_tiny", 2, 5).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.1)
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(4.0)  # strong enough for activity in every layer
    events = torch.rand(8, 3, 2, 24, 40, generator=g) < 0.2  # H != W
    rates = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: rates.append(float(o.mean())))
        for m in model.modules()
        if isinstance(m, sj_neuron.LIFNode)
    ]
    with torch.no_grad():
        got = model(events)
        expected = hand_forward(model, events)
    for h in hooks:
        h.remove()
    assert got.shape == (3, 5)
    assert len(rates) == 6 and min(rates) > 0.005, rates  # every LIF layer is active
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert expected.abs().max() > 0.05
