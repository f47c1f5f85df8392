"""Export to NIR: the graph's form, the round trip, and the same spikes in a real NIR consumer (Norse)."""

import json

import nir
import numpy as np
import pytest
import torch

from export.description import from_deploy
from export.hdf5 import save_hdf5
from export.nir import DELAY_SUFFIX, from_nir, load_nir, save_nir, to_nir
from export.peers.lava_dl import run_lava_dl, sample_events
from export.peers.norse import run_norse
from i2e_neuro.cli import main
from i2e_neuro.datasets.eval_data import Samples, load_samples
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.spec import build_spec

I2E = {"ratio": 0.1, "order": "efghabcd"}


def random_description(arch: str, shape: tuple[int, int, int], classes: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    model = randomize_batchnorm(SpikingGraph(build_spec(arch, shape, classes)), seed)
    model.eval().fold()
    return from_deploy(model.deploy(i2e=I2E, classes=[str(i) for i in range(classes)]))


def random_samples(n: int, h: int, w: int, seed: int = 0) -> Samples:
    g = torch.Generator().manual_seed(seed)
    imgs = (torch.rand(n, 3, h, w, generator=g) * 255).to(torch.uint8).numpy()
    return Samples(imgs, np.full(n, -1), [str(i) for i in range(n)])


def assert_same_as_lava_dl(desc, samples: Samples, path=None, runner=run_norse):
    """The reader (default Norse), reading the written file, gives lava-dl's (= Lava's) spikes
    and readout."""
    graph = nir.read(path) if path else to_nir(desc)
    n = len(samples.data)
    ref = run_lava_dl(desc, samples, record=n)
    events = sample_events(desc, samples, 0, n).numpy()
    predictions, counts, trains = runner(graph, events, desc.steps, record=n)
    for g in desc.groups:  # the readout group included
        if not g.readout:
            assert ref.trains[g.name].sum() > 0, f"{g.name}: silent group makes a weak test"
        assert np.array_equal(trains[g.name], ref.trains[g.name]), f"{g.name}: spikes differ"
        assert np.array_equal(counts[g.name], ref.neuron_counts[g.name])
    assert np.array_equal(predictions, ref.predictions)


def assert_same_graph(a: nir.NIRGraph, b: nir.NIRGraph) -> None:
    assert sorted(a.nodes) == sorted(b.nodes)  # HDF5 keeps node names, not their order
    assert sorted(a.edges) == sorted(b.edges)
    for name, node in a.nodes.items():
        other = b.nodes[name]
        assert type(node) is type(other), name
        for field, value in vars(node).items():
            if field in ("metadata", "input_type", "output_type"):
                continue
            assert np.array_equal(np.asarray(value), np.asarray(getattr(other, field))), (
                f"{name}.{field}"
            )


def assert_same_description(a, b) -> None:
    assert (a.name, a.input_shape, a.timesteps, a.steps) == (
        b.name,
        b.input_shape,
        b.timesteps,
        b.steps,
    )
    assert (a.i2e, a.classes) == (b.i2e, b.classes)
    assert [g.name for g in a.groups] == [g.name for g in b.groups]
    for x, y in zip(a.groups, b.groups):
        assert (x.shape, x.du, x.dv, x.vth, x.bias_exp, x.readout) == (
            y.shape,
            y.du,
            y.dv,
            y.vth,
            y.bias_exp,
            y.readout,
        ), x.name
        assert np.array_equal(x.bias, y.bias), x.name
    conns = {c.name: c for c in b.connections}
    assert sorted(conns) == sorted(c.name for c in a.connections)
    for x in a.connections:
        y = conns[x.name]
        assert (x.kind, x.source, x.targets, x.exponent, x.stride, x.padding) == (
            y.kind,
            y.source,
            y.targets,
            y.exponent,
            y.stride,
            y.padding,
        ), x.name
        assert np.array_equal(x.weight, y.weight), x.name


@pytest.fixture(scope="module")
def tiny():
    return random_description("msresnet_tiny", (2, 16, 16), classes=5)


def test_graph_uses_nir_nodes_one_cubalif_per_group_and_fan_in_edges(tiny):
    graph = to_nir(tiny)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert kinds == {"Input", "Output", "Delay", "Conv2d", "CubaLIF"}
    lif = [n for n, node in graph.nodes.items() if isinstance(node, nir.CubaLIF)]
    assert lif == [g.name for g in tiny.groups]  # the spiking readout group included
    for g in tiny.groups:
        into = [a for a, b in graph.edges if b == g.name]
        assert sorted(into) == sorted(c.name for c in tiny.incoming(g.name))
    assert len([a for a, b in graph.edges if b == "s1b0.sn1"]) == 2  # stem + the block's conv2
    # every connection reads its source through a one-step delay (Loihi's synaptic hop)
    for c in tiny.connections:
        assert [a for a, b in graph.edges if b == c.name] == [c.source + DELAY_SUFFIX]
    # the integers on the weights' scale: weights m * 2**e, thresholds vth (+ the nudge)
    stem = tiny.connections[0]
    assert np.array_equal(graph.nodes["stem"].weight, stem.weight * 2.0**stem.exponent)
    th = graph.nodes["s0b0.sn1"].v_threshold
    assert np.all((th > tiny.groups[0].vth) & (th < tiny.groups[0].vth + 1 / 64))
    meta = json.loads(graph.metadata["i2e_neuro"])
    assert meta["steps"] == tiny.steps and meta["dt"] == 1.0
    assert meta["exponents"] == {c.name: c.exponent for c in tiny.connections}
    assert all(not node.metadata for node in graph.nodes.values())  # extras: graph level only


def test_the_file_holds_only_fields_older_nir_releases_read(tiny, tmp_path):
    """nir <= 1.0.4 (Sinabs', Rockpool's pin) refuses node metadata and ``CubaLIF.v_reset``."""
    import h5py

    path = save_nir(tiny, tmp_path / "net.nir")
    with h5py.File(path, "r") as f:
        nodes = f["node"]["nodes"]
        assert sorted(nodes) == sorted(to_nir(tiny).nodes)
        for name in nodes:
            assert "metadata" not in nodes[name], name
            assert "v_reset" not in nodes[name], name
        assert "i2e_neuro" in f["node"]["metadata"]
    assert np.all(nir.read(path).nodes["readout"].v_reset == 0)  # NIR's default, read back


def test_dt_scales_taus_and_delays_keeps_r_and_w_in_and_reads_back(tiny, tmp_path):
    one, scaled = to_nir(tiny), to_nir(tiny, dt=1e-4)
    for name, node in one.nodes.items():
        other = scaled.nodes[name]
        if isinstance(node, nir.CubaLIF):
            assert np.allclose(other.tau_mem, node.tau_mem * 1e-4, rtol=1e-7, atol=0), name
            assert np.allclose(other.tau_syn, node.tau_syn * 1e-4, rtol=1e-7, atol=0), name
            assert np.array_equal(other.r, node.r) and np.array_equal(other.w_in, node.w_in)
        if isinstance(node, nir.Delay):
            assert np.allclose(other.delay, 1e-4, rtol=1e-7, atol=0), name
    assert json.loads(scaled.metadata["i2e_neuro"])["dt"] == 1e-4
    assert_same_description(tiny, from_nir(scaled))
    h5 = tmp_path / "net.h5"
    save_hdf5(tiny, h5)
    assert main(["export", str(h5), "--format", "nir", "--dt", "1e-4"]) == 0
    assert_same_description(tiny, load_nir(tmp_path / "net.nir"))
    assert json.loads(nir.read(tmp_path / "net.nir").metadata["i2e_neuro"])["dt"] == 1e-4
    with pytest.raises(ValueError, match="dt: must be a positive number"):
        to_nir(tiny, dt=0)
    assert main(["export", str(h5), "--out", str(tmp_path / "x.h5"), "--dt", "1e-4"]) == 2
    # a delay that is not one step at the recorded dt is refused
    graph = to_nir(tiny, dt=1e-4)
    graph.nodes["input.delay"].delay = graph.nodes["input.delay"].delay * 2
    with pytest.raises(ValueError, match=r"node 'input.delay': delay must be 1 step = dt = 0.0001"):
        from_nir(graph)


def test_biases_reach_each_group_exactly(tiny):
    graph = to_nir(tiny)
    for g in tiny.groups:
        total = sum(graph.nodes[c.name].bias for c in tiny.incoming(g.name))
        leak = graph.nodes[g.name].v_leak[:, 0, 0] / graph.nodes[g.name].tau_mem[0, 0, 0]
        assert np.array_equal(total + leak, g.bias), g.name


def test_written_file_reads_back_as_the_same_graph_and_description(tiny, tmp_path):
    path = save_nir(tiny, tmp_path / "net.nir")
    assert_same_graph(to_nir(tiny), nir.read(path))
    assert_same_description(tiny, load_nir(path))


def test_norse_runs_the_file_spike_for_spike_like_lava_dl(tiny, tmp_path):
    path = save_nir(tiny, tmp_path / "net.nir")
    assert_same_as_lava_dl(tiny, random_samples(6, 16, 16), path)


def test_snntorch_runs_the_file_at_its_dt_spike_for_spike_like_lava_dl(tiny, tmp_path):
    from export.peers.snntorch import run_snntorch

    path = save_nir(tiny, tmp_path / "net.nir", dt=1e-4)
    assert_same_as_lava_dl(tiny, random_samples(6, 16, 16), path, runner=run_snntorch)
    steps = save_nir(tiny, tmp_path / "steps.nir")  # taus in steps: snnTorch's dt does not fit
    with pytest.raises(ValueError, match=r"dt = 1; snnTorch's NIR importer assumes dt = 0.0001"):
        run_snntorch(nir.read(steps), np.zeros((1, 1, 2, 16, 16)), tiny.steps)


def test_population_readout_reads_back_and_runs_in_norse(tmp_path):
    torch.manual_seed(3)
    spec = build_spec("msresnet_tiny", (2, 16, 16), 3, population=2)
    model = randomize_batchnorm(SpikingGraph(spec), 3).eval()
    model.fold()
    desc = from_deploy(model.deploy(i2e=I2E, classes=list("abc")))
    path = save_nir(desc, tmp_path / "net.nir")
    back = load_nir(path)
    assert back.readout.population == 2 and back.readout.shape == (6,)
    assert_same_as_lava_dl(desc, random_samples(6, 16, 16), path)


def test_non_square_input(tmp_path):
    desc = random_description("msresnet_tiny", (2, 24, 40), classes=4, seed=1)
    path = save_nir(desc, tmp_path / "wide.nir")
    assert nir.read(path).nodes["input"].input_type["input"].tolist() == [2, 24, 40]
    assert_same_description(desc, load_nir(path))
    assert_same_as_lava_dl(desc, random_samples(4, 24, 40, seed=2), path)


@pytest.mark.slow  # writes 45 MB of weights (about 30 s on a loaded 2-core machine)
def test_random_msresnet18_exports_with_every_residual_fan_in(tmp_path):
    desc = random_description("msresnet18", (2, 128, 128))
    out = tmp_path / "r18.nir"
    save_nir(desc, out)
    graph = nir.read(out)
    lif = [n for n, node in graph.nodes.items() if isinstance(node, nir.CubaLIF)]
    assert sorted(lif) == sorted(g.name for g in desc.groups) and len(lif) == 18  # + readout
    fan_in = {g.name: len(desc.incoming(g.name)) for g in desc.groups}
    assert max(fan_in.values()) == 3  # stage 0's last stream: stem + two conv2
    for name, k in fan_in.items():
        assert len([a for a, b in graph.edges if b == name]) == k, name
    assert_same_description(desc, from_nir(graph))


def test_cli_exports_checkpoint_and_hdf5_to_nir(tiny, tmp_path, capsys):
    h5 = tmp_path / "net.h5"
    save_hdf5(tiny, h5)
    assert main(["export", str(h5), "--format", "nir"]) == 0
    assert (tmp_path / "net.nir").is_file() and "-> " in capsys.readouterr().out
    assert_same_description(tiny, load_nir(tmp_path / "net.nir"))
    out = tmp_path / "by_suffix.nir"
    assert main(["export", str(h5), "--out", str(out)]) == 0  # format from the suffix
    assert isinstance(nir.read(out), nir.NIRGraph)
    # an .h5 input is never overwritten
    before = h5.read_bytes()
    assert main(["export", str(h5), "--format", "hdf5"]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert h5.read_bytes() == before


def test_bad_input_is_refused_clearly(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "x.pt"), "--format", "onnx"])
    assert e.value.code == 2 and "invalid choice: 'onnx'" in capsys.readouterr().err
    not_qat = tmp_path / "float.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "deploy": None}, not_qat)
    assert main(["export", str(not_qat), "--format", "nir", "--out", str(tmp_path / "o.nir")]) == 2
    err = capsys.readouterr().err
    assert "float.pt" in err and "quantized" in err and not (tmp_path / "o.nir").exists()
    # a NIR graph with node types Loihi has no form for
    lif = nir.NIRGraph.from_list(
        nir.Input(np.array([4])),
        nir.Affine(np.eye(4, dtype=np.float32), np.zeros(4, dtype=np.float32)),
        nir.LIF(*(np.ones(4, dtype=np.float32) for _ in range(4))),
        nir.Output(np.array([4])),
    )
    path = tmp_path / "lif.nir"
    nir.write(path, lif)
    with pytest.raises(
        ValueError, match=r"lif.nir: node '.*': NIR type (Affine|LIF) cannot be mapped"
    ):
        load_nir(path)
    with pytest.raises(ValueError, match="not a readable NIR file"):
        (tmp_path / "junk.nir").write_text("no")
        load_nir(tmp_path / "junk.nir")


