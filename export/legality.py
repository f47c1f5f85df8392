"""Is a Lava process graph legal on Loihi 2? Checked against documented register formats.

Every limit comes from ``hw_configs/loihi2.yaml`` (``formats`` and ``limits``, each with its
source). Checked, per process:

* ``Conv`` / ``Dense``: weights within the 8-bit range of their sign mode (``lava.utils.
  weightutils``), representable with ``num_weight_bits`` (no bit would be truncated), a
  declared sign mode that matches the weights, ``num_weight_bits`` in 1..8, ``weight_exp`` in
  the exponent range;
* ``LIFReset`` / ``LIF``: ``du``, ``dv`` (12 bit), ``vth`` (17 bit), ``bias_mant`` (13 bit
  signed), ``bias_exp`` (3 bit), a power-of-two ``reset_interval``, and, given the largest
  ``|u|``, ``|v|`` seen in a simulation, the 24-bit state (an error at the wrap, a warning
  within a factor of two of it);
* connections: no host process (one of ours or any other CPU process) may touch a chip process
  except through the adapters (``InputAdapter`` / ``OutputAdapter``): no direct spike port and no
  ``RefPort`` / ``VarPort``;
* the per-core and per-chip limits (``export.resources``), with the core and chip mapping.

:func:`require_legal` raises :class:`IllegalGraph` naming process, parameter, value and limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIF, LIFReset
from lava.utils.weightutils import SignMode, determine_sign_mode

from i2e_neuro.energy.hw import hw_value, load_hw_config

CHIP_TYPES = (Conv, Dense, LIF, LIFReset)


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


def _formats(cfg: dict) -> dict:
    f = lambda key: int(hw_value(cfg, f"formats.{key}"))  # noqa: E731
    decay, vth, bias, bias_exp, state = (
        f("decay_bits"),
        f("threshold_bits"),
        f("bias_mantissa_bits"),
        f("bias_exponent_bits"),
        f("state_bits"),
    )
    return {
        "weight_bits": f("weight_mantissa_bits"),
        "mixed": (f("weight_mixed_min"), f("weight_mixed_max")),
        "excitatory": (0, f("weight_excitatory_max")),
        "inhibitory": (f("weight_inhibitory_min"), 0),
        "weight_exp": (f("weight_exp_min"), f("weight_exp_max")),
        "decay": (0, (1 << decay) - 1),
        "vth": (0, (1 << vth) - 1),
        "bias_mant": (-(1 << (bias - 1)), (1 << (bias - 1)) - 1),
        "bias_exp": (0, (1 << bias_exp) - 1),
        "state": 1 << (state - 1),
    }


def _range_check(proc, parameter, values, lo, hi, unit="") -> Check:
    a = np.asarray(values)
    vmin, vmax = (int(a.min()), int(a.max())) if a.size else (0, 0)
    value = f"{vmin}" if vmin == vmax else f"{vmin}..{vmax}"
    ok = lo <= vmin and vmax <= hi
    return Check(proc.name, type(proc).__name__, parameter, value + unit, f"[{lo}, {hi}]", ok)


def _init(var) -> np.ndarray:
    return np.asarray(var.init)


def _synapse_checks(proc, fmt: dict) -> list[Check]:
    kind = type(proc).__name__
    if isinstance(proc, Conv):
        w = _init(proc.weight)
        exp = int(_init(proc.weight_exp).reshape(-1)[0])
        bits = int(_init(proc.num_weight_bits).reshape(-1)[0])
        declared = None  # Lava's Conv has no sign_mode: the weights imply it
    else:
        w = _init(proc.weights)
        exp = int(proc.proc_params.get("weight_exp", 0))
        bits = int(proc.proc_params.get("num_weight_bits", 8))
        declared = proc.proc_params.get("sign_mode")
    implied = determine_sign_mode(w) if w.size else SignMode.EXCITATORY
    mode = declared or implied
    checks = []
    if declared is not None:
        fits = implied == declared or (declared == SignMode.MIXED)
        checks.append(
            Check(proc.name, kind, "sign_mode", implied.name, f"declared {declared.name}", fits)
        )
    lo, hi = fmt[mode.name.lower()] if mode.name.lower() in fmt else fmt["mixed"]
    checks.append(_range_check(proc, f"weights ({mode.name})", w, lo, hi))
    checks.append(_range_check(proc, "num_weight_bits", [bits], 1, fmt["weight_bits"]))
    # Loihi keeps num_weight_bits of the 8 (mixed: the sign takes one): lower bits are dropped.
    step = 1 << max(0, fmt["weight_bits"] - bits + (mode == SignMode.MIXED))
    # step is a power of two: for integers the low bits are the remainder mod step.
    rest = np.bitwise_and(w, step - 1) if w.dtype.kind in "iu" else np.mod(w, step)
    lost = int(np.count_nonzero(rest)) if w.size else 0
    checks.append(
        Check(
            proc.name,
            kind,
            "weight precision",
            f"{lost} weight(s) not multiples of {step}" if lost else f"multiples of {step}",
            f"{bits} bits{' (mixed: sign included)' if mode == SignMode.MIXED else ''}",
            lost == 0,
        )
    )
    checks.append(_range_check(proc, "weight_exp", [exp], *fmt["weight_exp"]))
    return checks


def _neuron_checks(proc, fmt: dict, peaks: dict | None) -> list[Check]:
    kind = type(proc).__name__
    checks = [
        _range_check(proc, "du", _init(proc.du), *fmt["decay"]),
        _range_check(proc, "dv", _init(proc.dv), *fmt["decay"]),
        _range_check(proc, "vth", _init(proc.vth), *fmt["vth"]),
        _range_check(proc, "bias_mant", _init(proc.bias_mant), *fmt["bias_mant"]),
        _range_check(proc, "bias_exp", _init(proc.bias_exp), *fmt["bias_exp"]),
    ]
    if isinstance(proc, LIFReset):
        interval = int(proc.proc_params["reset_interval"])
        pow2 = interval >= 1 and interval & (interval - 1) == 0
        checks.append(
            Check(proc.name, kind, "reset_interval", str(interval), "a power of two", pow2)
        )
    limit = fmt["state"]
    for var in ("u", "v"):
        peak = None if peaks is None else peaks.get(proc.name, {}).get(var)
        if peak is None:
            checks.append(
                Check(
                    proc.name,
                    kind,
                    f"max |{var}|",
                    "not measured",
                    f"< 2^23 = {limit}",
                    False,
                    "warning",
                )
                if peaks is not None
                else Check(proc.name, kind, f"max |{var}|", "not measured", f"< {limit}", True)
            )
            continue
        level = "error" if peak >= limit else "warning"
        ok = peak <= limit // 2
        checks.append(
            Check(
                proc.name,
                kind,
                f"max |{var}| (simulated)",
                str(int(peak)),
                f"< {limit} (24 bit)",
                ok,
                level,
            )
        )
    return checks


def _resolve(port) -> list:
    """The ports at the far end of ``port``'s connections (a virtual port's ``process`` is its
    parent's)."""
    return [*port.in_connections, *port.out_connections]


