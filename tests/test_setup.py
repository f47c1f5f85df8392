"""``make setup`` on a machine without Python 3.10 (issue 25): uv, installed into the project's
``.tools/`` from the package index, provides one; where it cannot (no network), the message says
exactly what to install. Run with a PATH, PYENV_ROOT and PYTHON310 that find no 3.10."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "dirname", "cat", "rm", "env", "sh", "uname", "ldd", "getconf")


def _project(tmp_path: Path, python3: str | None) -> tuple[Path, dict]:
    proj = tmp_path / "proj"
    (proj / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup_venv.sh", proj / "scripts")
    shutil.copy(ROOT / "pyproject.toml", proj)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            os.symlink(found, bin_ / tool)
    if python3:
        os.symlink(python3, bin_ / "python3")
    env = {
        "PATH": str(bin_),
        "HOME": str(tmp_path / "home"),
        "PYENV_ROOT": str(tmp_path / "no-pyenv"),
        "PYTHON310": "",
        "PYTHON310_SEARCH": "",  # not /root/.pyenv nor /usr/bin: this machine has none
        "LANG": "C.UTF-8",
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return proj, env


def _run(proj: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/setup_venv.sh", "--find-python"],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _other_python() -> str | None:
    """A python3 that is not 3.10 and has pip (to install uv with)."""
    for candidate in ("/usr/bin/python3", shutil.which("python3.11"), shutil.which("python3.12")):
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys, pip; assert sys.version_info[:2] != (3, 10)"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return candidate
    return None


def test_without_python310_nor_pip_the_message_says_what_to_install(tmp_path):
    proj, env = _project(tmp_path, None)
    done = _run(proj, env)
    assert done.returncode == 1, done.stderr
    err = done.stderr
    assert "needs Python 3.10" in err and "no python3 with pip to install uv" in err, err
    assert "uv python install 3.10" in err and "pyenv install 3.10" in err, err
    assert "Traceback" not in err and not (proj / ".venv").exists()


@pytest.mark.slow
def test_without_python310_uv_is_installed_into_the_project_and_asked(tmp_path):
    host = _other_python()
    if host is None:
        pytest.skip("no python3 other than 3.10 with pip on this machine")
    proj, env = _project(tmp_path, host)
    done = _run(proj, env)
    err = done.stderr
    assert "Traceback" not in err
    assert f"installing uv into {proj / '.tools' / 'uv'}" in err, err
    if not (proj / ".tools" / "uv" / "bin" / "uv").exists():  # the package index unreachable
        assert done.returncode == 1 and "could not install uv" in err, err
        assert "uv python install 3.10" in err, err
        return
    assert "uv python install 3.10" in err, err  # says what it does
    if done.returncode == 0:  # internet access: a 3.10 inside the project
        py = done.stdout.strip().splitlines()[-1]
        assert py.startswith(str(proj / ".tools" / "python")), py
        version = subprocess.run(
            [py, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        ).stdout
        assert version.strip() == "(3, 10)"
    else:  # no internet beyond the package index: the clear message, nothing half made
        assert "uv could not download Python 3.10" in err and "needs Python 3.10" in err, err
        assert not (proj / ".venv").exists()
    assert not (Path(env["HOME"]) / ".local" / "bin" / "uv").exists()  # not the user's system


def test_ci_finds_its_pyenv_python_first(tmp_path):
    """Where a 3.10 exists (CI's pyenv), uv is never involved."""
    found = sorted(Path("/root/.pyenv/versions").glob("3.10.*/bin/python3.10"))
    if not found:
        pytest.skip("no pyenv 3.10 here")
    proj, env = _project(tmp_path, None)
    env["PYTHON310_SEARCH"] = str(found[0])
    done = _run(proj, env)
    assert done.returncode == 0 and done.stdout.strip() == str(found[0]), done.stderr
    assert not (proj / ".tools").exists()
