"""The backend-neutral network description: what every downstream consumer reads.

Integers only: neuron groups with Loihi fixed-point CUBA-LIF parameters, connections with 8-bit
weight mantissas and a per-connection exponent, the input (I2E parameters) and the readout.
Built from the ``deploy`` entry that training writes into a checkpoint, so nothing here
imports the training model.

Units are Loihi's (as in Lava's bit-accurate models): a connection adds
``sum(m * 2**e * spike) << 6`` to the 24-bit current ``u``; ``u[t] = u[t-1] * (4096 - du) / 4096
+ input``; ``v[t] = v[t-1] * (4096 - dv) / 4096 + u[t] + (bias_mant << bias_exp)``; a neuron
spikes when ``v > vth << 6`` and resets ``v`` to 0.

The readout: the last group (``readout=True``, shape ``(K,)``, one neuron per class) is an
ordinary spiking CUBA-LIF group with the same parameters as the others; its spikes leave the
chip for the host, which counts them per sample window. The prediction is the neuron with the
most spikes (ties: earliest first spike, then lowest index; ``i2e_neuro.models.readout.predict``).
Nothing else is read from the network.

``steps`` is the trained sample window (frames + latency); Loihi 2 resets neurons only at a
power-of-two interval, so the deployed window is ``window`` (``steps`` rounded up to a power of
two), the extra steps being silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from i2e_neuro.models.spec import INPUT  # plain constant, no model code

BIAS_EXP = 6
#: Lava's LIF 'du' register is 12 bits (0..4095); Lava adds 1 internally (ds_offset), so a
#: decay of 4096 (the current is only this step's input) is written as du = 4095.
LAVA_DU_OFFSET = 1
#: The readout kind this description format knows (``deploy["readout"]``, HDF5 attribute).
READOUT = "spike_count"


@dataclass
class NeuronGroup:
    name: str
    shape: tuple[int, ...]  # (C, H, W) or (K,)
    du: int  # current decay on the 4096 scale (4096: no current memory)
    dv: int  # voltage decay on the 4096 scale
    vth: int  # threshold mantissa (compared as vth << 6)
    bias: np.ndarray  # bias mantissa per channel (int), scaled by 2**bias_exp
    bias_exp: int = BIAS_EXP
    readout: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Connection:
    name: str
    kind: str  # "conv" or "pool_dense"
    source: str  # group name or "input"
    targets: list[str]
    weight: np.ndarray  # int mantissas in [-128, 127]: conv (out, in, kh, kw); pool_dense (out, in)
    exponent: int
    stride: int = 1
    padding: int = 0
    delay: int = 1  # Loihi's synaptic hop

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1]) if self.kind == "conv" else 1

    @property
    def effective_weight(self) -> np.ndarray:
        return self.weight.astype(np.int64) << self.exponent


@dataclass
class NetworkDescription:
    name: str
    input_shape: tuple[int, int, int]  # (C, H, W) of the event frames
    timesteps: int  # event frames per sample
    steps: int  # simulation steps per sample (frames + latency)
    i2e: dict  # ratio, timesteps, order
    groups: list[NeuronGroup]
    connections: list[Connection]
    classes: list[str] = field(default_factory=list)

    def group(self, name: str) -> NeuronGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no neuron group named {name!r}")

    def incoming(self, name: str) -> list[Connection]:
        return [c for c in self.connections if name in c.targets]

    def source_shape(self, source: str) -> tuple[int, ...]:
        return tuple(self.input_shape) if source == INPUT else self.group(source).shape

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
        depth = {INPUT: 0}
        for g in self.groups:
            depth[g.name] = max(depth[c.source] + c.delay for c in self.incoming(g.name))
        return depth

    def is_chain(self) -> bool:
        """True when every group has one input, from the group before it (what netx can load)."""
        previous = INPUT
        for g in self.groups:
            inc = self.incoming(g.name)
            if len(inc) != 1 or inc[0].source != previous or len(inc[0].targets) != 1:
                return False
            previous = g.name
        return True

    def validate(self) -> None:
        """Check that the description is complete, its shapes chain and its window is long enough."""
        self.validate_structure()
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
        """Check that the description is complete and its shapes chain; errors name the part."""
        if not self.groups:
            raise ValueError(f"{self.name}: no neuron groups")
        if not self.readout.readout or any(g.readout for g in self.groups[:-1]):
            raise ValueError(f"{self.name}: the last group, and only it, must be the readout")
        names = {g.name for g in self.groups}
        for g in self.groups:
            if not self.incoming(g.name):
                raise ValueError(f"group {g.name!r}: has no incoming connection")
            if g.bias.shape != (g.shape[0],):
                raise ValueError(f"group {g.name!r}: bias shape {g.bias.shape} != ({g.shape[0]},)")
            if not (0 <= g.du <= 4096 and 0 <= g.dv <= 4096 and 0 <= g.vth < 1 << 17):
                raise ValueError(
                    f"group {g.name!r}: du/dv/vth out of Loihi's range ({g.du}, {g.dv}, {g.vth})"
                )
            if np.any(g.bias < -4096) or np.any(g.bias > 4095):
                raise ValueError(f"group {g.name!r}: bias mantissa outside the 13-bit range")
        order = {g.name: i for i, g in enumerate(self.groups)}
        order[INPUT] = -1
        for c in self.connections:
            if c.source not in order:
                raise ValueError(f"connection {c.name!r}: unknown source {c.source!r}")
            for t in c.targets:
                if t not in names:
                    raise ValueError(f"connection {c.name!r}: unknown target {t!r}")
                if order[t] <= order[c.source]:
                    raise ValueError(f"connection {c.name!r}: target {t!r} comes before its source")
                expected = self.output_shape(c)
                if tuple(self.group(t).shape) != expected:
                    raise ValueError(
                        f"connection {c.name!r}: output shape {expected} does not match group {t!r} {self.group(t).shape}"
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

    def output_shape(self, c: Connection) -> tuple[int, ...]:
        in_shape = self.source_shape(c.source)
        if len(in_shape) != 3 or c.weight.shape[1] != in_shape[0]:
            raise ValueError(
                f"connection {c.name!r}: weight {c.weight.shape} does not fit its source {c.source!r} of shape {in_shape}"
            )
        if c.kind == "pool_dense":
            return (c.weight.shape[0],)
        if c.kind != "conv":
            raise ValueError(f"connection {c.name!r}: unknown kind {c.kind!r}")
        size = lambda n: (n + 2 * c.padding - c.kernel) // c.stride + 1  # noqa: E731
        return (c.weight.shape[0], size(in_shape[1]), size(in_shape[2]))


def from_deploy(deploy: dict[str, Any]) -> NetworkDescription:
    """Build the description from a checkpoint's ``deploy`` entry (plain data written by training)."""
    if deploy.get("readout") != READOUT:
        raise ValueError(
            "deploy entry has an integrator readout (trained before the spiking readout that "
            "Loihi 2 can deliver to the host); retrain the model"
        )
    try:
        spec, neuron = deploy["spec"], deploy["neuron"]
        groups = []
        for g in spec["groups"]:
            readout = bool(g["readout"])
            bias = np.asarray(deploy["groups"][g["name"]]["bias"], dtype=np.int64)
            groups.append(
                NeuronGroup(
                    name=g["name"],
                    shape=tuple(int(s) for s in g["shape"]),
                    du=int(neuron["current_decay"]),
                    dv=int(neuron["voltage_decay"]),
                    vth=int(neuron["vth_mant"]),
                    bias=bias,
                    readout=readout,
                )
            )
        conns = []
        for c in spec["conns"]:
            params = deploy["conns"][c["name"]]
            conns.append(
                Connection(
                    name=c["name"],
                    kind=c["kind"],
                    source=c["source"],
                    targets=list(c["targets"]),
                    weight=np.asarray(params["weight"], dtype=np.int64),
                    exponent=int(params["exponent"]),
                    stride=int(c["stride"]),
                    padding=int(c["padding"]),
                )
            )
        i2e = dict(deploy.get("i2e", {}))
        desc = NetworkDescription(
            name=spec["name"],
            input_shape=tuple(int(s) for s in spec["input_shape"]),
            timesteps=int(spec["timesteps"]),
            steps=int(deploy.get("steps", 0)),
            i2e=i2e,
            groups=groups,
            connections=conns,
            classes=[str(c) for c in deploy.get("classes", [])],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"deploy entry is incomplete or malformed: missing/invalid {e}") from e
    desc.validate_structure()
    if desc.steps == 0:
        desc.steps = desc.timesteps + desc.depths()[desc.readout.name]
    desc.validate()
    return desc


