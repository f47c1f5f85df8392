"""The eight micro-saccade directions of I2E (paper, Sec. 'Spatiotemporal convolutional event generation').

A 3x3 neighbourhood is numbered row-major 1..9 (5 is the centre). A direction is a pair
``[a, b]``: its kernel has -1 at ``a`` and +1 at ``b``, so that with cross-correlation
``dV(y, x) = V(y + rb - 1, x + cb - 1) - V(y + ra - 1, x + ca - 1)`` on the 1-pixel padded image.
Every direction has a set of equivalent pairs (same displacement, other place); the first
one is canonical (evaluation); training may draw any of them ("random vectors").
"""

from __future__ import annotations

from typing import Sequence

#: name -> equivalent pairs, canonical first (the I2E paper's direction table).
DIRECTION_PAIRS: dict[str, tuple[tuple[int, int], ...]] = {
    "a": ((5, 6), (1, 2), (2, 3), (4, 5), (7, 8), (8, 9)),
    "b": ((5, 2), (4, 1), (6, 3), (7, 4), (8, 5), (9, 6)),
    "c": ((5, 3), (4, 2), (7, 5), (8, 6)),
    "d": ((5, 1), (6, 2), (8, 4), (9, 5)),
    "e": ((9, 4), (6, 1)),
    "f": ((4, 3), (7, 6)),
    "g": ((3, 8), (2, 7)),
    "h": ((8, 1), (9, 2)),
}

#: The paper's timestep order (groups gamma, alpha, beta): Algorithm 1's list of pairs.
PAPER_ORDER: tuple[str, ...] = ("e", "f", "g", "h", "a", "b", "c", "d")


def position(p: int) -> tuple[int, int]:
    """Row and column (0..2) of neighbourhood position ``p`` (1..9)."""
    return (p - 1) // 3, (p - 1) % 3


def displacement(pair: tuple[int, int]) -> tuple[int, int]:
    """(dy, dx) of a pair: where ``b`` lies relative to ``a``."""
    (ra, ca), (rb, cb) = position(pair[0]), position(pair[1])
    return rb - ra, cb - ca


def parse_order(order: str | Sequence[str] | None) -> tuple[str, ...]:
    """Validate a timestep order: a permutation of the eight direction names.

    Accepts ``None`` (paper default), a string such as ``"efghabcd"`` or a sequence of names.
    """
    if order is None:
        return PAPER_ORDER
    names = tuple(order)
    if sorted(names) != sorted(DIRECTION_PAIRS):
        raise ValueError(
            f"order={order!r}: must be a permutation of the eight directions "
            f"{''.join(sorted(DIRECTION_PAIRS))!r} (paper default {''.join(PAPER_ORDER)!r})"
        )
    return names


def kernel(pair: tuple[int, int]) -> list[list[float]]:
    """The 3x3 difference kernel of a pair: -1 at ``a``, +1 at ``b`` (Algorithm 1)."""
    k = [[0.0] * 3 for _ in range(3)]
    (ra, ca), (rb, cb) = position(pair[0]), position(pair[1])
    k[ra][ca] = -1.0
    k[rb][cb] = 1.0
    return k
