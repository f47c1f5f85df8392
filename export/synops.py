"""Synaptic operations from spike counts: each spike times the synapses it actually reaches.

A spike of neuron ``(c, y, x)`` reaches, through a conv connection, ``out_channels`` times the
number of output positions whose receptive field holds ``(y, x)`` (fewer at borders and with
strides); through a pooled-dense connection, every readout neuron. The per-population rows
feed :func:`i2e_neuro.energy.model.energy_table`, together with the MACs of the equivalent ANN (same
layers, dense, once per image, with RGB instead of ON/OFF input in the first layer).

Two conventions side by side (docs/ENERGY.md):

* ``synops`` (ours): every synapse a spike reaches, zero weights included (every synapse of
  the description; whether a chip skips a zero weight depends on its synapse encoding, which
  is not modelled here);
* ``Effective_ACs`` (NeuroBench's ``SynapticOperations``): only the synapses with a nonzero
  weight; ``Dense``: every synapse of every connection at every simulation step, as if every
  source spiked (NeuroBench's all-ones count, padded positions excluded).
"""

from __future__ import annotations

import numpy as np

from export.description import INPUT, Connection, NetworkDescription
from i2e_neuro.energy.model import (
    default_op_energies,
    energy_table,
    energy_totals,
    first_layer_comparison,
    i2e_encoding_ops,
)


def _taps(size: int, out: int, kernel: int, stride: int, padding: int) -> np.ndarray:
    """``hit[d, y] = 1`` where kernel offset ``d`` of some output position lands on input ``y``."""
    hit = np.zeros((kernel, size), dtype=np.int64)
    for o in range(out):
        for d in range(kernel):
            y = o * stride - padding + d
            if 0 <= y < size:
                hit[d, y] += 1
    return hit


def fanout_map(desc: NetworkDescription, c: Connection, nonzero: bool = False) -> np.ndarray:
    """Synapses reached by one spike of each source neuron, shape ``(C, H, W)`` of the source.

    ``nonzero``: only synapses whose weight is not 0 (NeuroBench's effective count).
    """
    cin, h, w = desc.source_shape(c.source)
    out = desc.output_shape(c)
    weight = np.asarray(c.weight)
    if c.kind == "pool_dense":  # weight (K, C): each spike reaches every readout neuron
        per_channel = (weight != 0).sum(0) if nonzero else np.full(cin, out[0])
        return np.broadcast_to(per_channel.astype(np.int64)[:, None, None], (cin, h, w)).copy()
    # per source channel and kernel offset: how many output channels it reaches
    reach = (weight != 0).sum(0) if nonzero else np.full((cin, c.kernel, c.kernel), out[0])
    hy = _taps(h, out[1], c.kernel, c.stride, c.padding)
    hx = _taps(w, out[2], c.kernel, c.stride, c.padding)
    return np.einsum("cab,ay,bx->cyx", reach.astype(np.int64), hy, hx)


def ann_macs(desc: NetworkDescription, c: Connection, rgb_input: bool = True) -> int:
    """MACs of the connection as an ANN layer, the input layer on 3 RGB channels.

    Padded positions are not counted (a zero of the padding costs no MAC; NeuroBench's dense
    count agrees), and a pooled-dense head is what the network has: a global sum-pool (adds,
    no MACs) and a dense layer of ``K x C`` MACs (``K`` classes: the ANN needs no readout
    population). :func:`ann_macs_padded_tiled` is the earlier figure.
    """
    cin_src = desc.source_shape(c.source)[0]
    cin = 3 if (c.source == INPUT and rgb_input) else cin_src
    if c.kind == "pool_dense":
        return int(np.asarray(c.weight).shape[0]) // _population(desc, c) * cin
    return int(fanout_map(desc, c)[0].sum()) * cin


def _population(desc: NetworkDescription, c: Connection) -> int:
    """Readout neurons per class where ``c`` feeds the readout (1 elsewhere)."""
    return desc.readout.population if desc.readout.name in c.targets else 1


