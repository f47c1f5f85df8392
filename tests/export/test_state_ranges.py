"""The 24-bit states on the export side: the network file records the ranges, legality checks
the data-free bound per group, deploy-check names the first group and step past 24 bits, and
simulate --check names where Lava and lava-dl first diverge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.description import from_checkpoint
from export.hdf5 import load_hdf5, save_hdf5
from export.simulation import first_divergence
from i2e_neuro.cli import main
from i2e_neuro.models.deploy import STATE_LIMIT
from tests.models.test_state_range import _strong_model


def test_first_divergence_is_the_lowest_sample_then_step_then_group():
    order = ["a", "b", "c"]
    ref = {g: np.zeros((3, 6, 2, 2), bool) for g in order}
    assert first_divergence(ref, {g: v.copy() for g, v in ref.items()}, order) is None
    lava = {g: v.copy() for g, v in ref.items()}
    lava["c"][1, 2, 0, 0] = True  # sample 1, step 2, group c
    lava["b"][1, 2, 1, 1] = lava["b"][1, 2, 0, 1] = True  # same step, earlier group
    lava["a"][1, 4, 0, 0] = True  # later step
    lava["a"][2, 0, 0, 0] = True  # later sample
    got = first_divergence(lava, ref, order, offset=10)
    assert got == {"sample": 11, "step": 2, "group": "b", "spikes": 2}


def _checkpoint(tmp_path, model, peaks=None) -> str:
    path = tmp_path / "strong.pt"
    deploy = model.deploy(i2e={"ratio": 0.1, "order": "efghabcd"}, classes=list("0123456789"))
    torch.save({"deploy": deploy, "extras": {"state_peaks": peaks or {}}}, path)
    return str(path)


@pytest.mark.slow
def test_network_file_records_ranges_and_deploy_check_names_the_overflow(tmp_path, capsys):
    # a network whose states leave 24 bits on dense digits (weights past the projection)
    raw = _strong_model(0, 12.0, project=False)
    ckpt = _checkpoint(tmp_path, raw, {"readout": {"u": 5, "v": 7}})
    desc = from_checkpoint(ckpt)
    assert desc.measured_states == {"readout": {"u": 5, "v": 7}}
    net = tmp_path / "net.h5"
    save_hdf5(desc, net)
    back = load_hdf5(net)
    assert back.measured_states == desc.measured_states
    assert back.state_bounds() == desc.state_bounds()
    assert max(b["u"] for b in back.state_bounds().values()) > STATE_LIMIT

    code = main(["deploy-check", str(net), "--data", "digits", "--limit", "8", "--json"])
    text = capsys.readouterr().out
    report = json.loads(text.strip().splitlines()[-1])
    assert code == 1  # measured states past 24 bits: an error
    first = report["first_overflow"]
    assert first and f"first past the limit in group {first['group']} at step" in text
    assert "max |u| (any input)" in text

    # the same network projected: in range for any input, LEGAL, ranges shown
    model = _strong_model(0, 12.0, project=True)
    code = main(["deploy-check", _checkpoint(tmp_path, model), "--data", "digits", "--limit", "8"])
    text = capsys.readouterr().out
    assert code == 0 and "loihi2: LEGAL; 0 risk(s)" in text and "every group in range" in text
    assert "max |v| (simulated)" in text and "max |v| (any input)" in text
