"""The training loop: :class:`Trainer` runs one training in one folder; :func:`train` is the
entry point.

A slayer run trains ``epochs`` with float weights and BatchNorm (phase ``float``), folds the
BatchNorm into the weights, and fine-tunes ``qat_epochs`` with Loihi's 8-bit weights (``qat``);
the SpikingJelly reference has the float phase only. Images become events by I2E on the training
device inside every step (random equivalent vectors in training, canonical ones in evaluation).

Determinism: every random stream of epoch ``e`` (shuffling, augmentation, I2E's random vectors)
is seeded from ``(seed, e)`` alone (:func:`~i2e_neuro.datasets.train_data.derive_seed`), and the
checkpoint holds everything else, so on the CPU a run resumed after any epoch ends with the
same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from i2e_neuro.datasets.train_data import (
    DataError,
    DataInfo,
    EpochSampler,
    build_datasets,
    derive_seed,
    make_loader,
)
from i2e_neuro.train.checkpoint import (
    CHECKPOINT,
    INTERRUPTED,
    RunLock,
    apply_init,
    check_resumed_data,
    is_folded,
    is_folded_state,
    load_init_checkpoint,
    load_run,
    make_payload,
    nonfinite_text,
    prepare_out,
    remove_created,
    resume_hint,
    save_checkpoint,
    set_rng_state,
)
from i2e_neuro.train.config import NonFiniteLoss, TrainConfig, TrainError
from i2e_neuro.train.distributed import Distributed
from i2e_neuro.train.records import Records, epoch_line, progress, run_banner, run_result


def build_model(cfg: TrainConfig, info: DataInfo, saved_spec: dict | None = None):
    """``(model, spec)``: the slayer QAT graph (spec: its NetSpec) or the SpikingJelly
    reference (spec None), initialised from ``cfg.seed``. ``saved_spec``: the topology a
    resumed run's checkpoint recorded, which wins over the architecture's current one (a run
    resumes with the network it started, whatever the architecture table says today)."""
    torch.manual_seed(cfg.seed)
    if cfg.backend == "slayer":
        from i2e_neuro.models.qat import NeuronConfig, SpikingGraph
        from i2e_neuro.models.spec import NetSpec, build_spec

        if saved_spec is not None:
            spec = NetSpec.from_dict(saved_spec)
        else:
            spec = build_spec(
                cfg.arch, info.input_shape, info.num_classes, info.timesteps, cfg.population
            )
        return SpikingGraph(spec, NeuronConfig()), spec
    from i2e_neuro.models.reference import build_reference

    return build_reference(cfg.arch, info.input_shape[0], info.num_classes), None


def compute_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy with label smoothing (a module-level function so that tests can replace it)."""
    return torch.nn.functional.cross_entropy(
        logits.float(), labels, label_smoothing=label_smoothing
    )


