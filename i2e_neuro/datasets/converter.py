"""Conversion to disk: an image source -> I2E event files plus an ``index.json``, resumable.

Datasets are written in chunks ``chunk_00000.npz`` ... of ``chunk_size`` samples, each in the
canonical layout ``[T, B, 2, H, W]`` with the labels; loose image files give one file per image,
named after the image's path relative to the folder given (``photos/cats/a.jpg`` given as
``photos`` -> ``OUT/cats/a.npz``). Every file is written under a temporary name and renamed when
complete, so a run can be stopped at any moment and started again: outputs that are already
there and were made with the same parameters are skipped. ``index.json`` lists every output
with its sample names, labels, shape and event counts, and the conversion parameters.

Several processes (shards) may convert into one folder: shard ``i`` of ``n`` takes the files
``k`` with ``k % n == i``; the index is written under a lock on the folder, so the last shard to
finish lists every shard's files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from i2e_neuro.errors import ParameterError

if TYPE_CHECKING:
    import numpy as np

INDEX = "index.json"
INDEX_VERSION = 1


class ConvertError(ParameterError):
    """A conversion that cannot run as asked; the message names the parameter or folder."""


class Unit:
    """One output file: a range of source items."""

    def __init__(self, k: int, file: str, indices: range):
        self.k, self.file, self.indices = k, file, indices


@dataclass
class Summary:
    """What one run of :meth:`Converter.run` did."""

    images: int
    files: int
    skipped: int
    events: int
    cells: int
    seconds: float
    index: dict
    units: int
    failures: list[tuple[str, str]]


class Converter:
    """Converts ``count`` items of ``source`` into ``out`` (this shard's units), remembering
    totals and failures.

    ``params``: ``ratio``, ``timesteps``, ``order``, ``padding``, ``size`` (resize first: ``(H,
    W)`` or the short side) and ``format``; ``chunk_size``: samples per file for a dataset (None:
    one file per image); ``pictures``: also write a PNG grid and a GIF for the first N images
    (-1: all); ``report``: called with each failure's message (default: print to stderr).
    """

    def __init__(
        self,
        source,
        out: str | Path,
        params: dict,
        *,
        count: int | None = None,
        limit: int | None = None,
        chunk_size: int | None = None,
        suffix: str = ".npz",
        shard: tuple[int, int] = (0, 1),
        device: str = "cpu",
        batch_size: int = 256,
        pictures: int = 0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        import torch

        self.source, self.out, self.suffix = source, Path(out), suffix
        self.params = json.loads(json.dumps(params))
        if chunk_size is not None:
            self.params["chunk_size"] = chunk_size
        self.batch_size, self.pictures_wanted = batch_size, pictures
        self.shard, self.shards = shard
        self.report = report or (lambda line: print(line, file=sys.stderr))
        if device == "cuda":
            self.device = torch.device(
                "cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
            )
        else:
            self.device = torch.device("cpu")
        count = len(source) if limit is None else min(limit, len(source))
        if chunk_size is not None:
            width = max(5, len(str(max(0, (count - 1) // chunk_size))))
            self.units = [
                Unit(k, f"chunk_{k:0{width}d}{suffix}", range(s, min(s + chunk_size, count)))
                for k, s in enumerate(range(0, count, chunk_size))
            ]
        else:
            self.units = [
                Unit(k, f"{source.name(k)}{suffix}", range(k, k + 1)) for k in range(count)
            ]
        self.described = {**source.describe(), "count": count}
        if limit is not None:
            self.described["limit"] = limit
        self.failures: list[tuple[str, str]] = []
        self.images = self.events = self.cells = self.written = self.pictures = 0

    @property
    def mine(self) -> list[Unit]:
        """This shard's units."""
        return [u for u in self.units if u.k % self.shards == self.shard]

    def check_out(self) -> None:
        """Refuse to mix two different conversions in one folder (their file names would clash)."""
        path = self.out / INDEX
        if not path.is_file():
            return
        try:
            old = json.loads(path.read_text())["source"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # an index we cannot read is rebuilt
        keys = ("kind", "dataset", "split")
        if any(old.get(k) != self.described.get(k) for k in keys):
            was = ", ".join(f"{k}={old.get(k)}" for k in keys if old.get(k) is not None)
            now = ", ".join(
                f"{k}={self.described.get(k)}" for k in keys if self.described.get(k) is not None
            )
            raise ConvertError(
                f"{path} belongs to another conversion ({was}); this one is {now}: use another out",
                "out",
            )

    def run(self, progress: bool = False, label: str = "convert") -> Summary:
        """Convert this shard's missing units and write the index; :class:`OSError` when the
        output cannot be written. ``progress``: a progress bar on stderr."""
        self.check_out()
        claim = self.claim_out()
        try:
            return self._run(progress, label)
        finally:
            self.release_out(claim)

    def release_out(self, fd) -> None:
        """Drop this run's lock; the last run of the conversion removes the lock file."""
        if fd is None:
            return
        import fcntl

        gate = _lock(self.out)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (self.out / LOCK).unlink(missing_ok=True)
        except BlockingIOError:
            pass  # a shard still runs: it removes the file
        finally:
            os.close(fd)
            _unlock(gate)

    def claim_out(self):
        """Hold a shared lock on ``out/.convert.lock`` for the whole run, stamped with this
        conversion's parameters: shards of the same conversion share it, a conversion with other
        parameters running into the same folder is refused (``ConvertError`` naming its pid).

        The folder itself is the gate (locked briefly, as :meth:`write_index` does), so that
        checking the stamp and taking the lock are one step.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        stamp = {"params": {**self.params, "suffix": self.suffix}, "source": self.described}
        path = self.out / LOCK
        gate = _lock(self.out)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                idle = True
            except BlockingIOError:
                idle = False
            if idle:  # nobody converting: stamp it with ours, keep it shared
                remove_stale_temporaries(self.out)
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({**stamp, "pid": os.getpid()}).encode(), 0)
                fcntl.flock(fd, fcntl.LOCK_SH)  # safe: every taker holds the gate
                return fd
            with open(path) as f:
                try:
                    holder = json.loads(f.read() or "{}")
                except ValueError:
                    holder = {}
            if {k: holder.get(k) for k in stamp} == stamp:
                fcntl.flock(fd, fcntl.LOCK_SH)  # a shard of the same conversion
                return fd
            os.close(fd)
            raise ConvertError(
                f"{self.out}: another conversion with other parameters (pid "
                f"{holder.get('pid', '?')}) is writing into this folder; wait for it to end "
                "or use another --out",
                "out",
            )
        finally:
            _unlock(gate)

    def _run(self, progress: bool, label: str) -> Summary:
        from tqdm import tqdm

        mine = self.mine
        bar = tqdm(
            total=sum(len(u.indices) for u in mine),
            unit="img",
            desc=label,
            disable=None if progress else True,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        report = self.report
        if not bar.disable:  # lines go between the bar's frames

            def _report(line: str) -> None:
                with tqdm.external_write_mode(file=sys.stderr):
                    report(line)

            self.report = _report
        entries: dict[int, dict] = {}
        skipped = 0
        start = time.perf_counter()
        try:
            for u in mine:
                entry = self.existing(u)
                if entry is None:
                    entry = self.convert(u)
                else:
                    skipped += 1
                    self._missing_pictures(u, entry)
                if entry is not None:
                    entries[u.k] = entry
                bar.update(len(u.indices))
            seconds = time.perf_counter() - start
            index = self.write_index(entries)
        finally:
            bar.close()
            self.report = report
        return Summary(
            self.images,
            self.written,
            skipped,
            self.events,
            self.cells,
            seconds,
            index,
            len(self.units),
            list(self.failures),
        )

    def fail(self, name: str, error) -> None:
        message = str(error)
        if name not in message:
            message = f"{name}: {message}"
        self.failures.append((name, message))
        self.report(message)

    def existing(self, unit: Unit) -> dict | None:
        """The index entry of a valid output made with the same parameters, else None."""
        from i2e_neuro.datasets.formats import read_header

        if self.known_error(unit):
            return None  # e.g. a second image of the same name: the file there is the other one's
        try:
            header = read_header(self.out / unit.file)
        except (FileNotFoundError, ValueError):
            return None  # absent or unreadable: not done
        if header.get("i2e") != self.params or header.get("failures"):
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

    def convert(self, unit: Unit) -> dict | None:
        """Convert one unit and write its file; its index entry (None if an item failed)."""
        import numpy as np
        import torch

        from i2e_neuro.datasets.formats import save_events
        from i2e_neuro.i2e.conversion import i2e
        from i2e_neuro.i2e.images import resize

        size = self.params.get("size")
        names, images, labels, failures = [], [], [], []
        for i in unit.indices:
            item = self.source[i]
            image = item.image
            if item.ok and size:
                try:
                    image = resize(image, size)
                except (ValueError, OSError) as e:
                    image = e
            if isinstance(image, Exception):
                failures.append({"name": item.name, "error": str(image)})
                self.fail(item.name, image)
                continue
            if images and image.shape != images[0].shape:
                error = f"size {image.shape[:2]} differs from the chunk's {images[0].shape[:2]}; resize to one size"
                failures.append({"name": item.name, "error": error})
                self.fail(item.name, error)
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
            counts = count_events(events)
        else:
            parts, count_parts = [], []
            for s in range(0, len(images), self.batch_size):
                ev = i2e(
                    batch[s : s + self.batch_size].to(self.device),
                    ratio=p["ratio"],
                    timesteps=p["timesteps"],
                    order=p["order"],
                )
                count_parts.append(torch.from_numpy(count_events(ev.cpu())))
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

    def _missing_pictures(self, unit: Unit, entry: dict) -> None:
        """Pictures wanted for a unit converted earlier (e.g. by a run interrupted before its
        pictures were written): made from its event file, not converted again."""
        wanted = self.pictures_wanted
        if not wanted or 0 <= wanted <= self.pictures:
            return
        names = entry["samples"]
        folder = self.out / "pictures"
        if all((folder / f"{n}.png").is_file() and (folder / f"{n}.gif").is_file() for n in names):
            self.pictures += len(names)  # counted as made: they are there
            return
        import torch

        from i2e_neuro.datasets.formats import load_events
        from i2e_neuro.i2e.images import resize

        events = torch.from_numpy(load_events(self.out / unit.file).events)
        size = self.params.get("size")
        images = []
        for i in unit.indices:
            image = self.source[i].image
            images.append(resize(image, size) if size else image)
        self._pictures(events, images, names)

    def _pictures(self, events, images, names) -> None:
        wanted = self.pictures_wanted
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

    def write_index(self, entries: dict[int, dict]) -> dict:
        """Write ``index.json`` for all units (this shard's and any others' already on disk).

        The folder is locked while doing so, so that of several shards finishing together the
        last one sees every other shard's files.
        """
        from i2e_neuro.atomic import write_text

        self.out.mkdir(parents=True, exist_ok=True)
        lock = _lock(self.out)
        try:
            files, missing = [], []
            for u in self.units:
                entry = entries.get(u.k) or self.existing(u)
                if entry:
                    files.append(entry)
                elif not self.known_error(u):  # (unreadable inputs have no file of their own)
                    missing.append(u.file)
            samples = sum(len(e["samples"]) for e in files)
            events = sum(sum(e["event_counts"]) for e in files)
            cells = sum(
                e["shape"][0] * 2 * e["shape"][3] * e["shape"][4] * len(e["samples"]) for e in files
            )
            index = {
                "version": INDEX_VERSION,
                "layout": "[T, B, 2, H, W] bool, channel 0 ON, 1 OFF",
                "source": self.described,
                "params": {**self.params, "suffix": self.suffix},
                "complete": not missing and not any(self.known_error(u) for u in self.units),
                "files": files,
                "missing": missing,
                "failures": [{"name": name, "error": message} for name, message in self.failures],
                "totals": {
                    "files": len(files),
                    "samples": samples,
                    "events": events,
                    "event_rate": events / cells if cells else 0.0,
                },
            }
            write_text(self.out / INDEX, dumps_index(index))
        finally:
            _unlock(lock)
        return index


def dumps_index(index: dict) -> str:
    """Indented JSON with one line per file entry (an index of 1000s of files stays readable)."""
    head = json.dumps({k: v for k, v in index.items() if k != "files"}, indent=1)
    entries = ",\n  ".join(json.dumps(entry) for entry in index["files"])
    files = f'"files": [\n  {entries}\n ]' if entries else '"files": []'
    return (head[:-2] + ",\n " + files + "\n}" if head != "{}" else "{\n " + files + "\n}") + "\n"


def count_events(events) -> np.ndarray:
    """Events per sample of a bool ``[T, B, 2, H, W]`` tensor, without widening it to int64
    (numpy sums a bool array into an int64 accumulator in small buffers)."""
    import numpy as np

    return np.asarray(events.numpy()).sum(axis=(0, 2, 3, 4), dtype=np.int64)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove hidden temporary files (``.NAME.XXXX.tmp.SUFFIX``) that a killed run left in
    ``out`` and its ``pictures`` folder; only called when no conversion holds the folder."""
    stale = []
    for folder in (out, out / "pictures"):
        if folder.is_dir():
            stale += [p for p in folder.glob(".*.tmp*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


#: lock file of a running conversion (see ``Converter.claim_out``)
LOCK = ".convert.lock"


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
