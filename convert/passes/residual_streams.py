"""Residual sums made explicit: every consumer of an Add reads each spike stream of the sum directly (edges into
one port sum), so a synapse layer W applied to (a + b) becomes W a + W b with shared weights. Exact: synapses
are linear. Nested adds flatten into their streams. Afterwards no value other than a spike stream travels
between neurons; `metadata["residual_streams"]` lists which streams each consumer reads."""
from __future__ import annotations

from .. import ir


def spike_streams(g: ir.Graph, name: str) -> list[str]:
    node = g.nodes[name]
    if isinstance(node, ir.Add):
        out = []
        for e in g.in_edges(name):
            out.extend(spike_streams(g, e.src))
        return out
    return [name]


def run(g: ir.Graph) -> ir.Graph:
    adds = [n.name for n in g.of_type(ir.Add)]
    streams = {a: spike_streams(g, a) for a in adds}
    new_edges = []
    for e in g.edges:
        if e.src in streams:
            if not isinstance(g.nodes[e.dst], ir.Add):
                new_edges.extend(ir.Edge(s, e.dst, e.port) for s in streams[e.src])
        elif not isinstance(g.nodes[e.dst], ir.Add):
            new_edges.append(e)
    g.edges = new_edges
    for a in adds:
        del g.nodes[a]
    consumers = {}
    for e in g.edges:
        if len(g.in_edges(e.dst, e.port)) > 1:
            consumers.setdefault(e.dst, sorted({x.src for x in g.in_edges(e.dst, e.port)}))
    g.metadata["residual_streams"] = consumers
    return g
