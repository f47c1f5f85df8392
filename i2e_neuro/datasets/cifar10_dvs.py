"""CIFAR10-DVS (Li et al., Front. Neurosci. 2017): real DVS recordings for the sim-to-real step.

The user downloads and unzips the original release (10 zip files from figshare), giving::

    root/
      airplane/    *.aedat   (1,000 recordings per class)
      automobile/  *.aedat
      ...
      truck/       *.aedat

(SpikingJelly's own download layout, ``root/extract/<class>/``, is accepted too.) Each recording
is read with SpikingJelly's CIFAR10-DVS parsing code, integrated into ``T`` frames of 2 x 128 x 128
and binarised: a pixel/polarity fires in a frame when it has at least one event there. Samples come
out in the project's I2E layout, ``[T, 2, H, W]`` bool with channel 0 = ON, 1 = OFF, and labels are
the CIFAR-10 class indices (airplane 0 ... truck 9), the same as I2E-CIFAR10's.

File format. The recordings are jAER files (``#!AER-DAT2.0`` header lines starting with ``#``,
then big-endian 32-bit ``[address, timestamp]`` pairs, timestamps in µs), which is what
SpikingJelly's reader parses: it skips the ``#`` lines and reads the rest as ``>u4`` pairs, with no
AEDAT 3.x packet headers. The DVS128 address holds ``x`` in bits 1-7, ``y`` in bits 8-14 and the
polarity in bit 0. SpikingJelly's ``CIFAR10DVS.load_origin_data`` maps them to
``x' = 127 - y``, ``y' = 127 - x``, ``p' = 1 - bit0``; we keep exactly that mapping, so ``p' = 1``
is ON (jAER's DVS128 extractor: ``type = 1 - (addr & 1)``, type 1 = ON). SpikingJelly's frames put
``p' = 0`` in channel 0; ours put ON first, so channel 0 here is SpikingJelly's channel 1.

SpikingJelly 0.0.0.0.14's ``parse_raw_address`` calls ``np.bool``, which NumPy >= 1.24 removed, so
:func:`load_recording` reuses its header skipper, bit reader and masks but not that one function.
Frames are integrated with SpikingJelly's ``integrate_events_by_fixed_frames_number``
(``split_by="number"``, the default: each frame gets ``N // T`` events, the last one the rest);
``split_by="time"`` uses equal time windows with the same boundaries as SpikingJelly's, except
that an empty window gives an empty frame instead of an IndexError.

Split. There is no official train/test split; the customary one is 9:1 per class. Here the files
of each class are sorted by name and the first ``ceil(0.9 * n)`` are the training set, the rest the
test set: the same as SpikingJelly's ``split_to_train_test_set(0.9, dataset, 10)`` without
``random_split`` (it also takes ``ceil`` of the sorted per-class order). Deterministic; no cache.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from i2e_neuro.datasets.registry import CIFAR10_CLASSES

#: CIFAR-10 class names in label order (the release's folder names)
CLASSES = CIFAR10_CLASSES
HEIGHT = WIDTH = 128
SPLITS = ("train", "test")

# SpikingJelly's CIFAR10DVS.load_origin_data parameters for the DVS128 address.
_X_MASK, _X_SHIFT = 0xFE, 1
_Y_MASK, _Y_SHIFT = 0x7F00, 8
_P_MASK = 1


def expected_layout(root: str | Path) -> str:
    return (
        f"expected {root}/<class>/*.aedat for the classes {', '.join(CLASSES)} "
        "(the unzipped CIFAR10-DVS release, e.g. airplane/cifar10_airplane_0.aedat)"
    )


def load_recording(path: str | Path) -> dict[str, np.ndarray]:
    """Events of one ``.aedat`` recording: ``{'t', 'x', 'y', 'p'}`` as SpikingJelly returns them.

    ``x``, ``y`` in 0..127 (already flipped as SpikingJelly does), ``p`` = 1 for ON, 0 for OFF,
    ``t`` the raw timestamps (µs).
    """
    from spikingjelly.datasets.cifar10_dvs import read_bits, skip_header

    path = Path(path)
    try:
        with open(path, "rb") as fp:
            start = skip_header(fp)
            fp.seek(start)
            data = fp.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a CIFAR10-DVS .aedat file (no '#' header lines)") from exc
    if len(data) % 8:
        raise ValueError(
            f"{path}: truncated event data ({len(data)} bytes after the header, not a multiple of 8)"
        )
    words = np.frombuffer(data, dtype=">u4")
    addr, t = words[0::2], words[1::2]
    x = read_bits(addr, _X_MASK, _X_SHIFT).astype(np.int64)
    y = read_bits(addr, _Y_MASK, _Y_SHIFT).astype(np.int64)
    p = read_bits(addr, _P_MASK, None).astype(np.int64)
    return {"t": t.astype(np.int64), "x": (WIDTH - 1) - y, "y": (HEIGHT - 1) - x, "p": 1 - p}


def _time_segments(t: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """SpikingJelly's ``split_by='time'`` boundaries, tolerant of empty windows."""
    n = t.size
    dt = (t[-1] - t[0]) // frames
    starts = t[0] + dt * np.arange(frames)
    j_l = np.searchsorted(t, starts, side="left")
    j_r = np.searchsorted(t, starts + dt, side="left")
    j_r[-1] = n
    j_l = np.minimum(j_l, j_r)
    return j_l, j_r


