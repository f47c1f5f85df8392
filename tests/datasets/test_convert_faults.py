"""``i2e-neuro convert`` against faults: outputs that are inputs, damaged outputs, two runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from i2e_neuro.commands import convert as cmd

SAMPLES = Path(__file__).parents[2] / "i2e_neuro" / "data" / "samples"


def run(*argv) -> int:
    return cmd.main([str(a) for a in argv])


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(SAMPLES.glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_in_an_input_folder_is_refused(photos, capsys, where):
    before = sorted(p.name for p in photos.iterdir())
    out = photos if where == "same" else photos / "events"
    assert run(photos, "--out", out, "--pictures") == 2
    err = capsys.readouterr().err
    assert "--out" in err and "input" in err, err
    assert sorted(p.name for p in photos.iterdir()) == before
