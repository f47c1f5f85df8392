"""The network topology: a graph of neuron groups and synaptic connections (:class:`NetSpec`).

This is the shape of a network as Loihi sees it: neuron groups (shape), and connections
(conv or pooled-dense synapses) from one source (a group or the input) to one or more target
groups, whose inputs are summed. The MS-ResNet membrane shortcut is exactly that: the residual
stream is the sum of several connections into one group. The QAT model runs a :class:`NetSpec`,
and the exported network description is composed of one; graph walks, shapes and structural
checks live here only (docs/ARCHITECTURE.md). Plain data: no torch, no Lava.

Every connection delays by one timestep (as in Lava and on Loihi), so a sample of ``T`` input
frames needs ``T + depth`` steps, ``depth`` being the longest path (in hops) from the input to
the readout (docs/EXACTNESS.md says why the network is then exact window by window).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

INPUT = "input"


def pair(value) -> tuple:
    """``value`` as an ``(h, w)`` pair: a scalar twice, or the first and last item of a sequence
    (list, tuple, 1-D array) of one or two items. ValueError for any other length. The one
    parser of kernel, stride and padding pairs; callers check the values."""
    if isinstance(value, (str, bytes)):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:  # a scalar (0-d arrays included)
            items = [value]
    if len(items) not in (1, 2):
        raise ValueError(f"expected a number or a pair (h, w), got {value!r}")
    return items[0], items[-1]


@dataclass
class ConnSpec:
    """A synaptic connection. ``kind`` is ``conv`` or ``pool_dense`` (global sum-pool then dense)."""

    name: str
    source: str
    targets: list[str]
    kind: str
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    batchnorm: bool = True


@dataclass
class GroupSpec:
    """A neuron group; ``shape`` is ``(C, H, W)``, or ``(K * population,)`` for the spiking
    readout: ``population`` neurons per class, class-major (neuron ``k * population + j``), whose
    spikes the host adds up per class (``i2e_neuro.models.readout``)."""

    name: str
    shape: tuple[int, ...]
    readout: bool = False
    population: int = 1


@dataclass
class NetSpec:
    """The network topology: input, neuron groups in feed-forward order, connections.

    The one place where the graph is walked (incoming connections, hop depths, shapes, chain
    test) and checked; the QAT model and the exported network description both use it.
    """

    name: str
    input_shape: tuple[int, int, int]
    timesteps: int
    groups: list[GroupSpec] = field(default_factory=list)
    conns: list[ConnSpec] = field(default_factory=list)

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no neuron group named {name!r}")

    def incoming(self, group: str) -> list[ConnSpec]:
        return [c for c in self.conns if group in c.targets]

    def source_shape(self, source: str) -> tuple[int, ...]:
        return tuple(self.input_shape) if source == INPUT else self.group(source).shape

    def output_shape(self, c: ConnSpec) -> tuple[int, ...]:
        """Shape of the synaptic input that connection ``c`` delivers to its targets."""
        return conn_output_shape(c, self.source_shape(c.source))

    def depths(self) -> dict[str, int]:
        """Longest path in hops from the input to each group (every connection is one hop)."""
        depth = {INPUT: 0}
        for g in self.groups:
            depth[g.name] = 1 + max(depth[c.source] for c in self.incoming(g.name))
        return depth

    def is_chain(self) -> bool:
        """True when every group has one input, from the group before it (what netx can load)."""
        previous = INPUT
        for g in self.groups:
            inc = self.incoming(g.name)
            if len(inc) != 1 or inc[0].source != previous or len(inc[0].targets) != 1:
                return False
            previous = g.name
        return True

    @property
    def readout(self) -> GroupSpec:
        return self.groups[-1]

    @property
    def num_classes(self) -> int:
        return self.readout.shape[0] // self.readout.population

    @property
    def steps(self) -> int:
        """Timesteps per sample: the input frames plus the network's latency."""
        return self.timesteps + self.depths()[self.readout.name]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetSpec":
        return cls(
            name=d["name"],
            input_shape=tuple(int(s) for s in d["input_shape"]),
            timesteps=int(d["timesteps"]),
            groups=[
                GroupSpec(
                    g["name"],
                    tuple(int(s) for s in g["shape"]),
                    bool(g["readout"]),
                    int(g.get("population", 1)),
                )
                for g in d["groups"]
            ],
            conns=[ConnSpec(**{**c, "targets": list(c["targets"])}) for c in d["conns"]],
        )

    def validate(self) -> None:
        """Check that the graph is well formed and that shapes chain; errors name the part."""
        if not self.groups:
            raise ValueError(f"{self.name}: no neuron groups")
        if not self.groups[-1].readout or any(g.readout for g in self.groups[:-1]):
            raise ValueError(f"{self.name}: the last group, and only it, must be the readout")
        for g in self.groups:
            p = g.population
            if p < 1 or (not g.readout and p != 1) or (g.readout and g.shape[0] % p):
                raise ValueError(
                    f"group {g.name!r}: population {p} (the readout's neurons per class; it must "
                    "divide the readout's size, and other groups have 1)"
                )
        order = {g.name: i for i, g in enumerate(self.groups)}
        order[INPUT] = -1
        for g in self.groups:
            if not self.incoming(g.name):
                raise ValueError(f"group {g.name!r}: has no incoming connection")
        for c in self.conns:
            if c.source not in order:
                raise ValueError(f"connection {c.name!r}: unknown source {c.source!r}")
            for t in c.targets:
                if t not in order or t == INPUT:
                    raise ValueError(f"connection {c.name!r}: unknown target {t!r}")
                if order[t] <= order[c.source]:
                    raise ValueError(
                        f"connection {c.name!r}: target {t!r} comes before its source "
                        "(groups must be listed in feed-forward order)"
                    )
                expected = self.output_shape(c)
                if tuple(self.group(t).shape) != expected:
                    raise ValueError(
                        f"connection {c.name!r}: output shape {expected} does not match group {t!r} {self.group(t).shape}"
                    )


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution along one axis: ``(size + 2*padding - kernel) // stride + 1``
    (may be < 1 when the kernel is larger than the padded input; callers check)."""
    return (size + 2 * padding - kernel) // stride + 1


def conn_output_shape(c: ConnSpec, in_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape a connection delivers from a source of shape ``(C, H, W)``; errors name ``c``."""
    if len(in_shape) != 3 or in_shape[0] != c.in_channels:
        raise ValueError(
            f"connection {c.name!r}: expects {c.in_channels} input channels, source has shape {tuple(in_shape)}"
        )
    if c.kind == "pool_dense":
        return (c.out_channels,)
    if c.kind != "conv":
        raise ValueError(f"connection {c.name!r}: unknown kind {c.kind!r}")
    _, h, w = in_shape
    out_h, out_w = (conv_output_size(n, c.kernel, c.stride, c.padding) for n in (h, w))
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"connection {c.name!r}: kernel {c.kernel} larger than its padded input {tuple(in_shape)}"
        )
    return (c.out_channels, out_h, out_w)