def integrate_frames(
    events: dict[str, np.ndarray],
    timesteps: int = 8,
    split_by: str = "number",
    height: int = HEIGHT,
    width: int = WIDTH,
) -> np.ndarray:
    """Events -> bool frames ``[T, 2, H, W]`` (channel 0 ON, 1 OFF), a pixel set if it had >= 1 event."""
    from spikingjelly.datasets import (
        integrate_events_by_fixed_frames_number,
        integrate_events_segment_to_frame,
    )

    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps={timesteps!r}: must be an integer >= 1")
    if split_by not in ("number", "time"):
        raise ValueError(f"split_by={split_by!r}: must be 'number' or 'time'")
    t = np.asarray(events["t"])
    if split_by == "number":
        counts = integrate_events_by_fixed_frames_number(events, "number", timesteps, height, width)
    else:
        counts = np.zeros((timesteps, 2, height, width))
        if t.size:
            if np.any(np.diff(t) < 0):
                raise ValueError("split_by='time' needs events sorted by timestamp")
            j_l, j_r = _time_segments(t, timesteps)
            for i in range(timesteps):
                counts[i] = integrate_events_segment_to_frame(
                    events["x"], events["y"], events["p"], height, width, int(j_l[i]), int(j_r[i])
                )
    # SpikingJelly: channel c holds p == c (0 = OFF, 1 = ON); ours: 0 = ON, 1 = OFF.
    return counts[:, ::-1] > 0


def _resolve_root(root: Path, classes: Sequence[str]) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR10-DVS root {root} does not exist; {expected_layout(root)}")
    if not any((root / c).is_dir() for c in classes) and any(
        (root / "extract" / c).is_dir() for c in classes
    ):
        return root / "extract"  # SpikingJelly's download layout
    return root


def list_recordings(root: str | Path, classes: Sequence[str] = CLASSES) -> dict[str, list[Path]]:
    """Sorted ``*.aedat`` paths per class; clear errors for a missing root, class folder or empty class."""
    root = Path(root).expanduser()
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(
            f"classes={list(classes)!r}: must be CIFAR-10 class names out of {', '.join(CLASSES)}"
        )
    base = _resolve_root(root, classes)
    missing = [c for c in classes if not (base / c).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR10-DVS root {root} lacks the class folder(s) {', '.join(missing)}; {expected_layout(root)}"
        )
    files = {}
    for c in classes:
        found = sorted(
            (p for p in (base / c).iterdir() if p.suffix == ".aedat" and p.is_file()),
            key=lambda p: p.name,
        )
        if not found:
            raise FileNotFoundError(f"{base / c}: no .aedat recordings; {expected_layout(root)}")
        files[c] = found
    return files


def split_files(files: Sequence[Path], train_ratio: float = 0.9) -> tuple[list[Path], list[Path]]:
    """First ``ceil(train_ratio * n)`` files (as given, i.e. sorted) for training, the rest for testing."""
    if not 0 < train_ratio <= 1:
        raise ValueError(f"train_ratio={train_ratio!r}: must be in (0, 1]")
    n_train = math.ceil(len(files) * train_ratio - 1e-9)
    return list(files[:n_train]), list(files[n_train:])


class CIFAR10DVS(torch.utils.data.Dataset):
    """CIFAR10-DVS recordings as I2E-layout samples ``([T, 2, 128, 128] bool tensor, label)``.

    ``split`` is ``"train"``, ``"test"`` or ``"all"``; ``classes`` a subset of :data:`CLASSES`
    (labels stay the CIFAR-10 indices). ``transform`` is applied to the bool tensor,
    ``target_transform`` to the label.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        timesteps: int = 8,
        split_by: str = "number",
        train_ratio: float = 0.9,
        classes: Sequence[str] = CLASSES,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ):
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split={split!r}: must be 'train', 'test' or 'all'")
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps={timesteps!r}: must be an integer >= 1")
        if split_by not in ("number", "time"):
            raise ValueError(f"split_by={split_by!r}: must be 'number' or 'time'")
        self.root = Path(root).expanduser()
        self.split, self.timesteps, self.split_by = split, timesteps, split_by
        self.transform, self.target_transform = transform, target_transform
        self.samples: list[tuple[Path, int]] = []
        for name, files in list_recordings(self.root, classes).items():
            train, test = split_files(files, train_ratio)
            chosen = {"train": train, "test": test, "all": files}[split]
            self.samples += [(path, CLASSES.index(name)) for path in chosen]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            frames = integrate_frames(load_recording(path), self.timesteps, self.split_by)
        except ValueError as exc:
            if str(path) in str(exc):
                raise
            raise ValueError(f"{path}: {exc}") from exc
        sample = torch.from_numpy(np.ascontiguousarray(frames))
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return sample, label


def collate_time_first(
    batch: Sequence[tuple[torch.Tensor, Any]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """DataLoader ``collate_fn``: samples ``[T, 2, H, W]`` -> events ``[T, B, 2, H, W]`` and labels ``[B]``."""
    events = torch.stack([s for s, _ in batch], dim=1)
    labels = torch.as_tensor([y for _, y in batch])
    return events, labels
