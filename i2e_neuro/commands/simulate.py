"""``i2e-neuro simulate``: run an exported network in Lava (CPU simulator or Loihi 2) on real samples.

Reports accuracy, per-layer spike counts and rates, SynOps, and the agreement with the lava-dl
model of the same integers; ``--check N`` compares every spike of every group on the first N
samples.

Several runtimes: ``--workers N`` splits the samples into N contiguous shards, runs each in its
own OS process (its own Lava runtime) and merges the results; ``--shard I/N`` (or torchrun's
``RANK``/``WORLD_SIZE``) runs one shard and writes its counts to ``--shard-dir``; ``--merge DIR``
combines such files. The job, its shards and the merge are :mod:`export.simulation`; this module
parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from i2e_neuro.shards import accept_negative_values, parse_shard


def add_arguments(p: argparse.ArgumentParser) -> None:
    accept_negative_values(p)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="network file (.h5 from export) or a checkpoint (.pt); required unless --merge",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits (default), cifar10, cifar100, mnist, fashion-mnist, cifar10-dvs, the official "
        "I2E events i2e-hf / i2e-npz, or an image file/folder",
    )
    p.add_argument(
        "--root", default=None, help="dataset folder for cifar10/..., cifar10-dvs, i2e-hf, i2e-npz"
    )
    p.add_argument(
        "--config", default=None, help="--data i2e-hf: the release's config (I2E-CIFAR10, ...)"
    )
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument(
        "--backend",
        default="cpu",
        choices=("cpu", "loihi2"),
        help="Lava CPU simulation (default) or Loihi 2 hardware",
    )
    p.add_argument(
        "--check",
        type=int,
        nargs="?",
        const=10,
        default=0,
        metavar="N",
        help="compare every spike of every group with lava-dl on the first N samples (default 10)",
    )
    p.add_argument(
        "--stock",
        action="store_true",
        help="use Lava's stock Conv model instead of the fast exact one",
    )
    p.add_argument(
        "--lava-processes",
        action="store_true",
        help="Lava's own runtime, one forked OS process per model (same spikes, several times "
        "slower), instead of every model in this process",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="split the samples over N Lava runtimes (one OS process each) on this machine and "
        "merge",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only shard I of N and write its counts to --shard-dir "
        "(default: RANK/WORLD_SIZE when torchrun set them, else everything)",
    )
    p.add_argument(
        "--shard-dir",
        type=Path,
        default=Path("simulate-shards"),
        help="folder for the per-shard JSON files (default: simulate-shards)",
    )
    p.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="DIR",
        help="combine the shard files in DIR (all N shards of one run) and report",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build the hardware graph (adapters included; no lava-loihi needed), check it against "
        "Loihi 2's register formats, print the core and chip mapping and exit without running",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def dry_run(args: argparse.Namespace) -> int:
    """Build the deployable graph, check legality, print the mapping; run nothing."""
    import export
    from export.lava.legality import deployable_report
    from export.lava.run_config import loihi_extension_missing

    try:
        desc = export.load(args.model)
        report = deployable_report(desc, "loihi2")
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.table())
    missing = loihi_extension_missing() if args.backend == "loihi2" else None
    adapters = (
        "stubbed (lava-loihi not installed: PyToNx/NxToPy adapter models not loaded)"
        if missing
        else "lava-loihi PyToNxAdapter / NxToPyAdapter"
        if args.backend == "loihi2"
        else "same-step CPU pass-through"
    )
    print(
        f"\ndry run, --backend {args.backend}: {desc.name}, window {desc.window} steps "
        f"({desc.steps} trained, padded to a power of two); adapters {adapters}; nothing was run"
    )
    if args.json:
        print(json.dumps({"dry_run": True, "backend": args.backend, **report.to_dict()}))
    return 0 if report.ok else 1


def job_of(args: argparse.Namespace):
    """The :class:`~export.simulation.SimulationJob` the arguments describe."""
    from export.simulation import SimulationJob

    return SimulationJob(
        model=str(args.model),
        data=args.data,
        root=args.root,
        split=args.split,
        limit=args.limit,
        backend=args.backend,
        check=args.check,
        stock=bool(args.stock),
        lava_processes=bool(args.lava_processes),
        config=args.config,
    )


def check_shard_dir(folder: Path) -> list[str]:
    """``--shard-dir`` must be a folder this process can write, checked before the shard runs."""
    blocking = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        where = "is a file" if blocking == folder else f"lies under the file {blocking}"
        return [f"--shard-dir {folder}: {where}, not a folder; choose another --shard-dir"]
    if blocking is not None and not os.access(blocking, os.W_OK | os.X_OK):
        return [f"--shard-dir {folder}: cannot write in {blocking}; choose another --shard-dir"]
    return []


def cap_workers(workers: int, limit: int | None) -> int:
    """``--workers`` capped at the cores of this machine and the samples (``--limit``): more
    runtimes than either only cost start-up time; a note on stderr says so."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    caps = {"cores": cores or 1}
    if limit is not None:
        caps["samples (--limit)"] = limit
    capped = max(1, min(workers, *caps.values()))
    if capped < workers:
        why = ", ".join(f"{v} {k}" for k, v in caps.items())
        print(f"note: --workers {workers} capped at {capped} ({why})", file=sys.stderr)
    return capped


