"""Image sources for conversion: image files, folders, torchvision datasets on disk, scikit-learn digits.

A source is a sized, indexable sequence of :class:`Item` ``(name, image, label)``: ``image`` is a
uint8 array ``[H, W, 3]`` (``[H, W, 1]`` for one-channel digits) or, when that item could not be
read, the exception saying why (the rest of the source is unaffected). Items are produced only
when asked for (``source[i]`` or iteration), so a shard or a resumed run skips what it does not
need without decoding it. ``label`` is the class, or -1 where there is none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from i2e_neuro.datasets.registry import IMAGES_RATIO, REGISTRY
from i2e_neuro.datasets.registry import names as registry_names
from i2e_neuro.errors import ParameterError
from i2e_neuro.i2e.images import IMAGE_SUFFIXES, load_image

#: Default threshold ratio per dataset (the I2E paper's per-dataset ratios; the registry's for the
#: datasets it knows); "images" for loose files.
DEFAULT_RATIOS: dict[str, float] = {
    "imagenet": 0.12,
    "caltech101": 0.12,
    "caltech256": 0.12,
    "mini-imagenet": 0.12,
    **{n: d.ratio for n, d in REGISTRY.items() if d.ratio is not None},
    "images": IMAGES_RATIO,
}

#: the datasets a source can be made of (``i2e-neuro convert --dataset``)
DATASETS = registry_names(convert=True)
SPLITS = ("train", "test")

#: torchvision class, folder under the root, and the files expected in it.
_TORCHVISION = {
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py",
        "data_batch_1 ... data_batch_5, test_batch, batches.meta",
    ),
    "cifar100": ("CIFAR100", "cifar-100-python", "train, test, meta"),
    "mnist": (
        "MNIST",
        "MNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    ),
    "fashion-mnist": (
        "FashionMNIST",
        "FashionMNIST/raw",
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    ),
}


class SourceError(ParameterError, ValueError):
    """A source that cannot be made as asked; ``params``: the parameters the message names."""


class SourceNotFound(ParameterError, FileNotFoundError):
    """The data of a source is not where it was looked for (the message shows the layout)."""


class Item(NamedTuple):
    name: str
    image: np.ndarray | Exception
    label: int = -1

    @property
    def ok(self) -> bool:
        return not isinstance(self.image, Exception)


class Source:
    """Base class: ``len(source)``, ``source[i] -> Item``, iteration, ``names``, ``describe()``."""

    kind = "source"

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> Item:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Item]:
        for i in range(len(self)):
            yield self[i]

    def name(self, index: int) -> str:
        """The name of item ``index`` without reading it."""
        return self[index].name

    def known_error(self, index: int) -> Exception | None:
        """Why item ``index`` cannot be read, where that is known without reading it."""
        return None

    def describe(self) -> dict:
        """What this source is, as JSON-able data (stored in index files)."""
        return {"kind": self.kind, "count": len(self)}


# --- files and folders ------------------------------------------------------------------------


def find_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted by relative path, hidden files skipped)."""
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath) / f)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


class ImageFiles(Source):
    """Image files and folders of images given on the command line.

    Each image is named by its path relative to the folder it was found in (a file given
    directly: its file name), without the suffix; when two images would get the same name
    (``a.jpg`` and ``a.png``) both keep their suffix. A path that does not exist, or a folder
    without images, becomes one failed item, so that the run reports it with the others.
    """

    kind = "images"

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.inputs = [str(p) for p in paths]
        entries: list[tuple[str, Path | Exception]] = []
        for p in map(Path, paths):
            if p.is_dir():
                images = find_images(p)
                if not images:
                    entries.append(
                        (
                            p.as_posix(),
                            ValueError(
                                f"{p}: no image files in this folder ({', '.join(IMAGE_SUFFIXES)})"
                            ),
                        )
                    )
                entries.extend((f.relative_to(p).as_posix(), f) for f in images)
            elif p.is_file():
                entries.append((p.name, p))
            else:
                entries.append((p.as_posix(), FileNotFoundError(f"{p}: no such file or folder")))
        stems = [n.rsplit(".", 1)[0] if isinstance(f, Path) else n for n, f in entries]
        counts: dict[str, int] = {}
        for s in stems:
            counts[s] = counts.get(s, 0) + 1
        self.entries = [(s if counts[s] == 1 else n, f) for s, (n, f) in zip(stems, entries)]
        seen: dict[str, int] = {}
        for i, (name, f) in enumerate(self.entries):
            if name in seen and isinstance(f, Path):
                other = self.entries[seen[name]][1]
                self.entries[i] = (
                    name,
                    ValueError(f"{f}: same name {name!r} as {other}; convert them separately"),
                )
            seen.setdefault(name, i)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Item:
        name, f = self.entries[index]
        if isinstance(f, Exception):
            return Item(name, f)
        try:
            return Item(name, load_image(f))
        except (OSError, ValueError) as e:
            return Item(name, e)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.entries]

    def name(self, index: int) -> str:
        return self.entries[index][0]

    def known_error(self, index: int) -> Exception | None:
        f = self.entries[index][1]
        return f if isinstance(f, Exception) else None

    def path(self, index: int) -> Path | None:
        f = self.entries[index][1]
        return f if isinstance(f, Path) else None

    def describe(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "count": len(self)}


