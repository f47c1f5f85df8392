"""Run an exported network description through its lava-dl (slayer) model: the training framework's view.

Used to check Lava against the trained model (predictions, spike trains) and to count spikes
for the energy report; the model is rebuilt exactly from the description's integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from i2e_neuro.datasets.eval_data import Samples
from i2e_neuro.i2e.conversion import i2e
from i2e_neuro.layouts import batch_first_to_time_first
from i2e_neuro.models.readout import first_spike, predict


@dataclass
class LavaDlRun:
    predictions: np.ndarray  # [N]
    trains: dict[
        str, np.ndarray
    ]  # group -> [M, steps, C, H, W] for the first M samples (readout too)
    neuron_counts: dict[str, np.ndarray]  # group -> spikes per neuron [C, H, W] over all samples
    input_counts: np.ndarray  # I2E events per input neuron [2, H, W] over all samples


def sample_events(desc, samples: Samples, start: int, stop: int) -> torch.Tensor:
    """I2E events ``[T, B, 2, H, W]`` of samples ``start:stop`` (canonical vectors, the description's ratio)."""
    batch = torch.from_numpy(samples.data[start:stop])
    if samples.events:
        return batch_first_to_time_first(batch)[: desc.timesteps]
    return i2e(batch, timesteps=desc.timesteps, **desc.i2e_params())


def run_lava_dl(desc, samples: Samples, record: int = 0, batch: int = 64) -> LavaDlRun:
    from i2e_neuro.models.qat import SpikingGraph

    model = SpikingGraph.from_deploy(desc.deploy_record()).eval()
    preds, trains = [], {}
    counts = {g.name: np.zeros(g.shape, dtype=np.int64) for g in desc.groups}
    input_counts = np.zeros(desc.input_shape, dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(samples.data), batch):
            events = sample_events(desc, samples, start, start + batch)
            input_counts += events.sum(dim=(0, 1)).numpy().astype(np.int64)
            _, rec = model(events, record=True)
            out = rec[desc.readout.name].numpy()  # [B, K, steps] readout spikes
            preds.append(predict(out.sum(-1), first_spike(out), desc.readout.population))
            for g in desc.groups:
                spikes = rec[g.name]  # [B, C, H, W, steps] or [B, K, steps]
                counts[g.name] += spikes.sum(dim=(0, -1)).numpy().astype(np.int64)
                if start < record:
                    trains.setdefault(g.name, []).append(
                        spikes.movedim(-1, 1).numpy().astype(bool)[: record - start]
                    )
    return LavaDlRun(
        np.concatenate(preds),
        {k: np.concatenate(v) for k, v in trains.items()},
        counts,
        input_counts,
    )


def state_peaks(desc, samples: Samples, batch: int = 64) -> dict[str, dict[str, int]]:
    """Largest ``|u|`` and ``|v|`` per group (Loihi units) over ``samples`` in the lava-dl model
    of the description's integers, for ``export.lava.legality``'s 24-bit state check."""
    from i2e_neuro.models.qat import SpikingGraph

    model = SpikingGraph.from_deploy(desc.deploy_record()).eval()
    peaks: dict[str, dict[str, int]] = {}
    with torch.no_grad():
        for start in range(0, len(samples.data), batch):
            model(sample_events(desc, samples, start, start + batch), states=peaks)
    return peaks
