"""One topology and one deploy record: the network description and the energy model build on
the spec's graph, and the checkpoint's ``deploy`` entry is read and written by one dataclass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.description import from_deploy, to_deploy
from i2e_neuro.energy import model as energy
from i2e_neuro.models.deploy import DeployRecord
from i2e_neuro.models.qat import SpikingGraph, randomize_batchnorm
from i2e_neuro.models.spec import INPUT, build_spec, conv_output_size

I2E = {"ratio": 0.1, "timesteps": 8, "order": "efghabcd"}


@pytest.fixture(scope="module")
def folded():
    spec = build_spec("msresnet_tiny", (2, 16, 16), 5)
    model = randomize_batchnorm(SpikingGraph(spec))
    model.fold()
    return model


def test_description_is_composed_of_the_spec_topology(folded):
    record = folded.deploy_record(i2e=I2E, classes=list("abcde"))
    desc = from_deploy(record)
    topo = desc.topology
    assert topo is record.spec
    assert [g.spec for g in desc.groups] == topo.groups
    assert all(c.spec is s for c, s in zip(desc.connections, topo.conns))
    # the topology's fields read through, and graph questions go to the topology
    for c in desc.connections:
        assert (c.name, c.kind, c.source, c.targets, c.kernel, c.stride, c.padding) == (
            c.spec.name,
            c.spec.kind,
            c.spec.source,
            c.spec.targets,
            c.spec.kernel,
            c.spec.stride,
            c.spec.padding,
        )
        assert desc.output_shape(c) == topo.output_shape(c.spec)
        assert tuple(c.weight.shape) == c.weight_shape
    for g in desc.groups:
        assert [c.name for c in desc.incoming(g.name)] == [c.name for c in topo.incoming(g.name)]
    assert desc.depths() == topo.depths() and desc.steps == topo.steps
    assert desc.source_shape(INPUT) == (2, 16, 16) and not desc.is_chain()
    with pytest.raises(AttributeError, match="dilation"):
        desc.connections[0].dilation  # noqa: B018  not an attribute of the topology (yet)


def test_one_conv_output_size():
    for size, k, s, p in [(32, 3, 1, 1), (32, 3, 2, 0), (224, 7, 2, 3), (16, 4, 4, 0)]:
        assert energy.conv_output_size(size, k, s, p) == conv_output_size(size, k, s, p)


def test_deploy_record_round_trip(folded, tmp_path):
    record = folded.deploy_record(i2e=I2E, classes=list("abcde"))
    d = record.to_dict()
    # the checkpoint layout: plain types and int64 tensors that torch.load(weights_only) reads
    torch.save({"deploy": d}, tmp_path / "ckpt.pt")
    back = torch.load(tmp_path / "ckpt.pt", weights_only=True)["deploy"]
    again = DeployRecord.from_dict(back)
    assert again.spec == record.spec and again.neuron == record.neuron
    assert (again.steps, again.i2e, again.classes) == (record.steps, I2E, list("abcde"))
    for name, w in record.weights.items():
        assert w.dtype == torch.int64 and torch.equal(again.weights[name], w)
        assert again.exponents[name] == record.exponents[name]
    n = d["neuron"]
    assert (n["threshold"], n["vth_mant"], n["current_decay"], n["voltage_decay"]) == (
        16.0,
        1024,
        4096,
        2048,
    )
    # description -> record -> description is the identity on the integers
    desc = from_deploy(d)
    desc2 = from_deploy(to_deploy(desc))
    for a, b in zip(desc.connections, desc2.connections):
        assert np.array_equal(a.weight, b.weight) and a.exponent == b.exponent
    for a, b in zip(desc.groups, desc2.groups):
        assert np.array_equal(a.bias, b.bias) and (a.du, a.dv, a.vth) == (b.du, b.dv, b.vth)
    # the model rebuilt from the record has the same integers
    rebuilt = SpikingGraph.from_deploy(desc.deploy_record()).deploy_record()
    for name, w in record.weights.items():
        assert torch.equal(rebuilt.weights[name], w)
    for name, b in record.biases.items():
        assert torch.equal(rebuilt.biases[name], b)


def test_deploy_record_errors_name_the_missing_part(folded):
    d = folded.deploy(i2e=I2E)
    del d["groups"]["s0b0.sn2"]
    with pytest.raises(ValueError, match="deploy entry.*s0b0.sn2"):
        DeployRecord.from_dict(d)
    d = folded.deploy(i2e=I2E)
    del d["neuron"]["vth_mant"]
    with pytest.raises(ValueError, match="vth_mant"):
        from_deploy(d)
