"""Docstrings and comments point only at documents the repository has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Markdown files the code writes at run time, not documents of the repository.
WRITTEN = {"summary.md"}


def test_referenced_documents_exist():
    missing = []
    for folder in ("i2e_neuro", "export", "scripts", "hw_configs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".yaml") or "__pycache__" in path.parts:
                continue
            for name in set(re.findall(r"[\w./-]+\.md\b", path.read_text(encoding="utf-8"))):
                if name not in WRITTEN and not (ROOT / name).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "references to documents the repository does not have:\n" + "\n".join(
        missing
    )


def test_architecture_lists_every_package():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    packages = [p.parent for p in (ROOT / "i2e_neuro").glob("*/__init__.py")]
    for pkg in packages:
        assert f"i2e_neuro/{pkg.name}/" in text, pkg.name
    for module in (ROOT / "export").glob("*.py"):
        if module.stem != "__init__":
            assert f"`{module.stem}`" in text, module.stem
