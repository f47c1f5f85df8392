"""Network description <-> NIR graph (Neuromorphic Intermediate Representation, ``nir`` 1.0.8).

The graph uses only NIR's own node types (``Input``, ``Delay``, ``Conv2d``, ``CubaLIF``,
``Output``) and keeps everything of ours that NIR has no field for (weight exponents, I2E
settings, the sample window) in one JSON string in the graph-level ``metadata``, which readers
that do not know it ignore; nodes carry no metadata and ``CubaLIF.v_reset`` (0, NIR's default)
is left out of the file, so ``nir`` 1.0.4 reads it as well as 1.0.8. Which frameworks can run
it, and how, is in docs/NIR.md (no stock importer runs it as it stands).

Time: by default ``dt = 1`` (one Loihi step) and every tau and delay is in steps.
``dt=SECONDS`` (``i2e-neuro export --format nir --dt 1e-4``) scales every tau and delay by
``dt`` and keeps ``r`` and ``w_in`` (they are ratios ``tau / dt``, the same numbers); the
metadata records ``dt`` and :func:`from_nir` divides it out again. Every other parameter below
is in the units of the weights, i.e. Loihi's fixed-point state divided by 64 (``2**6``, Lava's
and slayer's weight scale), so that weights, biases and thresholds share one scale.

Mapping (Loihi CUBA-LIF of a neuron group with ``du``, ``dv`` on the 4096 scale, threshold
mantissa ``vth``, bias mantissa ``b`` with exponent ``bias_exp``):

* **Input**: ``Input`` of shape ``(C, H, W)`` (one event frame per step).
* **Synaptic delay**: Loihi delays every synaptic hop by one step (``u[t]`` receives the spikes
  of step ``t - 1``). NIR edges carry no delay, so every spike source (the input and every
  spiking group with outgoing connections) is followed by one ``Delay`` node with
  ``delay = 1`` (steps), and all of its connections read from that node.
* **Connections**: ``Conv2d`` with the effective weights ``m * 2**e`` (8-bit mantissa, per
  connection exponent), torch's cross-correlation layout ``(out, in, kh, kw)``, and Loihi's
  stride and zero padding. A connection into several groups is one node with several edges.
* **The residual stream**: a group fed by several connections has one edge from each
  (NIR sums the signals arriving at a node); no identity or sum nodes.
* **Neuron group** -> ``CubaLIF`` with ``tau_syn = 4096 / du``, ``tau_mem = 4096 / dv`` (in
  steps; times ``dt`` in seconds), ``w_in = 4096 / du``, ``r = 4096 / dv``, ``v_reset = 0``.
  Forward Euler at the file's ``dt`` then gives Loihi's update exactly (up to its integer
  truncation, below)::

      I[t] = I[t-1] * (1 - du/4096) + input[t]
      v[t] = v[t-1] * (1 - dv/4096) + I[t] + bias
      spike if v[t] > vth (strict), then v[t] = 0

  (the digits and MS-ResNet models: ``du = 4096`` so ``tau_syn = 1``, ``dv = 2048`` so
  ``tau_mem = 2``, ``r = 2``). The current ``I`` is Loihi's ``u``; the voltage is updated with
  this step's current, as Loihi does.
* **Bias** ``b * 2**(bias_exp - 6)``: with ``du = 4096`` (``tau_syn = 1``) the current is
  exactly this step's input, so a bias added to the current equals Loihi's bias added to the
  voltage. It is written as the ``bias`` of the group's incoming ``Conv2d`` nodes (solved
  group by group so that the biases reaching each group sum to its bias; a shared connection
  carries one bias to all its targets), with ``v_leak = 0``. Where that cannot be solved, or
  ``du != 4096``, the rest goes into ``v_leak = tau_mem * bias`` (NIR's leak potential,
  ``tau_mem dv/dt = (v_leak - v) + r I``). Reason: Norse 1.1.0's reader also lets the
  synaptic current leak towards ``v_leak``, so a non-zero ``v_leak`` is read wrongly there.
* **Threshold**: Loihi compares the integer voltage strictly, ``v > vth << 6``, i.e. a spike
  needs ``v >= vth + 1/64`` in weight units. ``v_threshold = vth + 63/4096`` (just under
  ``vth + 1/64``) makes the float strict ``v > v_threshold`` agree with the integer compare at
  exact ties and wherever Loihi's truncation has rounded the voltage down (below).
* **Head** (global sum-pool then dense, ``pool_dense``): one ``Conv2d`` whose kernel covers the
  whole ``H x W`` map with the dense weight repeated at every position (no padding). That is
  the sum-pool and the dense layer in one exact node (Lava's graph does the same with a tiled
  ``Dense``), read by every torch-based NIR tool; it avoids ``Flatten``, whose ``start_dim``
  NIR tools read with and without the batch dimension.
* **Readout**: the last group (one neuron per class) is a spiking group like the others, so a
  ``CubaLIF`` of shape ``(K, 1, 1)`` (the head conv's output); ``Output`` carries its spikes.
  The host decides as on Loihi (``i2e_neuro.models.readout.predict``): the class whose neuron
  spiked most in the sample's ``steps`` steps, ties to the earliest first spike, then to the
  lowest index.
* **Window reset**: Lava resets every group at the start of each sample window; in NIR each
  sample starts from a fresh (zero) state.

What float dynamics cannot reproduce: Loihi's voltage decay ``v * (4096 - dv) >> 12``
truncates towards zero (for ``dv = 2048``: halving drops the lowest bit of the 24-bit
voltage once a voltage has been held for more than 6 steps), so the integer voltage differs
from the float one by less than 1/64 (one Loihi unit). Rounded down (positive voltages), the
nudged threshold makes the decision exact; only a voltage that was rounded *up* (after a
recent negative value) and lands within 1/64 above ``vth`` can spike on Loihi and not in
float. Loihi also saturates ``u`` and ``v`` at 24 bits (``|v| < 2**17`` weight units); NIR has
no saturation. ``scripts/check_nir.py`` measures how often either changes a spike.

:func:`from_nir` reads such a graph back (ours or one written by another tool) when every
parameter lies on Loihi's grid; see its docstring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nir
import numpy as np

from export.description import BIAS_EXP, INPUT, Connection, NetworkDescription, NeuronGroup
from i2e_neuro.atomic import atomic_path
from i2e_neuro.models.spec import ConnSpec, GroupSpec, NetSpec, pair

#: Loihi's threshold compare ``v > vth << 6`` as a float compare in weight units.
THRESHOLD_NUDGE = 63 / 4096
DECAY_UNITY = 4096
OUTPUT = "output"
DELAY_SUFFIX = ".delay"
#: NIR node types :func:`from_nir` maps.
SUPPORTED_NODES = ("Input", "Output", "Delay", "Conv2d", "CubaLIF")
METADATA_KEY = "i2e_neuro"


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _tau(decay: int) -> float:
    return math.inf if decay == 0 else DECAY_UNITY / decay


def _bias_units(g: NeuronGroup) -> np.ndarray:
    return g.bias.astype(np.float64) * 2.0 ** (g.bias_exp - BIAS_EXP)


def split_biases(desc: NetworkDescription) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-connection biases (``Conv2d.bias``) and per-group leftovers (for ``v_leak``).

    Groups in order: a group's still-free incoming connections are fixed (the first takes what
    its bias still needs, the rest 0), so every later group sees settled values.
    """
    conn_bias = {c.name: None for c in desc.connections}
    rest = {}
    through_current = all(g.du == DECAY_UNITY for g in desc.groups)
    for g in desc.groups:
        need = _bias_units(g)
        incoming = desc.incoming(g.name)
        if not through_current:
            for c in incoming:
                if conn_bias[c.name] is None:
                    conn_bias[c.name] = np.zeros(g.shape[0])
            rest[g.name] = need
            continue
        free = [c for c in incoming if conn_bias[c.name] is None]
        known = sum((conn_bias[c.name] for c in incoming if c not in free), np.zeros(g.shape[0]))
        for i, c in enumerate(free):
            conn_bias[c.name] = need - known if i == 0 else np.zeros(g.shape[0])
        rest[g.name] = need - known - (conn_bias[free[0].name] if free else 0)
    return conn_bias, rest


