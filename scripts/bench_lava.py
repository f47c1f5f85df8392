#!/usr/bin/env python
"""Time a 10-layer conv chain in the Lava CPU simulator: stock models vs the fast models (export.lava.conv, export.lava.lif) vs slayer.

Network: a spike source of shape (size, size, channels) (Lava's (x, y, f)) with ~5 % random
spikes per step, then ``layers`` x [Conv(channels -> channels, 3x3, padding 1) -> LIF], with
Loihi-range integer weights (even, in [-256, 254]) and fixed-point CUBA-LIF parameters.

Run side by side in one process, on the same numbers:

(a) Lava, stock fixed-point models (``Loihi2SimCfg(select_tag="fixed_pt")``),
(b) Lava with ``export.lava.run_config.fast_run_config()``: ``FastConvModelFixed`` for Conv and
    ``FastLifModelBitAcc`` for LIF, the stock models for the rest,
(c) the lava-dl slayer forward pass of the same network (``slayer.synapse.Conv`` +
    ``slayer.neuron.cuba.Neuron``; w_float = w_int / 64, threshold = vth / 64,
    current_decay = (du + 1) / 4096, voltage_decay = dv / 4096).

Lava times are wall clock: "setup" = compile + starting the worker processes, "run" = the
``steps`` time steps, "total" = build + setup + run + reading the probes + stop; "worker
CPU" = user + system CPU of all Lava worker processes during "run" (less sensitive to other
load on the machine than wall time).  A small warm-up run of both configurations comes
first.  Every LIF layer's spikes are recorded at every step (``SpikeDump`` probe, see there
why not ``Var.get()``); (a) and (b) must be identical.

Lava adds one time step of delay per Conv (its a_buf), slayer none, so Lava's layer k
(1-based) at step t equals slayer's layer k at step t - k.  Per layer the script compares
Lava's steps ``k .. steps-1`` with slayer's ``0 .. steps-1-k`` (and checks that Lava's first
k steps are silent); the last layers see only ``steps - layers`` steps of input.

    python scripts/bench_lava.py                     # 128x128x16, 10 layers, 16 steps
    python scripts/bench_lava.py --quick             # 32x32, for a short run
    python scripts/bench_lava.py --stock-size 64     # stock only at 64x64 (it is slow); fast
                                                     # and slayer at both sizes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402
from lava.proc.lif.process import LIF  # noqa: E402

from export.lava.run_config import fast_run_config  # noqa: E402
from export.lava.supervision import _actors, abort_runtime, run_checked  # noqa: E402
from i2e_neuro.machine import cpu_name  # noqa: E402


@dataclass
class Params:
    size: int
    channels: int
    layers: int
    steps: int
    spikes: np.ndarray  # (size, size, channels, steps) bool, Lava (x, y, f, t)
    weights: list  # per layer (C_out, kW, kH, C_in) int32, Lava layout
    du: int
    dv: int
    vth: int


def make_params(
    size: int,
    channels: int,
    layers: int,
    steps: int,
    density: float,
    seed: int,
    du: int,
    dv: int,
    vth: int,
) -> Params:
    rng = np.random.default_rng(seed)
    spikes = rng.random((size, size, channels, steps)) < density
    weights = []
    for _ in range(layers):
        w = rng.integers(-128, 128, (channels, 3, 3, channels)) * 2  # even, [-256, 254]
        weights.append(w.astype(np.int32))
    return Params(size, channels, layers, steps, spikes, weights, du, dv, vth)


# --------------------------------------------------------------------------------------------
# Lava
# --------------------------------------------------------------------------------------------


class SpikeDump(AbstractProcess):
    """A probe that writes the spikes arriving on its ``n`` in-ports to memory-mapped files.

    Reading a Var back from a Lava network (``Var.get()``, which the sink ``RingBuffer`` and
    ``Monitor`` also need) moves one element per message in Lava 0.10: about 50 us per
    element here, i.e. minutes for one 128x128x16x16 spike record.  This probe writes each
    step's spikes from inside its worker process to files that the main process reads after
    the run.  One probe process for all layers (every Lava process is an OS process that
    costs a few ms of messaging per step); every model configuration pays the same for it.
    Ports are ``a_in0 .. a_in{n-1}`` (the model class is made per ``n`` by ``dump_model``).
    """

    def __init__(self, *, shape, steps, paths):
        super().__init__(shape=shape, steps=steps, paths=list(paths))
        for i in range(len(paths)):
            setattr(self, f"a_in{i}", InPort(shape=shape))


def _dump_run_spk(self):
    t = self.time_step - 1
    if self._mms is None:
        self._mms = [
            np.memmap(path, dtype=np.uint8, mode="r+", shape=(self._steps, *self._shape))
            for path in self._paths
        ]
    for i, mm in enumerate(self._mms):
        data = getattr(self, f"a_in{i}").recv()
        if t < self._steps:
            mm[t] = data != 0
    if t == self._steps - 1:
        for mm in self._mms:
            mm.flush()


def _dump_init(self, proc_params):
    PyLoihiProcessModel.__init__(self, proc_params)
    self._shape = tuple(proc_params["shape"])
    self._steps = int(proc_params["steps"])
    self._paths = list(proc_params["paths"])
    self._mms = None


def dump_model(n: int) -> None:
    """Define ``SpikeDump{n}`` (a SpikeDump with n ports) and its model in this module, where
    Lava's compiler looks for a process's models."""
    name = f"SpikeDump{n}"
    if name in globals():
        return
    proc_cls = type(name, (SpikeDump,), {"__module__": __name__})
    attrs = {f"a_in{i}": LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24) for i in range(n)}
    attrs.update(__module__=__name__, __init__=_dump_init, run_spk=_dump_run_spk)
    model_cls = type(f"Py{name}Model", (PyLoihiProcessModel,), attrs)
    model_cls.__annotations__ = {f"a_in{i}": PyInPort for i in range(n)}
    model_cls = tag("fixed_pt")(
        requires(CPU)(implements(proc=proc_cls, protocol=LoihiProtocol)(model_cls))
    )
    globals()[name] = proc_cls
    globals()[model_cls.__name__] = model_cls


def run_lava(p: Params, fast: bool, workdir: Path) -> dict:
    """Build, run and read the network; spikes of every LIF layer at every step."""
    t0 = time.perf_counter()
    shape = (p.size, p.size, p.channels)
    source = Source(data=p.spikes.astype(np.int32))
    prev = source.s_out
    paths, lifs = [], []
    for i, w in enumerate(p.weights):
        conv = Conv(weight=w, input_shape=shape, padding=1)
        lif = LIF(shape=conv.output_shape, du=p.du, dv=p.dv, vth=p.vth, bias_mant=0)
        prev.connect(conv.s_in)
        conv.a_out.connect(lif.a_in)
        prev = lif.s_out
        lifs.append(lif)
        path = workdir / f"{'fast' if fast else 'stock'}_{p.size}_layer{i}.u8"
        np.memmap(path, dtype=np.uint8, mode="w+", shape=(p.steps, *shape)).flush()
        paths.append(path)
    dump_model(len(lifs))
    dump = globals()[f"SpikeDump{len(lifs)}"](
        shape=shape, steps=p.steps, paths=[str(x) for x in paths]
    )
    for i, lif in enumerate(lifs):
        lif.s_out.connect(getattr(dump, f"a_in{i}"))
    cfg = fast_run_config() if fast else Loihi2SimCfg(select_tag="fixed_pt")

    t1 = time.perf_counter()
    try:
        try:
            with warnings.catch_warnings():
                # Lava's model search imports every module next to a process's module (here
                # scripts/) and warns about the ones it cannot import; harmless.
                warnings.filterwarnings("ignore", message="Cannot import module")
                source.create_runtime(run_cfg=cfg)  # compile + start the worker processes
        except BaseException:
            abort_runtime(source)
            raise
        workers = [a.pid for a in _actors(source.runtime)]
        cpu0 = worker_cpu(workers)
        t2 = time.perf_counter()
        run_checked(source, p.steps)
        t3 = time.perf_counter()
        cpu = worker_cpu(workers) - cpu0
    finally:
        source.stop()
    spikes = [
        np.array(np.memmap(path, dtype=np.uint8, mode="r", shape=(p.steps, *shape)))
        .transpose(1, 2, 3, 0)
        .astype(bool)
        for path in paths
    ]  # (x, y, f, t)
    for path in paths:
        path.unlink()
    t4 = time.perf_counter()
    return {
        "spikes": spikes,
        "time": {"setup": t2 - t1, "run": t3 - t2, "total": t4 - t0, "cpu": cpu},
    }


def worker_cpu(pids) -> float:
    """User + system CPU seconds used so far by these (Lava worker) processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


