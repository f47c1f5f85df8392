"""One shard of a simulation job (:mod:`export.simulation`): its samples through the Lava graph
and through lava-dl, as integer counts."""

from __future__ import annotations

import time

import numpy as np

import export
from export.lava.runner import simulate
from export.peers.lava_dl import run_lava_dl
from export.simulation import SHARD_KIND, SimulationJob, file_sha256, first_divergence
from export.synops import fanout_map
from i2e_neuro.datasets.eval_data import Samples, load_samples
from i2e_neuro.shards import shard_bounds


def run_counts(job: SimulationJob, shard: int = 0, shards: int = 1) -> dict:
    """Simulate shard ``shard`` of ``shards`` of the samples; integer counts as a JSON-able dict."""
    digest = file_sha256(job.model)
    desc = export.load(job.model)
    if file_sha256(job.model) != digest:
        raise ValueError(f"--model {job.model}: the file changed while it was read; run again")
    every = load_samples(job.data, desc.input_shape[1:], job.root, job.split, job.limit, job.config)
    total = len(every.labels)
    start, stop = shard_bounds(total, shard, shards)
    samples = Samples(
        every.data[start:stop], every.labels[start:stop], every.names[start:stop], every.events
    )
    n = stop - start
    check = max(0, min(job.check, stop) - start)  # the run's first --check samples
    counts = {
        "kind": SHARD_KIND,
        "shard": [shard, shards],
        "run": job.identity(total, digest),
        "start": start,
        "stop": stop,
        "steps": desc.steps,
        "groups": [{"group": g.name, "neurons": g.size} for g in desc.spiking_groups],
        "labelled": int((samples.labels >= 0).sum()),
        "correct": 0,
        "agree": 0,
        "checked": check,
        "mismatches": 0,
        "first_divergence": None,
        "spikes": {g.name: 0 for g in desc.spiking_groups},
        "synops": {},
        "seconds": 0.0,
    }
    if n == 0:
        return counts
    began = time.perf_counter()
    result = simulate(
        desc,
        samples.data,
        events=samples.events,
        backend=job.backend,
        record=check,
        fast=not job.stock,
        in_process=not job.lava_processes,
    )
    counts["seconds"] = time.perf_counter() - began
    reference = run_lava_dl(desc, samples, check)
    labelled = samples.labels >= 0
    counts["correct"] = int((result.predictions[labelled] == samples.labels[labelled]).sum())
    counts["agree"] = int((result.predictions == reference.predictions).sum())
    if check:
        counts["mismatches"] = (
            int(sum((result.trains[g] != reference.trains[g]).sum() for g in reference.trains))
            + result.padding_spikes  # a spike in a padding step is one lava-dl does not have
        )
        order = [g.name for g in desc.groups]
        counts["first_divergence"] = first_divergence(
            result.trains, reference.trains, order, offset=start
        )
    populations = [("i2e input", "input", reference.input_counts)] + [
        (g.name, g.name, result.neuron_counts[g.name]) for g in desc.spiking_groups
    ]
    for label, source, per_neuron in populations:
        outgoing = [c for c in desc.connections if c.source == source]
        fanout = sum(fanout_map(desc, c) for c in outgoing)
        counts["synops"][label] = int((np.asarray(per_neuron, np.int64) * fanout).sum())
    for g in desc.spiking_groups:
        counts["spikes"][g.name] = int(result.counts[g.name].sum())
    return counts
