"""The configuration of a training run: :class:`TrainConfig`, the per-dataset recipes, and
:func:`resolve_config`, which fills what was not given from the dataset's recipe and checks it.

Errors (:class:`TrainError`) name the parameter by its field name (``lr``, ``qat_epochs``); the
``train`` command shows it as a flag.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from i2e_neuro.datasets.registry import REGISTRY
from i2e_neuro.datasets.train_data import AUGMENTS, EVENT_DATASETS
from i2e_neuro.errors import ParameterError
from i2e_neuro.models.spec import ARCHITECTURES

TRAIN_BACKENDS = ("slayer", "spikingjelly")
ARCHS = tuple(ARCHITECTURES)  # the paper's, the CPU-sized tiny, and the Loihi 2 variants

#: Recipe defaults per dataset (the registry's): the I2E paper's training recipe for CIFAR /
#: ImageNet-like folders; digits is sized to finish in a few minutes on a 2-core CPU.
RECIPES: dict[str, dict[str, Any]] = {n: dict(d.recipe) for n, d in REGISTRY.items()}
#: datasets held in memory (the default is then no DataLoader workers)
IN_MEMORY = tuple(n for n, d in REGISTRY.items() if d.in_memory)


class TrainError(ParameterError):
    """Bad input to a training run (exit status 2); the message names the parameter or file."""


class NonFiniteLoss(ParameterError):
    """The loss became NaN or infinite (exit status 1)."""


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoint as a plain dict."""

    dataset: str = "digits"
    root: str | None = None
    backend: str = "slayer"
    arch: str = "msresnet_tiny"
    epochs: int = 14
    qat_epochs: int = 3
    batch_size: int = 64
    lr: float = 0.1
    qat_lr: float = 0.02
    min_lr: float = 5e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    augment: str = "none"
    ratio: float | None = 0.10
    timesteps: int = 8
    #: readout neurons per class (slayer; i2e_neuro.models.readout): 4 resolves the class score
    #: 4x finer than one neuron's count (digits, 3 seeds: deployable 96.20 % mean against 95.93 %
    #: with 1, within the seed spread; BENCHMARKS.md, "Digits")
    population: int = 4
    order: str = "efghabcd"
    size: int | None = 32
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    workers: int = 0
    amp: bool = True
    init: str | None = None
    config: str | None = None  # the Hugging Face config of dataset i2e-hf (I2E-CIFAR10, ...)
    protocol: str = (
        "legacy"  # image preprocessing: official (the paper datasets' recipes) or legacy
    )

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.qat_epochs if self.backend == "slayer" else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_config(init_config: dict | None = None, **given: Any) -> TrainConfig:
    """A config from the arguments given (None = not given) and the dataset's recipe defaults.

    ``init_config``: the config of the ``init`` checkpoint, whose backend and architecture are
    the defaults then. :class:`TrainError` names the first bad parameter.
    """
    if init_config:
        for key in ("backend", "arch", "population"):
            if given.get(key) is None and init_config.get(key):
                given[key] = init_config[key]
    dataset = given.get("dataset") or "digits"
    if dataset not in RECIPES:
        raise TrainError(
            f"dataset {dataset}: unknown; choose one of {', '.join(RECIPES)}", "dataset"
        )
    backend = given.get("backend") or "slayer"
    if backend not in TRAIN_BACKENDS:
        raise TrainError(
            f"backend {backend}: unknown; choose one of {', '.join(TRAIN_BACKENDS)}", "backend"
        )
    values = {f.name: f.default for f in fields(TrainConfig)}
    values.update(RECIPES[dataset])
    values["workers"] = 0 if dataset in IN_MEMORY else min(4, os.cpu_count() or 1)
    for k, v in given.items():
        if v is not None and k in values:
            values[k] = v
    values["dataset"], values["backend"] = dataset, backend
    cfg = TrainConfig(**values)
    _check(cfg, given)
    if cfg.backend == "spikingjelly":
        cfg.qat_epochs = 0
    if cfg.epochs + cfg.qat_epochs == 0:
        raise TrainError(
            "nothing to train: epochs and qat_epochs are both 0", "epochs", "qat_epochs"
        )
    return cfg


