"""Event formats with lossless round trips, and their ``.npz`` / HDF5 files.

* dense: bool ``[T, B, 2, H, W]`` (channel 0 ON, 1 OFF), the engine's output;
* packed: ``numpy.packbits`` along the last axis (W), with the dense shape stored;
* list: a structured array with fields ``x, y, t, p`` (tonic's convention; ``t`` is the timestep,
  ``p`` = 1 for ON, 0 for OFF), one array per sample.

A file holds one batch of samples in one of these formats, with optional labels and metadata.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from i2e_neuro.atomic import hdf5_file, savez
from i2e_neuro.integrity import add_hdf5_checksums, verify_hdf5, verify_zip

FORMATS = ("packed", "dense", "list")
SUFFIXES = (".npz", ".h5", ".hdf5")
#: the official I2E release's parquet rows, a fourth format with a file type of its own
PARQUET = ("i2e-hf", ".parquet")
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<u2"), ("p", "u1")])


def _numpy(events: Any) -> np.ndarray:
    if hasattr(events, "detach"):
        events = events.detach().cpu().numpy()
    events = np.asarray(events)
    if events.dtype != np.bool_:
        raise TypeError(f"events: expected a bool array, got {events.dtype}")
    return events


@dataclass
class PackedEvents:
    """Bit-packed events: ``bits`` is ``numpy.packbits(dense, axis=-1)``; ``shape`` the dense shape."""

    bits: np.ndarray
    shape: tuple[int, ...]


def pack(events: Any) -> PackedEvents:
    dense = _numpy(events)
    return PackedEvents(np.packbits(dense, axis=-1), tuple(dense.shape))


def unpack(packed: PackedEvents) -> np.ndarray:
    return (
        np.unpackbits(packed.bits, axis=-1, count=packed.shape[-1])
        .astype(bool)
        .reshape(packed.shape)
    )


def to_event_list(sample: Any) -> np.ndarray:
    """One sample ``[T, 2, H, W]`` -> structured events sorted by (t, p channel, y, x)."""
    dense = _numpy(sample)
    if dense.ndim != 4 or dense.shape[1] != 2:
        raise ValueError(f"events: expected one sample [T, 2, H, W], got shape {dense.shape}")
    t, c, y, x = np.nonzero(dense)
    out = np.empty(len(t), dtype=EVENT_DTYPE)
    out["x"], out["y"], out["t"], out["p"] = x, y, t, c == 0
    return out


def from_event_list(events: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Structured events -> dense bool ``[T, 2, H, W]`` of the given shape."""
    p = events["p"].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"event polarity must be 0 (OFF) or 1 (ON), found {sorted(set(p.tolist()))[:5]}"
        )
    dense = np.zeros(shape, dtype=bool)
    dense[events["t"], 1 - p, events["y"], events["x"]] = (
        True  # IndexError for coordinates outside shape
    )
    return dense


@dataclass
class EventBatch:
    """A batch as stored in a file: dense events ``[T, B, 2, H, W]``, labels and metadata."""

    events: np.ndarray
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def save_events(
    path: str | Path,
    events: Any,
    labels: Any = None,
    fmt: str = "packed",
    meta: dict | None = None,
) -> Path:
    """Atomically write a batch ``[T, B, 2, H, W]`` to ``.npz`` or ``.h5`` in format ``fmt``."""
    path = Path(path)
    if fmt not in FORMATS + PARQUET[:1]:
        raise ValueError(f"fmt={fmt!r}: must be one of {FORMATS + PARQUET[:1]}")
    if path.suffix not in SUFFIXES + PARQUET[1:]:
        raise ValueError(f"{path}: unknown event file type (use one of {SUFFIXES})")
    if (fmt == "i2e-hf") != (path.suffix == ".parquet"):
        raise ValueError(f"{path}: format i2e-hf is written to .parquet files, and only it")
    dense = _numpy(events)
    if dense.ndim != 5 or dense.shape[2] != 2:
        raise ValueError(f"events: expected [T, B, 2, H, W], got shape {dense.shape}")
    if fmt == "i2e-hf":  # the official release's rows (i2e_neuro.datasets.official)
        from i2e_neuro.datasets.official import write_hf_parquet

        if labels is None:
            raise ValueError(f"{path}: format i2e-hf needs a class label per sample")
        header = {"format": fmt, "shape": list(dense.shape), **(meta or {})}
        rows = ((dense[:, b], int(y)) for b, y in enumerate(np.asarray(labels)))
        write_hf_parquet(path, rows, meta=header)
        return path
    arrays: dict[str, np.ndarray] = {"shape": np.asarray(dense.shape, dtype=np.int64)}
    if fmt == "dense":
        arrays["events"] = dense
    elif fmt == "packed":
        arrays["bits"] = pack(dense).bits
    else:
        lists = [to_event_list(dense[:, b]) for b in range(dense.shape[1])]
        arrays["events"] = np.concatenate(lists) if lists else np.empty(0, EVENT_DTYPE)
        arrays["offsets"] = np.cumsum([0] + [len(x) for x in lists]).astype(np.int64)
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    header = json.dumps({"format": fmt, **(meta or {})})
    if path.suffix == ".npz":
        savez(path, header=np.asarray(header), **arrays)
    else:
        with hdf5_file(path) as f:
            f.attrs["header"] = header
            for k, v in arrays.items():
                f.create_dataset(k, data=v, compression="gzip" if v.size > 1024 else None)
            add_hdf5_checksums(f)
    return path


