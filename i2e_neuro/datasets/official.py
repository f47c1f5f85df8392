"""The official I2E release's event datasets, read from a local folder and written (never
downloaded).

Two layouts (docs/OFFICIAL.md):

* **Hugging Face parquet** (``UESTC-BICS/I2E``, configs such as ``I2E-CIFAR10``, splits ``train``
  and ``validation``): rows ``label`` (int) and ``data`` (bytes). ``data`` is a saved NumPy
  ``.npy`` of a 1-D uint8 array: its first 8 bytes are four uint16 ``(T, C, H, W)``, the rest is
  ``np.packbits`` of the flattened ``[T, C, H, W]`` events, padded to whole bytes.
* **npz folders**: ``ROOT/train/<class>/*.npz`` and ``ROOT/val/<class>/*.npz``, array ``arr_0``
  ``[T, C, H, W]``; labels are the class folders in sorted order (torchvision's
  ``DatasetFolder``).

Samples come out as ``(events [T, 2, H, W] bool tensor, label)``. Rows are read one parquet row
group at a time (a few kept), never a whole split; errors name the file and the row.

The parquet reader is pyarrow, always with ``use_threads=False``: pyarrow's thread pool, once
used in a process that has imported torch, aborts the interpreter at exit (pyarrow 17 and 23
with torch 2.3, seen here).
"""

from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from i2e_neuro.atomic import atomic_path
from i2e_neuro.integrity import DamagedFile, verify_zip

HEADER_BYTES = 8  # four uint16: T, C, H, W
#: our split names -> the Hugging Face release's / the npz folders'
HF_SPLITS = {
    "train": "train",
    "test": "validation",
    "validation": "validation",
    "val": "validation",
}
NPZ_SPLITS = {"train": "train", "test": "val", "validation": "val", "val": "val"}
_CACHED_GROUPS = 4


class OfficialFormatError(ValueError):
    """A file or row that is not in the official layout; the message names file and row."""


# --- one record ---------------------------------------------------------------------------------


def encode_record(events: Any) -> bytes:
    """The ``data`` bytes of one sample ``[T, C, H, W]`` (bool, or 0/1), as the release stores it."""
    if hasattr(events, "detach"):
        events = events.detach().cpu().numpy()
    events = np.asarray(events)
    if events.ndim != 4:
        raise ValueError(f"events: expected one sample [T, C, H, W], got shape {events.shape}")
    if events.dtype != np.bool_:
        if not np.isin(events, (0, 1)).all():
            raise ValueError("events: values other than 0 and 1")
        events = events.astype(bool)
    if max(events.shape) > 0xFFFF:
        raise ValueError(f"events: shape {events.shape} does not fit the uint16 header")
    header = np.asarray(events.shape, dtype="<u2").view(np.uint8)
    body = np.packbits(events.reshape(-1))
    buf = io.BytesIO()
    np.save(buf, np.concatenate([header, body]), allow_pickle=False)
    return buf.getvalue()


