"""Independent reference computations for the tests: written from first principles, sharing no
code with ``i2e_neuro.energy`` or ``export.synops``.

* :func:`synops_by_convolution`: synaptic operations from per-neuron spike counts. A conv
  connection delivers, to every output neuron, one accumulate per spike in its receptive field
  (all input channels): summing a ``conv2d`` of the count map with an all-ones kernel of the
  connection's shape over all outputs gives the total, borders and strides included, without
  any fan-out map. A pooled-dense connection delivers every spike to every readout neuron.
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