def _backend_unavailable(error: BaseException) -> bool:
    """``error`` is Lava's back end missing (``export.lava.run_config.BackendUnavailable``);
    only possible once that module was imported, so this imports nothing."""
    run_config = sys.modules.get("export.lava.run_config")
    return run_config is not None and isinstance(error, run_config.BackendUnavailable)


def report(summary: dict, as_json: bool) -> int:
    from export.simulation import summary_text

    print(summary_text(summary))
    if as_json:
        print(json.dumps(summary))
    return 0 if summary["spike_mismatches"] in (None, 0) else 1


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    problems = []
    if args.limit is not None and args.limit < 1:
        problems.append(f"--limit: must be >= 1, got {args.limit}")
    if args.check is not None and args.check < 0:
        problems.append(f"--check: must be >= 0, got {args.check}")
    if args.workers < 1:
        problems.append(f"--workers: must be >= 1, got {args.workers}")
    if args.merge is None and args.model is None:
        problems.append("--model FILE is required (unless --merge DIR)")
    try:
        shard = None if args.merge is not None else parse_shard(args.shard)
    except ValueError as e:
        problems.append(str(e))
        shard = None
    if shard is not None and args.workers > 1:
        problems.append("--workers and --shard (or RANK/WORLD_SIZE): give one of them")
    if shard is not None and args.merge is None:
        problems += check_shard_dir(args.shard_dir)
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    if args.workers > 1 and args.merge is None and not args.dry_run:
        args.workers = cap_workers(args.workers, args.limit)
    if args.dry_run:
        return dry_run(args)
    # No Lava here: --workers starts its shard processes first (they import it themselves), and
    # a one-runtime run imports it in run_counts.
    from export.simulation import merge_counts, read_shards, run_workers, summarize
    from i2e_neuro.atomic import write_text
    from i2e_neuro.shards import shard_file

    try:
        if args.merge is not None:
            counts = merge_counts(read_shards(args.merge))
            seconds = max(counts["shard_seconds"])
            return report(summarize(counts, seconds, len(counts["shard_seconds"])), args.json)
        if shard is not None:
            from export.lava.sharded import run_counts
            from i2e_neuro.workers import arm_worker

            arm_worker()
            counts = run_counts(job_of(args), *shard)
            path = shard_file(args.shard_dir, *shard)
            write_text(path, json.dumps(counts) + "\n")
            print(
                f"shard {shard[0]}/{shard[1]}: samples {counts['start']}..{counts['stop'] - 1}"
                f" of {counts['run']['samples']} in {counts['seconds']:.1f} s -> {path}"
            )
            return 0
        start = time.perf_counter()
        if args.workers > 1:
            counts = run_workers(job_of(args), args.workers)
        else:
            from export.lava.sharded import run_counts

            counts = merge_counts([run_counts(job_of(args))])
        summary = summarize(counts, time.perf_counter() - start, args.workers)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if _backend_unavailable(e) else 2
    return report(summary, args.json)