# --------------------------------------------------------------------------------------------
# slayer
# --------------------------------------------------------------------------------------------


def run_slayer(p: Params, threads: int | None) -> dict:
    import torch

    from i2e_neuro.quiet import import_lava_dl

    slayer = import_lava_dl().slayer

    if threads:
        torch.set_num_threads(threads)
    blocks = []
    for w in p.weights:
        syn = slayer.synapse.Conv(p.channels, p.channels, 3, padding=1)
        # Lava's Conv is a true convolution, torch's a correlation: flip the kernel.
        # Lava (C_out, kx, ky, C_in) -> torch (C_out, C_in, kx, ky, 1); tensor dims are
        # [B, C, x, y, T], i.e. torch's "H" is Lava's x.
        wt = np.ascontiguousarray(w[:, ::-1, ::-1, :].transpose(0, 3, 1, 2))[..., None]
        syn.weight.data = torch.from_numpy(wt.astype(np.float32) / 64.0)
        neuron = slayer.neuron.cuba.Neuron(
            threshold=p.vth / 64.0,
            current_decay=(p.du + 1) / 4096.0,
            voltage_decay=p.dv / 4096.0,
        )
        blocks.append((syn, neuron))
    x = torch.from_numpy(p.spikes.transpose(2, 0, 1, 3)[None].astype(np.float32))
    outs = []
    start = time.perf_counter()
    with torch.no_grad():
        for syn, neuron in blocks:
            x = neuron(syn(x))
            outs.append(x)
    elapsed = time.perf_counter() - start
    spikes = [o[0].permute(1, 2, 0, 3).numpy() > 0 for o in outs]  # (x, y, f, t)
    return {"time": elapsed, "spikes": spikes}


