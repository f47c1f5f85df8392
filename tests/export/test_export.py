"""Export to the network description / HDF5 and the Lava graph: spike-for-spike exactness."""

import multiprocessing
import os

import h5py
import numpy as np
import pytest
import torch

from export.description import from_checkpoint, from_deploy, to_deploy
from export.hdf5 import load_hdf5, save_hdf5
from export.lava.run_config import BackendUnavailable
from export.lava.runner import simulate
from i2e_neuro import i2e
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.readout import first_spike, predict
from i2e_neuro.models.spec import INPUT, ConnSpec, GroupSpec, NetSpec, build_spec

# Runs Lava process graphs (OS processes per process model): left out of `make test-fast`.
pytestmark = pytest.mark.slow

I2E = {"ratio": 0.1, "order": "efghabcd"}


def random_folded(spec: NetSpec, seed: int = 0) -> SpikingGraph:
    """A model with random weights and BatchNorm statistics, folded to integers."""
    torch.manual_seed(seed)
    model = randomize_batchnorm(SpikingGraph(spec), seed)
    model.eval().fold()
    return model


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255).to(
        torch.uint8
    )


def reference(model: SpikingGraph, imgs: torch.Tensor):
    with torch.no_grad():
        _, rec = model.eval()(i2e(imgs, timesteps=model.spec.timesteps, **I2E), record=True)
    return rec


def assert_same_spikes(result, rec, desc):
    """Every group's spikes (the readout's too) equal lava-dl's over the trained ``steps``; the
    padding to the power-of-two window is silent (the silence guarantee makes it exact)."""
    assert desc.window > desc.steps, "the test should exercise the padding"
    assert result.padding_spikes == 0, "spikes in the padding steps"
    for g in desc.groups:
        ref = rec[g.name].movedim(-1, 1).numpy().astype(bool)  # [B, steps, ...]
        if not g.readout:
            assert ref.sum() > 0, f"{g.name}: silent group makes a weak test"
        assert np.array_equal(result.trains[g.name], ref), f"{g.name}: spikes differ"
        assert np.array_equal(result.counts[g.name], ref.reshape(len(ref), -1).sum(1))
    out = rec[desc.readout.name].numpy()  # [B, K * population, steps]
    assert np.array_equal(result.readout_counts, out.sum(-1))
    population = desc.readout.population
    assert np.array_equal(result.predictions, predict(out.sum(-1), first_spike(out), population))


@pytest.fixture(scope="module")
def residual():
    spec = build_spec("msresnet_tiny", (2, 16, 16), 5)  # stem, a plain and a downsampling block
    model = random_folded(spec)
    return model, from_deploy(model.deploy(i2e=I2E, classes=list("abcde")))


def test_lava_matches_the_trained_model_spike_for_spike(residual):
    model, desc = residual
    imgs = images(3, 16)
    result = simulate(desc, imgs.numpy(), record=3)
    assert_same_spikes(result, reference(model, imgs), desc)


def test_population_readout_runs_exactly_and_survives_the_file(tmp_path):
    """Three readout neurons per class: Lava's spikes and host decision are lava-dl's, the
    training logits decide the same classes, and the network file keeps the population."""
    spec = build_spec("msresnet_tiny", (2, 16, 16), 4, population=3)
    torch.manual_seed(17)  # a seed whose class sums and single best neuron decide differently
    model = randomize_batchnorm(SpikingGraph(spec), 17)
    with torch.no_grad():
        model.synapses["fc"].weight.mul_(16)  # random weights barely reach the readout
    model.eval().fold()
    desc = from_deploy(model.deploy(i2e=I2E, classes=list("abcd")))
    assert desc.readout.shape == (12,) and desc.readout.population == 3
    imgs = images(4, 16, seed=17)
    rec = reference(model, imgs)
    assert rec[desc.readout.name].sum() > 0, "a silent readout makes a weak test"
    result = simulate(desc, imgs.numpy(), record=4)
    assert_same_spikes(result, rec, desc)
    with torch.no_grad():
        logits = model(i2e(imgs, timesteps=spec.timesteps, **I2E))
    assert logits.shape == (4, 4)
    assert np.array_equal(logits.argmax(1).numpy(), result.predictions)
    by_neuron = predict(result.readout_counts, result.readout_first) // 3
    assert (by_neuron != result.predictions).any(), "the classes' sums should decide somewhere"
    back = load_hdf5(save_hdf5(desc, tmp_path / "net.h5"))
    assert back.readout.population == 3 and back.topology.num_classes == 4


def test_stock_lava_conv_model_gives_the_same_spikes(residual):
    model, desc = residual
    imgs = images(1, 16, seed=3)
    result = simulate(desc, imgs.numpy(), record=1, fast=False)
    assert_same_spikes(result, reference(model, imgs), desc)


