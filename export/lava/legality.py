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
The rules that need no Lava (report, formats, state check, core mapping) are in
:mod:`export.rules`.
"""

from __future__ import annotations

import numpy as np
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIF, LIFReset
from lava.utils.weightutils import SignMode, determine_sign_mode

from export.rules import (  # noqa: F401  (IllegalGraph, LegalityReport: re-exported)
    Check,
    IllegalGraph,
    LegalityReport,
    bound_checks,
    core_mapping,
    range_check,
    state_checks,
)
from i2e_neuro.energy.hw import load_hw_config, register_formats

CHIP_TYPES = (Conv, Dense, LIF, LIFReset)


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
    checks.append(range_check(proc.name, type(proc).__name__, f"weights ({mode.name})", w, lo, hi))
    checks.append(
        range_check(
            proc.name, type(proc).__name__, "num_weight_bits", [bits], 1, fmt["weight_bits"]
        )
    )
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
    checks.append(
        range_check(proc.name, type(proc).__name__, "weight_exp", [exp], *fmt["weight_exp"])
    )
    return checks


def _neuron_checks(proc, fmt: dict, peaks: dict | None, bounds: dict | None = None) -> list[Check]:
    kind = type(proc).__name__
    checks = [
        range_check(proc.name, kind, "du", _init(proc.du), *fmt["decay"]),
        range_check(proc.name, kind, "dv", _init(proc.dv), *fmt["decay"]),
        range_check(proc.name, kind, "vth", _init(proc.vth), *fmt["vth"]),
        range_check(proc.name, kind, "bias_mant", _init(proc.bias_mant), *fmt["bias_mant"]),
        range_check(proc.name, kind, "bias_exp", _init(proc.bias_exp), *fmt["bias_exp"]),
    ]
    if isinstance(proc, LIFReset):
        interval = int(proc.proc_params["reset_interval"])
        pow2 = interval >= 1 and interval & (interval - 1) == 0
        checks.append(
            Check(proc.name, kind, "reset_interval", str(interval), "a power of two", pow2)
        )
    return checks + state_checks(proc.name, kind, peaks, fmt["state"], bounds)


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
    from export.lava.processes import InputAdapter, OutputAdapter

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


def check_graph(
    net,
    extra=(),
    hardware: str = "loihi2",
    state_peaks: dict | None = None,
    chips: int | None = None,
) -> LegalityReport:
    """Check a built :class:`~export.lava.graph.LavaNetwork` (plus the host processes ``extra``
    connected to it); ``state_peaks`` ``{group: {"u": max|u|, "v": max|v|}}`` from a simulation."""
    fmt = register_formats(load_hw_config(hardware))
    report = LegalityReport(hardware)
    processes = [*net.processes(), *extra]
    desc = getattr(net, "description", None)
    bounds = None if desc is None else desc.state_bounds()
    for proc in processes:
        if isinstance(proc, (Conv, Dense)):
            report.checks += _synapse_checks(proc, fmt)
        elif isinstance(proc, (LIF, LIFReset)):
            report.checks += _neuron_checks(proc, fmt, state_peaks, bounds)
    report.checks += _connection_checks(processes)
    if desc is not None:
        report.checks += bound_checks(bounds, fmt["state"])
        report.mapping, checks = core_mapping(desc, hardware, chips)
        report.checks += checks
    return report


def deployable_report(desc, hardware: str = "loihi2", chips: int | None = None, peaks=None):
    """The legality report of the deployable graph (network, adapters, host source and counter)."""
    from export.lava.graph import build
    from export.lava.processes import I2ESource, ReadoutCounter

    net = build(desc, "loihi2")
    c, h, w = desc.input_shape
    source = I2ESource(
        samples=np.zeros((1, desc.timesteps, c, h, w), bool),
        steps=desc.window,
        timesteps=desc.timesteps,
        events=True,
    )
    net.connect_input(source.s_out)
    counter = ReadoutCounter(neurons=desc.readout.shape[0], num_samples=1, window=desc.window)
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
