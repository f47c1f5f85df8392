"""The checkpoint of a training run: its format, safe reading and atomic writing, ``init``
loading and the ``deploy`` entry the exporter reads.

A checkpoint is a dict of tensors and plain Python values (read with
``torch.load(path, weights_only=True)``): ``format``, ``version``, ``epoch``, ``phase``,
``total_epochs``, ``complete``, ``interrupted``, ``config`` (a plain dict), ``data``, ``model``,
``optimizer``, ``scheduler``, ``scaler``, ``history``, ``extras``, ``rng``, ``classes``; a slayer
model adds ``spec`` and, once folded, ``deploy`` (the integers and parameters for export).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from i2e_neuro.atomic import write_bytes
from i2e_neuro.datasets.train_data import DataInfo
from i2e_neuro.integrity import DamagedFile, check_torch_file, torch_error_text
from i2e_neuro.train.config import TrainError

CHECKPOINT = "checkpoint.pt"
INTERRUPTED = "interrupted.pt"
#: lock file of a running training (see :func:`claim_run`)
RUN_LOCK = ".train.lock"
CHECKPOINT_FORMAT = "i2e-neuro-train"
CHECKPOINT_VERSION = 1


class CheckpointError(TrainError):
    """A checkpoint that is missing, unreadable or not ours; the message names the file."""


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + rename); :class:`CheckpointError`
    naming the file when it cannot be written (disk full), the earlier checkpoint intact."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)  # in memory: a full disk is then a plain OSError from write_bytes
    try:
        write_bytes(path, buf.getbuffer())
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise CheckpointError(f"checkpoint {path}: cannot write it ({reason})") from e
    return path


def nonfinite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [
        name
        for name, t in state.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())
    ]


def nonfinite_text(state: dict) -> str | None:
    """``"8 of 57 tensors hold NaN or inf (first: blocks.0.weight)"``, or None when all are finite."""
    bad = nonfinite_tensors(state)
    if not bad:
        return None
    total = sum(isinstance(t, torch.Tensor) and t.is_floating_point() for t in state.values())
    return f"{len(bad)} of {total} weight tensors hold NaN or inf (first: {bad[0]})"


def check_finite_checkpoint(ckpt: dict, what: str, path, *params: str) -> None:
    """A checkpoint whose model holds NaN or inf cannot be continued or started from."""
    text = nonfinite_text(ckpt["model"])
    if text:
        raise CheckpointError(
            f"{what} {path}: {text}; a diverged run cannot be continued or trained from",
            *params,
        )


def prepare_out(out: Path) -> list[Path]:
    """Check, before any data is loaded, that the run folder ``out`` can be written: it is
    created if missing; a file there, or a folder that cannot be written (read-only mount, no
    permission), is a :class:`TrainError` naming ``out``. Returns the folders it created,
    deepest first (a refused run removes them again: :func:`remove_created`)."""
    if out.exists() and not out.is_dir():
        raise TrainError(f"out {out}: is a file, not a folder; choose another out", "out")
    created = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_created(created)
        raise TrainError(
            f"out {out}: cannot create this folder ({e.strerror or e}); choose another out",
            "out",
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise TrainError(f"out {out}: cannot write in this folder; choose another out", "out")
    return created


def remove_created(created: list[Path]) -> None:
    """Remove the folders :func:`prepare_out` created, where they are still empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


