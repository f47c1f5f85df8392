"""Which shard of a job this process runs: ``--shard I/N``, or torchrun's ``RANK``/``WORLD_SIZE``."""

from __future__ import annotations

import os
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