def _check(cfg: TrainConfig, given: dict) -> None:
    if cfg.arch not in ARCHS:
        raise TrainError(f"arch {cfg.arch}: unknown; choose one of {', '.join(ARCHS)}", "arch")
    if cfg.augment not in AUGMENTS:
        raise TrainError(
            f"augment {cfg.augment}: unknown; choose one of {', '.join(AUGMENTS)}", "augment"
        )
    if cfg.dataset in EVENT_DATASETS:
        if cfg.augment == "baseline2":
            raise TrainError(
                f"augment baseline2 works on source images; dataset {cfg.dataset} takes none or "
                "baseline1 (flip)",
                "augment",
                "dataset",
            )
        if given.get("size") is not None:
            raise TrainError(
                f"size applies to image datasets; dataset {cfg.dataset} keeps the events' own size",
                "size",
                "dataset",
            )
        if given.get("ratio") is not None:
            raise TrainError(
                f"ratio applies to image datasets; dataset {cfg.dataset} is already events",
                "ratio",
                "dataset",
            )
    if cfg.protocol not in ("official", "legacy"):
        raise TrainError(f"protocol {cfg.protocol}: unknown; choose official or legacy", "protocol")
    if cfg.config is not None and cfg.dataset != "i2e-hf":
        raise TrainError(
            f"config {cfg.config}: names a Hugging Face config of dataset i2e-hf, not of "
            f"{cfg.dataset}",
            "config",
            "dataset",
        )
    for name in ("epochs", "qat_epochs", "limit_train", "limit_test", "workers"):
        v = getattr(cfg, name)
        if v is not None and v < 0:
            raise TrainError(f"{name} {v}: must be >= 0", name)
    if not 1 <= cfg.population <= 64:
        raise TrainError(f"population {cfg.population}: must be 1..64", "population")
    for name in ("batch_size", "limit_train", "limit_test"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise TrainError(f"{name} {v}: must be >= 1", name)
    for name in ("lr", "qat_lr"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise TrainError(f"{name} {v}: must be a positive number", name)
    if cfg.size is not None and cfg.size < 8:
        raise TrainError(f"size {cfg.size}: must be at least 8 pixels", "size")
    most = 64 if cfg.dataset == "cifar10-dvs" else 8
    if not 1 <= cfg.timesteps <= most:
        raise TrainError(
            f"timesteps {cfg.timesteps}: must be 1..{most}" + (" for I2E" if most == 8 else ""),
            "timesteps",
        )
    if cfg.ratio is not None and not (math.isfinite(cfg.ratio) and 0 <= cfg.ratio < 1):
        raise TrainError(f"ratio {cfg.ratio}: must be a number from 0 to below 1", "ratio")
    ranges = {  # name: (lowest, highest, whether the highest is allowed, wording)
        "min_lr": (0.0, math.inf, False, "a number >= 0"),
        "weight_decay": (0.0, math.inf, False, "a number >= 0"),
        "momentum": (0.0, 1.0, False, "a number from 0 to below 1"),
        "label_smoothing": (0.0, 1.0, True, "a number from 0 to 1"),
    }
    for name, (lo, hi, hi_ok, wording) in ranges.items():
        v = getattr(cfg, name, None)
        if v is None:
            continue
        if not (math.isfinite(v) and lo <= v and (v <= hi if hi_ok else v < hi)):
            raise TrainError(f"{name} {v}: must be {wording}", name)


def default_out(cfg: TrainConfig) -> Path:
    """``runs/<dataset>-<backend>-<time>``."""
    return Path("runs") / f"{cfg.dataset}-{cfg.backend}-{time.strftime('%Y%m%d-%H%M%S')}"
