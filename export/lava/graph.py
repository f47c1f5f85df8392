"""Network description -> the Lava process graph that Loihi 2 runs, legal by construction.

* every group, the readout included -> ``lava.proc.lif.process.LIFReset`` (CUBA-LIF; du/dv/vth/
  bias exactly as described, ``bias_exp = 6`` as netx uses), reset at the first step of every
  sample window (``reset_offset = 1``) with ``reset_interval = desc.window``: the trained window
  rounded up to a power of two, which Loihi 2 requires (lava-dl
  ``tutorials/lava/lib/dl/netx/mnist/run.ipynb``: "reset_interval on Loihi-2 Hardware has to be a
  power of 2"). The padding is exact: trained biases keep a group silent once its input has
  ended (docs/DESIGN.md, "Timing"), so the extra steps carry no spikes;
* conv connections -> ``lava.proc.conv.process.Conv``, pooled-dense connections ->
  ``lava.proc.dense.process.Dense``, both with the synapse format of ``lava.utils.weightutils``
  (:func:`loihi_weights`): the training mantissa ``m`` and exponent ``e`` unchanged, mixed-sign
  weights in Loihi's mixed form ``2m`` with ``weight_exp = e - 1`` (the format lava-dl's
  ``netx.utils.optimize_weight_bits`` produces for full-range 8-bit mantissas), single-sign
  weights as ``m`` with ``weight_exp = e``; ``num_weight_bits = 8``;
* the residual stream -> several connections into one ``a_in`` port (Lava sums them);
* host <-> chip: the input enters through an :class:`~export.lava.processes.InputAdapter` and the
  readout's spikes leave through an :class:`~export.lava.processes.OutputAdapter` (lava-dl's netx
  tutorials' pattern, ``tutorials/lava/lib/dl/netx/mnist/utils.py``): on Loihi 2 they are
  ``lava.proc.embedded_io.spike.PyToNxAdapter`` / ``NxToPyAdapter``, on the CPU a pass-through
  in the same step (see ``export.lava.processes`` for the latency assumed).

Every Lava connection delays by one step, exactly as the trained model does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIFReset
from lava.utils.weightutils import SignMode, determine_sign_mode

from export.description import INPUT, LAVA_DU_OFFSET, Connection, NetworkDescription, NeuronGroup
from i2e_neuro.layouts import chw_shape_to_lava

#: Stock Lava processes that Loihi 2 implements, and all this builder creates for the network.
LOIHI_PROCESSES = (LIFReset, Conv, Dense)
#: Our own processes: host-side I/O that stays on the CPU in every run configuration.
WEIGHT_BITS = 8


@dataclass(frozen=True)
class LoihiWeights:
    """A connection's weights in Loihi's synapse format (``lava.utils.weightutils``)."""

    weights: np.ndarray  # int32, what the Lava process stores (in its layout)
    weight_exp: int
    num_weight_bits: int
    sign_mode: SignMode


def loihi_weights(mantissa: np.ndarray, exponent: int, layout=None) -> LoihiWeights:
    """Training mantissas ``m`` (int, [-128, 127]) and exponent ``e`` -> Loihi's synapse format.

    The effective weight stays ``m * 2**e`` and the mantissas are not re-quantized:

    * mixed signs (``weightutils.SignMode.MIXED``): Loihi keeps the sign in the 8 weight bits
      and scales the stored value by 2 (Lava's ``Dense`` docstring: ``w_scale = 8 -
      num_weight_bits + weight_exp + isMixed()``; its bit-accurate model drops the lowest bit
      of mixed weights, ``weightutils.truncate_weights``), so ``m`` is stored as the even value
      ``2m`` with ``weight_exp = e - 1``; for ``e = 0`` the right shift of the even sum is exact;
    * one sign only (EXCITATORY / INHIBITORY, ``determine_sign_mode``): ``m`` itself, ``weight_exp = e``.

    ``layout``: a function giving a view of ``m`` in the layout the weights are wanted in (e.g.
    :func:`conv_weight_view`); the int32 weights are written in it, C-contiguous, in one pass.
    """
    m = np.asarray(mantissa)
    mode = determine_sign_mode(m) if m.size else SignMode.EXCITATORY
    scale, weight_exp = (2, int(exponent) - 1) if mode == SignMode.MIXED else (1, int(exponent))
    view = m if layout is None else layout(m)
    weights = np.empty(view.shape, np.int32)
    np.multiply(view, scale, out=weights, casting="unsafe")  # |2m| <= 256: no value changes
    return LoihiWeights(weights, weight_exp, WEIGHT_BITS, mode)


@dataclass
class LavaNetwork:
    """The built graph: neuron processes per group, synapse processes per connection, and the
    host <-> chip adapters (``input_adapter`` feeds every connection from the input,
    ``output_adapter`` carries the readout's spikes to the host)."""

    description: NetworkDescription
    backend: str = "cpu"
    neurons: dict[str, LIFReset] = field(default_factory=dict)
    synapses: dict[str, Conv | Dense] = field(default_factory=dict)
    formats: dict[str, LoihiWeights] = field(default_factory=dict)
    input_adapter: object = None
    output_adapter: object = None

    @property
    def readout(self) -> LIFReset:
        return self.neurons[self.description.readout.name]

    @property
    def window(self) -> int:
        return self.description.window

    def connect_input(self, out_port) -> None:
        """Connect a host spike source of shape ``(W, H, C_in)`` through the input adapter."""
        out_port.connect(self.input_adapter.inp)

    @property
    def output(self):
        """The host-side port that carries the readout's spikes (shape ``(K,)``)."""
        return self.output_adapter.out

    def processes(self) -> list:
        """Every Lava process of the network (chip processes, then the adapters)."""
        adapters = [p for p in (self.input_adapter, self.output_adapter) if p is not None]
        return [*self.neurons.values(), *self.synapses.values(), *adapters]

    def chip_processes(self) -> list:
        return [*self.neurons.values(), *self.synapses.values()]


def lif_process(g: NeuronGroup, window: int) -> LIFReset:
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
        reset_interval=window,
        reset_offset=1,
        name=g.name,
    )


