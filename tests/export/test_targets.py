"""Named Loihi 2 targets (hw_configs/<system>.yaml), the fit report every command uses, and the
Loihi 2 variants whose every group's fan-in fits by construction (issue 21)."""

from __future__ import annotations

import json
import math

import pytest

from export.resources import DoesNotFit, closest_fit, fan_in, fit_report, require_fit
from i2e_neuro.energy.hw import (
    TARGET_NAMES,
    HardwareConfigError,
    Target,
    hw_value,
    load_hw_config,
    load_target,
)
from i2e_neuro.models.spec import ARCHITECTURES, LOIHI2_VARIANTS, build_spec

PAPER_CONFIGS = [(a, s) for a in ("msresnet18", "msresnet34") for s in (32, 128, 224)]


def classes(size: int) -> int:
    return 1000 if size >= 224 else 10


def test_targets_are_systems_of_loihi2_chips_with_sources():
    chip = load_hw_config("loihi2")
    per_chip = hw_value(chip, "limits.cores_per_chip")
    oheo, kapoho, hala = (load_target(n) for n in TARGET_NAMES)
    assert (oheo.chips, oheo.cores) == (1, per_chip)
    assert (kapoho.chips, kapoho.cores) == (8, 8 * per_chip)
    # Hala Point: Intel's published total (140,544 cores) is below 1,152 x 128 and is the one used
    assert hala.chips == 1152 and hala.cores == 140544 < 1152 * per_chip
    for t in (oheo, kapoho, hala):
        assert t.chip == "loihi2"
        assert t.max_fan_in_per_core == hw_value(chip, "limits.max_fan_in_per_core")
        assert not t.fan_in_published  # Loihi 2's fan-in is not published: the text says so
        assert "not published" in t.constants()
        assert all(len(src.split()) >= 3 for src in t.sources.values())
    assert "system.cores" in hala.sources and "140,544" in hala.sources["system.cores"]
    # a chip config is a one-chip target
    assert load_target("loihi2").chips == 1


def test_unknown_or_chipless_targets_are_refused_by_name(tmp_path):
    with pytest.raises(HardwareConfigError, match="kapoho-point"):
        load_target("kapoho")
    with pytest.raises(HardwareConfigError, match="not a target"):
        load_target("energy_45nm")
    bad = tmp_path / "board.yaml"
    bad.write_text("name: board\nsystem:\n  chips: {value: 2, unit: chips, source: a b c}\n")
    with pytest.raises(HardwareConfigError, match="'chip'"):
        load_target(bad)


def test_fan_in_counts_every_residual_shortcut_and_the_pooled_readout():
    spec = build_spec("msresnet18", (2, 128, 128), 10)
    # the figures: the 512-channel 3x3 groups need 4,608 to 4,864 synapses per neuron
    assert fan_in(spec, "s3b1.sn2") == 512 * 9
    assert fan_in(spec, "s3b1.sn1") == 256 + 512 * 9  # the 1x1 shortcut + conv2
    assert fan_in(spec, "head.sn") == 256 + 2 * 512 * 9  # the stream sums both conv2
    # the head's global sum-pool + dense: every head neuron reaches every readout neuron
    assert fan_in(spec, "readout") == 512 * 4 * 4


def test_unconstrained_msresnet18_at_128_is_refused_on_one_chip_naming_group_and_limit():
    report = fit_report(build_spec("msresnet18", (2, 128, 128), 10), "oheo-gulch")
    assert not report.fits
    assert report.cores == 3718 and report.chips == math.ceil(3718 / 128)
    assert any("'s3b0.sn1'" in r and "4096" in r for r in report.reasons)
    assert any("needs 3718 cores" in r and "has 128" in r for r in report.reasons)
    with pytest.raises(DoesNotFit, match="s3b0.sn1.*max_fan_in_per_core"):
        require_fit(report)


def test_default_digits_model_fits_one_chip():
    from i2e_neuro.train import resolve_config

    cfg = resolve_config()
    spec = build_spec(cfg.arch, (2, cfg.size, cfg.size), 10, cfg.timesteps, cfg.population)
    report = require_fit(fit_report(spec, "oheo-gulch"))
    assert report.fits and report.chips == 1 and report.cores <= 128


def test_a_tighter_limit_refuses_what_the_chip_allows():
    spec = build_spec("msresnet_tiny", (2, 32, 32), 10)
    loose = load_target("oheo-gulch")
    tight = Target(**{**loose.__dict__, "max_fan_in_per_core": 100})
    assert fit_report(spec, loose).fits
    report = fit_report(spec, tight)
    assert not report.fits and all("exceeds the limit of 100" in r for r in report.reasons)
    few = Target(**{**loose.__dict__, "cores": 2})
    assert any("has 2" in r for r in fit_report(spec, few).reasons)


