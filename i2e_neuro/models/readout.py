"""The network's output as the chip delivers it: spikes of the readout group, counted on the host.

Loihi 2 cannot hand a neuron's voltage to the host in a deployable graph, but it sends output
spikes through ``NxToPyAdapter``; lava-dl's netx tutorials classify by counting them on the
host (``tutorials/lava/lib/dl/netx/mnist/run.ipynb``, ``OutSpkToCls``: ``argmax`` of the spikes
accumulated over a sample window). Here the class is the readout neuron with the most spikes in
the window; ties go to the one that spiked first (the host sees every spike's step), then to the
lowest index. Training (``SpikingGraph.forward``), the lava-dl reference run and the Lava host
process all decide with these functions, so the prediction is the same function of the same spikes.
"""

from __future__ import annotations

import numpy as np

#: Tie-break weight: ``count + 1 / (2 + first_spike_step)`` (0 for a silent neuron).
_NO_SPIKE = 1 << 20


def spike_scores(spikes):
    """Training logits from readout spikes ``[B, K, T]`` (torch): ``count + 1 / (2 + first)``.

    The count carries the (surrogate) gradient; the tie-break term is detached and below 0.5,
    so ``argmax`` ranks by count, then by the earliest first spike, then by index
    (``torch.argmax`` returns the first maximum), exactly as :func:`predict` does.
    """
    count = spikes.sum(-1)
    fired = spikes.detach() > 0
    first = fired.float().argmax(-1).float()
    tie = (1.0 / (2.0 + first)) * fired.any(-1).float()
    return count + tie.detach()


def first_spike(trains: np.ndarray) -> np.ndarray:
    """Step of the first spike along the last axis of ``trains`` (``[..., T]``), or -1 if none."""
    fired = np.asarray(trains) != 0
    first = fired.argmax(-1)
    return np.where(fired.any(-1), first, -1)


def predict(counts: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Class per sample from spike ``counts`` ``[N, K]`` and ``first`` spike steps (-1: none).

    Most spikes wins; ties go to the earliest first spike, then to the lowest index.
    """
    counts = np.asarray(counts, dtype=np.int64)
    first = np.asarray(first, dtype=np.int64)
    key = counts * (2 * _NO_SPIKE) + (_NO_SPIKE - np.where(first < 0, _NO_SPIKE, first))
    return key.argmax(axis=1)
