"""The official I2E event datasets where the pipeline takes data: ``train --dataset i2e-hf /
i2e-npz`` and the samples of ``simulate``, ``energy`` and ``deploy-check``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from i2e_neuro import i2e
from i2e_neuro.datasets.eval_data import load_samples
from i2e_neuro.datasets.official import write_hf_parquet
from i2e_neuro.datasets.sources import load_digits_source


def digit_events(split: str, n: int):
    """I2E events of the embedded digits (32x32), as ``(events [T, 2, H, W], label)`` rows."""
    src = load_digits_source(split, channels=1, size=32)
    images = torch.from_numpy(np.ascontiguousarray(src.images[:n])).permute(0, 3, 1, 2)
    events = i2e(images, ratio=0.10)  # [T, B, 2, H, W]
    return [(events[:, b].numpy(), int(src.labels[b])) for b in range(n)]


@pytest.fixture(scope="module")
def official_roots(tmp_path_factory):
    """The same digits as a Hugging Face parquet config and as npz class folders."""
    base = tmp_path_factory.mktemp("official")
    rows = {"train": digit_events("train", 48), "test": digit_events("test", 16)}
    for split, name in (("train", "train"), ("test", "validation")):
        write_hf_parquet(
            base / "hf" / "I2E-Digits" / f"{name}-00000-of-00001.parquet", rows[split], 10
        )
        for c in range(10):  # every class folder in both splits, as a release has them
            (base / "npz" / ("train" if split == "train" else "val") / f"c{c}").mkdir(parents=True)
        for k, (ev, y) in enumerate(rows[split]):
            folder = base / "npz" / ("train" if split == "train" else "val") / f"c{y}"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"{k}.npz", ev.astype(np.float32))
    return base, rows


def test_eval_samples_from_both_layouts(official_roots):
    base, rows = official_roots
    s = load_samples("i2e-hf", (32, 32), str(base / "hf"), "test", 5, "I2E-Digits")
    assert s.events and s.data.shape == (5, 8, 2, 32, 32) and s.data.dtype == bool
    assert np.array_equal(s.data, np.stack([e for e, _ in rows["test"][:5]]))
    assert s.labels.tolist() == [y for _, y in rows["test"][:5]]
    n = load_samples("i2e-npz", (32, 32), str(base / "npz"), "test", 3)
    assert n.data.shape == (3, 8, 2, 32, 32)
    with pytest.raises(
        ValueError, match=r"sample 0 is \(32, 32\) pixels, the network takes \(16, 16\)"
    ):
        load_samples("i2e-npz", (16, 16), str(base / "npz"), "test", 3)
    with pytest.raises(FileNotFoundError, match="no parquet files of split 'validation'"):
        load_samples("i2e-hf", (32, 32), str(base / "npz"), "test", 3, "I2E-Digits")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["i2e-hf", "i2e-npz"])
def test_train_on_the_official_layouts(official_roots, layout, tmp_path, capsys):
    from i2e_neuro.commands import train as train_cmd

    base, _ = official_roots
    argv = ["--dataset", layout, "--root", base / ("hf" if layout == "i2e-hf" else "npz")]
    if layout == "i2e-hf":
        argv += ["--config", "I2E-Digits"]
    argv += ["--arch", "msresnet_tiny", "--epochs", 1, "--qat-epochs", 1, "--batch-size", 16]
    argv += ["--workers", 0, "--out", tmp_path / "run", "--no-progress"]
    assert train_cmd.main([str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["dataset"] == layout
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["data"]["input_shape"] == [2, 32, 32] and "deploy" in ckpt
    if layout != "i2e-hf":
        return
    import subprocess
    import sys

    def cli(*args) -> subprocess.CompletedProcess:  # Lava in a fresh process, as a user runs it
        cmd = [sys.executable, "-m", "i2e_neuro.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    # the trained network in Lava on the official rows, every spike checked against lava-dl
    ckpt_path = tmp_path / "run" / "checkpoint.pt"
    data = ["--data", "i2e-hf", "--root", base / "hf", "--config", "I2E-Digits", "--limit", 2]
    done = cli("simulate", "--model", ckpt_path, *data, "--check", 2, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["samples"] == 2 and summary["spike_mismatches"] == 0
    done = cli("deploy-check", ckpt_path, *data, "--json")
    assert done.returncode in (0, 1) and "error" not in done.stderr, done.stderr
