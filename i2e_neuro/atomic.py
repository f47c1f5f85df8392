"""Write files so that a crash never leaves a half-written one behind, nor destroys an input.

Every writer builds the whole file first (HDF5 and ``.npz`` in memory), then writes the bytes
to a hidden temporary file beside the target and renames it onto the target. A failed write
(disk full, ``ulimit -f``, permissions) raises ``OSError`` naming the target, removes the
temporary file and leaves an earlier file at the target untouched.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator


class WriteError(OSError):
    """An output that could not be written; its message names the file once:
    ``cannot write PATH: reason`` (``errno`` and ``filename`` kept)."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``OSError`` raised in the block is re-raised naming ``path`` (errno kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, path)
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        reason = e.strerror or str(e)
        raise WriteError(e.errno, f"cannot write {path}: {reason}", str(path)) from e
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Atomically write ``data`` to ``path`` (ordinary file I/O: a full disk is an ``OSError``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write a text file."""
    write_bytes(path, text.encode())


@contextlib.contextmanager
def hdf5_file(path: str | Path) -> Iterator[Any]:
    """An ``h5py.File`` built in memory and written atomically to ``path`` when the block ends.

    HDF5's own writes to a full disk can crash the process (h5py); here the library only ever
    writes to memory, and the bytes go to disk with :func:`write_bytes`.
    """
    import h5py

    f = h5py.File(
        f"in-memory-{uuid.uuid4().hex}-{Path(path).name}", "w", driver="core", backing_store=False
    )
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    write_bytes(path, image)


def savez(path: str | Path, compressed: bool = True, **arrays: Any) -> Path:
    """``numpy.savez[_compressed]`` built in memory, then written atomically to ``path``."""
    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return write_bytes(path, buf.getbuffer())


def refuse_overwriting_inputs(
    outputs: Iterable[tuple[str, str | Path | None]],
    inputs: Iterable[tuple[str, str | Path | None]],
    roots: Iterable[tuple[str, str | Path | None]] = (),
) -> None:
    """Raise ``ValueError`` naming both arguments if an output would overwrite an input.

    An output may not resolve (symlinks followed) to an input or to one of ``roots``, nor lie
    inside an input folder (its files would become inputs of the next run).  ``roots`` are
    dataset folders read by fixed names, where outputs inside are harmless.  Arguments are
    ``(argument name, path)`` pairs; ``None`` paths are skipped.
    """
    resolved = lambda pairs: [  # noqa: E731
        (name, Path(p).expanduser().resolve()) for name, p in pairs if p is not None
    ]
    ins, root_dirs = resolved(inputs), resolved(roots)
    for out_name, out in outputs:
        if out is None:
            continue
        o = Path(out).expanduser().resolve()
        for in_name, i in ins + root_dirs:
            if o == i:
                raise ValueError(
                    f"{out_name} {out}: is the same file or folder as {in_name}; refusing to "
                    "overwrite an input (choose another output path)"
                )
        for in_name, i in ins:
            if i.is_dir() and i in o.parents:
                raise ValueError(
                    f"{out_name} {out}: lies inside the input folder {in_name} {i}; choose an "
                    "output outside it"
                )
