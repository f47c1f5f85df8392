"""The in-process Lava runtime (``export.lava.inprocess_runtime``): the same results as Lava's own
multiprocessing runtime, Var access and resumed runs, and failures that end every actor."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest
import torch
from lava.proc.conv.process import Conv
from lava.proc.io.source import RingBuffer as SourceBuffer
from lava.proc.lif.process import LIF, LIFReset

from export.description import from_deploy
from export.lava import conv as conv_model
from export.lava import inprocess_runtime
from export.lava.conv import FastConvModelFixed
from export.lava.inprocess_runtime import is_in_process
from export.lava.lif import FastLifModelBitAcc
from export.lava.run_config import fast_run_config
from export.lava.runner import simulate
from export.lava.supervision import LavaRunError, run_checked
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.spec import build_spec
from tests.export.test_fast_models import _child_processes, _RaisesInInit, _RaisesInRunSpk


def _net(steps: int = 12):
    """Spikes -> Conv -> LIFReset (reset every 8 steps, bias) -> Conv -> LIF, with a second
    path from the source into the last group (two connections into one port)."""
    rng = np.random.default_rng(3)
    source = SourceBuffer(data=(rng.random((6, 5, 3, steps)) < 0.3).astype(np.int32))
    conv1 = Conv(
        weight=rng.integers(-8, 9, (4, 3, 3, 3)).astype(np.int32) * 2,
        input_shape=(6, 5, 3),
        padding=1,
        weight_exp=1,
    )
    lif1 = LIFReset(
        shape=(6, 5, 4),
        du=3000,
        dv=1000,
        vth=3,
        bias_mant=rng.integers(-4, 5, (6, 5, 4)),
        bias_exp=6,
        reset_interval=8,
        reset_offset=1,
    )
    conv2 = Conv(
        weight=rng.integers(-8, 9, (2, 3, 3, 4)).astype(np.int32) * 2,
        input_shape=(6, 5, 4),
        padding=1,
        weight_exp=-1,
    )
    skip = Conv(weight=np.ones((2, 1, 1, 3), np.int32) * 4, input_shape=(6, 5, 3))
    lif2 = LIF(shape=(6, 5, 2), du=500, dv=200, vth=2)
    source.s_out.connect(conv1.s_in)
    source.s_out.connect(skip.s_in)
    conv1.a_out.connect(lif1.a_in)
    lif1.s_out.connect(conv2.s_in)
    conv2.a_out.connect(lif2.a_in)
    skip.a_out.connect(lif2.a_in)
    return source, lif1, lif2


def _states(*lifs) -> list[np.ndarray]:
    return [np.asarray(var.get()) for lif in lifs for var in (lif.u, lif.v)]


def _threads() -> set:
    return {t for t in threading.enumerate() if t.is_alive()}


def _wait_threads_gone(before: set, timeout_s: float = 10.0) -> set:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = _threads() - before
        if not left:
            return left
        time.sleep(0.05)
    return _threads() - before


#: ``conv.INLINE_MAX_SECONDS`` settings that put every convolution of a small network on a
#: compute thread (None) or in its model's own step (1 s).
WHERE_CONVOLUTIONS_RUN = {"compute threads": None, "own step": 1.0}


def test_state_equals_lavas_own_runtime_across_resumed_runs_and_var_sets(monkeypatch):
    """4 + 8 steps with a Var set in between: u and v of both groups equal Lava's
    multiprocessing runtime doing the same, bit for bit, wherever the convolutions run."""
    results = {}
    for where in (*WHERE_CONVOLUTIONS_RUN, "lava"):
        in_process = where != "lava"
        if in_process:
            monkeypatch.setattr(conv_model, "INLINE_MAX_SECONDS", WHERE_CONVOLUTIONS_RUN[where])
        source, lif1, lif2 = _net()
        try:
            run_checked(source, 4, fast_run_config(), timeout_s=120, in_process=in_process)
            assert is_in_process(source.runtime) == in_process
            mid = _states(lif1, lif2)
            lif2.vth.set(np.array([1]))
            run_checked(source, 8, timeout_s=120, in_process=in_process)
            results[where] = [*mid, *_states(lif1, lif2)]
        finally:
            source.stop()
    for where in WHERE_CONVOLUTIONS_RUN:
        for ours, lavas in zip(results[where], results["lava"]):
            np.testing.assert_array_equal(ours, lavas, err_msg=where)
    assert any(np.any(a) for a in results["lava"][4:])  # the network did something


@pytest.mark.parametrize("limit, in_step", [(None, False), (1.0, True), (0.0, False)])
def test_convolutions_run_where_their_measured_cost_says(monkeypatch, limit, in_step):
    """A convolution of more than ``INLINE_MAX_OUTPUTS`` positions runs on a compute thread,
    unless its measured cost (``conv_plan.step_cost``) is at most ``INLINE_MAX_SECONDS``: then
    in its model's own step, on the hub thread (from the step its cost is known: spikes that
    come before are handed over)."""
    monkeypatch.setattr(conv_model, "INLINE_MAX_SECONDS", limit)
    threads: dict = {}  # model -> the thread of each of its convolutions, in order
    convolve = FastConvModelFixed._synaptic_input

    def recorded(self, s_in):
        if self.a_out.shape[0] * self.a_out.shape[1] > conv_model.INLINE_MAX_OUTPUTS:
            hub = threading.current_thread().name == "lava-in-process"
            threads.setdefault(id(self), []).append("hub" if hub else "compute")
        return convolve(self, s_in)

    monkeypatch.setattr(FastConvModelFixed, "_synaptic_input", recorded)
    source, lif1, lif2 = _net(steps=24)
    try:
        run_checked(source, 24, fast_run_config(), timeout_s=120, in_process=True)
    finally:
        source.stop()
    assert len(threads) == 3 and all(len(t) > 10 for t in threads.values())
    for seq in threads.values():
        if in_step:
            first = seq.index("hub")
            assert first <= 3 and set(seq[first:]) == {"hub"}, seq
        else:
            assert set(seq) == {"compute"}, seq


class _HalvesVEveryThirdStep(FastLifModelBitAcc):
    """A LIF model that asks for the post-management phase every third step (a response
    other than ``STATUS_DONE``) and halves its voltage there."""

    def post_guard(self) -> bool:
        return self.time_step % 3 == 0

    def run_post_mgmt(self) -> None:
        self.v //= 2


def test_management_phases_asked_for_run_as_in_lavas_own_runtime():
    """A model's request for a management phase reaches the runtime service and the phase
    runs in the same steps as in Lava's runtime: the same states after resumed runs."""
    results = {}
    for in_process in (True, False):
        source, lif1, lif2 = _net()
        cfg = fast_run_config(exception_proc_model_map={LIF: _HalvesVEveryThirdStep})
        try:
            run_checked(source, 5, cfg, timeout_s=120, in_process=in_process)
            mid = _states(lif1, lif2)
            run_checked(source, 7, timeout_s=120, in_process=in_process)
            results[in_process] = [*mid, *_states(lif1, lif2)]
        finally:
            source.stop()
    for ours, lavas in zip(results[True], results[False]):
        np.testing.assert_array_equal(ours, lavas)
    plain = {}
    source, lif1, lif2 = _net()
    try:
        run_checked(source, 12, fast_run_config(), timeout_s=120, in_process=True)
        plain = _states(lif1, lif2)
    finally:
        source.stop()
    assert not np.array_equal(plain[3], results[True][7])  # the phase did run


