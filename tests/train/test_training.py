"""``i2e-neuro train`` on tiny slices of the embedded digits: steps, checkpoints, resume, Ctrl-C,
NaN, bad inputs, --init with another class count, the final JSON line."""

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from i2e_neuro import train as training
from i2e_neuro.commands import convert as convert_cmd
from i2e_neuro.commands import train as cmd
from i2e_neuro.datasets.sources import load_digits_source
from i2e_neuro.train import loop

TINY = ["--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--no-progress"]


def run(*argv) -> int:
    return cmd.main([str(a) for a in argv])


def last_json(out: str) -> dict:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return json.loads(lines[-1])


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_deploy(deploy: dict) -> None:
    spec = deploy["spec"]
    conns = {c["name"] for c in spec["conns"]}
    assert set(deploy["conns"]) == conns
    assert set(deploy["groups"]) == {g["name"] for g in spec["groups"]}
    for name, c in deploy["conns"].items():
        w = c["weight"]
        assert w.dtype == torch.int64 and int(w.min()) >= -128 and int(w.max()) <= 127, name
        assert isinstance(c["exponent"], int) and 0 <= c["exponent"] <= 7, name
    for g in deploy["groups"].values():
        assert g["bias"].dtype == torch.int64
    n = deploy["neuron"]
    assert (n["threshold"], n["vth_mant"], n["current_decay"], n["voltage_decay"]) == (
        16.0,
        1024,
        4096,
        2048,
    )
    assert deploy["i2e"]["order"] == "efghabcd" and deploy["i2e"]["timesteps"] == 8
    readout = spec["groups"][-1]
    assert deploy["steps"] > 8 and readout["population"] >= 1
    assert len(deploy["classes"]) * readout["population"] == readout["shape"][0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One float epoch + one QAT epoch on 64 digits."""
    out = tmp_path_factory.mktemp("run") / "digits"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = run("--epochs", 1, "--qat-epochs", 1, "--out", out, *TINY)
    assert rc == 0
    return out, buf.getvalue()


def test_a_few_steps_write_checkpoint_metrics_and_the_json_line(trained):
    out, stdout = trained
    result = last_json(stdout)
    for key in (
        "test_accuracy",
        "checkpoint",
        "epochs",
        "seconds",
        "backend",
        "arch",
        "samples_per_second",
    ):
        assert key in result, key
    assert 0 <= result["test_accuracy"] <= 1 and result["epochs"] == 2
    assert (result["backend"], result["arch"]) == ("slayer", "msresnet_tiny")
    assert Path(result["checkpoint"]) == out / "checkpoint.pt"
    ckpt = load(out / "checkpoint.pt")
    assert (
        ckpt["format"] == "i2e-neuro-train"
        and ckpt["epoch"] == 2
        and ckpt["phase"] == "qat"
        and ckpt["complete"]
    )
    assert ckpt["config"]["dataset"] == "digits" and isinstance(ckpt["config"], dict)
    assert [r["phase"] for r in ckpt["history"]] == ["float", "qat"]
    check_deploy(ckpt["deploy"])
    assert ckpt["deploy"]["classes"] == [str(i) for i in range(10)]
    assert ckpt["deploy"]["i2e"]["ratio"] == 0.10
    # the deploy integers are the quantized weights the QAT model ran with
    fc = ckpt["deploy"]["conns"]["fc"]
    shadow = ckpt["model"]["synapses.fc.weight"].reshape(fc["weight"].shape)
    assert torch.equal(
        torch.round(shadow * 64 / 2.0 ** fc["exponent"]).clamp(-128, 127).long(), fc["weight"]
    )
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,phase,lr,train_loss") and len(rows) == 3
    assert (out / "curves.png").stat().st_size > 1000
    assert any((out / "tb").iterdir())
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_resume_matches_an_uninterrupted_run_bit_for_bit(tmp_path, capsys):
    args = ["--epochs", 2, "--qat-epochs", 1, "--seed", 3, *TINY]
    assert run(*args, "--out", tmp_path / "a") == 0
    # the same run stopped after epoch 1, then resumed (epoch 2 float, then fold + QAT)
    assert run(*args, "--out", tmp_path / "b", "--stop-after", 1) == 0
    assert load(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    assert run("--resume", "--out", tmp_path / "b", "--stop-after", 2, "--no-progress") == 0
    assert load(tmp_path / "b" / "checkpoint.pt")["phase"] == "float"  # the next process folds
    capsys.readouterr()
    assert run("--resume", "--out", tmp_path / "b", "--no-progress") == 0
    result = last_json(capsys.readouterr().out)
    assert result["epochs"] == 3 and result["complete"]
    a, b = load(tmp_path / "a" / "checkpoint.pt"), load(tmp_path / "b" / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for ra, rb in zip(a["history"], b["history"]):
        for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr"):
            assert ra[k] == rb[k], k
    for k in a["deploy"]["conns"]:
        assert torch.equal(a["deploy"]["conns"][k]["weight"], b["deploy"]["conns"][k]["weight"])
    # a finished run resumed again does nothing and reports the same result
    assert run("--resume", "--out", tmp_path / "a", "--no-progress") == 0
    assert last_json(capsys.readouterr().out)["test_accuracy"] == a["history"][-1]["test_accuracy"]


def test_a_run_resumes_with_the_network_it_started(tmp_path, monkeypatch, capsys):
    """A run started under another architecture table (here msresnet_tiny's earlier 4x4 stem)
    resumes with the topology its checkpoint recorded, not today's table's."""
    from i2e_neuro.models import spec as spec_module

    old = dict(spec_module.ARCHITECTURES["msresnet_tiny"], stem_kernel=4, stem_padding=0)
    args = ["--epochs", 2, "--qat-epochs", 1, "--seed", 3, *TINY, "--out", tmp_path / "a"]
    with monkeypatch.context() as m:
        m.setitem(spec_module.ARCHITECTURES, "msresnet_tiny", old)
        assert run(*args, "--stop-after", 1) == 0
    capsys.readouterr()
    assert run("--resume", "--out", tmp_path / "a", "--no-progress") == 0
    assert last_json(capsys.readouterr().out)["complete"]
    ckpt = load(tmp_path / "a" / "checkpoint.pt")
    assert tuple(ckpt["deploy"]["conns"]["stem"]["weight"].shape) == (16, 2, 4, 4)
    stem = next(c for c in ckpt["spec"]["conns"] if c["name"] == "stem")
    assert (stem["kernel"], stem["padding"]) == (4, 0)


def _fail_at(monkeypatch, call: int, what):
    """Make the training loss raise / return ``what`` from its ``call``-th computation on."""
    original = loop.compute_loss
    calls = {"n": 0}

    def loss(logits, labels, smoothing):
        calls["n"] += 1
        value = original(logits, labels, smoothing)
        if calls["n"] >= call:
            if isinstance(what, type) and issubclass(what, BaseException):
                raise what()
            return value * what
        return value

    monkeypatch.setattr(loop, "compute_loss", loss)


def test_ctrl_c_saves_interrupted_pt_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    _fail_at(monkeypatch, 3, KeyboardInterrupt)  # 2 steps per epoch: the first step of epoch 2
    out = tmp_path / "run"
    assert run("--epochs", 2, "--qat-epochs", 0, "--out", out, *TINY) == 130
    err = capsys.readouterr().err
    assert "interrupted in epoch 2" in err and f"--resume --out {out}" in err
    state = load(out / "interrupted.pt")
    assert state["interrupted"] and state["epoch"] == 1 and state["step"] == 0
    assert load(out / "checkpoint.pt")["epoch"] == 1
    monkeypatch.undo()
    assert run("--resume", "--out", out, "--no-progress") == 0
    assert load(out / "checkpoint.pt")["epoch"] == 2


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    _fail_at(monkeypatch, 3, math.nan)
    out = tmp_path / "run"
    assert run("--epochs", 3, "--qat-epochs", 0, "--out", out, *TINY) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "loss is nan at epoch 2 step 1" in err[0]
        and "last good checkpoint" in err[0]
    )
    ckpt = load(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and all(
        math.isfinite(float(v.float().sum())) for v in ckpt["model"].values()
    )


def _one_line_error(capsys, rc: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    err = [
        line for line in err if not line.startswith(("WARNING: Prophesee", " ", "No CUDA runtime"))
    ]
    assert rc == 2 and len(err) == 1, err
    for n in needles:
        assert n in err[0], (n, err[0])


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--dataset", "imagenet21k"], ["--dataset imagenet21k: unknown", "digits"]),
        (["--arch", "resnet9000"], ["--arch resnet9000: unknown", "msresnet18"]),
        (["--backend", "tensorflow"], ["--backend tensorflow: unknown", "spikingjelly"]),
        (["--augment", "heavy"], ["--augment heavy: unknown"]),
        (["--dataset", "cifar10"], ["--dataset cifar10 needs --root", "cifar-10-batches-py"]),
        (["--epochs", "0", "--qat-epochs", "0"], ["nothing to train"]),
        (["--dataset", "events", "--root", ".", "--augment", "baseline2"], ["baseline2"]),
    ],
)
def test_bad_arguments_give_one_line(argv, needles, capsys, tmp_path):
    _one_line_error(capsys, run(*argv, "--out", tmp_path / "x", *TINY), *needles)


def test_missing_datasets_show_the_expected_layout(tmp_path, capsys):
    _one_line_error(
        capsys,
        run("--dataset", "cifar10", "--root", tmp_path, "--out", tmp_path / "o"),
        "cifar-10-batches-py",
        str(tmp_path),
    )
    _one_line_error(
        capsys, run("--dataset", "mnist", "--root", tmp_path, "--out", tmp_path / "o"), "MNIST/raw"
    )
    _one_line_error(
        capsys,
        run("--dataset", "imagefolder", "--root", tmp_path, "--out", tmp_path / "o"),
        "train/",
        "val/",
        "<class>",
    )
    _one_line_error(
        capsys,
        run("--dataset", "events", "--root", tmp_path, "--out", tmp_path / "o"),
        "index.json",
        "i2e-neuro convert",
    )
    _one_line_error(
        capsys,
        run("--dataset", "cifar10-dvs", "--root", tmp_path / "nope", "--out", tmp_path / "o"),
        "aedat",
    )
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_bad_checkpoints_are_named(tmp_path, capsys):
    out = tmp_path / "o"
    _one_line_error(
        capsys,
        run("--resume", "--out", out),
        "--resume",
        "no checkpoint",
        str(out / "checkpoint.pt"),
    )
    _one_line_error(capsys, run("--resume"), "--resume needs --out")
    _one_line_error(
        capsys,
        run("--init", tmp_path / "none.pt", "--out", out, *TINY),
        "--init",
        "none.pt",
        "no such file",
    )
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    _one_line_error(capsys, run("--init", corrupt, "--out", out, *TINY), "corrupt.pt", "corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    _one_line_error(
        capsys,
        run("--init", foreign, "--out", out, *TINY),
        "foreign.pt",
        "not an i2e-neuro training checkpoint",
    )
    (out).mkdir()
    corrupt_ckpt = out / "checkpoint.pt"
    corrupt_ckpt.write_bytes(b"\x00" * 10)
    _one_line_error(capsys, run("--resume", "--out", out), str(corrupt_ckpt))
    _one_line_error(capsys, run("--out", out, *TINY), "already holds a run", "--resume")


def _digit_folder(root: Path, classes=(0, 1, 2), per_class: int = 12) -> Path:
    for split, src in (("train", load_digits_source("train")), ("val", load_digits_source("test"))):
        counts = {c: 0 for c in classes}
        for i in range(len(src)):
            item = src[i]
            if item.label in counts and counts[item.label] < per_class:
                folder = root / split / f"digit{item.label}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(item.image).save(folder / f"{item.name}.png")
                counts[item.label] += 1
    return root


def test_init_with_another_class_count_replaces_the_classifier(trained, tmp_path, capsys):
    src_out, _ = trained
    init = load(src_out / "checkpoint.pt")
    root = _digit_folder(tmp_path / "folder")
    out = tmp_path / "ft"
    capsys.readouterr()
    rc = run(
        "--dataset",
        "imagefolder",
        "--root",
        root,
        "--size",
        32,
        "--init",
        src_out / "checkpoint.pt",  # arch: the init's
        "--epochs",
        2,
        "--qat-epochs",
        1,
        "--workers",
        0,
        "--out",
        out,
        "--no-progress",
        "--batch-size",
        16,
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "classifier replaced: 3 classes" in captured.out and "already folded" in captured.out
    result = last_json(captured.out)
    assert result["epochs"] == 1  # a folded (QAT) init: QAT epochs only
    ckpt = load(out / "checkpoint.pt")
    assert ckpt["deploy"]["classes"] == ["digit0", "digit1", "digit2"]
    population = init["config"]["population"]  # the init's (the default, 4)
    assert ckpt["config"]["population"] == population
    assert ckpt["model"]["synapses.fc.weight"].shape[0] == 3 * population
    assert ckpt["deploy"]["conns"]["fc"]["weight"].shape == (3 * population, 32)
    check_deploy(ckpt["deploy"])

    # the loading itself: every other parameter is the init's, the classifier is new
    from i2e_neuro.datasets.train_data import DataInfo

    cfg = training.TrainConfig.from_dict(init["config"])
    info = DataInfo("images", (2, 32, 32), ["a", "b", "c"], 8, 0.1)
    model, _ = training.build_model(cfg, info)
    model.fold()
    fresh_fc = model.state_dict()["synapses.fc.weight"].clone()
    replaced = training.load_init(model, init, "x.pt", "slayer")
    assert set(replaced) == {"synapses.fc.weight", "biases.readout"}
    state = model.state_dict()
    for k, v in state.items():
        if k not in replaced and k != "exponents":
            assert torch.equal(v, init["model"][k]), k
    assert torch.equal(state["synapses.fc.weight"], fresh_fc)


def test_spikingjelly_backend_trains_the_reference(tmp_path, capsys):
    out = tmp_path / "sj"
    assert (
        run("--backend", "spikingjelly", "--epochs", 1, "--qat-epochs", 5, "--out", out, *TINY) == 0
    )
    result = last_json(capsys.readouterr().out)
    assert (
        result["backend"] == "spikingjelly" and result["epochs"] == 1
    )  # no QAT phase for the reference
    ckpt = load(out / "checkpoint.pt")
    assert "deploy" not in ckpt and "fc.weight" in ckpt["model"]


def test_events_dataset_from_convert(tmp_path, capsys):
    root = tmp_path / "ev"
    for split in ("train", "test"):
        assert (
            convert_cmd.main(
                [
                    "--dataset",
                    "digits",
                    "--split",
                    split,
                    "--limit",
                    "48",
                    "--chunk-size",
                    "20",
                    "-o",
                    str(root / split),
                    "--no-progress",
                ]
            )
            == 0
        )
    capsys.readouterr()
    out = tmp_path / "run"
    assert (
        run(
            "--dataset",
            "events",
            "--root",
            root,
            "--arch",
            "msresnet_tiny",
            "--epochs",
            1,
            "--qat-epochs",
            0,
            "--out",
            out,
            "--batch-size",
            16,
            "--no-progress",
        )
        == 0
    )
    result = last_json(capsys.readouterr().out)
    assert result["dataset"] == "events"
    ckpt = load(out / "checkpoint.pt")
    assert ckpt["data"]["input_shape"] == [2, 32, 32] and ckpt["data"]["ratio"] == 0.10
    assert len(ckpt["history"]) == 1


def test_derived_seeds_depend_only_on_seed_epoch_and_stream():
    from i2e_neuro.datasets.train_data import EpochSampler, derive_seed

    assert derive_seed(1, 2, "i2e") == derive_seed(1, 2, "i2e")
    assert (
        len({derive_seed(s, e, k) for s in range(3) for e in range(3) for k in ("shuffle", "i2e")})
        == 18
    )
    a, b = EpochSampler(10, seed=1), EpochSampler(10, seed=1)
    a.set_epoch(4), b.set_epoch(4)
    assert a.indices() == b.indices() and sorted(a.indices()) == list(range(10))
    shards = [EpochSampler(10, 1, True, r, 3) for r in range(3)]
    for s in shards:
        s.set_epoch(4)
    assert all(len(s) == len(s.indices()) == 4 for s in shards)  # padded to equal shards
    assert set(i for s in shards for i in s.indices()) == set(range(10))


def test_qat_that_makes_the_model_worse_ends_on_the_folded_model(tmp_path, monkeypatch, capsys):
    """Gradient ascent in the QAT phase (the loss negated from its first step on): the phase
    keeps the model with the lowest loss on the selection data, here the folded one."""
    _fail_at(monkeypatch, 25, -1.0)  # 8 steps per epoch: the QAT phase starts at call 25
    out = tmp_path / "run"
    args = ["--epochs", 3, "--qat-epochs", 1, "--population", 4, "--seed", 3, "--out", out]
    assert run(*args, *TINY[2:], "--limit-train", 256) == 0  # a readout that answers
    text = capsys.readouterr().out
    result = last_json(text)
    ckpt = load(out / "checkpoint.pt")
    losses = [r["selection_loss"] for r in ckpt["history"] if r["phase"] == "qat"]
    assert min(losses) > ckpt["extras"]["folded_selection_loss"]  # ascent did make it worse
    assert "QAT: kept the folded model" in text and result["kept_epoch"] == 3
    assert result["test_accuracy"] == result["folded_test_accuracy"]
    assert "qat_best" in ckpt and "model" not in ckpt["qat_best"]  # the saved model is the kept one
    # the checkpoint holds the folded model: evaluating it gives the folded selection loss
    monkeypatch.undo()
    trainer = loop.Trainer(None, out, resume=True, progress=False, log=print)
    trainer._setup()
    loss = trainer.evaluate("qat", trainer.selection_loader)["test_loss"]
    assert loss == pytest.approx(ckpt["extras"]["folded_selection_loss"], rel=1e-12)
