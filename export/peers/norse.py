"""Run an exported NIR graph in Norse (a peer reader): the graph wired by ``nirtorch``, Norse's
own modules for ``Conv2d`` and ``CubaLIF``, a one-step buffer for ``Delay``."""

from __future__ import annotations

import nir
import numpy as np


def norse_module(graph: nir.NIRGraph):
    """The graph as a PyTorch module built from Norse's NIR node modules.

    Norse 1.1.0 (``norse.torch.from_nir``) maps ``Conv2d`` and ``CubaLIF`` (and ``SumPool2d``,
    ``Affine``, ...) but not ``Delay``, and executes through ``nirtorch.load``, which orders
    nodes by a depth-first walk: a residual group is then computed before some of its inputs
    and reads them one step late. So the graph is wired by ``nirtorch.nir_to_torch`` (NIR's own
    PyTorch interpreter: topological order, the edges into a node summed), with Norse's module
    for every ``Conv2d`` and ``CubaLIF`` node (``dt = 1``), and a one-step buffer here for
    ``Delay``, the one node type Norse lacks.
    """
    import functools

    import nirtorch
    import torch
    from norse.torch.utils.import_nir import _import_norse_module

    class Delay(torch.nn.Module):
        """NIR ``Delay`` of one step: returns the previous step's input."""

        def forward(self, x, state=None):
            return (torch.zeros_like(x) if state is None else state), x

    for name, node in graph.nodes.items():
        if isinstance(node, nir.Delay) and not np.all(np.asarray(node.delay) == 1):
            raise ValueError(f"node {name!r}: only delays of one step are run here")
    norse_map = functools.partial(_import_norse_module, dt=1.0)
    node_map = {nir.Conv2d: norse_map, nir.CubaLIF: norse_map, nir.Delay: lambda n: Delay()}
    return nirtorch.nir_to_torch(graph, node_map)


def run_norse(graph: nir.NIRGraph, events, steps: int, record: int = 0, batch: int = 64):
    """Run I2E events ``[T, N, C, H, W]`` (bool/0-1) through the graph in Norse, in float64.

    Each sample starts from a fresh state and runs ``steps`` steps (frames, then zeros).
    Returns ``(predictions [N], counts {group: spikes per neuron over all samples},
    trains {group: [min(record, N), steps, *shape] bool})`` for every ``CubaLIF`` group, the
    readout included (its shape ``(K,)``); predictions are decided from the readout's spikes as
    on Loihi (``i2e_neuro.models.readout.predict``: most spikes, then earliest first spike).
    """
    import torch

    from export.nir import graph_meta
    from export.peers.record import SpikeRecord

    module = norse_module(graph).double().eval()
    (readout,) = [a for a, b in graph.edges if isinstance(graph.nodes[b], nir.Output)]
    groups = [n for n, node in graph.nodes.items() if isinstance(node, nir.CubaLIF)]
    seen: dict[str, list] = {}
    for name in groups:
        sub = getattr(module, name.replace(".", "_"))
        sub.register_forward_hook(lambda m, i, o, name=name: seen[name].append(o[0].detach()))
    rec = SpikeRecord(groups, readout, record, int(graph_meta(graph).get("population", 1)))
    n = events.shape[1]
    with torch.no_grad():
        for start in range(0, n, batch):
            x = torch.as_tensor(events[:, start : start + batch]).double()
            for g in groups:
                seen[g] = []
            state = None
            for t in range(steps):
                frame = x[t] if t < x.shape[0] else torch.zeros_like(x[0])
                _, state = module(frame, state)
            rec.add(seen, start)
    return rec.result()
