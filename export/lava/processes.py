"""Lava processes of our own: the streaming I2E spike input, the readout spike counter, spike
monitors, and the host <-> chip adapters.

Source, counter and monitors run on the host CPU (they are the I/O around the network, not part
of it); the adapters are what connects them to the chip (``lava_graph``). Process declarations
are separate from their models, as Lava wants.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from export.lava.ports import PlainSetattr, is_silent, recv_dense
from i2e_neuro.layouts import batch_first_to_time_first, chw_to_lava


class I2ESource(AbstractProcess):
    """Streams samples as I2E event frames, one frame per step, then ``steps - T`` idle steps.

    ``samples`` is either images ``[N, C, H, W]`` (uint8 or float), converted here with the I2E
    engine in batches, or ready events ``[N, T, 2, H, W]`` (bool); an array, a tensor, or any
    iterable / torch dataset of them (see :func:`as_sample_array`). The frames travel bit-packed
    to the process model, which unpacks and sends one per step: spikes of shape ``(W, H, 2)``
    (Lava's ``(x, y, f)``) on ``s_out``. (Conversion runs in the host process: torch is not
    fork-safe inside Lava's forked process models once the parent has used its thread pool.)
    """

    def __init__(
        self, *, samples, steps: int, timesteps: int, i2e: dict | None = None, events: bool = False
    ):
        samples = as_sample_array(samples)
        frames = (
            samples.astype(bool)[:, :timesteps]
            if events
            else _convert(samples, timesteps, i2e or {})
        )
        super().__init__(
            packed=np.packbits(frames, axis=-1),
            shape=frames.shape,
            steps=steps,
            timesteps=timesteps,
        )
        n, _, _, h, w = frames.shape
        self.s_out = OutPort(shape=(w, h, 2))
        self.num_samples = n


def as_sample_array(samples) -> np.ndarray:
    """Samples as one array: a numpy array or torch tensor as it is; any other iterable (a list,
    a torch dataset yielding ``(sample, label)``) is read item by item and stacked."""
    if isinstance(samples, np.ndarray):
        return samples
    if hasattr(samples, "detach"):
        return samples.detach().cpu().numpy()
    items = [s[0] if isinstance(s, (tuple, list)) else s for s in samples]
    if not items:
        raise ValueError("input: no samples")
    return np.stack(
        [i.detach().cpu().numpy() if hasattr(i, "detach") else np.asarray(i) for i in items]
    )


def _convert(images: np.ndarray, timesteps: int, params: dict, batch: int = 256) -> np.ndarray:
    from i2e_neuro.i2e.conversion import i2e

    parts = [
        i2e(images[i : i + batch], timesteps=timesteps, **params).numpy()
        for i in range(0, len(images), batch)
    ]
    return batch_first_to_time_first(np.concatenate(parts, axis=1))  # [N, T, 2, H, W]


@implements(proc=I2ESource, protocol=LoihiProtocol)
@requires(CPU)
class PyI2ESourceModel(PlainSetattr, PyLoihiProcessModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.packed, self.shape = proc_params["packed"], proc_params["shape"]
        self.steps, self.timesteps = proc_params["steps"], proc_params["timesteps"]
        self.frames = None
        self.zero = np.zeros((self.shape[4], self.shape[3], 2), dtype=np.int32)

    def run_spk(self) -> None:
        k, j = divmod(self.time_step - 1, self.steps)
        if j == 0:
            self.frames = None
            if k < self.shape[0]:
                sample = np.unpackbits(self.packed[k], axis=-1, count=self.shape[-1]).astype(
                    np.int32
                )
                self.frames = chw_to_lava(sample)  # [T, W, H, 2]
        if self.frames is not None and j < self.timesteps:
            self.s_out.send(self.frames[j])
        else:
            self.s_out.send(self.zero)


class ReadoutCounter(AbstractProcess):
    """Counts the readout group's spikes per sample window on the host, as lava-dl's netx
    tutorials do (``tutorials/lava/lib/dl/netx/mnist/run.ipynb``, ``OutSpkToCls``: spikes
    accumulated over each presentation window, fed from the network through an output adapter).

    ``counts[k, i]`` is the number of spikes of readout neuron ``i`` in window ``k`` and
    ``first[k, i]`` the step (within the window) of its first spike, -1 if none; the prediction is
    ``i2e_neuro.models.readout.predict(counts, first, population)``. ``latency`` is the number of steps the
    output path adds after the network (0 on the CPU; see :class:`OutputAdapter`): a spike at
    run step ``t`` belongs to window ``(t - 1 - latency) // window``.
    """

    def __init__(self, *, neurons: int, num_samples: int, window: int, latency: int = 0):
        super().__init__(neurons=neurons, num_samples=num_samples, window=window, latency=latency)
        self.s_in = InPort(shape=(neurons,))
        self.counts = Var(shape=(max(1, num_samples), neurons), init=0)
        self.first = Var(shape=(max(1, num_samples), neurons), init=-1)


@implements(proc=ReadoutCounter, protocol=LoihiProtocol)
@requires(CPU)
class PyReadoutCounterModel(PlainSetattr, PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    first: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def run_spk(self) -> None:
        spikes = self.s_in.recv() != 0
        p = self.proc_params
        step = self.time_step - 1 - p["latency"]
        if step < 0 or not spikes.any():
            return
        k, j = divmod(step, p["window"])
        if k < p["num_samples"]:
            self.counts[k] += spikes
            self.first[k] = np.where(spikes & (self.first[k] < 0), j, self.first[k])


class InputAdapter(AbstractProcess):
    """Host -> chip spikes: ``lava.proc.embedded_io.spike.PyToNxAdapter`` on Loihi 2, a
    pass-through on the CPU (the netx tutorials' ``InputAdapter``,
    ``tutorials/lava/lib/dl/netx/mnist/utils.py``)."""

    def __init__(self, *, shape: tuple[int, ...]):
        super().__init__(shape=shape)
        self.inp = InPort(shape=shape)
        self.out = OutPort(shape=shape)


class OutputAdapter(AbstractProcess):
    """Chip -> host spikes: ``lava.proc.embedded_io.spike.NxToPyAdapter`` on Loihi 2, a
    pass-through on the CPU (the netx tutorials' ``OutputAdapter``).

    Latency assumed: the CPU models pass a spike on in the step it arrives (a Lava
    ``recv``/``send`` pair in one ``run_spk``), so the simulated timing is the chip's own
    neuron and synapse timing. On Loihi 2 the tutorials (``mnist/run.ipynb``: ``OutSpkToCls``
    accumulates exactly the steps of each window, ``post_guard`` at ``time_step % n_ts == 0``)
    count output spikes as if the adapters added no step; that is assumed here too, and is not
    measured (no hardware). The count is robust to it anyway: the last ``window - steps`` steps
    of every window are silent, so a fixed output latency up to that many steps, given as
    ``ReadoutCounter(latency=...)``, changes no count, and first-spike order is unchanged.
    """

    def __init__(self, *, shape: tuple[int, ...]):
        super().__init__(shape=shape)
        self.inp = InPort(shape=shape)
        self.out = OutPort(shape=shape)


class _PyPassThrough(PlainSetattr, PyLoihiProcessModel):
    inp: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1)
    out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)

    def run_spk(self) -> None:
        self.out.send(self.inp.recv())


@implements(proc=InputAdapter, protocol=LoihiProtocol)
@requires(CPU)
class PyInputAdapterModel(_PyPassThrough):
    """CPU: pass-through in the same step."""


@implements(proc=OutputAdapter, protocol=LoihiProtocol)
@requires(CPU)
class PyOutputAdapterModel(_PyPassThrough):
    """CPU: pass-through in the same step."""


def loihi_adapter_models() -> dict:
    """``{InputAdapter: Nx model, OutputAdapter: Nx model}`` wrapping lava-loihi's embedded I/O
    adapters (sub-process models on ``Loihi2NeuroCore``, as in the netx tutorials' utils.py);
    raises ImportError where lava-loihi (``lava.proc.embedded_io``) is not installed."""
    from lava.magma.core.model.sub.model import AbstractSubProcessModel
    from lava.magma.core.resources import Loihi2NeuroCore
    from lava.proc import embedded_io as eio  # lava-loihi only

    @implements(proc=InputAdapter, protocol=LoihiProtocol)
    @requires(Loihi2NeuroCore)
    class NxInputAdapterModel(AbstractSubProcessModel):
        def __init__(self, proc):
            self.adapter = eio.spike.PyToNxAdapter(shape=proc.proc_params.get("shape"))
            proc.inp.connect(self.adapter.inp)
            self.adapter.out.connect(proc.out)

    @implements(proc=OutputAdapter, protocol=LoihiProtocol)
    @requires(Loihi2NeuroCore)
    class NxOutputAdapterModel(AbstractSubProcessModel):
        def __init__(self, proc):
            self.adapter = eio.spike.NxToPyAdapter(shape=proc.proc_params.get("shape"))
            proc.inp.connect(self.adapter.inp)
            self.adapter.out.connect(proc.out)

    return {InputAdapter: NxInputAdapterModel, OutputAdapter: NxOutputAdapterModel}


def _monitor_layout(
    shape: tuple[int, ...], num_samples: int, steps: int, record_samples: int
) -> tuple[list, int]:
    """``([(name, dtype, shape, byte offset)], file size)`` of a monitor's results in its one
    file: ``counts`` (int64), ``neuron_counts`` (int64), ``trains`` (bool), in that order (so
    every array starts at a multiple of 8 bytes)."""
    specs = [
        ("counts", np.dtype(np.int64), (int(num_samples),)),
        ("neuron_counts", np.dtype(np.int64), tuple(int(x) for x in shape)),
        ("trains", np.dtype(np.bool_), (max(1, int(record_samples)), int(steps), *shape)),
    ]
    layout, offset = [], 0
    for name, dtype, shp in specs:
        layout.append((name, dtype, shp, offset))
        offset += int(np.prod(shp, dtype=np.int64)) * dtype.itemsize
    return layout, offset


def monitor_arrays(
    folder: str,
    shape: tuple[int, ...],
    num_samples: int,
    steps: int,
    record_samples: int,
    mode: str,
) -> dict:
    """The result arrays of one group of :class:`SpikeMonitors`, all in one file, ``folder/monitor.bin``:
    ``mode`` "w+" creates it (zeros) and maps it, "r+" maps it (the monitor), "r" reads it into
    memory (the host, after the run)."""
    from pathlib import Path

    layout, size = _monitor_layout(shape, num_samples, steps, record_samples)
    path = Path(folder) / "monitor.bin"
    if mode == "r":
        data = np.fromfile(path, dtype=np.uint8)
        if data.size != size:
            raise ValueError(f"{path}: {data.size} bytes, expected {size}")
    else:
        if mode == "w+":
            create_monitor_file(folder, shape, num_samples, steps, record_samples)
        data = np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,))
    return {
        name: data[offset : offset + int(np.prod(shp, dtype=np.int64)) * dtype.itemsize]
        .view(dtype)
        .reshape(shp)
        for name, dtype, shp, offset in layout
    }


def create_monitor_file(
    folder: str, shape: tuple[int, ...], num_samples: int, steps: int, record_samples: int
) -> None:
    """Create one monitored group's result file, ``folder/monitor.bin``, all zeros."""
    from pathlib import Path

    _, size = _monitor_layout(shape, num_samples, steps, record_samples)
    with open(Path(folder) / "monitor.bin", "wb") as f:
        f.truncate(size)


class SpikeMonitors(AbstractProcess):
    """Counts spikes of several groups in one process, per sample and per neuron, and records the full trains of the first samples: ports ``s_in0 .. s_in{n-1}``
    (one per group, any shapes), results in ``folders[i]`` as :func:`monitor_arrays` lays them.

    Every Lava process is an OS process that each time step exchanges messages with the runtime
    and is forked and joined once per run; one monitor for all groups instead of one per group
    (17 fewer processes for MS-ResNet-18).  Make it with :func:`spike_monitors`.
    """

    def __init__(
        self,
        *,
        shapes: list[tuple[int, ...]],
        num_samples: int,
        steps: int,
        folders: list[str],
        record_samples: int = 0,
    ):
        shapes = [tuple(int(x) for x in s) for s in shapes]
        super().__init__(
            shapes=shapes,
            num_samples=num_samples,
            steps=steps,
            folders=list(folders),
            record_samples=record_samples,
        )
        for i, shape in enumerate(shapes):
            setattr(self, f"s_in{i}", InPort(shape=shape))


def _monitors_init(self, proc_params):
    PyLoihiProcessModel.__init__(self, proc_params)
    p = proc_params
    self.steps, self.record, self.num_samples = p["steps"], p["record_samples"], p["num_samples"]
    self.outs = [
        monitor_arrays(folder, shape, p["num_samples"], p["steps"], p["record_samples"], "r+")
        for folder, shape in zip(p["folders"], p["shapes"])
    ]


def _monitors_run_spk(self) -> None:
    k, j = divmod(self.time_step - 1, self.steps)
    recorded, counted = k < self.record, k < self.num_samples
    for i, out in enumerate(self.outs):
        spikes = recv_dense(getattr(self, f"s_in{i}"))
        if not is_silent(spikes):  # a silent step adds nothing: the files start as zeros
            if recorded:
                out["trains"][k, j] = spikes  # nonzero -> True; counted at the window's end
            elif counted:
                spikes = spikes != 0
                out["counts"][k] += int(np.count_nonzero(spikes))
                out["neuron_counts"] += spikes
        if recorded and counted and j == self.steps - 1:
            # A recorded sample's counts from its trains, once per window (cheaper than
            # adding every step's spikes as they come).
            window = out["trains"][k]
            out["counts"][k] += int(np.count_nonzero(window))
            out["neuron_counts"] += window.sum(axis=0, dtype=out["neuron_counts"].dtype)


def spike_monitors(
    shapes: list[tuple[int, ...]],
    num_samples: int,
    steps: int,
    folders: list[str],
    record_samples: int = 0,
) -> SpikeMonitors:
    """A :class:`SpikeMonitors` with ``len(shapes)`` ports; its process and model classes (one
    pair per port count, since a Lava model declares its ports as class attributes) are made
    on first use and kept in this module, where Lava's compiler looks for models."""
    n = len(shapes)
    name = f"SpikeMonitors{n}"
    if name not in globals():
        proc_cls = type(name, (SpikeMonitors,), {"__module__": __name__})
        attrs = {
            f"s_in{i}": LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=1) for i in range(n)
        }
        attrs.update(
            __module__=__name__,
            __init__=_monitors_init,
            run_spk=_monitors_run_spk,
            __annotations__={f"s_in{i}": PyInPort for i in range(n)},
        )
        model_cls = type(f"Py{name}Model", (PlainSetattr, PyLoihiProcessModel), attrs)
        model_cls = requires(CPU)(implements(proc=proc_cls, protocol=LoihiProtocol)(model_cls))
        globals()[name] = proc_cls
        globals()[model_cls.__name__] = model_cls
    return globals()[name](
        shapes=shapes,
        num_samples=num_samples,
        steps=steps,
        folders=folders,
        record_samples=record_samples,
    )
