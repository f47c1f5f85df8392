"""The network's output as the chip delivers it: spikes of the readout group, counted on the host.

Loihi 2 cannot hand a neuron's voltage to the host in a deployable graph, but it sends output
spikes through ``NxToPyAdapter``; lava-dl's netx tutorials classify by counting them on the
host (``tutorials/lava/lib/dl/netx/mnist/run.ipynb``, ``OutSpkToCls``: ``argmax`` of the spikes
accumulated over a sample window). Here each class has ``population`` readout neurons
(class-major: neuron ``k * population + j``; a population code, as in Diehl & Cook 2015 and
slayer's population losses): the class's score is the spikes of its neurons in the window, so
the score resolves ``population`` times finer than one neuron's count, which a window of a few
steps caps at a few values. The class with the most spikes wins; ties go to the class whose
first spike came earliest (the host sees every spike's step), then to the lowest index.
Training (``SpikingGraph.forward``), the lava-dl reference run and the Lava host process all
decide with these functions, so the prediction is the same function of the same spikes.
"""

from __future__ import annotations

import numpy as np

#: Tie-break weight: ``count + 1 / (2 + first_spike_step)`` (0 for a silent class).
_NO_SPIKE = 1 << 20


def spike_scores(spikes, population: int = 1):
    """Training logits from readout spikes ``[B, K * population, T]`` (torch):
    ``(count + 1 / (2 + first)) / population`` per class.

    The count (the class's spikes) carries the (surrogate) gradient; divided by ``population``
    it is the mean count per neuron, so the logits keep one scale whatever the population. The
    tie-break term is detached and below half a spike, so ``argmax`` ranks by count, then by
    the earliest first spike, then by index (``torch.argmax`` returns the first maximum),
    exactly as :func:`predict` does.
    """
    b, n, t = spikes.shape
    spikes = spikes.reshape(b, n // population, population, t)
    count = spikes.sum((-2, -1))
    fired = (spikes.detach() > 0).any(-2)  # [B, K, T]: a neuron of the class spiked
    first = fired.float().argmax(-1).float()
    tie = (1.0 / (2.0 + first)) * fired.any(-1).float()
    return (count + tie.detach()) / population


def first_spike(trains: np.ndarray) -> np.ndarray:
    """Step of the first spike along the last axis of ``trains`` (``[..., T]``), or -1 if none."""
    fired = np.asarray(trains) != 0
    first = fired.argmax(-1)
    return np.where(fired.any(-1), first, -1)


def class_votes(
    counts: np.ndarray, first: np.ndarray, population: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron ``counts`` and ``first`` spike steps ``[N, K * population]`` -> per class
    ``[N, K]``: the spikes of the class's neurons, and the earliest first spike (-1: none)."""
    counts = np.asarray(counts, dtype=np.int64)
    first = np.asarray(first, dtype=np.int64)
    n, size = counts.shape
    if first.shape != counts.shape or size % population:
        raise ValueError(
            f"readout: counts {counts.shape} and first spikes {first.shape} must match and hold "
            f"{population} neurons per class"
        )
    counts = counts.reshape(n, size // population, population).sum(-1)
    first = np.where(first < 0, _NO_SPIKE, first).reshape(n, size // population, population)
    first = first.min(-1)
    return counts, np.where(first >= _NO_SPIKE, -1, first)


def predict(counts: np.ndarray, first: np.ndarray, population: int = 1) -> np.ndarray:
    """Class per sample from the readout neurons' spike ``counts`` ``[N, K * population]`` and
    ``first`` spike steps (-1: none).

    Most spikes of a class's neurons wins; ties go to the earliest first spike, then to the
    lowest index.
    """
    counts, first = class_votes(counts, first, population)
    key = counts * (2 * _NO_SPIKE) + (_NO_SPIKE - np.where(first < 0, _NO_SPIKE, first))
    return key.argmax(axis=1)
