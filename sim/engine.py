"""One simulator engine for IR graphs, with two numeric modes that the caller states (a Build says which its graph
needs: hw_backends.conversion.Build.runnable): "float" runs reference semantics (the PyTorch model's arithmetic,
float64 by default so lowering passes can be checked for exactness); "loihi_fixed" runs the same graph walk
with Loihi's integer kernels (sim.fixed_point)."""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from convert import ir, kernels
from ground.errors import UserError
from hw_backends.loihi.numerics import encode_input

from . import fixed_point, fused, weight_parts

NUMERICS = ("float", "loihi_fixed")


class InputError(UserError, ValueError):
    """Images the network cannot take (wrong shape, NaN/Inf); names the expected shape."""


class InputRangeWarning(UserWarning):
    """Input values outside [0, 1] were clipped by the graded input encoding (fixed-point mode)."""


@dataclass
class SimResult:
    outputs: dict[str, torch.Tensor]  # output node -> value at the last step [B, ...]
    records: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> [T, B, ...]
    T: int = 0


def input_per_step(graph: ir.Graph) -> bool:
    """True when the graph takes one input frame per time step (event input: images [B, T, C, H, W]); else one
    image [B, C, H, W] drives every step."""
    return bool(graph.metadata.get("input_per_step", False))


def check_images(graph: ir.Graph, images, fixed: bool = False, warn: bool = True) -> None:
    """Raises InputError unless `images` is a [B, *input shape] tensor of finite values ([B, T, *input shape]
    for a graph with metadata["input_per_step"]); with `fixed` (Loihi fixed point) and `warn`, warns
    (InputRangeWarning) when image values outside [0, 1] will be clipped by the graded input encoding (float mode
    takes any value, as the PyTorch reference does; event counts are not limited to [0, 1]: their encoding clips
    only at the payload's range, which the quantiser records)."""
    shape = tuple(int(s) for s in graph.nodes[graph.inputs()[0]].shape)
    axes = "(batch, channels, height, width)"
    if input_per_step(graph):
        shape = (int(graph.metadata.get("T", 1)), *shape)
        axes = "(batch, time steps, channels, height, width)"
    want = f"[B, {', '.join(str(s) for s in shape)}]"
    if not isinstance(images, torch.Tensor):
        raise InputError(f"input images must be a tensor {want}, got {type(images).__name__}")
    if images.dim() != len(shape) + 1 or tuple(images.shape[1:]) != shape:
        raise InputError(f"input images have shape {list(images.shape)}; this network expects {want} {axes}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise InputError(f"input images hold {int((~torch.isfinite(images)).sum())} NaN/infinite values")
    if fixed and graph.metadata.get("input_binary") and images.numel() and float(images.max()) > 1:
        raise InputError(f"this network takes binary event frames (its training data held counts 0/1 only, so its "
                         f"input is binary spikes on chip); these frames hold counts up to {float(images.max()):g}")
    if fixed and warn and images.numel() and not input_per_step(graph):
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            n = int(((images < 0) | (images > 1)).sum())
            warnings.warn(InputRangeWarning(
                f"{n} of {images.numel()} input values lie outside [0, 1] (min {lo:g}, max {hi:g}); the graded "
                f"input encoding clips them to [0, 1]"), stacklevel=3)


def _select(graph: ir.Graph, record) -> set[str]:
    if record is None:
        return set()
    if record == "all":
        return set(graph.nodes)
    if record == "spiking":
        return {n for n, node in graph.nodes.items() if node.spiking}
    return set(record)


class Engine:
    def __init__(self, graph: ir.Graph, numeric: str = "float", dtype: torch.dtype = torch.float64,
                 device: str = "cpu", fuse_ssa: bool = False, float32_shortcuts: bool = True):
        """`numeric`: "float" (reference semantics) or "loihi_fixed" (a quantised graph in Loihi's arithmetic).
        `fuse_ssa` runs each lowered SSA as one fused integer kernel and the two synapse groups of a 16-bit
        weight as one (both bit-identical, much faster); the SSA's internal neurons are then not recorded.
        `float32_shortcuts` (fixed point): integer sums and LIF states that provably stay below 2**24 run in
        float32 (exact, about twice as fast on CPU); off, everything runs in float64 (tests compare the two)."""
        if numeric not in NUMERICS:
            raise ValueError(f"unknown numeric mode {numeric!r}; one of {NUMERICS}")
        wrong = graph.of_type(ir.LoihiLIF) if numeric == "float" else graph.of_type(ir.LIF, ir.Threshold, ir.Integrator)
        if wrong:
            other = "loihi_fixed" if numeric == "float" else "float"
            raise ValueError(f"numeric {numeric!r} does not fit this graph ({wrong[0].name} is {wrong[0].kind}); "
                             f"run it with numeric {other!r}")
        if fuse_ssa:
            graph = fused.fuse_ssa(graph)
            graph = weight_parts.fuse_weight_parts(graph)
        graph.validate()
        if str(device).startswith("cuda"):
            # TF32 keeps 10 mantissa bits in cuDNN convolutions and matmuls: exact integers above 2**11 would be
            # rounded. With it off, every sum of the fixed-point mode is exact in any order (docs/architecture.md)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.graph = graph
        self.dtype = dtype
        self.device = device
        self.order = graph.topo_order()
        self.in_edges = {n: {p: [e.src for e in graph.in_edges(n, p)] for p in graph.nodes[n].ports}
                         for n in self.order}
        self.pc = kernels.ParamCache()
        self.numeric = numeric
        self.fixed = numeric == "loihi_fixed"
        self.input_scale = int(graph.metadata.get("input_payload_scale", 255))
        self.last_state: dict = {}
        plan = fixed_point.precision_plan(graph, self.input_scale) if self.fixed else None
        f32 = plan is not None and float32_shortcuts
        self.f32 = plan.f32_sums if f32 else frozenset()
        self.f32_out = plan.f32_outputs if f32 else frozenset()
        self.lif_safe = plan.lif_safe if plan else {}
        # On chip every stream into a synapse group is its own projection, shifted by weight_exp on its own;
        # with a right shift (floor) that differs from shifting the sum, so such synapses run stream by stream.
        self.per_stream = {n for n, node in graph.nodes.items()
                           if self.fixed and node.is_synapse and len(self.in_edges.get(n, {}).get("in", [])) > 1
                           and np.min(node.weight_exp) < 0}

    def check_input(self, images) -> None:
        check_images(self.graph, images, self.fixed)

    def run(self, images: torch.Tensor, T: int | None = None, record=None, extra_steps: int = 0) -> SimResult:
        """images [B, C, H, W] (direct encoding: the same analog input at every step), or [B, T, C, H, W] for a
        graph with metadata["input_per_step"] (event frames: images[:, t] at step t). After the input (steps
        beyond its T, `extra_steps`) the input is zero."""
        T = int(T or self.graph.metadata.get("T", 1))
        rec = _select(self.graph, record)
        self.check_input(images)
        per_step = input_per_step(self.graph)
        if per_step and T > images.shape[1]:
            raise InputError(f"{T} time steps asked of an input with {images.shape[1]} frames")
        x_in = images.to(self.device, self.dtype)
        if self.fixed:
            x_in = encode_input(x_in, self.input_scale, counts=per_step)  # as hw_backends.loihi.lava_run
        zeros = torch.zeros_like(x_in[:, 0] if per_step else x_in)
        state = {n: {} for n in self.order}
        records = {n: [] for n in rec}
        last = {}
        with torch.no_grad():
            for t in range(T + extra_steps):
                vals: dict[str, torch.Tensor] = {}
                for name in self.order:
                    node = self.graph.nodes[name]
                    if isinstance(node, ir.Input):
                        vals[name] = zeros if t >= T else x_in[:, t] if per_step else x_in
                    else:
                        inp = {}
                        for port, srcs in self.in_edges[name].items():
                            acc = vals[srcs[0]]
                            for s in srcs[1:]:
                                acc = acc + vals[s]
                            inp[port] = acc
                        if name in self.per_stream:  # each stream shifted on its own, all in one batched call
                            streams = [vals[s] for s in self.in_edges[name]["in"]]
                            dt = functools.reduce(torch.promote_types, [v.dtype for v in streams])
                            y = fixed_point.step(node, {"in": torch.cat([v.to(dt) for v in streams])}, state[name],
                                                 self.pc, t, self.input_scale, name in self.f32)
                            vals[name] = y.view(len(streams), -1, *y.shape[1:]).sum(0)
                        elif isinstance(node, fused.FusedSSA):
                            vals[name] = fused.run_fused(node, inp["q"], inp["k"], inp["v"], self.fixed)
                        elif self.fixed:
                            vals[name] = fixed_point.step(node, inp, state[name], self.pc, t, self.input_scale,
                                                            name in self.f32, self.lif_safe.get(name),
                                                            name in self.f32_out)
                        else:
                            vals[name] = kernels.step(node, inp, state[name], self.pc, t)
                    if name in records:
                        records[name].append(vals[name])
                last = {n: vals[n] for n in self.graph.outputs()}
        self.last_state = state
        return SimResult(outputs=last, records={n: torch.stack(v) for n, v in records.items()}, T=T)
