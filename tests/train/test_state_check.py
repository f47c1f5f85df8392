"""``train`` ends with the 24-bit state check (measured on the training data, bounded for any
input) and calls the run deployable only when every group is in range; same seed, same run."""

import json

import torch

from i2e_neuro.commands import train as cmd
from i2e_neuro.models.qat import STATE_LIMIT
from i2e_neuro.train.loop import Trainer

TINY = ["--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--no-progress"]


def _run(out, capsys) -> tuple[str, dict]:
    args = ["--epochs", "1", "--qat-epochs", "1", "--seed", "5", "--population", "1", *TINY]
    args += ["--out", str(out)]  # (one readout neuron per class: every group active here)
    assert cmd.main(args) == 0
    text = capsys.readouterr().out
    return text, json.loads(text.strip().splitlines()[-1])


def test_train_checks_the_state_ranges_and_same_seed_gives_the_same_run(tmp_path, capsys):
    text, result = _run(tmp_path / "a", capsys)
    assert "24-bit state check" in text and "NOT DEPLOYABLE" not in text
    assert result["deployable"] is True
    groups = result["state_bounds"]
    assert set(groups) == set(result["state_peaks"]) and "readout" in groups
    for g, bound in groups.items():
        peak = result["state_peaks"][g]
        assert 0 < peak["u"] <= bound["u"] < STATE_LIMIT, g
        assert 0 < peak["v"] <= bound["v"] < STATE_LIMIT, g
        assert f"  {g} " in text
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["extras"]["state_bounds"] == groups

    _, again = _run(tmp_path / "b", capsys)
    for key in ("test_accuracy", "folded_test_accuracy", "float_test_accuracy", "state_peaks"):
        assert again[key] == result[key], key
    b = torch.load(tmp_path / "b" / "checkpoint.pt", map_location="cpu", weights_only=True)
    for k, v in ckpt["model"].items():
        assert torch.equal(v, b["model"][k]), k

    # weights past the bound (as a model trained without the projection): not deployable
    trainer = Trainer(None, tmp_path / "a", resume=True, progress=False, log=print)
    trainer._setup()
    with torch.no_grad():
        for i, syn in enumerate(trainer.model.synapses.values()):
            syn.weight.mul_(16)
            trainer.model.exponents[i] = 7
    assert trainer.check_states() is False
    text = capsys.readouterr().out
    assert "CAN OVERFLOW" in text and "NOT DEPLOYABLE" in text
    assert trainer.extras["deployable"] is False
