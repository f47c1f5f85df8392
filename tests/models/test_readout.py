"""The readout decision: training's logits rank classes exactly as the host's count does."""

import numpy as np
import pytest
import torch

from i2e_neuro.models.readout import class_votes, first_spike, predict, spike_scores
from i2e_neuro.models.spec import build_spec


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


def test_population_votes_add_up_per_class_and_training_ranks_alike():
    rng = np.random.default_rng(1)
    spikes = (rng.random((400, 4 * 3, 12)) < 0.2).astype(np.float32)  # 4 classes x 3 neurons
    spikes[:40] = 0  # silent: class 0
    spikes[40:80, :, :] = 0
    spikes[40:80, 7, 5] = spikes[40:80, 9, 5] = 1  # classes 2 and 3 tie at 1 spike, same step
    spikes[80:120] = 0
    spikes[80:120, 11, 2] = spikes[80:120, 1, 6] = 1  # tie at 1: class 3 spiked first
    counts, first = spikes.sum(-1), first_spike(spikes)
    host = predict(counts, first, population=3)
    logits = spike_scores(torch.from_numpy(spikes), population=3)
    assert logits.shape == (400, 4)
    assert np.array_equal(logits.argmax(1).numpy(), host)
    assert (host[:40] == 0).all() and (host[40:80] == 2).all() and (host[80:120] == 3).all()
    votes, earliest = class_votes(counts, first, 3)
    assert np.array_equal(votes, counts.reshape(400, 4, 3).sum(-1))
    assert np.array_equal(votes[np.arange(400), host], votes.max(1))
    assert (earliest[:40] == -1).all() and earliest[80, 3] == 2 and earliest[80, 0] == 6
    # the mean count per neuron: the logits keep the scale of one neuron's count
    assert torch.allclose(logits.floor(), torch.from_numpy(votes / 3).float().floor())


def test_population_of_one_is_the_one_neuron_readout():
    rng = np.random.default_rng(2)
    spikes = (rng.random((100, 5, 9)) < 0.3).astype(np.float32)
    assert np.array_equal(
        predict(spikes.sum(-1), first_spike(spikes)),
        predict(spikes.sum(-1), first_spike(spikes), population=1),
    )


def test_a_population_that_does_not_divide_the_readout_is_refused():
    with pytest.raises(ValueError, match="3 neurons per class"):
        predict(np.zeros((2, 10)), np.full((2, 10), -1), population=3)
    spec = build_spec("msresnet_tiny", (2, 16, 16), 4, population=3)
    assert spec.readout.shape == (12,) and spec.num_classes == 4
    spec.groups[-1].population = 5
    with pytest.raises(ValueError, match="readout.*population 5"):
        spec.validate()
