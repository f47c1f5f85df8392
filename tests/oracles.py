"""Independent reference computations for the tests: written from first principles, sharing no
code with ``i2e_neuro.energy`` or ``export.synops``.

* :func:`synops_by_convolution`: synaptic operations from per-neuron spike counts. A conv
  connection delivers, to every output neuron, one accumulate per spike in its receptive field
  (all input channels): summing a ``conv2d`` of the count map with an all-ones kernel of the
  connection's shape over all outputs gives the total, borders and strides included, without
  any fan-out map. A pooled-dense connection delivers every spike to every readout neuron.
* :func:`effective_synops_by_convolution`: the same with a 0/1 kernel that is 1 where the
  connection's weight is nonzero (NeuroBench's effective count), and :func:`dense_by_convolution`
  with every source active (NeuroBench's ``Dense`` of one step).
* :func:`random_folded_description`: a network with random weights and BatchNorm statistics,
  folded to Loihi integers, and its network description (no training).
* :func:`slayer_spikes`: a folded model's spikes through lava-dl's own CUBA dynamics (no
  24-bit limits), against which the chip-exact QAT forward is compared.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from i2e_neuro.models.spec import INPUT


def synops_by_convolution(desc, input_counts: np.ndarray, neuron_counts: dict) -> dict[str, int]:
    """SynOps per source population (``"input"`` and each spiking group) from spike counts
    ``(C, H, W)`` per neuron, summed over the samples (integers)."""
    counts = {INPUT: input_counts, **neuron_counts}
    total: dict[str, int] = {}
    for c in desc.connections:
        spikes = torch.from_numpy(np.asarray(counts[c.source], dtype=np.float64))
        out_channels = int(c.weight.shape[0])
        if c.kind == "pool_dense":
            ops = spikes.sum() * out_channels
        else:
            ones = torch.ones(
                out_channels, spikes.shape[0], c.kernel, c.kernel, dtype=torch.float64
            )
            ops = F.conv2d(spikes[None], ones, stride=c.stride, padding=c.padding).sum()
        total[c.source] = total.get(c.source, 0) + int(ops.round())
    return total


def effective_synops_by_convolution(desc, input_counts, neuron_counts) -> dict[str, int]:
    """Per connection: spikes x the nonzero-weight synapses they reach, summed over the samples."""
    counts = {INPUT: input_counts, **neuron_counts}
    total = {}
    for c in desc.connections:
        spikes = torch.from_numpy(np.asarray(counts[c.source], dtype=np.float64))
        mask = torch.from_numpy((np.asarray(c.weight) != 0).astype(np.float64))
        if c.kind == "pool_dense":  # (K, C): a spike of channel c reaches the K with w != 0
            ops = (spikes.sum((1, 2)) * mask.sum(0)).sum()
        else:
            ops = F.conv2d(spikes[None], mask, stride=c.stride, padding=c.padding).sum()
        total[c.name] = int(ops.round())
    return total


def dense_by_convolution(desc) -> dict[str, int]:
    """Per connection: the synapses of one step with every source active (zero weights too)."""
    total = {}
    for c in desc.connections:
        shape = desc.source_shape(c.source)
        ones = torch.ones(1, *shape, dtype=torch.float64)
        if c.kind == "pool_dense":
            total[c.name] = int(np.prod(shape)) * int(c.weight.shape[0])
        else:
            kernel = torch.ones(c.weight.shape, dtype=torch.float64)
            ops = F.conv2d(ones, kernel, stride=c.stride, padding=c.padding).sum()
            total[c.name] = int(ops.round())
    return total


def random_folded_model(spec, seed: int = 0, gain: float = 1.0):
    """A :class:`SpikingGraph` of ``spec`` with random weights (times ``gain``) and BatchNorm
    statistics, folded to integers."""
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm

    torch.manual_seed(seed)
    model = randomize_batchnorm(SpikingGraph(spec), seed)
    if gain != 1.0:
        with torch.no_grad():
            for syn in model.synapses.values():
                syn.weight.mul_(gain)
    model.eval().fold()
    return model


def random_folded_description(spec, seed: int = 0, gain: float = 1.0, ratio: float = 0.1):
    """``(model, description)`` of :func:`random_folded_model`."""
    from export.description import from_deploy

    model = random_folded_model(spec, seed, gain)
    classes = [str(i) for i in range(spec.num_classes)]
    deploy = model.deploy(i2e={"ratio": ratio, "order": "efghabcd"}, classes=classes)
    return model, from_deploy(deploy)


def record_counts(model, events: torch.Tensor, groups) -> dict[str, np.ndarray]:
    """Spikes per neuron (``(C, H, W)``, the readout ``(K,)``) of each group, summed over the
    batch and all steps, from the lava-dl model's own forward pass (not
    :func:`export.peers.lava_dl.run_lava_dl`)."""
    with torch.no_grad():
        _, rec = model.eval()(events, record=True)
    return {g.name: rec[g.name].sum(dim=(0, -1)).numpy().astype(np.int64) for g in groups}


# --- the official I2E release, transcribed ----------------------------------------------------
# From the published source of Ruichen0424/I2E (Train Script/*/Network/i2e.py, class I2E, in
# evaluation mode) and its README's preprocessing protocol, rewritten here as plain functions.
# The direction lists are written out as the release has them: for each of the 8 kernels the
# canonical pair [a, b], -1 at a and +1 at b on the row-major 3x3 neighbourhood 1..9; the
# release then reorders the kernels by ``shuffle`` (default [4, 5, 6, 7, 0, 1, 2, 3]).
OFFICIAL_CANONICAL = [[5, 6], [5, 2], [5, 3], [5, 1], [9, 4], [4, 3], [3, 8], [8, 1]]
OFFICIAL_SHUFFLE = [4, 5, 6, 7, 0, 1, 2, 3]


def official_preprocess(path, size):
    """The release's protocol: PIL -> RGB -> PILToTensor -> Resize((H, W), BICUBIC) (tensor,
    antialias on) -> ToDtype(float32, scale=True); ``[3, H, W]`` float."""
    from PIL import Image
    from torchvision.transforms import v2

    pipeline = v2.Compose(
        [
            v2.Lambda(lambda x: x.convert("RGB")),
            v2.PILToTensor(),
            v2.Resize(tuple(size), interpolation=v2.InterpolationMode.BICUBIC),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    with Image.open(path) as im:
        return pipeline(im)


def official_i2e(img, ratio, shuffle=OFFICIAL_SHUFFLE, with_values=False):
    """The release's I2E forward (evaluation: canonical pairs) of ``img`` ``[B, 3, H, W]``:
    ``[8, B, 2, H, W]`` float 0/1, threshold ``>=``. ``with_values``: also the compared values
    ``[8, B, 2, H, W]`` and the thresholds ``[1, B, 1, 1, 1]`` (to find exact ties)."""
    weight = torch.zeros((8, 1, 3, 3))
    for i, (a, b) in enumerate(OFFICIAL_CANONICAL):
        weight[i, 0, (a - 1) // 3, (a - 1) % 3] = -1
        weight[i, 0, (b - 1) // 3, (b - 1) % 3] = 1
    weight = weight[np.array(shuffle)]
    img_v, _ = torch.max(img, 1, keepdim=True)
    img_v = F.pad(img_v, (1, 1, 1, 1), mode="replicate")
    hi = torch.max(torch.max(img_v, 3, True)[0], 2, True)[0]
    lo = torch.min(torch.min(img_v, 3, True)[0], 2, True)[0]
    img_range = (hi - lo).unsqueeze(0)
    all_v = F.conv2d(img_v, weight).permute(1, 0, 2, 3)
    pos_v = all_v * all_v.ge(0).float()
    neg_v = -all_v * all_v.lt(0).float()
    values = torch.stack([pos_v, neg_v], dim=2)
    threshold = img_range * ratio
    out = values.ge(threshold).float()
    return (out, values, threshold) if with_values else out


def official_resnet_logits(state: dict, events: torch.Tensor, blocks=(2, 2, 2, 2)) -> torch.Tensor:
    """The release's MS-ResNet forward (``Network/MSNet.py``, BasicBlock, multi-step, eval),
    written from its published source as plain tensor code over its own parameter names
    (``module.`` already dropped): ``events`` ``[T, B, 2, H, W]`` -> logits ``[B, K]``.

    LIF (SpikingJelly LIFNode, tau 2, ``decay_input=False``, hard reset to 0, threshold 1):
    ``h = v - v / 2 + x``, spike where ``h >= 1``, then ``v = h * (1 - spike)``."""

    def per_step(fn, x):  # [T, B, ...] -> fn on [T*B, ...]
        t, b = x.shape[:2]
        y = fn(x.flatten(0, 1))
        return y.reshape(t, b, *y.shape[1:])

    def bn(x, name):
        return per_step(
            lambda z: F.batch_norm(
                z,
                state[f"{name}.running_mean"],
                state[f"{name}.running_var"],
                state[f"{name}.weight"],
                state[f"{name}.bias"],
                False,
                0.0,
                1e-5,
            ),
            x,
        )

    def conv(x, name, stride, padding):
        return per_step(lambda z: F.conv2d(z, state[f"{name}.weight"], None, stride, padding), x)

    def lif(x):
        v = torch.zeros_like(x[0])
        out = []
        for xt in x:
            h = v - v / 2.0 + xt
            s = (h >= 1.0).to(x.dtype)
            v = h * (1.0 - s)
            out.append(s)
        return torch.stack(out)

    x = events.float()
    x = bn(conv(x, "conv1", 2, 3), "bn1")
    x = per_step(lambda z: F.max_pool2d(z, 3, 2, 1), x)
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            stride = 2 if stage > 1 and j == 0 else 1
            out = bn(conv(lif(x), f"{p}.conv1", stride, 1), f"{p}.bn1")
            out = bn(conv(lif(out), f"{p}.conv2", 1, 1), f"{p}.bn2")
            if f"{p}.downsample.1.weight" in state:
                identity = bn(conv(lif(x), f"{p}.downsample.1", stride, 0), f"{p}.downsample.2")
            else:
                identity = x
            x = out + identity
    x = lif(x.mean(dim=(3, 4)))  # adaptive average pool to 1x1, flattened; then the head's LIF
    logits = x @ state["fc.weight"].T + state["fc.bias"]
    return logits.mean(0)


def slayer_spikes(model, events: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spikes ``[B, ..., steps]`` per group of a folded :class:`SpikingGraph` run through
    lava-dl's own ``slayer.neuron.cuba.Neuron`` dynamics (synaptic input plus bias into the
    current; no 24-bit wrap of ``u``, no clip of ``v``): the QAT forward without the chip's
    limits, to show what they change."""
    from i2e_neuro.layouts import i2e_to_slayer
    from i2e_neuro.models.qat import _key, quantize_bias

    spikes = {INPUT: i2e_to_slayer(events, model.spec.steps)}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for g in model.spec.groups:
            total = 0
            for c in model.spec.incoming(g.name):
                if c.name not in outputs:
                    outputs[c.name] = model._synapse(c, spikes[c.source])
                total = total + outputs[c.name]
            bias = quantize_bias(model.biases[_key(g.name)], model.neuron_config.max_bias)
            total = total + bias.view(1, -1, *([1] * (total.ndim - 2)))
            spikes[g.name] = model.neurons[_key(g.name)](total.float())
    del spikes[INPUT]
    return spikes
