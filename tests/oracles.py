"""Independent reference computations for the tests: written from first principles, sharing no
code with ``i2e_neuro.energy`` or ``export.synops``.

* :func:`synops_by_convolution`: synaptic operations from per-neuron spike counts. A conv
  connection delivers, to every output neuron, one accumulate per spike in its receptive field
  (all input channels): summing a ``conv2d`` of the count map with an all-ones kernel of the
  connection's shape over all outputs gives the total, borders and strides included, without
  any fan-out map. A pooled-dense connection delivers every spike to every readout neuron.
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
    """Spikes per neuron ``(C, H, W)`` of each group, summed over the batch and all steps, from
    the lava-dl model's own forward pass (not :func:`export.peers.lava_dl.run_lava_dl`)."""
    with torch.no_grad():
        _, rec = model.eval()(events, record=True)
    return {g.name: rec[g.name].sum(dim=(0, 4)).numpy().astype(np.int64) for g in groups}


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
