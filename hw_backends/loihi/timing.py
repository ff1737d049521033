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

from dataclasses import dataclass

from convert import ir

from . import limits as L


@dataclass(frozen=True)
class Projection:
    pre: str        # a population (LoihiLIF) or the Input
    synapse: str    # the synapse node
    post: str       # a population
    via: tuple      # layout nodes (Flatten) between pre and the synapse
    delay: int = 0  # extra delay beyond the one step of the hop
    port: str = "in"  # the post population's input port (ProductNeuron has in1, in2)


POPULATION_TYPES = (ir.LoihiLIF, ir.GradedNeuron, ir.ProductNeuron)


def _is_pop(node) -> bool:
    return isinstance(node, POPULATION_TYPES + (ir.Input,))


def projections(g: ir.Graph) -> list[Projection]:
    out = []
    for syn in g.nodes.values():
        if not syn.is_synapse:
            continue
        pres = []
        for e in g.in_edges(syn.name):
            via, src = [], e.src
            while isinstance(g.nodes[src], ir.Flatten):
                via.append(src)
                src = g.in_edges(src)[0].src
            if not _is_pop(g.nodes[src]):
                raise ir.IRValidationError(f"{syn.name}: input {src} is not a neuron population")
            pres.append((src, tuple(reversed(via))))
        for e in g.out_edges(syn.name):
            if not isinstance(g.nodes[e.dst], POPULATION_TYPES):
                raise ir.IRValidationError(f"{syn.name}: feeds {e.dst} ({g.nodes[e.dst].kind}), not a population")
            out.extend(Projection(p, syn.name, e.dst, via, 0, e.port) for p, via in pres)
    return out


def schedule(g: ir.Graph) -> dict:
    """Depth of every population and the delay of every projection."""
    projs = projections(g)
    into: dict[str, list[Projection]] = {}
    for p in projs:
        into.setdefault(p.post, []).append(p)
    depth = {}
    for name in g.topo_order():
        node = g.nodes[name]
        if isinstance(node, ir.Input):
            depth[name] = 0
        elif isinstance(node, POPULATION_TYPES):
            if name not in into:
                raise ir.IRValidationError(f"{name}: population without input")
            depth[name] = max(depth[p.pre] + 1 for p in into[name])
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
