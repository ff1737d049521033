"""The head as synapses: mean over tokens and time, then Linear, becomes a Conv1d with kernel N (weights
W / (N T), bias b / T) into a non-leaky integrator read at the last step. Exact in real arithmetic."""
from __future__ import annotations

import numpy as np

from .. import ir


def run(g: ir.Graph) -> ir.Graph:
    shapes = g.shapes()
    for head in g.of_type(ir.TokenTimeMeanLinear):
        src = g.in_edges(head.name)[0].src
        d, n = shapes[src]
        T = head.T
        w = np.repeat(head.weight[:, :, None] / (n * T), n, axis=2)
        out_edges = g.out_edges(head.name)
        in_srcs = [e.src for e in g.in_edges(head.name)]
        g.remove(head.name)
        syn = g.add(ir.Conv1d(f"{head.name}.synapses", head.source, weight=w, bias=head.bias / T), *in_srcs)
        g.add(ir.Integrator(head.name, head.source), syn)
        g.edges.extend(out_edges)
        g.metadata["head"] = {"tokens": n, "T": T, "weight_scale": f"1/({n}*{T})", "bias_scale": f"1/{T}"}
    return g
