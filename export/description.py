"""The backend-neutral network description: what every downstream consumer reads.

Integers only: neuron groups with Loihi fixed-point CUBA-LIF parameters, connections with 8-bit
weight mantissas and a per-connection exponent, the input (I2E parameters) and the readout.
Built from the deploy record that training writes into a checkpoint
(:class:`i2e_neuro.models.deploy.DeployRecord`) and composed of its topology
(:class:`i2e_neuro.models.spec.NetSpec`), so nothing here imports the training model
(docs/ARCHITECTURE.md).

Units are Loihi's (as in Lava's bit-accurate models): a connection adds
``sum(m * 2**e * spike) << 6`` to the 24-bit current ``u``; ``u[t] = u[t-1] * (4096 - du) / 4096
+ input``; ``v[t] = v[t-1] * (4096 - dv) / 4096 + u[t] + (bias_mant << bias_exp)``; a neuron
spikes when ``v > vth << 6`` and resets ``v`` to 0.

The readout: the last group (``readout=True``, shape ``(K * population,)``, ``population``
neurons per class, class-major) is an ordinary spiking CUBA-LIF group with the same parameters
as the others; its spikes leave the chip for the host, which counts them per sample window. The
prediction is the class whose neurons spiked most (ties: earliest first spike, then lowest
index; ``i2e_neuro.models.readout.predict``). Nothing else is read from the network.

``steps`` is the trained sample window (frames + latency); Loihi 2 resets neurons only at a
power-of-two interval, so the deployed window is ``window`` (``steps`` rounded up to a power of
two), the extra steps being silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from i2e_neuro.energy.hw import load_hw_config, register_formats
from i2e_neuro.models.deploy import READOUT, DeployRecord, NeuronParams, as_record, state_bounds
from i2e_neuro.models.spec import (  # plain data, no model code
    INPUT,  # noqa: F401  (re-exported for the consumers of the description)
    ConnSpec,
    GroupSpec,
    NetSpec,
)

BIAS_EXP = 6
#: Lava's LIF 'du' register is 12 bits (0..4095); Lava adds 1 internally (ds_offset), so a
#: decay of 4096 (the current is only this step's input) is written as du = 4095.
LAVA_DU_OFFSET = 1

_GROUP_FIELDS = frozenset(f.name for f in fields(GroupSpec))
_CONN_FIELDS = frozenset(f.name for f in fields(ConnSpec))


@dataclass
class NeuronGroup:
    """A group of the topology (``spec``: name, shape, readout) with its Loihi parameters.

    The topology's fields read through: ``g.name``, ``g.shape``, ``g.readout``.
    """

    spec: GroupSpec
    du: int  # current decay on the 4096 scale (4096: no current memory)
    dv: int  # voltage decay on the 4096 scale
    vth: int  # threshold mantissa (compared as vth << 6)
    bias: np.ndarray  # bias mantissa per channel (int), scaled by 2**bias_exp
    bias_exp: int = BIAS_EXP

    def __getattr__(self, attr: str):
        if attr in _GROUP_FIELDS:
            return getattr(self.__dict__["spec"], attr)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Connection:
    """A connection of the topology (``spec``: source, targets, kind, geometry) with its integers.

    The topology's fields read through: ``c.name``, ``c.kind``, ``c.source``, ``c.targets``,
    ``c.kernel``, ``c.stride``, ``c.padding``, ...
    """

    spec: ConnSpec
    weight: np.ndarray  # int mantissas in [-128, 127]: conv (out, in, kh, kw); pool_dense (out, in)
    exponent: int
    delay: int = 1  # Loihi's synaptic hop

    def __getattr__(self, attr: str):
        if attr in _CONN_FIELDS:
            return getattr(self.__dict__["spec"], attr)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    @property
    def effective_weight(self) -> np.ndarray:
        return self.weight.astype(np.int64) << self.exponent

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The weight shape the topology asks for."""
        c = self.spec
        k = (c.kernel, c.kernel) if c.kind == "conv" else ()
        return (c.out_channels, c.in_channels, *k)


