"""Residual sums as graded spikes (Loihi 2), exact: every Add becomes a relay population that sums the spike
streams of the sum (nested adds flattened) through identity synapses and sends the integer count as one graded
spike (GradedNeuron, vth 0). Its consumers read one graded stream instead of one projection per stream, so a
synapse layer after the k-th residual sum stores its weights once instead of k + 1 times, and its input is
shifted once (a weight exponent below zero floors each projection's sum on its own). Costs one population per
residual sum and one hop of delay, which the timing pass balances. The binary form (residual_streams) is what
chips without graded spikes and NIR get."""
from __future__ import annotations

import numpy as np

from .. import ir
from .residual_streams import spike_streams


def identity_synapse(name: str, source: str, shape: tuple, bias=None, weight: float = 1.0,
                     kernel: int = 1) -> ir.Node:
    """A depthwise synapse of one weight: each neuron reads the same channel of the stream (and, with kernel > 1
    over tokens, that many tokens of it)."""
    c = shape[0]
    if len(shape) == 3 and kernel == 1:
        return ir.Conv2d(name, source, weight=np.full((c, 1, 1, 1), weight), bias=bias, groups=c)
    if len(shape) == 2:
        return ir.Conv1d(name, source, weight=np.full((c, 1, kernel), weight), bias=bias, groups=c)
    raise ir.IRValidationError(f"{name}: a stream of shape {shape} (expected (C, N) or (C, H, W))")


def run(g: ir.Graph) -> ir.Graph:
    adds = [n.name for n in g.of_type(ir.Add)]
    if not adds:
        return g
    shapes = g.shapes()
    streams = {a: spike_streams(g, a) for a in adds}
    relays = {}
    for a in adds:
        consumers = [e for e in g.out_edges(a) if not isinstance(g.nodes[e.dst], ir.Add)]
        if not consumers:
            continue  # only summed into another residual sum, which reads its streams itself
        src = g.nodes[a].source
        relay = g.unique_name(f"{a}.sum")
        syns = []
        for s in streams[a]:
            syns.append(g.add(identity_synapse(g.unique_name(f"{relay}.from.{s}"), src, shapes[a]), s))
        g.add(ir.GradedNeuron(relay, src, vth=0.0), *syns)
        relays[a] = (relay, consumers)
    for a, (relay, consumers) in relays.items():
        g.edges.extend(ir.Edge(relay, e.dst, e.port) for e in consumers)
    for a in adds:
        g.remove(a)
    g.metadata["residual_relays"] = {a: {"relay": r, "streams": streams[a]} for a, (r, _) in relays.items()}
    return g
