"""Imports that print banners: done here with those lines filtered out, everything else kept.

Importing lava-dl prints two banners that say nothing about our run: torch's
``No CUDA runtime is found, using CUDA_HOME=...`` (``torch.utils.cpp_extension``, on machines
without a GPU) and lava-dl's ``WARNING: Prophesee Dataset Toolbox could not be found!`` (three
lines, from its object-detection datasets). Both are ``print`` calls, not warnings, so they are
filtered by redirecting ``sys.stdout`` / ``sys.stderr`` around the import only; other output of
the import is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from types import ModuleType

#: lines (and their indented continuation lines) dropped from the output of an import
NOISE = (
    re.compile(r"^No CUDA runtime is found, using CUDA_HOME="),
    re.compile(r"^WARNING: Prophesee Dataset Toolbox could not be found!"),
)


def _filtered(text: str) -> str:
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        if any(p.match(line) for p in NOISE):
            dropping = True
            continue
        if dropping and line.startswith(" "):  # the banner's continuation lines
            continue
        dropping = False
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def without_banners():
    """Run the body with the :data:`NOISE` lines of its stdout and stderr dropped."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        sys.stdout.write(_filtered(out.getvalue()))
        sys.stderr.write(_filtered(err.getvalue()))


def import_lava_dl() -> ModuleType:
    """``lava.lib.dl`` with ``slayer`` loaded, without the import banners."""
    if "lava.lib.dl.slayer" not in sys.modules:
        with without_banners():
            import lava.lib.dl.slayer  # noqa: F401
    import lava.lib.dl

    return lava.lib.dl
