"""Training: the QAT MS-ResNet on lava-dl slayer (float phase with BatchNorm, fold, QAT phase)
or the SpikingJelly float reference, on I2E events made inside the training step.

One run lives in one folder ``OUT``: ``checkpoint.pt`` (:mod:`~i2e_neuro.train.checkpoint`,
written atomically after every epoch), ``interrupted.pt`` after a Ctrl-C, and ``metrics.csv``,
``tb/``, ``curves.png`` (:mod:`~i2e_neuro.train.records`). Modules: :mod:`.config` (the
configuration and recipes), :mod:`.checkpoint`, :mod:`.records`, :mod:`.distributed`
(``torchrun``) and :mod:`.loop` (:class:`Trainer`, :func:`train`).
"""

from i2e_neuro.train.checkpoint import (
    CHECKPOINT,
    INTERRUPTED,
    CheckpointError,
    deploy_entry,
    load_checkpoint,
    load_init,
    save_checkpoint,
)
from i2e_neuro.train.config import (
    ARCHS,
    RECIPES,
    TRAIN_BACKENDS,
    NonFiniteLoss,
    TrainConfig,
    TrainError,
    default_out,
    resolve_config,
)
from i2e_neuro.train.loop import Trainer, build_model, train

__all__ = [
    "ARCHS",
    "TRAIN_BACKENDS",
    "CHECKPOINT",
    "INTERRUPTED",
    "RECIPES",
    "CheckpointError",
    "NonFiniteLoss",
    "TrainConfig",
    "TrainError",
    "Trainer",
    "build_model",
    "default_out",
    "deploy_entry",
    "load_checkpoint",
    "load_init",
    "resolve_config",
    "save_checkpoint",
    "train",
]
