"""Simulation shortcut for 16-bit weights (quantize.py: a high and a low 8-bit synapse group per weight).

On chip (and in Lava) the neuron receives a_hi + a_lo with a_hi = (sum m_hi x) << e_hi and
a_lo = floor((sum m_lo x) / 2**k), k = -e_lo > 0. Where e_hi >= 0, a_hi is an integer, so
    a_hi + a_lo = floor((sum (m_hi 2**(e_hi + k) + m_lo) x) / 2**k)
exactly: one synapse with the combined integer weight m_hi 2**(e_hi + k) + m_lo and exponent -k gives the same
input, for the cost of one weighted sum instead of two. `fuse_weight_parts(graph)` makes that replacement for
every pair where it is exact (every channel has e_hi >= 0 and e_lo <= 0, and both parts read the same streams
into the same neurons; with several streams the identity holds per stream, and the engine shifts stream by
stream as the chip does); other pairs run as they are. The sums stay exact: the engine proves float32 exactness
from the combined weights (fixed_point.precision_plan) and uses float64 otherwise. Simulation only; the
exported network keeps both groups. tests/test_weight_parts.py checks the equality spike for spike."""
from __future__ import annotations

import copy

import numpy as np

from convert import ir


def _per_channel(e, n: int) -> np.ndarray:
    e = np.asarray(e, dtype=np.int64)
    return np.full(n, int(e)) if e.ndim == 0 else e


def fuse_weight_parts(g: ir.Graph) -> ir.Graph:
    parts = g.metadata.get("weight_low_parts") or {}
    if not parts:
        return g
    g = g.copy()
    fused = []
    for low_name, high_name in parts.items():
        low, high = g.nodes.get(low_name), g.nodes.get(high_name)
        if low is None or high is None or type(low) is not type(high) or not isinstance(high.weight, np.ndarray):
            continue
        ins = lambda n: sorted((e.src, e.port) for e in g.in_edges(n))
        outs = lambda n: sorted((e.dst, e.port) for e in g.out_edges(n))
        if ins(low_name) != ins(high_name) or outs(low_name) != outs(high_name):
            continue
        # several streams into one synapse: on chip each stream has its own high and low projection, i.e.
        # floor(combined sum / 2**k) per stream, which the engine's per-stream execution computes
        n = high.weight.shape[0]
        e_hi, e_lo = _per_channel(high.weight_exp, n), _per_channel(low.weight_exp, n)
        if np.any(e_hi < 0) or np.any(e_lo > 0):
            continue
        k = -e_lo
        shape = (-1,) + (1,) * (high.weight.ndim - 1)
        node = copy.copy(high)
        node.weight = high.weight * (2.0 ** (e_hi + k)).reshape(shape) + low.weight
        node.weight_exp = -k if len(set(k.tolist())) > 1 else -int(k[0])
        g.nodes[high_name] = node
        g.remove(low_name)
        fused.append(low_name)
    g.metadata["weight_low_parts_fused"] = fused
    return g
