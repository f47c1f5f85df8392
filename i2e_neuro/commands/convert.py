"""``i2e-neuro convert``: images, folders or datasets -> I2E event files plus an ``index.json``.

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
import json
import os
import sys
import time
from pathlib import Path

EXAMPLES = """\
examples:
  i2e-neuro convert photos/ -o events/photos                 one .npz per image, ratio 0.12
  i2e-neuro convert --dataset digits -o events/digits        embedded scikit-learn digits, 32x32
  i2e-neuro convert --dataset cifar10 --root data --split test --size 128 128 -o events/cifar10-test
  torchrun --nproc-per-node 4 -m i2e_neuro.cli convert --dataset cifar10 --root data \\
      --device cuda -o events/cifar10                        one shard per process (RANK/WORLD_SIZE)

dataset roots (nothing is downloaded):
  cifar10        ROOT/cifar-10-batches-py/  (data_batch_1..5, test_batch, batches.meta)
  cifar100       ROOT/cifar-100-python/     (train, test, meta)
  mnist          ROOT/MNIST/raw/            (train-images-idx3-ubyte, ..., t10k-labels-idx1-ubyte)
  fashion-mnist  ROOT/FashionMNIST/raw/     (same file names as MNIST)

default --ratio per dataset (paper): cifar10/100 0.07, mnist 0.10, fashion-mnist 0.15,
digits 0.10, image files 0.12 (ImageNet).

