"""Library imports run one way: ``export`` -> ``i2e_neuro``. Only the CLI (``i2e_neuro/cli.py``
and ``i2e_neuro/commands/``) may import ``export`` (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement in ``path`` names, function-local ones included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_only_the_cli_imports_export():
    package = ROOT / "i2e_neuro"
    allowed = {package / "cli.py"}
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path in allowed or (package / "commands") in path.parents:
            continue
        bad = sorted(m for m in imported_modules(path) if m == "export" or m.startswith("export."))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    assert not offenders, "library modules that import export:\n" + "\n".join(offenders)


def test_the_checker_sees_function_local_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    from export.hdf5 import load_hdf5\n    import export.lava.runner\n"
    )
    assert imported_modules(src) == {"export.hdf5", "export.lava.runner"}
