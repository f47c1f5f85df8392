"""Network description <-> HDF5, in lava-dl netx's layout, extended for residual networks.

netx reads ``layer/0..n`` in order, each layer fed by the one before: ``type`` (input, conv,
dense), ``shape`` (C, H, W), ``neuron`` (CUBA: iDecay, vDecay, vThMant, refDelay, gradedSpike),
``weight`` (torch layout, effective integers), ``bias`` (mantissa, exponent 6), ``stride``,
``padding``, ``dilation``, ``groups``. A chain network written here loads unchanged with
``lava.lib.dl.netx.hdf5.Network``.

What netx lacks is kept beside it: every layer lists all of its incoming connections under
``layer/i/inputs/j`` (source layer index, kind, weight mantissas, exponent, geometry, delay),
and the root holds the I2E input parameters, ``steps`` and the class names. A layer that netx
cannot express (several inputs, or an input that is not the previous layer) gets the type
``residual``; the root attribute ``netx_compatible`` says whether netx can load the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from export.description import Connection, NetworkDescription, NeuronGroup
from i2e_neuro.atomic import hdf5_file
from i2e_neuro.integrity import add_hdf5_checksums, verify_hdf5
from i2e_neuro.models.spec import INPUT, ConnSpec, GroupSpec, NetSpec

FORMAT = "i2e-neuro network description"
#: 2: the readout group spikes (its spikes are counted on the host); version 1 files had a
#: non-spiking integrator readout and are refused.
VERSION = 2


def save_hdf5(desc: NetworkDescription, path: str | Path) -> Path:
    """Atomically write ``desc`` to ``path``."""
    desc.validate()
    path = Path(path)
    chain = desc.is_chain()
    with hdf5_file(path) as f:
        f.attrs.update(
            format=FORMAT,
            version=VERSION,
            name=desc.name,
            netx_compatible=chain,
            timesteps=desc.timesteps,
            steps=desc.steps,
            i2e=json.dumps(desc.i2e),
            classes=json.dumps(desc.classes),
            # 24-bit states: measured at the end of training (training data) and bounded for
            # any input (docs/EXACTNESS.md); informative, read back into measured_states
            state_ranges=json.dumps(
                {"measured": desc.measured_states, "bound": desc.state_bounds()}
            ),
        )
        layers = f.create_group("layer")
        inp = layers.create_group("0")
        inp["type"] = "input"
        inp["shape"] = np.asarray(desc.input_shape)
        index = {INPUT: 0}
        for g in desc.groups:
            if chain and desc.incoming(g.name)[0].kind == "pool_dense":
                layers.create_group(str(len(layers)))["type"] = (
                    "flatten"  # netx flattens (C, H, W) here
                )
            index[g.name] = len(layers)
            _write_group(layers.create_group(str(index[g.name])), desc, g, index, chain)
        add_hdf5_checksums(f)
    return path


def _write_group(
    h: h5py.Group, desc: NetworkDescription, g: NeuronGroup, index: dict, chain: bool
) -> None:
    incoming = desc.incoming(g.name)
    first = incoming[0]
    h["name"] = g.name
    h["type"] = ("dense" if first.kind == "pool_dense" else "conv") if chain else "residual"
    h["shape"] = np.asarray(g.shape)
    neuron = h.create_group("neuron")
    neuron["type"] = "CUBA"
    neuron["iDecay"], neuron["vDecay"], neuron["vThMant"] = g.du, g.dv, g.vth
    neuron["refDelay"], neuron["gradedSpike"] = 1, False
    neuron["readout"] = g.readout
    neuron["population"] = g.population  # readout neurons per class (1 elsewhere)
    h["bias"] = g.bias.astype(np.int64)
    h["biasExp"] = g.bias_exp
    _write_netx_weight(h, desc, first)
    inputs = h.create_group("inputs")
    for j, c in enumerate(incoming):
        ch = inputs.create_group(str(j))
        ch["name"], ch["kind"], ch["source"] = c.name, c.kind, index[c.source]
        ch["weight"], ch["exponent"] = c.weight.astype(np.int8), c.exponent
        ch["stride"], ch["padding"], ch["delay"] = c.stride, c.padding, c.delay


def _write_netx_weight(h: h5py.Group, desc: NetworkDescription, c: Connection) -> None:
    """The first connection in netx's own keys (effective integer weights, as slayer exports them)."""
    if c.kind == "conv":
        h["weight"] = c.effective_weight
        h["stride"], h["padding"], h["dilation"], h["groups"] = c.stride, c.padding, 1, 1
    else:  # global sum-pool + dense == dense with the weight repeated over positions, netx flatten order (C, H, W)
        _, height, width = desc.source_shape(c.source)
        h["weight"] = np.repeat(c.effective_weight, height * width, axis=1)


