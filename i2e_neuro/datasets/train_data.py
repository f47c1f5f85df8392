"""Training data: image datasets (converted by I2E inside the training step) and event datasets.

Two kinds of sample come out of a :class:`torch.utils.data.DataLoader` built here:

* ``images``: uint8 images ``[C, H, W]`` (augmented on the source image, before conversion);
  batches ``[B, C, H, W]`` go to the device and through :class:`~i2e_neuro.i2e.conversion.I2E`
  there (random equivalent vectors in training, canonical ones in evaluation);
* ``events``: bool events ``[T, 2, H, W]`` (pre-converted I2E files or CIFAR10-DVS recordings);
  batches ``[B, T, 2, H, W]`` are made time-first with :mod:`i2e_neuro.layouts`.

The datasets, their folder layouts and classes are the entries of
:mod:`i2e_neuro.datasets.registry`; each entry's builder here makes its training and test sets.
Nothing is downloaded.

Shuffling is derived from ``(seed, epoch)`` alone (:class:`EpochSampler`), so an epoch is the
same whether or not the run was interrupted before it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from i2e_neuro.datasets import registry
from i2e_neuro.errors import ParameterError
from i2e_neuro.i2e.images import resize, resize_filter
from i2e_neuro.layouts import batch_first_to_time_first

IMAGE_DATASETS = registry.names("images")
EVENT_DATASETS = registry.names("events")
ALL_DATASETS = tuple(registry.REGISTRY)
AUGMENTS = ("none", "baseline1", "baseline2")

IMAGEFOLDER_LAYOUT = registry.get("imagefolder").layout
EVENTS_LAYOUT = registry.get("events").layout


class DataError(ParameterError, ValueError):
    """A dataset that cannot be used as given (the message names the path and the expected
    layout, and ``params`` the parameters it mentions)."""


def derive_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream (``shuffle``, ``augment``, ``i2e`` ...) of one epoch.

    Depends only on its arguments (not on Python's hash seed), so any process, resumed or not,
    draws the same numbers for the same epoch.
    """
    digest = hashlib.sha256(f"{int(seed) * 1000 + int(epoch)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class DataInfo:
    """What the model and the exporter need to know about the data."""

    kind: str  # "images" or "events"
    input_shape: tuple[int, int, int]  # (2, H, W)
    classes: list[str]
    timesteps: int
    ratio: float | None  # I2E threshold ratio (None: not I2E data, e.g. CIFAR10-DVS)
    order: str | None = "efghabcd"
    source: str = "i2e"  # "i2e" or "dvs"
    details: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "classes": list(self.classes),
            "timesteps": self.timesteps,
            "ratio": self.ratio,
            "order": self.order,
            "source": self.source,
            "details": dict(self.details),
        }


# --- datasets -------------------------------------------------------------------------------


class ImageTensorDataset(torch.utils.data.Dataset):
    """uint8 images ``[N, C, H, W]`` held in memory, with an optional per-sample transform."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


class PackedEventDataset(torch.utils.data.Dataset):
    """Events held bit-packed in memory: ``bits`` ``[N, T, 2, H, ceil(W/8)]`` uint8."""

    def __init__(
        self, bits: np.ndarray, width: int, labels: np.ndarray, transform: Callable | None = None
    ) -> None:
        self.bits, self.width, self.labels, self.transform = bits, width, labels, transform

    def __len__(self) -> int:
        return len(self.bits)

    def __getitem__(self, index: int):
        dense = np.unpackbits(self.bits[index], axis=-1, count=self.width).astype(bool)
        sample = torch.from_numpy(dense)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, int(self.labels[index])


class Subset(torch.utils.data.Dataset):
    """The first ``n`` samples of a dataset (``--limit-train`` / ``--limit-test``)."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n = dataset, min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]


