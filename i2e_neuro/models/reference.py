"""The paper's float MS-ResNet in SpikingJelly: the reference the hardware-aware model is measured against.

LIF with tau = 2, ``decay_input=False``, ``v_threshold = 1``, hard reset to 0,
``detach_reset=True``, ATan surrogate; stem conv -> BN -> max-pool; blocks
``sn -> conv3x3 -> BN -> sn -> conv3x3 -> BN`` plus identity on membrane input; downsample
``sn -> conv1x1(stride) -> BN``; head global average pool -> sn -> fc; logits averaged over time.
Input and all activations are multi-step ``[T, B, C, H, W]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from i2e_neuro.models.spec import ARCHITECTURES


def lif() -> neuron.LIFNode:
    return neuron.LIFNode(
        tau=2.0,
        decay_input=False,
        v_threshold=1.0,
        v_reset=0.0,
        detach_reset=True,
        surrogate_function=surrogate.ATan(),
        step_mode="m",
    )


class BasicBlock(torch.nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.residual = torch.nn.Sequential(
            lif(),
            layer.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False, step_mode="m"),
            layer.BatchNorm2d(out_ch, step_mode="m"),
            lif(),
            layer.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False, step_mode="m"),
            layer.BatchNorm2d(out_ch, step_mode="m"),
        )
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = torch.nn.Sequential(
                lif(),
                layer.Conv2d(in_ch, out_ch, 1, stride, bias=False, step_mode="m"),
                layer.BatchNorm2d(out_ch, step_mode="m"),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + (x if self.shortcut is None else self.shortcut(x))


class MSResNet(torch.nn.Module):
    """Float MS-ResNet (SpikingJelly); ``forward([T, B, C, H, W]) -> logits [B, K]``."""

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        in_channels: int = 2,
        num_classes: int = 10,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
        stem_padding: int | None = None,
    ) -> None:
        super().__init__()
        stem = [
            layer.Conv2d(
                in_channels,
                widths[0],
                stem_kernel,
                stem_stride,
                stem_kernel // 2 if stem_padding is None else stem_padding,
                bias=False,
                step_mode="m",
            ),
            layer.BatchNorm2d(widths[0], step_mode="m"),
        ]
        if stem_pool:
            stem.append(layer.MaxPool2d(3, 2, 1, step_mode="m"))
        self.stem = torch.nn.Sequential(*stem)
        stages, ch = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stages.append(BasicBlock(ch, w, 2 if i > 0 and j == 0 else 1))
                ch = w
        self.blocks = torch.nn.Sequential(*stages)
        self.pool = layer.AdaptiveAvgPool2d(1, step_mode="m")
        self.sn = lif()
        self.fc = layer.Linear(ch, num_classes, step_mode="m")

    def forward(self, events: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        x = self.blocks(self.stem(events.float()))
        x = self.sn(self.pool(x)).flatten(2)
        return self.fc(x).mean(0)


def build_reference(arch: str, in_channels: int, num_classes: int) -> MSResNet:
    """The paper's model for an architecture name of :data:`spec.ARCHITECTURES`.

    ``msresnet_tiny`` keeps the paper's stem form at CPU size: conv 3x3 stride 2 + max-pool; the
    ``-l2s8`` Loihi 2 variants keep their 8x8 stride-8 stem without padding or max-pool, as on
    the chip.
    """
    kw = dict(ARCHITECTURES[arch])
    if arch == "msresnet_tiny":
        kw.update(stem_kernel=3, stem_stride=2)
        kw.pop("stem_padding", None)
    elif "stem_stride" in kw:
        kw["stem_pool"] = False  # a Loihi 2 variant's patchify stem (-l2s8): the Loihi graph's own
    return MSResNet(in_channels=in_channels, num_classes=num_classes, **kw)