def test_off_grid_parameters_are_refused_by_name(tiny):
    graph = to_nir(tiny)
    graph.nodes["s0b0.conv1"].weight = graph.nodes["s0b0.conv1"].weight + 0.5
    with pytest.raises(ValueError, match="node 's0b0.conv1': weights are not integers"):
        from_nir(graph)
    graph = to_nir(tiny)
    graph.nodes["s0b0.sn2"].tau_mem = graph.nodes["s0b0.sn2"].tau_mem * 3
    graph.nodes["s0b0.sn2"].r = graph.nodes["s0b0.sn2"].tau_mem
    with pytest.raises(ValueError, match="node 's0b0.sn2': tau_mem = 6.0 is not 4096/d"):
        from_nir(graph)
    graph = to_nir(tiny)
    del graph.nodes["s0b0.sn1.delay"]
    graph.edges = [(a, b) for a, b in graph.edges if "s0b0.sn1.delay" not in (a, b)]
    graph.edges += [("s0b0.sn1", "s0b0.conv1"), ("s0b0.sn1", "s1b0.down")]
    with pytest.raises(ValueError, match="must read from a Delay node"):
        from_nir(graph)


@pytest.mark.slow
def test_trained_digits_model_in_norse_agrees_with_lava(tmp_path_factory, capsys):
    from export.lava.runner import simulate
    from i2e_neuro.train import resolve_config, train

    out = tmp_path_factory.mktemp("run")
    cfg = resolve_config(epochs=2, qat_epochs=1, limit_train=256, limit_test=16)
    ckpt = train(cfg, out)["checkpoint"]
    net = out / "net.nir"
    assert main(["export", ckpt, "--format", "nir", "--out", str(net)]) == 0
    desc = load_nir(net)
    graph = nir.read(net)
    assert sorted(n for n, x in graph.nodes.items() if isinstance(x, nir.CubaLIF)) == sorted(
        g.name for g in desc.groups
    )
    samples = load_samples("digits", tuple(desc.input_shape[1:]), limit=24)
    assert_same_as_lava_dl(desc, samples, net)
    # the description imported from NIR runs in Lava like lava-dl
    ref = run_lava_dl(desc, samples, record=2)
    res = simulate(desc, samples.data[:2], record=2)
    assert np.array_equal(res.predictions, ref.predictions[:2])
    for g in desc.groups:  # Lava pads the window to a power of two with silent steps
        assert np.array_equal(res.trains[g.name][:, : desc.steps], ref.trains[g.name][:2])
        assert not res.trains[g.name][:, desc.steps :].any()


