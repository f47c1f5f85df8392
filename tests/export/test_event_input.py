"""Event samples (``I2ESource(events=True)``) through Lava and lava-dl, every spike compared: event
files written and read back, and CIFAR10-DVS recordings. Both at H != W where the data allows
(event files 24 x 40; CIFAR10-DVS is 128 x 128 by nature)."""

import numpy as np
import pytest
import torch

from export.hdf5 import load_hdf5, save_hdf5
from export.lava.runner import simulate
from export.peers.lava_dl import run_lava_dl
from i2e_neuro import i2e
from i2e_neuro.datasets.cifar10_dvs import CLASSES
from i2e_neuro.datasets.eval_data import Samples, load_samples
from i2e_neuro.datasets.formats import load_events, save_events
from i2e_neuro.layouts import batch_first_to_time_first
from i2e_neuro.models.spec import build_spec
from tests.datasets.test_cifar10_dvs import write_events
from tests.export.test_export import assert_same_spikes  # every group, readout too
from tests.oracles import random_folded_description

# Runs Lava process graphs (OS processes per process model): left out of `make test-fast`.
pytestmark = pytest.mark.slow


def reference(model, events_ntchw: np.ndarray) -> dict:
    """The lava-dl model's spikes on event samples ``[N, T, 2, H, W]``."""
    with torch.no_grad():
        _, rec = model.eval()(
            batch_first_to_time_first(torch.from_numpy(events_ntchw)), record=True
        )
    return rec


def assert_polarity_matters(model, events: np.ndarray, desc) -> None:
    """Swapping ON and OFF changes the model's spikes: the comparison can see a swap."""
    a, b = reference(model, events), reference(model, np.ascontiguousarray(events[:, :, ::-1]))
    assert any(not torch.equal(a[g.name], b[g.name]) for g in desc.spiking_groups)


def test_event_files_through_lava_and_lava_dl_non_square(tmp_path):
    model, desc = random_folded_description(build_spec("msresnet_tiny", (2, 24, 40), 5), seed=2)
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (3, 3, 24, 40), generator=gen, dtype=torch.uint8)
    path = save_events(tmp_path / "ev.npz", i2e(images, ratio=0.1), labels=[0, 1, 2])
    events = batch_first_to_time_first(load_events(path).events)  # [N, T, 2, 24, 40]
    assert events.shape == (3, 8, 2, 24, 40) and events.dtype == bool
    # the exported file (HDF5) of the non-square network, read back, is what Lava runs
    back = load_hdf5(save_hdf5(desc, tmp_path / "net.h5"))
    assert back.input_shape == (2, 24, 40)
    result = simulate(back, events, events=True, record=3)
    assert_same_spikes(result, reference(model, events), desc)
    assert_polarity_matters(model, events, desc)
    # export/lava_dl_run.py on the same event samples: predictions and per-neuron counts
    ref = run_lava_dl(back, Samples(events, np.arange(3), ["a", "b", "c"], events=True))
    assert np.array_equal(ref.predictions, result.predictions)
    for g in desc.spiking_groups:
        assert np.array_equal(ref.neuron_counts[g.name], result.neuron_counts[g.name]), g.name
    assert np.array_equal(ref.input_counts, events.sum(axis=(0, 1)))


def test_cifar10_dvs_recordings_through_lava_and_lava_dl(tmp_path):
    root = tmp_path / "CIFAR10DVS"
    rng = np.random.default_rng(5)
    for i, c in enumerate(CLASSES):
        # a blob of 20k events: ON in its right half, OFF in its left (polarity matters)
        n = 20_000
        t = np.sort(rng.integers(0, 1_000_000, n))
        x = np.clip(rng.normal(64, 20, n), 0, 127).astype(np.int64)
        y = np.clip(rng.normal(40 + 5 * i, 16, n), 0, 127).astype(np.int64)
        write_events(root / c / f"cifar10_{c}_0.aedat", t, x, y, (x > 64).astype(np.int64))
    samples = load_samples("cifar10-dvs", (128, 128), root=str(root), split="all", limit=2)
    assert samples.events and samples.data.shape == (2, 8, 2, 128, 128)
    events = samples.data
    model, desc = random_folded_description(build_spec("msresnet_tiny", (2, 128, 128), 10), seed=4)
    result = simulate(desc, events, events=True, record=2)
    assert_same_spikes(result, reference(model, events), desc)
    assert_polarity_matters(model, events, desc)
    ref = run_lava_dl(desc, Samples(events, samples.labels, samples.names, events=True))
    assert np.array_equal(ref.predictions, result.predictions)
