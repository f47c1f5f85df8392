"""A shard result as ``simulate --shard`` writes it, for the merge tests (no simulation)."""

from __future__ import annotations

from export.simulation import SHARD_KIND


def shard_part(shard: int, shards: int, run: dict | None = None, **over) -> dict:
    """Shard ``shard`` of ``shards`` of a 4-sample run: two samples each, fixed counts;
    ``run`` replaces the run identity, ``over`` any other field."""
    part = {
        "kind": SHARD_KIND,
        "shard": [shard, shards],
        "run": run if run is not None else {"model": "m.h5", "samples": 4},
        "start": 2 * shard,
        "stop": 2 * shard + 2,
        "steps": 14,
        "groups": [{"group": "g", "neurons": 10}],
        "labelled": 2,
        "correct": 1,
        "agree": 2,
        "checked": 0,
        "mismatches": 0,
        "spikes": {"g": 5},
        "synops": {"i2e input": 7, "g": 3},
        "seconds": 1.0,
    }
    part.update(over)
    return part