def tie_network():
    """One neuron fed, through two input connections, 1 at step 1 and 1024 = vth at step 8.

    In float its voltage is then ``1024 + 2**-7``, just above the threshold; Loihi's decay has
    truncated the 1 (64 in its units, halved 7 times) to 0, so its integer voltage is exactly
    ``vth << 6``, which does not fire (strict compare).
    """
    from export.description import from_deploy
    from i2e_neuro.models.deploy import DeployRecord, NeuronParams
    from i2e_neuro.models.spec import INPUT, ConnSpec, GroupSpec, NetSpec

    spec = NetSpec(
        "tie",
        (2, 1, 1),
        8,
        groups=[GroupSpec("sn", (1, 1, 1)), GroupSpec("readout", (2,), readout=True)],
        conns=[
            ConnSpec("small", INPUT, ["sn"], "conv", 2, 1),
            ConnSpec("large", INPUT, ["sn"], "conv", 2, 1),
            ConnSpec("fc", "sn", ["readout"], "pool_dense", 1, 2, batchnorm=False),
        ],
    )
    record = DeployRecord(
        spec=spec,
        neuron=NeuronParams(vth_mant=1024, current_decay=4096, voltage_decay=2048),
        weights={
            "small": np.array([1, 0]).reshape(1, 2, 1, 1),
            "large": np.array([0, 8]).reshape(1, 2, 1, 1),  # 8 << 7 = 1024
            "fc": np.array([[1], [-1]]),
        },
        exponents={"small": 0, "large": 7, "fc": 0},
        biases={"sn": np.zeros(1, int), "readout": np.zeros(2, int)},
    )
    desc = from_deploy(record)
    events = np.zeros((1, 8, 2, 1, 1), dtype=bool)
    events[0, 0, 0] = True  # the 1, arriving at step 1
    events[0, 7, 1] = True  # the 1024, arriving at step 8
    return desc, Samples(events, np.array([-1]), ["tie"], events=True)


