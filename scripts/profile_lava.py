#!/usr/bin/env python
"""Where a Lava simulation's time goes: cProfile of every thread of the in-process runtime.

Builds the network of ``scripts/bench_scale.py`` (random weights drawn as a trained model's,
folded to Loihi integers) for one ``ARCH@SIZE``, runs ``export.lava.runner.simulate`` once to
warm up, then again under ``cProfile`` in the caller's thread, the runtime's hub thread (every
process model, as greenlets) and the compute threads (the Conv models' convolutions), and
prints per thread the functions with the most own time, plus the run's seconds per sample and
per time step.  Timing is per-call deterministic profiling: it slows Python-heavy code more
than numpy/torch-heavy code, so read it for *where* the time goes, and take speeds from the
benchmarks (``scripts/bench_scale.py``).

    python scripts/profile_lava.py --config msresnet18@32 --samples 4
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_scale
# this tree's code, not an installed copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import export.lava.runner  # noqa: E402, F401  (Lava first: it fixes multiprocessing's start method)


def _profiled_threads():
    """Install cProfile in every thread started from now on; returns the list of profiles."""
    profiles: list[tuple[str, cProfile.Profile]] = []
    original_run = threading.Thread.run

    def run(self):
        prof = cProfile.Profile()
        profiles.append((self.name, prof))
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()

    threading.Thread.run = run
    return profiles, lambda: setattr(threading.Thread, "run", original_run)


def _categories(prof: cProfile.Profile) -> list[tuple[str, float, int]]:
    """Own time by where the code lives: this repository's modules (by file), Lava (by file),
    and C functions (numpy, locks, greenlet switches, ...) by name; largest first."""
    import collections

    own, calls = collections.Counter(), collections.Counter()
    for (path, _, name), (_, ncalls, tottime, _, _) in pstats.Stats(prof).stats.items():
        if "site-packages/lava/" in path:
            key = "lava: " + path.split("site-packages/lava/")[1]
        elif path == "~":
            key = "C: " + name.strip("<>")[:60]
        elif "/export/" in path or "/i2e_neuro/" in path:
            key = "ours: " + "/".join(Path(path).parts[-2:])
        else:
            key = "other: " + Path(path).name
        own[key] += tottime
        calls[key] += ncalls
    return [(k, v, calls[k]) for k, v in own.most_common()]


def _thread_cpu(simulate, desc, images, rounds: int) -> dict:
    """Unprofiled runs: wall, hub-thread CPU and compute-thread CPU per time step."""
    import statistics

    import export.lava.inprocess_runtime as ir

    clocks: dict = {}
    original = ir._Hub.stop

    def stop(self):
        cpu = time.pthread_getcpuclockid
        clocks["hub"] = time.clock_gettime(cpu(self.thread.ident))
        clocks["compute"] = sum(time.clock_gettime(cpu(t.ident)) for t in self.pool._threads)
        return original(self)

    ir._Hub.stop = stop
    out: dict = {"wall": [], "hub": [], "compute": []}
    try:
        for _ in range(rounds):
            res = simulate(desc, images, fast=True)
            steps = len(images) * desc.window
            out["wall"].append(res.seconds / steps * 1e3)
            out["hub"].append(clocks["hub"] / steps * 1e3)
            out["compute"].append(clocks["compute"] / steps * 1e3)
    finally:
        ir._Hub.stop = original
    return {k: (statistics.median(v), min(v), max(v)) for k, v in out.items()}


def _top(prof: cProfile.Profile, limit: int, sort: str) -> tuple[str, float]:
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out)
    total = st.total_tt
    st.sort_stats(sort).print_stats(limit)
    return out.getvalue(), total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="msresnet18@32", help="ARCH@SIZE (bench_scale.py's)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--limit", type=int, default=25, help="rows per thread")
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    p.add_argument(
        "--callers", default="", help="also print the callers of functions matching this"
    )
    p.add_argument("--dump", help="write each thread's pstats file into this folder")
    p.add_argument(
        "--rounds", type=int, default=3, help="unprofiled runs timed by thread CPU (default 3)"
    )
    args = p.parse_args()

    import bench_scale as bs
    import numpy as np
    import torch

    from export.lava.runner import simulate

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    ((arch, size),) = bs.parse_configs(args.config)
    classes = 1000 if size >= 224 else 10
    desc = bs.random_trained_like(arch, size, classes, 8)
    images = bs.square_images(bs.photo_paths(None), size)
    reps = int(np.ceil(args.samples / len(images)))
    images = np.concatenate([images] * reps)[: args.samples]
    simulate(desc, images[:1], fast=True)  # warm-up: torch's set-up of each convolution shape

    load = os.getloadavg()
    per_step = _thread_cpu(simulate, desc, images, args.rounds)
    print(
        f"{args.config}: unprofiled, {args.rounds} runs of {len(images)} samples x "
        f"{desc.window} steps, ms per time step as median [min, max]: "
        + ", ".join(f"{k} {m:.2f} [{lo:.2f}, {hi:.2f}]" for k, (m, lo, hi) in per_step.items())
        + f" (wall: the run; hub: CPU of the thread that steps every model; compute: CPU of "
        f"the convolution threads); load {load[0]:.2f} before"
    )
    profiles, restore = _profiled_threads()
    main_prof = cProfile.Profile()
    start = time.perf_counter()
    main_prof.enable()
    try:
        res = simulate(desc, images, fast=True)
    finally:
        main_prof.disable()
        restore()
    wall = time.perf_counter() - start
    steps = len(images) * desc.window
    print(
        f"{args.config}: {len(images)} samples x {desc.window} steps, {len(desc.groups)} groups; "
        f"profiled run {res.seconds:.3f} s ({res.seconds / len(images) * 1e3:.1f} ms/sample, "
        f"{res.seconds / steps * 1e3:.2f} ms/step), simulate() wall {wall:.3f} s; "
        f"load {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    for name, prof in [("caller", main_prof), *profiles]:
        text, total = _top(prof, args.limit, args.sort)
        if total < 0.01:
            continue
        print(f"\n===== thread {name}: {total:.3f} s of own time profiled =====")
        for key, own, calls in _categories(prof)[: args.limit]:
            print(f"  {own:7.3f} s {100 * own / total:5.1f} % {calls:9d} calls  {key}")
        print(text)
        if args.callers:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(args.sort).print_callers(args.callers)
            print(out.getvalue())
        if args.dump:
            Path(args.dump).mkdir(parents=True, exist_ok=True)
            prof.dump_stats(str(Path(args.dump) / f"{name}.pstats"))


if __name__ == "__main__":
    main()
