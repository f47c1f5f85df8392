#!/usr/bin/env python
"""``i2e-neuro simulate --workers N`` against ``--workers 1``: wall time of the whole command.

Runs the same ``simulate`` command line with ``--workers 1`` and ``--workers N`` alternately,
``--repeats`` rounds, each a fresh process timed from start to exit (Python start-up, imports,
data, graph build, every shard process and the merge included), checks that every non-timing
field of the two JSON reports is identical, and prints the speed-up per round (1-worker time
over N-worker time of the same round), its median and spread, the machine and the load
average before and after.

The default network is one whose per-sample work dominates the fixed costs of a process: a
random msresnet18 at 32x32 (``scripts/bench_scale.py``'s weights drawn as a trained model's,
folded to Loihi integers, exported to a temporary ``.h5``) on the digits test set (32x32); the
demo's tiny digits model spends a large share of a run starting processes.

    python scripts/bench_workers.py                     # msresnet18@32, 120 digits, 2 workers, 3 rounds
    python scripts/bench_workers.py --quick             # msresnet_tiny@32, 8 digits, 1 round
    python scripts/bench_workers.py --model runs/demo/network.h5 --limit 360
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def random_model(arch: str, size: int, folder: str) -> str:
    import bench_scale

    from export.hdf5 import save_hdf5

    path = Path(folder) / f"{arch}-{size}.h5"
    save_hdf5(bench_scale.random_trained_like(arch, size, 10, 8), path)
    return str(path)


def run(model: str, data: str, limit: int, workers: int) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "i2e_neuro.cli", "simulate", "--model", model, "--data", data]
    cmd += ["--limit", str(limit), "--workers", str(workers), "--json"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="network file (default: a random --arch at --size)")
    p.add_argument("--arch", default="msresnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--data", default="digits")
    p.add_argument("--limit", type=int, default=120, help="samples (default 120)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: msresnet_tiny@32, 8 samples, 1 round"
    )
    args = p.parse_args()
    if args.quick:
        args.arch, args.size, args.limit, args.repeats = "msresnet_tiny", 32, 8, 1
    if args.limit < args.workers or args.repeats < 1 or args.workers < 2:
        p.error("--workers >= 2, --limit >= --workers and --repeats >= 1")

    from export.simulation import TIMING_FIELDS
    from i2e_neuro.machine import machine_text, run_context

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="i2e-neuro-bench-workers-") as tmp:
        model = args.model or random_model(args.arch, args.size, tmp)
        times: dict[int, list[float]] = {1: [], args.workers: []}
        reports: dict[int, dict] = {}
        for r in range(args.repeats):
            for w in (1, args.workers):
                wall, rep = run(model, args.data, args.limit, w)
                times[w].append(wall)
                reports.setdefault(w, rep)
                print(f"round {r + 1}: --workers {w}: {wall:.2f} s", flush=True)
    load_after = os.getloadavg()

    def exact(rep: dict) -> dict:
        return {k: v for k, v in rep.items() if k not in TIMING_FIELDS}

    identical = exact(reports[1]) == exact(reports[args.workers])
    rounds = [a / b for a, b in zip(times[1], times[args.workers])]
    one, many = statistics.median(times[1]), statistics.median(times[args.workers])
    print(
        f"model {args.model or f'random {args.arch}@{args.size}'}, {args.limit} samples of "
        f"{args.data}; {machine_text()}; "
        f"--workers 1: median {one:.2f} s [{min(times[1]):.2f}, {max(times[1]):.2f}], "
        f"--workers {args.workers}: median {many:.2f} s "
        f"[{min(times[args.workers]):.2f}, {max(times[args.workers]):.2f}]; "
        f"speed-up per round median {statistics.median(rounds):.2f}x "
        f"[{min(rounds):.2f}, {max(rounds):.2f}]; reports identical (non-timing fields): "
        f"{identical}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        json.dumps(
            {
                "model": args.model or f"random {args.arch}@{args.size}",
                "data": args.data,
                "samples": args.limit,
                "workers": args.workers,
                **run_context(load_before, load_after),
                "seconds": {str(k): v for k, v in times.items()},
                "speedup_rounds": rounds,
                "speedup_median": statistics.median(rounds),
                "identical_reports": identical,
            }
        )
    )
    if not identical:
        raise SystemExit("the --workers report differs from the one-runtime report")


if __name__ == "__main__":
    main()