@pytest.mark.parametrize("arch,size", PAPER_CONFIGS)
def test_every_paper_configuration_has_a_variant_that_fits_kapoho_point(arch, size):
    spec, report, tried = closest_fit(arch, size, classes(size), "kapoho-point")
    assert report.fits and spec.name in LOIHI2_VARIANTS[arch] and spec.name != arch
    assert tried[0].network == arch and not tried[0].fits  # the paper's network does not fit
    limit = report.target.max_fan_in_per_core
    assert all(fan_in(spec, g.name) <= limit for g in spec.groups)
    assert report.cores <= 8 * 128
    # the closest: no wider variant before it fits
    assert all(not r.fits for r in tried[:-1])


def test_variants_fit_the_fan_in_by_construction_at_every_paper_size():
    limit = load_target("kapoho-point").max_fan_in_per_core
    for name, kw in ARCHITECTURES.items():
        if "-l2" not in name:
            continue
        sizes = (224,) if kw.get("stem_stride") == 8 else (32, 128)
        for size in sizes:
            spec = build_spec(name, (2, size, size), classes(size))
            worst = max(fan_in(spec, g.name) for g in spec.groups)
            assert worst <= limit, f"{name}@{size}: fan-in {worst}"


def test_no_variant_of_a_paper_network_at_224_fits_one_chip():
    with pytest.raises(DoesNotFit, match="no variant of msresnet34 at 224x224 fits oheo-gulch"):
        closest_fit("msresnet34", 224, 1000, "oheo-gulch")


def test_fit_report_to_dict_is_json():
    report = fit_report(build_spec("msresnet18-l2", (2, 128, 128), 10), "kapoho-point")
    d = json.loads(json.dumps(report.to_dict()))
    assert d["fits"] and d["cores"] == report.cores and d["fan_in_limit"] == 4096
    assert "kapoho-point" in report.text() and "fits" in report.text()


def test_train_target_hook_refuses_before_training_and_passes_the_default():
    from i2e_neuro.commands.train import target_check
    from i2e_neuro.train import TrainError

    check = target_check("oheo-gulch", True)
    check(build_spec("msresnet_tiny", (2, 32, 32), 10))  # fits: no error
    with pytest.raises(TrainError, match="s3b0.sn1.*4096"):
        check(build_spec("msresnet18", (2, 128, 128), 10))
    assert target_check("oheo-gulch", False) is not None
    assert target_check(None, False) is None
    with pytest.raises(TrainError, match="--require-fit needs --target"):
        target_check(None, True)
    with pytest.raises(TrainError, match="--target"):
        target_check("no-such-board", False)


def test_energy_constants_are_the_configs_values():
    from i2e_neuro.energy.model import energy_constants

    c = energy_constants("loihi2")
    assert "4.6 pJ" in c["ann"] and "0.9 pJ" in c["snn"]
    assert "23.6 pJ" in c["loihi"] and "81 pJ" in c["loihi"] and "52 pJ" in c["loihi"]
    assert "not published" in c["loihi"]
    cfg = load_hw_config("loihi2")
    cfg["energy"]["synaptic_op_j"]["value"] = 1.0e-12
    assert "SynOps x 1 pJ" in energy_constants(cfg)["loihi"]
    assert "loihi" not in energy_constants("cpu")  # energy not modelled there


@pytest.mark.slow
def test_train_require_fit_refuses_msresnet18_at_128_before_training(tmp_path, capsys):
    from i2e_neuro.cli import main

    out = tmp_path / "run"
    code = main(
        ["train", "--arch", "msresnet18", "--size", "128", "--target", "oheo-gulch"]
        + ["--require-fit", "--out", str(out), "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 2
    # 3,718 cores with one readout neuron per class; the run's readout population adds a few
    assert "Loihi 2 estimate: msresnet18 on oheo-gulch: 37" in captured.out
    assert "does NOT fit" in captured.out and "limits used: oheo-gulch" in captured.out
    assert "--require-fit" in captured.err and "'s3b0.sn1'" in captured.err
    assert "4096" in captured.err and "max_fan_in_per_core" in captured.err
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_export_and_deploy_check_target(tmp_path, capsys):
    from export.description import from_deploy
    from export.hdf5 import save_hdf5
    from i2e_neuro.cli import main
    from tests.export.test_export import I2E, random_folded

    big = from_deploy(random_folded(build_spec("msresnet18", (2, 32, 32), 10)).deploy(i2e=I2E))
    path = save_hdf5(big, tmp_path / "big.h5")
    code = main(["export", str(path), "--out", str(tmp_path / "x.nir"), "--target", "oheo-gulch"])
    err = capsys.readouterr().err
    assert code == 3 and "'s3b0.sn1'" in err and "does not fit oheo-gulch" in err
    assert not (tmp_path / "x.nir").exists()

    small = build_spec("msresnet_tiny", (2, 16, 16), 5)
    tiny = from_deploy(random_folded(small).deploy(i2e=I2E, classes=list("abcde")))
    path = save_hdf5(tiny, tmp_path / "tiny.h5")
    assert main(["deploy-check", str(path), "--target", "kapoho-point", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["target"]["fits"] and summary["target"]["target_chips"] == 8
    assert "msresnet_tiny on kapoho-point" in out
    assert main(["deploy-check", str(tmp_path / "big.h5"), "--target", "oheo-gulch"]) == 1
    assert "does NOT fit" in capsys.readouterr().out
