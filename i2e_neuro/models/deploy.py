"""The deploy record: the plain data a trained network hands to the exporter.

A checkpoint stores it under ``"deploy"`` as :meth:`DeployRecord.to_dict` writes it (nested
dicts, lists, ints, floats and int64 arrays, so ``torch.load(weights_only=True)`` reads it back);
:meth:`DeployRecord.from_dict` is the only reader of that layout. It holds the topology
(:class:`~i2e_neuro.models.spec.NetSpec`), the CUBA-LIF parameters shared by the spiking
groups, and per connection the 8-bit weight mantissas and exponent, per group the bias
mantissas. Plain data only: no torch, no Lava (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from i2e_neuro.models.spec import NetSpec

#: slayer's neuron scale: a threshold of 1.0 is the mantissa 64 (``threshold = vth_mant / 64``).
THRESHOLD_SCALE = 64


@dataclass
class NeuronParams:
    """Loihi CUBA-LIF parameters of the spiking groups (decays on the 4096 scale).

    ``threshold``, ``tau_grad`` and ``scale_grad`` are training-side values (slayer units and
    surrogate gradient); ``threshold`` defaults to ``vth_mant / 64``.
    """

    vth_mant: int
    current_decay: int
    voltage_decay: int
    threshold: float | None = None
    tau_grad: float = 0.01
    scale_grad: float = 20.0

    def __post_init__(self) -> None:
        if self.threshold is None:
            self.threshold = self.vth_mant / THRESHOLD_SCALE


#: The readout this version trains and exports (see ``i2e_neuro.models.readout``).
READOUT = "spike_count"


@dataclass
class DeployRecord:
    """Topology, neuron parameters and integers of one quantized network.

    ``weights[conn]``: int mantissas in [-128, 127], conv ``(out, in, k, k)``, pooled dense
    ``(out, in)``; ``exponents[conn]``: 0..7; ``biases[group]``: bias mantissas per channel
    (scaled by ``2**6``). Arrays are kept as given (numpy arrays or CPU torch tensors).
    ``steps`` is the simulation window per sample (0: frames plus the network's depth).
    """

    spec: NetSpec
    neuron: NeuronParams
    weights: dict[str, Any]
    exponents: dict[str, int]
    biases: dict[str, Any]
    steps: int = 0
    i2e: dict = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    #: how the output is read: "spike_count" (the readout group spikes, the host counts its
    #: spikes; ``i2e_neuro.models.readout``); entries without it had an integrator readout
    readout: str = READOUT

    def to_dict(self) -> dict:
        """The checkpoint's ``deploy`` entry."""
        n = self.neuron
        return {
            "spec": self.spec.to_dict(),
            "neuron": {
                "threshold": float(n.threshold),
                "vth_mant": int(n.vth_mant),
                "current_decay": int(n.current_decay),
                "voltage_decay": int(n.voltage_decay),
                "tau_grad": float(n.tau_grad),
                "scale_grad": float(n.scale_grad),
            },
            "steps": int(self.steps),
            "readout": str(self.readout),
            "i2e": dict(self.i2e),
            "conns": {
                c.name: {"weight": self.weights[c.name], "exponent": int(self.exponents[c.name])}
                for c in self.spec.conns
            },
            "groups": {g.name: {"bias": self.biases[g.name]} for g in self.spec.groups},
            "classes": [str(c) for c in self.classes],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DeployRecord":
        """Read a ``deploy`` entry; a missing or malformed part raises ValueError naming it."""
        try:
            spec = NetSpec.from_dict(d["spec"])
            n = d["neuron"]
            neuron = NeuronParams(
                vth_mant=int(n["vth_mant"]),
                current_decay=int(n["current_decay"]),
                voltage_decay=int(n["voltage_decay"]),
                threshold=None if n.get("threshold") is None else float(n["threshold"]),
                tau_grad=float(n.get("tau_grad", 0.01)),
                scale_grad=float(n.get("scale_grad", 20.0)),
            )
            conns, groups = d["conns"], d["groups"]
            return cls(
                spec=spec,
                neuron=neuron,
                weights={c.name: conns[c.name]["weight"] for c in spec.conns},
                exponents={c.name: int(conns[c.name]["exponent"]) for c in spec.conns},
                biases={g.name: groups[g.name]["bias"] for g in spec.groups},
                steps=int(d.get("steps", 0)),
                i2e=dict(d.get("i2e", {})),
                classes=[str(c) for c in d.get("classes", [])],
                readout=str(d.get("readout", "integrator")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"deploy entry is incomplete or malformed: missing/invalid {e}") from e


def as_record(deploy: DeployRecord | dict) -> DeployRecord:
    """A record, from a record or a ``deploy`` dict."""
    return deploy if isinstance(deploy, DeployRecord) else DeployRecord.from_dict(deploy)


#: Loihi 2's neuron state registers ``u`` and ``v`` are 24-bit signed: Lava's ``max_uv_val``.
STATE_LIMIT = 1 << 23


def fan_in_sums(spec: NetSpec, group: str, weights: dict) -> tuple[Any, Any]:
    """Per neuron channel of ``group``: the largest positive and negative synaptic input
    (``a_in``, weight units) any input can deliver in one step. ``weights``: connection name ->
    ``[out, ...]`` weights in those units (numpy or torch). The sums of the incoming positive
    and negative weights; a pooled connection's count once per pooled position (a source neuron
    spikes at most once a step)."""
    pos = neg = 0
    for c in spec.incoming(group):
        w = weights[c.name].reshape(c.out_channels, -1)
        area = 1
        if c.kind == "pool_dense":
            for n in spec.source_shape(c.source)[1:]:
                area *= n
        pos = pos + w.clip(min=0).sum(1) * area
        neg = neg + (-w).clip(min=0).sum(1) * area
    return pos, neg


def state_bounds(
    spec: NetSpec, weights: dict, exponents: dict, biases: dict, vth_mant: int
) -> dict[str, dict[str, int]]:
    """Per group, the largest ``|u|`` and ``|v|`` (Loihi units) that ANY input can drive a
    neuron to, from the integers alone (mantissas, exponents, bias mantissas at exponent 6;
    numpy or torch int64), for Loihi's CUBA-LIF with ``du = 4096`` and ``dv = 2048``:

    * ``u = a_in << 6`` is one step's synaptic input: at most 64 times the sum of the positive
      (negative) incoming weights, all those sources spiking at once;
    * ``v`` above: a neuron that did not spike holds ``v <= vth``, so ``v <= vth / 2 + u_max +
      bias``; below: ``v[t] >= v[t-1] / 2 - (u_min + |bias|)`` gives ``v >= -2 (u_min + |bias|)``.

    Keys ``u_high``/``u_low``, ``v_high``/``v_low`` (the sides) and ``u``, ``v`` (the larger of
    each); a group is in range by construction when ``u`` and ``v`` are below
    :data:`STATE_LIMIT`: no wrap, no clip, whatever the data (docs/EXACTNESS.md).
    """
    ints = {name: weights[name] << int(exponents[name]) for name in weights}
    vth = int(vth_mant) << 6
    out = {}
    for g in spec.groups:
        pos, neg = fan_in_sums(spec, g.name, ints)
        bias = biases[g.name] << 6
        u_high, u_low = int((pos << 6).max()), int((neg << 6).max())
        v_high = int((vth // 2 + (pos << 6) + bias.clip(min=0)).max())
        v_low = int((2 * ((neg << 6) + (-bias).clip(min=0))).max())
        out[g.name] = {
            "u": max(u_high, u_low),
            "v": max(v_high, v_low),
            "u_high": u_high,
            "u_low": u_low,
            "v_high": v_high,
            "v_low": v_low,
        }
    return out
