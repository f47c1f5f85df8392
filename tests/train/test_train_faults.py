"""``i2e-neuro train`` against bad arguments and faults: refused before any training starts."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from i2e_neuro.commands import train as cmd

ROOT = Path(__file__).resolve().parents[2]


def run(*argv) -> int:
    return cmd.main([str(a) for a in argv])


def test_output_over_the_init_checkpoint_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "t"
    run_dir.mkdir()
    init = run_dir / "checkpoint.pt"
    init.write_bytes(b"a trained run")  # never read: the refusal comes first
    assert run("--init", init, "--out", run_dir, "--epochs", 1) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--init" in err and "refusing to overwrite" in err, err
    assert init.read_bytes() == b"a trained run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]


def test_output_inside_the_dataset_root_is_refused(tmp_path, capsys):
    root = tmp_path / "images"
    (root / "train" / "cat").mkdir(parents=True)
    out = Path(root, "train", "run")  # would become a class of its own
    args = ("--dataset", "imagefolder", "--root", root, "--out", out, "--epochs", 1)
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert "inside the input folder --root" in err and "train/" in err, err
    assert sorted(p.name for p in (root / "train").iterdir()) == ["cat"]


@pytest.mark.parametrize(
    "flag, value, wording",
    [
        ("--min-lr", "-0.1", ">= 0"),
        ("--weight-decay", "-0.01", ">= 0"),
        ("--momentum", "-1", "from 0 to below 1"),
        ("--momentum", "1.5", "from 0 to below 1"),
        ("--label-smoothing", "1.5", "from 0 to 1"),
        ("--ratio", "1.0", "below 1"),
    ],
)
def test_recipe_numbers_out_of_range_are_refused(tmp_path, capsys, flag, value, wording):
    assert run(flag, value, "--epochs", 1, "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"{flag} {value}" in err and wording in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_saving_a_checkpoint_is_an_error_naming_it(tmp_path):
    script = (
        "import torch\n"
        "from i2e_neuro.train.checkpoint import CheckpointError, save_checkpoint\n"
        "save_checkpoint('c.pt', {'w': torch.zeros(1000)})\n"
        "try:\n"
        "    save_checkpoint('c.pt', {'w': torch.ones(100000)})\n"
        "except CheckpointError as e:\n"
        "    print(e)\n"
        "assert torch.load('c.pt', weights_only=True)['w'].sum() == 0\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "checkpoint c.pt: cannot write it (File too large)" in done.stdout, done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_an_unreadable_image_in_an_imagefolder_is_skipped_and_named(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from i2e_neuro.datasets.train_data import build_imagefolder
    from i2e_neuro.train import resolve_config

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for k in range(2):
                pixels = (rng.random((20, 20, 3)) * 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{k}.png")
    (tmp_path / "train" / "a" / "bad.png").write_bytes(b"not an image at all")
    cfg = resolve_config(dataset="imagefolder", root=str(tmp_path), size=16)
    train_set, _, _ = build_imagefolder(cfg)
    items = [train_set[i] for i in range(len(train_set))]  # an epoch's worth, no exception
    assert len(items) == 5 and all(x.shape[-2:] == (16, 16) for x, _ in items)
    err = capsys.readouterr().err
    assert err.count("skipping unreadable image") == 1 and "bad.png" in err, err