def test_threshold_nudge_matches_loihi_after_decay_truncation():
    desc, samples = tie_network()
    ref = run_lava_dl(desc, samples, record=1)
    assert ref.trains["sn"].sum() == 0  # Loihi: truncated to exactly vth << 6, no spike
    events = sample_events(desc, samples, 0, 1).numpy()
    _, plain, _ = run_norse(to_nir(desc, threshold_nudge=0.0), events, desc.steps)
    assert plain["sn"].sum() == 1  # float v = 1024 + 2**-7 > 1024
    _, nudged, trains = run_norse(to_nir(desc), events, desc.steps, record=1)
    assert nudged["sn"].sum() == 0 and np.array_equal(trains["sn"], ref.trains["sn"])


@pytest.mark.slow  # runs Lava processes
def test_check_nir_script_quick():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run(
        [sys.executable, str(root / "scripts" / "check_nir.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert report["samples"] == 32 and sorted(report["readers"]) == ["norse", "snntorch"]
    for name, version in (("norse", "1.1.0"), ("snntorch", "1.0.0")):
        r = report["readers"][name]
        assert r["consumer"].startswith(f"{name} {version}")
        assert r["agreement"] == 1.0 and r["samples_with_any_spike_difference"] == 0
        assert r["mismatched_spikes"] == 0 and sum(g["nir"] for g in r["groups"].values()) > 0
    assert report["lava"] == {
        "samples": 2,
        "predictions_equal_lava_dl": True,
        "spikes_equal_lava_dl": True,
    }


def test_the_spiking_readout_group_maps_to_cubalif_and_back(tiny):
    graph = to_nir(tiny)
    node = graph.nodes["readout"]
    assert isinstance(node, nir.CubaLIF) and node.v_threshold.shape == (5, 1, 1)
    assert [a for a, b in graph.edges if b == "output"] == ["readout"]
    back = from_nir(graph)
    assert (back.readout.readout, back.readout.shape) == (True, (5,))
    assert (back.readout.dv, back.readout.vth) == (tiny.readout.dv, tiny.readout.vth)


def test_a_nir_file_goes_back_to_hdf5_and_the_loihi_checks(tiny, tmp_path, capsys):
    import export

    path = save_nir(tiny, tmp_path / "net.nir")
    assert_same_description(tiny, export.load(path))
    assert main(["export", str(path)]) == 0  # -> net.h5, with the layer and resource tables
    assert "loihi2" in capsys.readouterr().out.lower()
    assert_same_description(tiny, export.load(tmp_path / "net.h5"))
    assert main(["export", str(path), "--format", "nir"]) == 2  # would overwrite its input


def test_the_stock_importers_of_norse_and_snntorch_do_not_run_the_file_yet(tiny, tmp_path):
    """What docs/NIR.md says of the frameworks' own loaders (norse 1.1.0, snntorch 1.0.0): both
    stop at the graph's ``Delay`` nodes, and snnTorch's asserts on a file in steps. If this test
    fails, an upstream release has changed and the docs must be brought up to date."""
    import norse.torch
    from snntorch.import_nir import import_from_nir

    steps = nir.read(save_nir(tiny, tmp_path / "steps.nir"))
    seconds = nir.read(save_nir(tiny, tmp_path / "seconds.nir", dt=1e-4))
    with pytest.raises(KeyError, match="input_delay"):
        norse.torch.from_nir(steps)
    with pytest.raises(AssertionError, match="r not supported in CubaLIF"):
        import_from_nir(steps)
    with pytest.raises(ValueError, match="Unknown node type .*Delay"):
        import_from_nir(seconds)


def test_files_of_the_earlier_form_still_read(tiny):
    """Before issue 26 the exponents were per-``Conv2d`` metadata and ``dt`` was always 1."""
    graph = to_nir(tiny)
    meta = json.loads(graph.metadata["i2e_neuro"])
    for name, e in meta.pop("exponents").items():
        graph.nodes[name].metadata = {"exponent": e}
    del meta["dt"]
    graph.metadata["i2e_neuro"] = json.dumps(meta)
    assert_same_description(tiny, from_nir(graph))
