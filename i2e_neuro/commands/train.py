"""``i2e-neuro train``: train a QAT MS-ResNet (lava-dl slayer) or the SpikingJelly reference on I2E events.

Images are converted by I2E on the training device inside every step (random equivalent
vectors in training, canonical ones in evaluation), after augmentation of the source image.
The slayer backend trains ``--epochs`` with float weights and BatchNorm, folds BatchNorm into
the weights and biases, and fine-tunes ``--qat-epochs`` with Loihi's 8-bit weights (QAT); its
checkpoint then carries a ``deploy`` entry for ``i2e-neuro export``.

Everything goes into ``--out``: checkpoint.pt (after every epoch), metrics.csv, tb/
(TensorBoard), curves.png, and interrupted.pt after a Ctrl-C. The last line printed is one
JSON object (test_accuracy, checkpoint, epochs, seconds, backend, arch, samples_per_second ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROG = "i2e-neuro train"

_EXAMPLES = """\
examples:
  i2e-neuro train                                   embedded digits, msresnet_tiny, QAT (a few
  minutes on a CPU)
  i2e-neuro train --backend spikingjelly            the float SpikingJelly reference on the same
  data
  i2e-neuro train --dataset cifar10 --root data     the paper's recipe: msresnet18, 128x128,
  baseline2
  i2e-neuro train --dataset cifar10-dvs --root dvs --init runs/cifar10/checkpoint.pt --qat-epochs 8
                                                    sim-to-real: fine-tune an I2E-CIFAR10 model on
                                                    real DVS
  i2e-neuro train --resume --out runs/digits-slayer-20260101-120000
  i2e-neuro train --dataset cifar10 --root data --arch msresnet18-l2 --target kapoho-point --require-fit
                                                    a Loihi 2 variant, refused before the first
                                                    epoch if it cannot fit Kapoho Point
  torchrun --nproc-per-node 4 -m i2e_neuro.cli train --dataset cifar10 --root data --out runs/c10

datasets (nothing is downloaded; --root DIR):
{layouts}

defaults per dataset (override any; all: SGD momentum 0.9, cosine to 5e-5, label smoothing 0.1):
{recipes}

