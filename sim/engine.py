"""One simulator engine for IR graphs, with two numeric modes that the caller states (a Build says which its graph
needs: hw_backends.conversion.Build.runnable): "float" runs reference semantics (the PyTorch model's arithmetic,
float64 by default so lowering passes can be checked for exactness); "loihi_fixed" runs the same graph walk
with Loihi's integer kernels (sim.fixed_point)."""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from convert import ir, kernels
from ground.errors import UserError
from hardware.loihi.numerics import encode_input

from . import fixed_point, fused, weight_parts
from . import int8 as int8_kernels

NUMERICS = ("float", "loihi_fixed")
F32_EXACT = 2 ** 24


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


def _input_highs(g: ir.Graph, in_edges: dict, input_scale: int, per_stream: set) -> tuple[dict, dict]:
    """Per synapse whose input is provably non-negative (spikes, the input payload, their sums): an upper bound
    of that input (of each stream, for a synapse that shifts stream by stream); and per node whose output is
    provably non-negative, an upper bound of it. The int8 kernels then need not check the input's range."""
    rng: dict[str, float | None] = {}
    out = {}
    for name in g.topo_order():
        node = g.nodes[name]
        ports = in_edges.get(name, {})
        ins = [rng.get(s) for s in ports.get("in", [])]
        known = bool(ins) and all(r is not None for r in ins)
        if node.is_synapse and known:
            out[name] = max(ins) if name in per_stream else sum(ins)
        if isinstance(node, ir.Input):
            rng[name] = None if g.metadata.get("input_per_step") else float(input_scale)
        elif isinstance(node, ir.LoihiLIF) and not node.readout:
            rng[name] = 1.0
        elif (isinstance(node, ir.VIEW_TYPES) or isinstance(node, ir.GradedNeuron) and node.vth < 1
              or fixed_point.channel_scale_identity(node)) and known:  # (their outputs are their inputs)
            rng[name] = sum(ins)
        else:
            rng[name] = None
    return out, {n: r for n, r in rng.items() if r is not None}


CHUNK_ELEMENTS = 1 << 20  # per-stream synapses: outputs computed this many elements at a time


class _Pool:
    """The layer schedule's own large buffers (spikes, sums, uint8 copies), reused across layers and runs
    instead of fresh allocations each time (each of which costs the first touch of every page, a large part
    of the run time). A buffer goes back to the pool when the engine drops the value it holds and no live value
    shares its storage (views); buffers still held at the end of a run (records, outputs) are the caller's."""
    MIN_BYTES = 1 << 20

    def __init__(self):
        self.free: dict = {}  # (bytes, device) -> flat uint8 buffers
        self.lent: dict = {}  # storage address -> flat buffer, this run

    def empty(self, shape, dtype, device, like: torch.Tensor | None = None) -> torch.Tensor:
        """An empty tensor of `shape`; with `like` (same shape), its dims in like's memory order."""
        p = list(range(len(shape)))
        if like is not None:
            p = [0] + sorted(range(1, like.dim()), key=lambda d: -like.stride(d))
        mem = [shape[d] for d in p]
        nbytes = math.prod(mem) * torch.empty((), dtype=dtype).element_size()
        if nbytes < self.MIN_BYTES or torch.device(device).type != "cpu":
            t = torch.empty(mem, dtype=dtype, device=device)
        else:
            bucket = self.free.get((nbytes, str(device)))
            flat = bucket.pop() if bucket else torch.empty(nbytes, dtype=torch.uint8, device=device)
            self.lent[flat.data_ptr()] = flat
            t = flat.view(dtype).view(mem)
        return t.permute([p.index(d) for d in range(len(shape))])

    def release(self, t: torch.Tensor, live) -> None:
        ptr = t.untyped_storage().data_ptr()
        flat = self.lent.get(ptr)
        if flat is None or any(v.untyped_storage().data_ptr() == ptr for v in live):
            return
        del self.lent[ptr]
        self.free.setdefault((flat.numel(), str(flat.device)), []).append(flat)

    def end_run(self) -> None:
        self.lent.clear()