def test_hdf5_round_trip(residual, tmp_path):
    _, desc = residual
    path = save_hdf5(desc, tmp_path / "net.h5")
    back = load_hdf5(path)
    assert [g.name for g in back.groups] == [g.name for g in desc.groups]
    for a, b in zip(desc.connections, back.connections):
        assert (a.name, a.source, a.targets, a.exponent, a.stride, a.padding) == (
            b.name,
            b.source,
            b.targets,
            b.exponent,
            b.stride,
            b.padding,
        )
        assert np.array_equal(a.weight, b.weight)
    for a, b in zip(desc.groups, back.groups):
        assert np.array_equal(a.bias, b.bias) and (a.du, a.dv, a.vth, a.shape) == (
            b.du,
            b.dv,
            b.vth,
            b.shape,
        )
    assert (back.steps, back.timesteps, back.i2e, back.classes) == (
        desc.steps,
        desc.timesteps,
        desc.i2e,
        desc.classes,
    )
    with h5py.File(path) as f:
        assert not f.attrs["netx_compatible"]
    # the rebuilt lava-dl model of the file equals the original one
    rebuilt = SpikingGraph.from_deploy(to_deploy(back))
    imgs = images(2, 16, seed=5)
    ref, new = reference(residual[0], imgs), reference(rebuilt, imgs)
    assert all(torch.equal(ref[k], new[k]) for k in ref)


def chain_spec() -> NetSpec:
    spec = NetSpec("chain", (2, 12, 12), 4)
    spec.conns = [
        ConnSpec("c1", INPUT, ["g1"], "conv", 2, 8, 3, 1, 1),
        ConnSpec("c2", "g1", ["g2"], "conv", 8, 8, 3, 2, 1),
        ConnSpec("fc", "g2", ["readout"], "pool_dense", 8, 4, batchnorm=False),
    ]
    spec.groups = [
        GroupSpec("g1", (8, 12, 12)),
        GroupSpec("g2", (8, 6, 6)),
        GroupSpec("readout", (4,), True),
    ]
    return spec