def test_models_are_stepped_in_the_order_data_flows(monkeypatch):
    """The runtime service addresses the models sender first (``_Hub.flow_order``): in a
    network without cycles no model waits for another's data, only for its commands (with the
    convolutions in their models' steps: a convolution still running on a compute thread
    when its result is due is waited for)."""
    monkeypatch.setattr(conv_model, "compute_pool", lambda: None)
    waits = []
    wait = inprocess_runtime._wait

    def counted(queues, lists):
        waits.append(queues[0])
        return wait(queues, lists)

    monkeypatch.setattr(inprocess_runtime, "_wait", counted)
    source, lif1, lif2 = _net(steps=16)
    try:
        run_checked(source, 16, fast_run_config(), timeout_s=120, in_process=True)
        hub = source.runtime._messaging_infrastructure.hub
        data = {q for ins, _ in hub._channels.values() for q in ins}
        assert len(hub._channels) == 6 and len(data) >= 6
    finally:
        source.stop()
    assert len(waits) >= 6 * 16  # every model waits for each step's command
    assert [(q.send_port._name, q.recv_port._name) for q in waits if q in data] == []


def test_simulate_equals_lavas_own_runtime(monkeypatch):
    """An MS-ResNet (random weights, BatchNorm folded) through ``simulate``: every spike of
    every group, the readout and the counts are the same with the in-process runtime (the
    convolutions on compute threads, and in their models' steps) and with Lava's, and no
    process is forked."""
    torch.manual_seed(0)
    net = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 32, 32), 10)))
    net.eval().fold()
    desc = from_deploy(net.deploy(i2e={"ratio": 0.12, "order": "efghabcd"}))
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), np.uint8)
    lavas = simulate(desc, images, record=3, in_process=False)
    for where, limit in WHERE_CONVOLUTIONS_RUN.items():
        monkeypatch.setattr(conv_model, "INLINE_MAX_SECONDS", limit)
        before = _child_processes()
        ours = simulate(desc, images, record=3)
        assert _child_processes() - before == set()
        np.testing.assert_array_equal(ours.readout_counts, lavas.readout_counts, err_msg=where)
        np.testing.assert_array_equal(ours.readout_first, lavas.readout_first, err_msg=where)
        assert ours.trains.keys() == lavas.trains.keys()
        for g in ours.trains:
            np.testing.assert_array_equal(ours.trains[g], lavas.trains[g], err_msg=f"{where} {g}")
            np.testing.assert_array_equal(ours.counts[g], lavas.counts[g], err_msg=f"{where} {g}")
    assert sum(int(c.sum()) for c in ours.counts.values()) > 0
    # Counts of recorded samples are folded from their trains once per window, the others
    # add up every step: both give the same numbers.
    partial = simulate(desc, images, record=1)
    for g in ours.counts:
        np.testing.assert_array_equal(partial.counts[g], ours.counts[g], err_msg=g)
        np.testing.assert_array_equal(partial.neuron_counts[g], ours.neuron_counts[g], err_msg=g)


