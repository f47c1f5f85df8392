"""The readout decision: training's logits rank classes exactly as the host's count does."""

import numpy as np
import torch

from i2e_neuro.models.readout import first_spike, predict, spike_scores


def test_training_logits_and_host_prediction_agree_ties_included():
    rng = np.random.default_rng(0)
    spikes = (rng.random((500, 6, 16)) < 0.15).astype(np.float32)
    spikes[:50] = 0  # silent samples: class 0
    spikes[50:100, :, :] = spikes[50:100, :1, :]  # every class the same train: lowest index
    spikes[100:150, 3, 2] = 1  # equal counts, earlier first spike wins
    logits = spike_scores(torch.from_numpy(spikes))
    host = predict(spikes.sum(-1), first_spike(spikes))
    assert np.array_equal(logits.argmax(1).numpy(), host)
    assert (host[:100] == 0).all()
    counts = spikes.sum(-1)
    assert np.array_equal(counts[np.arange(500), host], counts.max(1))


def test_logits_carry_the_count_gradient():
    x = torch.zeros(2, 3, 5, requires_grad=True)
    spike_scores(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
