"""``i2e-neuro train`` against bad arguments and faults: refused before any training starts."""

from __future__ import annotations

from pathlib import Path

from i2e_neuro.commands import train as cmd


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