def test_dense_prepares_its_weights_beside_the_steps_as_the_stock_model_does():
    """The fast Dense prepares its weights (8-bit clip, ``num_weight_bits`` truncation) on a
    compute thread from the first step, and each step's sum there too; silent steps before the
    first spike, the sums after it, the neuron states and the weights and buffer the host reads
    back all equal Lava's stock bit-accurate Dense in Lava's own runtime, including weights
    outside the 8-bit range."""
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense

    def run(in_process: bool):
        rng = np.random.default_rng(5)
        steps = 10
        data = (rng.random((40, steps)) < 0.4).astype(np.int32)
        data[:, :4] = 0  # the first spikes arrive at step 5
        source = SourceBuffer(data=data)
        dense = Dense(weights=rng.integers(-400, 400, (7, 40)), num_weight_bits=6, weight_exp=1)
        lif = LIF(shape=(7,), du=4095, dv=2048, vth=50)
        source.s_out.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        cfg = fast_run_config() if in_process else Loihi2SimCfg(select_tag="fixed_pt")
        try:
            run_checked(source, 3, cfg, timeout_s=120, in_process=in_process)
            early = np.asarray(dense.weights.get()).copy()  # before any spike
            run_checked(source, steps - 3, timeout_s=120, in_process=in_process)
            late = [np.asarray(dense.weights.get()), np.asarray(dense.a_buff.get())]
            return [early, *late, *_states(lif)]
        finally:
            source.stop()

    ours, lavas = run(True), run(False)
    assert np.abs(lavas[0]).max() <= 256  # the stock model clipped them at the first step
    for a, b in zip(ours, lavas):
        np.testing.assert_array_equal(a, b)
    assert np.any(lavas[2]) and np.any(lavas[3])  # a sum in flight at the end, read back


