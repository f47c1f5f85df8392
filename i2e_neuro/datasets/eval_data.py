"""Samples for simulation and energy reports: a dataset split, a folder of images, or CIFAR10-DVS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from i2e_neuro.datasets import sources
from i2e_neuro.i2e.images import resize


@dataclass
class Samples:
    data: np.ndarray  # images [N, C, H, W] uint8, or events [N, T, 2, H, W] bool
    labels: np.ndarray  # [N], -1 where unknown
    names: list[str]
    events: bool = False


def load_samples(
    data: str,
    size: tuple[int, int],
    root: str | None = None,
    split: str = "test",
    limit: int | None = None,
) -> Samples:
    """``data``: a dataset name (digits, cifar10, ...), ``cifar10-dvs`` (with ``root``), or an image file/folder.

    Images are resized to ``size`` = (H, W) when they differ; errors name the file or argument.
    """
    if data == "cifar10-dvs":
        from i2e_neuro.datasets.cifar10_dvs import CIFAR10DVS

        ds = CIFAR10DVS(root, split=split) if root else _missing("cifar10-dvs", "--root")
        n = len(ds) if limit is None else min(limit, len(ds))
        items = [ds[i] for i in range(n)]
        events = np.stack([np.asarray(e, dtype=bool) for e, _ in items])
        return Samples(
            events,
            np.array([int(y) for _, y in items]),
            [f"{split}_{i}" for i in range(n)],
            events=True,
        )
    if data in sources.DATASETS:
        src = sources.dataset_source(data, root, split)
    else:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(
                f"--data {data!r}: neither a dataset ({', '.join(sources.DATASETS)}, cifar10-dvs) nor an existing image file or folder"
            )
        src = sources.ImageFiles([path])
    n = len(src) if limit is None else min(limit, len(src))
    images, labels, names = [], [], []
    for i in range(n):
        item = src[i]
        if not item.ok:
            raise ValueError(f"{item.name}: {item.image}")
        img = item.image if item.image.shape[:2] == tuple(size) else resize(item.image, size)
        images.append(np.ascontiguousarray(img.transpose(2, 0, 1)))
        labels.append(item.label)
        names.append(item.name)
    if not images:
        raise ValueError(f"--data {data!r}: no samples")
    return Samples(np.stack(images), np.asarray(labels, dtype=np.int64), names)


def _missing(data: str, arg: str):
    raise ValueError(f"--data {data}: needs {arg}")
