"""``i2e-neuro train``: its output folder checked and claimed before any data is loaded, one run
per folder, and what a finished run leaves (issue 25)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from i2e_neuro.commands import train as cmd

ROOT = Path(__file__).resolve().parents[2]
#: a dataset root that does not exist: if the data were loaded first, its error would show
NO_DATA = ("--dataset", "imagefolder", "--root", "/nonexistent-i2e-neuro-data")


def run(*argv) -> int:
    return cmd.main([str(a) for a in argv])


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_out_that_is_a_file_is_refused_before_the_data_is_read(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("mine")
    assert run(*NO_DATA, "--out", out, "--epochs", 1) == 2
    err = one_line(capsys)
    assert f"--out {out}: is a file" in err and "nonexistent" not in err, err
    assert out.read_text() == "mine"


def test_out_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert run(*NO_DATA, "--out", tmp_path / "f" / "run", "--epochs", 1) == 2
    err = one_line(capsys)
    assert f"--out {tmp_path / 'f' / 'run'}: cannot create this folder" in err, err


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only /sys")
@pytest.mark.parametrize("out", ["/sys/i2e-neuro-run", "/sys/kernel"])
def test_out_on_a_read_only_file_system_is_refused(capsys, out):
    """A folder that cannot be created, and one that exists but cannot be written."""
    assert run(*NO_DATA, "--out", out, "--epochs", 1) == 2
    err = one_line(capsys)
    assert f"--out {out}: cannot" in err and "nonexistent" not in err, err


def test_default_runs_folder_in_a_read_only_folder_is_refused(capsys, monkeypatch):
    if not Path("/sys/kernel").is_dir():
        pytest.skip("needs a read-only /sys")
    monkeypatch.chdir("/sys/kernel")
    assert run(*NO_DATA, "--epochs", 1) == 2
    err = one_line(capsys)
    assert "--out runs/" in err and "cannot create this folder" in err, err


HOLD = """
import sys, time
from pathlib import Path
from i2e_neuro.train.checkpoint import RunLock
RunLock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_train_into_the_same_out_is_refused_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert run(*NO_DATA, "--out", out, "--epochs", 1) == 2
        err = one_line(capsys)
        assert f"--out {out}: another i2e-neuro train (pid {holder.pid})" in err, err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock is gone with it: the folder can be claimed again
    from i2e_neuro.train.checkpoint import RunLock

    lock = RunLock(out)
    lock.release()
    assert list(out.iterdir()) == []


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys):
    assert run(*NO_DATA, "--out", tmp_path / "new" / "deeper" / "run", "--epochs", 1) == 2
    assert "--dataset imagefolder" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_stop_after_zero_is_refused(tmp_path, capsys):
    assert run("--stop-after", 0, "--out", tmp_path / "run", "--epochs", 1) == 2
    assert "--stop-after 0: must be >= 1" in one_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["resume", "out", "init", "lr"])
def test_paths_named_like_parameters_are_shown_as_they_are(tmp_path, capsys, name):
    """A run folder ``runs/resume`` or ``out/targs`` keeps its name in the messages."""
    folder = tmp_path / "runs" / name
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"x")
    assert run("--out", folder, "--epochs", 1) == 2
    err = one_line(capsys)
    assert f"--out {folder}: already holds a run" in err and "--resume to continue" in err, err
    nested = tmp_path / name / "targs"
    assert run("--resume", "--out", nested) == 2
    err = one_line(capsys)
    assert f"--resume: no checkpoint {nested / 'checkpoint.pt'}" in err, err
    assert not (tmp_path / name).exists()  # nothing created for a refused resume


def write_idx(path: Path, array: np.ndarray) -> None:
    codes = {np.dtype("uint8"): 8}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + dims + array.tobytes())


