"""The package API of ``export``: ``load``, ``from_checkpoint``, ``build_graph``, the run-config
builder and the text reports, on a real folded network (no Lava run)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import export
from export.hdf5 import save_hdf5
from export.lava.run_config import BackendUnavailable, run_config
from export.report import format_energy_report, layer_table
from export.synops import energy_report
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.spec import build_spec

I2E = {"ratio": 0.1, "timesteps": 8, "order": "efghabcd"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = randomize_batchnorm(SpikingGraph(build_spec("msresnet_tiny", (2, 16, 16), 5)))
    model.fold()
    path = tmp_path_factory.mktemp("api") / "model.pt"
    torch.save({"deploy": model.deploy(i2e=I2E, classes=list("abcde"))}, path)
    return path


def test_load_reads_checkpoints_and_hdf5(checkpoint, tmp_path):
    desc = export.load(checkpoint)
    assert desc.name == "msresnet_tiny" and desc.classes == list("abcde")
    h5 = save_hdf5(desc, tmp_path / "net.h5")
    back = export.load(str(h5))
    assert [c.name for c in back.connections] == [c.name for c in desc.connections]
    for a, b in zip(desc.connections, back.connections):
        assert np.array_equal(a.weight, b.weight)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        export.load(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="junk.h5"):
        export.load(tmp_path / "junk.h5")


def test_build_graph_lists_every_lava_process(checkpoint):
    from lava.magma.core.process.process import AbstractProcess

    from export.lava.graph import LOIHI_PROCESSES
    from export.lava.processes import InputAdapter, OutputAdapter

    desc = export.from_checkpoint(checkpoint)
    for backend in ("cpu", "loihi2"):
        net = export.build_graph(desc, backend=backend)
        procs = net.processes()
        # the network's chip processes, then the host <-> chip adapters (export.lava.processes)
        assert len(procs) == len(desc.groups) + len(desc.connections) + 2
        chip, adapters = procs[:-2], procs[-2:]
        assert all(isinstance(p, AbstractProcess) and isinstance(p, LOIHI_PROCESSES) for p in chip)
        assert [type(p) for p in adapters] == [InputAdapter, OutputAdapter]
        assert {p.name for p in chip} == {g.name for g in desc.groups} | {
            c.name for c in desc.connections
        }
    with pytest.raises(ValueError, match="backend='gpu'"):
        export.build_graph(desc, backend="gpu")


def test_importing_export_does_not_import_lava():
    code = "import sys, export; print(sorted(m for m in sys.modules if m.split('.')[0] == 'lava'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_run_config_builder():
    from lava.proc.conv.process import Conv

    from export.lava.conv import LoihiConvModelReference
    from export.lava.processes import (
        InputAdapter,
        OutputAdapter,
        PyInputAdapterModel,
        PyOutputAdapterModel,
    )
    from export.lava.run_config import fast_exception_map, fast_run_config

    adapters = {InputAdapter: PyInputAdapterModel, OutputAdapter: PyOutputAdapterModel}
    assert run_config("cpu").exception_proc_model_map == {**adapters, **fast_exception_map()}
    assert fast_run_config().exception_proc_model_map == {**adapters, **fast_exception_map()}
    assert run_config("cpu", fast=False).exception_proc_model_map == {
        **adapters,
        Conv: LoihiConvModelReference,
    }
    assert run_config("cpu").select_tag == "fixed_pt"
    with pytest.raises(ValueError, match="backend='tpu'"):
        run_config("tpu")
    from lava.utils import loihi

    if not loihi.is_installed():
        with pytest.raises(BackendUnavailable, match="lava-loihi"):
            run_config("loihi2")


def test_text_reports(checkpoint):
    desc = export.load(checkpoint)
    table = layer_table(desc)
    assert all(g.name in table for g in desc.groups) and "stem[conv" in table
    counts = {g.name: np.ones(g.shape, dtype=np.int64) for g in desc.groups}
    report = energy_report(desc, np.ones(desc.input_shape, dtype=np.int64), counts, 1)
    text = format_energy_report({**report, "samples": 1, "engine": "lava"})
    assert "i2e input" in text and "ANN / SNN" in text
    # the constants of each estimate, printed with the figures (docs/ENERGY.md)
    assert "constants used:" in text and "E_MAC 4.6 pJ" in text and "E_AC 0.9 pJ" in text
    assert "SynOps x 23.6 pJ" in text and "Loihi 2's are not published" in text
