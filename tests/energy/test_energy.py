"""The energy model, the hardware configs and the ``i2e-neuro energy`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from i2e_neuro.energy import model as energy
from i2e_neuro.energy.hw import NAMES, HardwareConfigError, hw_source, hw_value, load_hw_config
from i2e_neuro.energy.model import EnergyArgumentError

ROOT = Path(__file__).resolve().parents[2]
PJ = 1e-12

# Running the command module directly: i2e_neuro/cli.py imports every subcommand module when it
# builds its parser, and some of them (train, export, ...) may not exist yet.
RUNNER = (
    "import argparse, sys\n"
    "from i2e_neuro.commands import energy as m\n"
    "p = argparse.ArgumentParser(prog='i2e-neuro energy')\n"
    "m.add_arguments(p)\n"
    "sys.exit(m.run(p.parse_args(sys.argv[1:])))\n"
)


def run_in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """The command in this process (fast); returns (exit status, stdout, stderr)."""
    from i2e_neuro.commands import energy as command

    parser = argparse.ArgumentParser(prog="i2e-neuro energy")
    command.add_arguments(parser)
    rc = command.run(parser.parse_args(list(argv)))
    out, err = capsys.readouterr()
    return rc, out, err


def run_energy(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


# --- hardware configs ------------------------------------------------------------------------


def _entries(node, where=""):
    if isinstance(node, dict):
        if "value" in node:
            yield where, node
        else:
            for k, v in node.items():
                yield from _entries(v, f"{where}.{k}" if where else k)


@pytest.mark.parametrize("name", NAMES)
def test_every_hardware_number_has_a_source(name):
    cfg = load_hw_config(name)
    assert cfg["name"] == name
    # the shipped file: the installed package i2e_neuro.hw_configs, or this tree's hw_configs/
    assert Path(cfg["_path"]).read_bytes() == (ROOT / "hw_configs" / f"{name}.yaml").read_bytes()
    entries = list(_entries(cfg))
    assert entries
    for key, entry in entries:
        assert entry["value"] is None or isinstance(entry["value"], (int, float)), key
        assert len(entry["source"].split()) >= 3, key


def test_energy_45nm_is_the_papers_model():
    cfg = load_hw_config("energy_45nm")
    assert hw_value(cfg, "energy.e_mac") == pytest.approx(4.6 * PJ)
    assert hw_value(cfg, "energy.e_ac") == pytest.approx(0.9 * PJ)
    # a 32-bit float MAC = float multiply + float add (Horowitz 2014, 45 nm)
    assert hw_value(cfg, "energy.fp32_mult_j") + hw_value(
        cfg, "energy.fp32_add_j"
    ) == pytest.approx(4.6 * PJ)
    assert "Horowitz" in hw_source(cfg, "energy.e_mac")
    assert energy.default_op_energies() == pytest.approx((4.6 * PJ, 0.9 * PJ))


def test_loihi_configs():
    l1, l2, cpu = load_hw_config("loihi1"), load_hw_config("loihi2"), load_hw_config("cpu")
    for cfg in (l1, l2):
        assert hw_value(cfg, "limits.cores_per_chip") == 128
        assert hw_value(cfg, "limits.max_delay_steps") == 62
        assert hw_value(cfg, "formats.weight_mantissa_bits") == 8
        assert hw_value(cfg, "formats.state_bits") == 24
        assert hw_value(cfg, "formats.decay_bits") == 12
        assert hw_value(cfg, "formats.threshold_bits") == 17
        assert hw_value(cfg, "formats.bias_mantissa_bits") == 13
        assert hw_value(cfg, "formats.bias_exponent_bits") == 3
    assert hw_value(l1, "limits.max_neurons_per_core") == 1024
    assert hw_value(l2, "limits.max_neurons_per_core") == 8192
    assert hw_value(l1, "limits.synaptic_memory_per_core_bytes") == 128 * 1024
    assert hw_value(l1, "limits.max_fan_in_per_core") == 4096
    assert hw_value(l1, "energy.synaptic_op_j") == pytest.approx(23.6 * PJ)
    assert hw_value(l1, "energy.neuron_update_inactive_j") == pytest.approx(52 * PJ)
    assert hw_value(l1, "energy.neuron_update_active_j") == pytest.approx(81 * PJ)
    # Loihi 2 figures that were not published say so in their source
    for key in (
        "energy.synaptic_op_j",
        "limits.max_fan_in_per_core",
        "limits.max_fan_out_per_core",
    ):
        assert "NOT PUBLISHED" in hw_source(l2, key), key
    assert hw_value(cpu, "limits.max_neurons_per_core") is None
    assert hw_value(cpu, "energy.synaptic_op_j") is None


def test_load_hw_config_by_path_and_errors(tmp_path, monkeypatch):
    cfg = load_hw_config(ROOT / "hw_configs" / "loihi1.yaml")
    assert cfg["name"] == "loihi1"

    with pytest.raises(HardwareConfigError, match="'loihi9'.*known: loihi2"):
        load_hw_config("loihi9")
    with pytest.raises(HardwareConfigError, match="missing.yaml: hardware config file not found"):
        load_hw_config(tmp_path / "missing.yaml")

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlimits:\n  cores: {value: 1\n")
    with pytest.raises(HardwareConfigError, match=r"bad\.yaml: malformed YAML"):
        load_hw_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(HardwareConfigError, match=r"bad\.yaml: expected a mapping"):
        load_hw_config(bad)
    bad.write_text("name: bad\nlimits:\n  cores: {value: 4, unit: cores}\n")
    with pytest.raises(
        HardwareConfigError, match=r"bad\.yaml: limits\.cores: value without a 'source'"
    ):
        load_hw_config(bad)
    bad.write_text(
        "name: bad\nenergy:\n  op: {value: 1e-12, unit: J, source: somewhere in a paper}\n"
    )
    with pytest.raises(
        HardwareConfigError, match=r"energy\.op\.value='1e-12' is not a finite number"
    ):
        load_hw_config(bad)

    # a named config is looked up in $I2E_NEURO_HW_CONFIGS first
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nlimits:\n  cores: {value: 2, unit: cores, source: made up for a test}\n"
    )
    monkeypatch.setenv("I2E_NEURO_HW_CONFIGS", str(tmp_path))
    assert hw_value(load_hw_config("mine"), "limits.cores") == 2
    with pytest.raises(KeyError, match="no entry 'limits.nothing'"):
        hw_value(load_hw_config("mine"), "limits.nothing")


# --- the paper's first layer -----------------------------------------------------------------


def test_first_layer_reproduces_the_paper():
    r = energy.first_layer_comparison()
    assert r["output_size"] == [112, 112, 64]
    assert r["ann_macs"] == 112 * 112 * 64 * 7 * 7 * 3
    assert r["snn_ops"] == 112 * 112 * 64 * 7 * 7 * 2
    assert r["i2e_ops"] == 224 * 224 * 8
    assert r["ann_uj"] == pytest.approx(543, rel=0.01)
    assert r["i2e_uj"] == pytest.approx(0.36, rel=0.01)
    assert r["snn_uj"] == pytest.approx(28.68, rel=0.01)
    # the paper's "18.9x" is ANN / SNN (its 543 / 28.68)
    assert r["ratio"] == pytest.approx(18.9, rel=0.01)
    # with the encoding added: 542.86 / (28.66 + 0.36)
    assert r["ratio_with_encoding"] == pytest.approx(r["ann_uj"] / (r["snn_uj"] + r["i2e_uj"]))
    assert r["ratio_with_encoding"] == pytest.approx(18.70, abs=0.01)


def test_first_layer_other_reading_of_the_paper():
    # At exactly 5 % events the paper's 28.68 uJ is SNN + encoding and 18.9x includes the encoding.
    r = energy.first_layer_comparison(event_rate=0.05)
    assert r["snn_total_uj"] == pytest.approx(28.68, abs=0.005)
    assert r["ratio_with_encoding"] == pytest.approx(18.9, abs=0.05)


def test_first_layer_small_shape_by_hand():
    r = energy.first_layer_comparison(
        input_size=32,
        kernel=3,
        stride=1,
        padding=1,
        filters=16,
        timesteps=4,
        event_rate=0.1,
        e_mac=4.6 * PJ,
        e_ac=0.9 * PJ,
    )
    ann = 32 * 32 * 16 * (3 * 3 * 3) * 4.6e-12
    snn = 32 * 32 * 16 * (3 * 3 * 2) * 0.9e-12 * 4 * 0.1
    i2e = 32 * 32 * 4 * 0.9e-12
    assert r["output_size"] == [32, 32, 16]
    assert r["ann_uj"] == pytest.approx(ann * 1e6)
    assert r["snn_uj"] == pytest.approx(snn * 1e6)
    assert r["i2e_uj"] == pytest.approx(i2e * 1e6)
    assert r["ratio_with_encoding"] == pytest.approx(ann / (snn + i2e))
    assert r["ratio"] == pytest.approx(ann / snn)
    assert energy.first_layer_comparison(event_rate=0.0)["ratio"] is None


def test_conv_counting_by_hand():
    assert energy.conv_output_size(32, 3, 1, 1) == 32
    assert energy.conv_output_size(32, 3, 2, 0) == 15  # (32 - 3) // 2 + 1
    assert energy.conv_output_size(224, 7, 2, 3) == 112
    assert energy.conv_output_size(5, 5, 1, 0) == 1
    assert energy.conv_macs(3, 16, 3, 1, 1, 32, 32) == 32 * 32 * 16 * 3 * 3 * 3
    assert energy.conv_macs(3, 16, 3, 2, 0, 32, 32) == 15 * 15 * 16 * 3 * 3 * 3
    # rectangular kernel / input: out_h = (20 - 5) // 1 + 1 = 16, out_w = (10 + 2 - 3) // 3 + 1 = 4
    assert energy.conv_macs(2, 8, (5, 3), (1, 3), (0, 1), 20, 10) == 16 * 4 * 8 * 5 * 3 * 2
    assert energy.ann_energy(1000, 4.6 * PJ) == pytest.approx(4.6e-9)
    assert energy.snn_energy(1000, 0.9 * PJ, 8, 0.5) == pytest.approx(3.6e-9)
    assert energy.i2e_encoding_ops(128, 128, 8) == 131072


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: energy.conv_output_size(4, 9, 1, 0), "kernel"),
        (lambda: energy.conv_output_size(-3, 3), "input_size"),
        (lambda: energy.conv_output_size(8, 3, 0), "stride"),
        (lambda: energy.conv_output_size(8, 3, 1, -1), "padding"),
        (lambda: energy.conv_macs(3, 0, 3, 1, 1, 8, 8), "filters"),
        (lambda: energy.snn_energy(10, 0.9 * PJ, 8, 1.2), "event_rate"),
        (lambda: energy.snn_energy(10, 0.9 * PJ, 0, 0.2), "timesteps"),
        (lambda: energy.first_layer_comparison(event_rate=-0.1), "event_rate"),
        (lambda: energy.first_layer_comparison(e_mac=0.0), "e_mac"),
        (lambda: energy.first_layer_comparison(kernel=2.5), "kernel"),
        (lambda: energy.first_layer_comparison(input_size=True), "input_size"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(EnergyArgumentError) as info:
        call()
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}: ")


# --- counting spikes -------------------------------------------------------------------------


def test_synops_from_counts():
    assert energy.synops_from_counts([3, 0, 2], 9) == 45
    assert energy.synops_from_counts([3, 0, 2], [1, 5, 4]) == 3 + 8
    # boolean spike trains [T, N] with a per-neuron fan-out
    spikes = np.array([[1, 0, 1], [1, 1, 0]], dtype=bool)
    assert energy.synops_from_counts(spikes, np.array([2, 3, 4])) == (2 + 4) + (2 + 3)
    assert isinstance(energy.synops_from_counts([1, 2], 3), int)
    assert energy.synops_from_counts([0.5, 1.5], 2) == pytest.approx(4.0)
    assert energy.synops_from_counts([], 7) == 0
    with pytest.raises(EnergyArgumentError, match="fanout"):
        energy.synops_from_counts([1, 2, 3], [1, 2])
    with pytest.raises(EnergyArgumentError, match="fanout"):
        energy.synops_from_counts(5, [1, 2])  # a total cannot be spread over per-neuron fan-outs
    with pytest.raises(EnergyArgumentError, match="spikes"):
        energy.synops_from_counts([1, -1], 2)


def test_energy_table_by_hand():
    layers = [
        {"name": "input", "neurons": 100, "spikes": 50, "fanout": 9, "macs_ann": 2000},
        {
            "name": "conv1",
            "neurons": 10,
            "spikes": np.array([2, 0, 1, 0, 0, 0, 0, 0, 0, 1]),
            "fanout": np.arange(10),
        },
    ]
    rows = energy.energy_table(layers, timesteps=2, e_mac=4.6 * PJ, e_ac=0.9 * PJ, hw="loihi1")
    a, b = rows
    assert a["event_rate"] == pytest.approx(50 / 200)
    assert a["synops"] == 450
    assert a["snn_uj"] == pytest.approx(450 * 0.9e-12 * 1e6)
    assert a["ann_uj"] == pytest.approx(2000 * 4.6e-12 * 1e6)
    assert a["loihi_uj"] == pytest.approx((450 * 23.6e-12 + 50 * 81e-12 + 150 * 52e-12) * 1e6)
    assert a["loihi_target"] == "loihi1"
    assert b["spikes"] == 4 and b["synops"] == 0 * 2 + 2 * 1 + 9 * 1
    assert b["ann_uj"] is None
    total = energy.energy_totals(rows)
    assert total["snn_uj"] == pytest.approx(a["snn_uj"] + b["snn_uj"])
    assert total["ann_uj"] is None
    assert energy.energy_table(layers, timesteps=2, hw=None)[0]["loihi_uj"] is None
    assert energy.energy_table(layers, timesteps=2, hw="cpu")[0]["loihi_uj"] is None
    with pytest.raises(EnergyArgumentError, match=r"layers\[input\]\.spikes.*exceed"):
        energy.energy_table([dict(layers[0], spikes=201)], timesteps=2)
    with pytest.raises(EnergyArgumentError, match="lacks fanout"):
        energy.energy_table([{"name": "x", "neurons": 1, "spikes": 0}])
    # a population that exists for fewer steps than the table (the I2E input: its T frames)
    (own,) = energy.energy_table([dict(layers[0], timesteps=1)], timesteps=2, hw="loihi1")
    assert own["event_rate"] == pytest.approx(50 / 100) and own["timesteps"] == 1
    assert own["loihi_uj"] == pytest.approx((450 * 23.6e-12 + 50 * 81e-12 + 50 * 52e-12) * 1e6)
    with pytest.raises(EnergyArgumentError, match=r"100 x 1 = 100"):
        energy.energy_table([dict(layers[0], timesteps=1, spikes=101)], timesteps=2)


def test_plot_energy(tmp_path):
    rows = energy.energy_table(
        [
            {"name": "a", "neurons": 10, "spikes": 3, "fanout": 4, "macs_ann": 100},
            {"name": "b", "neurons": 10, "spikes": 0, "fanout": 4, "macs_ann": 50},
        ],
        timesteps=1,
    )
    out = energy.plot_energy(rows, tmp_path / "sub" / "chart.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["chart.png"]  # no temp file left
    with pytest.raises(EnergyArgumentError):
        energy.plot_energy([], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


# --- the command -----------------------------------------------------------------------------


def test_cli_first_layer_json(tmp_path):
    chart = tmp_path / "first.png"
    proc = run_energy(
        "--first-layer",
        "--input-size",
        "224",
        "--timesteps",
        "8",
        "--event-rate",
        "0.0506",
        "--json",
        "--chart",
        str(chart),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ann_uj"] == pytest.approx(543, rel=0.01)
    assert result["i2e_uj"] == pytest.approx(0.36, rel=0.01)
    assert result["snn_uj"] == pytest.approx(28.68, rel=0.01)
    assert result["ratio"] == pytest.approx(18.9, rel=0.01)
    assert result["ratio_with_encoding"] == pytest.approx(
        result["ann_uj"] / (result["snn_uj"] + result["i2e_uj"])
    )
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_cli_options_and_table(capsys):
    rc, out, err = run_in_process(
        capsys,
        "--first-layer",
        "--input-size",
        "32",
        "--kernel",
        "3",
        "--stride",
        "1",
        "--padding",
        "1",
        "--filters",
        "16",
        "--in-channels-ann",
        "3",
        "--in-channels-snn",
        "2",
        "--timesteps",
        "4",
        "--event-rate",
        "0.1",
        "--e-mac",
        "2e-12",
        "--e-ac",
        "1e-12",
        "--json",
    )
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["ann_uj"] == pytest.approx(32 * 32 * 16 * 27 * 2e-12 * 1e6)
    assert r["snn_uj"] == pytest.approx(32 * 32 * 16 * 18 * 1e-12 * 4 * 0.1 * 1e6)
    rc, out, err = run_in_process(capsys, "--first-layer")
    assert rc == 0, err
    assert "112x112x64 outputs" in out
    assert "542.86" in out and "ANN / (SNN + I2E)" in out


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--input-size", "-3"], "--input-size"),
        (["--input-size", "4", "--padding", "0", "--kernel", "9"], "--kernel"),
        (["--event-rate", "1.5"], "--event-rate"),
        (["--event-rate", "-0.01"], "--event-rate"),
        (["--filters", "0"], "--filters"),
        (["--in-channels-snn", "0"], "--in-channels-snn"),
        (["--stride", "0"], "--stride"),
        (["--timesteps", "-1"], "--timesteps"),
        (["--e-ac=-1e-12"], "--e-ac"),  # argparse needs "=" before "-1e-12"
    ],
)
def test_cli_bad_arguments(capsys, argv, flag):
    rc, out, err = run_in_process(capsys, "--first-layer", *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"i2e-neuro energy: {flag}: "), err
    assert out == ""


def test_cli_bad_argument_exit_status_in_a_subprocess():
    proc = run_energy("--first-layer", "--event-rate", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "i2e-neuro energy: --event-rate: must be in [0, 1], got 2"


def test_cli_model_mode_bad_arguments(capsys):
    proc = run_energy("--model", "net.h5", "--data", "events.npz")
    assert proc.returncode == 2
    assert "net.h5" in proc.stderr
    assert run_in_process(capsys)[0] == 2  # no mode chosen
    assert run_in_process(capsys, "--first-layer", "--model", "x.h5")[0] == 2


def test_through_the_main_cli():
    from i2e_neuro import cli

    for module, _ in cli.COMMANDS.values():  # every command module imports: a missing one fails
        importlib.import_module(f"i2e_neuro.commands.{module}")
    proc = subprocess.run(
        [sys.executable, "-m", "i2e_neuro.cli", "energy", "--first-layer", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ann_uj"] == pytest.approx(
        543, rel=0.01
    )
