"""``i2e-neuro simulate``: run an exported network in Lava (CPU simulator or Loihi 2) on real samples.

Reports accuracy, per-layer spike counts and rates, SynOps, and the agreement with the lava-dl
model of the same integers; ``--check N`` compares every spike of every group on the first N
samples.

Several runtimes: ``--workers N`` splits the samples into N contiguous shards, runs each in its
own OS process (its own Lava runtime) and merges the results; ``--shard I/N`` (or torchrun's
``RANK``/``WORLD_SIZE``) runs one shard and writes its counts to ``--shard-dir``; ``--merge DIR``
combines such files.  A shard records integer counts only (samples, correct predictions,
agreements, spikes and SynOps per layer, mismatching spikes), and every reported number is
computed from the summed counts by the same code as a single run, so a merged run reports
exactly what one runtime over all samples reports (the samples are independent: every group
resets at the start of each sample window).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from i2e_neuro.shards import parse_shard

SHARD_KIND = "i2e-neuro simulate shard"
#: Environment variable naming the parent of a ``--workers`` child (the child dies with it).
PARENT_ENV = "I2E_NEURO_SIMULATE_PARENT"
#: Fields of the JSON summary that are timings (everything else is exact counts and ratios).
TIMING_FIELDS = ("seconds", "seconds_per_sample", "lava_seconds", "workers")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="network file (.h5 from export) or a checkpoint (.pt); required unless --merge",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits (default), cifar10, cifar100, mnist, fashion-mnist, cifar10-dvs, or an image file/folder",
    )
    p.add_argument("--root", default=None, help="dataset folder for cifar10/... and cifar10-dvs")
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


def shard_bounds(total: int, shard: int, shards: int) -> tuple[int, int]:
    """Samples ``[start, stop)`` of shard ``shard`` of ``shards``: contiguous, sizes differ by <= 1."""
    return total * shard // shards, total * (shard + 1) // shards


def shard_file(folder: Path, shard: int, shards: int) -> Path:
    return Path(folder) / f"shard-{shard:05d}-of-{shards:05d}.json"


# ---------------------------------------------------------------------------------------------
# One runtime: counts of one shard
# ---------------------------------------------------------------------------------------------


def run_counts(args: argparse.Namespace, shard: int = 0, shards: int = 1) -> dict:
    """Simulate shard ``shard`` of ``shards`` of the samples; integer counts as a JSON-able dict."""
    import export
    from export.lava.runner import simulate
    from export.peers.lava_dl import run_lava_dl
    from export.synops import fanout_map
    from i2e_neuro.datasets.eval_data import Samples, load_samples

    desc = export.load(args.model)
    every = load_samples(args.data, desc.input_shape[1:], args.root, args.split, args.limit)
    total = len(every.labels)
    start, stop = shard_bounds(total, shard, shards)
    samples = Samples(
        every.data[start:stop], every.labels[start:stop], every.names[start:stop], every.events
    )
    n = stop - start
    check = max(0, min(args.check, stop) - start)  # the run's first --check samples
    counts = {
        "kind": SHARD_KIND,
        "shard": [shard, shards],
        "run": run_identity(args, total),
        "start": start,
        "stop": stop,
        "steps": desc.steps,
        "groups": [{"group": g.name, "neurons": g.size} for g in desc.spiking_groups],
        "labelled": int((samples.labels >= 0).sum()),
        "correct": 0,
        "agree": 0,
        "checked": check,
        "mismatches": 0,
        "spikes": {g.name: 0 for g in desc.spiking_groups},
        "synops": {},
        "seconds": 0.0,
    }
    if n == 0:
        return counts
    began = time.perf_counter()
    result = simulate(
        desc,
        samples.data,
        events=samples.events,
        backend=args.backend,
        record=check,
        fast=not args.stock,
        in_process=not args.lava_processes,
    )
    counts["seconds"] = time.perf_counter() - began
    reference = run_lava_dl(desc, samples, check)
    labelled = samples.labels >= 0
    counts["correct"] = int((result.predictions[labelled] == samples.labels[labelled]).sum())
    counts["agree"] = int((result.predictions == reference.predictions).sum())
    if check:
        counts["mismatches"] = (
            int(sum((result.trains[g] != reference.trains[g]).sum() for g in reference.trains))
            + result.padding_spikes  # a spike in a padding step is one lava-dl does not have
        )
    populations = [("i2e input", "input", reference.input_counts)] + [
        (g.name, g.name, result.neuron_counts[g.name]) for g in desc.spiking_groups
    ]
    for label, source, per_neuron in populations:
        outgoing = [c for c in desc.connections if c.source == source]
        fanout = sum(fanout_map(desc, c) for c in outgoing)
        counts["synops"][label] = int((np.asarray(per_neuron, np.int64) * fanout).sum())
    for g in desc.spiking_groups:
        counts["spikes"][g.name] = int(result.counts[g.name].sum())
    return counts


def run_identity(args: argparse.Namespace, total: int) -> dict:
    """What every shard of one run must agree on."""
    return {
        "model": str(args.model),
        "data": args.data,
        "split": args.split,
        "limit": args.limit,
        "backend": args.backend,
        "check": args.check,
        "stock": bool(args.stock),
        "samples": total,
    }


# ---------------------------------------------------------------------------------------------
# Counts of all shards -> the report
# ---------------------------------------------------------------------------------------------


def merge_counts(parts: list[dict]) -> dict:
    """Sum the counts of all shards of one run (each shard exactly once, any order)."""
    if not parts:
        raise ValueError("no shard results to merge")
    parts = sorted(parts, key=lambda p: p["shard"][0])
    first = parts[0]
    shards = first["shard"][1]
    seen = [p["shard"][0] for p in parts]
    missing = sorted(set(range(shards)) - set(seen))
    if missing or len(seen) != len(set(seen)) or any(p["shard"][1] != shards for p in parts):
        raise ValueError(
            f"need each of the {shards} shards exactly once; have {seen}"
            + (f", missing {missing}" if missing else "")
        )
    for p in parts[1:]:
        for key in ("run", "steps", "groups"):
            if p[key] != first[key]:
                raise ValueError(
                    f"shard {p['shard'][0]} belongs to another run: {key} {p[key]} != {first[key]}"
                )
    merged = {k: first[k] for k in ("run", "steps", "groups")}
    for key in ("labelled", "correct", "agree", "checked", "mismatches"):
        merged[key] = sum(int(p[key]) for p in parts)
    merged["samples"] = sum(p["stop"] - p["start"] for p in parts)
    for key in ("spikes", "synops"):
        names = [name for p in parts for name in p[key]]
        merged[key] = {
            name: sum(int(p[key].get(name, 0)) for p in parts) for name in dict.fromkeys(names)
        }
    merged["shard_seconds"] = [p["seconds"] for p in parts]
    return merged


def summarize(counts: dict, seconds: float, workers: int = 1) -> dict:
    """The report of a run from its (merged) counts: the same numbers whatever the sharding.

    ``seconds``: wall time of the whole run (samples, simulation, lava-dl reference), as the
    caller measured it; ``lava_seconds``: the Lava simulations alone, summed over shards.
    """
    run = counts["run"]
    n, steps = counts["samples"], counts["steps"]
    check = run["check"]
    layers = [
        {
            "group": g["group"],
            "neurons": g["neurons"],
            "spikes": counts["spikes"][g["group"]],
            "rate": counts["spikes"][g["group"]] / (g["neurons"] * steps * n),
            "synops": counts["synops"].get(g["group"], 0) / n,
        }
        for g in counts["groups"]
    ]
    synops = counts["synops"]
    return {
        "accuracy": counts["correct"] / counts["labelled"] if counts["labelled"] else None,
        "samples": n,
        "agreement": counts["agree"] / n,
        "spike_mismatches": counts["mismatches"] if check else None,
        "checked_samples": counts["checked"],
        "synops_per_sample": sum(synops.values()) / n,
        "input_synops_per_sample": synops.get("i2e input", 0) / n,
        "seconds": seconds,
        "seconds_per_sample": seconds / n,
        "lava_seconds": sum(counts["shard_seconds"]),
        "workers": workers,
        "backend": run["backend"],
        "layers": layers,
    }


def report(summary: dict, as_json: bool) -> int:
    print(f"{'group':<14} {'neurons':>8} {'spikes':>10} {'rate':>8} {'SynOps/sample':>14}")
    for row in summary["layers"]:
        print(
            f"{row['group']:<14} {row['neurons']:>8} {row['spikes']:>10} {row['rate']:>8.4f}"
            f" {row['synops']:>14.0f}"
        )
    n, seconds = summary["samples"], summary["seconds"]
    acc = summary["accuracy"]
    acc_text = f"{acc:.4f}" if acc is not None else "n/a (no labels)"
    mism = summary["spike_mismatches"]
    print(
        f"\nLava {summary['backend']}: {n} samples in {seconds:.1f} s ({seconds / n:.3f} s/sample"
        + (f", {summary['workers']} workers" if summary["workers"] > 1 else "")
        + f"; Lava {summary['lava_seconds']:.1f} s); accuracy {acc_text}; agreement with lava-dl {summary['agreement']:.4f};"
        f" SynOps/sample {summary['synops_per_sample']:.0f}"
        + (
            f"; spike mismatches on {summary['checked_samples']} samples: {mism}"
            if mism is not None
            else ""
        )
    )
    if as_json:
        print(json.dumps(summary))
    return 0 if mism in (None, 0) else 1


# ---------------------------------------------------------------------------------------------
# --workers: child processes that never outlive this one
# ---------------------------------------------------------------------------------------------


def _die_with_parent(grace_s: float = 10.0) -> None:
    """In a ``--workers`` child: get SIGTERM when the parent dies (``PR_SET_PDEATHSIG``), exit
    at once if it is already gone.

    SIGTERM takes the command's clean path (``i2e_neuro.cli``: it unwinds like Ctrl-C, so the
    Lava runtime is stopped in ``export.lava.runner.simulate``'s ``finally``). A watchdog thread makes
    sure of it: when the parent is gone it sends SIGTERM itself (a signal can be lost while Lava
    forks), and ends the process ``grace_s`` later if the clean path has not; the Lava workers
    then die with it (``export.lava.supervision``)."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the watchdog below still ends us
        pass
    if os.getppid() != int(parent):
        os._exit(130)

    def watchdog() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(143)

    threading.Thread(target=watchdog, name="die-with-parent", daemon=True).start()