def make_optimizer(model, cfg: TrainConfig, phase: str, steps_per_epoch: int):
    """``(optimizer, scheduler)`` of a phase: SGD (weight decay on weights only) with a cosine
    schedule over the phase's steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = cfg.lr if phase == "float" else cfg.qat_lr
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=cfg.momentum)
    epochs = cfg.epochs if phase == "float" else cfg.qat_epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, epochs * steps_per_epoch), eta_min=min(cfg.min_lr, lr)
    )
    return optimizer, scheduler


#: training samples (in order, all processes together) on which the QAT phase chooses its model
SELECTION_SAMPLES = 4096


def make_loaders(cfg: TrainConfig, train_set, test_set, batch_size: int, dist, generator):
    """``(train_sampler, train_loader, test_sampler, test_loader, selection_loader)`` of this
    process's shard; the selection loader reads the first :data:`SELECTION_SAMPLES` training
    samples in order."""
    train_sampler = EpochSampler(len(train_set), cfg.seed, True, dist.rank, dist.world)
    test_sampler = EpochSampler(len(test_set), cfg.seed, False, dist.rank, dist.world)
    train_loader = make_loader(train_set, batch_size, train_sampler, cfg.workers, generator)
    test_loader = make_loader(test_set, batch_size, test_sampler, cfg.workers)
    first = torch.utils.data.Subset(train_set, range(min(len(train_set), SELECTION_SAMPLES)))
    selection_sampler = EpochSampler(len(first), cfg.seed, False, dist.rank, dist.world)
    selection_loader = make_loader(first, batch_size, selection_sampler, cfg.workers)
    return train_sampler, train_loader, test_sampler, test_loader, selection_loader


class Trainer:
    """One training run in ``out``; :meth:`run` returns the result dict (the command prints it
    as its last line).

    ``cfg``: the run's configuration (None with ``resume``: the checkpoint's); ``resume``:
    continue the run in ``out``; ``device``: auto, cpu or cuda; ``stop_after``: stop, resumably,
    after this many epochs in total; ``progress``: show progress within epochs; ``threads``:
    torch CPU threads; ``log``: where the log lines go (default: stdout).
    """

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
        before_training: Callable[[Any], None] | None = None,
    ) -> None:
        self.cfg, self.out, self.resume = cfg, Path(out), resume
        self.before_training = before_training
        self.device_arg, self.stop_after, self.threads = device, stop_after, threads
        self.progress = progress
        self.dist = Distributed.from_env()
        self._log = log or (lambda s: print(s, flush=True))
        self.records = Records(self.out)
        self.history: list[dict] = []
        self.extras: dict[str, Any] = {}
        #: the QAT phase's best model so far: {"epoch", "loss" (on the selection data), "model"}
        self.best: dict | None = None
        self.completed = 0
        self.step_in_epoch = 0

    def log(self, line: str) -> None:
        if self.dist.main:
            self._log(line)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        self.device = self.dist.setup_device(self.device_arg, self.threads)
        ckpt = load_run(self.out, self.resume)
        if ckpt is not None:
            self.cfg = TrainConfig.from_dict(ckpt["config"])
        cfg = self.cfg
        init = None
        if cfg.init and ckpt is None:
            init = load_init_checkpoint(cfg.init, cfg.backend, cfg.arch)
        try:
            self.train_set, self.test_set, self.info = build_datasets(cfg)
        except DataError as e:
            raise TrainError(str(e), *getattr(e, "params", ())) from e
        if ckpt is not None:
            check_resumed_data(ckpt, self.out / CHECKPOINT, self.info)
        self.model, self.spec = build_model(cfg, self.info, ckpt.get("spec") if ckpt else None)
        if self.before_training is not None:
            self.before_training(self.loihi_spec())  # e.g. the target check of `train --target`
        self.model.to(self.device)
        self.i2e = None
        if self.info.kind == "images":
            from i2e_neuro.i2e.conversion import I2E

            self.i2e = I2E(cfg.ratio, self.info.timesteps, cfg.order)
        self.batch_size = max(1, math.ceil(cfg.batch_size / self.dist.world))
        self.loader_generator = torch.Generator()
        (
            self.train_sampler,
            self.train_loader,
            self.test_sampler,
            self.test_loader,
            self.selection_loader,
        ) = make_loaders(
            cfg, self.train_set, self.test_set, self.batch_size, self.dist, self.loader_generator
        )
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.scaler = torch.cuda.amp.GradScaler(enabled=self.amp)
        if init is not None:
            apply_init(self.model, init, cfg, len(self.info.classes), self.log)
        if ckpt is not None:
            if is_folded_state(ckpt["model"]):
                self.model.fold()
            self.model.load_state_dict(ckpt["model"])
            self.completed = int(ckpt["epoch"])
            self.history = list(ckpt.get("history", []))
            self.extras = dict(ckpt.get("extras", {}))
            self.best = ckpt.get("qat_best")
            if self.best is not None and "model" not in self.best:  # the saved model is the best
                self.best["model"] = {k: v.clone() for k, v in ckpt["model"].items()}
        self.total_epochs = cfg.total_epochs
        # the optimizer of the phase the model is in (the checkpoint's); the loop switches phases
        self._new_optimizer("qat" if is_folded(self.model) else "float")
        if ckpt is not None and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler") and self.amp:
                self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt is not None and "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.ddp = self.dist.wrap(self.model, self.device)

    def loihi_spec(self):
        """The topology this run's architecture has on Loihi (the slayer model's own; for the
        SpikingJelly reference, the same architecture's graph at the data's shape)."""
        if self.spec is not None:
            return self.spec
        from i2e_neuro.models.spec import build_spec

        info = self.info
        return build_spec(
            self.cfg.arch, info.input_shape, info.num_classes, info.timesteps, self.cfg.population
        )

    def phase_of(self, epoch: int) -> str:
        return "float" if epoch < self.cfg.epochs else "qat"

    def _new_optimizer(self, phase: str) -> None:
        self.optimizer, self.scheduler = make_optimizer(
            self.model, self.cfg, phase, len(self.train_loader)
        )
        self.optimizer_phase = phase

    # ------------------------------------------------------------------ steps
    def to_events(self, x: torch.Tensor) -> torch.Tensor:
        """A batch from the loader as time-first events on the device (I2E for images)."""
        x = x.to(self.device, non_blocking=True)
        if self.i2e is not None:
            if self.cfg.protocol == "official" and x.dtype == torch.uint8:
                from i2e_neuro.i2e.images import to_unit_range

                x = to_unit_range(x, "official")  # scaled as the I2E release scales
            return self.i2e(x)
        from i2e_neuro.layouts import batch_first_to_time_first

        return batch_first_to_time_first(x)

    def _autocast(self, phase: str):
        if self.amp and phase == "float":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def train_epoch(self, epoch: int, phase: str) -> dict:
        cfg, rank = self.cfg, self.dist.rank
        self.ddp.train()
        self.train_sampler.set_epoch(epoch)
        torch.manual_seed(derive_seed(cfg.seed, epoch, f"augment/{rank}"))
        self.loader_generator.manual_seed(derive_seed(cfg.seed, epoch, f"workers/{rank}"))
        if self.i2e is not None:
            self.i2e.train()
            self.i2e.generator = torch.Generator().manual_seed(
                derive_seed(cfg.seed, epoch, f"i2e/{rank}")
            )
        desc = f"epoch {epoch + 1}/{self.total_epochs} {phase}"
        bar = progress(self.train_loader, desc, self.progress and self.dist.main)
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
            batch_loss, batch_correct, batch_n = self.dist.sum(
                [loss.item() * n, float((logits.argmax(1) == y).sum()), n], self.device
            )
            if not math.isfinite(batch_loss):
                raise NonFiniteLoss(
                    f"loss is {'nan' if math.isnan(batch_loss) else 'inf'} at epoch {epoch + 1} "
                    f"step {self.step_in_epoch + 1} (lr {self.optimizer.param_groups[0]['lr']:.3g})"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if phase == "float" and hasattr(self.model, "project_bn_shifts"):
                self._project_bn_shifts()
            if phase == "qat" and hasattr(self.model, "project_state_range"):
                self.model.project_state_range()  # 24-bit states by construction
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
        return {
            "train_loss": loss_sum / max(count, 1),
            "train_accuracy": correct / max(count, 1),
            "train_seconds": time.perf_counter() - start,
            "train_samples": count,
        }

    @torch.no_grad()
    def evaluate(self, phase: str, loader=None) -> dict:
        """Test loss and accuracy (of ``loader``'s data, default the test set); each process takes
        every world-th sample (no DDP collectives)."""
        self.model.eval()
        if self.i2e is not None:
            self.i2e.eval()
        loss_sum = correct = count = 0.0
        for x, y in loader or self.test_loader:
            y = y.to(self.device, non_blocking=True)
            with self._autocast(phase):
                logits = self.model(self.to_events(x))
            loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            loss_sum += float(loss)
            correct += float((logits.argmax(1) == y).sum())
            count += float(y.numel())
        loss_sum, correct, count = self.dist.sum([loss_sum, correct, count], self.device)
        return {"test_loss": loss_sum / max(count, 1), "test_accuracy": correct / max(count, 1)}

    def _project_bn_shifts(self) -> None:
        """Keep the biases folding will make within Loihi's range (SpikingGraph.project_bn_shifts);
        under DDP with rank 0's running statistics, so that all ranks move their betas alike."""
        self.dist.broadcast(
            t for bn in self.model.norms.values() for t in (bn.running_mean, bn.running_var)
        )
        self.model.project_bn_shifts()

    def _fold(self) -> None:
        """Fold BatchNorm into 8-bit weights (rank 0's statistics) and start the QAT phase."""
        self.dist.broadcast(self.model.buffers())
        self.check_weights("before folding BatchNorm")
        self.model.fold()
        self.model.to(self.device)
        self._new_optimizer("qat")
        self.ddp = self.dist.wrap(self.model, self.device)
        ev = self.evaluate("qat")
        self.extras["folded_test_accuracy"] = ev["test_accuracy"]
        self.log(
            f"folded BatchNorm, 8-bit weights: test {100 * ev['test_accuracy']:.2f}% before QAT "
            "fine-tuning"
        )
        self.extras["folded_selection_loss"] = self.consider_best(self.completed)

    def consider_best(self, epoch: int) -> float:
        """The QAT phase's model choice: the loss on the selection data (the first training
        samples, eval mode: never the test data); the model after ``epoch`` epochs is kept as
        the best if its loss is lower than the best's so far (the folded model's at first).
        Returns the loss."""
        loss = self.evaluate("qat", self.selection_loader)["test_loss"]
        if self.best is None or loss < self.best["loss"]:
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": epoch, "loss": loss, "model": state}
        return loss

    def keep_best(self) -> None:
        """End of the QAT phase: go back to the best model if the last is not it, so the QAT
        phase never ends worse than the folded model on the selection data."""
        best = self.best
        if best is None or best["epoch"] == self.completed:
            return
        self.model.load_state_dict(best["model"])
        ev = self.evaluate("qat")
        what = "the folded model" if best["epoch"] == self.cfg.epochs else f"epoch {best['epoch']}"
        self.log(
            f"QAT: kept {what} (loss {best['loss']:.4f} on the first training samples, below the "
            f"last epoch's): test {100 * ev['test_accuracy']:.2f}%"
        )
        self.extras.update(kept_epoch=best["epoch"], kept_test_accuracy=ev["test_accuracy"])
        self.best = {**best, "epoch": self.completed}

    @torch.no_grad()
    def check_states(self) -> bool:
        """Measure each group's largest ``|u|`` and ``|v|`` on the training data (canonical I2E
        vectors) and its data-free bound (``SpikingGraph.state_bounds``), print both against
        Loihi 2's 24-bit limit, and record them in ``extras``; True when every group is in
        range by construction (its bound below the limit), the condition to call the run
        deployable. Under DDP the peaks are this process's shard's."""
        from i2e_neuro.models.qat import STATE_LIMIT

        self.model.eval()
        if self.i2e is not None:
            self.i2e.eval()
        peaks: dict[str, dict[str, int]] = {}
        for x, _ in self.train_loader:
            self.model(self.to_events(x), states=peaks)
        bounds = self.model.state_bounds()
        self.log(
            f"24-bit state check (Loihi 2: |u|, |v| < {STATE_LIMIT}), measured on the "
            "training data / bound for any input:"
        )
        ok = True
        for g, b in bounds.items():
            p = peaks.get(g, {"u": 0, "v": 0})
            fits = max(b["u"], b["v"]) < STATE_LIMIT
            ok = ok and fits and max(p["u"], p["v"]) < STATE_LIMIT
            self.log(
                f"  {g:<12} max|u| {p['u']:>9,} / {b['u']:>10,}   max|v| {p['v']:>9,} / "
                f"{b['v']:>10,}   {'in range' if fits else 'CAN OVERFLOW'}"
            )
        self.extras.update(state_peaks=peaks, state_bounds=bounds, deployable=ok)
        if not ok:
            self.log(
                "NOT DEPLOYABLE: a group can leave Loihi 2's 24-bit state range (u wraps, v "
                "clips); the network on the chip would differ from the trained one"
            )
        return ok

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Claim ``out`` (checked writable and locked before any data is loaded), then train."""
        lock, created = None, []
        if self.dist.main:
            if self.resume and not (self.out / CHECKPOINT).is_file():
                load_run(self.out, True)  # the error naming the folder; nothing is created
            created = prepare_out(self.out)
            try:
                lock = RunLock(self.out)
            except BaseException:
                remove_created(created)
                raise
        try:
            return self._run()
        except BaseException:
            if lock is not None:
                lock.release()
                lock = None
            remove_created(created)  # refused before anything was written: no empty folders
            raise
        finally:
            if lock is not None:
                lock.release()

    def _run(self) -> dict:
        started = time.perf_counter()
        self._setup()
        cfg = self.cfg
        if self.dist.main:
            self.records.open(self.completed)
        self.log(
            run_banner(
                cfg,
                self.info,
                self.train_set,
                self.test_set,
                self.device,
                self.dist,
                self.completed,
            )
        )
        train_seconds = train_samples = 0.0
        phase = self.phase_of(self.completed) if self.completed < self.total_epochs else "done"
        try:
            for epoch in range(self.completed, self.total_epochs):
                if self.stop_after is not None and epoch >= self.stop_after:
                    break
                phase = self.phase_of(epoch)
                if phase == "qat" and not is_folded(self.model):
                    self._fold()
                elif self.optimizer_phase != phase:
                    self._new_optimizer(phase)
                    self.ddp = self.dist.wrap(self.model, self.device)
                lr = self.optimizer.param_groups[0]["lr"]
                t0 = time.perf_counter()
                row = self.train_epoch(epoch, phase)
                self.check_weights(f"after epoch {epoch + 1}")
                row.update(self.evaluate(phase))
                if phase == "qat":
                    row["selection_loss"] = self.consider_best(epoch + 1)
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
                self.save(phase)
                self.log(epoch_line(row, self.total_epochs))
        except KeyboardInterrupt:
            self._on_interrupt(phase)
            raise
        except NonFiniteLoss as e:
            where = (
                f"the last good checkpoint is {self.out / CHECKPOINT} (epoch {self.completed})"
                if self.completed
                else "no epoch completed, so there is no checkpoint"
            )
            raise NonFiniteLoss(
                f"{e}: training stopped; {where}; try a lower lr / qat_lr", "lr", "qat_lr"
            ) from None
        finally:
            self.records.close()
        if (
            self.completed >= self.total_epochs
            and is_folded(self.model)
            and "deployable" not in self.extras
        ):
            self.keep_best()
            self.check_states()
            self.save(phase)
        if self.dist.main:
            self.records.curves(self.history, cfg)
        result = run_result(self, time.perf_counter() - started, train_seconds, train_samples)
        self.dist.barrier()
        return result

    def check_weights(self, when: str) -> None:
        """:class:`NonFiniteLoss` when a weight of the model is NaN or inf (a loss can stay finite
        while the weights diverge: no readout spikes, the loss sits at log(classes))."""
        text = nonfinite_text(self.model.state_dict())
        if text:
            raise NonFiniteLoss(f"the weights diverged {when}: {text}")

    def save(self, phase: str) -> None:
        """Checkpoint and metrics after ``self.completed`` epochs (main process; all wait).
        Never a checkpoint of non-finite weights: those are refused, the last good one kept."""
        self.check_weights(f"at epoch {self.completed}")
        if self.dist.main:
            save_checkpoint(self.out / CHECKPOINT, make_payload(self, phase, self.completed))
            # a newer epoch than any state saved by a Ctrl-C: that state is superseded
            (self.out / INTERRUPTED).unlink(missing_ok=True)
            self.records.write(self.history)
        self.dist.barrier()

    def _on_interrupt(self, phase: str) -> None:
        if not self.dist.main or not hasattr(self, "optimizer"):
            return
        path = self.out / INTERRUPTED
        try:
            if nonfinite_text(self.model.state_dict()):
                raise ValueError("the weights hold NaN or inf: not saved")
            payload = make_payload(self, phase, self.completed, True, self.step_in_epoch)
            save_checkpoint(path, payload)
            saved = f"state saved to {path}"
        except Exception as e:  # noqa: BLE001 - report, the interrupt still wins
            saved = f"could not save {path} ({e})"
        self.records.curves(self.history, self.cfg)
        print(
            f"i2e-neuro train: interrupted in epoch {self.completed + 1} (step "
            f"{self.step_in_epoch}); {saved}; {resume_hint(self.out, self.completed)}",
            file=sys.stderr,
            flush=True,
        )


def train(cfg: TrainConfig | None, out: str | Path, **kw) -> dict:
    """Run a training in ``out``; the keyword arguments are :class:`Trainer`'s."""
    return Trainer(cfg, out, **kw).run()
