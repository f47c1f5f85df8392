"""What a run records besides its checkpoint: ``metrics.csv``, TensorBoard scalars in ``tb/``,
``curves.png``, and the progress shown while an epoch runs."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from i2e_neuro.atomic import atomic_path, write_text
from i2e_neuro.train.checkpoint import CHECKPOINT

METRICS = "metrics.csv"
METRIC_KEYS = (
    "epoch",
    "phase",
    "lr",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "seconds",
    "samples_per_second",
)


class Records:
    """The metric files of the run in ``out`` (written by the main process only)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.writer = None

    def open(self, completed: int) -> None:
        """Create ``out`` and open TensorBoard (dropping any steps after ``completed``)."""
        self.out.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(self.out / "tb"), purge_step=completed + 1 if completed else None
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def write(self, history: list[dict]) -> None:
        """Rewrite ``metrics.csv`` from ``history``; add its last row to TensorBoard."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRIC_KEYS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in history:
            w.writerow(
                {
                    k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k))
                    for k in METRIC_KEYS
                }
            )
        write_text(self.out / METRICS, buf.getvalue())
        if self.writer is not None:
            row = history[-1]
            for k in ("train_loss", "test_loss"):
                self.writer.add_scalar(f"loss/{k.split('_')[0]}", row[k], row["epoch"])
            for k in ("train_accuracy", "test_accuracy"):
                self.writer.add_scalar(f"accuracy/{k.split('_')[0]}", row[k], row["epoch"])
            self.writer.add_scalar("lr", row["lr"], row["epoch"])
            self.writer.flush()

    def curves(self, history: list[dict], cfg) -> None:
        """``curves.png``: loss and accuracy per epoch, the fold marked for a slayer run."""
        if not history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] for r in history]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(ep, [r["train_loss"] for r in history], "o-", label="train")
        a.plot(ep, [r["test_loss"] for r in history], "s-", label="test")
        b.plot(ep, [100 * r["train_accuracy"] for r in history], "o-", label="train")
        b.plot(ep, [100 * r["test_accuracy"] for r in history], "s-", label="test")
        if 0 < cfg.epochs < ep[-1] and cfg.backend == "slayer":
            for ax in (a, b):
                ax.axvline(cfg.epochs + 0.5, color="grey", ls="--", lw=1, label="fold -> QAT")
        a.set(xlabel="epoch", ylabel="loss", title="loss")
        b.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        for ax in (a, b):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{cfg.dataset} {cfg.backend} {cfg.arch}")
        fig.tight_layout()
        with atomic_path(self.out / "curves.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)


def epoch_line(row: dict, total: int) -> str:
    """One log line for a finished epoch."""
    return (
        f"epoch {row['epoch']}/{total} {row['phase']:5s} loss {row['train_loss']:.4f} "
        f"train {100 * row['train_accuracy']:.2f}% test {100 * row['test_accuracy']:.2f}% "
        f"(loss {row['test_loss']:.4f}) lr {row['lr']:.4g} {row['seconds']:.1f} s"
    )


def progress(iterable, desc: str, enabled: bool):
    """A tqdm bar over ``iterable`` on stderr, shown only when ``enabled`` and stderr is a
    terminal (in a log file the per-epoch lines are the progress)."""
    from tqdm import tqdm

    return tqdm(
        iterable,
        desc=desc,
        unit="batch",
        leave=False,
        disable=not (enabled and getattr(sys.stderr, "isatty", lambda: False)()),
        file=sys.stderr,
        dynamic_ncols=True,
    )


def run_banner(cfg, info, train_set, test_set, device, dist, completed: int) -> str:
    """The first log line of a run: data, model, device and epochs."""
    return (
        f"train {cfg.dataset} ({len(train_set)} train / {len(test_set)} test, "
        f"input {list(info.input_shape)}, T={info.timesteps}) {cfg.backend} {cfg.arch} on "
        f"{device}"
        + (f" x{dist.world} processes" if dist.enabled else "")
        + f": {cfg.epochs} float"
        + (f" + {cfg.qat_epochs} QAT" if cfg.backend == "slayer" else "")
        + " epoch(s)"
        + (f", resuming after epoch {completed}" if completed else "")
    )


def run_result(trainer, seconds: float, train_seconds: float, train_samples: float) -> dict:
    """The result of a run (a :class:`~i2e_neuro.train.loop.Trainer`), printed as JSON."""
    history, cfg = trainer.history, trainer.cfg
    last = history[-1] if history else {}
    return {
        "test_accuracy": trainer.extras.get("kept_test_accuracy", last.get("test_accuracy")),
        "checkpoint": str(trainer.out / CHECKPOINT)
        if (trainer.out / CHECKPOINT).is_file()
        else None,
        "out": str(trainer.out),
        "epochs": trainer.completed,
        "complete": trainer.completed >= trainer.total_epochs,
        "seconds": round(seconds, 2),
        "train_seconds_total": round(sum(r["seconds"] for r in history), 2),
        "backend": cfg.backend,
        "arch": cfg.arch,
        "dataset": cfg.dataset,
        "device": str(trainer.device),
        "samples_per_second": round(train_samples / train_seconds, 1) if train_seconds else None,
        **trainer.extras,
    }
