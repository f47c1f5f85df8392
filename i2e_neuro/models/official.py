"""The official I2E release's pretrained checkpoints (``*.pth.tar``) in our models.

A release checkpoint is a dict with ``state_dict`` (saved from ``torch.nn.DataParallel``, keys
``module.``...), ``best_acc1`` and ``epoch`` (docs/OFFICIAL.md). Its model is the release's
``resnet18`` / ``resnet34`` of ``Network/MSNet_I2E.py`` (images in, the I2E layer inside) or
``Network/MSNet.py`` (events in); both have the same parameter names:

=============================================  =================================================
release (``module.`` dropped)                   our SpikingJelly reference (:mod:`.reference`)
=============================================  =================================================
``conv1.weight``, ``bn1.*``                     ``stem.0.weight``, ``stem.1.*``
``layerL.j.conv1/bn1/conv2/bn2``                ``blocks.k.residual.1/2/4/5`` (k counts blocks)
``layerL.j.downsample.1/2``                     ``blocks.k.shortcut.1/2``
``fc.weight``, ``fc.bias``                      ``fc.weight``, ``fc.bias``
``i2e.weight``                                  dropped: the release rebuilds it every forward
=============================================  =================================================

The reference is the release's network layer for layer (same LIF, same stem, same head), so
given the same events it gives the same logits. The release's I2E layer is our conversion with
``order`` from its ``shuffle`` (:func:`shuffle_order`; default ``efghabcd``) and the threshold
``>=`` where ours is ``>`` (exact ties only).

The slayer QAT graph (:class:`~i2e_neuro.models.qat.SpikingGraph`) is not the same function
and cannot give the same logits: its stem is one stride-4 convolution (Loihi has no max-pool
on synaptic input), its head spikes before a sum-pool and its readout spikes, each connection
delays by one step, and its neurons are CUBA at threshold 16. Every weight still has its
place (:func:`graph_state`): a warm start for quantization-aware fine-tuning.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from i2e_neuro.integrity import DamagedFile, check_torch_file, torch_error_text

#: blocks per stage of the release's BasicBlock ResNets -> our architecture names
ARCHS = {(2, 2, 2, 2): "msresnet18", (3, 4, 6, 3): "msresnet34"}
_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "conv1": "residual.1",
    "bn1": "residual.2",
    "conv2": "residual.4",
    "bn2": "residual.5",
    "downsample.1": "shortcut.1",
    "downsample.2": "shortcut.2",
}


class OfficialCheckpointError(ValueError):
    """Not a usable release checkpoint; the message names the file and the key."""


def shuffle_order(shuffle) -> str:
    """Our timestep ``order`` of the release's ``shuffle`` (indices into its direction list,
    which is our ``abcdefgh``): ``[4, 5, 6, 7, 0, 1, 2, 3]`` -> ``"efghabcd"``."""
    idx = [int(i) for i in shuffle]
    if sorted(idx) != list(range(8)):
        raise ValueError(f"shuffle={shuffle!r}: must be a permutation of 0..7")
    return "".join("abcdefgh"[i] for i in idx)


def is_official(ckpt) -> bool:
    """Whether a loaded checkpoint dict looks like a release one (``state_dict``, no
    ``format`` of ours)."""
    return isinstance(ckpt, dict) and "state_dict" in ckpt and "format" not in ckpt


def read_checkpoint(path: str | Path) -> dict:
    """A release checkpoint read with ``weights_only=True``: ``{"state_dict"`` (``module.``
    dropped), ``"epoch"``, ``"best_acc1"``, ``"arch"``, ``"num_classes"}``;
    :class:`OfficialCheckpointError` naming the file otherwise (anything that is not plain
    tensors and numbers is refused by torch and named so here)."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such file")
    try:
        check_torch_file(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except DamagedFile as e:
        raise OfficialCheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise OfficialCheckpointError(
            f"{path}: unreadable or refused ({torch_error_text(e)})"
        ) from e
    if not is_official(ckpt):
        keys = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise OfficialCheckpointError(
            f"{path}: not an I2E release checkpoint (expected a dict with 'state_dict', "
            f"'best_acc1', 'epoch'; found {keys})"
        )
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialCheckpointError(f"{path}: 'state_dict' is not a dict of tensors")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    return {
        "state_dict": state,
        "epoch": ckpt.get("epoch"),
        "best_acc1": ckpt.get("best_acc1"),
        "arch": release_arch(state, path),
        "num_classes": int(state["fc.weight"].shape[0]) if "fc.weight" in state else None,
    }


def release_arch(state: dict, where: str | Path = "state_dict") -> str:
    """``msresnet18`` / ``msresnet34`` from the blocks per stage; bottleneck ResNets (50, 101,
    152: ``conv3`` in the blocks) are refused by name."""
    if any(".conv3." in k for k in state):
        raise OfficialCheckpointError(
            f"{where}: a bottleneck ResNet (resnet50/101/152, key "
            f"{next(k for k in state if '.conv3.' in k)!r}); only resnet18 and resnet34 map to "
            "our MS-ResNet"
        )
    counts = []
    for stage in range(1, 5):
        ids = {
            int(m.group(2)) for k in state if (m := _BLOCK.match(k)) and m.group(1) == str(stage)
        }
        counts.append(len(ids))
    arch = ARCHS.get(tuple(counts))
    if arch is None:
        raise OfficialCheckpointError(
            f"{where}: {counts} blocks per stage; the release's resnet18 has [2, 2, 2, 2], "
            "resnet34 [3, 4, 6, 3]"
        )
    return arch


def reference_key(key: str, arch: str) -> str | None:
    """Our reference's name of a release parameter (None: ``i2e.weight``, not a parameter of
    ours); :class:`KeyError` for a name the release's models do not have."""
    from i2e_neuro.models.spec import ARCHITECTURES

    if key == "i2e.weight":
        return None
    if key.startswith("conv1."):
        return "stem.0." + key[len("conv1.") :]
    if key.startswith("bn1."):
        return "stem.1." + key[len("bn1.") :]
    if key.startswith("fc."):
        return key
    m = _BLOCK.match(key)
    if m:
        stage, j, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
        k = sum(ARCHITECTURES[arch]["blocks"][:stage]) + j
        for theirs, ours in _BLOCK_PARTS.items():
            if rest.startswith(theirs + "."):
                return f"blocks.{k}.{ours}.{rest[len(theirs) + 1 :]}"
    raise KeyError(key)


def reference_state(state: dict, arch: str, where: str | Path = "state_dict") -> dict:
    """The release's ``state_dict`` under our reference's names; errors name the key."""
    out = {}
    for key, value in state.items():
        try:
            ours = reference_key(key, arch)
        except KeyError:
            raise OfficialCheckpointError(
                f"{where}: parameter {key!r} is not one of the release's resnet18/34"
            ) from None
        if ours is not None:
            out[ours] = value
    return out


def load_reference(path: str | Path, in_channels: int = 2):
    """``(model, checkpoint)``: our SpikingJelly reference holding a release checkpoint's
    weights (the architecture and class count are the checkpoint's), in eval mode."""
    from i2e_neuro.models.reference import build_reference

    ckpt = read_checkpoint(path)
    model = build_reference(ckpt["arch"], in_channels, ckpt["num_classes"])
    state = reference_state(ckpt["state_dict"], ckpt["arch"], path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise OfficialCheckpointError(f"{path}: has no parameter for {missing[0]!r}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise OfficialCheckpointError(
                f"{path}: parameter {k!r} has shape {tuple(v.shape)}, the model needs "
                f"{tuple(own[k].shape)}"
            )
    model.load_state_dict(state)
    return model.eval(), ckpt


def graph_state(reference: dict, model) -> dict:
    """A float (unfolded) :class:`~i2e_neuro.models.qat.SpikingGraph` state dict from our
    reference's names: every convolution and BatchNorm in its place (the stem's weights on the
    stride-4 stem), the classifier scaled for the graph's head (sum-pool instead of mean,
    threshold units: ``fc.weight * threshold / (H * W)``) and its bias on the readout group
    (applied once folded). Shapes are checked by the caller's ``load_state_dict``."""
    from i2e_neuro.models.qat import _key

    spec = model.spec
    names = {}  # our reference's module prefix -> graph connection name
    names["stem.0"], names["stem.1"] = "stem", "stem"
    k = 0
    stages = sorted({int(g.name[1]) for g in spec.groups if re.match(r"s\d+b\d+\.", g.name)})
    for i in stages:
        n = len({g.name.split(".")[0] for g in spec.groups if g.name.startswith(f"s{i}b")})
        for j in range(n):
            prefix = f"s{i}b{j}"
            for part, conn in (
                ("residual.1", "conv1"),
                ("residual.2", "conv1"),
                ("residual.4", "conv2"),
                ("residual.5", "conv2"),
                ("shortcut.1", "down"),
                ("shortcut.2", "down"),
            ):
                names[f"blocks.{k}.{part}"] = f"{prefix}.{conn}"
            k += 1
    threshold = float(model.neuron_config.threshold)
    head = spec.group(spec.incoming(spec.readout.name)[0].source)
    pool = int(head.shape[1] * head.shape[2])
    out = {}
    for key, value in reference.items():
        if key.startswith("fc."):
            fc = next(c for c in spec.incoming(spec.readout.name))
            # each class's row for each of its readout neurons (class-major): the same decision
            value = value.repeat_interleave(spec.readout.population, 0)
            if key == "fc.weight":
                out[f"synapses.{_key(fc.name)}.weight"] = (value * threshold / pool)[
                    ..., None, None, None
                ]
            else:
                out[f"biases.{_key(spec.readout.name)}"] = value * threshold
            continue
        prefix, _, leaf = key.rpartition(".")
        conn = names.get(prefix)
        if conn is None:
            raise KeyError(key)
        if leaf == "weight" and value.ndim == 4:
            out[f"synapses.{_key(conn)}.weight"] = value[..., None]
        else:
            out[f"norms.{_key(conn)}.{leaf}"] = value
    return out
