"""Spiking self-attention with graded spikes (Loihi 2), exact (docs/ssa_decompositions.md, section 4, graded form).

The first product is the same AND layer as the binary form; its count (an integer, 0..N or 0..d) travels as
the payload of a graded spike; a product neuron multiplies it by the binary third operand; the attention LIF
sums the products with weight `scale`. Costs about N d d AND + N d d product neurons per head (kv_first),
no bit cascade. Graded nodes are memoryless: nothing carries over between time steps.
"""
from __future__ import annotations

from .. import ir
from . import ssa_binary
from .ssa_binary import product_plan


def lower_one(g: ir.Graph, node: ir.SSAProduct, order: str, shapes: dict) -> None:
    D, N = shapes[g.in_edges(node.name, "q")[0].src]
    h = node.num_heads
    plan = product_plan(order, h, D // h, N)
    sizes, p, src = plan["sizes"], node.name, node.source
    inputs = {port: [e.src for e in g.in_edges(node.name, port)] for port in ("q", "k", "v")}
    consumers = g.out_edges(node.name)
    g.remove(node.name)

    def syn(name, srcs, in_axes, out_axes, w=1.0):
        return g.add(ir.AxisSynapse(name, src, in_axes=in_axes, out_axes=out_axes, sizes=sizes, weight=w), *srcs)

    base = f"{p}.{order}"
    syns = [syn(f"{base}.and.from_{port}", inputs[port], axes, plan["and1"]) for port, axes in plan["first"]]
    g.add(ir.Threshold(f"{base}.and", src, threshold=1.5), *syns)
    count_syn = syn(f"{base}.count.synapses", [f"{base}.and"], plan["and1"], plan["count"])
    g.add(ir.GradedNeuron(f"{base}.count", src, vth=0.0), count_syn)
    prod = g.add(ir.ProductNeuron(f"{base}.product", src, exp=0, vth=0.0))
    g.connect(syn(f"{base}.count.expand", [f"{base}.count"], plan["count"], plan["and2"]), prod, "in1")
    port2, axes2 = plan["second"]
    g.connect(syn(f"{base}.{port2}_expand", inputs[port2], axes2, plan["and2"]), prod, "in2")
    out = syn(f"{base}.out", [prod], plan["and2"], plan["out"], node.scale)
    g.edges.extend(ir.Edge(out, e.dst, e.port) for e in consumers)
    g.metadata.setdefault("ssa", {})[p] = {"form": "graded", "order": order, "heads": h, "head_dim": D // h,
                                           "tokens": N, "max_payload": plan["max_count"]}


def cost(order: str, h: int, d: int, n: int) -> dict:
    return ssa_binary.cost(order, h, d, n, lower_one)


def run(g: ir.Graph, order: str = "auto") -> ir.Graph:
    return ssa_binary.lower_all(g, order, lower_one)
