"""Run a network description in Lava: CPU simulation (Loihi 2 fixed point) or Loihi 2 hardware.

On the CPU every process model runs inside this process by default
(:mod:`export.lava.inprocess_runtime`: greenlets on one hub thread), or in Lava's own forked
workers (``in_process=False``). Either way the runtime is stopped on success, on exceptions, on
Ctrl-C and when compilation fails, so no Lava worker outlives a run
(:func:`export.lava.supervision.run_checked`: Lava 0.10 itself hangs when a process model
raises). Spikes are counted by host monitors writing to a private folder that is removed after
the run.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.description import NetworkDescription
from export.lava.graph import build, refuse_cpu_only
from export.lava.run_config import run_config
from i2e_neuro.layouts import lava_to_chw


@dataclass
class SimulationResult:
    readout_counts: np.ndarray  # [N, K * P] readout spikes per sample window, counted on the host
    readout_first: np.ndarray  # [N, K * P] step of each readout neuron's first spike (-1: none)
    counts: dict[str, np.ndarray]  # group -> spikes per sample [N]
    neuron_counts: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # group -> spikes per neuron [C, H, W]
    trains: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # group -> [M, steps, *CHW] (recorded samples)
    seconds: float = 0.0
    #: spikes of the recorded samples in the padding steps (window - steps), all groups: 0 by
    #: the silence guarantee; ``trains`` hold the trained ``steps`` only, as lava-dl's do
    padding_spikes: int = 0
    population: int = 1  # readout neurons per class (``i2e_neuro.models.readout``)

    @property
    def predictions(self) -> np.ndarray:
        from i2e_neuro.models.readout import predict

        return predict(self.readout_counts, self.readout_first, self.population)


def simulate(
    desc: NetworkDescription,
    samples: np.ndarray,
    events: bool = False,
    backend: str = "cpu",
    record: int = 0,
    fast: bool = True,
    in_process: bool = True,
) -> SimulationResult:
    """Stream ``samples`` through the network; record full spike trains of the first ``record`` samples.

    Each sample gets ``desc.window`` steps (the trained ``steps`` padded to a power of two);
    recorded trains are ``[M, steps, C, H, W]`` per group (the readout included, CPU only), the
    spikes of the padding steps are counted in ``padding_spikes``.

    ``samples``: images ``[N, C, H, W]`` (converted by the I2E source process) or, with
    ``events=True``, event frames ``[N, T, 2, H, W]``: an array, tensor, or iterable / torch
    dataset of samples.

    ``in_process`` (CPU only): every Lava process model inside this process
    (``export.lava.inprocess_runtime``: greenlets on one thread) instead of one forked OS process
    each; same models, same values, several times less overhead.  False: Lava's own
    multiprocessing runtime.
    """
    from export.lava.legality import require_legal
    from export.lava.processes import (
        I2ESource,
        ReadoutCounter,
        as_sample_array,
        create_monitor_file,
        monitor_arrays,
        spike_monitors,
    )
    from export.lava.supervision import private_folder, run_checked

    samples = as_sample_array(samples)
    check_samples(desc, samples, events)
    cfg = run_config(backend, fast)  # fails before anything starts when the back end is missing
    n, record = len(samples), min(record, len(samples))
    net = build(desc, backend)
    refuse_cpu_only(net)
    window = desc.window
    i2e_params = {} if events else desc.i2e_params()
    source = I2ESource(
        samples=samples, steps=window, timesteps=desc.timesteps, i2e=i2e_params, events=events
    )
    net.connect_input(source.s_out)
    counter = ReadoutCounter(neurons=desc.readout.shape[0], num_samples=n, window=window)
    net.output.connect(counter.s_in)
    # The deployable graph (network, adapters, host source and counter) must be legal on Loihi 2.
    require_legal(net, extra=(source, counter))
    with private_folder("i2e-neuro-monitors-") as tmp:
        monitors = {}
        # Diagnostics only on the CPU: a host monitor on a chip group's spikes has no adapter.
        for g in desc.groups if backend == "cpu" else ():
            shape = net.neurons[g.name].s_out.shape
            folder = f"{tmp}/{len(monitors)}"
            Path(folder).mkdir()
            create_monitor_file(folder, shape, n, window, record)
            monitors[g.name] = (folder, shape)
        host = [source, counter]
        if monitors:  # one monitor process for all groups (every Lava process is an OS process)
            mon = spike_monitors(
                [shape for _, shape in monitors.values()],
                num_samples=n,
                steps=window,
                folders=[folder for folder, _ in monitors.values()],
                record_samples=record,
            )
            for i, name in enumerate(monitors):
                net.neurons[name].s_out.connect(getattr(mon, f"s_in{i}"))
            host.append(mon)
        start = time.perf_counter()
        try:
            with (
                warnings.catch_warnings()
            ):  # Lava's model search warns for every module beside a process's file
                warnings.filterwarnings(
                    "ignore", message="Cannot import module", category=UserWarning
                )
                if backend == "cpu":
                    pin_models(cfg, [*host, *net.processes()])
                run_checked(source, n * window, cfg, in_process=in_process and backend == "cpu")
            readout_counts = np.asarray(counter.counts.get(), dtype=np.int64)[:n]
            readout_first = np.asarray(counter.first.get(), dtype=np.int64)[:n]
        finally:
            _stop(source)
        counts, per_neuron, trains, padding = {}, {}, {}, 0
        for name, (folder, shape) in monitors.items():
            arrays = monitor_arrays(folder, shape, n, window, record, "r")  # in memory
            counts[name] = arrays["counts"]
            to_chw = lava_to_chw if len(shape) == 3 else np.asarray
            per_neuron[name] = to_chw(arrays["neuron_counts"])
            if record:
                full = arrays["trains"][:record]  # [M, window, ...]
                padding += int(full[:, desc.steps :].sum())
                trains[name] = to_chw(full[:, : desc.steps])
    return SimulationResult(
        readout_counts,
        readout_first,
        counts,
        per_neuron,
        trains,
        time.perf_counter() - start,
        padding,
        desc.readout.population,
    )


#: Process class -> the ProcessModel classes Lava's search finds for it (it depends on the
#: class alone: the modules beside the class's file).
_FOUND_MODELS: dict[type, list] = {}


def pin_models(cfg, processes) -> None:
    """Select each process's ProcessModel once per process class and pin it, per instance, in
    ``cfg.exception_proc_model_map``; the same models Lava would pick, found much faster.

    Lava's compiler looks up ``exception_proc_model_map`` by process *instance*; for every other
    process it searches for models by executing every module beside the process's file (and its
    namespace package) again, once per process (about 45 processes for MS-ResNet-18).  Here the
    search runs once per class (cached for the life of this Python process) and ``cfg.select`` (the run configuration's own rule: its
    class-keyed exceptions, then tags) picks the model, so the choice is the configuration's.
    The processes of this package (``export.lava.processes``) keep their models in their own module,
    so only that module is searched for them: Lava's search would import every module of the
    ``export`` package, and one that fails to import (an optional dependency) would stop every
    simulation.
    """
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs

    pinned = cfg.exception_proc_model_map
    for proc in processes:
        cls = type(proc)
        if cls in pinned:
            model = pinned[cls]
        else:
            found = _FOUND_MODELS.get(cls)
            if found is None:
                found = []
                if cls.__module__.startswith("export."):  # ours: models beside the process
                    module = sys.modules[cls.__module__]
                    found = ProcGroupDiGraphs._find_proc_models_in_module(proc, module)
                found = _FOUND_MODELS[cls] = found or ProcGroupDiGraphs._find_proc_models(proc)
            model = cfg.select(proc, found)
        pinned[proc] = model


def _stop(process) -> None:
    try:
        process.stop()
    except Exception:  # a runtime that never started, or already stopped, has nothing to stop
        runtime = getattr(process, "runtime", None)
        if runtime is not None:
            try:
                runtime.stop()
            except Exception:
                pass


def check_samples(desc: NetworkDescription, samples: np.ndarray, events: bool) -> None:
    """Refuse input of the wrong size or channel count before any runtime starts."""
    c, h, w = desc.input_shape
    if not isinstance(samples, np.ndarray) or samples.ndim not in (4, 5) or len(samples) == 0:
        raise ValueError(
            f"input: expected a non-empty array of samples, got {getattr(samples, 'shape', type(samples))}"
        )
    if events:
        if samples.ndim != 5 or samples.shape[1] < desc.timesteps or samples.shape[2:] != (c, h, w):
            raise ValueError(
                f"input: event samples must be [N, T>={desc.timesteps}, {c}, {h}, {w}], got {samples.shape}"
            )
    elif samples.ndim != 4 or samples.shape[1] not in (1, 3) or samples.shape[2:] != (h, w):
        raise ValueError(
            f"input: images must be [N, 1 or 3, {h}, {w}] for network {desc.name!r}, got {samples.shape}"
        )
    elif samples.dtype.kind == "f" and not np.isfinite(samples).all():
        raise ValueError("input: images contain NaN or infinite values")
