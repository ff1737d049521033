"""Spiking self-attention as spike-only synaptic operations (docs/ssa_decompositions.md, section 4, binary form).

Per time step and head, Q, K, V are binary. Either order computes the same integers:
  kv_first:  C[c,e] = sum_j AND(K[j,c], V[j,e])            (0..N),  out[i,e] = sum_c Q[i,c] C[c,e]
  qk_first:  A[i,j] = sum_c AND(Q[i,c], K[j,c])            (0..d),  out[i,e] = sum_j A[i,j] V[j,e]
The integer is written in bits by a threshold cascade, b_k = [x - sum_{m>k} 2^m b_m >= 2^k], and the second
product becomes sum_k 2^k AND(bit_k, binary). AND is a memoryless threshold neuron (input a + b, threshold 1.5).
Every synapse is an AxisSynapse (broadcast or sum with one shared weight), so no (neurons x inputs) matrix is
ever built. All neurons are stateless: nothing carries over between time steps.
"""
from __future__ import annotations

import math

from .. import ir

ORDERS = ("kv_first", "qk_first")


def product_plan(order: str, h: int, d: int, n: int) -> dict:
    """Named axes of each tensor. Token tensors keep their token axis last."""
    sizes = {"h": h, "c": d, "e": d, "i": n, "j": n, "one": 1}
    q, k, v = ("h", "c", "i"), ("h", "c", "j"), ("h", "e", "j")
    if order == "kv_first":
        return dict(sizes=sizes, first=(("k", k), ("v", v)), and1=("h", "c", "e", "j"), count=("h", "c", "e", "one"),
                    max_count=n, second=("q", q), and2=("h", "c", "e", "i"), out=("h", "e", "i"))
    if order == "qk_first":
        return dict(sizes=sizes, first=(("q", q), ("k", k)), and1=("h", "c", "j", "i"), count=("h", "j", "i"),
                    max_count=d, second=("v", v), and2=("h", "e", "j", "i"), out=("h", "e", "i"))
    raise ValueError(f"unknown SSA product order {order!r}; choose one of {ORDERS}")


def num_bits(max_count: int) -> int:
    return max(1, math.ceil(math.log2(max_count + 1)))


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

    and1 = f"{p}.{order}.and"
    syns = [syn(f"{and1}.from_{port}", inputs[port], axes, plan["and1"]) for port, axes in plan["first"]]
    g.add(ir.Threshold(and1, src, threshold=1.5), *syns)

    nb = num_bits(plan["max_count"])
    count = syn(f"{p}.{order}.count", [and1], plan["and1"], plan["count"])
    bits = {}
    for k in reversed(range(nb)):
        inhib = [f"{p}.{order}.bit{m}.inhibit" for m in range(k + 1, nb)]
        bits[k] = g.add(ir.Threshold(f"{p}.{order}.bit{k}", src, threshold=2 ** k - 0.5), count, *inhib)
        if k > 0:
            syn(f"{p}.{order}.bit{k}.inhibit", [bits[k]], plan["count"], plan["count"], -float(2 ** k))

    port2, axes2 = plan["second"]
    second = syn(f"{p}.{order}.{port2}_expand", inputs[port2], axes2, plan["and2"])
    for k in range(nb):
        expand = syn(f"{p}.{order}.bit{k}.expand", [bits[k]], plan["count"], plan["and2"])
        and2 = g.add(ir.Threshold(f"{p}.{order}.bit{k}.and", src, threshold=1.5), expand, second)
        out = syn(f"{p}.{order}.bit{k}.out", [and2], plan["and2"], plan["out"], node.scale * 2 ** k)
        g.edges.extend(ir.Edge(out, e.dst, e.port) for e in consumers)
    g.metadata.setdefault("ssa", {})[p] = {"form": "binary", "order": order, "bits": nb,
                                           "heads": h, "head_dim": D // h, "tokens": N}


def cost(order: str, h: int, d: int, n: int, lower=None) -> dict:
    """Neurons and synapses per time step of one SSA lowering (`lower`, default this module's), counted on a
    scratch graph."""
    g = ir.Graph()
    for name in ("q", "k", "v"):
        g.add(ir.Input(name, shape=(h * d, n)))
    g.add(ir.SSAProduct("ssa", num_heads=h, product_order=order))
    for name in ("q", "k", "v"):
        g.connect(name, "ssa", name)
    g.add(ir.Output("out"), "ssa")
    (lower or lower_one)(g, g.nodes["ssa"], order, g.shapes())
    return count_resources(g)


def count_resources(g: ir.Graph) -> dict:
    shapes = g.shapes()
    neurons = sum(math.prod(shapes[n.name]) for n in g.of_type(ir.Threshold, ir.LIF, ir.GradedNeuron,
                                                                  ir.ProductNeuron, ir.LoihiLIF))
    synapses = 0
    for s in g.of_type(ir.AxisSynapse):
        n_in = math.prod(shapes[s.name]) // s.fan_out * s.fan_in
        synapses += n_in * s.fan_out * sum(1 for e in g.out_edges(s.name))
    return {"neurons": int(neurons), "synapses": int(synapses)}


def choose_order(h: int, d: int, n: int, lower=None) -> tuple[str, dict]:
    costs = {o: cost(o, h, d, n, lower) for o in ORDERS}
    best = min(ORDERS, key=lambda o: (costs[o]["neurons"], costs[o]["synapses"]))
    return best, costs


def lower_all(g: ir.Graph, order: str, lower) -> ir.Graph:
    """Lowers every SSAProduct with `lower` in the requested order (auto: the cheaper), recording both costs."""
    shapes = g.shapes()
    for node in g.of_type(ir.SSAProduct):
        D, N = shapes[g.in_edges(node.name, "q")[0].src]
        best, costs = choose_order(node.num_heads, D // node.num_heads, N, lower)
        lower(g, node, best if order == "auto" else order, shapes)
        g.metadata["ssa"][node.name].update({"requested_order": order, "cost_per_step": costs,
                                             "model_product_order": node.product_order})
    return g


def run(g: ir.Graph, order: str = "auto") -> ir.Graph:
    return lower_all(g, order, lower_one)