def _ports(proc) -> list:
    return [
        *proc.in_ports.members,
        *proc.out_ports.members,
        *proc.ref_ports.members,
        *proc.var_ports.members,
    ]


def _connection_checks(processes: list) -> list[Check]:
    """No host process may connect to a chip process except through the adapters."""
    from export.processes import InputAdapter, OutputAdapter

    adapters = (InputAdapter, OutputAdapter)
    checks = []
    seen = set()
    for proc in processes:
        if isinstance(proc, CHIP_TYPES) or isinstance(proc, adapters):
            continue
        for port in _ports(proc):
            stack, visited = list(_resolve(port)), set()
            while stack:
                other = stack.pop()
                if id(other) in visited:
                    continue
                visited.add(id(other))
                owner = getattr(other, "process", None)
                if owner is None or owner is proc:
                    stack += _resolve(other)
                    continue
                if isinstance(owner, CHIP_TYPES):
                    key = (proc.name, port.name, owner.name)
                    if key in seen:
                        continue
                    seen.add(key)
                    checks.append(
                        Check(
                            proc.name,
                            type(proc).__name__,
                            f"{type(port).__name__} {port.name}",
                            f"-> {owner.name} ({type(owner).__name__})",
                            "host <-> chip only through PyToNx/NxToPy adapters",
                            False,
                        )
                    )
    if not checks:
        checks.append(
            Check("(graph)", "-", "host <-> chip links", "adapters only", "adapters only", True)
        )
    return checks


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


def check_graph(
    net,
    extra=(),
    hardware: str = "loihi2",
    state_peaks: dict | None = None,
    chips: int | None = None,
) -> LegalityReport:
    """Check a built :class:`~export.lava_graph.LavaNetwork` (plus the host processes ``extra``
    connected to it); ``state_peaks`` ``{group: {"u": max|u|, "v": max|v|}}`` from a simulation."""
    fmt = _formats(load_hw_config(hardware))
    report = LegalityReport(hardware)
    processes = [*net.processes(), *extra]
    for proc in processes:
        if isinstance(proc, (Conv, Dense)):
            report.checks += _synapse_checks(proc, fmt)
        elif isinstance(proc, (LIF, LIFReset)):
            report.checks += _neuron_checks(proc, fmt, state_peaks)
    report.checks += _connection_checks(processes)
    desc = getattr(net, "description", None)
    if desc is not None:
        report.mapping, checks = core_mapping(desc, hardware, chips)
        report.checks += checks
    return report


def deployable_report(desc, hardware: str = "loihi2", chips: int | None = None, peaks=None):
    """The legality report of the deployable graph (network, adapters, host source and counter)."""
    from export.lava_graph import build
    from export.processes import I2ESource, ReadoutCounter

    net = build(desc, "loihi2")
    c, h, w = desc.input_shape
    source = I2ESource(
        samples=np.zeros((1, desc.timesteps, c, h, w), bool),
        steps=desc.window,
        timesteps=desc.timesteps,
        events=True,
    )
    net.connect_input(source.s_out)
    counter = ReadoutCounter(num_classes=desc.readout.shape[0], num_samples=1, window=desc.window)
    net.output.connect(counter.s_in)
    return check_graph(net, (source, counter), hardware, state_peaks=peaks, chips=chips)


def check_processes(processes, hardware: str = "loihi2") -> LegalityReport:
    """Check loose processes (no description: no core mapping)."""

    class _Loose:
        description = None

        def processes(self):
            return list(processes)

    return check_graph(_Loose(), hardware=hardware)


def require_legal(net, extra=(), hardware: str = "loihi2", **kwargs) -> LegalityReport:
    """:func:`check_graph`, raising :class:`IllegalGraph` that names every violation."""
    report = check_graph(net, extra, hardware, **kwargs)
    if not report.ok:
        raise IllegalGraph(
            f"not legal on {hardware}: " + "; ".join(c.text() for c in report.violations)
        )
    return report