class RandomFlipEvents:
    """Horizontal flip of an event sample ``[T, 2, H, W]`` with probability 1/2 (global torch RNG)."""

    def __call__(self, sample: torch.Tensor) -> torch.Tensor:
        return sample.flip(-1) if bool(torch.rand(()) < 0.5) else sample


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled indices per epoch from ``derive_seed(seed, epoch, 'shuffle')``; sharded for DDP.

    Like :class:`~torch.utils.data.DistributedSampler` (every rank gets ``ceil(N / world)``
    indices, the permutation padded by wrapping), but the permutation depends on nothing but
    ``seed`` and ``epoch``. ``shuffle=False`` gives ``rank::world`` without padding (evaluation).
    """

    def __init__(
        self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.n, self.world))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, "shuffle"))
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = math.ceil(self.n / self.world)
        total = per_rank * self.world
        order = (order * math.ceil(total / max(1, self.n)))[:total] if self.n else []
        return order[self.rank : total : self.world]

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, self.n, self.world))
        return math.ceil(self.n / self.world)


# --- transforms on the source image ---------------------------------------------------------


def image_transform(
    augment: str, size: int, train: bool, small: bool, native: int | None
) -> Callable | None:
    """torchvision.transforms.v2 on uint8 ``[C, H, W]`` tensors.

    ``baseline1``: random horizontal flip. ``baseline2``: RandomResizedCrop (scale 0.35-1 for
    small-image datasets, the ImageNet 0.08-1 otherwise) + flip + ColorJitter(0.4, 0.4, 0.4).
    Evaluation and ``none`` resize only (ImageNet-style: short side ``size / 0.875`` then a
    centre crop, for folders of photos). ``native``: the stored square size (None: varies).
    """
    from torchvision.transforms import v2

    steps: list = []
    if train and augment == "baseline2":
        steps.append(
            v2.RandomResizedCrop(
                size,
                scale=(0.35, 1.0) if small else (0.08, 1.0),
                interpolation=resize_filter(),
                antialias=True,
            )
        )
        steps.append(v2.RandomHorizontalFlip())
        steps.append(v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4))
        return v2.Compose(steps)
    if native is None:
        steps += [
            v2.Resize(int(round(size / 0.875)), interpolation=resize_filter(), antialias=True),
            v2.CenterCrop(size),
        ]
    if train and augment == "baseline1":
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps) if steps else None


def resize_all(images: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`~i2e_neuro.i2e.images.resize` of a uint8 batch ``[N, C, H, W]`` to ``size x
    size``, 1024 images at a time."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    for s in range(0, len(images), 1024):
        out[s : s + 1024] = resize(images[s : s + 1024], (size, size))
    return out


# --- building ---------------------------------------------------------------------------------


def _array_split(dataset: str, root: str | None, split: str):
    from i2e_neuro.datasets.sources import dataset_source, load_digits_source

    if dataset == "digits":
        source = load_digits_source(split, channels=1, size=32)
    else:
        source = dataset_source(dataset, root, split)
    images = torch.from_numpy(np.ascontiguousarray(source.images)).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(source.labels), source


def _class_names(dataset: str, root: str | None) -> list[str]:
    """The registry's class names of ``dataset`` (CIFAR-100: from its ``meta`` file)."""
    classes = registry.get(dataset).classes
    if classes is not None:
        return list(classes)
    if dataset == "cifar100":
        import pickle

        base = Path(root or ".").expanduser()
        for meta in (base / "cifar-100-python" / "meta", base / "meta"):
            if meta.is_file():
                with open(meta, "rb") as f:
                    return list(pickle.load(f, encoding="latin1")["fine_label_names"])
        return [str(i) for i in range(100)]
    raise KeyError(dataset)


def build_datasets(cfg) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, DataInfo]:
    """``(train, test, info)`` for a :class:`~i2e_neuro.train.config.TrainConfig` by the
    dataset's registry builder; :class:`DataError` if unusable."""
    name = cfg.dataset
    if name not in registry.REGISTRY:
        raise DataError(
            f"dataset {name}: unknown; choose one of {', '.join(registry.REGISTRY)}", "dataset"
        )
    entry = registry.get(name)
    if entry.layout is not None and not cfg.root:
        raise DataError(
            f"dataset {name} needs root DIR (expected {entry.layout})", "dataset", "root"
        )
    train, test, info = BUILDERS[entry.builder](cfg)
    if cfg.limit_train is not None:
        train = Subset(train, cfg.limit_train)
    if cfg.limit_test is not None:
        test = Subset(test, cfg.limit_test)
    if len(train) == 0 or len(test) == 0:
        raise DataError(
            f"dataset {name}: empty {'training' if len(train) == 0 else 'test'} set", "dataset"
        )
    return train, test, info


