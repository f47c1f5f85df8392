"""scripts/bench_scale.py and scripts/check_gpu.py in their --quick form: exit 0, JSON last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # both run lava-dl networks (bench_scale also a Lava graph)

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, timeout: int = 600) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_check_gpu_quick():
    report = run_script("check_gpu.py", "--quick")
    assert report["cuda"] == torch.cuda.is_available()
    checks = report["checks"]
    assert set(checks) == {"i2e", "slayer", "amp", "ddp", "throughput"}
    assert report["failed"] == []
    if not report["cuda"]:
        assert "CUDA is not available" in report["note"]
        assert checks["slayer"]["status"] == "cpu only" and checks["slayer"]["cpu_spikes"] > 0
        assert checks["ddp"]["backend"] == "gloo" and checks["ddp"]["world_size"] == 1
        assert checks["amp"]["status"] == "skipped"


def test_bench_scale_quick(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.fromarray((torch.rand(40, 60, 3) * 255).to(torch.uint8).numpy()).save(photos / "x.png")
    report = run_script("bench_scale.py", "--quick", "--images", str(photos))
    (row,) = report["configs"]
    assert (row["arch"], row["size"], row["samples"]) == ("msresnet_tiny", 32, 2)
    assert row["identical_spikes"] and row["predictions_equal"]
    assert "x.png" in row["event_rate"]["per_image"] and 0 < row["event_rate"]["mean"] < 1
    assert row["loihi2"]["cores"] >= 1 and row["loihi2"]["one_chip"]["fits"]
    assert row["synops_per_sample"] > 0 and row["loihi2_uj_per_sample"] > 0
    assert row["legality"]["status"] in ("legal", "illegal", "not available")


def test_bench_scale_target_runs_the_closest_network_that_fits():
    report = run_script(
        "bench_scale.py", "--target", "kapoho-point", "--configs", "msresnet18@32", "--samples", "1"
    )
    (row,) = report["configs"]
    assert row["paper_config"] == "msresnet18@32" and row["arch"] == "msresnet18-l2w"
    assert row["widths"] == [64, 128, 208, 208] and row["size"] == 32
    assert row["fit"]["fits"] and row["fit"]["target"] == "kapoho-point"
    assert row["fit"]["max_fan_in"] <= row["fit"]["fan_in_limit"] == 4096
    assert row["legality"]["status"] == "legal" and not row["legality"]["violations"]
    assert row["identical_spikes"] and row["predictions_equal"]
    assert row["variants_refused"] and row["variants_refused"][0].startswith("msresnet18:")
    constants = row["energy_constants"]
    assert "4.6 pJ" in constants["ann"] and "23.6 pJ" in constants["loihi"]
