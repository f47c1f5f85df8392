"""Readable logs: no import banners from lava-dl / torch, no progress-bar frames in a file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2e_neuro.quiet import _filtered, without_banners

ROOT = Path(__file__).resolve().parents[2]
BANNERS = ("No CUDA runtime is found", "Prophesee")


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


def test_the_banner_filter_drops_only_the_banners(capsys):
    text = (
        "No CUDA runtime is found, using CUDA_HOME='/usr/local'\n"
        "WARNING: Prophesee Dataset Toolbox could not be found!\n"
        "         Only Prophesee DVS demo will not run properly.\n"
        "a line of our own\n"
        "  indented, kept\n"
    )
    assert _filtered(text) == "a line of our own\n  indented, kept\n"
    with without_banners():
        print("No CUDA runtime is found, using CUDA_HOME='/x'", file=sys.stderr)
        print("kept")
    assert capsys.readouterr() == ("kept\n", "")


def test_importing_the_models_prints_no_banner(tmp_path):
    done = _run("-c", "import i2e_neuro.models.qat; print('imported')", cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    assert done.stdout == "imported\n", done.stdout
    done = _run("-m", "i2e_neuro.cli", "train", "--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("usage: i2e-neuro train"), done.stdout
    assert not any(b in done.stdout for b in BANNERS)


@pytest.mark.slow
def test_a_train_log_in_a_file_is_plain_lines(tmp_path):
    out = tmp_path / "run"
    argv = ["-m", "i2e_neuro.cli", "train", "--epochs", "1", "--qat-epochs", "0"]
    argv += ["--limit-train", "32", "--limit-test", "16", "--batch-size", "16", "--out", str(out)]
    done = _run(*argv, cwd=tmp_path)
    log = done.stdout
    assert done.returncode == 0, log
    assert "\r" not in log and not any(b in log for b in BANNERS), log
    lines = log.splitlines()
    assert lines[0].startswith("train digits") and lines[1].startswith("epoch 1/1 float loss")
    assert json.loads(lines[-1])["epochs"] == 1 and len(lines) == 3, lines