def decode_record(data: Any, where: str = "record") -> np.ndarray:
    """Events ``[T, C, H, W]`` bool of one ``data`` value; :class:`OfficialFormatError` naming
    ``where`` (file and row) for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise OfficialFormatError(f"{where}: 'data' is {type(data).__name__}, not bytes")
    try:
        raw = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise OfficialFormatError(f"{where}: 'data' is not a saved NumPy array ({e})") from e
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
        what = f"{raw.dtype} array of shape {raw.shape}" if isinstance(raw, np.ndarray) else "npz"
        raise OfficialFormatError(f"{where}: 'data' holds a {what}, not 1-D uint8 packed events")
    if raw.size < HEADER_BYTES:
        raise OfficialFormatError(f"{where}: 'data' has {raw.size} bytes, shorter than its header")
    shape = tuple(int(s) for s in raw[:HEADER_BYTES].view("<u2"))
    t, c, h, w = shape
    if not (1 <= t <= 8 and c == 2 and h > 0 and w > 0):
        raise OfficialFormatError(
            f"{where}: header says shape (T, C, H, W) = {shape}; expected T 1..8, C 2 (ON, OFF)"
        )
    n = t * c * h * w
    body = raw[HEADER_BYTES:]
    if body.size != (n + 7) // 8:
        raise OfficialFormatError(
            f"{where}: header says {shape} ({(n + 7) // 8} packed bytes) but the body has "
            f"{body.size} bytes"
        )
    return np.unpackbits(body, count=n).astype(bool).reshape(shape)


# --- Hugging Face parquet -------------------------------------------------------------------------


def hf_files(root: str | Path, config: str | None, split: str) -> list[Path]:
    """The parquet files of ``split`` of ``config`` under ``root`` (``ROOT/CONFIG/`` or ``ROOT``,
    searched recursively: ``SPLIT-*.parquet``, ``SPLIT.parquet`` or ``SPLIT/*.parquet``)."""
    root = Path(root).expanduser()
    hf_split = HF_SPLITS.get(split, split)
    base = root / config if config and (root / config).is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"--root {root}: no such folder")
    files = sorted(
        p
        for p in base.rglob("*.parquet")
        if p.name.startswith((f"{hf_split}-", f"{hf_split}.")) or p.parent.name == hf_split
    )
    if not files:
        raise FileNotFoundError(
            f"--root {root}: no parquet files of split {hf_split!r}"
            + (f" of config {config}" if config else "")
            + f" under {base} (expected {hf_split}-*.parquet, as the Hugging Face release "
            "UESTC-BICS/I2E names them)"
        )
    return files


class _Source(torch.utils.data.Dataset):
    """Common parts: ``transform``, iteration, the first sample's shape."""

    transform: Callable | None = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(len(self)):
            yield self[i]

    def _out(self, events: np.ndarray, label: int):
        sample = torch.from_numpy(events)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, label

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self[0][0].shape) if len(self) else ()


class HFParquetEvents(_Source):
    """One split of a Hugging Face I2E config as a map-style dataset (rows decoded on access;
    a few row groups cached; file handles re-opened in each DataLoader worker)."""

    def __init__(
        self,
        root: str | Path,
        config: str | None,
        split: str = "train",
        transform: Callable | None = None,
    ) -> None:
        import pyarrow.parquet as pq

        self.files = hf_files(root, config, split)
        self.config, self.split, self.transform = config, HF_SPLITS.get(split, split), transform
        self._groups: list[tuple[int, int, int]] = []  # (file index, row group, first row)
        self._starts: list[int] = []
        total = 0
        for k, path in enumerate(self.files):
            meta = self._open(path, pq).metadata
            names = set(meta.schema.names)
            if not {"label", "data"} <= names:
                raise OfficialFormatError(
                    f"{path}: columns {sorted(names)}; an I2E parquet file has 'label' and 'data'"
                )
            for g in range(meta.num_row_groups):
                self._groups.append((k, g, total))
                self._starts.append(total)
                total += meta.row_group(g).num_rows
        self._len = total
        self._handles: dict[int, Any] = {}
        self._cache: OrderedDict[int, tuple[list, list]] = OrderedDict()

    @staticmethod
    def _open(path: Path, pq):
        import pyarrow as pa

        try:
            return pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as e:
            raise OfficialFormatError(f"{path}: not a readable parquet file ({e})") from e

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"], state["_cache"] = {}, OrderedDict()
        return state

    def __len__(self) -> int:
        return self._len

    def _group_rows(self, gi: int) -> tuple[list, list]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if gi in self._cache:
            self._cache.move_to_end(gi)
            return self._cache[gi]
        k, g, _ = self._groups[gi]
        if k not in self._handles:
            self._handles[k] = self._open(self.files[k], pq)
        try:
            table = self._handles[k].read_row_group(g, columns=["label", "data"], use_threads=False)
        except (pa.ArrowException, OSError) as e:
            raise OfficialFormatError(f"{self.files[k]}: row group {g} unreadable ({e})") from e
        rows = table.column("label").to_pylist(), table.column("data").to_pylist()
        self._cache[gi] = rows
        while len(self._cache) > _CACHED_GROUPS:
            self._cache.popitem(last=False)
        return rows

    def __getitem__(self, index: int):
        import bisect

        if not -self._len <= index < self._len:
            raise IndexError(f"row {index} of {self._len}")
        index %= self._len
        gi = bisect.bisect_right(self._starts, index) - 1
        k, g, first = self._groups[gi]
        labels, datas = self._group_rows(gi)
        row = index - first
        where = f"{self.files[k]}: row {row} of row group {g}"
        label = labels[row]
        if not isinstance(label, int) or label < 0:
            raise OfficialFormatError(f"{where}: label {label!r} is not a class index")
        return self._out(decode_record(datas[row], where), int(label))

    def num_classes(self) -> int:
        """Largest label + 1, read from the label column only (no events decoded)."""
        import pyarrow.parquet as pq

        top = -1
        for path in self.files:
            f = self._open(path, pq)
            for g in range(f.metadata.num_row_groups):
                col = f.read_row_group(g, columns=["label"], use_threads=False).column("label")
                labels = [x for x in col.to_pylist() if x is not None]
                top = max([top, *labels])
        return top + 1


#: the schema metadata key of our header in parquet files we write (readers of the release ignore it)
META_KEY = b"i2e_neuro"


def write_hf_parquet(
    path: str | Path,
    rows: Iterable[tuple[Any, int]],
    rows_per_group: int = 100,
    meta: dict | None = None,
) -> int:
    """Write ``(events [T, C, H, W], label)`` rows as an I2E parquet file, atomically, streaming
    ``rows_per_group`` rows at a time; the number of rows written. ``meta``: a JSON header kept
    in the schema metadata (:func:`read_parquet_header`)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("label", pa.int64()), ("data", pa.binary())],
        metadata={META_KEY: json.dumps(meta).encode()} if meta is not None else None,
    )
    n = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            labels: list[int] = []
            datas: list[bytes] = []

            def flush() -> None:
                if labels:
                    writer.write_table(pa.table({"label": labels, "data": datas}, schema=schema))
                    labels.clear()
                    datas.clear()

            for events, label in rows:
                labels.append(int(label))
                datas.append(encode_record(events))
                n += 1
                if len(labels) >= rows_per_group:
                    flush()
            flush()
    return n


def read_parquet(path: str | Path, data: bool = True) -> tuple[dict, list[int], np.ndarray | None]:
    """``(header, labels, events [T, B, 2, H, W] or None)`` of a parquet file we wrote (header
    from the schema metadata; ``data``: decode the events too); errors name file and row."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    f = HFParquetEvents._open(path, pq)
    raw = (f.schema_arrow.metadata or {}).get(META_KEY)
    if raw is None:
        raise OfficialFormatError(f"{path}: no {META_KEY.decode()} header (not written by convert)")
    header = json.loads(raw)
    try:
        columns = ["label", "data"] if data else ["label"]
        table = f.read(columns=columns, use_threads=False)
    except (pa.ArrowException, OSError, KeyError) as e:
        raise OfficialFormatError(f"{path}: unreadable ({e})") from e
    labels = table.column("label").to_pylist()
    if not data:
        return header, labels, None
    samples = [
        decode_record(d, f"{path}: row {i}") for i, d in enumerate(table.column("data").to_pylist())
    ]
    events = np.stack(samples, axis=1) if samples else None
    return header, labels, events


# --- npz folders ----------------------------------------------------------------------------------


class NpzFolderEvents(_Source):
    """``ROOT/train/<class>/*.npz`` or ``ROOT/val/<class>/*.npz`` (array ``arr_0``
    ``[T, C, H, W]``); labels are the sorted class folders."""

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable | None = None
    ) -> None:
        root = Path(root).expanduser()
        sub = NPZ_SPLITS.get(split, split)
        folder = root / sub
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--root {root}: no {sub}/ folder (expected ROOT/train/<class>/*.npz and "
                "ROOT/val/<class>/*.npz, the official npz release)"
            )
        self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        self.samples = [
            (f, label)
            for label, name in enumerate(self.classes)
            for f in sorted((folder / name).glob("*.npz"))
        ]
        if not self.samples:
            raise FileNotFoundError(f"{folder}: no <class>/*.npz files")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self._out(read_npz_sample(path), label)


def read_npz_sample(path: str | Path) -> np.ndarray:
    """``arr_0`` of one official npz file as bool ``[T, 2, H, W]``; errors name the file."""
    path = Path(path)
    try:
        verify_zip(path)
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z.files:
                raise OfficialFormatError(
                    f"{path}: arrays {z.files}; an official I2E npz file holds 'arr_0'"
                )
            arr = z["arr_0"]
    except DamagedFile as e:
        raise OfficialFormatError(str(e)) from e
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        if str(e).startswith(str(path)):
            raise
        raise OfficialFormatError(f"{path}: not a readable npz file ({e})") from e
    if arr.ndim != 4 or arr.shape[1] != 2 or not 1 <= arr.shape[0] <= 8:
        raise OfficialFormatError(
            f"{path}: arr_0 has shape {arr.shape}; expected [T, 2, H, W] with T 1..8"
        )
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
            raise OfficialFormatError(f"{path}: arr_0 holds values other than 0 and 1")
        arr = arr.astype(bool)
    return arr