@dataclass
class NetworkDescription:
    """The topology (a :class:`NetSpec`) with Loihi parameters per group and integers per
    connection, the simulation window, the I2E input parameters and the class names.

    Graph questions (incoming connections, shapes, depths, chain test) are answered by the
    topology; ``groups`` and ``connections`` follow its order.
    """

    topology: NetSpec
    steps: int  # simulation steps per sample (frames + latency)
    i2e: dict  # ratio, timesteps, order
    groups: list[NeuronGroup]
    connections: list[Connection]
    classes: list[str] = field(default_factory=list)
    #: the largest ``|u|``, ``|v|`` per group measured at the end of training, on its training
    #: data (``{group: {"u", "v"}}``; empty when not recorded); :meth:`state_bounds` gives the
    #: data-free bounds
    measured_states: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the event frames."""
        return tuple(self.topology.input_shape)

    @property
    def timesteps(self) -> int:
        """Event frames per sample."""
        return self.topology.timesteps

    def group(self, name: str) -> NeuronGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no neuron group named {name!r}")

    def connection(self, name: str) -> Connection:
        for c in self.connections:
            if c.name == name:
                return c
        raise KeyError(f"no connection named {name!r}")

    def incoming(self, name: str) -> list[Connection]:
        return [self.connection(c.name) for c in self.topology.incoming(name)]

    def source_shape(self, source: str) -> tuple[int, ...]:
        return self.topology.source_shape(source)

    def output_shape(self, c: Connection) -> tuple[int, ...]:
        return self.topology.output_shape(c.spec)

    @property
    def readout(self) -> NeuronGroup:
        return self.groups[-1]

    @property
    def spiking_groups(self) -> list[NeuronGroup]:
        return [g for g in self.groups if not g.readout]

    @property
    def window(self) -> int:
        """Steps per sample on Lava / Loihi 2: ``steps`` rounded up to a power of two (the
        chip's reset interval must be one); the padding steps are silent."""
        return 1 << max(0, (self.steps - 1).bit_length())

    def depths(self) -> dict[str, int]:
        return self.topology.depths()

    def is_chain(self) -> bool:
        """True when every group has one input, from the group before it (what netx can load)."""
        return self.topology.is_chain()

    def validate(self) -> None:
        """Check that the description is complete, its shapes chain and its window is long enough."""
        self.validate_structure()
        if self.i2e.get("ratio") is not None:
            from i2e_neuro.i2e.conversion import check_parameters

            params = {"padding": "replicate", "order": None, **self.i2e_params()}
            try:
                check_parameters(
                    params["ratio"], self.timesteps, params["order"], params["padding"]
                )
            except ValueError as e:
                raise ValueError(f"{self.name}: stored I2E parameters: {e}") from None
        needed = self.timesteps + self.depths()[self.readout.name]
        if self.steps < needed:
            raise ValueError(
                f"{self.name}: steps {self.steps} per sample < {needed} (timesteps {self.timesteps} + the "
                "readout's depth): the readout would be read before the sample's last spikes arrive"
            )

    def i2e_params(self) -> dict:
        """Keyword arguments for ``i2e()`` (ratio, order, padding) as the network was trained."""
        if self.i2e.get("ratio") is None:
            raise ValueError(
                f"{self.name}: trained on event data (no I2E ratio stored); give it event samples, not images"
            )
        return {k: v for k, v in self.i2e.items() if k in ("ratio", "order", "padding")}

    def validate_structure(self) -> None:
        """Check the topology and every parameter against Loihi's ranges; errors name the part."""
        self.topology.validate()
        if [g.spec for g in self.groups] != self.topology.groups or [
            c.spec for c in self.connections
        ] != self.topology.conns:
            raise ValueError(f"{self.name}: groups and connections do not follow the topology")
        fmt = register_formats(load_hw_config("loihi2"))
        decay_hi, (vth_lo, vth_hi), (bias_lo, bias_hi) = (
            fmt["decay"][1],
            fmt["vth"],
            fmt["bias_mant"],
        )
        for g in self.groups:
            if g.bias.shape != (g.shape[0],):
                raise ValueError(f"group {g.name!r}: bias shape {g.bias.shape} != ({g.shape[0]},)")
            # du is written as du - LAVA_DU_OFFSET, dv as it is (Lava's dm_offset is 0)
            if not (
                0 <= g.du <= decay_hi + LAVA_DU_OFFSET
                and 0 <= g.dv <= decay_hi + LAVA_DU_OFFSET
                and vth_lo <= g.vth <= vth_hi
            ):
                raise ValueError(
                    f"group {g.name!r}: du/dv/vth out of Loihi's range ({g.du}, {g.dv}, {g.vth})"
                )
            if np.any(g.bias < bias_lo) or np.any(g.bias > bias_hi):
                raise ValueError(
                    f"group {g.name!r}: bias mantissa outside [{bias_lo}, {bias_hi}] (Loihi 2)"
                )
        for c in self.connections:
            if tuple(c.weight.shape) != c.weight_shape:
                raise ValueError(
                    f"connection {c.name!r}: weight {tuple(c.weight.shape)} does not fit its "
                    f"topology {c.weight_shape} (source {c.source!r})"
                )
            if (
                c.weight.dtype.kind not in "iu"
                or c.weight.min(initial=0) < -128
                or c.weight.max(initial=0) > 127
            ):
                raise ValueError(
                    f"connection {c.name!r}: weights must be integer mantissas in [-128, 127]"
                )
            if not 0 <= c.exponent <= 7:
                raise ValueError(f"connection {c.name!r}: exponent {c.exponent} outside 0..7")
            if c.delay != 1:
                raise ValueError(
                    f"connection {c.name!r}: delay {c.delay} unsupported (every hop delays by exactly 1 step)"
                )

    def state_bounds(self) -> dict[str, dict[str, int]]:
        """Per group the largest ``|u|``, ``|v|`` any input can reach
        (:func:`i2e_neuro.models.deploy.state_bounds`)."""
        return state_bounds(
            self.topology,
            {c.name: c.weight for c in self.connections},
            {c.name: c.exponent for c in self.connections},
            {g.name: g.bias for g in self.groups},
            self.spiking_groups[0].vth,
        )

    def deploy_record(self) -> DeployRecord:
        """The description as a deploy record (the inverse of :func:`from_deploy`), e.g. to
        rebuild the lava-dl model of an exported file for spike-by-spike checks."""
        spiking = self.spiking_groups[0]
        return DeployRecord(
            spec=self.topology,
            neuron=NeuronParams(
                vth_mant=spiking.vth, current_decay=spiking.du, voltage_decay=spiking.dv
            ),
            weights={c.name: c.weight for c in self.connections},
            exponents={c.name: c.exponent for c in self.connections},
            biases={g.name: g.bias for g in self.groups},
            steps=self.steps,
            i2e=dict(self.i2e),
            classes=list(self.classes),
        )


def from_deploy(deploy: DeployRecord | dict) -> NetworkDescription:
    """Build the description from a deploy record or a checkpoint's ``deploy`` entry."""
    record = as_record(deploy)
    if record.readout != READOUT:
        raise ValueError(
            f"deploy entry has a {record.readout!r} readout (trained before the spiking readout "
            "that Loihi 2 can deliver to the host); retrain the model"
        )
    spec, neuron = record.spec, record.neuron
    try:
        groups = [
            NeuronGroup(
                spec=g,
                du=neuron.current_decay,
                dv=neuron.voltage_decay,
                vth=neuron.vth_mant,
                bias=np.asarray(record.biases[g.name], dtype=np.int64),
            )
            for g in spec.groups
        ]
        conns = [
            Connection(
                spec=c,
                weight=np.asarray(record.weights[c.name], dtype=np.int64),
                exponent=int(record.exponents[c.name]),
            )
            for c in spec.conns
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"deploy entry is incomplete or malformed: missing/invalid {e}") from e
    desc = NetworkDescription(
        topology=spec,
        steps=record.steps,
        i2e=dict(record.i2e),
        groups=groups,
        connections=conns,
        classes=list(record.classes),
    )
    desc.validate_structure()
    if desc.steps == 0:
        desc.steps = desc.timesteps + desc.depths()[desc.readout.name]
    desc.validate()
    return desc


def to_deploy(desc: NetworkDescription) -> dict:
    """The description as a ``deploy`` dict (``desc.deploy_record().to_dict()``)."""
    return desc.deploy_record().to_dict()


def from_checkpoint(path: str | Path) -> NetworkDescription:
    """Read a training checkpoint (``torch.load(weights_only=True)``) and describe its network."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    from i2e_neuro.integrity import check_torch_file, torch_error_text

    check_torch_file(path)  # torch.load does not check the CRCs: flipped bytes load silently
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign/corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({torch_error_text(e)})") from e
    if not isinstance(ckpt, dict) or "deploy" not in ckpt or ckpt["deploy"] is None:
        raise ValueError(
            f"{path}: has no 'deploy' entry; only a quantized (folded) lava-dl model can be exported "
            "(train with --backend slayer and at least one QAT epoch)"
        )
    try:
        desc = from_deploy(ckpt["deploy"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    peaks = (ckpt.get("extras") or {}).get("state_peaks") or {}
    desc.measured_states = {
        g: {k: int(v) for k, v in p.items()} for g, p in peaks.items() if isinstance(p, dict)
    }
    return desc