def load_hdf5(path: str | Path) -> NetworkDescription:
    """Read a file written by :func:`save_hdf5`; a missing, truncated or foreign file raises ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such network file")
    where = "the file"
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"not an {FORMAT} file (no 'format' attribute)")
            verify_hdf5(f, path)
            if int(f.attrs.get("version", 0)) != VERSION:
                raise ValueError(
                    f"format version {f.attrs.get('version')} (this program reads {VERSION}; "
                    "version 1 had an integrator readout: retrain and export again)"
                )
            layers = f["layer"]
            indices = [i for i in range(1, len(layers)) if "neuron" in layers[str(i)]]
            names = {0: INPUT}
            for i in indices:
                where = f"/layer/{i}"
                names[i] = _str(layers[str(i)]["name"][()])
            groups, conns = [], {}
            for i in indices:
                h = layers[str(i)]
                where = f"layer {names[i]!r} (/layer/{i}/neuron)"
                neuron = h["neuron"]
                shape = tuple(int(s) for s in h["shape"][()])
                groups.append(
                    NeuronGroup(
                        spec=GroupSpec(
                            names[i],
                            shape,
                            bool(neuron["readout"][()]),
                            int(neuron["population"][()]) if "population" in neuron else 1,
                        ),
                        du=int(neuron["iDecay"][()]),
                        dv=int(neuron["vDecay"][()]),
                        vth=int(neuron["vThMant"][()]),
                        bias=h["bias"][()].astype(np.int64),
                        bias_exp=int(h["biasExp"][()]),
                    )
                )
                where = f"layer {names[i]!r} (/layer/{i})"
                for j in range(len(h["inputs"])):
                    where = f"layer {names[i]!r}, input {j} (/layer/{i}/inputs/{j})"
                    ch = h["inputs"][str(j)]
                    name = _str(ch["name"][()])
                    if name in conns:
                        conns[name].targets.append(names[i])
                        continue
                    kind = _str(ch["kind"][()])
                    weight = ch["weight"][()].astype(np.int64)
                    spec = ConnSpec(
                        name=name,
                        source=names[int(ch["source"][()])],
                        targets=[names[i]],
                        kind=kind,
                        in_channels=int(weight.shape[1]),
                        out_channels=int(weight.shape[0]),
                        kernel=int(weight.shape[-1]) if kind == "conv" else 1,
                        stride=int(ch["stride"][()]),
                        padding=int(ch["padding"][()]),
                        batchnorm=False,
                    )
                    conns[name] = Connection(
                        spec=spec,
                        weight=weight,
                        exponent=int(ch["exponent"][()]),
                        delay=int(ch["delay"][()]),
                    )
            where = "the file's attributes and /layer/0"
            topology = NetSpec(
                name=str(f.attrs["name"]),
                input_shape=tuple(int(s) for s in layers["0"]["shape"][()]),
                timesteps=int(f.attrs["timesteps"]),
                groups=[g.spec for g in groups],
                conns=[c.spec for c in conns.values()],
            )
            desc = NetworkDescription(
                topology=topology,
                steps=int(f.attrs["steps"]),
                i2e=json.loads(f.attrs["i2e"]),
                groups=groups,
                connections=list(conns.values()),
                classes=json.loads(f.attrs["classes"]),
                measured_states=json.loads(f.attrs.get("state_ranges", "{}")).get("measured", {}),
            )
    except KeyError as e:
        reason = str(e).strip("'\"")
        if "(" in reason and reason.endswith(
            ")"
        ):  # h5py: "Unable to ... (object 'x' doesn't exist)"
            reason = reason[reason.index("(") + 1 : -1]
        raise ValueError(f"{path}: not a valid network file: {where}: {reason}") from e
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a valid network file ({e})") from e
    try:
        desc.validate()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return desc


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