def test_chain_network_loads_unchanged_in_netx(tmp_path):
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    model = random_folded(chain_spec(), seed=1)
    model.exponents.clamp_(
        max=1
    )  # netx clips effective weights beyond its 9-bit range: stay inside it
    desc = from_deploy(model.deploy(i2e=I2E))
    path = save_hdf5(desc, tmp_path / "chain.h5")
    with h5py.File(path) as f:
        assert f.attrs["netx_compatible"]
    imgs = images(1, 12, seed=2)
    rec = reference(SpikingGraph.from_deploy(to_deploy(desc)), imgs)
    frames = i2e(imgs, timesteps=desc.timesteps, **I2E)[:, 0].numpy()  # [T, 2, H, W]
    data = np.zeros((12, 12, 2, desc.steps), dtype=np.int32)
    data[..., : desc.timesteps] = frames.transpose(3, 2, 1, 0)
    net = Network(net_config=str(path))
    assert len(net.layers) == 3
    source = RingBuffer(data=data)
    source.s_out.connect(net.inp)
    monitors = []
    for layer in net.layers[:2]:
        mon = Monitor()
        mon.probe(layer.neuron.s_out, desc.steps)
        monitors.append(mon)
    try:
        net.run(
            condition=RunSteps(num_steps=desc.steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt")
        )
        got = [list(m.get_data().values())[0]["s_out"] for m in monitors]
    finally:
        net.stop()
    for g, spikes in zip(desc.spiking_groups, got):  # Monitor: [steps, x*y*f] for (x, y, f) neurons
        ref = rec[g.name][0].numpy().astype(bool)  # [C, H, W, steps]
        netx = (
            spikes.reshape(desc.steps, g.shape[2], g.shape[1], g.shape[0]).transpose(3, 2, 1, 0)
            != 0
        )
        assert ref.sum() > 0 and np.array_equal(netx, ref), g.name


def test_bad_network_files_are_refused(tmp_path, residual):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_hdf5(tmp_path / "missing.h5")
    good = save_hdf5(residual[1], tmp_path / "good.h5")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.h5"):
        load_hdf5(cut)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="foreign.h5.*format"):
        load_hdf5(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.h5"):
        load_hdf5(text)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        from_checkpoint(tmp_path / "nope.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt.*deploy"):
        from_checkpoint(tmp_path / "plain.pt")


def test_descriptions_that_do_not_chain_are_refused(residual):
    _, desc = residual
    deploy = to_deploy(desc)
    deploy["spec"]["groups"][1]["shape"] = [16, 3, 3]
    with pytest.raises(ValueError, match="s0b0.conv1.*does not match group 's0b0.sn2'"):
        from_deploy(deploy)
    deploy = to_deploy(desc)
    deploy["conns"]["stem"]["weight"] = deploy["conns"]["stem"]["weight"] * 300
    with pytest.raises(ValueError, match="stem.*\\[-128, 127\\]"):
        from_deploy(deploy)
    deploy = to_deploy(desc)
    del deploy["conns"]["fc"]
    with pytest.raises(ValueError, match="fc"):
        from_deploy(deploy)
    deploy = to_deploy(desc)
    deploy["steps"] = desc.timesteps + 2
    with pytest.raises(ValueError, match="steps .* per sample < "):
        from_deploy(deploy)
    deploy = to_deploy(desc)
    deploy["i2e"] = {"ratio": None}  # a model trained on DVS events
    with pytest.raises(ValueError, match="event data"):
        simulate(from_deploy(deploy), images(1, 16).numpy())
    bad = from_deploy(to_deploy(desc))
    bad.connections[0].delay = 2
    with pytest.raises(ValueError, match="stem.*delay 2"):
        bad.validate()


def test_wrong_input_is_refused_before_the_runtime_starts(residual):
    _, desc = residual
    before = len(multiprocessing.active_children())
    with pytest.raises(ValueError, match="16, 16"):
        simulate(desc, images(1, 20).numpy())
    with pytest.raises(ValueError, match="1 or 3"):
        simulate(desc, np.zeros((1, 4, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="event samples"):
        simulate(desc, np.zeros((1, 8, 3, 16, 16), bool), events=True)
    assert len(multiprocessing.active_children()) == before


def test_loihi2_backend_without_the_extension_says_what_is_missing(residual):
    with pytest.raises(BackendUnavailable, match="lava-loihi.*INRC"):
        simulate(residual[1], images(1, 16).numpy(), backend="loihi2")


def _children() -> set[int]:
    """Child processes of this one, except multiprocessing's resource tracker (one per interpreter)
    and the watcher that removes multiprocessing's temporary folder (``supervision``)."""
    me = str(os.getpid())
    kids = set()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[1] != me:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
                if b"resource_tracker" not in cmdline and b"i2e-neuro-cleanup" not in cmdline:
                    kids.add(int(pid))
        except (OSError, IndexError):
            pass
    return kids


def test_a_failing_run_leaves_no_lava_processes_behind(residual, monkeypatch):
    from export.lava import processes
    from export.lava.supervision import LavaRunError

    _, desc = residual
    before = _children()
    with pytest.raises(ValueError, match="NaN"):  # bad input fails in the host, before Lava starts
        simulate(desc, np.full((1, 3, 16, 16), np.nan, dtype=np.float32))

    def broken(self):  # a fault inside a running Lava process (the workers are forked: they see it)
        raise RuntimeError("injected fault")

    monkeypatch.setattr(processes.PyReadoutCounterModel, "run_spk", broken)
    with pytest.raises(LavaRunError, match="injected fault"):
        simulate(desc, images(1, 16).numpy())
    assert _children() <= before


def test_resource_report_names_the_group_and_limit_that_do_not_fit():
    from export.resources import DoesNotFit, resource_report

    small = from_deploy(random_folded(build_spec("msresnet_tiny", (2, 16, 16), 5)).deploy(i2e=I2E))
    rows = resource_report(small, "loihi2")
    assert [r.name for r in rows] == [g.name for g in small.groups] and all(
        r.cores >= 1 for r in rows
    )
    big = from_deploy(random_folded(build_spec("msresnet_tiny", (2, 128, 128), 5)).deploy(i2e=I2E))
    with pytest.raises(
        DoesNotFit, match="group 'readout': fan-in 8192 .* 4096 \\(max_fan_in_per_core\\)"
    ):
        resource_report(big, "loihi2")


def test_loihi_path_refuses_cpu_only_processes_by_name(residual):
    from lava.proc.io.source import RingBuffer

    from export.lava.graph import build, refuse_cpu_only

    net = build(residual[1])
    refuse_cpu_only(net)  # LIFReset, Conv and Dense only
    extra = RingBuffer(data=np.zeros((2, 3)))
    net.synapses["extra"] = extra
    with pytest.raises(ValueError, match=f"{extra.name} \\(RingBuffer\\)"):
        refuse_cpu_only(net)


def test_source_takes_tensors_and_torch_datasets(residual):
    from torch.utils.data import TensorDataset

    _, desc = residual
    imgs = images(2, 16, seed=7)
    expected = simulate(desc, imgs.numpy(), record=2).trains
    for got in (
        simulate(desc, imgs, record=2),
        simulate(desc, TensorDataset(imgs, torch.arange(2)), record=2),
    ):
        assert all(np.array_equal(got.trains[g], expected[g]) for g in expected)
