"""The one folder walk of the project: image folders for ``convert``, ``simulate --data DIR`` and
``train --dataset imagefolder`` all go through :func:`walk_files`.

The rule: hidden names are skipped; a symbolic link to a folder is followed, but every real
folder is read at most once. A link that leads back to a folder it lies in (a loop: ``up -> ..``)
or to a folder that is read anyway (the same images twice, perhaps under another class) is
refused with :class:`FolderLinkError` naming the link and where it leads; nothing is guessed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


class FolderLinkError(ValueError):
    """A symbolic link that would make a folder walk loop or read a folder twice."""


def walk_files(root: str | Path, keep: Callable[[str], bool] = lambda name: True) -> list[Path]:
    """Files under ``root`` whose name ``keep`` accepts, sorted by relative path (see the module)."""
    root = Path(root)
    found: list[Path] = []
    read: dict[Path, Path] = {}  # real folder -> the path it was read as
    links: dict[Path, str] = {}  # real folder -> the link it was first read through

    def visit(folder: Path, real: Path) -> None:
        read[real] = folder
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise FolderLinkError(f"{folder}: cannot list this folder ({e.strerror or e})") from e
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                target = Path(os.path.realpath(path))
                if entry.is_symlink():
                    shown = f"{path} -> {os.readlink(path)}"
                    if real == target or real.is_relative_to(target):
                        raise FolderLinkError(
                            f"{shown}: symbolic link loops back to {target}, a folder it lies in; "
                            "remove the link or point it outside the tree"
                        )
                    if target in read or any(r.is_relative_to(target) for r in read):
                        raise FolderLinkError(
                            f"{shown}: symbolic link leads to {target}, which is read already "
                            f"(as {read.get(target, target)}); its images would count twice"
                        )
                    links[target] = shown
                elif target in read:  # reached through a link before its own place
                    if target in links:
                        raise FolderLinkError(
                            f"{links[target]}: symbolic link leads to {target}, which is read "
                            f"already (as {path}); its images would count twice"
                        )
                    continue  # a bind mount or similar: read once
                visit(path, target)
            elif entry.is_file(follow_symlinks=True) and keep(entry.name):
                found.append(path)

    visit(root, Path(os.path.realpath(root)))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
