"""Pre-flight resource report: does a network description fit a chip of ``hw_configs/``?

Per group: neurons, fan-in per neuron, synapse memory (as if every synapse were stored, one
byte per 8-bit weight: an upper bound, since Loihi 2 can share convolution kernels) and the
cores needed (the larger of the neuron bound and the memory bound). A network that breaks a
limit is refused with the group and the limit named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from export.description import NetworkDescription
from i2e_neuro.energy.hw import hw_value, load_hw_config


class DoesNotFit(ValueError):
    """The network breaks a hardware limit; the message names the group and the limit."""


@dataclass
class GroupResources:
    name: str
    neurons: int
    fan_in: int
    synapse_bytes: int
    cores: int


def fan_in(desc: NetworkDescription, group: str) -> int:
    """Synapses per neuron of ``group``, summed over its incoming connections."""
    total = 0
    for c in desc.incoming(group):
        src = desc.source_shape(c.source)
        total += src[0] * c.kernel * c.kernel if c.kind == "conv" else src[0] * src[1] * src[2]
    return total


def resource_report(
    desc: NetworkDescription, hardware: str = "loihi2", chips: int = 1, check_fan_in: bool = True
) -> list[GroupResources]:
    """Resources per group; raises :class:`DoesNotFit` naming the first broken limit
    (``check_fan_in=False`` leaves the fan-in limit to the caller, e.g. ``export.lava.legality``)."""
    cfg = load_hw_config(hardware)
    per_core = int(hw_value(cfg, "limits.max_neurons_per_core"))
    memory = int(hw_value(cfg, "limits.synaptic_memory_per_core_bytes"))
    max_fan_in = int(hw_value(cfg, "limits.max_fan_in_per_core"))
    max_delay = int(hw_value(cfg, "limits.max_delay_steps"))
    rows = []
    for g in desc.groups:
        n, f = g.size, fan_in(desc, g.name)
        if check_fan_in and f > max_fan_in:
            raise DoesNotFit(
                f"group {g.name!r}: fan-in {f} per neuron exceeds {hardware}'s limit of {max_fan_in} (max_fan_in_per_core)"
            )
        for c in desc.incoming(g.name):
            if c.delay > max_delay:
                raise DoesNotFit(
                    f"connection {c.name!r}: delay {c.delay} exceeds {hardware}'s max_delay_steps {max_delay}"
                )
        synapse_bytes = n * f
        cores = max(math.ceil(n / per_core), math.ceil(synapse_bytes / memory))
        rows.append(GroupResources(g.name, n, f, synapse_bytes, cores))
    available = int(hw_value(cfg, "limits.cores_per_chip")) * chips
    needed = sum(r.cores for r in rows)
    if needed > available:
        worst = max(rows, key=lambda r: r.cores)
        raise DoesNotFit(
            f"the network needs {needed} cores but {chips} {hardware} chip(s) have {available} (cores_per_chip); "
            f"largest group {worst.name!r} needs {worst.cores}"
        )
    return rows


def format_report(rows: list[GroupResources], hardware: str) -> str:
    lines = [
        f"{'group':<14} {'neurons':>9} {'fan-in':>7} {'synapses (B)':>13} {'cores':>6}   [{hardware}]"
    ]
    for r in rows:
        lines.append(
            f"{r.name:<14} {r.neurons:>9} {r.fan_in:>7} {r.synapse_bytes:>13} {r.cores:>6}"
        )
    lines.append(
        f"{'total':<14} {sum(r.neurons for r in rows):>9} {'':>7} {sum(r.synapse_bytes for r in rows):>13} {sum(r.cores for r in rows):>6}"
    )
    return "\n".join(lines)