class RunLock:
    """Hold ``out/.train.lock`` (an exclusive ``flock``) while a training runs in ``out``, so
    that a second ``train`` into the same folder is refused at once, naming the first one's
    pid, instead of both writing the same checkpoint. Released (and the file removed) by
    :meth:`release`; the kernel releases it whatever signal ends the process."""

    def __init__(self, out: Path) -> None:
        import fcntl

        self.path = out / RUN_LOCK
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise TrainError(
                    f"out {out}: cannot write in this folder ({e.strerror or e}); choose "
                    "another out",
                    "out",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise TrainError(
                    f"out {out}: another i2e-neuro train (pid {holder}) is running into this "
                    "folder; wait for it to end, or choose another out",
                    "out",
                ) from None
            try:  # the file we locked must still be the one at the path (a releaser unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def load_checkpoint(path: str | Path, what: str = "checkpoint", param: bool = False) -> dict:
    """Read a training checkpoint with ``weights_only=True``; :class:`CheckpointError` naming
    the file. ``what`` starts the messages; ``param``: ``what`` is a parameter name (``init``)."""
    path = Path(path)
    params = (what,) if param else ()
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file", *params)
    try:
        check_torch_file(path)
    except DamagedFile as e:
        raise CheckpointError(f"{what} {e}", *params) from None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        msg = torch_error_text(e)
        raise CheckpointError(f"{what} {path}: unreadable or corrupt ({msg})", *params) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{what} {path}: not an i2e-neuro training checkpoint", *params)
    if int(ckpt.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{what} {path}: written by a newer i2e-neuro (version {ckpt.get('version')})",
            *params,
        )
    for key in ("model", "config", "epoch"):
        if key not in ckpt:
            raise CheckpointError(f"{what} {path}: incomplete (no {key!r})", *params)
    return ckpt


def load_run(out: Path, resume: bool) -> dict | None:
    """The checkpoint of the run in ``out`` to resume (None when starting afresh); errors when
    resuming finds no run, or starting afresh would overwrite one."""
    path = out / CHECKPOINT
    if resume:
        if not path.is_file():
            raise CheckpointError(
                f"resume: no checkpoint {path} (give the out folder of the run to continue)",
                "resume",
                "out",
            )
        ckpt = load_checkpoint(path, "resume", param=True)
        check_finite_checkpoint(ckpt, "resume", path, "resume")
        return ckpt
    if path.exists():
        raise TrainError(
            f"out {out}: already holds a run ({CHECKPOINT}); add resume to continue it, "
            "or choose another out",
            "out",
            "resume",
        )
    return None


def _release_checkpoint(path: str | Path, error: CheckpointError) -> dict:
    """The I2E release's checkpoint at ``path`` (:mod:`i2e_neuro.models.official`), or
    ``error`` (ours, naming the file) if it is not one either."""
    from i2e_neuro.models import official

    try:
        return official.read_checkpoint(path)
    except official.OfficialCheckpointError as e:
        if "not an I2E release checkpoint" in str(e):
            raise CheckpointError(
                f"{error} (nor an I2E release checkpoint: no 'state_dict')", *error.params
            ) from None
        why = str(e).removeprefix(f"{path}: ")
        raise CheckpointError(
            f"{error}; read as an I2E release checkpoint: {why}", *error.params
        ) from None


def init_config(path: str | Path) -> dict:
    """The config an ``init`` checkpoint brings (backend, arch, population): ours, or for an I2E
    release checkpoint its architecture (and its one readout neuron per class)."""
    try:
        config = dict(load_checkpoint(path, "init", param=True)["config"])
    except CheckpointError as e:
        if "not an i2e-neuro training checkpoint" not in str(e):
            raise
        return {"arch": _release_checkpoint(path, e)["arch"], "population": 1}
    config.setdefault("population", 1)  # a run from before readout populations had one neuron
    return config


def load_init_checkpoint(path: str, backend: str, arch: str) -> dict:
    """The ``init`` checkpoint, checked to hold a model of this backend and architecture. An I2E
    release checkpoint (``*.pth.tar``) gives ``{"official": ..., "config", "model": None}``:
    its weights go into either backend (:func:`apply_init`)."""
    try:
        init = load_checkpoint(path, "init", param=True)
        check_finite_checkpoint(init, "init", path, "init")
    except CheckpointError as e:
        if "not an i2e-neuro training checkpoint" not in str(e):
            raise
        release = _release_checkpoint(path, e)
        if release["arch"] != arch:
            raise CheckpointError(
                f"init {path}: the release's {release['arch']}; this run uses arch {arch}",
                "init",
                "arch",
            ) from None
        return {"official": release, "config": {"backend": backend, "arch": arch}, "model": None}
    init_cfg = init["config"]
    if init_cfg.get("backend") != backend:
        raise CheckpointError(
            f"init {path}: a {init_cfg.get('backend')} model; this run trains backend {backend}",
            "init",
            "backend",
        )
    if init_cfg.get("arch") != arch:
        raise CheckpointError(
            f"init {path}: architecture {init_cfg.get('arch')}; this run uses arch {arch}",
            "init",
            "arch",
        )
    return init


def check_resumed_data(ckpt: dict, path: Path, info: DataInfo) -> None:
    """The data of a resumed run must still give the input shape and classes it started with."""
    data = ckpt.get("data", {})
    if data.get("input_shape") not in (None, list(info.input_shape)):
        raise TrainError(
            f"resume {path}: trained on input {data['input_shape']}, the data now gives "
            f"{list(info.input_shape)}",
            "resume",
        )
    if data.get("classes") not in (None, list(info.classes)):
        raise TrainError(
            f"resume {path}: the dataset's classes changed since the run started", "resume"
        )


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def is_folded(model) -> bool:
    return bool(getattr(model, "folded", torch.tensor(False)))


def is_folded_state(state: dict) -> bool:
    """Whether a saved slayer state dict is of a folded (QAT) model."""
    return bool(state.get("folded", torch.tensor(False)))


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
                f"init {path}: has no parameter {k!r} (another architecture or backend?)", "init"
            )
        if tuple(state[k].shape) != tuple(v.shape):
            if k in head:
                replaced.append(k)
                continue
            raise CheckpointError(
                f"init {path}: parameter {k!r} has shape {tuple(state[k].shape)}, this model "
                f"needs {tuple(v.shape)}",
                "init",
            )
        load[k] = state[k]
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(
            f"init {path}: parameter {extra[0]!r} does not exist in this model (another "
            "architecture?)",
            "init",
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


def apply_init(model, init: dict, cfg, num_classes: int, log: Callable[[str], None]) -> None:
    """Start ``model`` from the ``init`` checkpoint's weights; a folded (QAT) one folds the model
    and skips the float phase (``cfg.epochs`` becomes 0). An I2E release checkpoint goes into
    the SpikingJelly reference name for name, into the slayer graph by
    :func:`~i2e_neuro.models.official.graph_state`."""
    if init.get("official") is not None:
        from i2e_neuro.models import official

        release = init["official"]
        state = official.reference_state(release["state_dict"], release["arch"], cfg.init)
        own = model.state_dict()
        if hasattr(model, "spec"):
            state = official.graph_state(state, model)
        replaced = load_init(model, {"model": {**own, **state}}, cfg.init, cfg.backend)
        log(
            f"initialised from the I2E release checkpoint {cfg.init} ({release['arch']}, epoch "
            f"{release['epoch']}, best_acc1 {release['best_acc1']})"
            + (f" (classifier replaced: {num_classes} classes)" if replaced else "")
        )
        return
    if init["config"].get("backend") == "slayer" and is_folded_state(init["model"]):
        model.fold()
        if cfg.epochs:
            log(
                f"the init checkpoint {cfg.init} is already folded (QAT): skipping the "
                f"{cfg.epochs} float epoch(s)"
            )
        cfg.epochs = 0
    replaced = load_init(model, init, cfg.init, cfg.backend)
    log(
        f"initialised from {cfg.init}"
        + (f" (classifier replaced: {num_classes} classes)" if replaced else "")
    )


def deploy_entry(model, info: DataInfo) -> dict:
    """The checkpoint's ``deploy`` entry (:class:`~i2e_neuro.models.deploy.DeployRecord`)."""
    i2e = {
        "ratio": info.ratio,
        "timesteps": int(info.timesteps),
        "order": info.order,
        "source": info.source,
    }
    return model.deploy_record(i2e=i2e, classes=list(info.classes)).to_dict()


def make_payload(trainer, phase: str, epoch: int, interrupted: bool = False, step: int = 0) -> dict:
    """The checkpoint of ``trainer`` (a :class:`~i2e_neuro.train.loop.Trainer`) after ``epoch``."""
    model = trainer.model
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "phase": phase,
        "total_epochs": int(trainer.total_epochs),
        "complete": (not interrupted) and epoch >= trainer.total_epochs,
        "interrupted": interrupted,
        "config": trainer.cfg.to_dict(),
        "data": trainer.info.to_dict(),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "history": list(trainer.history),
        "extras": dict(trainer.extras),
        "rng": rng_state(),
        "classes": list(trainer.info.classes),
    }
    if interrupted:
        payload["step"] = int(step)
    best = getattr(trainer, "best", None)
    if best is not None:  # the QAT phase's best model (its weights only if not the saved ones)
        payload["qat_best"] = {k: v for k, v in best.items() if k != "model"}
        if interrupted or best["epoch"] != int(epoch):
            payload["qat_best"]["model"] = best["model"]
    if trainer.spec is not None:
        payload["spec"] = trainer.spec.to_dict()
        if is_folded(model):
            payload["deploy"] = deploy_entry(model, trainer.info)
    return payload


def resume_hint(out: Path, completed: int) -> str:
    """How to continue a run stopped after ``completed`` epochs."""
    if completed:
        return (
            f"resume from the last complete epoch ({completed}, {out / CHECKPOINT}) with: "
            f"i2e-neuro train --resume --out {out}"
        )
    return "no epoch had completed, so there is nothing to resume: run the same command again"
