"""A simulation job over several Lava runtimes: what one shard counts, how shards merge, and the
report, the same numbers whatever the sharding.

A shard records integer counts only (samples, correct predictions, agreements with lava-dl,
spikes and SynOps per layer, mismatching spikes); every reported number is computed from the
summed counts by the same code as a single run, so a merged run reports exactly what one
runtime over all samples reports (the samples are independent: every group resets at the start
of each sample window). The counting itself runs Lava: :func:`export.lava.sharded.run_counts`.
Lava-free.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from i2e_neuro.shards import read_shard_files, shard_file
from i2e_neuro.workers import owned_temp_folder, run_children

SHARD_KIND = "i2e-neuro simulate shard"
#: prefix of the system temp folder of ``simulate --workers`` (reclaimed after a SIGKILL)
TEMP_PREFIX = "i2e-neuro-simulate-"
#: Fields of the summary that are timings (everything else is exact counts and ratios).
TIMING_FIELDS = ("seconds", "seconds_per_sample", "lava_seconds", "workers")


@dataclass(frozen=True)
class SimulationJob:
    """What to simulate: the network file, the samples, the back end and the checks."""

    model: str
    data: str = "digits"
    root: str | None = None
    split: str = "test"
    limit: int | None = None
    backend: str = "cpu"
    check: int = 0
    stock: bool = False
    lava_processes: bool = False
    config: str | None = None  # the Hugging Face config of data i2e-hf

    def identity(self, total: int, model_sha256: str) -> dict:
        """What every shard of one run must agree on: the network file by path and by content
        (``model_sha256``: :func:`file_sha256` of the file the shard read), the samples, the
        back end and the checks."""
        fields = ("model", "data", "config", "split", "limit", "backend", "check", "stock")
        return {
            **{k: asdict(self)[k] for k in fields},
            "model": str(self.model),
            "model_sha256": model_sha256,
            "samples": total,
        }

    def shard_command(self, shard: int, shards: int, folder: Path) -> list[str]:
        """The ``i2e-neuro simulate`` command line that runs one shard into ``folder``."""
        cmd = [sys.executable, "-m", "i2e_neuro.cli", "simulate", "--model", str(self.model)]
        cmd += ["--data", self.data, "--split", self.split, "--backend", self.backend]
        cmd += ["--check", str(self.check), "--shard", f"{shard}/{shards}"]
        cmd += ["--shard-dir", str(folder)]
        if self.root is not None:
            cmd += ["--root", str(self.root)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.limit is not None:
            cmd += ["--limit", str(self.limit)]
        if self.stock:
            cmd.append("--stock")
        if self.lava_processes:
            cmd.append("--lava-processes")
        return cmd


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, hex (a network file's identity in a shard)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_workers(job: SimulationJob, workers: int) -> dict:
    """``workers`` shards of ``job`` as child processes in parallel; their merged counts. Their
    files go to a folder of the system temp folder, removed at the end (and by the next run
    if this one is killed outright)."""
    with owned_temp_folder(TEMP_PREFIX) as folder:
        commands = [job.shard_command(i, workers, folder) for i in range(workers)]
        run_children(commands, folder, "--workers")
        parts = [json.loads(shard_file(folder, i, workers).read_text()) for i in range(workers)]
    return merge_counts(parts)


def read_shards(folder: Path) -> list[dict]:
    """The shard results in ``folder`` (``--merge``)."""
    return read_shard_files(folder, SHARD_KIND)


def first_divergence(lava: dict, reference: dict, order: list[str], offset: int = 0) -> dict | None:
    """Where two recordings first differ: ``{"sample", "step", "group", "spikes"}`` for the
    lowest sample (numbered from ``offset``), then the earliest step, then the first group in
    feed-forward ``order``, with the number of differing spikes of that group at that step;
    None when the trains (``group -> [M, steps, ...]``) are equal."""
    best = None
    for rank, g in enumerate(order):
        if g not in reference:
            continue
        diff = np.asarray(lava[g]) != np.asarray(reference[g])
        per_step = diff.reshape(diff.shape[0], diff.shape[1], -1).sum(-1)  # [M, steps]
        hits = np.argwhere(per_step > 0)
        if not len(hits):
            continue
        m, t = (int(x) for x in hits[0])  # argwhere is row-major: lowest sample, then step
        key = (m, t, rank)
        if best is None or key < best[0]:
            spikes = int(per_step[m, t])
            best = (key, {"sample": m + offset, "step": t, "group": g, "spikes": spikes})
    return None if best is None else best[1]


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
        a, b = first["run"], p["run"]
        if a.get("model_sha256") != b.get("model_sha256"):
            raise ValueError(
                f"shard {p['shard'][0]} was computed by another network than shard "
                f"{first['shard'][0]}: the file {b.get('model')} had other content (sha256 "
                f"{str(b.get('model_sha256'))[:12]}... vs {str(a.get('model_sha256'))[:12]}...); "
                "it changed between the shards: rerun them all"
            )
        for key in ("run", "steps", "groups"):
            if p[key] != first[key]:
                differ = (
                    ", ".join(
                        f"{k} {b.get(k)!r} != {a.get(k)!r}" for k in a if a.get(k) != b.get(k)
                    )
                    if key == "run"
                    else f"{key} {p[key]} != {first[key]}"
                )
                raise ValueError(f"shard {p['shard'][0]} belongs to another run: {differ}")
    merged = {k: first[k] for k in ("run", "steps", "groups")}
    for key in ("labelled", "correct", "agree", "checked", "mismatches"):
        merged[key] = sum(int(p[key]) for p in parts)
    merged["samples"] = sum(p["stop"] - p["start"] for p in parts)
    found = [p["first_divergence"] for p in parts if p.get("first_divergence")]
    merged["first_divergence"] = found[0] if found else None  # shards in sample order
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
        "spike_mismatches": counts["mismatches"] if run["check"] else None,
        "first_divergence": counts.get("first_divergence"),
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


def summary_text(summary: dict) -> str:
    """The summary as the table and closing line ``simulate`` prints."""
    lines = [f"{'group':<14} {'neurons':>8} {'spikes':>10} {'rate':>8} {'SynOps/sample':>14}"]
    for row in summary["layers"]:
        lines.append(
            f"{row['group']:<14} {row['neurons']:>8} {row['spikes']:>10} {row['rate']:>8.4f}"
            f" {row['synops']:>14.0f}"
        )
    n, seconds = summary["samples"], summary["seconds"]
    acc = summary["accuracy"]
    acc_text = f"{acc:.4f}" if acc is not None else "n/a (no labels)"
    mism = summary["spike_mismatches"]
    lines.append(
        f"\nLava {summary['backend']}: {n} samples in {seconds:.1f} s ({seconds / n:.3f} s/sample"
        + (f", {summary['workers']} workers" if summary["workers"] > 1 else "")
        + f"; Lava {summary['lava_seconds']:.1f} s); accuracy {acc_text}; agreement with lava-dl"
        f" {summary['agreement']:.4f}; SynOps/sample {summary['synops_per_sample']:.0f}"
        + (
            f"; spike mismatches on {summary['checked_samples']} samples: {mism}"
            if mism is not None
            else ""
        )
    )
    first = summary.get("first_divergence")
    if first:
        lines.append(
            f"first divergence from lava-dl: sample {first['sample']}, step {first['step']}, "
            f"group {first['group']} ({first['spikes']} spikes differ there)"
        )
    return "\n".join(lines)
