#!/usr/bin/env python
"""Count a model's operations with NeuroBench itself and compare with ``i2e-neuro energy``.

Optional (``pip install -e '.[neurobench]'``). Exports the model to NIR with ``dt = 1e-4``,
builds it in snnTorch (``export.peers.snntorch``: snnTorch's own NIR node modules and a
one-step delay), wraps it in ``neurobench.models.SNNTorchModel`` and runs NeuroBench 2.3's
``SynapticOperations``, ``ActivationSparsity``, ``ConnectionSparsity`` and ``Footprint`` on the
test split (the I2E frames, then silent steps up to the description's ``steps``). The energy
report's numbers are computed twice: from the snnTorch copy's own spike counts (the same spikes
NeuroBench sees) and from lava-dl's (Loihi's). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import export.lava.runner  # noqa: F401  (Lava first: it fixes multiprocessing's start method)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="checkpoint or exported .h5")
    p.add_argument("--data", default="digits", help="dataset of the test split (default digits)")
    p.add_argument("--root", help="dataset folder (all but digits)")
    p.add_argument("--limit", type=int, help="first N test samples only (default: all)")
    p.add_argument("--batch", type=int, default=60)
    args = p.parse_args(argv)

    import nir
    import torch
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel

    from export import load
    from export.nir import save_nir
    from export.peers.lava_dl import run_lava_dl, sample_events
    from export.peers.snntorch import run_snntorch, snntorch_module
    from export.synops import energy_report
    from i2e_neuro.datasets.eval_data import load_samples

    torch.set_num_threads(2)
    desc = load(args.model)
    samples = load_samples(args.data, tuple(desc.input_shape[1:]), args.root, "test", args.limit)
    n = len(samples.data)
    events = torch.cat(
        [sample_events(desc, samples, i, i + args.batch) for i in range(0, n, args.batch)], dim=1
    )
    with tempfile.TemporaryDirectory() as tmp:
        graph = nir.read(save_nir(desc, Path(tmp) / "net.nir", dt=1e-4))
    ref = run_lava_dl(desc, samples, batch=args.batch)
    input_counts = events.sum(dim=(0, 1)).numpy().astype("int64")
    _, counts, _ = run_snntorch(graph, events.numpy(), desc.steps, batch=args.batch)
    ours_snntorch = energy_report(desc, input_counts, counts, n)["neurobench"]
    ours_lava_dl = energy_report(desc, ref.input_counts, ref.neuron_counts, n)["neurobench"]
    x = torch.zeros(desc.steps, *events.shape[1:])
    x[: events.shape[0]] = events
    data = torch.utils.data.TensorDataset(
        x.transpose(0, 1).contiguous(), torch.as_tensor(samples.labels)
    )
    start = time.perf_counter()
    bench = Benchmark(
        SNNTorchModel(snntorch_module(graph)),
        torch.utils.data.DataLoader(data, batch_size=args.batch),
        [],
        [],
        [[ConnectionSparsity, Footprint], [SynapticOperations, ActivationSparsity]],
    )
    got = bench.run(quiet=True)
    seconds = time.perf_counter() - start
    ops = got["SynapticOperations"]
    summary = {
        "model": str(args.model),
        "samples": n,
        "neurobench": {**{k: v for k, v in got.items() if k != "SynapticOperations"}, **ops},
        "ours_on_snntorch_spikes": ours_snntorch,
        "ours_on_lava_dl_spikes": ours_lava_dl,
        "effective_acs_equal": ops["Effective_ACs"] == ours_snntorch["Effective_ACs"],  # exactly
        "dense_equal": ops["Dense"] == ours_snntorch["Dense"],
        "seconds_neurobench": round(seconds, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
