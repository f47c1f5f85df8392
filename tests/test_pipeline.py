"""A trained digits model through export, the Lava simulation and the energy report."""

import json

import numpy as np
import pytest

from export.description import from_checkpoint
from export.lava.runner import simulate
from export.peers.lava_dl import run_lava_dl
from export.synops import energy_report, fanout_map
from i2e_neuro.cli import main
from i2e_neuro.datasets.eval_data import load_samples
from tests.oracles import synops_by_convolution

# Runs Lava process graphs (OS processes per process model): left out of `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(digits_run):
    """The session's tiny digits model (tests/conftest.py), trained once for all tests."""
    return digits_run


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_export_and_simulate_the_trained_model_spike_for_spike(trained, capsys):
    out, result = trained
    net = out / "net.h5"
    assert main(["export", result["checkpoint"], "--out", str(net)]) == 0
    assert net.is_file() and "s1b0.sn1" in capsys.readouterr().out
    code = main(
        [
            "simulate",
            "--model",
            str(net),
            "--data",
            "digits",
            "--limit",
            "12",
            "--check",
            "4",
            "--json",
        ]
    )
    summary = last_json(capsys.readouterr().out)
    assert code == 0
    assert summary["samples"] == 12 and summary["checked_samples"] == 4
    assert summary["agreement"] == 1.0
    assert summary["spike_mismatches"] == 0
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert all(layer["spikes"] > 0 for layer in summary["layers"])


def test_lava_and_lava_dl_count_the_same_spikes_and_synops(trained):
    desc = from_checkpoint(trained[1]["checkpoint"])
    samples = load_samples("digits", desc.input_shape[1:], limit=5)
    lava = simulate(desc, samples.data)
    ref = run_lava_dl(desc, samples)
    assert (lava.predictions == ref.predictions).all()
    for g in desc.spiking_groups:
        assert np.array_equal(lava.neuron_counts[g.name], ref.neuron_counts[g.name]), g.name
    # SynOps: the energy report on lava-dl's counts against an independent count on Lava's
    # (a convolution of each spike-count map with an all-ones kernel, no fan-out map)
    report = energy_report(desc, ref.input_counts, ref.neuron_counts, 5)
    expected = synops_by_convolution(desc, ref.input_counts, lava.neuron_counts)
    got = {r["name"]: r["synops"] * 5 for r in report["layers"]}
    assert got.pop("i2e input") == pytest.approx(expected.pop("input"), rel=1e-12)
    assert got == pytest.approx(expected, rel=1e-12)
    assert all(v > 0 for v in got.values()) and report["total"]["ann_uj"] > 0


def test_fanout_counts_borders_and_strides(trained):
    desc = from_checkpoint(trained[1]["checkpoint"])
    conv = next(
        c for c in desc.connections if c.name == "s0b0.conv1"
    )  # 3x3, stride 1, pad 1, 16 out
    f = fanout_map(desc, conv)[0]
    assert f[3, 3] == 9 * 16 and f[0, 0] == 4 * 16 and f[0, 3] == 6 * 16
    down = next(c for c in desc.connections if c.name == "s1b0.conv1")  # 3x3, stride 2, pad 1
    g = fanout_map(desc, down)[0]
    # every output window counted once per position: the total equals outputs x kernel taps
    out = desc.output_shape(down)
    in_bounds = sum(
        1
        for oy in range(out[1])
        for ox in range(out[2])
        for ky in range(3)
        for kx in range(3)
        if 0 <= oy * 2 - 1 + ky < 8 and 0 <= ox * 2 - 1 + kx < 8
    )
    assert g.sum() == in_bounds * out[0]


def test_energy_command_on_the_model(trained, tmp_path, capsys):
    chart = tmp_path / "energy.png"
    code = main(
        [
            "energy",
            "--model",
            trained[1]["checkpoint"],
            "--limit",
            "4",
            "--engine",
            "lava-dl",
            "--json",
            "--chart",
            str(chart),
        ]
    )
    report = last_json(capsys.readouterr().out)
    assert code == 0 and chart.stat().st_size > 1000
    assert (
        report["samples"] == 4
        and report["first_layer"]["ann_uj"] > report["first_layer"]["snn_measured_uj"]
    )
    names = [r["name"] for r in report["layers"]]
    assert names[0] == "i2e input" and "head.sn" in names
    # NeuroBench's names beside ours; the ANN without padded positions, the pooled head as is
    nb = report["neurobench"]
    assert set(nb) == {
        "Effective_ACs",
        "Effective_MACs",
        "Dense",
        "ActivationSparsity",
        "ConnectionSparsity",
    }
    assert nb["Effective_ACs"] == report["total"]["effective_synops"] <= report["total"]["synops"]
    assert report["total"]["macs_ann"] == 555_504  # msresnet_tiny on 3 x 32 x 32 RGB
    assert report["total"]["macs_ann_padded_tiled"] == 679_936
    # one input event rate: the table's input row is the first layer's f_r
    assert report["layers"][0]["event_rate"] == report["input_event_rate"]
    assert report["first_layer"]["event_rate"] == report["input_event_rate"]
    assert set(report["activation_sparsity"]) == {g for g in names[1:]} | {"readout", "overall"}


def test_simulate_reports_bad_input_clearly(trained, tmp_path, capsys):
    assert main(["export", str(tmp_path / "gone.pt")]) == 2
    assert "gone.pt" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(tmp_path / "junk.pt")]) == 2
    assert "junk.pt" in capsys.readouterr().err
    assert main(["simulate", "--model", str(tmp_path / "none.h5")]) == 2
    assert "none.h5" in capsys.readouterr().err
    assert (
        main(["simulate", "--model", trained[1]["checkpoint"], "--data", str(tmp_path / "nowhere")])
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
    assert (
        main(
            ["simulate", "--model", trained[1]["checkpoint"], "--limit", "1", "--backend", "loihi2"]
        )
        == 3
    )
    assert "lava-loihi" in capsys.readouterr().err
