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


def test_the_summary_shows_the_default_runs_floor_and_whether_it_is_met():
    from i2e_neuro.commands.demo import ACCURACY_FLOOR, format_summary

    s = {
        "train_test_accuracy": 0.96,
        "lava_accuracy": 0.96,
        "accuracy_floor": ACCURACY_FLOOR,
        "samples": 360,
        "agreement": 1.0,
        "checked_samples": 20,
        "spike_mismatches": 0,
        "lava_and_lava_dl_counts_equal": True,
        "synops_per_sample": 1e5,
        "snn_uj": 0.1,
        "ann_uj": 1.0,
        "network_ann_over_snn": 10.0,
        "first_layer_ann_uj": 0.5,
        "first_layer_snn_uj": 0.05,
        "first_layer_i2e_uj": 0.001,
        "digits_event_rate": 0.17,
        "lava_seconds_per_sample": 0.1,
        "stage_seconds": {"1/5 I2E conversion": 1.0},
        "total_seconds": 1.0,
        "artifacts": "runs/demo",
    }
    assert ACCURACY_FLOOR >= 0.97  # raised with the population and the stem (was 95.0 %)
    assert "| floor of the default run | 97.0%: met |" in format_summary(
        {**s, "lava_accuracy": 0.975}
    )
    assert "NOT MET" in format_summary(s)
    assert "floor" not in format_summary({**s, "accuracy_floor": None})
