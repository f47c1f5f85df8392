"""The import rules of docs/ARCHITECTURE.md, over every module (function-local imports counted):

* library imports run one way, ``export`` -> ``i2e_neuro``: only the CLI (``i2e_neuro/cli.py``
  and ``i2e_neuro/commands/``) imports ``export``;
* only ``export/lava/`` imports Lava (``lava.magma``, ``lava.proc``, ``lava.utils``, lava-dl's
  ``netx``); lava-dl's ``slayer`` (``lava.lib.dl``) is the training side's and may be imported
  anywhere;
* no import circle anywhere in ``i2e_neuro/`` or ``export/``;
* stage 1 (``i2e_neuro/i2e/``) imports nothing of stage 2 (``i2e_neuro/datasets/``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("i2e_neuro", "export")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement in ``path`` names, function-local ones included;
    ``from a import b`` names ``a.b`` too (the caller keeps what is a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports by name (a package's ``__init__`` only where
    the package itself is named, as in ``import export`` or ``from export import load``)."""
    files = module_files()
    graph = {}
    for name, path in files.items():
        targets = set()
        for imported in imported_modules(path):
            if imported in files:
                targets.add(imported)
            elif imported.rsplit(".", 1)[0] in files and "." in imported:
                targets.add(imported.rsplit(".", 1)[0])  # from module import name
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _offenders(select, forbidden) -> list[str]:
    found = []
    for name, path in module_files().items():
        if not select(name):
            continue
        bad = sorted(m for m in imported_modules(path) if forbidden(m))
        if bad:
            found.append(f"{path.relative_to(ROOT)}: {', '.join(bad)}")
    return found


def is_lava(module: str) -> bool:
    """Lava itself (``lava.*``), lava-dl's ``slayer`` (``lava.lib.dl``, ``lava.lib.dl.slayer*``)
    aside."""
    if module != "lava" and not module.startswith("lava."):
        return False
    return not (module == "lava.lib.dl" or module.startswith("lava.lib.dl.slayer"))


def test_only_the_cli_imports_export():
    offenders = _offenders(
        lambda n: n.startswith("i2e_neuro") and n != "i2e_neuro.cli" and ".commands" not in n,
        lambda m: m == "export" or m.startswith("export."),
    )
    assert not offenders, "library modules that import export:\n" + "\n".join(offenders)


def test_only_export_lava_imports_lava():
    offenders = _offenders(lambda n: not n.startswith("export.lava"), is_lava)
    assert not offenders, "modules outside export/lava that import Lava:\n" + "\n".join(offenders)


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_stage_one_imports_nothing_of_the_datasets():
    offenders = _offenders(
        lambda n: n.startswith("i2e_neuro.i2e"), lambda m: m.startswith("i2e_neuro.datasets")
    )
    assert not offenders, "i2e/ modules that import datasets/:\n" + "\n".join(offenders)


def test_lava_free_export_modules_load_no_lava():
    """Importing every export module outside export/lava loads no Lava module at all."""
    names = [
        n for n in module_files() if n.startswith("export") and not n.startswith("export.lava")
    ]
    code = (
        "import importlib, sys\n"
        f"for n in {names!r}: importlib.import_module(n)\n"
        "print(sorted(m for m in sys.modules if m == 'lava' or m.startswith('lava.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_the_checkers_see_what_they_must(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    from export.hdf5 import load_hdf5\n    import export.lava.runner\n"
    )
    assert {"export.hdf5", "export.lava.runner"} <= imported_modules(src)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert is_lava("lava.magma.core") and is_lava("lava.lib.dl.netx")
    assert not is_lava("lava.lib.dl.slayer.neuron") and not is_lava("lavaish")


@pytest.mark.parametrize("old", ["export.fast_models", "export.runner", "export.lava_graph"])
def test_old_module_paths_are_gone(old):
    """Old paths are listed in the README's changelog, not kept as shims (a shim outside
    export/lava would import Lava)."""
    assert not (ROOT / Path(*old.split("."))).with_suffix(".py").exists()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    changelog = readme.partition("\n## Changelog")[2].partition("\n## ")[0]
    assert changelog, "the README has no '## Changelog' section"
    assert f"`{old}`" in changelog


def test_the_package_and_the_cli_start_without_torch():
    """``import i2e_neuro`` and ``i2e-neuro simulate --help`` load no torch (``I2E`` and ``i2e``
    come on first use, and then are the conversion's)."""
    code = (
        "import sys, i2e_neuro, i2e_neuro.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from i2e_neuro import I2E, i2e\n"
        "from i2e_neuro.i2e.conversion import I2E as conversion_I2E\n"
        "assert I2E is conversion_I2E and callable(i2e) and i2e_neuro.i2e is i2e\n"
        "assert 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
