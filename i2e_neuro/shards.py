"""Shards of a job: which one this process runs (``--shard I/N``, or torchrun's
``RANK``/``WORLD_SIZE``), its items, and where its result goes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping


def parse_shard(
    spec: str | None, environ: Mapping[str, str] = os.environ
) -> tuple[int, int] | None:
    """``"I/N"`` -> (I, N); None -> RANK/WORLD_SIZE when both are set, else None (no sharding).

    Errors name where the value came from (``--shard`` or the environment)."""
    if spec is None:
        rank, world = environ.get("RANK"), environ.get("WORLD_SIZE")
        if rank is None or world is None:
            return None
        spec, what = f"{rank}/{world}", f"RANK={rank}, WORLD_SIZE={world}"
    else:
        what = f"--shard {spec}"
    try:
        i, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"{what}: expected I/N with integers, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"{what}: need N >= 1 and 0 <= I < N")
    return i, n


def shard_bounds(total: int, shard: int, shards: int) -> tuple[int, int]:
    """Items ``[start, stop)`` of shard ``shard`` of ``shards``: contiguous, sizes differ by <= 1."""
    return total * shard // shards, total * (shard + 1) // shards


def shard_file(folder: Path, shard: int, shards: int) -> Path:
    """Where shard ``shard`` of ``shards`` writes its result in ``folder``."""
    return Path(folder) / f"shard-{shard:05d}-of-{shards:05d}.json"


def read_shard_files(folder: Path, kind: str) -> list[dict]:
    """Every shard result in ``folder`` (``shard-*-of-*.json``) whose ``kind`` is ``kind``;
    errors name the folder or the file (``--merge``)."""
    files = sorted(Path(folder).glob("shard-*-of-*.json"))
    if not files:
        raise FileNotFoundError(f"--merge {folder}: no shard-*-of-*.json files there")
    parts = []
    for f in files:
        try:
            part = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--merge: {f}: not a shard result ({e})") from None
        if not isinstance(part, dict) or part.get("kind") != kind:
            raise ValueError(f"--merge: {f}: not a shard result of {kind.rsplit(' ', 1)[0]}")
        parts.append(part)
    return parts
