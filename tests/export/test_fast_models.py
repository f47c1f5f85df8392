"""export.lava.conv / lif (the fast models): the fast Conv and LIF models equal Lava's stock fixed-point models bit
for bit, and a failing Lava run leaves no worker processes behind.

Every network runs twice in the Lava CPU simulator, once with the stock fixed-point models
and once with ``fast_run_config()`` (``FastConvModelFixed``, ``FastLifModelBitAcc``,
``FastLifResetModelBitAcc`` in place of the stock models); everything recorded (per-step conv
output ``a_out`` and LIF spikes through sink RingBuffers, final LIF ``u``/``v`` and conv
``a_buf``) must be identical.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

import numpy as np
import pytest
from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv import utils
from lava.proc.conv.models import PyConvModelFixed
from lava.proc.conv.process import Conv
from lava.proc.io.sink import RingBuffer as SinkBuffer
from lava.proc.io.source import RingBuffer as SourceBuffer
from lava.proc.lif.models import PyLifModelBitAcc, PyLifResetModelBitAcc
from lava.proc.lif.process import LIF, LIFReset

from export.lava import conv_plan, ports, synapse
from export.lava.conv import FastConvModelFixed
from export.lava.conv_plan import conv_exact
from export.lava.lif import FastLifModelBitAcc, FastLifResetModelBitAcc
from export.lava.run_config import fast_run_config
from export.lava.supervision import LavaRunError, run_checked

# Runs Lava process graphs (OS processes per process model): left out of `make test-fast`.
pytestmark = pytest.mark.slow

STEPS = 24


# --------------------------------------------------------------------------------------------
# conv_exact against lava.proc.conv.utils.conv (no Lava runtime; fast)
# --------------------------------------------------------------------------------------------

GEOMETRIES = [
    # (W, H, C_in, C_out, kernel (x, y), stride, padding, dilation, groups)
    (9, 7, 4, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (10, 13, 4, 4, (3, 5), (2, 1), (0, 2), (1, 1), 2),
    (11, 8, 6, 3, (5, 5), (2, 2), (2, 2), (1, 1), 3),
    (12, 12, 4, 8, (3, 3), (1, 1), (2, 2), (2, 2), 4),
    (7, 9, 2, 2, (1, 1), (3, 3), (0, 0), (1, 1), 1),
    (16, 5, 3, 3, (2, 4), (1, 2), (1, 0), (2, 1), 1),
    (6, 6, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),
    # Maps smaller than the kernel (taps that only ever meet the padding)
    (1, 1, 4, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 3, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (2, 1, 3, 3, (5, 3), (2, 1), (2, 1), (1, 1), 1),
    (1, 2, 2, 2, (3, 3), (1, 1), (2, 2), (2, 2), 1),
]


def _inputs(rng, shape):
    """Binary spikes; graded values on both sides of the float32 (2**24) and float64 limits."""
    return {
        "binary": rng.random(shape) < 0.3,
        "graded_small": rng.integers(-255, 256, shape).astype(np.int32),
        "graded_f32_edge": rng.integers(-(2**12), 2**12, shape).astype(np.int32),
        "graded_24bit": rng.integers(-(2**23), 2**23, shape).astype(np.int32),
        "int32_extreme": np.full(shape, 2**31 - 1, np.int32),
        "silent_binary": np.zeros(shape, bool),  # no computation: all-zero output
        "silent_graded": np.zeros(shape, np.int32),
    }


@pytest.mark.parametrize("backend", ["torch", "numpy", "gather", "events"])
@pytest.mark.parametrize("weight_exp", [-3, -1, 2])
def test_conv_exact_scaled_equals_the_integer_shift(backend, weight_exp, monkeypatch):
    """``weight_exp`` folded into the float convolution equals the stock integer sum shifted
    as Loihi does (``shift_by_exponent`` on int64), in every geometry and input range."""
    monkeypatch.setattr(conv_plan, "_BACKEND", backend)
    for geom in GEOMETRIES:
        w_, h_, cin, cout, k, s, p, d, g = geom
        rng = np.random.default_rng(300 + GEOMETRIES.index(geom))
        weight = (rng.integers(-128, 128, (cout, *k, cin // g)) * 2).astype(np.int32)
        for name, x in _inputs(rng, (w_, h_, cin)).items():
            if name == "int32_extreme":
                continue  # the stock cast to int32 overflows before the shift
            with np.errstate(all="ignore"):  # graded_24bit overflows int32 in both
                ref = synapse.shift_by_exponent(
                    utils.conv(x, weight, k, s, p, d, g).astype(np.int64), weight_exp
                )
                got, bound = conv_plan._conv_exact(x, weight, k, s, p, d, g, weight_exp=weight_exp)
            assert np.array_equal(got, ref), (geom, name)
            if bound is not None:
                assert np.abs(ref).max(initial=0) <= bound, (geom, name)


@pytest.mark.parametrize("backend", ["torch", "numpy", "gather", "events"])
@pytest.mark.parametrize(
    "geom",
    GEOMETRIES,
    ids=lambda g: "x".join(map(str, g[:2])) + f"_k{g[4]}_s{g[5]}_p{g[6]}_d{g[7]}_g{g[8]}",
)
def test_conv_exact_equals_stock_conv(geom, backend, monkeypatch):
    monkeypatch.setattr(conv_plan, "_BACKEND", backend)
    w_, h_, cin, cout, k, s, p, d, g = geom
    rng = np.random.default_rng(100 + GEOMETRIES.index(geom))
    weight = (rng.integers(-128, 128, (cout, *k, cin // g)) * 2).astype(np.int32)
    as_int8 = lambda t: np.array(t, np.int8)  # noqa: E731 - the model passes int8 Vars
    with np.errstate(all="ignore"):  # the int32_extreme case overflows in both
        for name, x in _inputs(rng, (w_, h_, cin)).items():
            ref = utils.conv(x, weight, k, s, p, d, g)
            got = conv_exact(x, weight, as_int8(k), as_int8(s), as_int8(p), as_int8(d), g)
            assert got.dtype == ref.dtype and got.shape == ref.shape, name
            assert got.flags.c_contiguous, name
            assert np.array_equal(got, ref), name
            assert np.array_equal(utils.signed_clamp(got, 24), utils.signed_clamp(ref, 24))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_events_equals_stock_conv(dtype):
    """Binary spikes convolved event by event (each spike adds its channel's weights of every
    tap, then each output sums its taps) give the stock integers in every one-group geometry:
    strides, dilations, padding, rectangular kernels, maps smaller than the kernel, dense and
    sparse spikes."""
    for geom in GEOMETRIES:
        w_, h_, cin, cout, k, s, p, d, g = geom
        if g != 1:
            continue
        rng = np.random.default_rng(500 + GEOMETRIES.index(geom))
        weight = (rng.integers(-128, 128, (cout, *k, cin)) * 2).astype(np.int32)
        plan = conv_plan._ConvPlan(weight, k, s, p, d, g)
        for density in (0.02, 0.3, 1.0):
            x = rng.random((w_, h_, cin)) < density
            ref = utils.conv(x, weight, k, s, p, d, g)
            got = conv_plan._conv_events(x, plan, dtype)
            assert got.dtype == dtype and got.shape == ref.shape, geom
            assert np.array_equal(got, ref), (geom, density)


@pytest.mark.parametrize("cheaper", [True, False])
def test_auto_choice_follows_the_measured_costs(cheaper, monkeypatch):
    """ "auto" convolves binary stride-1 input event by event exactly when the costs measured
    for its geometry say that is faster, and the result is the stock one either way; graded
    input and strided geometries never take that path."""
    calls = []
    real = conv_plan._conv_events
    monkeypatch.setattr(conv_plan, "_BACKEND", "auto")
    monkeypatch.setattr(conv_plan, "_event_costs", lambda plan, shape: (0.0, 0.0, 1.0 * cheaper))
    monkeypatch.setattr(conv_plan, "_conv_events", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(11)
    weight = (rng.integers(-128, 128, (8, 3, 3, 6)) * 2).astype(np.int32)
    for stride, x in (
        (1, rng.random((9, 7, 6)) < 0.1),
        (1, rng.integers(-3, 4, (9, 7, 6)).astype(np.int32)),
        (2, rng.random((9, 7, 6)) < 0.1),
    ):
        ref = utils.conv(x, weight, (3, 3), (stride, stride), (1, 1), (1, 1), 1)
        got, _ = conv_plan._conv_exact(x, weight, 3, stride, 1, 1, 1)
        assert np.array_equal(got, ref)
    assert len(calls) == (1 if cheaper else 0)


def test_event_costs_are_measured_once_per_geometry():
    """The costs behind the choice: positive times, measured on first use and kept."""
    rng = np.random.default_rng(12)
    weight = (rng.integers(-128, 128, (4, 3, 3, 5)) * 2).astype(np.int32)
    plan = conv_plan._ConvPlan(weight, 3, 1, 1, 1, 1)
    a, b, dense = conv_plan._event_costs(plan, (6, 5, 5))
    assert b >= 0 and dense > 0 and a + b * 30 > 0
    assert conv_plan._event_costs(plan, (6, 5, 5)) is conv_plan._event_costs(plan, (6, 5, 5))


def test_step_costs_are_measured_once_per_geometry():
    """The cost behind where a convolution runs: a positive time, measured on first use, kept
    per geometry (another geometry is measured on its own)."""
    rng = np.random.default_rng(13)
    weight = (rng.integers(-128, 128, (4, 3, 3, 5)) * 2).astype(np.int32)
    plan = conv_plan._ConvPlan(weight, 3, 1, 1, 1, 1)
    cost = conv_plan.step_cost(plan, (6, 5, 5))
    assert cost > 0 and conv_plan.step_cost(plan, (6, 5, 5)) is cost
    strided = conv_plan._ConvPlan(weight, 3, 2, 1, 1, 1)
    before = len(conv_plan._STEP_COSTS)
    assert conv_plan.step_cost(strided, (6, 5, 5)) > 0
    assert len(conv_plan._STEP_COSTS) == before + 1


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.5])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (2, 1)])
def test_conv_gather_on_small_maps_of_sparse_spikes(size, density):
    """The "auto" choice for maps of a few positions: only the weight rows of the taps and
    channels that carry a spike are read (most of them at low density); same integers as
    the stock convolution."""
    rng = np.random.default_rng(int(density * 100) + size[0])
    weight = (rng.integers(-128, 128, (32, 3, 3, 64)) * 2).astype(np.int32)
    plan = conv_plan._ConvPlan(weight, 3, 1, 1, 1, 1)
    for _ in range(3):
        x = rng.random((*size, 64)) < density
        ref = utils.conv(x, weight, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        assert conv_plan._output_size(plan, x.shape) <= conv_plan._GATHER_MAX_OUTPUTS
        got, bound = conv_plan._conv_exact(x, weight, 3, 1, 1, 1, 1, plan=plan)
        assert got.dtype == ref.dtype and np.array_equal(got, ref)
        assert np.abs(ref).max(initial=0) <= bound


@pytest.mark.parametrize("backend", ["torch", "numpy", "gather", "events"])
def test_conv_plan_reused_across_inputs(backend, monkeypatch):
    """One ``_ConvPlan`` (what the model keeps between steps) serves every later input exactly,
    whichever precision (float32, float64, stock) each input needs."""
    monkeypatch.setattr(conv_plan, "_BACKEND", backend)
    rng = np.random.default_rng(7)
    w_, h_, cin, cout, k, s, p, d, g = GEOMETRIES[1]
    weight = (rng.integers(-128, 128, (cout, *k, cin // g)) * 2).astype(np.int32)
    plan = conv_plan._ConvPlan(weight, k, s, p, d, g)
    with np.errstate(all="ignore"):
        for _ in range(2):
            for name, x in _inputs(rng, (w_, h_, cin)).items():
                ref = utils.conv(x, weight, k, s, p, d, g)
                got, _ = conv_plan._conv_exact(x, weight, k, s, p, d, g, plan=plan)
                assert got.dtype == ref.dtype and np.array_equal(got, ref), name


# --------------------------------------------------------------------------------------------
# Lava networks: RingBuffer -> Conv -> LIF -> Conv -> LIF, stock vs fast
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvSpec:
    c_out: int
    kernel: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1


@dataclass(frozen=True)
class Net:
    name: str
    input_shape: tuple
    conv1: ConvSpec
    conv2: ConvSpec
    graded_bits: int = 0  # num_message_bits of the first Conv (0: binary spikes)
    graded_max: int = 0


NETS = [
    Net(
        "3x3_pad1_then_stride",
        (10, 7, 3),
        ConvSpec(5, (3, 3), padding=(1, 1)),
        ConvSpec(4, (3, 3), stride=(2, 1), padding=(0, 1)),
    ),
    Net(
        "rect_kernel_groups",
        (9, 11, 4),
        ConvSpec(4, (3, 5), stride=(2, 1), padding=(1, 2), groups=2),
        ConvSpec(4, (1, 1), groups=4),
    ),
    Net(
        "dilation_groups3",
        (13, 8, 3),
        ConvSpec(6, (5, 5), padding=(2, 2), dilation=(2, 1)),
        ConvSpec(3, (2, 4), stride=(2, 2), groups=3),
    ),
    Net(
        "graded_input_24bit",
        (8, 6, 3),
        ConvSpec(4, (3, 3), padding=(1, 1)),
        ConvSpec(4, (3, 3), stride=(1, 2), padding=(1, 0)),
        graded_bits=24,
        graded_max=2**13,
    ),
]

# Note: Var.get() moves one element per message (about 50 us each), so the recorded tensors
# are kept small; the network shapes above still cover the geometry cases.


def _build(net: Net, seed: int):
    """The network and the probes; identical numbers for a given seed."""
    rng = np.random.default_rng(seed)
    shape = net.input_shape
    if net.graded_bits:
        data = rng.integers(-net.graded_max, net.graded_max + 1, (*shape, STEPS))
        data = data * (rng.random((*shape, STEPS)) < 0.3)
    else:
        data = rng.random((*shape, STEPS)) < 0.2
    data[..., 5:9] = 0  # silent steps: the fast Conv skips the computation
    source = SourceBuffer(data=data.astype(np.int32))

    def conv(spec: ConvSpec, in_shape, bits=0):
        weight = rng.integers(-128, 128, (spec.c_out, *spec.kernel, in_shape[-1] // spec.groups))
        return Conv(
            weight=(weight * 2).astype(np.int32),
            input_shape=in_shape,
            padding=spec.padding,
            stride=spec.stride,
            dilation=spec.dilation,
            groups=spec.groups,
            num_message_bits=bits,
        )

    def lif(shape_):
        return LIF(
            shape=shape_,
            du=int(rng.integers(0, 4096)),
            dv=int(rng.integers(0, 4096)),
            vth=int(rng.integers(300, 900)),
            bias_mant=0,
        )

    c1 = conv(net.conv1, shape, net.graded_bits)
    l1 = lif(c1.output_shape)
    c2 = conv(net.conv2, c1.output_shape)
    l2 = lif(c2.output_shape)
    source.s_out.connect(c1.s_in)
    c1.a_out.connect(l1.a_in)
    l1.s_out.connect(c2.s_in)
    c2.a_out.connect(l2.a_in)
    sinks = {}
    for name, port, shp in [
        ("c1.a_out", c1.a_out, c1.output_shape),
        ("l1.s_out", l1.s_out, c1.output_shape),
        ("c2.a_out", c2.a_out, c2.output_shape),
        ("l2.s_out", l2.s_out, c2.output_shape),
    ]:
        sink = SinkBuffer(shape=shp, buffer=STEPS)
        port.connect(sink.a_in)
        sinks[name] = sink
    state = {
        "l1.u": l1.u,
        "l1.v": l1.v,
        "l2.u": l2.u,
        "l2.v": l2.v,
        "c1.a_buf": c1.a_buf,
        "c2.a_buf": c2.a_buf,
    }
    return source, sinks, state


def _run(net: Net, run_cfg, seed: int, in_process: bool = False) -> dict:
    source, sinks, state = _build(net, seed)
    try:
        run_checked(source, STEPS, run_cfg, timeout_s=120, in_process=in_process)
        out = {k: s.data.get().copy() for k, s in sinks.items()}
        out.update({k: v.get().copy() for k, v in state.items()})
        # The host writes a Var that the fast model may hold read-only (a result it sent
        # without a copy), and reads it back.
        a_buf = state["c2.a_buf"]
        a_buf.set(np.arange(a_buf.size, dtype=np.int32).reshape(a_buf.shape) % 7)
        out["c2.a_buf set"] = a_buf.get().copy()
    finally:
        source.stop()
    return out


@pytest.mark.parametrize("in_process", [False, True], ids=["lava_runtime", "in_process"])
@pytest.mark.parametrize("net", NETS, ids=lambda n: n.name)
def test_fast_conv_model_identical_to_stock(net: Net, in_process: bool):
    seed = 1234 + NETS.index(net)
    stock = _run(net, Loihi2SimCfg(select_tag="fixed_pt"), seed)
    fast = _run(net, fast_run_config(), seed, in_process)
    assert stock.keys() == fast.keys()
    for key in stock:
        assert stock[key].shape == fast[key].shape, key
        assert np.array_equal(stock[key], fast[key]), f"{net.name}: {key} differs"
    # The comparison means something: both layers spike, neither saturates.
    for key in ("l1.s_out", "l2.s_out"):
        rate = float((stock[key] != 0).mean())
        assert 0.0 < rate < 0.9, f"{net.name}: {key} spike rate {rate:.3f}"
    assert np.abs(stock["c2.a_out"]).sum() > 0


@pytest.mark.parametrize(
    "proc,stock,fast",
    [
        (
            Conv(weight=np.ones((2, 3, 3, 2), np.int32), input_shape=(5, 5, 2)),
            PyConvModelFixed,
            FastConvModelFixed,
        ),
        (LIF(shape=(3,)), PyLifModelBitAcc, FastLifModelBitAcc),
        (LIFReset(shape=(3,), reset_interval=4), PyLifResetModelBitAcc, FastLifResetModelBitAcc),
    ],
    ids=["Conv", "LIF", "LIFReset"],
)
def test_fast_models_only_when_asked(proc, stock, fast):
    found = ProcGroupDiGraphs._find_proc_models(proc)
    assert fast not in found
    for tag in ("fixed_pt", "bit_accurate_loihi"):
        if tag in stock.tags:
            assert Loihi2SimCfg(select_tag=tag).select(proc, found) is stock
    assert fast_run_config().select(proc, found) is fast
    assert fast.implements_process is type(proc)
    assert {"fixed_pt", "fast"} <= set(fast.tags)
    assert "fast" not in stock.tags


# LIF alone, graded input straight from a RingBuffer: the edges of the fixed-point arithmetic
# (decays 0 and 4095, biases with exponents, 24-bit wrap of u, clip of v, int32 wrap of the
# shifted input).
LIF_CASES = [
    dict(du=0, dv=0, vth=5, bias_mant=0, bias_exp=0, amp=300),
    dict(du=4095, dv=4095, vth=1, bias_mant=0, bias_exp=3, amp=2000),
    dict(du=1000, dv=77, vth=900, bias_mant="random", bias_exp="random", amp=50_000),
    dict(du=3, dv=4000, vth=131_071, bias_mant=-4096, bias_exp=7, amp=2**18),  # u wraps
    dict(du=2047, dv=1024, vth=20, bias_mant=4095, bias_exp=2, amp=2**26),  # int32 wrap
    # No current carried over (factor 4096 - du - ds_offset = 0, Lava's LIF adding 1 to du: as
    # lava-dl's CUBA models with current_decay 1), u wraps; then no state at all
    dict(du=4095, dv=2048, vth=1024, bias_mant="random", bias_exp=6, amp=2**18),
    dict(du=4095, dv=4096, vth=300, bias_mant=0, bias_exp=0, amp=2000),
    # Power-of-two decay factors (int32 shifts): 1024 for u and v, 2 for v
    dict(du=3071, dv=3072, vth=700, bias_mant="random", bias_exp="random", amp=20_000),
    dict(du=2047, dv=4094, vth=50, bias_mant=-700, bias_exp=1, amp=5_000),
]


def _run_lif(case: dict, run_cfg, seed: int, in_process: bool = False) -> dict:
    """One source driving a LIF and a LIFReset with the same parameters."""
    rng = np.random.default_rng(seed)
    shape = (6, 5, 3)
    steps = 20
    data = rng.integers(-case["amp"], case["amp"] + 1, (*shape, steps)).astype(np.int32)
    kw = {k: case[k] for k in ("du", "dv", "vth")}
    kw["bias_mant"] = (
        rng.integers(-4096, 4096, shape) if case["bias_mant"] == "random" else case["bias_mant"]
    )
    kw["bias_exp"] = rng.integers(0, 8, shape) if case["bias_exp"] == "random" else case["bias_exp"]
    source = SourceBuffer(data=data)
    neurons = {
        "LIF": LIF(shape=shape, **kw),
        "LIFReset": LIFReset(shape=shape, reset_interval=7, reset_offset=3, **kw),
    }
    sinks = {}
    for name, neuron in neurons.items():
        source.s_out.connect(neuron.a_in)
        sinks[name] = SinkBuffer(shape=shape, buffer=steps)
        neuron.s_out.connect(sinks[name].a_in)
    try:
        run_checked(source, steps, run_cfg, timeout_s=120, in_process=in_process)
        out = {}
        for name, neuron in neurons.items():
            out[f"{name}.s"] = sinks[name].data.get().copy()
            out[f"{name}.u"] = neuron.u.get().copy()
            out[f"{name}.v"] = neuron.v.get().copy()
        return out
    finally:
        source.stop()


@pytest.mark.parametrize("in_process", [False, True], ids=["lava_runtime", "in_process"])
@pytest.mark.parametrize("case", LIF_CASES, ids=lambda c: f"du{c['du']}_dv{c['dv']}_amp{c['amp']}")
def test_fast_lif_models_identical_to_stock(case, in_process: bool):
    seed = LIF_CASES.index(case)
    stock = _run_lif(case, Loihi2SimCfg(select_tag="fixed_pt"), seed)
    fast = _run_lif(case, fast_run_config(), seed, in_process)
    for key in stock:
        assert np.array_equal(stock[key], fast[key]), key


# --------------------------------------------------------------------------------------------
# Failing runs leave no worker processes
# --------------------------------------------------------------------------------------------


def _child_processes() -> set:
    """(pid, start time) of this process's children, without multiprocessing's resource
    tracker (started once on first shared-memory use, lives as long as this process)."""
    me = str(os.getpid())
    kids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[1] != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"resource_tracker" in cmdline:
            continue
        kids.add((int(entry), fields[19]))
    return kids


class _RaisesInRunSpk(FastConvModelFixed):
    def run_spk(self):
        if self.time_step == 3:
            raise ValueError("boom in run_spk")
        super().run_spk()


class _RaisesInInit(FastConvModelFixed):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        raise ValueError("boom in __init__")


def _small_net():
    source = SourceBuffer(data=np.ones((5, 4, 2, 10), np.int32))
    conv = Conv(weight=np.full((2, 3, 3, 2), 2, np.int32), input_shape=(5, 4, 2), padding=1)
    lif = LIF(shape=conv.output_shape, vth=2)
    source.s_out.connect(conv.s_in)
    conv.a_out.connect(lif.a_in)
    return source, lif


@pytest.mark.parametrize(
    "failure,expected",
    [
        ("run_spk", LavaRunError),
        ("init", ValueError),
        ("compile", AssertionError),
    ],
)
def test_failed_run_leaves_no_processes(failure, expected):
    cfgs = {
        "run_spk": fast_run_config(exception_proc_model_map={Conv: _RaisesInRunSpk}),
        "init": fast_run_config(exception_proc_model_map={Conv: _RaisesInInit}),
        "compile": Loihi2SimCfg(select_tag="no_such_tag"),
    }
    before = _child_processes()
    mp_before = set(multiprocessing.active_children())
    source, _ = _small_net()
    with pytest.raises(expected, match="boom|no_such_tag"):
        try:
            run_checked(source, 10, cfgs[failure], timeout_s=60)
        finally:
            source.stop()  # must return (Lava's own stop() hangs after a worker failed)
    assert _child_processes() - before == set()
    assert set(multiprocessing.active_children()) - mp_before == set()

    # And the next run in this process works.
    source, lif = _small_net()
    try:
        run_checked(source, 10, fast_run_config(), timeout_s=60)
        assert lif.v.get().shape == (5, 4, 2)
    finally:
        source.stop()
    assert _child_processes() - before == set()


def test_fast_model_after_parent_used_torch_threads():
    """Lava forks its workers.  When the main process has run multi-threaded torch (OpenMP
    pool started, here also through conv_exact itself), a multi-threaded torch op in a forked
    worker hangs; the workers must run torch single-threaded (set up per process id, not by a
    flag that the fork would copy)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    x = np.random.default_rng(0).random((96, 96, 16)) < 0.1
    w = np.ones((16, 3, 3, 16), np.int32)
    try:
        torch.set_num_threads(max(2, threads))
        torch.nn.functional.conv2d(torch.rand(1, 16, 64, 64), torch.rand(16, 16, 3, 3), padding=1)
        conv_exact(x, w, (3, 3), (1, 1), (1, 1), (1, 1), 1)
        conv_plan._prepare_worker()  # in the main process: a no-op
        assert torch.get_num_threads() == max(2, threads)
    finally:
        torch.set_num_threads(threads)
    source = SourceBuffer(data=np.tile(x[..., None], (1, 1, 1, 6)).astype(np.int32))
    conv = Conv(weight=w, input_shape=x.shape, padding=1)
    lif = LIF(shape=conv.output_shape, vth=2)
    source.s_out.connect(conv.s_in)
    conv.a_out.connect(lif.a_in)
    try:
        run_checked(source, 6, fast_run_config(), timeout_s=30)  # raises on a hang
    finally:
        source.stop()


