"""Packaging: every package is listed in pyproject.toml, and the built wheel (and an editable
install) runs ``i2e-neuro energy --first-layer`` from another folder, with ``hw_configs`` found
inside the installed package.

The slow tests install with ``--no-deps`` into a throwaway venv whose dependencies come from
the environment running the tests (a ``.pth`` file naming its site-packages; the venv's own
``--system-site-packages`` only reaches the base interpreter's). They run from a temporary
folder without ``PYTHONPATH``, so the source tree cannot be picked up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomli
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "i2e_neuro", "export", "hw_configs")
#: packages that live outside the i2e_neuro/ folder tree or hold data only
EXTRA_PACKAGES = {"i2e_neuro.hw_configs", "i2e_neuro.data.samples"}


def pyproject() -> dict:
    return tomli.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed_and_hw_configs_ships():
    cfg = pyproject()
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=["i2e_neuro*", "export*"]))
    assert listed == found | EXTRA_PACKAGES, "update [tool.setuptools] packages in pyproject.toml"
    assert cfg["tool"]["setuptools"]["package-dir"] == {"i2e_neuro.hw_configs": "hw_configs"}
    assert cfg["tool"]["setuptools"]["package-data"]["i2e_neuro.hw_configs"] == ["*.yaml"]
    assert cfg["project"]["license"] == "BSD-3-Clause"  # SPDX string: no deprecation banner
    assert any(r.startswith("setuptools>=77") for r in cfg["build-system"]["requires"])


def _source_copy(tmp: Path) -> Path:
    """The project's files in a fresh folder, so that building leaves the checkout untouched."""
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    return src


def _venv(tmp: Path) -> Path:
    """A throwaway venv whose dependencies come from the environment running the tests."""
    venv = tmp / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    site = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "project-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _pip(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_clean_env())


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _check_installed(venv: Path, tmp: Path, package_root: Path) -> None:
    """``i2e-neuro energy --first-layer --json`` from another folder gives the paper's figures,
    with the code and hw_configs taken from ``package_root``."""
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(venv / "bin" / "i2e-neuro"), "energy", "--first-layer", "--json"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=_clean_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ann_macs"] == 118_013_952 and result["snn_ops"] == 78_675_968
    assert result["ann_uj"] == pytest.approx(542.864, abs=1e-3)
    assert result["snn_uj"] == pytest.approx(28.663, abs=1e-3)
    assert result["i2e_uj"] == pytest.approx(0.3613, abs=1e-4)
    assert result["ratio"] == pytest.approx(18.94, abs=0.01)
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import i2e_neuro, export; from i2e_neuro.energy import hw; "
            "print(i2e_neuro.__file__); print(export.__file__); "
            "print(hw.load_hw_config('loihi2')['_path'])",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=_clean_env(),
        check=True,
    ).stdout.split()
    assert all(Path(p).resolve().is_relative_to(package_root.resolve()) for p in where), where
    assert not any(Path(p).resolve().is_relative_to(ROOT) for p in where), where


@pytest.mark.slow
def test_wheel_installs_and_runs_from_another_folder(tmp_path):
    src = _source_copy(tmp_path)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), "."]
    try:
        import setuptools

        offline = int(setuptools.__version__.split(".")[0]) >= 77
    except ImportError:
        offline = False
    proc = subprocess.run(
        build + (["--no-build-isolation"] if offline else []),
        capture_output=True,
        text=True,
        cwd=src,
        env=_clean_env(),
    )
    if (
        proc.returncode != 0
        and not offline
        and "setuptools" in proc.stderr
        and "find" in proc.stderr
    ):
        pytest.skip(f"cannot fetch setuptools>=77 for the isolated build: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = wheels.glob("i2e_neuro-*.whl")
    venv = _venv(tmp_path)
    proc = _pip(venv, "install", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "deprecat" not in (proc.stdout + proc.stderr).lower()
    site = Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"])
    assert (site / "i2e_neuro" / "hw_configs" / "loihi2.yaml").is_file()
    _check_installed(venv, tmp_path, site)


@pytest.mark.slow
def test_editable_install_finds_hw_configs_too(tmp_path):
    src = _source_copy(tmp_path)
    venv = _venv(tmp_path)
    proc = _pip(venv, "install", "--no-deps", "-e", str(src), cwd=tmp_path)
    if proc.returncode != 0 and "setuptools" in proc.stderr and "find" in proc.stderr:
        pytest.skip(f"cannot fetch setuptools>=77 for the isolated build: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr
    _check_installed(venv, tmp_path, src)
