"""Unclear failures of the second reliability probe (issue 25): each one line naming the file,
argument or layer, with the documented exit code and no traceback; checked before any work."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from i2e_neuro.cli import main

ROOT = Path(__file__).resolve().parents[1]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("under", [False, True])
def test_convert_out_that_is_a_file_is_a_bad_argument(tmp_path, capsys, under):
    existing = tmp_path / "existing.txt"
    existing.write_text("mine")
    out = existing / "events" if under else existing
    assert main(["convert", "--dataset", "digits", "--limit", "2", "-o", str(out)]) == 2
    err = one_line(capsys)
    assert f"--out {out}:" in err and "a file, not a folder" in err, err
    assert existing.read_text() == "mine"


@pytest.mark.parametrize("value", ["-1", "-2", "-100"])
def test_convert_negative_pictures_are_refused(tmp_path, capsys, value):
    code = main(["convert", "--dataset", "digits", "--pictures", value, "-o", str(tmp_path / "o")])
    assert code == 2
    assert f"--pictures {value}: must be >= 0" in one_line(capsys)


def test_convert_pictures_without_a_number_still_means_all(tmp_path, capsys):
    out = tmp_path / "o"
    assert (
        main(
            [
                "convert",
                "--dataset",
                "digits",
                "--limit",
                "2",
                "--pictures",
                "-o",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(list((out / "pictures").glob("*.gif"))) == 2


@pytest.mark.parametrize("form", ["separate", "equals"])
@pytest.mark.parametrize("spec", ["-1/2", "-3/-2", "1/-2"])
def test_negative_shards_are_refused_in_words_by_convert_and_simulate(tmp_path, capsys, form, spec):
    flag = ["--shard", spec] if form == "separate" else [f"--shard={spec}"]
    assert main(["convert", "--dataset", "digits", "-o", str(tmp_path / "o"), *flag]) == 2
    err = one_line(capsys)
    assert f"--shard {spec}: need N >= 1 and 0 <= I < N" in err, err
    assert main(["simulate", "--model", str(tmp_path / "m.h5"), *flag]) == 2
    err = one_line(capsys)
    assert f"--shard {spec}: need N >= 1 and 0 <= I < N" in err, err


@pytest.mark.parametrize("chips", ["-3", "0"])
def test_deploy_check_refuses_a_chip_count_below_one(tmp_path, capsys, chips):
    assert main(["deploy-check", str(tmp_path / "m.h5"), f"--chips={chips}"]) == 2
    assert f"--chips {chips}: must be >= 1" in one_line(capsys)


def test_deploy_check_lists_only_chips_as_hardware(tmp_path, capsys):
    assert main(["deploy-check", str(tmp_path / "m.h5"), "--hardware", "loihi9"]) == 2
    err = one_line(capsys)
    assert "--hardware 'loihi9'" in err and "loihi2, loihi1, cpu" in err, err
    assert "energy_45nm" not in err
    assert main(["deploy-check", str(tmp_path / "m.h5"), "--hardware", "energy_45nm"]) == 2
    err = one_line(capsys)
    assert "--hardware energy_45nm: an energy table without per-core limits" in err, err


@pytest.mark.parametrize("under", [False, True])
def test_simulate_shard_dir_that_is_a_file_is_refused_before_simulating(tmp_path, capsys, under):
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    shard_dir = existing / "x" if under else existing
    args = ["simulate", "--model", str(tmp_path / "none.h5"), "--shard", "0/2"]
    assert main([*args, "--shard-dir", str(shard_dir)]) == 2
    err = one_line(capsys)
    assert f"--shard-dir {shard_dir}:" in err and "not a folder" in err, err
    assert "none.h5" not in err  # refused before the network was even looked at
    assert existing.read_text() == "{}"


@pytest.mark.parametrize(
    "workers, limit, cores, expected",
    [(16, 4, 2, 2), (16, 4, 8, 4), (3, None, 2, 2), (2, 1, 16, 1), (2, None, 16, 2)],
)
def test_simulate_workers_are_capped_at_the_work_and_the_cores(
    capsys, monkeypatch, workers, limit, cores, expected
):
    from i2e_neuro.commands.simulate import cap_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert cap_workers(workers, limit) == expected
    err = capsys.readouterr().err
    if expected < workers:
        assert f"note: --workers {workers} capped at {expected}" in err and "cores" in err, err
    else:
        assert err == ""


def test_a_full_disk_names_the_file_once(tmp_path):
    """convert with a file-size limit: ``cannot write PATH: File too large``, PATH once."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, 8 * 1024))

    out = tmp_path / "ev"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "i2e_neuro.cli",
            "convert",
            "--dataset",
            "digits",
            "--limit",
            "64",
            "--format",
            "dense",
            "--suffix",
            ".h5",
            "-o",
            str(out),
            "--no-progress",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "cannot write" in line and "File too large" in line, done.stderr
    assert line.count(str(out)) == 1 and line.count("cannot write") == 1, line
    assert "Traceback" not in done.stderr


def test_a_network_file_missing_a_dataset_and_its_checksum_names_the_layer(tmp_path, capsys):
    import h5py
    import torch

    import export
    from export.description import from_deploy
    from export.hdf5 import save_hdf5
    from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
    from i2e_neuro.models.spec import build_spec

    torch.manual_seed(0)
    net = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 32, 32), 10)))
    net.eval().fold()
    path = tmp_path / "tiny.h5"
    save_hdf5(from_deploy(net.deploy(i2e={"ratio": 0.12, "order": "efghabcd"})), path)
    with h5py.File(path, "r+") as f:
        name = f["layer/3/name"][()].decode()
        del f["layer/3/neuron/vThMant"]
        sums = json.loads(str(f.attrs["checksums"]))
        sums = {k: v for k, v in sums.items() if "layer/3/neuron/vThMant" not in k}
        f.attrs["checksums"] = json.dumps(sums)
    with pytest.raises(ValueError) as e:
        export.load(path)
    message = str(e.value)
    assert f"layer {name!r} (/layer/3/neuron)" in message and "vThMant" in message, message
    assert main(["deploy-check", str(path)]) == 2
    err = one_line(capsys)
    assert f"layer {name!r}" in err and "vThMant" in err, err