def test_fast_lif_arithmetic_direct():
    """The LIF update on its own (no runtime), many random states over the whole int32 range
    of u, v and the input, every decay constant class, with and without bias: the fast models'
    steps equal the stock models' exactly, and never fall back to the stock arithmetic."""
    from unittest import mock

    from lava.proc.lif.models import AbstractPyLifModelFixed

    rng = np.random.default_rng(7)
    shape = (4096,)
    for trial in range(60):
        stock, fast = PyLifModelBitAcc({"shape": shape}), FastLifModelBitAcc({"shape": shape})
        big = [2**10, 2**22, 2**24, 2**31 - 1][trial % 4]
        u = rng.integers(-big, big, shape, dtype=np.int64).astype(np.int32)
        v = rng.integers(-big, big, shape, dtype=np.int64).astype(np.int32)
        a_in = rng.integers(-big, big, shape, dtype=np.int64).astype(np.int32)
        du, dv = (int(x) for x in rng.choice([0, 1, 2047, 3072, 4094, 4095], 2))
        if trial % 3 == 0:
            bias_mant, bias_exp = (
                np.zeros(shape, np.int16),
                rng.integers(0, 8, shape).astype(np.int16),
            )
        else:
            bias_mant = rng.integers(-4096, 4096, shape).astype(np.int16)
            bias_exp = rng.integers(0, 8, shape).astype(np.int16)
        for m in (stock, fast):
            m.u, m.v = u.copy(), v.copy()
            m.du, m.dv, m.vth = du, dv, int(rng.integers(0, 131072))
            m.bias_mant, m.bias_exp = bias_mant.copy(), bias_exp.copy()
        fast.vth = stock.vth
        results = []
        for m in (stock, fast):
            patch = mock.patch.object(
                AbstractPyLifModelFixed, "subthr_dynamics", side_effect=AssertionError("fell back")
            )
            with patch if m is fast else mock.MagicMock():
                with np.errstate(over="ignore"):
                    m.scale_bias()
                    m.scale_threshold()
                    m.subthr_dynamics(activation_in=a_in.copy())
                s = m.spiking_activation()
                m.reset_voltage(spike_vector=s)
            results.append((m.u.copy(), m.v.copy(), s))
        for a, b, name in zip(results[0], results[1], "uvs"):
            assert a.dtype == b.dtype and np.array_equal(a, b), (trial, name)


