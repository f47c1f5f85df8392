"""Optional cross-check with NeuroBench itself (``pip install -e '.[neurobench]'``; skipped
without it): NeuroBench 2.3's ``SynapticOperations`` and ``ActivationSparsity``, run on the
exported NIR file as snnTorch builds it, give the energy report's numbers exactly."""

import nir
import numpy as np
import pytest
import torch

import export.lava.runner  # noqa: F401  (Lava first: it fixes multiprocessing's start method before tqdm does)

pytest.importorskip(
    "neurobench", reason="NeuroBench not installed (optional: pip install -e '.[neurobench]')"
)

from export.nir import save_nir  # noqa: E402
from export.peers.lava_dl import run_lava_dl, sample_events  # noqa: E402
from export.peers.snntorch import run_snntorch, snntorch_module  # noqa: E402
from export.synops import energy_report  # noqa: E402
from i2e_neuro.datasets.eval_data import load_samples  # noqa: E402
from i2e_neuro.models.spec import build_spec  # noqa: E402
from tests.oracles import random_folded_description  # noqa: E402


def test_neurobench_counts_equal_the_energy_report(tmp_path):
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel

    _, desc = random_folded_description(build_spec("msresnet_tiny", (2, 32, 32), 10), seed=0)
    n = 4
    samples = load_samples("digits", tuple(desc.input_shape[1:]), limit=n)
    ref = run_lava_dl(desc, samples, record=n)
    report = energy_report(desc, ref.input_counts, ref.neuron_counts, n)
    graph = nir.read(save_nir(desc, tmp_path / "net.nir", dt=1e-4))
    # precondition: NeuroBench's copy spikes as lava-dl does, so the counts may be compared
    events = sample_events(desc, samples, 0, n)
    _, _, trains = run_snntorch(graph, events.numpy(), desc.steps, record=n)
    for g in desc.groups:
        assert np.array_equal(trains[g.name], ref.trains[g.name]), g.name
    # NeuroBench's data layout: [batch, steps, C, H, W], the frames then silent steps
    x = torch.zeros(desc.steps, *events.shape[1:])
    x[: events.shape[0]] = events
    data = torch.utils.data.TensorDataset(x.transpose(0, 1).contiguous(), torch.zeros(n))
    bench = Benchmark(
        SNNTorchModel(snntorch_module(graph)),
        torch.utils.data.DataLoader(data, batch_size=n),
        [],
        [],
        [[], [SynapticOperations, ActivationSparsity]],
    )
    got = bench.run(quiet=True)
    ops = got["SynapticOperations"]
    ours = report["neurobench"]
    assert report["total"]["effective_synops"] < report["total"]["synops"]  # zero weights exist
    assert ops["Effective_ACs"] == ours["Effective_ACs"]  # exactly
    assert ops["Dense"] == ours["Dense"] and ops["Effective_MACs"] == 0
    assert got["ActivationSparsity"] == pytest.approx(ours["ActivationSparsity"], rel=1e-12)