@pytest.mark.parametrize("images, labels", [(20, 15), (15, 20)])
def test_mnist_with_more_images_than_labels_is_refused_by_convert_and_train(
    tmp_path, capsys, images, labels
):
    from i2e_neuro.commands import convert

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        write_idx(raw / f"{split}-images-idx3-ubyte", np.zeros((images, 28, 28), np.uint8))
        write_idx(raw / f"{split}-labels-idx1-ubyte", np.zeros(labels, np.uint8))
    assert (
        convert.main(["--dataset", "mnist", "--root", str(tmp_path), "-o", str(tmp_path / "e")])
        == 2
    )
    err = one_line(capsys)
    assert f"holds {images} images but {labels} labels" in err and str(raw.parent) in err, err
    code = run("--dataset", "mnist", "--root", tmp_path, "--out", tmp_path / "r", "--epochs", 1)
    assert code == 2
    err = one_line(capsys)
    assert f"holds {images} images but {labels} labels" in err, err


@pytest.mark.slow
def test_two_trainings_into_one_out_a_moment_apart(tmp_path):
    """Case 3 as the user met it: two real runs, the second refused, the first's result kept."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "i2e_neuro.cli", "train", "--out", str(out), "--no-progress"]
    base += ["--epochs", "1", "--qat-epochs", "0", "--limit-train", "32", "--limit-test", "16"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        base + ["--seed", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (out / ".train.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(
        base + ["--seed", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    out1, err1 = first.communicate(timeout=600)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and "another i2e-neuro train" in second.stderr, second.stderr
    import torch

    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["seed"] == 1 and ckpt["complete"]
    assert not (out / ".train.lock").exists()


@pytest.mark.slow
def test_a_resumed_run_drops_the_superseded_interrupted_state(tmp_path):
    import shutil

    out = tmp_path / "run"
    args = ("--epochs", 2, "--qat-epochs", 0, "--limit-train", 32, "--limit-test", 16)
    assert run(*args, "--out", out, "--stop-after", 1, "--no-progress") == 0
    shutil.copy(out / "checkpoint.pt", out / "interrupted.pt")  # as a Ctrl-C in epoch 2 leaves
    assert run("--resume", "--out", out, "--no-progress") == 0
    assert not (out / "interrupted.pt").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


TINY = ("--limit-train", 16, "--limit-test", 8, "--batch-size", 16, "--no-progress")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, last_good",
    [
        (("--lr", "1e30", "--epochs", 2, "--qat-epochs", 0), 1),  # float phase, loss stays finite
        (("--lr", "1e30", "--epochs", 2, "--qat-epochs", 1), 1),  # diverged before folding
        (("--lr", "1e30", "--epochs", 1, "--qat-epochs", 1), None),  # no good epoch at all
    ],
)
def test_diverged_weights_are_never_saved_nor_marked_complete(tmp_path, capsys, args, last_good):
    import torch

    out = tmp_path / "run"
    if last_good is None:  # one step is not enough to overflow: two steps in epoch 1
        args = (*args, "--batch-size", 8)
    assert run(*args, *TINY[:4], *TINY[-1:], "--out", out) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "the weights diverged" in err[0] and "NaN or inf" in err[0], err
    assert "Traceback" not in captured.err and "ValueError" not in captured.err
    assert '"complete"' not in captured.out
    if last_good is None:
        assert not (out / "checkpoint.pt").exists()
        return
    assert f"last good checkpoint is {out / 'checkpoint.pt'} (epoch {last_good})" in err[0]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == last_good and not ckpt["complete"]
    assert all(t.isfinite().all() for t in ckpt["model"].values() if t.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused_by_resume_and_init(
    tmp_path, capsys, poison
):
    import torch

    out = tmp_path / "run"
    assert run("--epochs", 2, "--qat-epochs", 0, "--stop-after", 1, *TINY, "--out", out) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    name = sorted(k for k, t in ckpt["model"].items() if t.is_floating_point())[0]
    ckpt["model"][name].view(-1)[0] = poison
    torch.save(ckpt, out / "checkpoint.pt")
    capsys.readouterr()
    assert run("--resume", "--out", out) == 2
    err = one_line(capsys)
    assert f"--resume {out / 'checkpoint.pt'}: 1 of" in err and name in err, err
    code = run("--init", out / "checkpoint.pt", "--out", tmp_path / "b", "--epochs", 1, *TINY)
    assert code == 2
    err = one_line(capsys)
    assert f"--init {out / 'checkpoint.pt'}: 1 of" in err and "NaN or inf" in err, err
