"""``i2e-neuro convert``: images, folders or datasets -> I2E event files plus an ``index.json``
(the command line of :mod:`i2e_neuro.datasets.converter`).

Datasets are written in chunks ``chunk_00000.npz`` ... of ``--chunk-size`` samples, each in the
canonical layout ``[T, B, 2, H, W]`` with the labels; loose image files give one file per image,
named after the image's path relative to the folder given (``photos/cats/a.jpg`` given as
``photos`` -> ``OUT/cats/a.npz``). Every file is written under a temporary name and renamed when
complete, so a run can be stopped at any moment and started again: outputs that are already
there and were made with the same parameters are skipped. ``index.json`` lists every output
with its sample names, labels, shape and event counts, and the conversion parameters.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from i2e_neuro.shards import accept_negative_values, parse_shard

_EXAMPLES = """\
examples:
  i2e-neuro convert photos/ -o events/photos                 one .npz per image, ratio 0.12
  i2e-neuro convert --dataset digits -o events/digits        embedded scikit-learn digits, 32x32
  i2e-neuro convert --dataset cifar10 --root data --split test --size 128 128 -o events/cifar10-test
  torchrun --nproc-per-node 4 -m i2e_neuro.cli convert --dataset cifar10 --root data \\
      --device cuda -o events/cifar10                        one shard per process (RANK/WORLD_SIZE)

dataset roots (nothing is downloaded):
{layouts}

default --ratio per dataset (paper):
  {ratios}.