def _child_command(args: argparse.Namespace, shard: int, shards: int, folder: Path) -> list[str]:
    cmd = [sys.executable, "-m", "i2e_neuro.cli", "simulate", "--model", str(args.model)]
    cmd += ["--data", args.data, "--split", args.split, "--backend", args.backend]
    cmd += ["--check", str(args.check), "--shard", f"{shard}/{shards}", "--shard-dir", str(folder)]
    if args.root is not None:
        cmd += ["--root", str(args.root)]
    if args.limit is not None:
        cmd += ["--limit", str(args.limit)]
    if args.stock:
        cmd.append("--stock")
    if args.lava_processes:
        cmd.append("--lava-processes")
    return cmd


def _end(children: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every child still running, SIGKILL those alive after ``grace`` seconds."""
    for c in children:
        if c.poll() is None:
            c.terminate()
    deadline = time.monotonic() + grace
    for c in children:
        try:
            c.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def run_workers(args: argparse.Namespace) -> dict:
    """Run ``args.workers`` shards as child processes in parallel and merge their counts."""
    env = dict(os.environ)
    env[PARENT_ENV] = str(os.getpid())
    for key in ("RANK", "WORLD_SIZE"):
        env.pop(key, None)
    # The lava-dl reference run of each child: its share of the cores, not all of them.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    children: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="i2e-neuro-simulate-") as tmp:
        folder = Path(tmp)
        logs = []
        try:
            for i in range(args.workers):
                log = open(folder / f"shard-{i}.log", "w+b")  # noqa: SIM115 - closed below
                logs.append(log)
                children.append(
                    subprocess.Popen(
                        _child_command(args, i, args.workers, folder),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
            while any(c.poll() is None for c in children):
                failed = [i for i, c in enumerate(children) if c.poll() not in (None, 0)]
                if failed:
                    break
                time.sleep(0.1)
            failed = [i for i, c in enumerate(children) if c.poll() not in (None, 0)]
            if failed:
                i = failed[0]
                logs[i].seek(0)
                tail = logs[i].read().decode(errors="replace").strip().splitlines()[-15:]
                errors = [line for line in tail if line.startswith("error:")]
                raise RuntimeError(
                    f"--workers: shard {i}/{args.workers} failed (exit {children[i].returncode}): "
                    + (errors[-1][len("error: ") :] if errors else "\n".join(tail))
                )
            parts = [
                json.loads(shard_file(folder, i, args.workers).read_text())
                for i in range(args.workers)
            ]
        finally:
            _end(children)
            for log in logs:
                log.close()
    return merge_counts(parts)


def read_shards(folder: Path) -> list[dict]:
    files = sorted(Path(folder).glob("shard-*-of-*.json"))
    if not files:
        raise FileNotFoundError(f"--merge {folder}: no shard-*-of-*.json files there")
    parts = []
    for f in files:
        try:
            part = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--merge: {f}: not a shard result ({e})") from None
        if not isinstance(part, dict) or part.get("kind") != SHARD_KIND:
            raise ValueError(f"--merge: {f}: not a shard result of i2e-neuro simulate")
        parts.append(part)
    return parts


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from export.lava.run_config import BackendUnavailable
    from i2e_neuro.atomic import write_text

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
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(args)
    try:
        if args.merge is not None:
            counts = merge_counts(read_shards(args.merge))
            seconds = max(counts["shard_seconds"])
            return report(summarize(counts, seconds, len(counts["shard_seconds"])), args.json)
        if shard is not None:
            _die_with_parent()
            counts = run_counts(args, *shard)
            path = shard_file(args.shard_dir, *shard)
            write_text(path, json.dumps(counts) + "\n")
            print(
                f"shard {shard[0]}/{shard[1]}: samples {counts['start']}..{counts['stop'] - 1}"
                f" of {counts['run']['samples']} in {counts['seconds']:.1f} s -> {path}"
            )
            return 0
        start = time.perf_counter()
        if args.workers > 1:
            counts = run_workers(args)
        else:
            counts = merge_counts([run_counts(args)])
        summary = summarize(counts, time.perf_counter() - start, args.workers)
    except BackendUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return report(summary, args.json)