#: the members each format stores besides ``header``, ``shape`` and ``labels``
_MEMBERS = {
    "packed": {"bits"},
    "dense": {"events"},
    "list": {"events", "offsets"},
    "i2e-hf": {"events"},
}
_READ_ERRORS = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    KeyError,
    IndexError,
    AttributeError,
    ValueError,
    TypeError,
)


def _read(path: Path, data: bool) -> tuple[dict, tuple[int, ...], dict[str, np.ndarray]]:
    """``(header, shape, arrays)`` of an event file: the JSON header, the stored dense shape and,
    when ``data``, every other member (else none: only the small members are read)."""
    if path.suffix == ".npz":
        verify_zip(path)
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            header = json.loads(str(f["header"]))
            shape = tuple(int(s) for s in f["shape"])
            arrays = {k: f[k] for k in keys - {"header", "shape"}} if data else {}
    elif path.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            verify_hdf5(f, path)
            keys = set(f.keys())
            header = json.loads(str(f.attrs["header"]))
            shape = tuple(int(s) for s in f["shape"][()])
            arrays = {k: f[k][()] for k in keys - {"shape"}} if data else {}
    elif path.suffix == ".parquet":
        from i2e_neuro.datasets.official import read_parquet

        header, labels, events = read_parquet(path, data)
        header = dict(header)
        shape = tuple(int(s) for s in header.pop("shape"))
        keys = {"events", "labels"}
        arrays = {"events": events, "labels": np.asarray(labels, dtype=np.int64)} if data else {}
    else:
        raise ValueError(f"unknown event file type (use one of {SUFFIXES})")
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    needed = _MEMBERS.get(header.get("format"))
    if needed is None:
        raise ValueError(f"unknown format {header.get('format')!r}")
    if not needed <= keys:
        raise ValueError(f"no {', '.join(sorted(needed - keys))} member")
    return header, shape, arrays


def read_header(path: str | Path) -> dict:
    """The header of an event file (``format`` and the metadata) with its stored dense
    ``shape`` as a list, without reading the events; errors as :func:`load_events`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such event file")
    try:
        header, shape, _ = _read(path, data=False)
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: not a valid i2e-neuro event file ({e})") from e
    return {**header, "shape": list(shape)}


def load_events(path: str | Path) -> EventBatch:
    """Read a file written by :func:`save_events`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such event file")
    try:
        meta, shape, arrays = _read(path, data=True)
        fmt = meta.pop("format")
        if fmt in ("dense", "i2e-hf"):
            dense = arrays["events"].astype(bool)
        elif fmt == "packed":
            dense = unpack(PackedEvents(arrays["bits"], shape))
        else:
            off, ev = arrays["offsets"], arrays["events"]
            sample_shape = (shape[0], shape[2], shape[3], shape[4])
            dense = np.zeros(shape, dtype=bool)
            for b in range(shape[1]):
                dense[:, b] = from_event_list(ev[off[b] : off[b + 1]], sample_shape)
        if dense.shape != shape:
            raise ValueError(f"stored shape {shape} does not match the data {dense.shape}")
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: not a valid i2e-neuro event file ({e})") from e
    return EventBatch(dense, arrays.get("labels"), meta)
