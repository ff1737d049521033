"""Fused execution of a lowered SSA block.

The lowered SSA (binary bit cascade or graded product, either order) is hundreds of thousands of memoryless
neurons whose combined effect on the attention LIF is, per head, the integer Z = Q K^T V split by bits.
`fuse_ssa(graph)` replaces each lowered SSA subgraph by one `FusedSSA` node that computes the same synaptic
input to the attention LIF directly with integer matmuls:
  binary:  sum_k shift_k(m_k * (Q @ bit_k(K^T V)))      (kv_first; qk_first: bit_k(Q K^T) @ V)
  graded:  shift(m * (Q @ (K^T V)))                      (qk_first: (Q K^T) @ V)
where m_k, shift_k are the out-synapses' weights and exponents (float weights in float mode). This is
bit-identical to the node-by-node execution because every threshold neuron of the lowering is exact on its
integer input range (the quantiser checks that range); tests/test_fused.py checks it spike for spike.
The fused node is for simulation only and is never exported."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from convert import ir


@dataclass(eq=False)
class FusedSSA(ir.Node):
    num_heads: int = 1
    order: str = "kv_first"
    form: str = "binary"
    bits: int = 0
    out_weights: list = field(default_factory=list)  # per bit (binary) or one (graded): (weight, weight_exp)
    ports: ClassVar[tuple[str, ...]] = ("q", "k", "v")

    def out_shape(self, in_shapes):
        return in_shapes["q"]


def _shift(y, e):
    if e >= 0:
        return y * (2.0 ** e)
    return torch.floor(y / (2.0 ** -e))


def run_fused(node: FusedSSA, q, k, v, fixed: bool) -> torch.Tensor:
    if fixed:  # integer products: float64 keeps them exact whatever the operands' dtype (spikes may be float32)
        q, k, v = q.double(), k.double(), v.double()
    B, D, N = q.shape
    h = node.num_heads
    Q, K, V = (t.reshape(B, h, D // h, N).transpose(-1, -2) for t in (q, k, v))  # [B, h, N, d]
    first = K.transpose(-2, -1) @ V if node.order == "kv_first" else Q @ K.transpose(-2, -1)
    out = torch.zeros(B, h, N, D // h, dtype=q.dtype, device=q.device)
    if node.form == "graded":
        parts = [(first, node.out_weights[0])]
    else:
        ints = first.to(torch.int64)
        parts = [(((ints >> b) & 1).to(q.dtype), node.out_weights[b]) for b in range(node.bits)]
    for mat, (w, e) in parts:
        z = Q @ mat if node.order == "kv_first" else mat @ V
        out = out + (_shift(z * w, e) if fixed else z * w * (2.0 ** e))
    return out.transpose(-1, -2).reshape(B, D, N)


F32_EXACT = 2 ** 24


def run_fused_fixed(node: FusedSSA, q, k, v) -> torch.Tensor:
    """run_fused in fixed point for spikes q, k, v (0/1), in float32 where the integers provably stay below
    2**24 (else run_fused): bit-identical to it. Binary form: the bits whose out-synapse has no right shift (weight_exp >= 0) add
    w 2**e (Q @ bit_b) exactly, i.e. Q @ M with one integer matrix M = sum_b w_b 2**e_b bit_b (one product for
    all of them; when the weights are w_0 2**b, as the lowering makes them, M = w_0 (first mod 2**bits)); the
    others are floored bit by bit, as run_fused does."""
    B, D, N = q.shape
    h = node.num_heads
    d = D // h
    kv = node.order == "kv_first"
    inner = N if kv else d  # first = K^T V ([d, d], entries <= N) or Q K^T ([N, N], entries <= d)
    outer = d if kv else N  # the second product sums this many terms
    if node.form == "graded":
        w, e = node.out_weights[0]
        bound = abs(w) * 2.0 ** max(e, 0) * outer * inner
    else:
        lin = [b for b in range(node.bits) if node.out_weights[b][1] >= 0]
        bound = outer * (sum(abs(w) * 2.0 ** e for w, e in (node.out_weights[b] for b in lin))
                         + sum(abs(node.out_weights[b][0]) for b in range(node.bits) if b not in lin))
    if bound + node.bits >= F32_EXACT or inner >= F32_EXACT or any(w != round(w) for w, _ in node.out_weights):
        return run_fused(node, q, k, v, True)
    Q, K, V = (t.to(torch.float32).reshape(B, h, d, N).transpose(-1, -2) for t in (q, k, v))  # [B, h, N, d]
    first = K.transpose(-2, -1) @ V if kv else Q @ K.transpose(-2, -1)

    def second(mat):
        return Q @ mat if kv else mat @ V

    if node.form == "graded":
        w, e = node.out_weights[0]
        z = second(first) * w
        out = z * 2.0 ** e if e >= 0 else (z * 2.0 ** e).floor_()  # exact: power-of-two scaling
    else:
        ints = first.to(torch.int32)
        out = None
        if lin:
            w0, e0 = node.out_weights[0]
            if lin == list(range(node.bits)) and all(
                    w * 2.0 ** e == w0 * 2.0 ** (e0 + b) for b, (w, e) in enumerate(node.out_weights)):
                m = (ints & (2 ** node.bits - 1)).to(torch.float32) * (w0 * 2.0 ** e0)
            else:
                m = sum(((ints >> b) & 1).to(torch.float32) * (node.out_weights[b][0] * 2.0 ** node.out_weights[b][1])
                        for b in lin)
            out = second(m)
        for b in range(node.bits):
            if b in lin:
                continue
            w, e = node.out_weights[b]
            z = (second(((ints >> b) & 1).to(torch.float32)) * w * 2.0 ** e).floor_()
            out = z if out is None else out + z
        if out is None:
            out = torch.zeros(B, h, N, d)
    return out.transpose(-1, -2).reshape(B, D, N)


def fuse_ssa(g: ir.Graph) -> ir.Graph:
    """A copy of `g` with every lowered SSA replaced by a FusedSSA node (graph metadata `ssa` names them)."""
    g = g.copy()
    for name, info in g.metadata.get("ssa", {}).items():
        prefix = f"{name}.{info['order']}."
        internal = [n for n in g.nodes if n.startswith(prefix)]
        if not internal:
            continue
        if info["form"] == "graded":
            outs = [f"{prefix}out"]
        else:
            outs = [f"{prefix}bit{b}.out" for b in range(info["bits"])]
        consumers = {(e.dst, e.port) for o in outs for e in g.out_edges(o)}
        weights = [(float(g.nodes[o].weight), int(g.nodes[o].weight_exp)) for o in outs]
        srcs = _operand_sources(g, prefix, info)
        for n in internal:
            g.remove(n)
        node = FusedSSA(f"{name}.fused", name, num_heads=info["heads"],
                        order=info["order"], form=info["form"], bits=info.get("bits", 0), out_weights=weights)
        g.add(node)
        for port in ("q", "k", "v"):
            g.connect(srcs[port], node.name, port)
        for dst, port in consumers:
            g.connect(node.name, dst, port)
    return g


def _operand_sources(g: ir.Graph, prefix: str, info: dict) -> dict:
    """Which outside node feeds q, k and v, read from the names of the lowering's input synapses."""
    def src_of(syn):
        return [e.src for e in g.in_edges(syn)][0]

    o = info["order"]
    first = {"kv_first": ("k", "v"), "qk_first": ("q", "k")}[o]
    second = {"kv_first": "q", "qk_first": "v"}[o]
    out = {p: src_of(f"{prefix}and.from_{p}") for p in first}
    out[second] = src_of(f"{prefix}{second}_expand")
    return out
