#!/usr/bin/env bash
# Create .venv with Python 3.10 (Lava needs < 3.11) and install i2e-neuro with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

works() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; }

find_python310() {
    local candidate
    for candidate in "${PYTHON310:-}" "$(command -v python3.10 2>/dev/null || true)"; do
        if works "$candidate"; then echo "$candidate"; return; fi
    done
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python3.10 /root/.pyenv/versions/3.10.*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
        if works "$candidate"; then echo "$candidate"; return; fi
    done
}

if [ ! -x .venv/bin/python ] || ! works .venv/bin/python; then
    py=$(find_python310)
    if [ -z "$py" ]; then
        cat >&2 <<'MSG'
error: i2e-neuro needs Python 3.10 (lava-nc 0.10 and lava-dl 0.6 do not run on 3.11 or newer),
and none was found on PATH or under ~/.pyenv/versions.
Install one, then run make again, for example:
    pyenv install 3.10          # with pyenv
    sudo apt-get install python3.10 python3.10-venv   # Debian/Ubuntu with the deadsnakes PPA
or point PYTHON310 at an interpreter: make PYTHON310=/path/to/python3.10 test
MSG
        exit 1
    fi
    echo "setup: creating .venv with $py"
    rm -rf .venv
    "$py" -m venv .venv
fi
echo "setup: installing i2e-neuro and its dependencies into .venv (first time: a few minutes)"
# setuptools>=77 in the venv too, so that the wheel test can build without network access
.venv/bin/python -m pip install --quiet --upgrade pip 'setuptools>=77'
.venv/bin/python -m pip install --quiet -e '.[test]'