@pytest.mark.parametrize("failure,expected", [("run_spk", LavaRunError), ("init", ValueError)])
def test_a_failing_model_ends_every_actor(failure, expected):
    models = {"run_spk": _RaisesInRunSpk, "init": _RaisesInInit}
    before_threads, before_procs = _threads(), _child_processes()
    mp_before = set(multiprocessing.active_children())
    source, _, _ = _net()
    cfg = fast_run_config(exception_proc_model_map={Conv: models[failure]})
    with pytest.raises(expected, match="boom"):
        try:
            run_checked(source, 10, cfg, timeout_s=60, in_process=True)
        finally:
            source.stop()  # returns at once after a failure
    assert _wait_threads_gone(before_threads) == set()
    assert _child_processes() - before_procs == set()
    assert set(multiprocessing.active_children()) - mp_before == set()

    source, lif1, _ = _net()  # and the next run works
    try:
        run_checked(source, 10, fast_run_config(), timeout_s=60, in_process=True)
        assert lif1.v.get().shape == (6, 5, 4)
    finally:
        source.stop()
    assert _wait_threads_gone(before_threads) == set()


class _Slow(FastConvModelFixed):
    def run_spk(self):
        time.sleep(0.2)
        super().run_spk()


def test_a_run_past_its_timeout_is_ended():
    before = _threads()
    source, _, _ = _net(steps=50)
    cfg = fast_run_config(exception_proc_model_map={Conv: _Slow})
    start = time.monotonic()
    with pytest.raises(LavaRunError, match="did not finish 50 steps in 1"):
        try:
            run_checked(source, 50, cfg, timeout_s=1, in_process=True)
        finally:
            source.stop()
    assert time.monotonic() - start < 8
    assert _wait_threads_gone(before) == set()


def test_a_successful_run_leaves_no_threads():
    before = _threads()
    source, _, lif2 = _net()
    try:
        run_checked(source, 12, fast_run_config(), in_process=True)
        assert lif2.v.get().shape == (6, 5, 2)
    finally:
        source.stop()
    assert _wait_threads_gone(before) == set()


def _channels(infra, n: int, dtype, shape=(4, 3)):
    from export.lava.inprocess_runtime import LocalChannel

    return [LocalChannel(infra, f"src{i}", f"dst{i}", shape, dtype, 2) for i in range(n)]


@pytest.fixture
def infra():
    from export.lava.inprocess_runtime import InProcessInfrastructure

    infra = InProcessInfrastructure()
    infra.start()
    yield infra
    infra.abort()
    infra.hub.stop()


def test_a_read_only_array_is_passed_as_is_anything_else_is_copied(infra):
    (channel,) = _channels(infra, 1, np.int32)
    mutable = np.arange(12, dtype=np.int32).reshape(4, 3)
    channel.src_port.send(mutable)
    received = channel.dst_port.recv()
    assert received is not mutable and np.array_equal(received, mutable)
    frozen = np.arange(12, dtype=np.int32).reshape(4, 3)
    frozen.flags.writeable = False
    channel.src_port.send(frozen)
    assert channel.dst_port.recv() is frozen
    other_dtype = np.ones((4, 3), np.int16)
    other_dtype.flags.writeable = False
    channel.src_port.send(other_dtype)
    received = channel.dst_port.recv()
    assert received.dtype == np.int32 and received.flags.writeable


