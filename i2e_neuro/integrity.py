"""Detect damaged files before their contents are used: zip CRCs and HDF5 checksums.

``torch.load`` does not check the CRC-32 of a checkpoint's zip members, so flipped bytes in
the weights load silently; :func:`verify_zip` reads every member and names the damaged one.
HDF5 files written by this project carry a ``checksums`` root attribute (CRC-32 of every
dataset and of the root attributes), checked by :func:`verify_hdf5`.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

CHECKSUMS = "checksums"


class DamagedFile(ValueError):
    """A file whose stored checksums do not match its contents; the message names the member."""


def verify_zip(path: str | Path) -> None:
    """Raise :class:`DamagedFile` naming ``path`` and the member whose CRC-32 does not match.

    Files that are not zip archives are left to their reader (which refuses them by name).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, ValueError) as e:
        raise DamagedFile(f"{path}: damaged zip archive ({e})") from e
    if bad is not None:
        raise DamagedFile(f"{path}: damaged: member {bad!r} fails its CRC-32 check")


def _crc(value: Any) -> int:
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.kind == "O":  # variable-length strings
        data = json.dumps([str(v) for v in arr.reshape(-1)]).encode()
    else:
        data = np.ascontiguousarray(arr).tobytes()
    return zlib.crc32(f"{arr.dtype.str}{arr.shape}".encode() + data)


def hdf5_checksums(f) -> dict[str, int]:
    """CRC-32 of every dataset (by path) and of the root attributes (``/@attrs``)."""
    import h5py

    sums: dict[str, int] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            sums[name] = _crc(obj[()])

    f.visititems(visit)
    attrs = {k: str(v) if not hasattr(v, "tolist") else v.tolist() for k, v in f.attrs.items()}
    attrs.pop(CHECKSUMS, None)
    sums["/@attrs"] = zlib.crc32(json.dumps(attrs, sort_keys=True, default=str).encode())
    return sums


def add_hdf5_checksums(f) -> None:
    """Store :func:`hdf5_checksums` as the root attribute ``checksums`` (call last)."""
    f.attrs[CHECKSUMS] = json.dumps(hdf5_checksums(f), sort_keys=True)


def verify_hdf5(f, path: str | Path) -> None:
    """Raise :class:`DamagedFile` naming ``path`` and the damaged dataset; files without a
    ``checksums`` attribute (older ones) are accepted as they are."""
    if CHECKSUMS not in f.attrs:
        return
    stored = json.loads(str(f.attrs[CHECKSUMS]))
    actual = hdf5_checksums(f)
    for name in sorted(set(stored) | set(actual)):
        if stored.get(name) != actual.get(name):
            what = "the root attributes" if name == "/@attrs" else f"dataset {name!r}"
            raise DamagedFile(f"{path}: damaged: {what} does not match its stored checksum")


def check_torch_file(path: str | Path) -> None:
    """Refuse, by name, what ``torch.load`` would fail on obscurely: an empty file, a file that
    is neither a zip archive nor a pickle, or a damaged zip (:func:`verify_zip`)."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DamagedFile(f"{path}: empty file (0 bytes), not a checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise DamagedFile(
            f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle; "
            f"starts with {head!r})"
        )
    verify_zip(path)


def torch_error_text(error: BaseException) -> str:
    """The first line of a ``torch.load`` error, without torch's advice to set
    ``weights_only=False`` (never safe for a file of unknown origin)."""
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if "weights_only" not in ln and "Weights only load failed" not in ln]
    first = (keep or lines or [type(error).__name__])[0]
    if "weights_only" in first or "Weights only" in first:
        return "the file holds objects that are not plain tensors and numbers (refused: unsafe)"
    return first[:200]