def test_pinned_models_are_the_ones_lava_selects():
    """``runner.pin_models`` pins, per process instance, exactly the model Lava's own search and
    the run configuration select (stock and fast configurations; our host processes too)."""
    from export.lava.processes import ReadoutCounter, spike_monitors
    from export.lava.runner import pin_models, run_config

    procs = [
        Conv(weight=np.ones((2, 3, 3, 2), np.int32), input_shape=(5, 5, 2)),
        LIFReset(shape=(3,), reset_interval=4),
        LIF(shape=(3,)),
        SourceBuffer(data=np.zeros((3, 4), np.int32)),
        ReadoutCounter(neurons=3, num_samples=1, window=4),
        spike_monitors([(3,), (2, 2)], num_samples=1, steps=4, folders=["a", "b"]),
    ]
    from export.lava import processes

    ours = {
        ReadoutCounter: processes.PyReadoutCounterModel,
        type(procs[-1]): processes.PySpikeMonitors2Model,
    }
    for fast in (False, True):
        cfg = run_config("cpu", fast)
        pin_models(cfg, procs)
        for proc in procs:
            if type(proc) in ours:  # found in the process's own module only
                expected = ours[type(proc)]
            else:
                expected = run_config("cpu", fast).select(
                    proc, ProcGroupDiGraphs._find_proc_models(proc)
                )
            assert cfg.exception_proc_model_map[proc] is expected, type(proc).__name__
        assert (cfg.exception_proc_model_map[procs[0]] is FastConvModelFixed) == fast