def from_checkpoint(path: str | Path) -> NetworkDescription:
    """Read a training checkpoint (``torch.load(weights_only=True)``) and describe its network."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign/corrupt files
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "deploy" not in ckpt or ckpt["deploy"] is None:
        raise ValueError(
            f"{path}: has no 'deploy' entry; only a quantized (folded) lava-dl model can be exported "
            "(train with --backend slayer and at least one QAT epoch)"
        )
    try:
        return from_deploy(ckpt["deploy"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def to_deploy(desc: NetworkDescription) -> dict:
    """The description as a ``deploy`` dict (the inverse of :func:`from_deploy`), e.g. to rebuild
    the lava-dl model of an exported file for spike-by-spike checks."""
    spiking = desc.spiking_groups[0]
    return {
        "spec": {
            "name": desc.name,
            "input_shape": list(desc.input_shape),
            "timesteps": desc.timesteps,
            "groups": [
                {"name": g.name, "shape": list(g.shape), "readout": g.readout} for g in desc.groups
            ],
            "conns": [
                {
                    "name": c.name,
                    "source": c.source,
                    "targets": list(c.targets),
                    "kind": c.kind,
                    "in_channels": int(c.weight.shape[1]),
                    "out_channels": int(c.weight.shape[0]),
                    "kernel": c.kernel,
                    "stride": c.stride,
                    "padding": c.padding,
                    "batchnorm": False,
                }
                for c in desc.connections
            ],
        },
        "neuron": {
            "vth_mant": spiking.vth,
            "current_decay": spiking.du,
            "voltage_decay": spiking.dv,
        },
        "steps": desc.steps,
        "readout": READOUT,
        "i2e": dict(desc.i2e),
        "conns": {c.name: {"weight": c.weight, "exponent": c.exponent} for c in desc.connections},
        "groups": {g.name: {"bias": g.bias} for g in desc.groups},
        "classes": list(desc.classes),
    }
