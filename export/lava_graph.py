"""Network description -> a Lava process graph of stock processes that Loihi 2 implements.

* every spiking group -> ``lava.proc.lif.process.LIFReset`` (CUBA-LIF, reset at each sample
  window start; du/dv/vth/bias exactly as described, ``bias_exp = 6`` as netx uses);
* the readout group -> ``LIFReset`` with ``dv = 0`` and the largest threshold: an integrator;
* conv connections -> ``lava.proc.conv.process.Conv`` with the effective integer weights
  (mantissa << exponent, as netx passes them), flipped to Lava's true-convolution layout;
* pooled-dense connections -> ``lava.proc.dense.process.Dense`` with the 8-bit mantissas and
  ``weight_exp`` in Loihi's mixed-sign form (the global sum-pool is the weight repeated over
  positions);
* the residual stream -> several connections into one ``a_in`` port (Lava sums them).

Every Lava connection delays by one step, exactly as the trained model does; all groups reset
at the same step of each window (``reset_offset = 1``, the window's first step), which is exact
because the trained biases keep a group silent once its input has ended (see README).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIFReset

from export.description import INPUT, LAVA_DU_OFFSET, Connection, NetworkDescription, NeuronGroup
from i2e_neuro.layouts import chw_shape_to_lava

#: Stock Lava processes that Loihi 2 implements, and all this builder creates for the network.
LOIHI_PROCESSES = (LIFReset, Conv, Dense)
#: Our own processes: host-side I/O that stays on the CPU in every run configuration.
HOST_PROCESSES = ("I2ESource", "Readout", "SpikeMonitor")


@dataclass
class LavaNetwork:
    """The built graph: neuron processes per group, synapse processes per connection."""

    description: NetworkDescription
    neurons: dict[str, LIFReset] = field(default_factory=dict)
    synapses: dict[str, Conv | Dense] = field(default_factory=dict)

    @property
    def readout(self) -> LIFReset:
        return self.neurons[self.description.readout.name]

    def connect_input(self, out_port) -> None:
        """Connect a spike source of shape ``(W, H, C_in)`` to every connection from the input."""
        for c in self.description.connections:
            if c.source == INPUT:
                out_port.connect(self.synapses[c.name].s_in)

    def processes(self) -> list:
        return [*self.neurons.values(), *self.synapses.values()]


def lif_process(g: NeuronGroup, steps: int) -> LIFReset:
    shape = chw_shape_to_lava(g.shape)
    bias = (
        np.broadcast_to(g.bias.astype(np.int32), shape)
        if len(shape) == 3
        else g.bias.astype(np.int32)
    )
    return LIFReset(
        shape=shape,
        du=g.du - LAVA_DU_OFFSET,
        dv=g.dv,
        vth=g.vth,
        bias_mant=np.ascontiguousarray(bias),
        bias_exp=g.bias_exp,
        reset_interval=steps,
        reset_offset=1,
        name=g.name,
    )


def conv_weight_to_lava(weight: np.ndarray) -> np.ndarray:
    """Torch cross-correlation weight ``(out, in, kh, kw)`` -> Lava Conv's ``(out, kx, ky, in)``.

    Lava's Conv computes a true convolution (it flips the kernel), so the kernel is flipped here.
    """
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def synapse_process(desc: NetworkDescription, c: Connection) -> Conv | Dense:
    src_shape = desc.source_shape(c.source)
    if c.kind == "conv":
        return Conv(
            weight=conv_weight_to_lava(c.effective_weight).astype(np.int32),
            input_shape=chw_shape_to_lava(src_shape),
            padding=(c.padding, c.padding),
            stride=(c.stride, c.stride),
            name=c.name,
        )
    _, h, w = src_shape
    # Lava flattens (x, y, f) in C order: index = (x * H + y) * C + f; the weight depends on f only.
    # Loihi stores a mixed-sign 8-bit mantissa m as the even 9-bit value 2m (Lava's Dense drops
    # the lowest bit), so m * 2**e is written as 2m with exponent e - 1; for e = 0 the right shift
    # of the (even) accumulated sum is exact.
    weights = np.tile(2 * c.weight.astype(np.int32), (1, w * h))
    return Dense(weights=weights, weight_exp=c.exponent - 1, num_weight_bits=8, name=c.name)


def refuse_cpu_only(net: LavaNetwork) -> None:
    """The Loihi 2 path: refuse, by name, any network process that has no Loihi implementation."""
    cpu_only = [
        f"{p.name} ({type(p).__name__})"
        for p in net.processes()
        if not isinstance(p, LOIHI_PROCESSES)
    ]
    if cpu_only:
        raise ValueError(f"not deployable on Loihi 2 (CPU-only processes): {', '.join(cpu_only)}")


def build(desc: NetworkDescription) -> LavaNetwork:
    """Create the processes and wire them; the input is connected later with ``connect_input``."""
    desc.validate()
    net = LavaNetwork(desc)
    for g in desc.groups:
        net.neurons[g.name] = lif_process(g, desc.steps)
    for c in desc.connections:
        syn = synapse_process(desc, c)
        net.synapses[c.name] = syn
        if c.source != INPUT:
            out = net.neurons[c.source].s_out
            out.flatten().connect(syn.s_in) if c.kind == "pool_dense" else out.connect(syn.s_in)
        for t in c.targets:
            syn.a_out.connect(net.neurons[t].a_in)
    return net