def conv_weight_view(weight: np.ndarray) -> np.ndarray:
    """Torch cross-correlation weight ``(out, in, kh, kw)`` -> a view in Lava Conv's layout
    ``(out, kx, ky, in)``.

    Lava's Conv computes a true convolution (it flips the kernel), so the kernel is flipped here.
    """
    return weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)


def conv_weight_to_lava(weight: np.ndarray) -> np.ndarray:
    """:func:`conv_weight_view`, as a C-contiguous array."""
    return np.ascontiguousarray(conv_weight_view(weight))


def synapse_process(desc: NetworkDescription, c: Connection) -> tuple[Conv | Dense, LoihiWeights]:
    src_shape = desc.source_shape(c.source)
    if c.kind == "conv":
        # Lava's Conv process has no sign_mode parameter: the sign mode is the one its weights
        # imply (determine_sign_mode, as Lava's bit-accurate Dense model does by default).
        fmt = loihi_weights(c.weight, c.exponent, layout=conv_weight_view)
        proc = Conv(
            weight=fmt.weights,
            weight_exp=fmt.weight_exp,
            num_weight_bits=fmt.num_weight_bits,
            input_shape=chw_shape_to_lava(src_shape),
            padding=(c.padding, c.padding),
            stride=(c.stride, c.stride),
            name=c.name,
        )
        return proc, fmt
    fmt = loihi_weights(c.weight, c.exponent)
    _, h, w = src_shape
    # Lava flattens (x, y, f) in C order: index = (x * H + y) * C + f; the weight depends on f
    # only (the global sum-pool is the weight repeated over positions).
    weights = np.tile(fmt.weights, (1, w * h))
    proc = Dense(
        weights=weights,
        weight_exp=fmt.weight_exp,
        num_weight_bits=fmt.num_weight_bits,
        sign_mode=fmt.sign_mode,
        name=c.name,
    )
    return proc, fmt


def refuse_cpu_only(net: LavaNetwork) -> None:
    """The Loihi 2 path: refuse, by name, any network process that has no Loihi implementation."""
    cpu_only = [
        f"{p.name} ({type(p).__name__})"
        for p in net.chip_processes()
        if not isinstance(p, LOIHI_PROCESSES)
    ]
    if cpu_only:
        raise ValueError(f"not deployable on Loihi 2 (CPU-only processes): {', '.join(cpu_only)}")


def build(desc: NetworkDescription, backend: str = "cpu") -> LavaNetwork:
    """Create the processes and wire them, adapters included; a host source is connected later
    with ``connect_input`` and a host sink to ``output``.

    ``backend`` "cpu" or "loihi2" gives the same graph; it only selects the adapters' process
    models at run time (``export.lava.runner.run_config``).
    """
    from export.lava.processes import InputAdapter, OutputAdapter

    desc.validate()
    net = LavaNetwork(desc, backend)
    for g in desc.groups:
        net.neurons[g.name] = lif_process(g, desc.window)
    net.input_adapter = InputAdapter(shape=chw_shape_to_lava(desc.input_shape))
    for c in desc.connections:
        syn, fmt = synapse_process(desc, c)
        net.synapses[c.name], net.formats[c.name] = syn, fmt
        if c.source == INPUT:
            net.input_adapter.out.connect(syn.s_in)
        else:
            out = net.neurons[c.source].s_out
            out.flatten().connect(syn.s_in) if c.kind == "pool_dense" else out.connect(syn.s_in)
        for t in c.targets:
            syn.a_out.connect(net.neurons[t].a_in)
    net.output_adapter = OutputAdapter(shape=net.readout.s_out.shape)
    net.readout.s_out.connect(net.output_adapter.inp)
    return net