@pytest.mark.parametrize(
    "port_dtype,channel_dtype,n",
    [
        (np.int16, np.int32, 1),  # a LIF's a_in fed by a Conv
        (np.int16, np.int32, 2),  # ... and by a residual connection too
        (np.int32, np.int32, 3),
        (np.int32, np.int16, 2),  # the sum is int32: Lava's way
        (float, np.float64, 2),  # floats: Lava's way (0.0 + -0.0)
        (np.int32, bool, 2),
    ],
)
def test_recv_dense_equals_lavas_recv(infra, port_dtype, channel_dtype, n):
    """``recv_dense`` gives the values and dtype of Lava's ``PyInPortVectorDense.recv``,
    int32 wrap-around included, for the same messages, at every call (what it keeps on the
    port after the first)."""
    from lava.magma.core.model.py.ports import PyInPortVectorDense

    from export.lava.ports import recv_dense

    rng = np.random.default_rng(n)
    channels = _channels(infra, n, channel_dtype)
    port = PyInPortVectorDense([c.dst_port for c in channels], None, (4, 3), port_dtype)
    for _ in range(3):
        if np.dtype(channel_dtype).kind == "f":
            messages = [rng.choice([-0.0, 0.0, 1.5, -2.25], (4, 3)) for _ in channels]
        elif np.dtype(channel_dtype).kind == "b":
            messages = [rng.random((4, 3)) < 0.5 for _ in channels]
        else:
            info = np.iinfo(channel_dtype)
            messages = [rng.integers(info.min, info.max, (4, 3), endpoint=True) for _ in channels]
        results = []
        for receive in (port.recv, lambda: recv_dense(port)):
            for c, m in zip(channels, messages):
                c.src_port.send(np.asarray(m, dtype=channel_dtype))
            results.append(receive())
        lavas, ours = results
        assert ours.dtype == lavas.dtype
        np.testing.assert_array_equal(ours, lavas)
        assert np.array_equal(np.signbit(ours), np.signbit(lavas))


def test_the_hub_thread_ends_without_a_heap_search():
    """When the hub thread ends, nothing refers to its main greenlet any more: otherwise
    greenlet searches the whole heap for the reference (``gc.get_referrers``), which took
    about 35 ms per run with MS-ResNet-18's models alive."""
    from greenlet._greenlet import get_clocks_used_doing_optional_cleanup

    before = get_clocks_used_doing_optional_cleanup()
    source, _, lif2 = _net()
    try:
        run_checked(source, 12, fast_run_config(), in_process=True)
    finally:
        source.stop()
    assert get_clocks_used_doing_optional_cleanup() == before


def test_hub_limits_threads_and_switch_interval_while_it_runs(monkeypatch):
    """While a hub runs, torch and numpy's OpenBLAS use one thread per compute thread and the
    GIL switch interval is short (issue 23); both are as before once it stops, and a shard's
    ``OMP_NUM_THREADS`` caps the compute threads."""
    import os
    import sys

    from export.lava import inprocess_runtime as ir

    before_threads, before_interval = torch.get_num_threads(), sys.getswitchinterval()
    blas = [get() for get, _ in ir.numpy_blas_thread_controls() if get is not None]
    torch.set_num_threads(2)
    try:
        hub = ir._Hub(compute_threads=2)
        try:
            assert torch.get_num_threads() == 1
            assert sys.getswitchinterval() == pytest.approx(ir.SWITCH_INTERVAL_S)
            assert all(get() == 1 for get, _ in ir.numpy_blas_thread_controls() if get)
        finally:
            hub.stop()
        assert torch.get_num_threads() == 2
        assert sys.getswitchinterval() == pytest.approx(before_interval)
        assert [get() for get, _ in ir.numpy_blas_thread_controls() if get] == blas
    finally:
        torch.set_num_threads(before_threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ir.compute_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    assert ir.compute_threads() <= len(os.sched_getaffinity(0))
