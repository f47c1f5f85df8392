"""Energy model: ANN MACs vs SNN synaptic operations, from layer shapes and spike counts only.

The energy model of the I2E paper (AAAI 2026, arXiv 2511.08065; per-operation energies after
Horowitz, ISSCC 2014):

* ANN layer: ``E = N_MAC * E_MAC``;
* SNN layer: ``E = N_ops * E_AC * T * f_r``, where ``N_ops`` is the layer's dense operation count
  (its MACs), ``T`` the number of timesteps and ``f_r`` the input event rate: on average a fraction
  ``f_r`` of the inputs is a spike at each step and each spike costs one accumulate per synapse.
* I2E encoding: one accumulate per pixel per timestep, ``H * W * T`` operations.

Measured networks use the same accounting without the average: :func:`synops_from_counts` adds up
spikes times the fan-out each spike reaches, and :func:`energy_table` prices those SynOps with
``E_AC`` (the paper's SNN model) and with Loihi's per-event energies from ``hw_configs/``.

Per-operation energies default to ``hw_configs/energy_45nm.yaml`` (E_MAC = 4.6 pJ, E_AC = 0.9 pJ,
Horowitz ISSCC 2014); no result is a constant in this file.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from i2e_neuro.atomic import atomic_path
from i2e_neuro.models.spec import conv_output_size as topology_output_size
from i2e_neuro.models.spec import pair

UJ = 1e6  # joules -> microjoules


class EnergyArgumentError(ValueError):
    """A bad argument to the energy model; ``argument`` is the parameter's name."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.detail = message


# --- argument checks ------------------------------------------------------------------------


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise EnergyArgumentError(name, f"must be an integer, got {value!r}")
    if value < minimum:
        raise EnergyArgumentError(name, f"must be >= {minimum}, got {value}")
    return int(value)


def _pair(name: str, value: Any, minimum: int) -> tuple[int, int]:
    try:
        h, w = pair(value)
    except ValueError:
        raise EnergyArgumentError(
            name, f"must be an integer or a pair (h, w), got {value!r}"
        ) from None
    return _int(name, h, minimum), _int(name, w, minimum)