def msresnet_spec(
    name: str,
    blocks: Sequence[int],
    widths: Sequence[int],
    input_shape: tuple[int, int, int] = (2, 128, 128),
    num_classes: int = 10,
    timesteps: int = 8,
    stem_kernel: int = 7,
    stem_stride: int = 4,
    stem_padding: int | None = None,
    population: int = 1,
) -> NetSpec:
    """MS-ResNet with membrane shortcuts as a group/connection graph.

    Blocks are ``sn1 -> conv3x3 -> sn2 -> conv3x3``; the residual stream (synaptic input, not
    spikes) is the set of connections summed into the next block's ``sn1``. A downsampling
    block adds ``sn1 -> conv1x1(stride)``, which starts a new stream. The paper's stem
    (conv stride 2 + max-pool stride 2 on membrane input) becomes one conv of stride 4: Loihi
    has no max-pool on synaptic input. The head is ``sn -> global sum-pool -> dense`` into
    a spiking readout group whose spikes the host counts, ``population`` neurons per class.
    """
    spec = NetSpec(name, tuple(input_shape), timesteps)

    def add_conn(
        cname: str, source: str, out_ch: int, kernel: int, stride: int, padding: int
    ) -> ConnSpec:
        c = ConnSpec(
            cname, source, [], "conv", spec.source_shape(source)[0], out_ch, kernel, stride, padding
        )
        spec.conns.append(c)
        return c

    def add_group(gname: str, stream: list[ConnSpec]) -> str:
        out = conn_output_shape(stream[0], spec.source_shape(stream[0].source))
        spec.groups.append(GroupSpec(gname, out))
        for c in stream:
            c.targets.append(gname)
        return gname

    pad = stem_kernel // 2 if stem_padding is None else stem_padding
    stem = add_conn("stem", INPUT, widths[0], stem_kernel, stem_stride, pad)
    stream = [stem]
    channels = widths[0]
    for i, (n, width) in enumerate(zip(blocks, widths)):
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            prefix = f"s{i}b{j}"
            sn1 = add_group(f"{prefix}.sn1", stream)
            conv1 = add_conn(f"{prefix}.conv1", sn1, width, 3, stride, 1)
            sn2 = add_group(f"{prefix}.sn2", [conv1])
            conv2 = add_conn(f"{prefix}.conv2", sn2, width, 3, 1, 1)
            if stride != 1 or channels != width:
                stream = [add_conn(f"{prefix}.down", sn1, width, 1, stride, 0), conv2]
            else:
                stream = stream + [conv2]
            channels = width
    head = add_group("head.sn", stream)
    out = num_classes * population
    fc = ConnSpec("fc", head, ["readout"], "pool_dense", channels, out, batchnorm=False)
    spec.conns.append(fc)
    spec.groups.append(GroupSpec("readout", (out,), readout=True, population=population))
    spec.validate()
    return spec