@pytest.mark.parametrize(
    "x,silent",
    [
        (np.zeros((3, 4), np.int32), True),
        (np.array([0, 0, -1], np.int32), False),  # graded input may be negative only
        (np.array([0, 5, 0], np.int32), False),
        (np.zeros(7, np.uint8), True),
        (np.array([False, True]), False),
        (np.zeros(0, np.int32), True),
        (np.zeros((40000,), bool), True),
        (np.eye(200, dtype=bool), False),
        (np.zeros((5, 4), np.int64), True),
        (np.array([0, 0, 1 << 40], np.int64), False),
        (np.array([0.0, -0.0]), True),
        (np.array([0.0, 1e-300]), False),
        (np.array([0.0, np.nan]), False),
        (np.zeros((6, 4, 2), np.int16)[:, ::2], True),
        (np.arange(48, dtype=np.int16).reshape(6, 4, 2)[1:, ::2], False),
    ],
)
def test_is_silent(x, silent):
    assert ports.is_silent(x) is silent


@pytest.mark.parametrize("bits", [1, 3, 6, 7, 8])
@pytest.mark.parametrize(
    "low,high",
    [(-300, 300), (0, 300), (-300, 0), (-128, 127), (1, 2), (-(2**31), 5), (-7, 2**31 - 1)],
)
def test_synapse_weights_fast_equals_lavas_weightutils(low, high, bits):
    """The fast synapse weights equal ``loihi_synapse_weights`` (Lava's ``clip_weights`` and
    ``truncate_weights``) in every sign mode, beyond the 8-bit range and at int32's ends."""
    rng = np.random.default_rng(bits)
    w = rng.integers(low, high, (5, 3, 3, 4), dtype=np.int64, endpoint=True).astype(np.int32)
    w.flat[0] = low
    expected = synapse.loihi_synapse_weights(w, bits)
    got = synapse.synapse_weights_fast(w, bits)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint32, np.int64])