def _check_names(desc: NetworkDescription) -> None:
    names = [INPUT, OUTPUT]
    for g in desc.groups:
        names += [g.name, g.name + DELAY_SUFFIX]
    names += [c.name for c in desc.connections]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"{desc.name}: names {dup} are used twice (groups, connections, input/output, "
            "'<source>.delay'); NIR node names must be unique"
        )


def _check_dt(dt: float) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt: must be a positive number of seconds per step, got {dt!r}")
    return float(dt)


def to_nir(
    desc: NetworkDescription, threshold_nudge: float = THRESHOLD_NUDGE, dt: float = 1.0
) -> nir.NIRGraph:
    """The description as a NIR graph (see the module docstring for the mapping).

    ``threshold_nudge`` is added to every spiking threshold (default: see the module docstring;
    0 gives the plain ``v > vth``, for measuring what the nudge closes). ``dt``: the length of
    one step in the file's time unit (default 1: taus and delays in steps; ``1e-4`` for readers
    that assume seconds at ``dt = 1e-4``, as snnTorch does); taus and delays are multiplied by it.
    """
    dt = _check_dt(dt)
    desc.validate()
    _check_names(desc)
    conn_bias, rest = split_biases(desc)
    nodes: dict[str, nir.NIRNode] = {INPUT: nir.Input(input_type=np.array(desc.input_shape))}
    edges: list[tuple[str, str]] = []
    sources = {c.source for c in desc.connections}
    exponents: dict[str, int] = {}

    def add_delay(source: str, shape: tuple[int, ...]) -> None:
        nodes[source + DELAY_SUFFIX] = nir.Delay(delay=_full(shape, dt))
        edges.append((source, source + DELAY_SUFFIX))

    add_delay(INPUT, tuple(desc.input_shape))
    for g in desc.groups:
        for c in desc.incoming(g.name):
            if c.name not in nodes:
                nodes[c.name] = _conv_node(desc, c, conn_bias[c.name])
                exponents[c.name] = int(c.exponent)
                edges.append((c.source + DELAY_SUFFIX, c.name))
            edges.append((c.name, g.name))
        nodes[g.name] = _group_node(desc, g, rest[g.name], threshold_nudge, dt)
        if g.name in sources:
            add_delay(g.name, tuple(g.shape))
    out_shape = _node_shape(desc, desc.readout)
    nodes[OUTPUT] = nir.Output(output_type=np.array(out_shape))
    edges.append((desc.readout.name, OUTPUT))
    meta = {
        "producer": "i2e-neuro",
        "name": desc.name,
        "dt": dt,  # seconds (or steps, when 1) per step; taus and delays are in this unit
        "timesteps": desc.timesteps,
        "steps": desc.steps,
        "i2e": desc.i2e,
        "classes": desc.classes,
        # readout neurons per class (class-major): the host adds up their spikes per class
        "population": desc.readout.population,
        "threshold_nudge": threshold_nudge,
        "exponents": exponents,  # per Conv2d: weight = mantissa * 2**exponent
        "node_order": list(nodes),  # HDF5 lists nodes alphabetically; from_nir restores this order
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={METADATA_KEY: json.dumps(meta)})


