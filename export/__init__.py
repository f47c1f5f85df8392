"""Export side: the network description and its consumers (HDF5, Lava graph, resources, SynOps).

The stable entry points (see docs/ARCHITECTURE.md):

* :func:`from_checkpoint` - the description of a trained checkpoint's deploy record;
* :func:`load` - a description from an exported ``.h5`` file, a checkpoint or a ``.nir`` graph;
* :func:`build_graph` - the Lava process graph of a description.

Importing this package does not import Lava (only ``lava_graph``, ``processes``, ``runner``,
``fast_models`` and ``supervision`` do, and :func:`build_graph` when called).
"""

from __future__ import annotations

from pathlib import Path

from export.description import NetworkDescription, from_checkpoint, from_deploy

#: File suffixes read as training checkpoints by :func:`load`; anything else is read as HDF5.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def load(path: str | Path) -> NetworkDescription:
    """The network description in ``path``: a checkpoint (``.pt``, ``.pth``, ``.ckpt``), a NIR
    graph (``.nir``, :func:`export.nir.load_nir`) or a file written by
    :func:`export.hdf5.save_hdf5`. Raises FileNotFoundError or ValueError
    naming the file."""
    path = Path(path)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return from_checkpoint(path)
    if path.suffix == ".nir":  # a NIR graph in the form export.nir writes (see export.nir.from_nir)
        from export.nir import load_nir

        return load_nir(path)
    from export.hdf5 import load_hdf5

    return load_hdf5(path)


def build_graph(desc: NetworkDescription, backend: str = "cpu"):
    """The Lava process graph of ``desc`` (:class:`export.lava.graph.LavaNetwork`: ``.neurons``,
    ``.synapses``, ``.processes()``, ``.connect_input(port)``, ``.output``): stock Loihi 2
    processes in Loihi's formats plus the host <-> chip adapters; the same graph for both back
    ends (``backend`` selects the adapters' models at run time).

    ``backend="loihi2"`` also refuses, by name, any process without a Loihi implementation.
    """
    from export.lava.graph import build, refuse_cpu_only
    from export.lava.run_config import RUN_BACKENDS

    if backend not in RUN_BACKENDS:
        raise ValueError(f"backend={backend!r}: must be one of {RUN_BACKENDS}")

    net = build(desc, backend)
    if backend == "loihi2":
        refuse_cpu_only(net)
    return net


__all__ = [
    "CHECKPOINT_SUFFIXES",
    "NetworkDescription",
    "build_graph",
    "from_checkpoint",
    "from_deploy",
    "load",
]
