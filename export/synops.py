"""Synaptic operations from spike counts: each spike times the synapses it actually reaches.

A spike of neuron ``(c, y, x)`` reaches, through a conv connection, ``out_channels`` times the
number of output positions whose receptive field holds ``(y, x)`` (fewer at borders and with
strides); through a pooled-dense connection, every readout neuron. The per-population rows
feed :func:`i2e_neuro.energy.model.energy_table`, together with the MACs of the equivalent ANN (same
layers, dense, once per image, with RGB instead of ON/OFF input in the first layer).
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


def fanout_map(desc: NetworkDescription, c: Connection) -> np.ndarray:
    """Synapses reached by one spike of each source neuron, shape ``(C, H, W)`` of the source."""
    cin, h, w = desc.source_shape(c.source)
    out = desc.output_shape(c)
    if c.kind == "pool_dense":
        return np.full((cin, h, w), out[0], dtype=np.int64)
    cover = np.zeros((h + 2 * c.padding, w + 2 * c.padding), dtype=np.int64)
    for oy in range(out[1]):
        for ox in range(out[2]):
            cover[
                oy * c.stride : oy * c.stride + c.kernel, ox * c.stride : ox * c.stride + c.kernel
            ] += 1
    inner = cover[c.padding : c.padding + h, c.padding : c.padding + w]
    return np.broadcast_to(inner * out[0], (cin, h, w)).copy()


def ann_macs(desc: NetworkDescription, c: Connection, rgb_input: bool = True) -> int:
    """MACs of the connection as an ANN layer (the input layer sees 3 RGB channels)."""
    cin = 3 if (c.source == INPUT and rgb_input) else desc.source_shape(c.source)[0]
    out = desc.output_shape(c)
    return (
        int(np.prod(out))
        * cin
        * (
            c.kernel * c.kernel
            if c.kind == "conv"
            else int(np.prod(desc.source_shape(c.source)[1:]))
        )
    )


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
        rows.append(
            {
                "name": "i2e input" if name == INPUT else name,
                "neurons": int(np.prod(counts.shape)),
                "spikes": counts / samples,
                "fanout": fanout,
                "macs_ann": sum(ann_macs(desc, c) for c in outgoing),
            }
        )
    return rows


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
    _, h, w = desc.input_shape
    encoding_ops = i2e_encoding_ops(h, w, desc.timesteps)
    stem = [c for c in desc.connections if c.source == INPUT][0]
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
    return {
        "layers": rows,
        "total": totals,
        "i2e_encoding_ops": encoding_ops,
        "network_ratio": totals["ann_uj"] / totals["snn_uj"] if totals["snn_uj"] else None,
        "first_layer": {
            **first,
            "snn_measured_uj": measured_first,
            "ann_uj": rows[0]["ann_uj"],
            "i2e_uj": encoding_ops * default_op_energies()[1] * 1e6,
        },
        "input_event_rate": input_rate,
    }