exit status: 0 done; 1 the loss or the weights became NaN/inf (the last good checkpoint is
kept, never one of NaN weights); 2 bad
arguments, data or checkpoint; 130 interrupted (OUT/interrupted.pt saved; --resume continues).
"""

#: argument name -> TrainConfig field (the value None means "not given": the dataset default)
_CONFIG_ARGS = (
    "dataset",
    "root",
    "backend",
    "arch",
    "population",
    "epochs",
    "qat_epochs",
    "batch_size",
    "lr",
    "qat_lr",
    "min_lr",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "augment",
    "ratio",
    "timesteps",
    "size",
    "seed",
    "limit_train",
    "limit_test",
    "workers",
    "init",
    "config",
    "protocol",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from i2e_neuro.datasets import registry

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EXAMPLES.format(
        layouts=registry.layouts_text(), recipes=registry.recipes_text()
    )
    d = parser.add_argument_group("data")
    d.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"{', '.join(registry.REGISTRY)} (default digits)",
    )
    d.add_argument("--root", metavar="DIR", help="folder holding the dataset (all but digits)")
    d.add_argument(
        "--config",
        metavar="NAME",
        help="dataset i2e-hf: the official release's config under --root (I2E-CIFAR10, ...)",
    )
    d.add_argument(
        "--augment",
        metavar="KIND",
        help="none | baseline1 (flip) | baseline2 (RandomResizedCrop + flip + colour jitter), on the source image",
    )
    d.add_argument(
        "--ratio",
        type=float,
        help="I2E threshold ratio (default: per dataset, e.g. cifar 0.07, digits 0.10)",
    )
    d.add_argument(
        "--protocol",
        choices=["official", "legacy"],
        help="image preprocessing: official (the I2E release's bicubic resize and scaling; the "
        "default for cifar10, cifar100, mnist, fashion-mnist, imagefolder) or legacy (bilinear; "
        "digits)",
    )
    d.add_argument("--timesteps", type=int, metavar="T", help="timesteps (default 8)")
    d.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="image side in pixels before I2E (default: digits/mnist 32, cifar 128, imagefolder 224)",
    )
    d.add_argument(
        "--limit-train", type=int, metavar="N", help="use only the first N training samples"
    )
    d.add_argument("--limit-test", type=int, metavar="N", help="use only the first N test samples")
    d.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="DataLoader worker processes (default 0 for in-memory data, else 4)",
    )
    m = parser.add_argument_group("model and recipe")
    m.add_argument(
        "--backend",
        metavar="NAME",
        help="slayer (default: QAT for Loihi) or spikingjelly (the paper's float reference); default: --init's",
    )
    m.add_argument(
        "--arch",
        metavar="NAME",
        help="msresnet18, msresnet34, msresnet_tiny, or a Loihi 2 variant (msresnet18-l2w, -l2, "
        "-l2s8; msresnet34-l2w, -l2, -l2s8; docs/LOIHI2.md) (default: --init's, else tiny for "
        "digits, 18 otherwise)",
    )
    m.add_argument(
        "--population",
        type=int,
        metavar="N",
        help="readout neurons per class, whose spikes the host adds up (slayer; default: "
        "--init's, else 4)",
    )
    m.add_argument("--epochs", type=int, metavar="N", help="float epochs (phase 1)")
    m.add_argument(
        "--qat-epochs",
        type=int,
        metavar="N",
        help="quantization-aware epochs after folding (slayer)",
    )
    m.add_argument(
        "--batch-size", type=int, metavar="N", help="global batch size (split over processes)"
    )
    m.add_argument(
        "--lr", type=float, help="SGD learning rate of phase 1 (cosine decay to --min-lr)"
    )
    m.add_argument("--qat-lr", type=float, help="learning rate of the QAT phase (a fresh SGD)")
    m.add_argument("--min-lr", type=float, help="cosine floor (default 5e-5)")
    m.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    m.add_argument("--weight-decay", type=float, help="weight decay (conv / dense weights only)")
    m.add_argument("--label-smoothing", type=float, help="label smoothing (default 0.1)")
    m.add_argument("--seed", type=int, help="random seed (default 0)")
    m.add_argument(
        "--init",
        metavar="CKPT",
        help="start from another run's checkpoint, or an I2E release checkpoint (*.pth.tar, resnet18/34; docs/OFFICIAL.md); the classifier is replaced if the classes differ",
    )
    t = parser.add_argument_group("Loihi 2 target")
    t.add_argument(
        "--target",
        metavar="NAME",
        help="a named Loihi 2 system of hw_configs/ (oheo-gulch, kapoho-point, hala-point) or a chip "
        "(loihi2): print the network's cores, chips and whether it fits, before the first epoch",
    )
    t.add_argument(
        "--require-fit",
        action="store_true",
        help="with --target: refuse to train a network that cannot fit it (exit 2, naming the "
        "group and the limit)",
    )
    r = parser.add_argument_group("running")
    r.add_argument(
        "--out", metavar="DIR", help="output folder (default runs/<dataset>-<backend>-<time>)"
    )
    r.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint.pt"
    )
    r.add_argument(
        "--device",
        default="auto",
        metavar="DEV",
        help="auto (default: cuda if available), cpu or cuda",
    )
    r.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="no mixed precision on CUDA (default: float16 autocast in the float phase)",
    )
    r.add_argument(
        "--threads", type=int, default=2, metavar="N", help="torch CPU threads (default 2)"
    )
    r.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop after N epochs in total, resumably (for jobs with a time limit)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def image_folders(dataset: str | None, root: str | None) -> list[tuple[str, Path]]:
    """The folders an ``imagefolder`` dataset reads recursively (outputs must stay out)."""
    if dataset != "imagefolder" or root is None:
        return []
    return [(f"--root {root} ({sub}/)", Path(root) / sub) for sub in ("train", "val")]


def target_check(target: str | None, require: bool):
    """The ``before_training`` hook of ``--target``: print the fit estimate of the run's network
    (``export.resources.fit_report``) and, with ``require``, refuse one that does not fit.
    ``None`` without ``--target``. A bad target name is refused here, before any data is read."""
    if target is None:
        if require:
            raise_error("--require-fit needs --target NAME (e.g. --target oheo-gulch)")
        return None
    import os

    from export.resources import fit_report
    from i2e_neuro.energy.hw import HardwareConfigError, load_target

    try:
        system = load_target(target)
    except HardwareConfigError as e:
        raise_error(f"--target {e}")

    def check(spec) -> None:
        report = fit_report(spec, system)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"Loihi 2 estimate: {report.text()}", flush=True)
        if require and not report.fits:
            raise_error(
                f"--require-fit: {spec.name} at input {list(spec.input_shape)} cannot fit "
                f"{system.name}: " + "; ".join(report.reasons)
            )

    return check


def raise_error(text: str):
    from i2e_neuro.train import TrainError

    raise TrainError(text)


def run(args) -> int:
    import os
    from pathlib import Path

    from i2e_neuro.atomic import refuse_overwriting_inputs
    from i2e_neuro.errors import flag_wording
    from i2e_neuro.train import (
        NonFiniteLoss,
        TrainError,
        default_out,
        resolve_config,
        train,
    )

    given = {k: getattr(args, k, None) for k in _CONFIG_ARGS}
    try:
        if args.out:
            try:
                root = getattr(args, "root", None)
                refuse_overwriting_inputs(
                    [("--out", args.out), ("--out", Path(args.out) / "checkpoint.pt")],
                    [("--init", args.init)] + image_folders(getattr(args, "dataset", None), root),
                    [("--root", root)],
                )
            except ValueError as e:
                raise TrainError(str(e)) from None
        if args.threads is not None and args.threads < 1:
            raise TrainError(f"--threads {args.threads}: must be at least 1")
        if args.stop_after is not None and args.stop_after < 1:
            raise TrainError(
                f"--stop-after {args.stop_after}: must be >= 1 (the epochs to run before "
                "stopping; with 0 nothing would be trained or saved)"
            )
        if args.resume:
            if not args.out:
                raise TrainError("--resume needs --out DIR, the folder of the run to continue")
            ignored = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
            if ignored:
                print(
                    f"{PROG}: note: --resume continues with the run's stored settings; "
                    f"ignoring {' '.join(ignored)}",
                    file=sys.stderr,
                )
            cfg = None
        else:
            from i2e_neuro.train.checkpoint import init_config

            cfg = resolve_config(init_config(args.init) if args.init else None, **given)
            cfg.amp = bool(args.amp)
        if args.out:
            out = Path(args.out)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise TrainError("--out DIR is required when running several processes (torchrun)")
        else:
            out = default_out(cfg)
        check = target_check(getattr(args, "target", None), getattr(args, "require_fit", False))
        result = train(
            cfg,
            out,
            before_training=check,
            resume=args.resume,
            device=args.device,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            threads=args.threads,
        )
    except TrainError as e:
        print(f"{PROG}: error: {flag_wording(e)}", file=sys.stderr)
        return 2
    except NonFiniteLoss as e:
        print(f"{PROG}: error: {flag_wording(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run this command alone: ``python -m i2e_neuro.commands.train ...``."""
    from i2e_neuro.cli import run_command

    return run_command("train", argv)


if __name__ == "__main__":
    sys.exit(main())
