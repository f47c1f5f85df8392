"""Pre-flight resource report: does a network description fit a chip of ``hw_configs/``?

Per group: neurons, fan-in per neuron, synapse memory (as if every synapse were stored, one
byte per 8-bit weight: an upper bound, since Loihi 2 can share convolution kernels) and the
cores needed (the larger of the neuron bound and the memory bound). A network that breaks a
limit is refused with the group and the limit named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from export.description import NetworkDescription
from i2e_neuro.energy.hw import Target, hw_value, load_hw_config, load_target
from i2e_neuro.models.spec import LOIHI2_VARIANTS, NetSpec, build_spec


class DoesNotFit(ValueError):
    """The network breaks a hardware limit; the message names the group and the limit."""


@dataclass
class GroupResources:
    name: str
    neurons: int
    fan_in: int
    synapse_bytes: int
    cores: int


def fan_in(desc: NetworkDescription | NetSpec, group: str) -> int:
    """Synapses per neuron of ``group``, summed over its incoming connections (every residual
    shortcut into it included; the head's global sum-pool + dense reaches the readout as
    ``C x H x W`` synapses per readout neuron)."""
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


@dataclass
class FitReport:
    """Does a network fit a named target? Cores per group, the total, the chips it takes, and
    every reason it does not fit (each naming the group or the network and the limit)."""

    network: str
    target: Target
    rows: list[GroupResources]
    reasons: list[str] = field(default_factory=list)

    @property
    def cores(self) -> int:
        return sum(r.cores for r in self.rows)

    @property
    def chips(self) -> int:
        """Chips the cores take (``cores / cores_per_chip``, rounded up)."""
        return math.ceil(self.cores / self.target.cores_per_chip) if self.rows else 0

    @property
    def fits(self) -> bool:
        return not self.reasons

    @property
    def max_fan_in(self) -> int:
        return max((r.fan_in for r in self.rows), default=0)

    def text(self) -> str:
        """One line: cores, chips, fits or not and why, then the constants used."""
        head = (
            f"{self.network} on {self.target.name}: {self.cores} cores on {self.chips} chip(s) "
            f"of {self.target.chips} ({self.target.cores} cores), largest fan-in {self.max_fan_in}: "
        )
        verdict = "fits" if self.fits else "does NOT fit: " + "; ".join(self.reasons)
        return head + verdict + f"\n  limits used: {self.target.constants()}"

    def to_dict(self) -> dict:
        return {
            "target": self.target.name,
            "target_chips": self.target.chips,
            "target_cores": self.target.cores,
            "cores": self.cores,
            "chips": self.chips,
            "max_fan_in": self.max_fan_in,
            "fan_in_limit": self.target.max_fan_in_per_core,
            "fits": self.fits,
            "reasons": list(self.reasons),
            "limits": self.target.constants(),
        }


def fit_report(net: NetworkDescription | NetSpec, target: str | Target) -> FitReport:
    """Cores per group (neuron bound, memory bound) of ``net`` (a network description or only
    its topology, before training) on a named target (``hw_configs/<target>.yaml``), and every
    limit it breaks: each group's fan-in against the per-core limit, delays, and the total
    cores against the target's. Never raises for a network that does not fit: the caller
    decides (:func:`require_fit`)."""
    t = load_target(target) if not isinstance(target, Target) else target
    rows, reasons = [], []
    for g in net.groups:
        n, f = math.prod(g.shape), fan_in(net, g.name)
        if f > t.max_fan_in_per_core:
            reasons.append(
                f"group {g.name!r}: fan-in {f} per neuron exceeds the limit of "
                f"{t.max_fan_in_per_core} (max_fan_in_per_core of {t.chip})"
            )
        for c in net.incoming(g.name):
            delay = getattr(c, "delay", 0)
            if delay > t.max_delay_steps:
                reasons.append(
                    f"connection {c.name!r}: delay {delay} exceeds max_delay_steps "
                    f"{t.max_delay_steps} of {t.chip}"
                )
        synapse_bytes = n * f
        cores = max(
            math.ceil(n / t.max_neurons_per_core),
            math.ceil(synapse_bytes / t.memory_per_core_bytes),
        )
        rows.append(GroupResources(g.name, n, f, synapse_bytes, cores))
    needed = sum(r.cores for r in rows)
    if needed > t.cores:
        worst = max(rows, key=lambda r: r.cores)
        reasons.append(
            f"the network needs {needed} cores but {t.name} has {t.cores} "
            f"({t.chips} chip(s) x {t.cores_per_chip} cores_per_chip); largest group "
            f"{worst.name!r} needs {worst.cores}"
        )
    return FitReport(net.name, t, rows, reasons)


def require_fit(report: FitReport) -> FitReport:
    """``report``, or :class:`DoesNotFit` naming every broken limit."""
    if not report.fits:
        raise DoesNotFit(
            f"{report.network} does not fit {report.target.name}: " + "; ".join(report.reasons)
        )
    return report


def closest_fit(
    arch: str, size: int, num_classes: int, target: str | Target, timesteps: int = 8
) -> tuple[NetSpec, FitReport, list[FitReport]]:
    """The closest network to paper architecture ``arch`` at ``size x size`` that fits
    ``target``: the first of ``LOIHI2_VARIANTS[arch]`` (widest first) whose every group and
    whose total cores fit. Returns ``(spec, its report, the reports of every variant tried)``;
    :class:`DoesNotFit` names each variant's reasons when none fits."""
    if arch not in LOIHI2_VARIANTS:
        raise ValueError(f"arch {arch!r}: no Loihi 2 variants (known: {sorted(LOIHI2_VARIANTS)})")
    t = load_target(target) if not isinstance(target, Target) else target
    tried = []
    for name in LOIHI2_VARIANTS[arch]:
        spec = build_spec(name, (2, size, size), num_classes, timesteps)
        rep = fit_report(spec, t)
        tried.append(rep)
        if rep.fits:
            return spec, rep, tried
    raise DoesNotFit(
        f"no variant of {arch} at {size}x{size} fits {t.name}: "
        + " | ".join(f"{r.network}: {'; '.join(r.reasons)}" for r in tried)
    )