def test_conv_plan_l1_bound_at_the_dtype_ends(dtype):
    """The bound behind the float path's exactness: the largest sum of |w| over an output
    channel, right at each dtype's extremes (where |w| overflows the dtype itself)."""
    info = np.iinfo(dtype)
    w = np.zeros((3, 3, 3, 2), dtype)
    w[0], w[1] = info.min, info.max
    w[2, 0, 0, 0] = info.max // 2 + 1
    expected = int(np.abs(w.reshape(3, -1).astype(object)).sum(axis=1).max())
    assert conv_plan._ConvPlan(w, 3, 1, 0, 1, 1).l1 == expected


@pytest.mark.parametrize("sign", [1, -1])
def test_synapse_weights_fast_keeps_weights_the_synapses_hold(sign):
    """Weights already in Loihi's format (mixed: even values in [-256, 254]; one sign: any
    8-bit magnitude) come back as they are, not copied; one odd mixed value is truncated."""
    rng = np.random.default_rng(5)
    mixed = (rng.integers(-128, 128, (4, 3, 3, 2)) * 2).astype(np.int32)
    one_sign = (sign * rng.integers(0, 256, (4, 3, 3, 2))).astype(np.int32)
    for w in (mixed, one_sign):
        got = synapse.synapse_weights_fast(w, 8)
        assert got is w
        np.testing.assert_array_equal(got, synapse.loihi_synapse_weights(w, 8))
    mixed.flat[3] = 7
    got = synapse.synapse_weights_fast(mixed, 8)
    assert got is not mixed and got.flat[3] == 6
    np.testing.assert_array_equal(got, synapse.loihi_synapse_weights(mixed, 8))