# --- datasets ---------------------------------------------------------------------------------


class ArraySource(Source):
    """A dataset held as a uint8 array ``[N, H, W, C]`` plus labels; names ``<split>_<index>``."""

    kind = "dataset"
    #: channels of the items: 3 (grey images repeated) or 1 (as stored; digits only)
    channels = 3

    def __init__(
        self,
        dataset: str,
        split: str,
        images: np.ndarray,
        labels: np.ndarray,
        root: str | None = None,
    ):
        self.dataset, self.split, self.root = dataset, split, root
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.width = max(5, len(str(len(images) - 1)))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        image = self.images[index]
        if image.shape[-1] == 1 and self.channels == 3:
            image = np.repeat(image, 3, axis=-1)
        return Item(self.name(index), image, int(self.labels[index]))

    def name(self, index: int) -> str:
        return f"{self.split}_{index % len(self):0{self.width}d}"

    @property
    def ratio(self) -> float:
        return DEFAULT_RATIOS[self.dataset]

    def describe(self) -> dict:
        return {"kind": self.kind, "dataset": self.dataset, "split": self.split, "count": len(self)}


def load_digits_source(split: str = "train", channels: int = 3, size: int = 32) -> ArraySource:
    """scikit-learn's 8x8 digits (shipped with scikit-learn, no download), upsampled bilinearly.

    Values 0..16 are scaled to 0..255 uint8 after interpolation. Split: every fifth image
    (index % 5 == 0) is ``test`` (360 images), the rest ``train`` (1437).
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {SPLITS}")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: must be 1 or 3")
    digits = load_digits()
    keep = np.arange(len(digits.images))
    keep = keep[keep % 5 == 0] if split == "test" else keep[keep % 5 != 0]
    x = torch.from_numpy(digits.images[keep].astype(np.float32))[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x * (255.0 / 16.0)).round().clamp(0, 255).to(torch.uint8)[:, 0, :, :, None].numpy()
    source = ArraySource("digits", split, images, digits.target[keep])
    source.channels = channels
    return source


def load_torchvision_source(dataset: str, root: str | Path, split: str = "train") -> ArraySource:
    """CIFAR-10/100, MNIST or Fashion-MNIST from a local ``root`` (never downloads).

    Raises FileNotFoundError showing the folder layout torchvision expects when it is missing.
    """
    if dataset not in _TORCHVISION:
        raise ValueError(f"dataset={dataset!r}: must be one of {sorted(_TORCHVISION)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {SPLITS}")
    cls_name, folder, files = _TORCHVISION[dataset]
    root = Path(root)
    # accept the dataset folder itself as the root (e.g. --root data/cifar-10-batches-py)
    top = folder.split("/")[0]
    if root.name == top and not (root / folder).exists():
        root = root.parent
    expected = f"{root}/{folder}/ with {files}"
    if not (root / folder).is_dir():
        raise SourceNotFound(
            f"{dataset}: not found under root {root} (no download is attempted); expected "
            f"{expected}",
            "root",
        )
    import torchvision.datasets as tvd

    try:
        ds = getattr(tvd, cls_name)(str(root), train=split == "train", download=False)
    except Exception as e:  # noqa: BLE001 - torchvision asserts, unpickles, ...: a foreign file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {reason}" if reason else type(e).__name__
        raise SourceNotFound(
            f"{dataset}: cannot read {root / folder} ({reason}): damaged or not the "
            f"{dataset} files; expected {expected}"
        ) from e
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    if data.ndim == 3:  # MNIST-like: [N, H, W] grey
        data = data[..., None]
    return ArraySource(
        dataset,
        split,
        np.ascontiguousarray(data, dtype=np.uint8),
        np.asarray(ds.targets),
        root=str(root),
    )


def dataset_source(
    dataset: str, root: str | Path | None = None, split: str = "train"
) -> ArraySource:
    """The source for ``--dataset``: ``digits`` is embedded, the others need a local ``root``."""
    if dataset == "digits":
        return load_digits_source(split)
    if dataset not in DATASETS:
        raise ValueError(f"dataset={dataset!r}: must be one of {DATASETS}")
    if root is None:
        raise SourceError(
            f"{dataset}: give root, the folder holding {_TORCHVISION[dataset][1]}/", "root"
        )
    return load_torchvision_source(dataset, root, split)