def build_arrays(cfg):
    """Digits or a torchvision dataset held in memory as uint8 images."""
    try:
        train_images, train_labels, _ = _array_split(cfg.dataset, cfg.root, "train")
        test_images, test_labels, _ = _array_split(cfg.dataset, cfg.root, "test")
    except (FileNotFoundError, OSError) as e:
        raise DataError(str(e), *getattr(e, "params", ())) from e
    size = cfg.size
    small = True
    train_tf = image_transform(cfg.augment, size, True, small, native=size)
    if cfg.augment != "baseline2":
        train_images = resize_all(train_images, size)
    test_images = resize_all(test_images, size)
    classes = _class_names(cfg.dataset, cfg.root)
    classes = (
        classes
        if len(classes) > int(train_labels.max())
        else [str(i) for i in range(int(train_labels.max()) + 1)]
    )
    info = DataInfo(
        "images",
        (2, size, size),
        classes,
        cfg.timesteps,
        cfg.ratio,
        cfg.order,
        "i2e",
        {"dataset": cfg.dataset, "size": size},
    )
    return (
        ImageTensorDataset(train_images, train_labels, train_tf),
        ImageTensorDataset(test_images, test_labels),
        info,
    )


def _read_image(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, read_image

    try:
        return read_image(path, mode=ImageReadMode.RGB)
    except RuntimeError:  # formats torchvision.io cannot decode: go through PIL
        from i2e_neuro.i2e.images import load_image

        return (
            torch.from_numpy(np.ascontiguousarray(load_image(path))).permute(2, 0, 1).contiguous()
        )


def build_imagefolder(cfg):
    """``ROOT/train/<class>/`` and ``ROOT/val/<class>/`` folders of photos."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root).expanduser()
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"dataset imagefolder: {root} has no {' or '.join(s + '/' for s in missing)} folder; expected {IMAGEFOLDER_LAYOUT}",
            "dataset",
        )

    class SkippingImageFolder(ImageFolder):
        """An ImageFolder that skips an unreadable image (one line on stderr naming it, once)
        and gives the next readable one instead, so that one bad file does not end an epoch."""

        skipped: set[str] = set()

        def __getitem__(self, index: int):
            for k in range(len(self.samples)):
                i = (index + k) % len(self.samples)
                try:
                    return super().__getitem__(i)
                except (ValueError, OSError, RuntimeError) as e:
                    path = self.samples[i][0]
                    if path not in self.skipped:
                        self.skipped.add(path)
                        print(f"skipping unreadable image {path}: {e}", file=sys.stderr)
            raise DataError(f"dataset imagefolder: no readable image in {self.root}", "dataset")

    sets = {}
    for split, train in (("train", True), ("val", False)):
        try:
            sets[split] = SkippingImageFolder(
                str(root / split),
                loader=_read_image,
                transform=image_transform(cfg.augment, cfg.size, train, small=False, native=None),
            )
        except (FileNotFoundError, RuntimeError) as e:
            raise DataError(
                f"dataset imagefolder: {root / split}: {e}; expected {IMAGEFOLDER_LAYOUT}",
                "dataset",
            ) from e
    if sets["train"].classes != sets["val"].classes:
        raise DataError(
            f"dataset imagefolder: {root}/train/ and {root}/val/ have different class folders "
            f"({len(sets['train'].classes)} vs {len(sets['val'].classes)}); expected {IMAGEFOLDER_LAYOUT}",
            "dataset",
        )
    info = DataInfo(
        "images",
        (2, cfg.size, cfg.size),
        list(sets["train"].classes),
        cfg.timesteps,
        cfg.ratio,
        cfg.order,
        "i2e",
        {"dataset": "imagefolder", "size": cfg.size},
    )
    return sets["train"], sets["val"], info


def _load_index(folder: Path) -> dict:
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise DataError(f"dataset events: no {index_path}; expected {EVENTS_LAYOUT}", "dataset")
    try:
        index = json.loads(index_path.read_text())
        files, _params = index["files"], index["params"]  # both keys required
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{index_path}: not an index written by 'i2e-neuro convert' ({e})") from e
    if not index.get("complete", False) or index.get("missing"):
        raise DataError(
            f"{index_path}: the conversion is incomplete ({len(index.get('missing', []))} file(s) missing); "
            "rerun the same 'i2e-neuro convert' command to finish it"
        )
    if not files:
        raise DataError(f"{index_path}: lists no event files")
    return index


def _packed_events(
    folder: Path, index: dict, limit: int | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    from i2e_neuro.datasets.formats import load_events

    bits, labels, shape = [], [], None
    count = 0
    for entry in index["files"]:
        if limit is not None and count >= limit:
            break
        try:
            batch = load_events(folder / entry["file"])
        except (FileNotFoundError, ValueError) as e:
            raise DataError(str(e)) from e
        ev = batch.events  # [T, B, 2, H, W]
        if shape is None:
            shape = (ev.shape[0], 2, ev.shape[3], ev.shape[4])
        elif (ev.shape[0], 2, ev.shape[3], ev.shape[4]) != shape:
            raise DataError(
                f"{folder / entry['file']}: sample shape {ev.shape} differs from the first file's {shape}"
            )
        if batch.labels is None or (np.asarray(batch.labels) < 0).any():
            raise DataError(
                f"{folder / entry['file']}: has no class labels (convert a dataset, not loose images)"
            )
        bits.append(
            np.packbits(batch_first_to_time_first(ev), axis=-1)
        )  # [T, B, ...] -> [B, T, ...]
        labels.append(np.asarray(batch.labels, dtype=np.int64))
        count += ev.shape[1]
    return np.concatenate(bits), np.concatenate(labels), shape


def build_events(cfg):
    """Event files written by ``i2e-neuro convert`` under ``ROOT/train/`` and ``ROOT/test/``."""
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"dataset events: {root} does not exist; expected {EVENTS_LAYOUT}", "dataset"
        )
    test_dir = (
        root / "test" if (root / "test").is_dir() or not (root / "val").is_dir() else root / "val"
    )
    train_index, test_index = _load_index(root / "train"), _load_index(test_dir)
    params = train_index["params"]
    if {k: params.get(k) for k in ("ratio", "timesteps", "order")} != {
        k: test_index["params"].get(k) for k in ("ratio", "timesteps", "order")
    }:
        raise DataError(
            f"dataset events: {root}/train and {test_dir} were converted with different I2E parameters",
            "dataset",
        )
    train_bits, train_labels, shape = _packed_events(root / "train", train_index, cfg.limit_train)
    test_bits, test_labels, test_shape = _packed_events(test_dir, test_index, cfg.limit_test)
    if test_shape != shape:
        raise DataError(
            f"dataset events: test samples {test_shape} differ from training samples {shape}",
            "dataset",
        )
    dataset = train_index.get("source", {}).get("dataset")
    k = int(max(train_labels.max(), test_labels.max())) + 1
    try:
        classes = (
            _class_names(dataset, None)
            if dataset and dataset != "cifar100"
            else [str(i) for i in range(k)]
        )
    except KeyError:
        classes = [str(i) for i in range(k)]
    if len(classes) < k:
        classes = [str(i) for i in range(k)]
    flip = RandomFlipEvents() if cfg.augment == "baseline1" else None
    info = DataInfo(
        "events",
        (2, shape[2], shape[3]),
        classes,
        int(params["timesteps"]),
        float(params["ratio"]),
        str(params.get("order") or "efghabcd"),
        "i2e",
        {"dataset": "events", "converted_from": dataset, "root": str(root)},
    )
    return (
        PackedEventDataset(train_bits, shape[3], train_labels, flip),
        PackedEventDataset(test_bits, shape[3], test_labels),
        info,
    )


def build_cifar10_dvs(cfg):
    """The CIFAR10-DVS recordings (:mod:`i2e_neuro.datasets.cifar10_dvs`)."""
    from i2e_neuro.datasets.cifar10_dvs import CIFAR10DVS

    flip = RandomFlipEvents() if cfg.augment == "baseline1" else None
    try:
        train = CIFAR10DVS(cfg.root, "train", timesteps=cfg.timesteps, transform=flip)
        test = CIFAR10DVS(cfg.root, "test", timesteps=cfg.timesteps)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(str(e)) from e
    info = DataInfo(
        "events",
        (2, 128, 128),
        _class_names("cifar10-dvs", None),
        cfg.timesteps,
        None,
        None,
        "dvs",
        {"dataset": "cifar10-dvs", "root": str(cfg.root)},
    )
    return train, test, info


def collate(batch: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples (images ``[C,H,W]`` or events ``[T,2,H,W]``) batch-first, labels ``[B]``."""
    return torch.stack([s for s, _ in batch]), torch.as_tensor(
        [int(y) for _, y in batch], dtype=torch.int64
    )


def make_loader(
    dataset,
    batch_size: int,
    sampler: EpochSampler,
    workers: int,
    generator: torch.Generator | None = None,
):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
        persistent_workers=False,
    )


#: The builders that registry entries name (:attr:`~i2e_neuro.datasets.registry.Dataset.builder`).
BUILDERS: dict[str, Callable] = {
    "build_arrays": build_arrays,
    "build_imagefolder": build_imagefolder,
    "build_events": build_events,
    "build_cifar10_dvs": build_cifar10_dvs,
}
