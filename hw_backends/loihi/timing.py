"""Hardware timing of a quantised graph on Loihi.

On chip every synapse hop costs one time step (lava's Dense/Sparse send the previous step's result). A neuron
population's depth is the step at which its first logical input arrives; where paths of different length meet
(residual streams, the SSA bit cascade, Q meeting the bits of K^T V, the head reading every stream) the shorter
projections get synaptic delays so that every input of a population belongs to the same logical step.

Pipeline fill: before its depth a population receives no input, but a constant bias would still charge it.
Every population is therefore reset at its own depth (lava's LIFReset every sample period, with
reset_offset = depth + 1 because lava's time_step counts from 1: verified in tests/test_lava_crosscheck.py):
whatever the bias did during the fill is wiped in the step the first real input arrives. A spike
emitted during the fill reaches its consumers no later than their own depth, where they are reset too (the
consumer's depth is at least the producer's depth + 1 + delay), so fill activity never reaches logical time.
The same reset with period T + max depth + 1 resets every state between samples.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass

import numpy as np

from convert import ir

from hardware.loihi import limits as L


@dataclass(frozen=True)
class Projection:
    pre: str        # a population (LoihiLIF) or the Input
    synapse: str    # the synapse node
    post: str       # a population
    via: tuple      # layout nodes (Flatten) between pre and the synapse
    delay: int = 0  # extra delay beyond the one step of the hop
    port: str = "in"  # the post population's input port (ProductNeuron has in1, in2)


def _is_pop(node) -> bool:
    return node.is_population or isinstance(node, (ir.Input, ir.BiasSource))


def projections(g: ir.Graph) -> list[Projection]:
    out = []
    for syn in g.nodes.values():
        if not syn.is_synapse:
            continue
        pres = []
        for e in g.in_edges(syn.name):
            via, src = [], e.src
            while isinstance(g.nodes[src], ir.VIEW_TYPES):
                via.append(src)
                src = g.in_edges(src)[0].src
            if not _is_pop(g.nodes[src]):
                raise ir.IRValidationError(f"{syn.name}: input {src} is not a neuron population")
            pres.append((src, tuple(reversed(via))))
        for e in g.out_edges(syn.name):
            if not g.nodes[e.dst].is_population:
                raise ir.IRValidationError(f"{syn.name}: feeds {e.dst} ({g.nodes[e.dst].kind}), not a population")
            out.extend(Projection(p, syn.name, e.dst, via, 0, e.port) for p, via in pres)
    return out


def _depths(g: ir.Graph, projs: list[Projection]) -> dict[str, int]:
    into: dict[str, list[Projection]] = {}
    for p in projs:
        into.setdefault(p.post, []).append(p)
    depth = {}
    for name in g.topo_order():
        node = g.nodes[name]
        if isinstance(node, (ir.Input, ir.BiasSource)):
            depth[name] = 0
        elif node.is_population:
            if name not in into:
                raise ir.IRValidationError(f"{name}: population without input")
            depth[name] = max(depth[p.pre] + 1 for p in into[name]) + getattr(node, "input_delay", 0)
    return depth


def insert_delay_relays(g: ir.Graph) -> dict:
    """Where a projection needs more delay than a synapse can hold (6 bits), its spikes travel through a chain
    of relay populations shared by every consumer of the same stream: relay k copies the stream with
    depth(pre) + 64 k (one hop plus the full 63-step delay each). A relay is a memoryless threshold neuron
    (weights 2, dv = du = 4095, vth = 1: fires iff its one input spiked), so it is an exact copy."""
    projs = projections(g)
    depth = _depths(g, projs)
    chains: dict[str, list[str]] = {}
    hop = L.MAX_DELAY + 1
    shapes = g.shapes()
    for p in projs:
        d = depth[p.post] - depth[p.pre] - 1
        if d <= L.MAX_DELAY:
            continue
        pre = g.nodes[p.pre]
        if not (isinstance(pre, ir.LoihiLIF) and not pre.is_readout):
            raise L.LoihiLimitError(f"{p.synapse} ({p.pre} -> {p.post})", "synaptic delay (6 bit), and the "
                                    "source is not a spiking population that a relay can copy", d, L.MAX_DELAY)
        if len({e.dst for e in g.out_edges(p.synapse)}) > 1:
            raise L.LoihiLimitError(f"{p.synapse} ({p.pre} -> {p.post})", "synaptic delay (6 bit) on a synapse "
                                    "shared by several populations", d, L.MAX_DELAY)
        k = -(-(d - L.MAX_DELAY) // hop)
        chain = chains.setdefault(p.pre, [])
        while len(chain) < k:
            src = chain[-1] if chain else p.pre
            shape = shapes[p.pre]
            name = f"{p.pre}.relay{len(chain) + 1}"
            c = shape[0]
            w = np.full((c, 1) + (1,) * (len(shape) - 1), 2.0)
            syn = (ir.Conv2d(f"{name}.synapses", pre.source, weight=w, groups=c) if len(shape) == 3 else
                   ir.Conv1d(f"{name}.synapses", pre.source, weight=w, groups=c))
            g.add(syn, src)
            g.add(ir.LoihiLIF(name, pre.source, du=4095, dv=4095, vth=1, input_delay=L.MAX_DELAY), syn.name)
            chain.append(name)
        relay = chain[k - 1]
        src = relay
        if p.via:  # a view may be shared with consumers that need no relay: the relayed stream gets its own
            if len(p.via) != 1:
                raise ir.IRValidationError(f"{p.synapse}: more than one layout node between {p.pre} and it")
            view = g.nodes[p.via[0]]
            src = f"{relay}.tokens" if isinstance(view, ir.Flatten) else f"{relay}.{p.via[0]}"
            if src not in g.nodes:
                g.add(dataclasses.replace(view, name=src, source=pre.source), relay)
        last = p.via[-1] if p.via else p.pre
        for e in [e for e in g.in_edges(p.synapse) if e.src == last]:
            g.edges.remove(e)
            g.connect(src, p.synapse, e.port)
    relays = [r for chain in chains.values() for r in chain]
    if relays:
        g.metadata["delay_relays"] = {pre: chain for pre, chain in chains.items()}
    return {"relay_populations": len(relays), "relay_neurons": sum(int(np.prod(shapes[p])) * len(c)
                                                                   for p, c in chains.items())}


def schedule(g: ir.Graph) -> dict:
    """Depth of every population and the delay of every projection."""
    projs = projections(g)
    depth = _depths(g, projs)
    timed = []
    for p in projs:
        d = depth[p.post] - depth[p.pre] - 1
        if d > L.MAX_DELAY:
            raise L.LoihiLimitError(f"{p.synapse} ({p.pre} -> {p.post})", "synaptic delay (6 bit)", d, L.MAX_DELAY)
        timed.append(Projection(p.pre, p.synapse, p.post, p.via, d, p.port))
    max_depth = max(depth.values())
    T = int(g.metadata.get("T", 1))
    return {"depth": depth, "projections": timed, "max_depth": max_depth, "T": T,
            "sample_period": T + max_depth + 1,
            "reset": "each population resets at step depth (mod sample_period, steps from 0): LIFReset("
                     "reset_interval=sample_period, reset_offset=depth + 1) (lava's time_step starts at 1)"}


def timing_report(sched: dict) -> dict:
    delayed = [p for p in sched["projections"] if p.delay]
    return {"max_depth": sched["max_depth"], "T": sched["T"], "sample_period": sched["sample_period"],
            "steps_per_sample": sched["sample_period"], "projections": len(sched["projections"]),
            "delayed_projections": len(delayed), "max_delay": max((p.delay for p in delayed), default=0),
            "depth": dict(sorted(sched["depth"].items(), key=lambda kv: kv[1])), "reset": sched["reset"]}
