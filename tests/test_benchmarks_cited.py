"""Every script that BENCHMARKS.md cites still runs in its ``--quick`` form and ends with a JSON line.

The list is read from BENCHMARKS.md itself (every ``scripts/bench_*.py`` and ``scripts/check_*.py``
it mentions: the benchmarks; entry points such as ``scripts/train_slayer.py`` are the CLI's and
tested with it), so a benchmark added there is checked here; a cited script that does not exist
fails, none is skipped.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def cited_scripts() -> list[str]:
    text = (ROOT / "BENCHMARKS.md").read_text()
    return sorted(set(re.findall(r"scripts/(?:bench|check)_[A-Za-z0-9_]+\.py", text)))


def test_benchmarks_md_cites_scripts():
    assert "scripts/bench_i2e.py" in cited_scripts()


@pytest.mark.parametrize("script", cited_scripts())
def test_cited_script_runs_quick(script, tmp_path):
    path = ROOT / script
    assert path.is_file(), f"BENCHMARKS.md cites {script}, which does not exist"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(path), "--quick"],
        cwd=tmp_path,  # scripts must not depend on the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} --quick: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    assert lines, f"{script} --quick printed nothing"
    json.loads(lines[-1])  # the last line is JSON
