"""What a peer run of a NIR graph reports, gathered batch by batch: predictions decided from the
readout's spikes as on Loihi (:func:`i2e_neuro.models.readout.predict`), spikes per neuron of
every group, and the full trains of the first samples."""

from __future__ import annotations

import numpy as np

from i2e_neuro.models.readout import first_spike, predict


class SpikeRecord:
    """Collects :meth:`add` of each batch; :meth:`result` gives ``(predictions [N], counts
    {group: spikes per neuron}, trains {group: [min(record, N), steps, *shape] bool})``."""

    def __init__(self, groups: list[str], readout: str, record: int, population: int = 1) -> None:
        self.groups, self.readout, self.record = groups, readout, record
        self.population = population  # readout neurons per class
        self.predictions: list[np.ndarray] = []
        self.counts = {g: 0 for g in groups}
        self.trains: dict[str, list] = {g: [] for g in groups}

    def add(self, seen: dict[str, list], start: int) -> None:
        """One batch starting at sample ``start``: ``seen[group]`` the per-step spike tensors
        ``[B, *shape]`` a forward hook collected."""
        import torch

        for g in self.groups:
            spikes = torch.stack(seen[g], 1)  # [B, steps, *shape]
            if g == self.readout:
                spikes = spikes.reshape(*spikes.shape[:2], -1)  # (K, 1, 1) -> (K,)
                out = spikes.movedim(1, -1).numpy()  # [B, K, steps]
                self.predictions.append(predict(out.sum(-1), first_spike(out), self.population))
            self.counts[g] = self.counts[g] + spikes.sum((0, 1)).numpy().astype(np.int64)
            if start < self.record:
                self.trains[g].append(spikes[: self.record - start].numpy().astype(bool))

    def result(self) -> tuple[np.ndarray, dict, dict]:
        trains = {g: np.concatenate(v) for g, v in self.trains.items() if v}
        return np.concatenate(self.predictions), self.counts, trains