def _node_shape(desc: NetworkDescription, g: NeuronGroup) -> tuple[int, ...]:
    """Shapes in NIR: spatial groups ``(C, H, W)``; the head's target ``(K, 1, 1)`` (a conv output)."""
    return tuple(g.shape) if len(g.shape) == 3 else (g.shape[0], 1, 1)


def _conv_node(desc: NetworkDescription, c: Connection, bias: np.ndarray) -> nir.Conv2d:
    _, h, w = desc.source_shape(c.source)
    weight = c.effective_weight.astype(np.float32)
    if c.kind == "pool_dense":  # global sum-pool + dense == one conv with the weight everywhere
        weight = np.broadcast_to(weight[:, :, None, None], (*weight.shape, h, w)).copy()
        stride, padding = (h, w), (0, 0)
    else:
        stride, padding = (c.stride, c.stride), (c.padding, c.padding)
    return nir.Conv2d(
        input_shape=(h, w),
        weight=weight,
        stride=stride,
        padding=padding,
        dilation=(1, 1),
        groups=1,
        bias=bias.astype(np.float32),
    )


def _group_node(
    desc: NetworkDescription, g: NeuronGroup, rest: np.ndarray, nudge: float, dt: float = 1.0
) -> nir.NIRNode:
    shape = _node_shape(desc, g)
    if g.dv == 0:
        raise ValueError(
            f"group {g.name!r}: a spiking group without voltage decay (dv = 0) has no CubaLIF form (tau_mem = inf, r = inf)"
        )
    tau_syn, tau_mem = _tau(g.du), _tau(g.dv)
    per_channel = rest.reshape(-1, *([1] * (len(shape) - 1)))
    return nir.CubaLIF(
        tau_syn=_full(shape, tau_syn * dt),
        tau_mem=_full(shape, tau_mem * dt),
        r=_full(shape, tau_mem),
        v_leak=np.broadcast_to(tau_mem * per_channel, shape).astype(np.float32),
        v_threshold=_full(shape, g.vth + nudge),
        v_reset=_full(shape, 0.0),
        w_in=_full(shape, tau_syn),
    )


