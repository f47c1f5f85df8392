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
        f"(+ I2E encoding {fmt(f['i2e_uj'])} uJ)"
        f"\ninput event rate {report['input_event_rate']:.4f} = {report['input_event_rate_definition']} "
        "(the 'rate' of the i2e input row and the first layer's f_r)"
    )
    if report.get("constants"):
        lines += ["constants used:", *(f"  {c}" for c in report["constants"].values())]
    if "connections" in report:
        lines += ["", *connection_table(report)]
    return "\n".join(lines)


def connection_table(report: dict) -> list[str]:
    """Per connection: SynOps in both conventions, Dense, weights; then NeuroBench's names."""
    lines = [
        f"{'connection':<14}{'SynOps':>12}{'effective':>12}{'Dense':>12}{'weights':>9}"
        f"{'zeros':>7}{'ANN MACs':>10}{'(padded, tiled)':>16}"
    ]
    for r in report["connections"]:
        lines.append(
            f"{r['name']:<14}{r['synops']:>12.1f}{r['effective_synops']:>12.1f}{r['dense']:>12}"
            f"{r['weights']:>9}{r['zero_weights']:>7}{r['macs_ann']:>10}{r['macs_ann_padded_tiled']:>16}"
        )
    t, nb, fp = report["total"], report["neurobench"], report["footprint"]
    lines.append(
        f"{'total':<14}{t['synops']:>12.1f}{t['effective_synops']:>12.1f}{t['dense']:>12}"
        f"{fp['weights']:>9}{sum(r['zero_weights'] for r in report['connections']):>7}"
        f"{t['macs_ann']:>10.0f}{t['macs_ann_padded_tiled']:>16}"
    )
    sparsity = report["activation_sparsity"]
    lines += [
        "SynOps: every synapse a spike reaches (zero weights included); effective: nonzero "
        "weights only (NeuroBench's Effective_ACs); Dense: every synapse at every step",
        "activation sparsity: "
        + ", ".join(f"{g} {v:.4f}" for g, v in sparsity.items() if g != "overall")
        + f"; overall {sparsity['overall']:.4f} (readout included, input excluded)",
        f"connection sparsity {nb['ConnectionSparsity']:.4f}; deployed footprint {fp['bytes']} B "
        f"({fp['weights']} 8-bit weight mantissas, {fp['biases']} 16-bit bias mantissas)",
        "NeuroBench names: " + ", ".join(f"{k} {v:.6g}" for k, v in nb.items()),
    ]
    return lines
