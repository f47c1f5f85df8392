"""The datasets the pipeline knows: one :class:`Dataset` entry each, in :data:`REGISTRY`.

An entry holds what every stage needs: the kind of sample (``images``, converted by I2E, or
``events``), the folder layout under ``root`` (for help texts and errors), the class names, the
default I2E threshold ratio, the training recipe and the builder of its training data. The
command-line choices and help texts are generated from here, so adding a dataset is one entry
(plus its builder). Importing this module is cheap (no torch) and imports nothing of the
package: every other dataset module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: CIFAR-10 class names in label order (also the CIFAR10-DVS release's folder names)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: the I2E paper's CIFAR training recipe, the base of the others
_PAPER_CIFAR: dict[str, Any] = dict(
    arch="msresnet18",
    epochs=256,
    qat_epochs=16,
    batch_size=128,
    lr=0.1,
    qat_lr=0.01,
    weight_decay=2e-4,
    augment="baseline2",
    ratio=0.07,
    size=128,
)


@dataclass(frozen=True)
class Dataset:
    """One dataset: see the module docstring. ``layout``: what ``root`` must hold (None: the
    data is embedded); ``classes``: names in label order (None: read from the data);
    ``ratio``: the default I2E threshold ratio (None: not converted by I2E here);
    ``convert``: ``i2e-neuro convert --dataset`` reads it; ``in_memory``: held in memory for
    training (no DataLoader workers by default); ``builder``: the name of the function of
    :mod:`i2e_neuro.datasets.train_data` that builds it, ``(cfg) -> (train, test, info)``
    (a name, so that this module imports nothing of the package)."""

    name: str
    kind: str
    layout: str | None
    classes: tuple[str, ...] | None
    ratio: float | None
    recipe: dict[str, Any]
    builder: str
    description: str = ""
    convert: bool = False
    in_memory: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "digits",
            "images",
            None,
            DIGIT_CLASSES,
            0.10,
            dict(
                arch="msresnet_tiny",
                epochs=14,
                qat_epochs=3,
                batch_size=64,
                lr=0.1,
                qat_lr=0.02,
                weight_decay=1e-4,
                augment="none",
                ratio=0.10,
                size=32,
            ),
            "build_arrays",
            "embedded scikit-learn digits (1437 train / 360 test), 32x32; no root",
            convert=True,
        ),
        Dataset(
            "cifar10",
            "images",
            "ROOT/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
            CIFAR10_CLASSES,
            0.07,
            dict(_PAPER_CIFAR),
            "build_arrays",
            "CIFAR-10, upsampled to 128x128",
            convert=True,
        ),
        Dataset(
            "cifar100",
            "images",
            "ROOT/cifar-100-python/ (train, test, meta)",
            None,
            0.07,
            dict(_PAPER_CIFAR),
            "build_arrays",
            "CIFAR-100, upsampled to 128x128",
            convert=True,
        ),
        Dataset(
            "mnist",
            "images",
            "ROOT/MNIST/raw/ (train-images-idx3-ubyte, ..., t10k-labels-idx1-ubyte)",
            DIGIT_CLASSES,
            0.10,
            dict(_PAPER_CIFAR, epochs=64, qat_epochs=8, augment="none", ratio=0.10, size=32),
            "build_arrays",
            "MNIST, 32x32",
            convert=True,
        ),
        Dataset(
            "fashion-mnist",
            "images",
            "ROOT/FashionMNIST/raw/ (the same file names as MNIST)",
            FASHION_CLASSES,
            0.15,
            dict(_PAPER_CIFAR, epochs=64, qat_epochs=8, augment="baseline1", ratio=0.15, size=32),
            "build_arrays",
            "Fashion-MNIST, 32x32",
            convert=True,
        ),
        Dataset(
            "imagefolder",
            "images",
            "ROOT/train/<class>/*.jpg|png... and ROOT/val/<class>/... (one folder per class, "
            "same class names in both)",
            None,
            0.12,
            dict(_PAPER_CIFAR, epochs=128, qat_epochs=8, weight_decay=1e-5, ratio=0.12, size=224),
            "build_imagefolder",
            "an ImageNet-like folder of photos, 224x224",
            in_memory=False,
        ),
        Dataset(
            "events",
            "events",
            "ROOT/train/index.json and ROOT/test/index.json, each written by "
            "'i2e-neuro convert --dataset NAME --split train|test -o ROOT/train|ROOT/test'",
            None,
            None,
            dict(_PAPER_CIFAR, augment="none", ratio=None, size=None),
            "build_events",
            "event files written by 'i2e-neuro convert'",
        ),
        Dataset(
            "cifar10-dvs",
            "events",
            "ROOT/<class>/*.aedat (the unzipped CIFAR10-DVS release)",
            CIFAR10_CLASSES,
            None,
            dict(_PAPER_CIFAR, epochs=64, qat_epochs=8, augment="none", ratio=None, size=None),
            "build_cifar10_dvs",
            "real DVS recordings of CIFAR-10, 128x128",
            in_memory=False,
        ),
    )
}

#: default threshold ratio of loose image files (the paper's ImageNet value)
IMAGES_RATIO = 0.12


def names(kind: str | None = None, convert: bool | None = None) -> tuple[str, ...]:
    """Dataset names in registry order, optionally of one ``kind`` or convertible ones."""
    return tuple(
        d.name
        for d in REGISTRY.values()
        if (kind is None or d.kind == kind) and (convert is None or d.convert == convert)
    )


def get(name: str) -> Dataset:
    """The entry of ``name``; :class:`KeyError` listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"dataset {name!r}: unknown; choose one of {', '.join(REGISTRY)}") from None


def _row(name: str, text: str, width: int) -> str:
    import textwrap

    return textwrap.fill(
        text,
        98,
        initial_indent=f"  {name:<{width}}",
        subsequent_indent=" " * (width + 2),
        break_on_hyphens=False,
    )


def layouts_text(convert_only: bool = False) -> str:
    """Help text: one row per dataset with what ``--root`` must hold."""
    rows = [d for d in REGISTRY.values() if not convert_only or d.convert]
    width = max(len(d.name) for d in rows) + 2
    return "\n".join(_row(d.name, d.layout or d.description, width) for d in rows)


def recipes_text() -> str:
    """Help text: the recipe defaults of each dataset, one line each."""
    lines = []
    width = max(len(n) for n in REGISTRY) + 2
    for d in REGISTRY.values():
        r = d.recipe
        ratio = f", ratio {r['ratio']:g}" if r.get("ratio") is not None else ""
        text = (
            f"{r['arch']}, {r['epochs']} + {r['qat_epochs']} QAT epochs, batch "
            f"{r['batch_size']}, lr {r['lr']:g} (QAT {r['qat_lr']:g}), wd {r['weight_decay']:g}, "
            f"augment {r['augment']}{ratio}"
        )
        lines.append(_row(d.name, text, width))
    return "\n".join(lines)


def ratios_text() -> str:
    """Help text: the default ``--ratio`` of each convertible dataset and of image files."""
    parts = [f"{d.name} {d.ratio:g}" for d in REGISTRY.values() if d.convert]
    return ", ".join(parts) + f", image files {IMAGES_RATIO:g} (ImageNet)"
