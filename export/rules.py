"""Loihi 2 legality rules that need only the network description, not Lava: the report and
its checks, the register formats (``hw_configs/``, :func:`i2e_neuro.energy.hw.register_formats`),
the 24-bit state check of measured peaks, and the core and chip mapping with fan-in
(:mod:`export.resources`). :mod:`export.lava.legality` applies them to a built Lava graph."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from i2e_neuro.energy.hw import hw_value, load_hw_config


class IllegalGraph(ValueError):
    """The graph breaks a Loihi 2 limit; the message names process, parameter, value and limit."""


@dataclass
class Check:
    process: str
    kind: str
    parameter: str
    value: str
    limit: str
    ok: bool
    level: str = "error"  # "error" or "warning" (a risk, not a refusal)

    def text(self) -> str:
        return f"{self.process} ({self.kind}): {self.parameter} = {self.value}, limit {self.limit}"


@dataclass
class LegalityReport:
    hardware: str
    checks: list[Check] = field(default_factory=list)
    mapping: list[dict] = field(default_factory=list)

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.level == "error"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.violations

    def table(self) -> str:
        lines = [
            f"{'process':<16} {'kind':<9} {'parameter':<22} {'value':<24} {'limit':<26} status"
        ]
        for c in self.checks:
            status = "ok" if c.ok else ("RISK" if c.level == "warning" else "ILLEGAL")
            lines.append(
                f"{c.process:<16} {c.kind:<9} {c.parameter:<22} {c.value:<24} {c.limit:<26} {status}"
            )
        if self.mapping:
            lines += [
                "",
                f"{'group':<16} {'neurons':>9} {'cores':>6} {'first core':>11} {'chip':>5}",
            ]
            for m in self.mapping:
                lines.append(
                    f"{m['group']:<16} {m['neurons']:>9} {m['cores']:>6} {m['first_core']:>11} {m['chip']:>5}"
                )
        verdict = "LEGAL" if self.ok else f"ILLEGAL ({len(self.violations)} violation(s))"
        lines.append(f"\n{self.hardware}: {verdict}; {len(self.warnings)} risk(s)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "hardware": self.hardware,
            "legal": self.ok,
            "violations": [asdict(c) for c in self.violations],
            "warnings": [asdict(c) for c in self.warnings],
            "checks": [asdict(c) for c in self.checks],
            "mapping": self.mapping,
        }


def range_check(process: str, kind: str, parameter: str, values, lo: int, hi: int) -> Check:
    """Every value of ``values`` within ``[lo, hi]``."""
    a = np.asarray(values)
    vmin, vmax = (int(a.min()), int(a.max())) if a.size else (0, 0)
    value = f"{vmin}" if vmin == vmax else f"{vmin}..{vmax}"
    return Check(process, kind, parameter, value, f"[{lo}, {hi}]", lo <= vmin and vmax <= hi)


def state_checks(
    process: str, kind: str, peaks: dict | None, limit: int, bounds: dict | None = None
) -> list[Check]:
    """The largest ``|u|`` and ``|v|`` a simulation reached (``peaks`` ``{process: {"u", "v"}}``)
    against the signed state width ``limit`` (``2**23``): an error at the limit, a risk above
    half of it unless the data-free bound (``bounds``, as :func:`bound_checks` takes them)
    shows that no input can reach the limit; not measured is a risk where peaks were asked for,
    else only noted."""
    proven = bounds is not None and process in bounds
    checks = []
    for var in ("u", "v"):
        peak = None if peaks is None else peaks.get(process, {}).get(var)
        if peak is None:
            checks.append(
                Check(
                    process,
                    kind,
                    f"max |{var}|",
                    "not measured",
                    f"< 2^23 = {limit}",
                    False,
                    "warning",
                )
                if peaks is not None
                else Check(process, kind, f"max |{var}|", "not measured", f"< {limit}", True)
            )
            continue
        level = "error" if peak >= limit else "warning"
        step = peaks[process].get("overflow_step")
        checks.append(
            Check(
                process,
                kind,
                f"max |{var}| (simulated)",
                str(int(peak)) + (f" (past 24 bits from step {step})" if peak >= limit else ""),
                f"< {limit} (24 bit)",
                peak <= limit // 2 or (proven and peak < limit and bounds[process][var] < limit),
                level,
            )
        )
    return checks


def bound_checks(bounds: dict, limit: int) -> list[Check]:
    """The data-free bounds of ``|u|`` and ``|v|`` per group (``NetworkDescription.state_bounds``)
    against the signed state width ``limit``: a group whose bound reaches it is not in range by
    construction (some input could make ``u`` wrap or ``v`` clip), a risk; below it no input can
    (docs/EXACTNESS.md)."""
    return [
        Check(
            group,
            "group",
            f"max |{var}| (any input)",
            str(int(b[var])),
            f"< {limit} (24 bit)",
            int(b[var]) < limit,
            "warning",
        )
        for group, b in bounds.items()
        for var in ("u", "v")
    ]


def first_overflow(peaks: dict | None, order: list[str], limit: int) -> tuple[str, int] | None:
    """``(group, step)`` of the first state past 24 bits in measured ``peaks`` (feed-forward
    ``order``, earliest step first), or None: where Loihi's wrap or clip starts to act."""
    found = [
        (int(p["overflow_step"]), order.index(g), g)
        for g, p in (peaks or {}).items()
        if g in order and "overflow_step" in p and max(p.get("u", 0), p.get("v", 0)) >= limit
    ]
    if not found:
        return None
    step, _, group = min(found)
    return group, step


def core_mapping(
    desc, hardware: str = "loihi2", chips: int | None = None
) -> tuple[list[dict], list[Check]]:
    """Groups laid out on consecutive cores (``export.resources``), chip by chip; ``chips`` None:
    as many chips as needed (a multi-chip system such as Kapoho Point), else at most that many."""
    from export.resources import DoesNotFit, resource_report

    cfg = load_hw_config(hardware)
    per_chip = int(hw_value(cfg, "limits.cores_per_chip"))
    try:
        rows = resource_report(
            desc, hardware, chips if chips is not None else 1 << 20, check_fan_in=False
        )
    except DoesNotFit as e:
        return [], [Check("(network)", "-", "cores", "does not fit", str(e), False)]
    mapping, core = [], 0
    for r in rows:
        mapping.append(
            {
                "group": r.name,
                "neurons": r.neurons,
                "fan_in": r.fan_in,
                "cores": r.cores,
                "first_core": core,
                "chip": core // per_chip,
            }
        )
        core += r.cores
    used = math.ceil(core / per_chip) if core else 0
    limit = f"{per_chip} per chip" + (f" x {chips} chip(s)" if chips is not None else "")
    checks = [Check("(network)", "-", "cores", f"{core} on {used} chip(s)", limit, True)]
    # Fan-in: Loihi 2's per-core input-axon limit is not published; loihi2.yaml uses Loihi 1's
    # figure as a conservative bound and says so ("NOT PUBLISHED"): exceeding an unpublished
    # bound is reported as a risk, exceeding a published one as illegal.
    max_fan_in = int(hw_value(cfg, "limits.max_fan_in_per_core"))
    published = "NOT PUBLISHED" not in str(cfg["limits"]["max_fan_in_per_core"].get("source", ""))
    for r in rows:
        checks.append(
            Check(
                r.name,
                "group",
                "fan-in per neuron",
                str(r.fan_in),
                f"<= {max_fan_in}" + ("" if published else " (Loihi 1 figure)"),
                r.fan_in <= max_fan_in,
                "error" if published else "warning",
            )
        )
    return mapping, checks