exit status: 0 all converted (or already there); 1 some images failed (listed at the end,
the others are converted) or an output could not be written (disk full: the file is named);
2 bad arguments (an --out that is a file included), a folder whose links loop, or an
unreadable dataset; 130 interrupted (rerun the same command to resume).
"""

PROG = "i2e-neuro convert"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    accept_negative_values(parser)
    from i2e_neuro.datasets import registry

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    details = __doc__.split("\n\n", 1)[1].strip().replace("``", "")
    parser.description = (parser.description or "convert images to I2E events") + "\n\n" + details
    parser.epilog = _EXAMPLES.format(
        layouts=registry.layouts_text(convert_only=True), ratios=registry.ratios_text()
    )
    src = parser.add_argument_group("what to convert (image paths or --dataset)")
    src.add_argument(
        "inputs",
        nargs="*",
        metavar="IMAGE_OR_FOLDER",
        help="image files and folders (searched recursively)",
    )
    src.add_argument(
        "--dataset",
        choices=registry.names(convert=True),
        help="a dataset instead of files",
    )
    src.add_argument(
        "--root", metavar="DIR", help="folder holding the dataset (not needed for digits)"
    )
    src.add_argument("--split", choices=["train", "test"], help="dataset split (default train)")
    src.add_argument(
        "--limit", type=int, metavar="N", help="convert only the first N images (trial runs)"
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "-o", "--out", required=True, metavar="DIR", help="output folder (created; reruns resume)"
    )
    out.add_argument(
        "--format",
        choices=["packed", "dense", "list", "i2e-hf"],
        default="packed",
        help="packed bits (default), dense bool, x,y,t,p event lists, or i2e-hf: parquet files "
        "in the official I2E release's layout (rows label + data; needs --dataset; "
        "docs/OFFICIAL.md)",
    )
    out.add_argument(
        "--suffix", choices=[".npz", ".h5"], default=".npz", help="file type (default .npz)"
    )
    out.add_argument(
        "--chunk-size",
        type=int,
        default=1000,
        metavar="N",
        help="samples per dataset file (default 1000)",
    )
    out.add_argument(
        "--pictures",
        type=int,
        nargs="?",
        const=None,  # the flag alone: every image
        default=0,
        metavar="N",
        help="also write a PNG grid and an animated GIF per image into OUT/pictures/ (for the first N images; all without N)",
    )
    conv = parser.add_argument_group("conversion")
    conv.add_argument(
        "--ratio", type=float, help="threshold ratio (default: per dataset, see below)"
    )
    conv.add_argument(
        "--timesteps", type=int, default=8, metavar="T", help="timesteps 1..8 (default 8)"
    )
    conv.add_argument(
        "--order",
        default="efghabcd",
        help="timestep order of the 8 directions (default efghabcd, the paper's)",
    )
    conv.add_argument(
        "--size",
        type=int,
        nargs="+",
        metavar="N",
        help="resize first: H W, or one number for the short side (default under --protocol "
        "official: the I2E release's catalogue size, e.g. cifar10 128 128, mnist 32 32)",
    )
    conv.add_argument(
        "--protocol",
        choices=["official", "legacy"],
        help="image preprocessing: official (the I2E release's: bicubic antialiased resize of "
        "the uint8 tensor, scaled as v2.ToDtype does; the default for the paper datasets "
        "cifar10, cifar100, mnist, fashion-mnist) or legacy (bilinear; the default for digits "
        "and image files)",
    )
    run_ = parser.add_argument_group("running")
    run_.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where to convert (default cpu)"
    )
    run_.add_argument(
        "--batch-size",
        type=int,
        default=256,
        metavar="N",
        help="images per engine call on the device (default 256)",
    )
    run_.add_argument(
        "--shard",
        metavar="I/N",
        help="convert only chunks k with k %% N == I (default: RANK/WORLD_SIZE from torchrun, else everything)",
    )
    run_.add_argument("--no-progress", action="store_true", help="no progress bar")


# --- argument checks ----------------------------------------------------------------------------


def memory_needed(size: list[int], timesteps: int, images: int) -> int:
    """Bytes to convert ``images`` images resized to ``size`` (H W, or the short side: a lower
    bound): the uint8 RGB images, the bool events ``[T, 2, H, W]`` and their packed copy."""
    h, w = (size[0], size[0]) if len(size) == 1 else size[:2]
    return int(images) * h * w * (3 + 2 * timesteps + (2 * timesteps) // 8 + 1)


def memory_available() -> int | None:
    """Memory available to a new allocation (``MemAvailable``), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_args(args) -> list[str]:
    """Every problem with the arguments, one line each (empty: all fine)."""
    from i2e_neuro.i2e.conversion import check_parameters

    problems = []
    if args.dataset and args.inputs:
        problems.append("give image files/folders or --dataset, not both")
    if not args.dataset and not args.inputs:
        problems.append("nothing to convert: give image files/folders or --dataset")
    if not args.dataset and (args.root or args.split):
        problems.append("--root and --split apply to --dataset only")
    if args.ratio is not None:
        try:
            check_parameters(args.ratio, 8, None, "replicate")
        except ValueError as e:
            problems.append(f"--ratio {args.ratio}: {str(e).split(': ', 1)[1]}")
    try:
        check_parameters(0.1, args.timesteps, None, "replicate")
    except ValueError as e:
        problems.append(f"--timesteps {args.timesteps}: {str(e).split(': ', 1)[1]}")
    try:
        check_parameters(0.1, 8, args.order, "replicate")
    except ValueError as e:
        problems.append(f"--order {args.order}: {str(e).split(': ', 1)[1]}")
    if args.size is not None and (len(args.size) not in (1, 2) or min(args.size) < 1):
        problems.append(
            f"--size {' '.join(map(str, args.size))}: give H W or one short side, all >= 1"
        )
    elif args.size is not None and 1 <= args.timesteps <= 8:
        need = memory_needed(args.size, args.timesteps, args.chunk_size if args.dataset else 1)
        have = memory_available()
        if have is not None and need > have:
            problems.append(
                f"--size {' '.join(map(str, args.size))}: converting one file needs about "
                f"{need / 2**30:.1f} GiB (images and their {args.timesteps}x2 event maps), more "
                f"than the {have / 2**30:.1f} GiB available; choose a smaller size"
                + (" or --chunk-size" if args.dataset else "")
            )
    for name in ("chunk_size", "batch_size"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.format == "i2e-hf" and not args.dataset:
        problems.append(
            "--format i2e-hf: the official layout stores a class label per row; give --dataset"
        )
    if args.pictures is None:
        args.pictures = -1  # the converter's "every image"
    elif args.pictures < 0:
        problems.append(
            f"--pictures {args.pictures}: must be >= 0 (or given without a number: all)"
        )
    out_path = Path(args.out)
    blocking = next((p for p in [out_path, *out_path.parents] if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        problems.append(
            f"--out {args.out}: {'is' if blocking == out_path else f'lies under {blocking},'} "
            "a file, not a folder; choose another --out"
        )
    elif blocking is not None and not os.access(blocking, os.W_OK | os.X_OK):
        problems.append(f"--out {args.out}: cannot write in {blocking}; choose another --out")
    if args.limit is not None and args.limit < 0:
        problems.append(f"--limit {args.limit}: must be >= 0")
    try:
        parse_shard(args.shard)
    except ValueError as e:
        problems.append(str(e))
    from i2e_neuro.atomic import refuse_overwriting_inputs

    try:
        from i2e_neuro.commands.train import image_folders

        refuse_overwriting_inputs(
            [("--out", args.out)],
            [("input", i) for i in args.inputs or []] + image_folders(args.dataset, args.root),
            [("--root", args.root)],
        )
    except ValueError as e:
        problems.append(str(e))
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"--device cuda: CUDA is not available (torch {torch.__version__}); use --device cpu"
            )
    return problems


# --- the run ----------------------------------------------------------------------------------


def run(args) -> int:
    problems = check_args(args)
    if problems:
        for p in problems:
            print(f"{PROG}: error: {p}", file=sys.stderr)
        return 2
    from i2e_neuro.datasets import sources
    from i2e_neuro.datasets.converter import INDEX, Converter, ConvertError
    from i2e_neuro.errors import flag_wording

    try:
        source = (
            sources.dataset_source(args.dataset, args.root, args.split or "train")
            if args.dataset
            else sources.ImageFiles(args.inputs)
        )
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"{PROG}: error: {flag_wording(e)}", file=sys.stderr)
        return 2
    shard, shards = parse_shard(args.shard) or (0, 1)
    ratio = (
        args.ratio if args.ratio is not None else sources.DEFAULT_RATIOS[args.dataset or "images"]
    )
    from i2e_neuro.datasets.registry import catalogue_of

    catalogue = catalogue_of(args.dataset) if args.dataset else None
    protocol = args.protocol or ("official" if catalogue else "legacy")
    size = args.size
    if size is None and protocol == "official" and catalogue is not None:
        size = list(catalogue.size)
    params = {
        "ratio": ratio,
        "timesteps": args.timesteps,
        "order": args.order,
        "padding": "replicate",
        "size": size,
        "format": args.format,
        "protocol": protocol,
    }
    out = Path(args.out)
    conv = Converter(
        source,
        out,
        params,
        limit=args.limit,
        chunk_size=args.chunk_size if args.dataset else None,
        suffix=".parquet" if args.format == "i2e-hf" else args.suffix,
        shard=(shard, shards),
        device=args.device,
        batch_size=args.batch_size,
        pictures=args.pictures,
        report=lambda line: print(f"{PROG}: failed: {line}", file=sys.stderr),
    )
    try:
        done = conv.run(
            progress=not args.no_progress,
            label=f"convert{f' {shard}/{shards}' if shards > 1 else ''}",
        )
    except ConvertError as e:
        print(f"{PROG}: error: {flag_wording(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; {conv.written} file(s) written are complete, rerun the same "
            "command to resume",
            file=sys.stderr,
        )
        raise
    except OSError as e:  # cannot write the output (disk full, no permission, --out is a file)
        reason = str(e.strerror or e)
        if not reason.startswith("cannot write "):  # the writer's message names the file already
            where = f"{e.filename}: " if getattr(e, "filename", None) else f"{out}: "
            reason = f"cannot write {where}{reason}"
        print(f"{PROG}: error: {reason}", file=sys.stderr)
        return 1

    n, seconds = done.images, done.seconds
    rate = 100 * done.events / done.cells if done.cells else 0
    print(
        f"converted {n} image(s) into {done.files} file(s) in {seconds:.2f} s "
        f"({n / seconds if seconds > 0 else 0:.1f} images/s); {done.events:,} events, "
        f"mean event rate {rate:.2f}%"
        + (f"; {done.skipped} file(s) already done, skipped" if done.skipped else "")
    )
    if catalogue is not None:
        same = (
            protocol == "official"
            and abs(ratio - catalogue.ratio) < 1e-12
            and list(size or []) == list(catalogue.size)
            and args.timesteps == 8
        )
        print(
            f"event rate {rate:.2f}% (this run: {protocol} protocol, "
            f"{'x'.join(map(str, size)) if size else 'native size'}, ratio {ratio:g}); "
            f"the release's {catalogue.config}: {100 * catalogue.event_rate:.2f}% "
            f"({catalogue.size[0]}x{catalogue.size[1]}, ratio {catalogue.ratio:g}, whole dataset)"
            + ("" if same else "; settings differ from the release's")
        )
    print(
        f"index: {out / INDEX} ({len(done.index['files'])} of {done.units} file(s), "
        f"{done.index['totals']['samples']} samples"
        + (f"; shard {shard}/{shards}" if shards > 1 else "")
        + ")"
    )
    if done.failures:
        print(f"{PROG}: {len(done.failures)} image(s) failed:", file=sys.stderr)
        for _, message in done.failures:
            print(f"  {message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run this command alone: ``python -m i2e_neuro.commands.convert ...``."""
    from i2e_neuro.cli import run_command

    return run_command("convert", argv)


if __name__ == "__main__":
    sys.exit(main())
