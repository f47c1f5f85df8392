"""The I2E release's pretrained checkpoints: a checkpoint built here from the release's key
names (``Network/MSNet_I2E.py`` resnet18 / resnet34, saved from ``DataParallel``) with random
weights loads into our SpikingJelly reference and gives the release network's logits
(tests/oracles.py transcribes its forward); anything else is refused by name."""

from __future__ import annotations

import argparse

import pytest
import torch

from i2e_neuro.models import official
from tests.oracles import official_resnet_logits

WIDTHS = (64, 128, 256, 512)


def release_state(blocks=(2, 2, 2, 2), classes=10, seed=0) -> dict:
    """A release ``state_dict`` by its own names (as ``torch.nn.DataParallel`` saves it), random
    weights and BatchNorm statistics; the I2E layer's kernel buffer included."""
    g = torch.Generator().manual_seed(seed)

    def conv(o, i, k):
        return torch.randn(o, i, k, k, generator=g) * (2.0 / (i * k * k)) ** 0.5

    def bn(prefix, c):
        return {
            f"{prefix}.weight": 1 + 0.2 * torch.randn(c, generator=g),
            f"{prefix}.bias": 0.2 * torch.randn(c, generator=g),
            f"{prefix}.running_mean": 0.1 * torch.randn(c, generator=g),
            f"{prefix}.running_var": 0.5 + torch.rand(c, generator=g),
            f"{prefix}.num_batches_tracked": torch.tensor(100),
        }

    s = {"i2e.weight": torch.zeros(8, 1, 3, 3), "conv1.weight": conv(64, 2, 7), **bn("bn1", 64)}
    inplanes = 64
    for stage, (n, w) in enumerate(zip(blocks, WIDTHS), start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            stride = 2 if stage > 1 and j == 0 else 1
            s[f"{p}.conv1.weight"] = conv(w, inplanes, 3)
            s.update(bn(f"{p}.bn1", w))
            s[f"{p}.conv2.weight"] = conv(w, w, 3)
            s.update(bn(f"{p}.bn2", w))
            if stride != 1 or inplanes != w:
                s[f"{p}.downsample.1.weight"] = conv(w, inplanes, 1)
                s.update(bn(f"{p}.downsample.2", w))
            inplanes = w
    s["fc.weight"] = torch.randn(classes, 512, generator=g) / 512**0.5
    s["fc.bias"] = 0.1 * torch.randn(classes, generator=g)
    return s


def save_release(path, state, **extra) -> None:
    torch.save(
        {
            "epoch": 255,
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "best_acc1": torch.tensor(89.23),
            **extra,
        },
        path,
    )


@pytest.mark.parametrize(
    "blocks, arch", [((2, 2, 2, 2), "msresnet18"), ((3, 4, 6, 3), "msresnet34")]
)
def test_release_checkpoint_gives_the_release_logits(tmp_path, blocks, arch):
    state = release_state(blocks, classes=7)
    path = tmp_path / "model_best.pth.tar"
    save_release(path, state)
    model, ckpt = official.load_reference(path)
    assert ckpt["arch"] == arch and ckpt["epoch"] == 255 and ckpt["num_classes"] == 7
    g = torch.Generator().manual_seed(1)
    events = torch.rand(8, 3, 2, 32, 32, generator=g) < 0.15  # [T, B, 2, H, W]
    with torch.no_grad():
        ours = model(events)
        theirs = official_resnet_logits(state, events, blocks)
    diff = float((ours - theirs).abs().max())
    print(f"{arch}: logits max |diff| {diff:.3g} (scale {float(theirs.abs().max()):.3g})")
    assert ours.shape == (3, 7)
    assert diff <= 1e-5 * max(1.0, float(theirs.abs().max()))
    assert not torch.allclose(theirs[0], theirs[1])  # the inputs reach the logits


def test_release_order_and_refusals(tmp_path):
    assert official.shuffle_order([4, 5, 6, 7, 0, 1, 2, 3]) == "efghabcd"
    assert official.shuffle_order([0, 1, 4, 5, 6, 7, 2, 3]) == "abefghcd"
    unsafe = tmp_path / "unsafe.pth.tar"
    save_release(unsafe, release_state(), args=argparse.Namespace(lr=0.1))
    with pytest.raises(
        official.OfficialCheckpointError, match=r"unsafe\.pth\.tar: unreadable or refused"
    ):
        official.read_checkpoint(unsafe)
    bottleneck = dict(release_state(), **{"layer1.0.conv3.weight": torch.zeros(256, 64, 1, 1)})
    save_release(tmp_path / "r50.pth.tar", bottleneck)
    with pytest.raises(
        official.OfficialCheckpointError, match="bottleneck ResNet.*layer1.0.conv3.weight"
    ):
        official.read_checkpoint(tmp_path / "r50.pth.tar")
    foreign = dict(release_state(), **{"head.weight": torch.zeros(3)})
    save_release(tmp_path / "foreign.pth.tar", foreign)
    with pytest.raises(official.OfficialCheckpointError, match="'head.weight' is not one of"):
        official.load_reference(tmp_path / "foreign.pth.tar")
    torch.save({"model": {}}, tmp_path / "other.pth.tar")
    with pytest.raises(official.OfficialCheckpointError, match="not an I2E release checkpoint"):
        official.read_checkpoint(tmp_path / "other.pth.tar")
    (tmp_path / "empty.pth.tar").write_bytes(b"")
    with pytest.raises(official.OfficialCheckpointError, match=r"empty\.pth\.tar: empty file"):
        official.read_checkpoint(tmp_path / "empty.pth.tar")


def test_every_release_weight_has_its_place_in_the_slayer_graph():
    from i2e_neuro.models.qat import SpikingGraph
    from i2e_neuro.models.spec import build_spec

    state = release_state(classes=10)
    ref = official.reference_state(state, "msresnet18")
    graph = SpikingGraph(build_spec("msresnet18", (2, 64, 64), 10))
    mapped = official.graph_state(ref, graph)
    own = graph.state_dict()
    for k, v in mapped.items():
        assert tuple(v.shape) == tuple(own[k].shape), k
    # every release parameter but the I2E kernel lands somewhere
    assert len(mapped) == len(state) - 1
    assert torch.equal(
        mapped["synapses.s1b0__down.weight"][..., 0], state["layer2.0.downsample.1.weight"]
    )
    assert torch.equal(mapped["norms.s3b1__conv2.running_var"], state["layer4.1.bn2.running_var"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["slayer", "spikingjelly"])
def test_train_init_from_a_release_checkpoint(tmp_path, backend, capsys):
    """``train --init FILE.pth.tar``: the release's resnet18 (10 classes) on the digits, the
    architecture taken from the checkpoint; slayer starts from the mapped weights (BatchNorm,
    convolutions) and goes on to QAT and a deploy record."""
    import json

    from i2e_neuro.commands import train as train_cmd

    state = release_state(classes=10)
    path = tmp_path / "checkpoint.pth.tar"
    save_release(path, state)
    out = tmp_path / "run"
    argv = ["--init", path, "--backend", backend, "--epochs", 1, "--qat-epochs", 1]
    argv += ["--limit-train", 16, "--limit-test", 8, "--batch-size", 8, "--out", out]
    assert train_cmd.main([str(a) for a in argv + ["--no-progress"]]) == 0
    captured = capsys.readouterr()
    assert f"initialised from the I2E release checkpoint {path} (msresnet18, epoch 255" in (
        captured.out + captured.err
    )
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["backend"] == backend
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["arch"] == "msresnet18"
    assert ("deploy" in ckpt) == (backend == "slayer")
    if backend == "spikingjelly":  # one epoch moved the weights, but from the release's
        delta = ckpt["model"]["stem.0.weight"] - state["conv1.weight"]
        assert float(delta.abs().max()) < 0.5 * float(state["conv1.weight"].abs().max())