def ann_macs_padded_tiled(desc: NetworkDescription, c: Connection, rgb_input: bool = True) -> int:
    """The earlier ANN figure: every output x kernel taps x input channels, padded positions
    included, and the head as a dense layer over every position (``K x C x H x W``, the pool
    tiled into the weights)."""
    cin = 3 if (c.source == INPUT and rgb_input) else desc.source_shape(c.source)[0]
    out = desc.output_shape(c)
    taps = (
        c.kernel * c.kernel if c.kind == "conv" else int(np.prod(desc.source_shape(c.source)[1:]))
    )
    return int(np.prod(out)) // _population(desc, c) * cin * taps


def population_rows(
    desc: NetworkDescription,
    input_counts: np.ndarray,
    neuron_counts: dict[str, np.ndarray],
    samples: int,
) -> list[dict]:
    """Rows for :func:`energy_table`, per sample: the I2E input and every spiking group.

    ``input_counts`` and ``neuron_counts[group]`` are spikes per neuron ``(C, H, W)`` summed over
    ``samples`` samples.
    """
    rows = []
    for name, counts in [(INPUT, input_counts)] + [
        (g.name, neuron_counts[g.name]) for g in desc.spiking_groups
    ]:
        outgoing = [c for c in desc.connections if c.source == name]
        fanout = sum(fanout_map(desc, c) for c in outgoing)
        row = {
            "name": "i2e input" if name == INPUT else name,
            "neurons": int(np.prod(counts.shape)),
            "spikes": counts / samples,
            "fanout": fanout,
            "macs_ann": sum(ann_macs(desc, c) for c in outgoing),
        }
        if name == INPUT:  # events exist in the T frames only: event_rate is the paper's f_r
            row["timesteps"] = desc.timesteps
        rows.append(row)
    return rows


def connection_rows(
    desc: NetworkDescription,
    input_counts: np.ndarray,
    neuron_counts: dict[str, np.ndarray],
    samples: int,
) -> list[dict]:
    """Per connection, per sample: both SynOp conventions, ``Dense``, weights and ANN MACs.

    * ``synops``: spikes x every synapse they reach (ours; zero weights included);
    * ``effective_synops``: spikes x the synapses with a nonzero weight (NeuroBench's
      ``Effective_ACs`` of this connection);
    * ``synops_all_samples``, ``effective_synops_all_samples``: the same, summed over the
      samples (integers; totals are divided once, as NeuroBench does);
    * ``dense``: every synapse, every step of the sample (``steps``), as if every source spiked
      each step (NeuroBench's ``Dense``);
    * ``weights``, ``zero_weights``, ``connection_sparsity``: the deployed 8-bit mantissas (the
      head's ``K x C`` once, as the description holds them);
    * ``macs_ann`` (padding excluded, pooled head) and ``macs_ann_padded_tiled`` (the earlier
      figure).
    """
    counts = {INPUT: input_counts, **neuron_counts}
    rows = []
    for c in desc.connections:
        spikes = np.asarray(counts[c.source], dtype=np.int64)
        full, nonzero = fanout_map(desc, c), fanout_map(desc, c, nonzero=True)
        weight = np.asarray(c.weight)
        zeros = int((weight == 0).sum())
        synops, effective = int((spikes * full).sum()), int((spikes * nonzero).sum())
        rows.append(
            {
                "name": c.name,
                "source": "i2e input" if c.source == INPUT else c.source,
                "synops": synops / samples,
                "effective_synops": effective / samples,
                "synops_all_samples": synops,
                "effective_synops_all_samples": effective,
                "dense": int(full.sum()) * desc.steps,
                "weights": int(weight.size),
                "zero_weights": zeros,
                "connection_sparsity": zeros / weight.size,
                "macs_ann": ann_macs(desc, c),
                "macs_ann_padded_tiled": ann_macs_padded_tiled(desc, c),
            }
        )
    return rows


def activation_sparsity(
    desc: NetworkDescription, neuron_counts: dict[str, np.ndarray], samples: int
) -> dict[str, float]:
    """``1 - spikes / (neurons x steps)`` per neuron group (the readout included, the input not)
    and ``"overall"`` over all of them (NeuroBench's ``ActivationSparsity``: zero activations
    over all activations of all layers, steps and samples)."""
    out, spikes, slots = {}, 0, 0
    missing = [g.name for g in desc.groups if g.name not in neuron_counts]
    if missing:
        raise ValueError(f"neuron_counts: no spike counts for groups {missing} (readout included)")
    for g in desc.groups:
        n = int(np.asarray(neuron_counts[g.name]).sum())
        m = int(np.prod(g.shape)) * desc.steps * samples
        out[g.name] = 1 - n / m
        spikes, slots = spikes + n, slots + m
    out["overall"] = 1 - spikes / slots
    return out


