"""Text reports of a network description: its layer table and its energy table."""

from __future__ import annotations

from export.description import NetworkDescription


def layer_table(desc: NetworkDescription) -> str:
    """One line per group: shape, incoming connections (kind, exponent, source), bias range."""
    lines = [
        f"{'group':<14} {'shape':<14} {'inputs (kind, exponent, source)':<58} {'bias mant.':>13}"
    ]
    for g in desc.groups:
        inputs = ", ".join(
            f"{c.name}[{c.kind} e{c.exponent} <- {c.source}]" for c in desc.incoming(g.name)
        )
        bias = f"{int(g.bias.min())}..{int(g.bias.max())}"
        lines.append(f"{g.name:<14} {'x'.join(map(str, g.shape)):<14} {inputs:<58} {bias:>13}")
    return "\n".join(lines)


def format_energy_report(report: dict) -> str:
    """The per-layer table of :func:`export.synops.energy_report` (plus ``samples``, ``engine``) as text."""
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    lines = [
        f"{'population':<14}{'spikes':>10}{'rate':>8}{'SynOps':>12}{'ANN MACs':>12}{'SNN uJ':>10}{'ANN uJ':>10}{'Loihi uJ':>10}"
    ]
    for r in report["layers"] + [report["total"]]:
        lines.append(
            f"{r['name']:<14}{fmt(r.get('spikes')):>10}{fmt(r.get('event_rate')):>8}{fmt(r['synops']):>12}"
            f"{fmt(r['macs_ann']):>12}{fmt(r['snn_uj']):>10}{fmt(r['ann_uj']):>10}{fmt(r.get('loihi_uj')):>10}"
        )
    f = report["first_layer"]
    lines.append(
        f"\nper sample, {report['samples']} samples ({report['engine']} spikes); whole network: ANN / SNN = {fmt(report['network_ratio'])}x"
        f"\nfirst layer: ANN {fmt(f['ann_uj'])} uJ vs SNN {fmt(f['snn_measured_uj'])} uJ measured "
        f"(+ I2E encoding {fmt(f['i2e_uj'])} uJ) at input event rate {report['input_event_rate']:.4f}"
    )
    return "\n".join(lines)
