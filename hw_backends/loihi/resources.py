"""Placement of populations on Loihi 2 cores under the named limits in `limits.py`.

A population is split over as many cores as the tightest limit needs: neurons per core, synapse memory
(8-bit weights, +6 bits where a projection is delayed), and input axons (every presynaptic neuron that
reaches the population is one input axon on each core that holds part of it; several synapse groups from the
same presynaptic neurons with the same delay share those axons). Cores are not shared between
populations (a conservative, simple packing); chips = ceil(cores / 128)."""
from __future__ import annotations

import math

from convert import ir

from . import limits as L
from .timing import POPULATION_TYPES, Projection


def synapse_count(g: ir.Graph, syn: ir.Node, shapes: dict) -> int:
    """Synapses of one projection through `syn` (weights that are stored, zero taps excluded for convs)."""
    out = math.prod(shapes[syn.name])
    if isinstance(syn, ir.AxisSynapse):
        return out * syn.fan_in
    if isinstance(syn, ir.SumPool2d):
        return out * syn.kernel[0] * syn.kernel[1]
    if isinstance(syn, (ir.Conv2d, ir.Conv1d)):
        # each output neuron of channel o connects to the nonzero taps of weight[o] (upper bound at borders)
        per_out_channel = (syn.weight != 0).reshape(syn.weight.shape[0], -1).sum(1)
        positions = out // syn.weight.shape[0]
        return int(per_out_channel.sum()) * positions
    raise TypeError(syn.kind)


def map_resources(g: ir.Graph, projs: list[Projection]) -> dict:
    shapes = g.shapes()
    pops = {}
    for name, node in g.nodes.items():
        if isinstance(node, POPULATION_TYPES):
            pops[name] = {"source": node.source, "kind": node.kind, "neurons": math.prod(shapes[name]), "synapses": 0,
                          "synapse_bits": 0, "input_axons": 0, "max_delay": 0}
    axons_seen = set()
    for p in projs:
        syn = g.nodes[p.synapse]
        n = synapse_count(g, syn, shapes)
        r = pops[p.post]
        r["synapses"] += n
        r["synapse_bits"] += n * (L.WEIGHT_BITS + (L.DELAY_BITS if p.delay else 0))
        if (p.pre, p.post, p.delay) not in axons_seen:  # a second synapse group (a weight's low part, another
            axons_seen.add((p.pre, p.post, p.delay))  # exponent) from the same neurons shares their axons
            r["input_axons"] += math.prod(shapes[p.pre])
        r["max_delay"] = max(r["max_delay"], p.delay)
    total = 0
    warnings = []
    for name, r in pops.items():
        by = {"neurons": math.ceil(r["neurons"] / L.NEURONS_PER_CORE),
              "synapse_memory": math.ceil(r["synapse_bits"] / L.SYNAPSE_MEMORY_BITS_PER_CORE)}
        r["cores"] = max(1, *by.values())
        r["limited_by"] = max(by, key=by.get)
        if r["input_axons"] > L.FAN_IN_AXONS_PER_CORE:
            warnings.append({"node": name, "what": "fan-in",
                             "detail": f"{r['input_axons']} input axons per core, Loihi 1 limit "
                                       f"{L.FAN_IN_AXONS_PER_CORE} (Loihi 2 figure unpublished)"})
        total += r["cores"]
    by_source: dict[str, dict] = {}
    for name, r in pops.items():
        s = by_source.setdefault(r["source"], {"populations": 0, "neurons": 0, "synapses": 0, "cores": 0})
        s["populations"] += 1
        s["neurons"] += r["neurons"]
        s["synapses"] += r["synapses"]
        s["cores"] += r["cores"]
    return {"limits": {"neurons_per_core": L.NEURONS_PER_CORE, "synapse_memory_bits_per_core":
                       L.SYNAPSE_MEMORY_BITS_PER_CORE, "fan_in_axons_per_core": L.FAN_IN_AXONS_PER_CORE,
                       "cores_per_chip": L.CORES_PER_CHIP, "max_delay": L.MAX_DELAY, "sources": L.SOURCES},
            "total": {"populations": len(pops), "neurons": sum(r["neurons"] for r in pops.values()),
                      "synapses": sum(r["synapses"] for r in pops.values()), "cores": total,
                      "chips": math.ceil(total / L.CORES_PER_CHIP)},
            "by_source": by_source, "populations": pops, "warnings": warnings}
