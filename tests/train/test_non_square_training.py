"""Training at H != W (24 x 40): the QAT graph learns a small task in float, folds to integers,
and its deploy entry describes the non-square network that export reads."""

import torch

from export.description import from_deploy
from i2e_neuro import i2e
from i2e_neuro.models.qat import SpikingGraph
from i2e_neuro.models.spec import build_spec
from i2e_neuro.train.loop import compute_loss


def bar_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images 24 x 40 with one bright vertical bar whose column band gives the class (4 classes)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = (torch.rand(n, 3, 24, 40, generator=g) * 60).to(torch.uint8)
    for i, y in enumerate(labels.tolist()):
        x = 10 * y + int(torch.randint(1, 8, (1,), generator=g))
        images[i, :, 4:20, x : x + 2] = 250
    return images, labels


def test_the_qat_graph_trains_folds_and_exports_at_24x40():
    torch.manual_seed(0)
    spec = build_spec("msresnet_tiny", (2, 24, 40), 4)
    model = SpikingGraph(spec)
    images, labels = bar_images(32)
    events = i2e(images, ratio=0.1)
    assert events.shape == (8, 32, 2, 24, 40)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    model.train()
    for step in range(30):  # the spiking readout starts silent: 12 steps gave 0.44, 20 gave 0.375
        loss = compute_loss(model(events), labels, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.project_bn_shifts()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses
    model.eval()
    with torch.no_grad():
        accuracy = float((model(events).argmax(1) == labels).float().mean())
    assert accuracy >= 0.5, accuracy  # chance: 0.25 (0.66 when written, integrator readout)
    model.fold()
    desc = from_deploy(model.deploy(i2e={"ratio": 0.1, "order": "efghabcd"}, classes=list("abcd")))
    assert desc.input_shape == (2, 24, 40)
    shapes = {g.name: g.shape for g in desc.groups}
    assert shapes["s1b0.sn1"] == (16, 6, 10) and shapes["s1b0.sn2"] == shapes["head.sn"] == (
        32,
        3,
        5,
    )