def _number(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise EnergyArgumentError(name, f"must be a finite number, got {value!r}")
    value = float(value)
    if value < minimum or (strict and value == minimum):
        raise EnergyArgumentError(
            name, f"must be {'>' if strict else '>='} {minimum:g}, got {value:g}"
        )
    return value


def _rate(name: str, value: Any) -> float:
    value = _number(name, value)
    if value > 1:
        raise EnergyArgumentError(name, f"must be in [0, 1], got {value:g}")
    return value


def default_op_energies() -> tuple[float, float]:
    """(E_MAC, E_AC) in joules from ``hw_configs/energy_45nm.yaml``."""
    from i2e_neuro.energy.hw import hw_value, load_hw_config

    cfg = load_hw_config("energy_45nm")
    return float(hw_value(cfg, "energy.e_mac")), float(hw_value(cfg, "energy.e_ac"))


def _op_energies(e_mac: float | None, e_ac: float | None) -> tuple[float, float]:
    if e_mac is None or e_ac is None:
        d_mac, d_ac = default_op_energies()
        e_mac = d_mac if e_mac is None else e_mac
        e_ac = d_ac if e_ac is None else e_ac
    return _number("e_mac", e_mac, strict=True), _number("e_ac", e_ac, strict=True)


# --- counting -------------------------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """:func:`i2e_neuro.models.spec.conv_output_size` with its arguments checked (errors name them)."""
    size = _int("input_size", size, 1)
    kernel = _int("kernel", kernel, 1)
    stride = _int("stride", stride, 1)
    padding = _int("padding", padding, 0)
    padded = size + 2 * padding
    if kernel > padded:
        raise EnergyArgumentError(
            "kernel", f"{kernel} is larger than the padded input ({size} + 2*{padding} = {padded})"
        )
    return topology_output_size(size, kernel, stride, padding)


def conv_macs(in_ch: int, out_ch: int, kernel, stride, padding, in_h: int, in_w: int) -> int:
    """MACs of one dense 2-D convolution: ``out_h * out_w * out_ch * k_h * k_w * in_ch``.

    Every output value costs one multiply-accumulate per weight of its receptive field, padding
    included (the usual convention, and the one that reproduces the paper's 543 µJ).
    ``kernel``, ``stride`` and ``padding`` are integers or ``(h, w)`` pairs.
    """
    in_ch = _int("in_channels", in_ch, 1)
    out_ch = _int("filters", out_ch, 1)
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("padding", padding, 0)
    out_h = conv_output_size(in_h, kh, sh, ph)
    out_w = conv_output_size(in_w, kw, sw, pw)
    return out_h * out_w * out_ch * kh * kw * in_ch


def ann_energy(macs: float, e_mac: float) -> float:
    """ANN layer energy in joules: ``macs * e_mac``."""
    return _number("macs", macs) * _number("e_mac", e_mac)


def snn_energy(ops: float, e_ac: float, timesteps: int, rate: float) -> float:
    """SNN layer energy in joules, the paper's ``N_ops * E_AC * T * f_r``."""
    return (
        _number("ops", ops)
        * _number("e_ac", e_ac)
        * _int("timesteps", timesteps, 1)
        * _rate("event_rate", rate)
    )


def i2e_encoding_ops(h: int, w: int, timesteps: int) -> int:
    """Operations of the I2E encoding itself: one accumulate per pixel per timestep, ``H * W * T``."""
    return _int("height", h, 1) * _int("width", w, 1) * _int("timesteps", timesteps, 1)


def first_layer_comparison(
    input_size: int = 224,
    kernel: int = 7,
    stride: int = 2,
    padding: int = 3,
    filters: int = 64,
    in_channels_ann: int = 3,
    in_channels_snn: int = 2,
    timesteps: int = 8,
    event_rate: float = 0.0506,
    e_mac: float | None = None,
    e_ac: float | None = None,
) -> dict:
    """The paper's first-layer energy comparison (ANN on RGB vs SNN on I2E events).

    Output side ``O = (S + 2p - k) // s + 1``; ANN ``O*O*F*k*k*C_rgb`` MACs times ``E_MAC``; SNN
    the same dense count with the event channels times ``E_AC * T * f_r``; I2E encoding ``S*S*T``
    accumulates; ``ratio = ann / snn`` (the paper's), ``ratio_with_encoding = ann / (snn + i2e)``.
    With the defaults this gives the paper's figures (docs/ENERGY.md works them through).

    ``e_mac`` / ``e_ac`` default to ``hw_configs/energy_45nm.yaml``. Energies are returned in µJ,
    op counts as integers (``snn_synops`` is the expected number of synaptic operations,
    ``snn_ops * T * f_r``).
    """
    e_mac, e_ac = _op_energies(e_mac, e_ac)
    input_size = _int("input_size", input_size, 1)
    timesteps = _int("timesteps", timesteps, 1)
    event_rate = _rate("event_rate", event_rate)
    out = conv_output_size(input_size, kernel, stride, padding)
    ann_macs = conv_macs(in_channels_ann, filters, kernel, stride, padding, input_size, input_size)
    snn_ops = conv_macs(in_channels_snn, filters, kernel, stride, padding, input_size, input_size)
    i2e_ops = i2e_encoding_ops(input_size, input_size, timesteps)
    ann_j = ann_energy(ann_macs, e_mac)
    snn_j = snn_energy(snn_ops, e_ac, timesteps, event_rate)
    i2e_j = i2e_ops * e_ac
    return {
        "input_size": input_size,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "filters": filters,
        "in_channels_ann": in_channels_ann,
        "in_channels_snn": in_channels_snn,
        "timesteps": timesteps,
        "event_rate": event_rate,
        "e_mac": e_mac,
        "e_ac": e_ac,
        "output_size": [out, out, filters],
        "ann_macs": ann_macs,
        "snn_ops": snn_ops,
        "snn_synops": snn_ops * timesteps * event_rate,
        "i2e_ops": i2e_ops,
        "ann_uj": ann_j * UJ,
        "snn_uj": snn_j * UJ,
        "i2e_uj": i2e_j * UJ,
        "snn_total_uj": (snn_j + i2e_j) * UJ,
        "ratio": ann_j / snn_j if snn_j > 0 else None,
        "ratio_with_encoding": ann_j / (snn_j + i2e_j),
    }


def synops_from_counts(spikes_per_source: Any, fanout_per_source: Any) -> float:
    """Synaptic operations actually performed: ``sum(spikes_i * fanout_i)``.

    ``spikes_per_source`` holds spike counts (one per source neuron, or any array of counts);
    ``fanout_per_source`` is the number of synapses each source's spike reaches: a scalar for a
    uniform fan-out, or an array broadcastable to the spike counts. Counts must be >= 0.
    Returns an ``int`` when both inputs are integers.
    """
    spikes = _counts("spikes", spikes_per_source)
    fanout = _counts("fanout", fanout_per_source)
    try:
        shape = np.broadcast_shapes(spikes.shape, fanout.shape)
    except ValueError:
        shape = None
    if shape != spikes.shape:
        raise EnergyArgumentError(
            "fanout",
            f"shape {fanout.shape} does not broadcast to the spike counts' shape {spikes.shape}",
        )
    dtype = np.float64 if _is_float(spikes, fanout) else np.int64
    total = np.sum(spikes.astype(dtype) * fanout.astype(dtype))
    return float(total) if dtype is np.float64 else int(total)


def _counts(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise EnergyArgumentError(name, f"must be numbers, got dtype {arr.dtype}")
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise EnergyArgumentError(name, "counts must be finite and >= 0")
    return arr


def _is_float(*arrays: np.ndarray) -> bool:
    return any(np.issubdtype(a.dtype, np.floating) for a in arrays)


def _loihi_energies(hw: Any) -> dict | None:
    if hw is None:
        return None
    from i2e_neuro.energy.hw import hw_value, load_hw_config

    cfg = load_hw_config(hw) if not isinstance(hw, dict) else hw
    keys = ("synaptic_op_j", "neuron_update_active_j", "neuron_update_inactive_j")
    values = {k: hw_value(cfg, f"energy.{k}") for k in keys}
    if any(v is None for v in values.values()):
        return None  # e.g. the CPU simulator: energy not modelled
    values["name"] = cfg["name"]
    return values


def energy_constants(hw: Any = "loihi2") -> dict[str, str]:
    """Each estimate's formula with the constants it uses and their sources, one line per
    estimate (``ann``, ``snn``, ``loihi``), printed next to the figures (docs/ENERGY.md)."""
    from i2e_neuro.energy.hw import hw_source, hw_value, load_hw_config

    cfg45 = load_hw_config("energy_45nm")
    e_mac, e_ac = (float(hw_value(cfg45, f"energy.{k}")) for k in ("e_mac", "e_ac"))
    cited = "I2E paper citing Horowitz ISSCC 2014, 45 nm, 32-bit float"
    for key in ("e_mac", "e_ac"):  # the wording below stays the file's
        if "Horowitz" not in hw_source(cfg45, f"energy.{key}"):
            cited = f"hw_configs/energy_45nm.yaml energy.{key}"
    out = {
        "ann": f"ANN uJ = MACs x E_MAC {e_mac * 1e12:g} pJ ({cited} MAC)",
        "snn": f"SNN uJ = SynOps x E_AC {e_ac * 1e12:g} pJ ({cited} add)",
    }
    loihi = _loihi_energies(hw)
    if loihi is not None:
        cfg = load_hw_config(hw) if not isinstance(hw, dict) else hw
        published = "NOT PUBLISHED" not in hw_source(cfg, "energy.synaptic_op_j")
        out["loihi"] = (
            f"{loihi['name']} uJ = SynOps x {loihi['synaptic_op_j'] * 1e12:g} pJ + active neuron "
            f"updates x {loihi['neuron_update_active_j'] * 1e12:g} pJ + inactive x "
            f"{loihi['neuron_update_inactive_j'] * 1e12:g} pJ, every neuron every step ("
            + (
                "published"
                if published
                else "Loihi 1's figures, Davies et al. 2018 Table 2; Loihi 2's are not published"
            )
            + ")"
        )
    return out


def energy_table(
    layers: Iterable[dict],
    timesteps: int = 1,
    e_mac: float | None = None,
    e_ac: float | None = None,
    hw: Any = "loihi2",
) -> list[dict]:
    """Per-layer energy rows from simulated spike counts.

    Each layer dict describes one neuron population and the synapses its spikes drive:

    * ``name``: label;
    * ``neurons``: population size;
    * ``spikes``: spikes the population emitted over the ``timesteps`` of one sample, a total or
      per-neuron counts;
    * ``fanout``: synapses each spike reaches (scalar or per-neuron, as in
    :func:`synops_from_counts`);
    * ``macs_ann`` (optional): MACs of the equivalent ANN layer consuming this population;
    * ``timesteps`` (optional): steps this population exists for, if not the table's (the I2E
      input: its frames, so that its ``event_rate`` is the paper's ``f_r``).

    Each row has ``event_rate = spikes / (neurons * T)``, ``synops``, ``snn_uj = synops * E_AC``
    (the paper's SNN model on measured counts), ``ann_uj = macs_ann * E_MAC`` (None without
    ``macs_ann``) and, when ``hw`` names a target with energies (``loihi2``, ``loihi1``; None or
    ``cpu`` to skip), ``loihi_uj = synops * E_synop + spikes * E_active + (neurons*T - spikes) *
    E_inactive``: every neuron is updated every timestep, and an update is counted as "active"
    when the neuron spikes (an assumption: Davies et al. 2018 do not define "active").
    """
    timesteps = _int("timesteps", timesteps, 1)
    e_mac, e_ac = _op_energies(e_mac, e_ac)
    loihi = _loihi_energies(hw)
    rows = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise EnergyArgumentError(
                "layers", f"entry {index} must be a dict, got {type(layer).__name__}"
            )
        name = str(layer.get("name", f"layer{index}"))
        missing = [k for k in ("neurons", "spikes", "fanout") if k not in layer]
        if missing:
            raise EnergyArgumentError("layers", f"layer {name!r} lacks {', '.join(missing)}")
        neurons = _int(f"layers[{name}].neurons", layer["neurons"], 1)
        row_steps = _int(f"layers[{name}].timesteps", layer.get("timesteps", timesteps), 1)
        spikes_arr = _counts(f"layers[{name}].spikes", layer["spikes"])
        spikes = float(spikes_arr.sum())
        steps = neurons * row_steps
        if spikes > steps:
            raise EnergyArgumentError(
                f"layers[{name}].spikes",
                f"{spikes:g} spikes exceed neurons x timesteps = {neurons} x {row_steps} = {steps}",
            )
        synops = synops_from_counts(spikes_arr, layer["fanout"])
        macs = layer.get("macs_ann")
        if macs is not None:
            macs = _number(f"layers[{name}].macs_ann", macs)
        row = {
            "name": name,
            "neurons": neurons,
            "timesteps": row_steps,
            "spikes": int(spikes) if spikes.is_integer() else spikes,
            "event_rate": spikes / steps,
            "synops": synops,
            "macs_ann": macs,
            "snn_uj": synops * e_ac * UJ,
            "ann_uj": macs * e_mac * UJ if macs is not None else None,
            "loihi_uj": None,
        }
        if loihi is not None:
            joules = (
                synops * loihi["synaptic_op_j"]
                + spikes * loihi["neuron_update_active_j"]
                + (steps - spikes) * loihi["neuron_update_inactive_j"]
            )
            row["loihi_uj"] = joules * UJ
            row["loihi_target"] = loihi["name"]
        rows.append(row)
    return rows


def energy_totals(rows: Sequence[dict]) -> dict:
    """One ``total`` row summing the energies and SynOps of ``rows`` (None where any row lacks a value)."""

    def total(key: str):
        values = [r.get(key) for r in rows]
        return None if not values or any(v is None for v in values) else sum(values)

    return {
        "name": "total",
        "synops": total("synops"),
        "macs_ann": total("macs_ann"),
        "snn_uj": total("snn_uj"),
        "ann_uj": total("ann_uj"),
        "loihi_uj": total("loihi_uj"),
    }


def plot_energy(rows: Sequence[dict], path: str | Path, title: str = "Energy per layer") -> Path:
    """Bar chart (PNG, log scale) of ANN vs SNN (and Loihi, where present) energy per row, in µJ.

    Rows need ``name`` and any of ``ann_uj``, ``snn_uj``, ``loihi_uj``; missing or non-positive
    values are left out. The file is written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(rows)
    if not rows:
        raise EnergyArgumentError("rows", "nothing to plot")
    series = [
        ("ann_uj", "ANN (MAC)", "#c44e52"),
        ("snn_uj", "SNN (AC)", "#4c72b0"),
        ("loihi_uj", "Loihi", "#55a868"),
    ]
    series = [s for s in series if any(_positive(r.get(s[0])) for r in rows)]
    if not series:
        raise EnergyArgumentError("rows", "no positive energy values to plot")
    fig = Figure(figsize=(max(4.0, 1.2 * len(rows) + 2.0), 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(series)
    x = np.arange(len(rows))
    for i, (key, label, color) in enumerate(series):
        values = [r.get(key) for r in rows]
        keep = [j for j, v in enumerate(values) if _positive(v)]
        offsets = x[keep] + (i - (len(series) - 1) / 2) * width
        heights = [values[j] for j in keep]
        bars = ax.bar(offsets, heights, width=width, label=label, color=color)
        for bar, h in zip(bars, heights):
            ax.annotate(
                f"{h:.3g}",
                (bar.get_x() + bar.get_width() / 2, h),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_yscale("log")
    ax.set_ylabel("energy (µJ)")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [str(r.get("name", "")) for r in rows],
        rotation=20 if len(rows) > 3 else 0,
        ha="right" if len(rows) > 3 else "center",
    )
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _positive(value: Any) -> bool:
    return value is not None and isinstance(value, Real) and math.isfinite(value) and value > 0
