"""Training: the QAT MS-ResNet on lava-dl slayer (phase 1 float + BN, fold, phase 2 QAT), or the
SpikingJelly float reference, on I2E events made inside the training step.

One run lives in one folder ``OUT``:

* ``checkpoint.pt``: written atomically after every epoch (model, optimizer, scheduler, epoch,
  phase, config as a plain dict, metrics history, RNG state; once the model is folded, also
  ``deploy``: the integers and parameters the exporter needs, as plain data);
* ``interrupted.pt``: the state at a Ctrl-C (for inspection or ``--init``; ``--resume``
  continues from ``checkpoint.pt``, i.e. redoes the interrupted epoch);
* ``metrics.csv``, ``tb/`` (TensorBoard), ``curves.png``.

Determinism: every random stream of epoch ``e`` (shuffling, augmentation, I2E's random vectors)
is seeded from ``(seed, e)`` alone (:func:`~i2e_neuro.datasets.train_data.derive_seed`), and the
checkpoint holds everything else, so on the CPU a run resumed after any epoch ends with the
same weights, bit for bit, as an uninterrupted one.

Checkpoints hold only tensors and plain Python values and are read with
``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch

from i2e_neuro.atomic import atomic_path, write_text
from i2e_neuro.datasets.train_data import (
    AUGMENTS,
    EVENT_DATASETS,
    DataError,
    DataInfo,
    EpochSampler,
    build_datasets,
    derive_seed,
    make_loader,
)

BACKENDS = ("slayer", "spikingjelly")
ARCHS = ("msresnet18", "msresnet34", "msresnet_tiny")
CHECKPOINT = "checkpoint.pt"
INTERRUPTED = "interrupted.pt"
CHECKPOINT_FORMAT = "i2e-neuro-train"
CHECKPOINT_VERSION = 1

_PAPER_CIFAR = dict(
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
#: Recipe defaults per dataset. The paper's (PAPER-FACTS.md section 4) for CIFAR / ImageNet-like
#: folders; digits is sized to finish in a few minutes on a 2-core CPU (see BENCHMARKS.md).
RECIPES: dict[str, dict[str, Any]] = {
    "digits": dict(
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
    "cifar10": dict(_PAPER_CIFAR),
    "cifar100": dict(_PAPER_CIFAR),
    "mnist": dict(_PAPER_CIFAR, epochs=64, qat_epochs=8, augment="none", ratio=0.10, size=32),
    "fashion-mnist": dict(
        _PAPER_CIFAR, epochs=64, qat_epochs=8, augment="baseline1", ratio=0.15, size=32
    ),
    "imagefolder": dict(
        _PAPER_CIFAR, epochs=128, qat_epochs=8, weight_decay=1e-5, ratio=0.12, size=224
    ),
    "events": dict(_PAPER_CIFAR, augment="none", ratio=None, size=None),
    "cifar10-dvs": dict(
        _PAPER_CIFAR, epochs=64, qat_epochs=8, augment="none", ratio=None, size=None
    ),
}


class TrainError(Exception):
    """Bad input to a training run (exit status 2); the message names the argument or file."""


class CheckpointError(TrainError):
    """A checkpoint that is missing, unreadable or not ours; the message names the file."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
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
    order: str = "efghabcd"
    size: int | None = 32
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    workers: int = 0
    amp: bool = True
    init: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_config(init_config: dict | None = None, **given: Any) -> TrainConfig:
    """A config from the arguments given (None = not given) and the dataset's recipe defaults.

    ``init_config``: the config of the ``--init`` checkpoint, whose backend and architecture are
    the defaults then.
    """
    if init_config:
        for key in ("backend", "arch"):
            if given.get(key) is None and init_config.get(key):
                given[key] = init_config[key]
    dataset = given.get("dataset") or "digits"
    if dataset not in RECIPES:
        raise TrainError(f"--dataset {dataset}: unknown; choose one of {', '.join(RECIPES)}")
    recipe = dict(RECIPES[dataset])
    backend = given.get("backend") or "slayer"
    if backend not in BACKENDS:
        raise TrainError(f"--backend {backend}: unknown; choose one of {', '.join(BACKENDS)}")
    values = {f.name: f.default for f in fields(TrainConfig)}
    values.update(recipe)
    values["workers"] = (
        0
        if dataset in ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "events")
        else min(4, os.cpu_count() or 1)
    )
    for k, v in given.items():
        if v is not None and k in values:
            values[k] = v
    values["dataset"], values["backend"] = dataset, backend
    cfg = TrainConfig(**values)
    if cfg.arch not in ARCHS:
        raise TrainError(f"--arch {cfg.arch}: unknown; choose one of {', '.join(ARCHS)}")
    if cfg.augment not in AUGMENTS:
        raise TrainError(f"--augment {cfg.augment}: unknown; choose one of {', '.join(AUGMENTS)}")
    if cfg.dataset in EVENT_DATASETS:
        if cfg.augment == "baseline2":
            raise TrainError(
                f"--augment baseline2 works on source images; --dataset {cfg.dataset} takes none or baseline1 (flip)"
            )
        if given.get("size") is not None:
            raise TrainError(
                f"--size applies to image datasets; --dataset {cfg.dataset} keeps the events' own size"
            )
        if given.get("ratio") is not None:
            raise TrainError(
                f"--ratio applies to image datasets; --dataset {cfg.dataset} is already events"
            )
    for name in ("epochs", "qat_epochs", "limit_train", "limit_test", "workers"):
        v = getattr(cfg, name)
        if v is not None and v < 0:
            raise TrainError(f"--{name.replace('_', '-')} {v}: must be >= 0")
    for name in ("batch_size", "limit_train", "limit_test"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise TrainError(f"--{name.replace('_', '-')} {v}: must be >= 1")
    for name in ("lr", "qat_lr"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise TrainError(f"--{name.replace('_', '-')} {v}: must be a positive number")
    if cfg.size is not None and cfg.size < 8:
        raise TrainError(f"--size {cfg.size}: must be at least 8 pixels")
    most = 64 if cfg.dataset == "cifar10-dvs" else 8
    if not 1 <= cfg.timesteps <= most:
        raise TrainError(
            f"--timesteps {cfg.timesteps}: must be 1..{most}" + (" for I2E" if most == 8 else "")
        )
    if cfg.ratio is not None and not (math.isfinite(cfg.ratio) and cfg.ratio >= 0):
        raise TrainError(f"--ratio {cfg.ratio}: must be a number >= 0")
    if cfg.backend == "spikingjelly":
        cfg.qat_epochs = 0
    if cfg.epochs + cfg.qat_epochs == 0:
        raise TrainError("nothing to train: --epochs and --qat-epochs are both 0")
    return cfg


# --- checkpoints --------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a training checkpoint with ``weights_only=True``; :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{what} {path}: unreadable or corrupt ({msg[:200]})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{what} {path}: not an i2e-neuro training checkpoint")
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{what} {path}: written by a newer i2e-neuro (version {ckpt.get('version')})"
        )
    for key in ("model", "config", "epoch"):
        if key not in ckpt:
            raise CheckpointError(f"{what} {path}: incomplete (no {key!r})")
    return ckpt


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


# --- models -------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, info: DataInfo):
    """``(model, spec)``: the slayer QAT graph (spec: its NetSpec) or the SpikingJelly reference (spec None)."""
    torch.manual_seed(cfg.seed)
    if cfg.backend == "slayer":
        from i2e_neuro.models.qat import NeuronConfig, SpikingGraph
        from i2e_neuro.models.spec import build_spec

        spec = build_spec(cfg.arch, info.input_shape, info.num_classes, info.timesteps)
        return SpikingGraph(spec, NeuronConfig()), spec
    from i2e_neuro.models.reference import build_reference

    return build_reference(cfg.arch, info.input_shape[0], info.num_classes), None


def is_folded(model) -> bool:
    return bool(getattr(model, "folded", torch.tensor(False)))


def classifier_keys(model) -> set[str]:
    """State-dict keys of the classifier (replaced when the class count changes)."""
    if hasattr(model, "spec"):
        from i2e_neuro.models.qat import _key

        readout = model.spec.readout.name
        keys = {f"biases.{_key(readout)}"}
        for c in model.spec.incoming(readout):
            keys |= {
                f"synapses.{_key(c.name)}.{p}"
                for p, _ in model.synapses[_key(c.name)].named_parameters()
            }
        return keys
    return {k for k in model.state_dict() if k.startswith("fc.")}


def load_init(model, ckpt: dict, path: str, backend: str) -> list[str]:
    """Load the matching weights of another run's checkpoint; return the replaced keys.

    The classifier is replaced (left as initialised) where its shape differs (another class
    count); any other mismatch is an error naming the parameter.
    """
    state = ckpt["model"]
    own = model.state_dict()
    head = classifier_keys(model)
    replaced, load = [], {}
    for k, v in own.items():
        if k not in state:
            raise CheckpointError(
                f"--init {path}: has no parameter {k!r} (another architecture or backend?)"
            )
        if tuple(state[k].shape) != tuple(v.shape):
            if k in head:
                replaced.append(k)
                continue
            raise CheckpointError(
                f"--init {path}: parameter {k!r} has shape {tuple(state[k].shape)}, this model needs {tuple(v.shape)}"
            )
        load[k] = state[k]
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(
            f"--init {path}: parameter {extra[0]!r} does not exist in this model (another architecture?)"
        )
    if replaced and "exponents" in load:  # keep this model's exponent for a replaced classifier
        names = [c.name for c in model.spec.conns]
        exps = load["exponents"].clone()
        for c in model.spec.incoming(model.spec.readout.name):
            i = names.index(c.name)
            exps[i] = own["exponents"][i]
        load["exponents"] = exps
    if replaced and backend == "slayer":  # a replaced readout's bias restarts at 0 as well
        for k in list(load):
            if k in head:
                replaced.append(k)
                del load[k]
    model.load_state_dict({**own, **load})
    return sorted(set(replaced))


def deploy_entry(model, info: DataInfo) -> dict:
    """The checkpoint's ``deploy`` entry (:class:`~i2e_neuro.models.deploy.DeployRecord`)."""
    i2e = {
        "ratio": info.ratio,
        "timesteps": int(info.timesteps),
        "order": info.order,
        "source": info.source,
    }
    return model.deploy_record(i2e=i2e, classes=list(info.classes)).to_dict()


def compute_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy with label smoothing (a module-level function so that tests can replace it)."""
    return torch.nn.functional.cross_entropy(
        logits.float(), labels, label_smoothing=label_smoothing
    )


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Distributed:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed_from_env() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Distributed(
        world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    )


class Trainer:
    """One training run in ``out``; :meth:`run` returns the result dict (also the last JSON line)."""

    def __init__(
        self,
        cfg: TrainConfig | None,
        out: str | Path,
        *,
        resume: bool = False,
        device: str = "auto",
        stop_after: int | None = None,
        progress: bool = True,
        threads: int | None = 2,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.device_arg, self.stop_after, self.progress, self.threads = (
            device,
            stop_after,
            progress,
            threads,
        )
        self.dist = _distributed_from_env()
        self._log = log or (lambda s: print(s, flush=True))
        self.history: list[dict] = []
        self.extras: dict[str, Any] = {}
        self.completed = 0
        self.step_in_epoch = 0
        self.writer = None

    def log(self, line: str) -> None:
        if self.dist.main:
            self._log(line)

    # ------------------------------------------------------------------ setup
    def _setup_device(self) -> None:
        if self.threads:
            torch.set_num_threads(int(self.threads))
        want = self.device_arg
        if want not in ("auto", "cpu", "cuda"):
            raise TrainError(f"--device {want}: choose auto, cpu or cuda")
        if want == "cuda" and not torch.cuda.is_available():
            raise TrainError(
                f"--device cuda: CUDA is not available (torch {torch.__version__}); use --device cpu"
            )
        cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda", self.dist.local_rank) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.dist.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")

    def _setup(self) -> None:
        self._setup_device()
        ckpt = None
        if self.resume:
            path = self.out / CHECKPOINT
            if not path.is_file():
                raise CheckpointError(
                    f"--resume: no checkpoint {path} (give the --out folder of the run to continue)"
                )
            ckpt = load_checkpoint(path, "--resume")
            self.cfg = TrainConfig.from_dict(ckpt["config"])
        elif (self.out / CHECKPOINT).exists():
            raise TrainError(
                f"--out {self.out}: already holds a run ({CHECKPOINT}); add --resume to continue it, or choose another --out"
            )
        cfg = self.cfg
        init = None
        if cfg.init and ckpt is None:
            init = load_checkpoint(cfg.init, "--init")
            init_cfg = init["config"]
            if init_cfg.get("backend") != cfg.backend:
                raise CheckpointError(
                    f"--init {cfg.init}: a {init_cfg.get('backend')} model; this run trains --backend {cfg.backend}"
                )
            if init_cfg.get("arch") != cfg.arch:
                raise CheckpointError(
                    f"--init {cfg.init}: architecture {init_cfg.get('arch')}; this run uses --arch {cfg.arch}"
                )
        try:
            self.train_set, self.test_set, self.info = build_datasets(cfg)
        except DataError as e:
            raise TrainError(str(e)) from e
        if ckpt is not None and ckpt.get("data", {}).get("input_shape") not in (
            None,
            list(self.info.input_shape),
        ):
            raise TrainError(
                f"--resume {self.out / CHECKPOINT}: trained on input {ckpt['data']['input_shape']}, the data now gives {list(self.info.input_shape)}"
            )
        if ckpt is not None and ckpt.get("data", {}).get("classes") not in (
            None,
            list(self.info.classes),
        ):
            raise TrainError(
                f"--resume {self.out / CHECKPOINT}: the dataset's classes changed since the run started"
            )
        self.model, self.spec = build_model(cfg, self.info)
        self.model.to(self.device)
        self.i2e = None
        if self.info.kind == "images":
            from i2e_neuro.i2e.conversion import I2E

            self.i2e = I2E(cfg.ratio, self.info.timesteps, cfg.order)
        world = self.dist.world
        self.batch_size = max(1, math.ceil(cfg.batch_size / world))
        self.train_sampler = EpochSampler(
            len(self.train_set), cfg.seed, True, self.dist.rank, world
        )
        self.test_sampler = EpochSampler(len(self.test_set), cfg.seed, False, self.dist.rank, world)
        self.loader_generator = torch.Generator()
        self.train_loader = make_loader(
            self.train_set, self.batch_size, self.train_sampler, cfg.workers, self.loader_generator
        )
        self.test_loader = make_loader(
            self.test_set, self.batch_size, self.test_sampler, cfg.workers
        )
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.amp)
        self.ddp = self.model
        if init is not None:
            if init["config"].get("backend") == "slayer" and bool(
                init["model"].get("folded", torch.tensor(False))
            ):
                self.model.fold()
                if cfg.epochs:
                    self.log(
                        f"--init {cfg.init} is already folded (QAT): skipping the {cfg.epochs} float epoch(s)"
                    )
                cfg.epochs = 0
            replaced = load_init(self.model, init, cfg.init, cfg.backend)
            self.log(
                f"initialised from {cfg.init}"
                + (f" (classifier replaced: {len(self.info.classes)} classes)" if replaced else "")
            )
        if ckpt is not None:
            if bool(ckpt["model"].get("folded", torch.tensor(False))):
                self.model.fold()
            self.model.load_state_dict(ckpt["model"])
            self.completed = int(ckpt["epoch"])
            self.history = list(ckpt.get("history", []))
            self.extras = dict(ckpt.get("extras", {}))
        self.total_epochs = cfg.epochs + (cfg.qat_epochs if cfg.backend == "slayer" else 0)
        # the optimizer of the phase the model is in (the checkpoint's); the loop switches phases
        self._new_optimizer("qat" if is_folded(self.model) else "float")
        if ckpt is not None and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler") and self.amp:
                self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt is not None and "rng" in ckpt:
            _set_rng_state(ckpt["rng"])
        self._wrap()

    def phase_of(self, epoch: int) -> str:
        return "float" if epoch < self.cfg.epochs else "qat"

    def _wrap(self) -> None:
        if self.dist.enabled:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        else:
            self.ddp = self.model

    def _new_optimizer(self, phase: str) -> None:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        lr = cfg.lr if phase == "float" else cfg.qat_lr
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.SGD(
            [g for g in groups if g["params"]], lr=lr, momentum=cfg.momentum
        )
        epochs = cfg.epochs if phase == "float" else cfg.qat_epochs
        steps = max(1, epochs * len(self.train_loader))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=steps, eta_min=min(cfg.min_lr, lr)
        )
        self.optimizer_phase = phase

    # ------------------------------------------------------------------ steps
    def to_events(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.i2e is not None:
            return self.i2e(x)
        from i2e_neuro.layouts import batch_first_to_time_first

        return batch_first_to_time_first(x)

    def _autocast(self, phase: str):
        if self.amp and phase == "float":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _reduce(self, values: list[float]) -> list[float]:
        if not self.dist.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def train_epoch(self, epoch: int, phase: str) -> dict:
        cfg = self.cfg
        self.ddp.train()
        self.train_sampler.set_epoch(epoch)
        rank = self.dist.rank
        torch.manual_seed(derive_seed(cfg.seed, epoch, f"augment/{rank}"))
        self.loader_generator.manual_seed(derive_seed(cfg.seed, epoch, f"workers/{rank}"))
        if self.i2e is not None:
            self.i2e.train()
            self.i2e.generator = torch.Generator().manual_seed(
                derive_seed(cfg.seed, epoch, f"i2e/{rank}")
            )
        from tqdm import tqdm

        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.total_epochs} {phase}",
            unit="batch",
            leave=False,
            disable=not (self.progress and self.dist.main),
            file=sys.stderr,
            dynamic_ncols=True,
        )
        loss_sum = correct = count = 0.0
        start = time.perf_counter()
        self.step_in_epoch = 0
        for x, y in bar:
            y = y.to(self.device, non_blocking=True)
            events = self.to_events(x)
            with self._autocast(phase):
                logits = self.ddp(events)
            loss = compute_loss(logits, y, cfg.label_smoothing)
            n = float(y.numel())
            batch_loss, batch_correct, batch_n = self._reduce(
                [loss.item() * n, float((logits.argmax(1) == y).sum()), n]
            )
            if not math.isfinite(batch_loss):
                raise NonFiniteLoss(
                    f"loss is {'nan' if math.isnan(batch_loss) else 'inf'} at epoch {epoch + 1} step {self.step_in_epoch + 1} "
                    f"(lr {self.optimizer.param_groups[0]['lr']:.3g})"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if phase == "float" and hasattr(self.model, "project_bn_shifts"):
                self._project_bn_shifts()
            self.step_in_epoch += 1
            loss_sum, correct, count = (
                loss_sum + batch_loss,
                correct + batch_correct,
                count + batch_n,
            )
            bar.set_postfix(
                loss=f"{loss_sum / count:.3f}", acc=f"{100 * correct / count:.1f}%", refresh=False
            )
        bar.close()
        seconds = time.perf_counter() - start
        return {
            "train_loss": loss_sum / max(count, 1),
            "train_accuracy": correct / max(count, 1),
            "train_seconds": seconds,
            "train_samples": count,
        }

    @torch.no_grad()
    def evaluate(self, phase: str) -> dict:
        """Test loss and accuracy; each process takes every world-th sample (no DDP collectives)."""
        self.model.eval()
        if self.i2e is not None:
            self.i2e.eval()
        loss_sum = correct = count = 0.0
        for x, y in self.test_loader:
            y = y.to(self.device, non_blocking=True)
            with self._autocast(phase):
                logits = self.model(self.to_events(x))
            loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            loss_sum += float(loss)
            correct += float((logits.argmax(1) == y).sum())
            count += float(y.numel())
        loss_sum, correct, count = self._reduce([loss_sum, correct, count])
        return {"test_loss": loss_sum / max(count, 1), "test_accuracy": correct / max(count, 1)}

    # ------------------------------------------------------------------ saving
    def payload(self, phase: str, epoch: int, interrupted: bool = False) -> dict:
        model = self.model
        data = self.info.to_dict()
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": int(epoch),
            "phase": phase,
            "total_epochs": int(self.total_epochs),
            "complete": (not interrupted) and epoch >= self.total_epochs,
            "interrupted": interrupted,
            "config": self.cfg.to_dict(),
            "data": data,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": list(self.history),
            "extras": dict(self.extras),
            "rng": _rng_state(),
            "classes": list(self.info.classes),
        }
        if interrupted:
            payload["step"] = int(self.step_in_epoch)
        if self.spec is not None:
            payload["spec"] = self.spec.to_dict()
            if is_folded(model):
                payload["deploy"] = deploy_entry(model, self.info)
        return payload

    def save(self, phase: str, epoch: int) -> None:
        if self.dist.main:
            save_checkpoint(self.out / CHECKPOINT, self.payload(phase, epoch))
            self._write_metrics()
        if self.dist.enabled:
            torch.distributed.barrier()

    def _write_metrics(self) -> None:
        keys = [
            "epoch",
            "phase",
            "lr",
            "train_loss",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
            "seconds",
            "samples_per_second",
        ]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow(
                {
                    k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k))
                    for k in keys
                }
            )
        write_text(self.out / "metrics.csv", buf.getvalue())
        if self.writer is not None:
            row = self.history[-1]
            for k in ("train_loss", "test_loss"):
                self.writer.add_scalar(f"loss/{k.split('_')[0]}", row[k], row["epoch"])
            for k in ("train_accuracy", "test_accuracy"):
                self.writer.add_scalar(f"accuracy/{k.split('_')[0]}", row[k], row["epoch"])
            self.writer.add_scalar("lr", row["lr"], row["epoch"])
            self.writer.flush()

    def write_curves(self) -> None:
        if not (self.dist.main and self.history):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] for r in self.history]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(ep, [r["train_loss"] for r in self.history], "o-", label="train")
        a.plot(ep, [r["test_loss"] for r in self.history], "s-", label="test")
        b.plot(ep, [100 * r["train_accuracy"] for r in self.history], "o-", label="train")
        b.plot(ep, [100 * r["test_accuracy"] for r in self.history], "s-", label="test")
        if 0 < self.cfg.epochs < ep[-1] and self.cfg.backend == "slayer":
            for ax in (a, b):
                ax.axvline(self.cfg.epochs + 0.5, color="grey", ls="--", lw=1, label="fold -> QAT")
        a.set(xlabel="epoch", ylabel="loss", title="loss")
        b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        for ax in (a, b):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{self.cfg.dataset} {self.cfg.backend} {self.cfg.arch}")
        fig.tight_layout()
        with atomic_path(self.out / "curves.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict:
        started = time.perf_counter()
        self._setup()
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(self.out / "tb"), purge_step=self.completed + 1 if self.completed else None
            )
        self.log(
            f"train {cfg.dataset} ({len(self.train_set)} train / {len(self.test_set)} test, input {list(self.info.input_shape)}, "
            f"T={self.info.timesteps}) {cfg.backend} {cfg.arch} on {self.device}"
            + (f" x{self.dist.world} processes" if self.dist.enabled else "")
            + f": {cfg.epochs} float"
            + (f" + {cfg.qat_epochs} QAT" if cfg.backend == "slayer" else "")
            + " epoch(s)"
            + (f", resuming after epoch {self.completed}" if self.completed else "")
        )
        train_seconds = train_samples = 0.0
        interrupted_phase = (
            self.phase_of(self.completed) if self.completed < self.total_epochs else "done"
        )
        try:
            for epoch in range(self.completed, self.total_epochs):
                if self.stop_after is not None and epoch >= self.stop_after:
                    break
                phase = interrupted_phase = self.phase_of(epoch)
                if phase == "qat" and not is_folded(self.model):
                    self._fold()
                elif self.optimizer_phase != phase:
                    self._new_optimizer(phase)
                    self._wrap()
                lr = self.optimizer.param_groups[0]["lr"]
                t0 = time.perf_counter()
                row = self.train_epoch(epoch, phase)
                row.update(self.evaluate(phase))
                seconds = time.perf_counter() - t0
                train_seconds += row.pop("train_seconds")
                train_samples += row["train_samples"] * 1.0
                row.update(
                    epoch=epoch + 1,
                    phase=phase,
                    lr=lr,
                    seconds=seconds,
                    samples_per_second=row.pop("train_samples") / max(seconds, 1e-9),
                )
                self.history.append(row)
                self.completed = epoch + 1
                if phase == "float":
                    self.extras["float_test_accuracy"] = row["test_accuracy"]
                self.save(phase, self.completed)
                self.log(
                    f"epoch {epoch + 1}/{self.total_epochs} {phase:5s} loss {row['train_loss']:.4f} "
                    f"train {100 * row['train_accuracy']:.2f}% test {100 * row['test_accuracy']:.2f}% "
                    f"(loss {row['test_loss']:.4f}) lr {lr:.4g} {seconds:.1f} s"
                )
        except KeyboardInterrupt:
            self._on_interrupt(interrupted_phase)
            raise
        except NonFiniteLoss as e:
            good = self.out / CHECKPOINT
            where = (
                f"the last good checkpoint is {good} (epoch {self.completed})"
                if self.completed
                else "no epoch completed, so there is no checkpoint"
            )
            raise NonFiniteLoss(
                f"{e}: training stopped; {where}; try a lower --lr / --qat-lr"
            ) from None
        finally:
            if self.writer is not None:
                self.writer.close()
        self.write_curves()
        last = self.history[-1] if self.history else {}
        result = {
            "test_accuracy": last.get("test_accuracy"),
            "checkpoint": str(self.out / CHECKPOINT),
            "out": str(self.out),
            "epochs": self.completed,
            "complete": self.completed >= self.total_epochs,
            "seconds": round(time.perf_counter() - started, 2),
            "train_seconds_total": round(sum(r["seconds"] for r in self.history), 2),
            "backend": cfg.backend,
            "arch": cfg.arch,
            "dataset": cfg.dataset,
            "device": str(self.device),
            "samples_per_second": round(train_samples / train_seconds, 1)
            if train_seconds
            else None,
            **{k: v for k, v in self.extras.items()},
        }
        if self.dist.enabled:
            torch.distributed.barrier()
        return result

    def _project_bn_shifts(self) -> None:
        """Keep the biases folding will make within Loihi's range (SpikingGraph.project_bn_shifts).

        Under DDP every rank's running statistics differ after its own forward pass; rank 0's are
        used so that all ranks move their betas alike.
        """
        if self.dist.enabled:
            for bn in self.model.norms.values():
                torch.distributed.broadcast(bn.running_mean, 0)
                torch.distributed.broadcast(bn.running_var, 0)
        self.model.project_bn_shifts()

    def _fold(self) -> None:
        model = self.model
        if self.dist.enabled:  # BN running stats differ per rank after the last step: take rank 0's
            for b in model.buffers():
                torch.distributed.broadcast(b, 0)
        model.fold()
        model.to(self.device)
        self._new_optimizer("qat")
        self._wrap()
        ev = self.evaluate("qat")
        self.extras["folded_test_accuracy"] = ev["test_accuracy"]
        self.log(
            f"folded BatchNorm, 8-bit weights: test {100 * ev['test_accuracy']:.2f}% before QAT fine-tuning"
        )

    def _on_interrupt(self, phase: str) -> None:
        if not self.dist.main or not hasattr(self, "optimizer"):
            return
        path = self.out / INTERRUPTED
        try:
            save_checkpoint(path, self.payload(phase, self.completed, interrupted=True))
            saved = f"state saved to {path}"
        except Exception as e:  # noqa: BLE001 - report, the interrupt still wins
            saved = f"could not save {path} ({e})"
        self.write_curves()
        if self.completed:
            how = (
                f"resume from the last complete epoch ({self.completed}, {self.out / CHECKPOINT}) with: "
                f"i2e-neuro train --resume --out {self.out}"
            )
        else:
            how = (
                "no epoch had completed, so there is nothing to resume: run the same command again"
            )
        print(
            f"i2e-neuro train: interrupted in epoch {self.completed + 1} (step {self.step_in_epoch}); {saved}; {how}",
            file=sys.stderr,
            flush=True,
        )


def train(cfg: TrainConfig | None, out: str | Path, **kw) -> dict:
    """Run a training; see :class:`Trainer` for the keyword arguments."""
    return Trainer(cfg, out, **kw).run()


def default_out(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.dataset}-{cfg.backend}-{time.strftime('%Y%m%d-%H%M%S')}"


def result_json(result: dict) -> str:
    return json.dumps(result, sort_keys=False)
