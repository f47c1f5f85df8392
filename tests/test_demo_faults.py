"""``i2e-neuro demo`` checks every argument before stage 1 (no conversion, no training)."""

from __future__ import annotations

import time

import pytest

from i2e_neuro.cli import main


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "-1"], "--epochs -1: must be at least 0"),
        (["--qat-epochs", "0"], "--qat-epochs 0: must be at least 1"),
        (["--limit", "0"], "--limit 0: must be at least 1"),
        (["--check", "-3"], "--check -3: must be at least 0"),
    ],
)
def test_bad_arguments_fail_before_stage_one(tmp_path, capsys, args, message):
    start = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "run"), *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err, captured.err
    assert "1/5" not in captured.out
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - start < 30


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["demo", "--out", str(out)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
