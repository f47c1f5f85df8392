"""Sim-to-real: a digits-trained QAT model fine-tuned on CIFAR10-DVS recordings, exported and run in Lava."""

import numpy as np
import pytest

from export.description import from_checkpoint
from export.lava.runner import simulate
from i2e_neuro.datasets.cifar10_dvs import CIFAR10DVS, CLASSES
from i2e_neuro.train import resolve_config, train
from tests.datasets.test_cifar10_dvs import random_events, write_events

# Runs Lava process graphs (OS processes per process model): left out of `make test-fast`.
pytestmark = pytest.mark.slow


def make_recordings(root, per_class: int = 11, events: int = 400):
    rng = np.random.default_rng(0)
    for c in CLASSES:
        for i in range(per_class):
            write_events(root / c / f"cifar10_{c}_{i}.aedat", *random_events(rng, events))


def test_fine_tune_on_cifar10_dvs_then_export_and_simulate(tmp_path, digits_run):
    root = tmp_path / "CIFAR10DVS"
    make_recordings(root)
    assert len(CIFAR10DVS(root, "train")) == 100 and len(CIFAR10DVS(root, "test")) == 10
    source = digits_run[1]  # the session's digits model (tests/conftest.py)
    cfg = resolve_config(
        dataset="cifar10-dvs",
        root=str(root),
        arch="msresnet_tiny",
        init=source["checkpoint"],
        epochs=0,
        qat_epochs=1,
        limit_train=8,
        limit_test=4,
        batch_size=4,
    )
    tuned = train(cfg, tmp_path / "dvs")
    assert 0.0 <= tuned["test_accuracy"] <= 1.0
    desc = from_checkpoint(tuned["checkpoint"])
    assert desc.input_shape == (2, 128, 128) and desc.classes == list(CLASSES)
    events = np.stack(
        [CIFAR10DVS(root, "test")[i][0].numpy() for i in range(1)]
    )  # [1, T, 2, 128, 128]
    result = simulate(desc, events, events=True, record=1)
    assert result.readout_counts.shape == (1, 10 * desc.readout.population)
