"""``i2e-neuro energy`` against bad numbers: refused by name; absurd sizes still print a table."""

from __future__ import annotations

import re

from i2e_neuro.cli import main


def test_negative_energy_in_exponent_form_is_read_and_refused(capsys):
    assert main(["energy", "--first-layer", "--e-mac", "-4.6e-12"]) == 2
    err = capsys.readouterr().err
    assert "--e-mac" in err and "must be > 0" in err and "expected one argument" not in err, err


def test_absurd_sizes_keep_the_columns_apart(capsys):
    assert (
        main(["energy", "--first-layer", "--input-size", "100000000", "--filters", "100000"]) == 0
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "(MAC)" in line or "(AC," in line]
    assert len(rows) == 3, out
    for row in rows:
        cells = re.split(r"\s{2,}", row.strip())
        assert len(cells) == 3, row  # label, operations, energy: never run together
        float(cells[2])
        int(cells[1].replace(",", ""))
