#!/usr/bin/env bash
# Create .venv with Python 3.10 (Lava needs < 3.11) and install i2e-neuro with its test extras.
# Python 3.10 is looked for on PATH, in PYTHON310, under pyenv and in the usual places; where there
# is none, uv (installed from the package index into .tools/uv) downloads one into .tools/python.
# Where that cannot work (no network), the message says what to install.
# Usage: scripts/setup_venv.sh [--find-python]   (--find-python: print the interpreter and stop)
set -euo pipefail
cd "$(dirname "$0")/.."

works() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; }

# Fixed places searched after PATH (PYTHON310_SEARCH replaces them: a list of glob patterns).
SEARCH_DEFAULT="${PYENV_ROOT:-$HOME/.pyenv}/versions/3.10.*/bin/python3.10 /root/.pyenv/versions/3.10.*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10"

find_python310() {
    local candidate
    for candidate in "${PYTHON310:-}" "$(command -v python3.10 2>/dev/null || true)"; do
        if works "$candidate"; then echo "$candidate"; return; fi
    done
    for candidate in ${PYTHON310_SEARCH-$SEARCH_DEFAULT}; do
        if works "$candidate"; then echo "$candidate"; return; fi
    done
}

# Where no 3.10 is installed: uv (from the package index, into .tools/uv of this project, not
# the user's system) downloads one into .tools/python. Everything stays inside the project.
TOOLS="$PWD/.tools"

uv_binary() {
    if [ -x "$TOOLS/uv/bin/uv" ]; then echo "$TOOLS/uv/bin/uv"; return; fi
    if command -v uv >/dev/null 2>&1; then command -v uv; return; fi
    local host
    for host in python3 python; do
        if command -v "$host" >/dev/null 2>&1 && "$host" -m pip --version >/dev/null 2>&1; then
            echo "setup: no Python 3.10 found; installing uv into $TOOLS/uv (pip install --target, from the package index)" >&2
            if "$host" -m pip install --quiet --disable-pip-version-check --target "$TOOLS/uv" uv >&2 \
                && [ -x "$TOOLS/uv/bin/uv" ]; then
                echo "$TOOLS/uv/bin/uv"; return
            fi
            echo "setup: could not install uv with $host -m pip" >&2
            return
        fi
    done
    echo "setup: no Python 3.10 found, and no python3 with pip to install uv with" >&2
}

python310_by_uv() {
    local uv
    uv=$(uv_binary)
    [ -n "$uv" ] || return 0
    export UV_PYTHON_INSTALL_DIR="$TOOLS/python" UV_CACHE_DIR="$TOOLS/uv-cache" UV_PYTHON_PREFERENCE=only-managed
    echo "setup: downloading Python 3.10 with uv into $TOOLS/python: $uv python install 3.10" >&2
    if "$uv" python install 3.10 >&2; then
        "$uv" python find 3.10 2>/dev/null || true
    else
        echo "setup: uv could not download Python 3.10 (no internet access?)" >&2
    fi
}

# --find-python: only find (or fetch) the interpreter, print it and stop.
if [ "${1:-}" = "--find-python" ] || [ ! -x .venv/bin/python ] || ! works .venv/bin/python; then
    py=$(find_python310)
    if [ -z "$py" ]; then
        py=$(python310_by_uv)
        works "$py" || py=""
    fi
    if [ -z "$py" ]; then
        cat >&2 <<'MSG'
error: i2e-neuro needs Python 3.10 (lava-nc 0.10 and lava-dl 0.6 do not run on 3.11 or newer);
none was found on PATH, under ~/.pyenv/versions or in .tools/python, and uv could not provide
one here (it downloads Python from github.com, which needs internet access).
Install one, then run make again, for example:
    uv python install 3.10                     # uv (pip install uv), with internet access
    make PYTHON310="$(uv python find 3.10)" setup
    pyenv install 3.10                         # with pyenv
    sudo apt-get install python3.10 python3.10-venv   # Ubuntu with the deadsnakes PPA
or point PYTHON310 at an interpreter: make PYTHON310=/path/to/python3.10 test
MSG
        if [ -x "$TOOLS/uv/bin/uv" ]; then
            echo "(uv itself is installed: $TOOLS/uv/bin/uv; run make again where github.com can be reached)" >&2
        fi
        exit 1
    fi
    if [ "${1:-}" = "--find-python" ]; then echo "$py"; exit 0; fi
    echo "setup: creating .venv with $py"
    rm -rf .venv
    "$py" -m venv .venv
fi
echo "setup: installing i2e-neuro and its dependencies into .venv (first time: a few minutes)"
# setuptools>=77 in the venv too, so that the wheel test can build without network access
.venv/bin/python -m pip install --quiet --upgrade pip 'setuptools>=77'
.venv/bin/python -m pip install --quiet -e '.[test]'