#: bytes per deployed parameter: 8-bit weight mantissas; 13-bit bias mantissas in 16-bit words
WEIGHT_BYTES, BIAS_BYTES = 1, 2


def footprint(desc: NetworkDescription) -> dict[str, int]:
    """The deployed parameters in bytes: one byte per 8-bit weight mantissa (a conv kernel once,
    the head's ``K x C`` once) and two per bias mantissa (13 bits, one per channel). Exponents
    and neuron parameters (a few bytes per connection or group) are left out. NeuroBench's
    ``Footprint`` counts a torch model's float parameters and buffers instead."""
    weights = sum(int(np.asarray(c.weight).size) for c in desc.connections)
    biases = sum(int(np.asarray(g.bias).size) for g in desc.groups)
    return {
        "weights": weights,
        "biases": biases,
        "bytes": weights * WEIGHT_BYTES + biases * BIAS_BYTES,
    }


def energy_report(
    desc: NetworkDescription,
    input_counts: np.ndarray,
    neuron_counts: dict[str, np.ndarray],
    samples: int,
    hw: str = "loihi2",
) -> dict:
    """Per-layer table, network totals against the ANN, and the first layer against the ANN's."""
    rows = energy_table(
        population_rows(desc, input_counts, neuron_counts, samples), timesteps=desc.steps, hw=hw
    )
    totals = energy_totals(rows)
    conns = connection_rows(desc, input_counts, neuron_counts, samples)
    sparsity = activation_sparsity(desc, neuron_counts, samples)
    zeros = sum(r["zero_weights"] for r in conns)
    weights = sum(r["weights"] for r in conns)
    totals.update(
        effective_synops=sum(r["effective_synops_all_samples"] for r in conns) / samples,
        dense=sum(r["dense"] for r in conns),
        macs_ann_padded_tiled=sum(r["macs_ann_padded_tiled"] for r in conns),
    )
    _, h, w = desc.input_shape
    encoding_ops = i2e_encoding_ops(h, w, desc.timesteps)
    stem = [c for c in desc.connections if c.source == INPUT][0]
    # the one input event rate of the report: events per input neuron per I2E frame (the
    # paper's f_r; the table's input row uses the same frames)
    input_rate = float(input_counts.sum()) / samples / (np.prod(desc.input_shape) * desc.timesteps)
    first = {}
    if h == w:  # the paper's first-layer formula is for square inputs
        first = first_layer_comparison(
            input_size=int(h),
            kernel=stem.kernel,
            stride=stem.stride,
            padding=stem.padding,
            filters=int(stem.weight.shape[0]),
            timesteps=desc.timesteps,
            event_rate=input_rate,
        )
    measured_first = rows[0]["snn_uj"]
    from i2e_neuro.energy.model import energy_constants

    return {
        "layers": rows,
        "total": totals,
        "constants": energy_constants(hw),
        "i2e_encoding_ops": encoding_ops,
        "network_ratio": totals["ann_uj"] / totals["snn_uj"] if totals["snn_uj"] else None,
        "first_layer": {
            **first,
            "snn_measured_uj": measured_first,
            "ann_uj": rows[0]["ann_uj"],
            "i2e_uj": encoding_ops * default_op_energies()[1] * 1e6,
        },
        "input_event_rate": input_rate,
        "input_event_rate_definition": "I2E events / (input neurons x frames T), per sample",
        "connections": conns,
        "activation_sparsity": sparsity,
        "footprint": footprint(desc),
        # NeuroBench's metric names (neurobench 2.3.0), per sample, for what is counted the same
        # way; Effective_MACs is 0: every connection of the SNN carries spikes (accumulates).
        "neurobench": {
            "Effective_ACs": totals["effective_synops"],
            "Effective_MACs": 0,
            "Dense": totals["dense"],
            "ActivationSparsity": sparsity["overall"],
            "ConnectionSparsity": zeros / weights,
        },
    }