def save_nir(
    desc: NetworkDescription,
    path: str | Path,
    threshold_nudge: float = THRESHOLD_NUDGE,
    dt: float = 1.0,
) -> Path:
    """Write the description's NIR graph to ``path`` (atomically; ``dt``: see :func:`to_nir`).

    ``CubaLIF.v_reset`` (all 0, NIR's default since it has the field) is left out of the file:
    ``nir`` up to 1.0.4 has no such field and refuses a file that carries it.
    """
    import h5py

    path = Path(path)
    graph = to_nir(desc, threshold_nudge, dt)
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)
        with h5py.File(tmp, "r+") as f:
            nodes = f["node"]["nodes"]
            for name in nodes:
                node = nodes[name]
                if node["type"][()] == b"CubaLIF" and "v_reset" in node:
                    if np.any(node["v_reset"][()] != 0):
                        raise ValueError(f"node {name!r}: v_reset must be 0")
                    del node["v_reset"]
    return path


# ---------------------------------------------------------------------------- import


def _uniform(node_name: str, field: str, value: np.ndarray) -> float:
    value = np.asarray(value, dtype=np.float64)
    if value.size == 0 or not np.all(value == value.flat[0]):
        raise ValueError(
            f"node {node_name!r}: {field} differs between neurons; a Loihi neuron group shares one value"
        )
    return float(value.flat[0])


def _decay(node_name: str, field: str, tau: float) -> int:
    """``4096 / tau`` as Loihi's 12-bit decay, or an error naming the node."""
    decay = 0.0 if math.isinf(tau) else DECAY_UNITY / tau
    if tau <= 0 or abs(decay - round(decay)) > 1e-6 or not 0 <= round(decay) <= DECAY_UNITY:
        raise ValueError(
            f"node {node_name!r}: {field} = {tau} is not 4096/d for an integer decay d in 0..4096"
        )
    return int(round(decay))


def _steps(tau: float, dt: float) -> float:
    """A tau in the file's time unit -> steps; within float32 rounding of ``4096 / d``, snapped."""
    steps = tau / dt
    if math.isfinite(steps) and steps > 0:
        d = DECAY_UNITY / steps
        if abs(d - round(d)) <= 1e-5 * d and round(d) > 0:
            return DECAY_UNITY / round(d)
    return steps


def _exponent(name: str, w: np.ndarray, hint: int | None) -> tuple[np.ndarray, int]:
    if not np.all(np.isfinite(w)) or not np.all(w == np.round(w)):
        raise ValueError(
            f"node {name!r}: weights are not integers m * 2**e (Loihi's 8-bit mantissa and exponent); "
            "quantize the network first"
        )
    w = np.round(w).astype(np.int64)
    candidates = ([hint] if hint is not None else []) + list(range(8))
    for e in candidates:
        if 0 <= e <= 7 and np.all(w % (1 << e) == 0):
            m = w >> e
            if m.min(initial=0) >= -128 and m.max(initial=0) <= 127:
                return m, e
    raise ValueError(
        f"node {name!r}: weights (|w| up to {int(np.abs(w).max())}) do not fit an 8-bit mantissa "
        "with an exponent 0..7"
    )


