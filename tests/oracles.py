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
