"""One simulator engine for IR graphs. Mode "float" runs reference semantics (the PyTorch model's arithmetic,
float64 by default so lowering passes can be checked for exactness); the Loihi fixed-point mode lives beside it
and runs the same graph walk with integer kernels."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from convert import ir

from . import fixed_point, fused, kernels


@dataclass
class SimResult:
    outputs: dict[str, torch.Tensor]  # output node -> value at the last step [B, ...]
    records: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> [T, B, ...]
    T: int = 0


def _select(graph: ir.Graph, record) -> set[str]:
    if record is None:
        return set()
    if record == "all":
        return set(graph.nodes)
    if record == "spiking":
        return {n for n, node in graph.nodes.items() if node.spiking}
    return set(record)


class Engine:
    def __init__(self, graph: ir.Graph, dtype: torch.dtype = torch.float64, device: str = "cpu",
                 fuse_ssa: bool = False):
        """`fuse_ssa` runs each lowered SSA as one fused integer kernel (bit-identical, much faster); the
        SSA's internal neurons are then not recorded."""
        if fuse_ssa:
            graph = fused.fuse_ssa(graph)
        graph.validate()
        self.graph = graph
        self.dtype = dtype
        self.device = device
        self.order = graph.topo_order()
        self.in_edges = {n: {p: [e.src for e in graph.in_edges(n, p)] for p in graph.nodes[n].ports}
                         for n in self.order}
        self.pc = kernels.ParamCache()
        self.fixed = graph.metadata.get("numeric") == "loihi_fixed"
        self.input_scale = int(graph.metadata.get("input_payload_scale", 255))
        self.last_state: dict = {}
        self.f32 = fixed_point.float32_exact_synapses(graph, self.input_scale) if self.fixed else set()

    def run(self, images: torch.Tensor, T: int | None = None, record=None, extra_steps: int = 0) -> SimResult:
        """images [B, C, H, W] (direct encoding: the same analog input at every step)."""
        T = int(T or self.graph.metadata.get("T", 1))
        rec = _select(self.graph, record)
        x_in = images.to(self.device, self.dtype)
        if self.fixed:
            x_in = fixed_point.encode_input(x_in, self.input_scale)
        state = {n: {} for n in self.order}
        records = {n: [] for n in rec}
        last = {}
        with torch.no_grad():
            for t in range(T + extra_steps):
                vals: dict[str, torch.Tensor] = {}
                for name in self.order:
                    node = self.graph.nodes[name]
                    if isinstance(node, ir.Input):
                        vals[name] = x_in if t < T else torch.zeros_like(x_in)
                    else:
                        inp = {}
                        for port, srcs in self.in_edges[name].items():
                            acc = vals[srcs[0]]
                            for s in srcs[1:]:
                                acc = acc + vals[s]
                            inp[port] = acc
                        if isinstance(node, fused.FusedSSA):
                            vals[name] = fused.run_fused(node, inp["q"], inp["k"], inp["v"], self.fixed)
                        elif self.fixed:
                            vals[name] = fixed_point.step(node, inp, state[name], self.pc, t, self.input_scale,
                                                            name in self.f32)
                        else:
                            vals[name] = kernels.step(node, inp, state[name], self.pc, t)
                    if name in records:
                        records[name].append(vals[name])
                last = {n: vals[n] for n in self.graph.outputs()}
        self.last_state = state
        return SimResult(outputs=last, records={n: torch.stack(v) for n, v in records.items()}, T=T)
