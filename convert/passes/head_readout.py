"""The head as synapses: mean over tokens and time, then Linear, becomes a Conv1d with kernel N (weights
W / (N T), bias b / T) into a non-leaky integrator read at the last step. Exact in real arithmetic.

`memo` (a dict one caller keeps over several lowerings of the same frontend graph, e.g. its SSA forms): the
repeated weight array of a head whose weight array is the same object, made once (150 M weights on
imagenet-8-768) and shared by the lowered graphs, which treat node arrays as read-only."""
from __future__ import annotations

import numpy as np

from .. import ir


def run(g: ir.Graph, memo: dict | None = None) -> ir.Graph:
    shapes = g.shapes()
    for head in g.of_type(ir.TokenTimeMeanLinear):
        src = g.in_edges(head.name)[0].src
        d, n = shapes[src]
        T = head.T
        key = (id(head.weight), n, T)
        hit = memo.get(key) if memo is not None else None
        if hit is not None and hit[0] is head.weight:
            w = hit[1]
        else:
            w = np.repeat(head.weight[:, :, None] / (n * T), n, axis=2)
            if memo is not None:
                memo[key] = (head.weight, w)
        out_edges = g.out_edges(head.name)
        in_srcs = [e.src for e in g.in_edges(head.name)]
        g.remove(head.name)
        syn = g.add(ir.Conv1d(f"{head.name}.synapses", head.source, weight=w, bias=head.bias / T), *in_srcs)
        g.add(ir.Integrator(head.name, head.source), syn)
        g.edges.extend(out_edges)
        g.metadata["head"] = {"tokens": n, "T": T, "weight_scale": f"1/({n}*{T})", "bias_scale": f"1/{T}"}
    return g