def _meta(node: nir.NIRNode, key: str):
    value = (getattr(node, "metadata", None) or {}).get(key)
    if isinstance(value, bytes):
        value = value.decode()
    return value


def graph_meta(graph: nir.NIRGraph) -> dict:
    """What our writer records in the graph-level metadata (``{}`` for a foreign graph)."""
    return json.loads(_meta(graph, METADATA_KEY) or "{}")


def from_nir(graph: nir.NIRGraph, timesteps: int | None = None) -> NetworkDescription:
    """A NIR graph -> the network description, so Lava can run it and the Loihi checks apply.

    Exact for graphs in the form :func:`to_nir` writes (ours, or a CUBA conv net from another
    tool written the same way): ``Input`` -> ``Delay(1)`` -> ``Conv2d`` -> ``CubaLIF`` ...
    -> ``CubaLIF`` (the readout) -> ``Output``, with integer weights ``m * 2**e``, ``tau = 4096 / d`` for integer
    decays, ``w_in = tau_syn``, ``r = tau_mem``, ``v_reset = 0``, integer biases and a
    threshold in ``[vth, vth + 1/64)``. Anything else is refused with the node and parameter
    named: rounding a float network onto Loihi's grid would not be the same network (train it
    quantization-aware, or quantize it, first). ``timesteps`` (event frames per sample) is
    needed when the graph does not carry our metadata.
    """
    meta = graph_meta(graph)
    dt = _check_dt(meta.get("dt", 1.0))
    exponents = meta.get("exponents", {})
    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if kind not in SUPPORTED_NODES:
            raise ValueError(
                f"node {name!r}: NIR type {kind} cannot be mapped to Loihi "
                f"(supported: {', '.join(SUPPORTED_NODES)})"
            )
    parents: dict[str, list[str]] = {n: [] for n in graph.nodes}
    children: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise ValueError(f"edge ({a!r}, {b!r}): unknown node")
        parents[b].append(a)
        children[a].append(b)
    order = _topological(graph, parents, children, meta.get("node_order", []))
    inputs = [n for n in order if isinstance(graph.nodes[n], nir.Input)]
    outputs = [n for n in order if isinstance(graph.nodes[n], nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"graph: needs one Input and one Output node, has {len(inputs)} and {len(outputs)}"
        )
    input_name = inputs[0]
    input_shape = tuple(int(s) for s in np.asarray(graph.nodes[input_name].input_type["input"]))
    if len(input_shape) != 3:
        raise ValueError(f"node {input_name!r}: input shape {input_shape} is not (C, H, W)")

    def spike_source(delay_name: str) -> str:
        node = graph.nodes[delay_name]
        if not isinstance(node, nir.Delay):
            raise ValueError(
                f"node {delay_name!r}: a Conv2d must read from a Delay node (Loihi delays every synaptic hop by one step)"
            )
        if not np.allclose(np.asarray(node.delay, dtype=np.float64) / dt, 1, rtol=1e-6, atol=0):
            raise ValueError(
                f"node {delay_name!r}: delay must be 1 step = dt = {dt:g} (Loihi's synaptic hop)"
            )
        (src,) = parents[delay_name] or [None]
        if src is None or len(parents[delay_name]) != 1:
            raise ValueError(f"node {delay_name!r}: needs exactly one source")
        if src == input_name:
            return INPUT
        if not isinstance(graph.nodes[src], nir.CubaLIF):
            raise ValueError(
                f"node {delay_name!r}: its source {src!r} is not a spiking group (CubaLIF)"
            )
        return src

    group_nodes = [n for n in order if isinstance(graph.nodes[n], nir.CubaLIF)]
    if not group_nodes or not isinstance(graph.nodes[group_nodes[-1]], nir.CubaLIF):
        raise ValueError("graph: has no neuron groups")
    readout_name = group_nodes[-1]
    if parents[outputs[0]] != [readout_name]:
        raise ValueError(
            f"node {outputs[0]!r}: must read the last neuron group {readout_name!r} only"
        )
    shapes = {INPUT: input_shape}
    conns: list[Connection] = []
    conn_bias: dict[str, np.ndarray] = {}
    groups: list[NeuronGroup] = []
    for n in order:
        node = graph.nodes[n]
        if isinstance(node, nir.Conv2d):
            (src_delay,) = parents[n] if len(parents[n]) == 1 else (None,)
            if src_delay is None:
                raise ValueError(f"node {n!r}: a Conv2d needs exactly one input edge")
            source = spike_source(src_delay)
            targets = children[n]
            if not targets or any(not isinstance(graph.nodes[t], nir.CubaLIF) for t in targets):
                raise ValueError(f"node {n!r}: must feed neuron groups (CubaLIF or I) only")
            conn, bias = _conv_from_nir(
                n, node, source, shapes[source], targets, readout_name, exponents.get(n)
            )
            conns.append(conn)
            conn_bias[n] = bias
        elif isinstance(node, nir.CubaLIF):
            incoming = [c for c in conns if n in c.targets]
            if not incoming or len(incoming) != len(parents[n]):
                raise ValueError(f"node {n!r}: every input must be a Conv2d node")
            groups.append(_group_from_nir(n, node, n == readout_name, incoming, conn_bias, dt))
            if n == readout_name:
                groups[-1].spec.population = int(meta.get("population", 1))
            shapes[n] = groups[-1].shape
    timesteps = int(meta.get("timesteps", timesteps or 0))
    if timesteps <= 0:
        raise ValueError("graph: carries no 'timesteps'; pass timesteps= (event frames per sample)")
    topology = NetSpec(
        name=str(meta.get("name", "nir")),
        input_shape=input_shape,
        timesteps=timesteps,
        groups=[g.spec for g in groups],
        conns=[c.spec for c in conns],
    )
    desc = NetworkDescription(
        topology=topology,
        steps=int(meta.get("steps", 0)),
        i2e=dict(meta.get("i2e", {})),
        groups=groups,
        connections=conns,
        classes=[str(c) for c in meta.get("classes", [])],
    )
    desc.validate_structure()
    if desc.steps == 0:
        desc.steps = desc.timesteps + desc.depths()[desc.readout.name]
    desc.validate()
    return desc


def _topological(graph, parents, children, preferred: list[str]) -> list[str]:
    """Nodes in dependency order; among ready nodes, the ``preferred`` order first."""
    rank = {n: i for i, n in enumerate(preferred)}
    pending = {n: len(p) for n, p in parents.items()}
    ready = [n for n in graph.nodes if pending[n] == 0]
    order = []
    while ready:
        ready.sort(key=lambda n: rank.get(n, len(rank)))
        n = ready.pop(0)
        order.append(n)
        for c in children[n]:
            pending[c] -= 1
            if pending[c] == 0:
                ready.append(c)
    if len(order) != len(graph.nodes):
        raise ValueError("graph: has a cycle (recurrent connections cannot be mapped)")
    return order


def _square(node_name: str, field: str, value) -> int:
    """A kernel, stride or padding that must be the same in both directions."""
    try:
        a, b = pair(np.asarray(value).reshape(-1))
    except ValueError:
        a, b = 0, 1
    if int(a) != int(b):
        raise ValueError(
            f"node {node_name!r}: {field} {tuple(np.atleast_1d(value))} must be the same in "
            "both directions"
        )
    return int(a)


def _conv_from_nir(name, node, source, src_shape, targets, readout_name, hint=None):
    weight = np.asarray(node.weight, dtype=np.float64)
    if weight.ndim != 4 or weight.shape[1] != src_shape[0]:
        raise ValueError(f"node {name!r}: weight {weight.shape} does not fit its input {src_shape}")
    if _square(name, "dilation", node.dilation) != 1 or int(node.groups) != 1:
        raise ValueError(f"node {name!r}: dilation and groups must be 1")
    if isinstance(node.padding, str):
        raise ValueError(f"node {name!r}: padding {node.padding!r}: give it as integers")
    padding = _square(name, "padding", node.padding)
    kind = "conv"
    _, h, w = src_shape
    if readout_name in targets:
        full = weight.shape[2:] == (h, w) and padding == 0
        if not full or not np.all(weight == weight[:, :, :1, :1]):
            raise ValueError(
                f"node {name!r}: the connection into the readout must be a global sum-pool + dense "
                "(a conv covering the whole map with the same weight everywhere, no padding)"
            )
        kind, weight, stride = "pool_dense", weight[:, :, 0, 0], 1
    else:
        stride = _square(name, "stride", node.stride)
        if weight.shape[2] != weight.shape[3]:
            raise ValueError(f"node {name!r}: kernel {weight.shape[2:]} must be square")
    if hint is None:
        hint = _meta(node, "exponent")  # files written before the graph-level "exponents"
    mant, exp = _exponent(name, weight, None if hint is None else int(hint))
    bias = np.zeros(weight.shape[0]) if node.bias is None else np.asarray(node.bias, np.float64)
    out_ch, in_ch = weight.shape[:2]
    kernel = int(weight.shape[2]) if kind == "conv" else 1
    spec = ConnSpec(
        name, source, list(targets), kind, int(in_ch), int(out_ch), kernel, stride, padding, False
    )
    conn = Connection(spec=spec, weight=mant, exponent=exp)
    return conn, bias.reshape(-1)


def _group_from_nir(name, node, readout, incoming, conn_bias, dt: float = 1.0) -> NeuronGroup:
    shape = tuple(int(s) for s in np.asarray(node.output_type["output"]))
    channels = shape[0]
    bias = sum(conn_bias[c.name] for c in incoming)
    tau_syn = _steps(_uniform(name, "tau_syn", node.tau_syn), dt)
    tau_mem = _steps(_uniform(name, "tau_mem", node.tau_mem), dt)
    du, dv = _decay(name, "tau_syn", tau_syn), _decay(name, "tau_mem", tau_mem)
    if dv == 0:
        raise ValueError(
            f"node {name!r}: tau_mem = inf (no leak) with r = tau_mem has no Loihi form"
        )
    w_in, r = _uniform(name, "w_in", node.w_in), _uniform(name, "r", node.r)
    if not (math.isclose(w_in, tau_syn, rel_tol=1e-6) and math.isclose(r, tau_mem, rel_tol=1e-6)):
        raise ValueError(
            f"node {name!r}: needs w_in = tau_syn and r = tau_mem (Loihi adds input and current unscaled)"
        )
    if np.any(np.asarray(node.v_reset) != 0):
        raise ValueError(f"node {name!r}: v_reset must be 0 (Loihi resets the voltage to 0)")
    threshold = _uniform(name, "v_threshold", node.v_threshold)
    vth = math.floor(threshold)
    if not threshold - vth < 1 / 64:
        raise ValueError(
            f"node {name!r}: v_threshold {threshold} is not an integer threshold (plus less than 1/64)"
        )
    leak = np.asarray(node.v_leak, dtype=np.float64).reshape(channels, -1)
    if not np.all(leak == leak[:, :1]):
        raise ValueError(
            f"node {name!r}: v_leak must be the same over a channel (a per-channel bias)"
        )
    bias = bias + leak[:, 0] / tau_mem
    if not np.all(bias == np.round(bias)):
        raise ValueError(
            f"node {name!r}: bias is not an integer in weight units (Loihi's 1/64 grid)"
        )
    group_shape = (
        shape if len(shape) == 3 and not (readout and shape[1:] == (1, 1)) else (channels,)
    )
    return NeuronGroup(
        spec=GroupSpec(name, tuple(group_shape), readout),
        du=du,
        dv=dv,
        vth=int(vth),
        bias=np.round(bias).astype(np.int64),
    )


def load_nir(path: str | Path, timesteps: int | None = None) -> NetworkDescription:
    """Read a ``.nir`` file into a network description (see :func:`from_nir`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIR file")
    try:
        graph = nir.read(path)
    except Exception as e:  # h5py and nir raise many types for foreign or corrupt files
        raise ValueError(f"{path}: not a readable NIR file ({e})") from e
    try:
        return from_nir(graph, timesteps)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