exit status: 0 all converted (or already there); 1 some images failed (listed at the end,
the others are converted); 2 bad arguments or an unreadable dataset; 130 interrupted (rerun
the same command to resume).
"""

PROG = "i2e-neuro convert"
INDEX = "index.json"
INDEX_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    details = __doc__.split("\n\n", 1)[1].strip().replace("``", "")
    parser.description = (parser.description or "convert images to I2E events") + "\n\n" + details
    parser.epilog = EXAMPLES
    src = parser.add_argument_group("what to convert (image paths or --dataset)")
    src.add_argument(
        "inputs",
        nargs="*",
        metavar="IMAGE_OR_FOLDER",
        help="image files and folders (searched recursively)",
    )
    src.add_argument(
        "--dataset",
        choices=["cifar10", "cifar100", "mnist", "fashion-mnist", "digits"],
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
        choices=["packed", "dense", "list"],
        default="packed",
        help="packed bits (default), dense bool or x,y,t,p event lists",
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
        const=-1,
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
        help="resize first: H W, or one number for the short side",
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


def parse_shard(spec: str | None, environ=os.environ) -> tuple[int, int]:
    """``"i/n"`` -> (i, n); None -> RANK/WORLD_SIZE if both are set, else (0, 1)."""
    if spec is None:
        rank, world = environ.get("RANK"), environ.get("WORLD_SIZE")
        if rank is None or world is None:
            return 0, 1
        spec, what = f"{rank}/{world}", f"RANK={rank}, WORLD_SIZE={world}"
    else:
        what = f"--shard {spec}"
    try:
        i, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"{what}: expected I/N with integers, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"{what}: need N >= 1 and 0 <= I < N")
    return i, n


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
    for name in ("chunk_size", "batch_size"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.pictures < -1:
        problems.append(
            f"--pictures {args.pictures}: must be >= 0 (or given without a number: all)"
        )
    if args.limit is not None and args.limit < 0:
        problems.append(f"--limit {args.limit}: must be >= 0")
    try:
        parse_shard(args.shard)
    except ValueError as e:
        problems.append(str(e))
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            problems.append(
                f"--device cuda: CUDA is not available (torch {torch.__version__}); use --device cpu"
            )
    return problems


# --- reading back what is there ---------------------------------------------------------------


def read_header(path: Path) -> dict | None:
    """The header of an event file with its stored ``shape``, or None if absent or unreadable.

    Reads only the small members (no event data), so checking a large output is cheap.
    """
    import numpy as np

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                header = json.loads(str(f["header"]))
                shape = [int(s) for s in f["shape"]]
        else:
            import h5py

            with h5py.File(path, "r") as f:
                keys = set(f.keys())
                header = json.loads(str(f.attrs["header"]))
                shape = [int(s) for s in f["shape"][()]]
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not done"
        return None
    needed = {"packed": {"bits"}, "dense": {"events"}, "list": {"events", "offsets"}}.get(
        header.get("format")
    )
    if not isinstance(header, dict) or needed is None or not needed <= keys:
        return None
    header["shape"] = shape
    return header


# --- the run ----------------------------------------------------------------------------------


class Unit:
    """One output file: a range of source items."""

    def __init__(self, k: int, file: str, indices: range):
        self.k, self.file, self.indices = k, file, indices


def run(args) -> int:
    problems = check_args(args)
    if problems:
        for p in problems:
            print(f"{PROG}: error: {p}", file=sys.stderr)
        return 2
    from i2e_neuro.datasets import sources

    try:
        source = (
            sources.dataset_source(args.dataset, args.root, args.split or "train")
            if args.dataset
            else sources.ImageFiles(args.inputs)
        )
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    shard, shards = parse_shard(args.shard)
    ratio = (
        args.ratio if args.ratio is not None else sources.DEFAULT_RATIOS[args.dataset or "images"]
    )
    params = {
        "ratio": ratio,
        "timesteps": args.timesteps,
        "order": args.order,
        "padding": "replicate",
        "size": args.size,
        "format": args.format,
    }
    count = len(source) if args.limit is None else min(args.limit, len(source))
    is_dataset = args.dataset is not None
    if is_dataset:
        params["chunk_size"] = args.chunk_size
        width = max(5, len(str(max(0, (count - 1) // args.chunk_size))))
        units = [
            Unit(k, f"chunk_{k:0{width}d}{args.suffix}", range(s, min(s + args.chunk_size, count)))
            for k, s in enumerate(range(0, count, args.chunk_size))
        ]
    else:
        units = [Unit(k, f"{source.name(k)}{args.suffix}", range(k, k + 1)) for k in range(count)]
    described = {**source.describe(), "count": count}
    if args.limit is not None:
        described["limit"] = args.limit
    out = Path(args.out)
    problem = _check_index(out / INDEX, described)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    conv = Converter(args, params, source, out)
    mine = [u for u in units if u.k % shards == shard]
    skipped = 0
    from tqdm import tqdm

    bar = tqdm(
        total=sum(len(u.indices) for u in mine),
        unit="img",
        desc=f"convert{f' {shard}/{shards}' if shards > 1 else ''}",
        disable=True if args.no_progress else None,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    entries: dict[int, dict] = {}
    start = time.perf_counter()
    try:
        for u in mine:
            entry = conv.existing(u)
            if entry is None:
                entry = conv.convert(u, bar)
            else:
                skipped += 1
            if entry is not None:
                entries[u.k] = entry
            bar.update(len(u.indices))
        seconds = time.perf_counter() - start
        index = _write_index(out, units, entries, conv, described, params, args.suffix)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"{PROG}: interrupted; {conv.written} file(s) written are complete, rerun the same command to resume",
            file=sys.stderr,
        )
        raise
    except OSError as e:  # cannot write the output (disk full, no permission, --out is a file)
        bar.close()
        where = f"{e.filename}: " if getattr(e, "filename", None) else f"{out}: "
        print(f"{PROG}: error: cannot write {where}{e.strerror or e}", file=sys.stderr)
        return 1
    bar.close()

    n, ev, cells = conv.images, conv.events, conv.cells
    print(
        f"converted {n} image(s) into {conv.written} file(s) in {seconds:.2f} s "
        f"({n / seconds if seconds > 0 else 0:.1f} images/s); {conv.events:,} events, "
        f"mean event rate {100 * ev / cells if cells else 0:.2f}%"
        + (f"; {skipped} file(s) already done, skipped" if skipped else "")
    )
    present = len(index["files"])
    print(
        f"index: {out / INDEX} ({present} of {len(units)} file(s), {index['totals']['samples']} samples"
        + (f"; shard {shard}/{shards}" if shards > 1 else "")
        + ")"
    )
    if conv.failures:
        print(f"{PROG}: {len(conv.failures)} image(s) failed:", file=sys.stderr)
        for _, message in conv.failures:
            print(f"  {message}", file=sys.stderr)
        return 1
    return 0


def _check_index(path: Path, described: dict) -> str | None:
    """Refuse to mix two different conversions in one folder (their chunk names would clash)."""
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an index we cannot read is rebuilt
    keys = ("kind", "dataset", "split")
    if any(old.get(k) != described.get(k) for k in keys):
        was = ", ".join(f"{k}={old.get(k)}" for k in keys if old.get(k) is not None)
        now = ", ".join(f"{k}={described.get(k)}" for k in keys if described.get(k) is not None)
        return f"{path} belongs to another conversion ({was}); this one is {now}: use another --out"
    return None


class Converter:
    """Converts units and remembers totals and failures."""

    def __init__(self, args, params: dict, source, out: Path):
        import torch

        self.args, self.params, self.source, self.out = (
            args,
            json.loads(json.dumps(params)),
            source,
            out,
        )
        if args.device == "cuda":
            self.device = torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
            )
        else:
            self.device = torch.device("cpu")
        self.failures: list[tuple[str, str]] = []
        self.images = self.events = self.cells = self.written = self.pictures = 0

    def fail(self, name: str, error, bar=None) -> None:
        message = str(error)
        if name not in message:
            message = f"{name}: {message}"
        self.failures.append((name, message))
        line = f"{PROG}: failed: {message}"
        if bar is not None and not bar.disable:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def existing(self, unit: Unit) -> dict | None:
        """The index entry of a valid output made with the same parameters, else None."""
        if self.known_error(unit):
            return None  # e.g. a second image of the same name: the file there is the other one's
        header = read_header(self.out / unit.file)
        if header is None or header.get("i2e") != self.params or header.get("failures"):
            return None
        names = [self.source.name(i) for i in unit.indices]
        shape = header["shape"]
        if (
            header.get("samples") != names
            or len(shape) != 5
            or shape[0] != self.params["timesteps"]
            or shape[1] != len(names)
        ):
            return None
        return self.entry(unit, header)

    def known_error(self, unit: Unit) -> bool:
        return any(self.source.known_error(i) is not None for i in unit.indices)

    @staticmethod
    def entry(unit: Unit, header: dict) -> dict:
        return {
            "file": unit.file,
            "samples": header["samples"],
            "labels": header.get("labels", []),
            "shape": header["shape"],
            "event_counts": header.get("event_counts", []),
        }

    def convert(self, unit: Unit, bar) -> dict | None:
        import numpy as np
        import torch

        from i2e_neuro.datasets.formats import save_events
        from i2e_neuro.datasets.sources import resize
        from i2e_neuro.i2e.conversion import i2e

        names, images, labels, failures = [], [], [], []
        for i in unit.indices:
            item = self.source[i]
            image = item.image
            if item.ok and self.args.size:
                try:
                    image = resize(image, self.args.size)
                except (ValueError, OSError) as e:
                    image = e
            if isinstance(image, Exception):
                failures.append({"name": item.name, "error": str(image)})
                self.fail(item.name, image, bar)
                continue
            if images and image.shape != images[0].shape:
                error = f"size {image.shape[:2]} differs from the chunk's {images[0].shape[:2]}; use --size"
                failures.append({"name": item.name, "error": error})
                self.fail(item.name, error, bar)
                continue
            names.append(item.name)
            images.append(image)
            labels.append(item.label)
        if not images:
            return None
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
        p = self.params
        if self.device.type == "cpu":
            events = i2e(batch, ratio=p["ratio"], timesteps=p["timesteps"], order=p["order"])
            counts = events.sum(dim=(0, 2, 3, 4))
        else:
            parts, count_parts = [], []
            for s in range(0, len(images), self.args.batch_size):
                ev = i2e(
                    batch[s : s + self.args.batch_size].to(self.device),
                    ratio=p["ratio"],
                    timesteps=p["timesteps"],
                    order=p["order"],
                )
                count_parts.append(ev.sum(dim=(0, 2, 3, 4)).cpu())
                parts.append(ev.cpu())
            events, counts = torch.cat(parts, dim=1), torch.cat(count_parts)
        counts = [int(c) for c in counts]
        header = {
            "i2e": self.params,
            "source": {
                k: v for k, v in self.source.describe().items() if k in ("kind", "dataset", "split")
            },
            "samples": names,
            "labels": labels,
            "event_counts": counts,
            "failures": failures,
        }
        save_events(
            self.out / unit.file, events, labels=np.asarray(labels), fmt=p["format"], meta=header
        )
        self.written += 1
        self.images += len(names)
        self.events += sum(counts)
        self.cells += events.numel()
        self._pictures(events, images, names)
        if failures:
            return None  # incomplete: listed as missing in the index, redone by the next run
        return self.entry(unit, {**header, "shape": list(events.shape)})

    def _pictures(self, events, images, names) -> None:
        wanted = self.args.pictures
        if not wanted:
            return
        from i2e_neuro.i2e.pictures import save_gif, save_grid

        for j, (image, name) in enumerate(zip(images, names)):
            if 0 <= wanted <= self.pictures:
                return
            base = self.out / "pictures" / name
            sample = events[:, j]
            image = image if image.shape[2] == 3 else image[:, :, 0]
            save_grid(
                base.with_name(base.name + ".png"),
                sample,
                image,
                title=name,
                step_names=self.params["order"],
            )
            save_gif(base.with_name(base.name + ".gif"), sample, image)
            self.pictures += 1


def _write_index(
    out: Path,
    units: list[Unit],
    entries: dict[int, dict],
    conv: Converter,
    described,
    params,
    suffix,
) -> dict:
    """Write ``index.json`` for all units (this shard's and any others' already on disk).

    The folder is locked while doing so, so that of several shards finishing together the last
    one sees every other shard's files.
    """
    from i2e_neuro.atomic import write_text

    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        files, missing = [], []
        for u in units:
            entry = entries.get(u.k) or conv.existing(u)
            if entry:
                files.append(entry)
            elif not conv.known_error(u):  # (unreadable inputs have no file of their own)
                missing.append(u.file)
        samples = sum(len(e["samples"]) for e in files)
        events = sum(sum(e["event_counts"]) for e in files)
        cells = sum(
            e["shape"][0] * 2 * e["shape"][3] * e["shape"][4] * len(e["samples"]) for e in files
        )
        index = {
            "version": INDEX_VERSION,
            "layout": "[T, B, 2, H, W] bool, channel 0 ON, 1 OFF",
            "source": described,
            "params": {**conv.params, "suffix": suffix},
            "complete": not missing and not any(conv.known_error(u) for u in units),
            "files": files,
            "missing": missing,
            "failures": [{"name": name, "error": message} for name, message in conv.failures],
            "totals": {
                "files": len(files),
                "samples": samples,
                "events": events,
                "event_rate": events / cells if cells else 0.0,
            },
        }
        write_text(out / INDEX, _dumps(index))
    finally:
        _unlock(lock)
    return index


def _dumps(index: dict) -> str:
    """Indented JSON with one line per file entry (an index of 1000s of files stays readable)."""
    head = json.dumps({k: v for k, v in index.items() if k != "files"}, indent=1)
    entries = ",\n  ".join(json.dumps(entry) for entry in index["files"])
    files = f'"files": [\n  {entries}\n ]' if entries else '"files": []'
    return (head[:-2] + ",\n " + files + "\n}" if head != "{}" else "{\n " + files + "\n}") + "\n"


def _lock(folder: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _unlock(fd) -> None:
    if fd is not None:
        os.close(fd)  # closing releases the lock


def main(argv: list[str] | None = None) -> int:
    """Run this command alone: ``python -m i2e_neuro.commands.convert ...``."""
    from i2e_neuro.cli import run_command

    return run_command("convert", argv)


if __name__ == "__main__":
    sys.exit(main())