# --------------------------------------------------------------------------------------------


def identical(a: dict, b: dict) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a["spikes"], b["spikes"], strict=True))


def compare_with_slayer(lava: dict, sl: dict, steps: int) -> list[str]:
    """Lava layer j (0-based) at step t == slayer layer j at step t - (j + 1)."""
    lines = []
    for j, (lv, sv) in enumerate(zip(lava["spikes"], sl["spikes"])):
        lag = j + 1
        if steps <= lag:
            lines.append(f"| {j + 1} | {int(sv.sum())} | - | - | no step left after the delay |")
            continue
        a, b = lv[..., lag:], sv[..., : steps - lag]
        early = int(lv[..., :lag].sum())
        lines.append(
            f"| {j + 1} | {int(sv.sum())} | {int(b.sum())} | {int(a.sum())} | "
            f"{'identical' if np.array_equal(a, b) and early == 0 else 'DIFFERENT'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=None, help="input width = height (default 128, --quick 32)"
    )
    parser.add_argument(
        "--stock-size",
        type=int,
        default=None,
        help="run the stock models at this size instead (default: --size); "
        "the fast model and slayer are then also run at this size for the ratio",
    )
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument(
        "--density", type=float, default=0.05, help="input spike probability per step"
    )
    parser.add_argument("--du", type=int, default=2047, help="Lava LIF du (current decay, 12 bit)")
    parser.add_argument("--dv", type=int, default=1024, help="Lava LIF dv (voltage decay, 12 bit)")
    parser.add_argument("--vth", type=int, default=1250, help="Lava LIF vth (threshold mantissa)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for slayer (default 1: with 2 OpenMP threads on this "
        "shared 2-core machine the slayer pass was up to 10x slower)",
    )
    parser.add_argument("--quick", action="store_true", help="32x32 input, for a short run")
    parser.add_argument("--skip-stock", action="store_true", help="do not run the stock models")
    args = parser.parse_args(argv)

    size = args.size or (32 if args.quick else 128)
    stock_size = args.stock_size or size

    print(
        f"# machine: {cpu_name()}, {os.cpu_count()} logical CPUs; "
        f"python {platform.python_version()}; date {datetime.date.today().isoformat()}"
    )
    print(
        f"# network: source ({size}, {size}, {args.channels}) density {args.density}, "
        f"{args.layers} x [Conv {args.channels}->{args.channels} 3x3 pad 1 -> LIF], "
        f"{args.steps} steps; du={args.du} dv={args.dv} vth={args.vth}, weights even in [-256, 254]"
    )

    sizes = [size] if stock_size == size else [stock_size, size]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_lava_") as tmp:
        # Warm-up: the first Lava run in a process pays one-time imports (Lava's model search
        # imports the modules next to each process); keep that out of the timings.
        warm = make_params(
            8, args.channels, 2, 2, args.density, args.seed, args.du, args.dv, args.vth
        )
        run_lava(warm, fast=True, workdir=Path(tmp))
        run_lava(warm, fast=False, workdir=Path(tmp))
        for sz in sizes:
            p = make_params(
                sz,
                args.channels,
                args.layers,
                args.steps,
                args.density,
                args.seed,
                args.du,
                args.dv,
                args.vth,
            )
            res = {"slayer": run_slayer(p, args.threads)}
            res["fast"] = run_lava(p, fast=True, workdir=Path(tmp))
            if not args.skip_stock and sz == stock_size:
                res["stock"] = run_lava(p, fast=False, workdir=Path(tmp))
            results[sz] = (p, res)
            print(f"# done {sz}x{sz}", flush=True)

    print()
    print("| size | model | setup s | run s | total s | worker CPU s (run) |")
    print("|---|---|---|---|---|---|")
    for sz, (p, res) in results.items():
        for name, label in [
            ("stock", "(a) Lava, stock fixed_pt models"),
            ("fast", "(b) Lava, fast_run_config() (FastConv + FastLif)"),
        ]:
            if name in res:
                t = res[name]["time"]
                print(
                    f"| {sz}x{sz} | {label} | {t['setup']:.2f} | {t['run']:.2f} | "
                    f"{t['total']:.2f} | {t['cpu']:.2f} |"
                )
        print(
            f"| {sz}x{sz} | (c) slayer forward, torch CPU, {args.threads} thread(s) | - | "
            f"{res['slayer']['time']:.2f} | - | - |"
        )

    for sz, (p, res) in results.items():
        fast, sl = res["fast"], res["slayer"]
        print()
        print(f"{sz}x{sz}:")
        if "stock" in res:
            st = res["stock"]
            print(
                f"- identical spikes: {'yes' if identical(st, fast) else 'no'} "
                f"(every LIF layer, every step)"
            )
            print(
                f"- fast vs stock: run {st['time']['run'] / fast['time']['run']:.1f}x faster, "
                f"total {st['time']['total'] / fast['time']['total']:.1f}x faster, "
                f"worker CPU {st['time']['cpu'] / fast['time']['cpu']:.1f}x less"
            )
        print(
            f"- fast / slayer: run {fast['time']['run'] / sl['time']:.2f}x, "
            f"total {fast['time']['total'] / sl['time']:.2f}x"
        )
        n = sz * sz * p.channels * p.steps
        print(
            "- spike rate per layer (slayer, all steps): "
            + ", ".join(f"{s.sum() / n:.2%}" for s in sl["spikes"])
        )
        print()
        print(
            "| layer | slayer spikes, all steps | slayer, steps 0..T-1-lag | "
            "Lava (b), steps lag..T-1 | Lava vs slayer, shifted by lag = layer |"
        )
        print("|---|---|---|---|---|")
        for line in compare_with_slayer(fast, sl, p.steps):
            print(line)
    summary = {}
    for sz, (p, res) in results.items():
        row = {"slayer_run_s": res["slayer"]["time"]}
        for name in ("fast", "stock"):
            if name in res:
                row.update({f"{name}_{k}_s": v for k, v in res[name]["time"].items()})
        if "stock" in res:
            row["identical"] = bool(identical(res["stock"], res["fast"]))
        summary[f"{sz}x{sz}"] = row
    print(json.dumps({"layers": args.layers, "steps": args.steps, "sizes": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