class Engine:
    def __init__(self, graph: ir.Graph, numeric: str = "float", dtype: torch.dtype = torch.float64,
                 device: str = "cpu", fuse_ssa: bool = False, float32_shortcuts: bool = True, int8: bool = True):
        """`numeric`: "float" (reference semantics) or "loihi_fixed" (a quantised graph in Loihi's arithmetic).
        `fuse_ssa` runs each lowered SSA as one fused integer kernel and (without the int8 kernels) the two
        synapse groups of a 16-bit weight as one (both bit-identical, much faster); the SSA's internal neurons
        are then not recorded.
        `float32_shortcuts` (fixed point): integer sums and LIF states that provably stay below 2**24 run in
        float32 (exact, about twice as fast on CPU); off, everything runs in float64 (tests compare the two).
        `int8` (fixed point, CPU): synapse sums run on oneDNN's exact int8 kernels where they exist and are
        exact (sim.int8: 8-bit mantissas, inputs in [0, 255], sums below 2**24), the float kernels elsewhere."""
        if numeric not in NUMERICS:
            raise ValueError(f"unknown numeric mode {numeric!r}; one of {NUMERICS}")
        wrong = graph.of_type(ir.LoihiLIF) if numeric == "float" else graph.of_type(ir.LIF, ir.Threshold, ir.Integrator)
        if wrong:
            other = "loihi_fixed" if numeric == "float" else "float"
            raise ValueError(f"numeric {numeric!r} does not fit this graph ({wrong[0].name} is {wrong[0].kind}); "
                             f"run it with numeric {other!r}")
        use_int8 = (int8 and numeric == "loihi_fixed" and torch.device(device).type == "cpu"
                    and int8_kernels.available())
        if fuse_ssa:
            graph = fused.fuse_ssa(graph)
            if not use_int8:  # the int8 kernels take the two 8-bit groups as they are (the sum needs 16 bits)
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
        # the sum of the streams' shifted outputs (each within 1 of its share of the bound) stays float32 too
        self.f32_stream = frozenset(n for n in self.per_stream if f32 and plan.bounds[n] < 2 ** 23)
        self.q = {}
        if use_int8:
            for n, node in graph.nodes.items():
                if node.is_synapse and int8_kernels.supports(node) and int8_kernels.pieces(node.weight):
                    self.q[n] = int8_kernels.Int8Synapse(node)
        self._pool = _Pool()
        self.in_hi, self.out_hi = _input_highs(graph, self.in_edges, self.input_scale, self.per_stream) \
            if self.fixed else ({}, {})
        self.bounds = plan.bounds if plan else {}
        self.f32_ok = f32  # float32 values where exact (off: float64 everywhere, as before the shortcuts)

    def check_input(self, images) -> None:
        check_images(self.graph, images, self.fixed)

    def run(self, images: torch.Tensor, T: int | None = None, record=None, extra_steps: int = 0,
            schedule: str = "layer") -> SimResult:
        """images [B, C, H, W] (direct encoding: the same analog input at every step), or [B, T, C, H, W] for a
        graph with metadata["input_per_step"] (event frames: images[:, t] at step t). After the input (steps
        beyond its T, `extra_steps`) the input is zero.

        `schedule` "layer" (default) runs the graph layer by layer: every node once over all steps, a
        [steps * B, ...] tensor (time-major), stateless nodes (synapses, the fused SSA, graded neurons) in one
        call and stateful ones (neurons, delays) step by step inside; "step" runs the whole graph once per time
        step. Both give identical results: no edge crosses time steps (every edge delivers within its step), so
        each node's outputs depend only on its inputs up to the same step and its own state
        (tests/test_schedule.py)."""
        if schedule not in ("layer", "step"):
            raise ValueError(f"unknown schedule {schedule!r}; 'layer' or 'step'")
        T = int(T or self.graph.metadata.get("T", 1))
        rec = _select(self.graph, record)
        self.check_input(images)
        per_step = input_per_step(self.graph)
        if per_step and T > images.shape[1]:
            raise InputError(f"{T} time steps asked of an input with {images.shape[1]} frames")
        x_in = images.to(self.device, self.dtype)
        if self.fixed:
            x_in = encode_input(x_in, self.input_scale, counts=per_step)  # as hw_backends.loihi.lava_run
        state = {n: {} for n in self.order}
        with torch.no_grad():
            if schedule == "step":
                last, records = self._run_steps(x_in, T, T + extra_steps, per_step, rec, state)
            else:
                last, records = self._run_layers(x_in, T, T + extra_steps, per_step, rec, state)
        self.last_state = state
        return SimResult(outputs=last, records=records, T=T)

    def _node(self, name: str, node, inp: dict, streams: list, state: dict, t: int) -> torch.Tensor:
        """One node's output for one batch of inputs: one time step (`t`), or, for a stateless node, all steps
        at once (the batch holds every step; `t` is then unused)."""
        if name in self.per_stream:  # each stream shifted on its own, all in one batched call
            dt = functools.reduce(torch.promote_types, [v.dtype for v in streams])
            y = fixed_point.step(node, {"in": torch.cat([v.to(dt) for v in streams])}, state, self.pc, t,
                                 self.input_scale, name in self.f32, out_f32=name in self.f32_stream,
                                 q=self.q.get(name), hi=self.in_hi.get(name))
            return y.view(len(streams), -1, *y.shape[1:]).sum(0)
        if isinstance(node, fused.FusedSSA):
            return fused.run_fused(node, inp["q"], inp["k"], inp["v"], self.fixed)
        if self.fixed:
            return fixed_point.step(node, inp, state, self.pc, t, self.input_scale, name in self.f32,
                                    self.lif_safe.get(name), name in self.f32_out, self.q.get(name),
                                    self.in_hi.get(name))
        return kernels.step(node, inp, state, self.pc, t)

    def _inputs(self, name: str, vals: dict) -> tuple[dict, list]:
        """The node's inputs by port (several edges into a port summed), or, for a synapse that shifts stream by
        stream, its input streams."""
        if name in self.per_stream:
            return {}, [vals[s] for s in self.in_edges[name]["in"]]
        return {port: self._port(name, port, vals) for port in self.in_edges[name]}, []

    def _run_steps(self, x_in, T: int, steps: int, per_step: bool, rec: set, state: dict):
        zeros = torch.zeros_like(x_in[:, 0] if per_step else x_in)
        records = {n: [] for n in rec}
        last = {}
        for t in range(steps):
            vals: dict[str, torch.Tensor] = {}
            for name in self.order:
                node = self.graph.nodes[name]
                if isinstance(node, ir.Input):
                    vals[name] = zeros if t >= T else x_in[:, t] if per_step else x_in
                elif isinstance(node, ir.BiasSource):
                    vals[name] = zeros.new_full((zeros.shape[0], 1, 1, 1), node.payload)
                else:
                    inp, streams = self._inputs(name, vals)
                    vals[name] = self._node(name, node, inp, streams, state[name], t)
                if name in records:
                    records[name].append(vals[name])
            last = {n: vals[n] for n in self.graph.outputs()}
        return last, {n: torch.stack(v) for n, v in records.items()}

    def _run_layers(self, x_in, T: int, steps: int, per_step: bool, rec: set, state: dict):
        B = x_in.shape[0]
        frames = x_in[:, :T].transpose(0, 1) if per_step else x_in.unsqueeze(0).expand(T, *x_in.shape)
        if steps > T:
            frames = torch.cat([frames, frames.new_zeros(steps - T, *frames.shape[1:])])
        x_all = frames.reshape(steps * B, *frames.shape[2:])
        keep = set(rec) | set(self.graph.outputs())
        last_use = {}
        for i, name in enumerate(self.order):
            for srcs in self.in_edges[name].values():
                for s in srcs:
                    last_use[s] = i
        vals: dict[str, torch.Tensor] = {}
        u8: dict[str, torch.Tensor] = {}  # uint8 copies of small non-negative values (spikes), for the int8 kernels
        records = {}
        for i, name in enumerate(self.order):
            node = self.graph.nodes[name]
            y = None
            if isinstance(node, ir.Input):
                y = x_all
            elif isinstance(node, ir.BiasSource):
                y = x_all.new_full((x_all.shape[0], 1, 1, 1), node.payload)
            elif self.fixed and isinstance(node, ir.LoihiLIF):
                y = fixed_point.lif_layer(node, self._port(name, "in", vals), state[name], self.pc, steps,
                                          self.lif_safe.get(name), self._pool.empty)
            elif self.fixed and isinstance(node, fused.FusedSSA) and self.f32_ok and all(
                    self.out_hi.get(s, 2) <= 1 for p in ("q", "k", "v") for s in self.in_edges[name][p]) \
                    and all(len(self.in_edges[name][p]) == 1 for p in ("q", "k", "v")):  # spikes
                y = fused.run_fused_fixed(node, *(self._port(name, p, vals) for p in ("q", "k", "v")))
            elif name in self.q:
                y = self._int8_layer(name, node, vals, u8)
            if y is None:
                inp, streams = self._inputs(name, vals)
                if node.stateful:
                    y = self._stepwise(name, node, inp, streams, state[name], steps, B)
                else:
                    y = self._node(name, node, inp, streams, state[name], 0)
            vals[name] = y
            if name in rec:
                records[name] = y.reshape(steps, B, *y.shape[1:])
            for srcs in self.in_edges[name].values():
                for s in srcs:
                    if last_use.get(s) == i and s not in keep:
                        for d in (vals, u8):
                            t = d.pop(s, None)
                            if t is not None:
                                self._pool.release(t, d.values())
        self._pool.end_run()
        last = {n: vals[n][(steps - 1) * B:] for n in self.graph.outputs()}
        return last, records

    def _port(self, name: str, port: str, vals: dict) -> torch.Tensor:
        """The sum of the values into one port. Fixed point: every value is an integer held exactly; float32
        values are summed in float32 where their bounds prove the sum exact, or (two of them) where the sum
        itself shows it (an exact sum of two integers whose float32 result is below 2**24 in magnitude: had
        the true sum reached 2**24, the rounded one would have too), else in float64."""
        srcs = self.in_edges[name][port]
        xs = [vals[s] for s in srcs]
        if len(xs) == 1:
            return xs[0]
        dt = functools.reduce(torch.promote_types, [x.dtype for x in xs])
        if self.fixed and dt == torch.float32 \
                and sum(self.bounds.get(s, float("inf")) for s in srcs) >= F32_EXACT:
            if len(xs) == 2:
                acc = torch.add(xs[0], xs[1], out=self._pool.empty(xs[0].shape, dt, xs[0].device, xs[0]))
                if fixed_point._absmax(acc) < F32_EXACT:
                    return acc
            dt = torch.float64
        if self.fixed:
            xs = [x.to(dt) for x in xs]  # (a float32 partial sum could round before a float64 value joins)
        elif any(x.dtype != dt for x in xs):
            return functools.reduce(lambda u, w: u + w, xs)
        acc = torch.add(xs[0], xs[1], out=self._pool.empty(xs[0].shape, dt, xs[0].device, xs[0]))
        for x in xs[2:]:
            acc.add_(x)  # in place: acc is ours and already of the common dtype
        return acc

    def _u8(self, name: str, vals: dict, u8: dict) -> torch.Tensor:
        if name not in u8:  # exact: out_hi proves the values in [0, 255]
            x = vals[name]
            u8[name] = self._pool.empty(x.shape, torch.uint8, x.device, x).copy_(x)
        return u8[name]

    def _int8_layer(self, name: str, node, vals: dict, u8: dict):
        """A synapse on the int8 kernels, its sources as uint8: their sum (at most in_hi <= 255), or stream by
        stream (each shifted on its own, the shifted outputs summed); None where the kernels cannot prove the
        result exact (the float kernels run instead)."""
        q, hi = self.q[name], self.in_hi.get(name)
        srcs = self.in_edges[name]["in"]
        static = hi is not None and hi <= 255 and all(self.out_hi.get(s, 256) <= 255 for s in srcs)
        if static and not q.exact_for(hi):
            return None
        if name not in self.per_stream:
            if static:  # the sources' uint8 copies, summed: exact, the sum is at most hi <= 255
                x = functools.reduce(lambda u, w: u + w, [self._u8(s, vals, u8) for s in srcs])
                y = q(x, hi)
            else:  # the input's range checked here
                y = q(self._port(name, "in", vals))
            return y if y is None or self.f32_ok else y.double()
        if not static and not all(q.takes(vals[s]) for s in srcs):
            return None
        dt = torch.float32 if name in self.f32_stream else torch.float64
        xs = [self._u8(s, vals, u8) if static else vals[s] for s in srcs]
        M = xs[0].shape[0]
        per_sample = max(1, xs[0][0].numel() * q.out // max(1, xs[0].shape[1]))  # output elements (about)
        chunk = max(1, CHUNK_ELEMENTS // per_sample)
        acc = None
        for m0 in range(0, M, chunk):  # in chunks of samples: the streams' outputs stay small (in cache, no
            sl = slice(m0, m0 + chunk)  # fresh pages), each chunk's sum goes into the result
            part = None
            for x in xs:
                y = q(x[sl], hi if static else None)
                part = y.to(dt) if part is None else part.add_(y)  # exact: f32_stream bounds the sum below
            if acc is None:  # 2**23, else float64
                acc = self._pool.empty((M, *part.shape[1:]), dt, part.device, part)
            acc[sl] = part
        return acc

    def _stepwise(self, name: str, node, inp: dict, streams: list, state: dict, steps: int, B: int):
        """A stateful node over all steps: its step function once per step on that step's slice."""
        out = []
        for t in range(steps):
            sl = slice(t * B, (t + 1) * B)
            out.append(self._node(name, node, {p: v[sl] for p, v in inp.items()}, [v[sl] for v in streams],
                                  state, t))
        return torch.cat(out)