@pytest.mark.parametrize("in_process", [False, True], ids=["lava_runtime", "in_process"])
def test_fast_lif_clips_v_after_the_host_set_it_out_of_range(in_process):
    """After the host writes v beyond 24 bits the fast LIF clips it as the stock model does,
    and both continue identically (no current carried over, the models' own setting)."""

    def run(run_cfg):
        rng = np.random.default_rng(11)
        shape, steps = (4, 3, 2), 10
        source = SourceBuffer(data=rng.integers(-40, 41, (*shape, 2 * steps)).astype(np.int32))
        lif = LIF(shape=shape, du=4095, dv=2048, vth=2**22, bias_mant=3, bias_exp=6)
        sink = SinkBuffer(shape=shape, buffer=2 * steps)
        source.s_out.connect(lif.a_in)
        lif.s_out.connect(sink.a_in)
        try:
            run_checked(source, steps, run_cfg, timeout_s=120, in_process=in_process)
            far = np.where(rng.random(shape) < 0.5, 2**30, -(2**30))  # still far after decay
            lif.v.set(far.astype(np.int32))
            run_checked(source, 1, timeout_s=120, in_process=in_process)
            after_set = lif.v.get().copy()
            run_checked(source, steps - 1, timeout_s=120, in_process=in_process)
            return after_set, lif.v.get().copy(), lif.u.get().copy(), sink.data.get().copy()
        finally:
            source.stop()

    stock = run(Loihi2SimCfg(select_tag="fixed_pt"))
    fast = run(fast_run_config())
    assert np.abs(stock[0]).max() == 2**23 - 1  # the stock model clipped after the set
    for a, b in zip(stock, fast):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Dense: the binary sum from the transposed float weights (export.lava.dense)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_dense_binary_sum_equals_the_stock_column_sum(density):
    """``weights[:, s_in].sum(axis=1)`` of ``PyDenseModelBitAcc``, int64, in the float32 path
    (8-bit weights), the float64 path (sums past 2**24) and the stock fallback (past 2**53)."""
    from export.lava.dense import binary_sum, transposed_exact

    rng = np.random.default_rng(int(density * 100))
    small = rng.integers(-256, 255, (37, 900)).astype(np.int32)
    large = small.astype(np.int64) * (1 << 20)  # row sums of |w| past 2**24
    huge = small.astype(np.int64) << 45  # past 2**53
    for weights, dtype in ((small, np.float32), (large, np.float64), (huge, None)):
        wt = transposed_exact(weights)
        assert (wt is None) if dtype is None else wt.dtype == dtype
        for _ in range(3):
            active = rng.random(weights.shape[1]) < density
            ref = weights[:, active].sum(axis=1)
            got = binary_sum(weights, wt, active)
            assert got.dtype == ref.dtype == np.int64 and np.array_equal(got, ref)
