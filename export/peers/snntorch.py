"""Run an exported NIR file in snnTorch, with snnTorch's own NIR node mapping.

snnTorch 1.0.0's ``snntorch.import_nir.import_from_nir`` cannot run our graph as it stands: it
has no ``Delay`` mapping (``nirtorch`` raises at the first ``Delay`` node it meets), and it
maps ``CubaLIF`` for a fixed ``dt = 1e-4`` s, asserting ``r == tau_mem / dt``, so a file in
steps (``dt = 1``) fails that assert if it meets a ``CubaLIF`` first. The recipe here is the importer's own recipe with one node
added: a file exported with ``--dt 1e-4``, wired by ``nirtorch.nir_to_torch`` (as
``import_from_nir`` does), every ``Conv2d`` and ``CubaLIF`` node converted by snnTorch's own
converter (``snntorch.import_nir._nir_to_snntorch_module``, the function ``import_from_nir``
calls: ``torch.nn.Conv2d`` and ``snntorch.Synaptic`` with ``alpha = 1 - dt / tau_syn``,
``beta = 1 - dt / tau_mem``, reset to zero), and a one-step buffer for ``Delay``. The neuron
dynamics are snnTorch's; nothing of ours runs but the buffer and the loop over steps.
"""

from __future__ import annotations

import nir
import numpy as np

#: snnTorch's fixed time step in its NIR importer (``dt = 1e-4`` in ``snntorch.import_nir``).
SNNTORCH_DT = 1e-4


def graph_dt(graph: nir.NIRGraph) -> float:
    """The ``dt`` our writer recorded in the graph metadata (1.0 when absent)."""
    from export.nir import graph_meta

    return float(graph_meta(graph).get("dt", 1.0))


def one_step_delay(dt: float):
    """A factory of ``torch.nn.Module`` for NIR ``Delay`` nodes of exactly one step of ``dt``.

    The module keeps its buffer as a hidden state, as snnTorch's neurons do with
    ``init_hidden=True``: ``forward(x)`` returns the previous call's ``x`` (zeros first), and
    ``reset()`` empties it.
    """
    import torch

    class Delay(torch.nn.Module):
        """NIR ``Delay`` of one step: returns the previous step's input (zeros at first)."""

        def __init__(self) -> None:
            super().__init__()
            self.previous: torch.Tensor | None = None

        def reset(self) -> None:
            self.previous = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.previous
            if out is None or out.shape != x.shape:
                out = torch.zeros_like(x)
            self.previous = x
            return out

    def make(node: nir.Delay) -> torch.nn.Module:
        steps = np.asarray(node.delay, dtype=np.float64) / dt
        if not np.allclose(steps, 1, rtol=1e-6, atol=0):
            raise ValueError(
                f"Delay of {np.unique(node.delay)} at dt = {dt:g}: only one-step delays are run here"
            )
        return Delay()

    return make


def snntorch_module(graph: nir.NIRGraph):
    """The graph as a ``torch.nn.Module`` of snnTorch's NIR node modules (see the module docstring).

    Needs a file written with ``dt = 1e-4`` (``i2e-neuro export --format nir --dt 1e-4``):
    snnTorch's converter assumes that step. The module is driven the snnTorch way: ``reset()``
    before a sample, then ``spikes, _ = module(frame)`` once per step (the output is the
    readout's spikes; what ``neurobench.models.SNNTorchModel`` expects).
    """
    import nirtorch
    import snntorch
    import torch
    from snntorch.import_nir import _nir_to_snntorch_module

    dt = graph_dt(graph)
    if not np.isclose(dt, SNNTORCH_DT, rtol=1e-9, atol=0):
        raise ValueError(
            f"graph: written with dt = {dt:g}; snnTorch's NIR importer assumes dt = {SNNTORCH_DT:g} s "
            "(export with --dt 1e-4)"
        )

    def convert(node: nir.NIRNode):
        return _nir_to_snntorch_module(node, init_hidden=True)

    node_map = {nir.Conv2d: convert, nir.CubaLIF: convert, nir.Delay: one_step_delay(dt)}

    class SnnTorchGraph(torch.nn.Module):
        """``nirtorch``'s graph module with a ``reset`` of every neuron and delay buffer."""

        def __init__(self) -> None:
            super().__init__()
            self.graph = nirtorch.nir_to_torch(graph, node_map)

        def reset(self) -> None:
            for m in self.graph.modules():
                if isinstance(m, snntorch.SpikingNeuron):
                    m.reset_mem()
                elif hasattr(m, "previous"):
                    m.reset()

        def forward(self, x: torch.Tensor):
            return self.graph(x)

    return SnnTorchGraph()


def run_snntorch(graph: nir.NIRGraph, events, steps: int, record: int = 0, batch: int = 64):
    """Run I2E events ``[T, N, C, H, W]`` through the graph in snnTorch (float32: its spikes are).

    The same contract as ``export.peers.norse.run_norse``: each sample starts from a fresh state
    (``reset()``) and runs ``steps`` steps (frames, then zeros). Returns ``(predictions [N],
    counts {group: spikes per neuron}, trains {group: [min(record, N), steps, *shape] bool})``
    for every ``CubaLIF`` group, the readout as ``(K,)``.
    """
    import snntorch
    import torch

    from export.nir import graph_meta
    from export.peers.record import SpikeRecord

    module = snntorch_module(graph).eval()
    (readout,) = [a for a, b in graph.edges if isinstance(graph.nodes[b], nir.Output)]
    groups = [n for n, node in graph.nodes.items() if isinstance(node, nir.CubaLIF)]
    neurons = [m for m in module.modules() if isinstance(m, snntorch.Synaptic)]
    if len(neurons) != len(groups):
        raise RuntimeError(
            f"snnTorch built {len(neurons)} Synaptic modules for {len(groups)} groups"
        )
    seen: dict[str, list] = {}
    for name in groups:
        sub = getattr(module.graph, name.replace(".", "_"))
        sub.register_forward_hook(lambda m, i, o, name=name: seen[name].append(o.detach()))
    rec = SpikeRecord(groups, readout, record, int(graph_meta(graph).get("population", 1)))
    n = events.shape[1]
    with torch.no_grad():
        for start in range(0, n, batch):
            x = torch.as_tensor(events[:, start : start + batch]).float()
            module.reset()
            for g in groups:
                seen[g] = []
            for t in range(steps):
                module(x[t] if t < x.shape[0] else torch.zeros_like(x[0]))
            rec.add(seen, start)
    return rec.result()