#: name -> keyword arguments of :func:`msresnet_spec` (input shape and classes come from the data).
ARCHITECTURES: dict[str, dict] = {
    "msresnet18": dict(blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512)),
    "msresnet34": dict(blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512)),
    # CPU-sized for 32x32 digits (8x8 originals): the paper's stem as one conv, 7x7 stride 4
    # padding 3 (the receptive field and stride of its conv 3x3 stride 2 + max-pool 3x3
    # stride 2; the full-size networks' stem too) back to 8x8, one plain and one downsampling
    # block. A 4x4 stride-4 stem (no overlap) was 1.1 points below the reference on digits
    # (BENCHMARKS.md, "Digits").
    "msresnet_tiny": dict(blocks=(1, 1), widths=(16, 32), stem_kernel=7, stem_stride=4),
    # Loihi 2 variants (docs/LOIHI2.md, "Paper-size networks on named systems"): the paper's
    # block counts, widths chosen so that every group's fan-in (the residual stream sums a
    # stage's conv2 outputs: w_prev + blocks x 9 x w per neuron) stays within the 4,096 per
    # core of hw_configs/loihi2.yaml, and the whole network within a named system's cores.
    # "-l2w": the widest that fits the fan-in (32x32 inputs: Kapoho Point); "-l2": narrower, so
    # that 128x128 fits Kapoho Point's 1,024 cores; "-l2s8": "-l2" with an 8x8 stride-8 stem
    # (no overlap), so that 224x224 fits and the head's 4x4 map keeps the readout's fan-in
    # (C x H x W) within the limit.
    "msresnet18-l2w": dict(blocks=(2, 2, 2, 2), widths=(64, 128, 208, 208)),
    "msresnet18-l2": dict(blocks=(2, 2, 2, 2), widths=(32, 64, 128, 216)),
    "msresnet18-l2s8": dict(
        blocks=(2, 2, 2, 2), widths=(32, 64, 128, 216), stem_kernel=8, stem_stride=8, stem_padding=0
    ),
    "msresnet34-l2w": dict(blocks=(3, 4, 6, 3), widths=(64, 72, 72, 144)),
    "msresnet34-l2": dict(blocks=(3, 4, 6, 3), widths=(16, 32, 64, 128)),
    "msresnet34-l2s8": dict(
        blocks=(3, 4, 6, 3), widths=(16, 32, 64, 128), stem_kernel=8, stem_stride=8, stem_padding=0
    ),
}

#: each paper architecture and its Loihi 2 variants, widest first (the closest that fits a
#: target is the first of these that does: ``export.resources.closest_fit``)
LOIHI2_VARIANTS: dict[str, tuple[str, ...]] = {
    "msresnet18": ("msresnet18", "msresnet18-l2w", "msresnet18-l2", "msresnet18-l2s8"),
    "msresnet34": ("msresnet34", "msresnet34-l2w", "msresnet34-l2", "msresnet34-l2s8"),
}


def build_spec(
    arch: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    timesteps: int = 8,
    population: int = 1,
) -> NetSpec:
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch={arch!r}: must be one of {sorted(ARCHITECTURES)}")
    return msresnet_spec(
        arch,
        input_shape=input_shape,
        num_classes=num_classes,
        timesteps=timesteps,
        population=population,
        **ARCHITECTURES[arch],
    )
