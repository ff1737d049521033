"""Run a NIR graph in PyTorch with nirtorch 2.6, spike for spike as NIR defines it.

    import nir, nirtorch
    from hw_backends.nir.nirtorch_map import node_map_for, run
    graph = nir.read(path)
    module = nirtorch.nir_to_torch(graph, node_map_for(graph))   # or: module = to_torch(graph)
    out = run(module, images, steps=int(graph.metadata["T"]))["output"]   # [steps, B, ...]

Time convention: discrete steps of dt = graph.metadata["dt"] (1.0 if absent); every edge delivers within the
step (no per-hop latency); several edges into one node are summed; all state starts at zero. Per step:
    Conv1d/Conv2d  torch convolution (weight, bias, stride, padding, dilation, groups)
    SumPool2d      sum over each window of the zero-padded input (kernel_size, stride, padding)
    Flatten        start_dim/end_dim index the unbatched shape;  Scale  y = scale * x
    Linear/Affine  y = W x (+ b)
    LIF            v <- v + (dt / tau) * ((v_leak - v) + r * I); s = v > v_threshold; v <- v_reset where s;
                   output s, state v  (dt / tau is computed in float64 from the file's arrays, then cast)
    Threshold      s = I > threshold (stateless)
    I              v <- v + (dt * r) * I; output v, state v
    Delay          output at step t = input at step t - round(delay / dt), zeros before (state: a FIFO)
    Input/Output   as nirtorch (the graph's argument and return value)

LIF, I and Delay depend on dt, which lives in the graph metadata while nirtorch hands the map one node at a time,
so the map is built per dt (`node_map(dt)`, `node_map_for(graph)`); there is deliberately no dt-free NODE_MAP.

nirtorch 2.6 state: the GraphModule is called `out, state = module(x, state)` once per step (state None at the
first step); a module whose forward takes `state` is called `module(x, state=state[name])` and returns
`(output, new_state)`, which nirtorch stores back into the (mutable) state dict under the sanitized node name.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import nir
import nirtorch
from nirtorch.nir_interpreter import _sanitize_name  # the GraphModule's submodule names ('.' -> '_')


def _f64(a) -> torch.Tensor:
    """A float64 tensor copy (nir_to_torch then casts modules to its dtype)."""
    return torch.tensor(np.array(a, dtype=np.float64))


def _ints(v, n: int) -> tuple:
    a = [int(x) for x in np.atleast_1d(np.asarray(v)).reshape(-1)]
    return tuple(a * n) if len(a) == 1 else tuple(a)


class Conv(torch.nn.Module):
    # nirtorch 2.6's default Conv1d/Conv2d maps pass weight.shape[-3] / [-4] (the output channels) as in_channels,
    # so torch.nn.Conv* rejects most grouped convolutions ("out_channels must be divisible by groups").
    def __init__(self, node, nd: int):
        super().__init__()
        self.weight = torch.nn.Parameter(_f64(node.weight))
        self.bias = None if node.bias is None else torch.nn.Parameter(_f64(node.bias))
        self.stride, self.dilation = _ints(node.stride, nd), _ints(node.dilation, nd)
        self.padding = node.padding if isinstance(node.padding, str) else _ints(node.padding, nd)
        self.groups = int(node.groups)
        self.conv = F.conv1d if nd == 1 else F.conv2d

    def forward(self, x):
        return self.conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Linear(torch.nn.Module):
    # nirtorch 2.6's default Affine map assigns the bias to `module.weight.bias`, leaving a random bias.
    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = torch.nn.Parameter(_f64(weight))
        self.bias = None if bias is None else torch.nn.Parameter(_f64(bias))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Scale(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = torch.nn.Parameter(_f64(scale))

    def forward(self, x):
        return self.scale * x


class SumPool2d(torch.nn.Module):
    # nirtorch 2.6's default (LPPool2d, norm 1) ignores padding and computes avg * area (rounds unless the area is
    # a power of two); torch's pooling layers also cap padding at half the kernel. Hence pad + unfold + sum.
    def __init__(self, node):
        super().__init__()
        self.kernel, self.stride = _ints(node.kernel_size, 2), _ints(node.stride, 2)
        self.padding = _ints(node.padding, 2)

    def forward(self, x):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        x = F.pad(x, (pw, pw, ph, ph))
        return x.unfold(-2, kh, sh).unfold(-2, kw, sw).sum((-2, -1))


class Flatten(torch.nn.Module):
    # NIR's start_dim/end_dim index the unbatched shape; nirtorch 2.6's default passes them to torch.nn.Flatten
    # unchanged, which flattens the wrong axes of a batched input.
    def __init__(self, node):
        super().__init__()
        self.start = int(node.start_dim) + (int(node.start_dim) >= 0)
        self.end = int(node.end_dim) + (int(node.end_dim) >= 0)

    def forward(self, x):
        return x.flatten(self.start, self.end)


class Threshold(torch.nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.register_buffer("threshold", _f64(threshold))

    def forward(self, x):
        return (x > self.threshold).to(x.dtype)


class LIF(torch.nn.Module):
    def __init__(self, node: nir.LIF, dt: float):
        super().__init__()
        tau = np.asarray(node.tau, dtype=np.float64)
        self.register_buffer("dt_tau", torch.tensor(dt / tau))
        for k in ("r", "v_leak", "v_threshold", "v_reset"):
            self.register_buffer(k, _f64(getattr(node, k)))

    def forward(self, x, state=None):
        v = torch.zeros_like(x) if state is None else state
        v = v + self.dt_tau * ((self.v_leak - v) + self.r * x)
        s = v > self.v_threshold
        return s.to(x.dtype), torch.where(s, self.v_reset, v)


class Integrator(torch.nn.Module):
    def __init__(self, node: nir.I, dt: float):
        super().__init__()
        self.register_buffer("dt_r", torch.tensor(dt * np.asarray(node.r, dtype=np.float64)))

    def forward(self, x, state=None):
        v = (torch.zeros_like(x) if state is None else state) + self.dt_r * x
        return v, v


class Delay(torch.nn.Module):
    """Per-element delay of round(delay / dt) steps; the state holds the last `depth` inputs, newest first."""

    def __init__(self, node: nir.Delay, dt: float):
        super().__init__()
        steps = np.rint(np.asarray(node.delay, dtype=np.float64) / dt).astype(np.int64)
        if (steps < 0).any():
            raise ValueError(f"Delay with a negative delay ({node.delay.min()})")
        self.register_buffer("steps", torch.from_numpy(steps))
        self.depth = int(steps.max(initial=0))

    def forward(self, x, state=None):
        if self.depth == 0:
            return x, state
        past = x.new_zeros((self.depth, *x.shape)) if state is None else state
        hist = torch.cat([x[None], past])  # hist[d] = input d steps ago
        out = hist.gather(0, self.steps.expand(x.shape)[None])[0]
        return out, hist[:-1]


def node_map(dt: float = 1.0) -> dict:
    """The nirtorch node map for a graph with time step dt (overrides nirtorch's defaults, see the comments)."""
    dt = float(dt)
    return {
        nir.Conv1d: lambda n: Conv(n, 1),
        nir.Conv2d: lambda n: Conv(n, 2),
        nir.SumPool2d: SumPool2d,
        nir.Flatten: Flatten,
        nir.Scale: lambda n: Scale(n.scale),
        nir.Linear: lambda n: Linear(n.weight),
        nir.Affine: lambda n: Linear(n.weight, n.bias),
        nir.Threshold: lambda n: Threshold(n.threshold),
        nir.LIF: lambda n: LIF(n, dt),
        nir.I: lambda n: Integrator(n, dt),
        nir.Delay: lambda n: Delay(n, dt),
    }


def graph_dt(graph: nir.NIRGraph) -> float:
    md = graph.metadata if isinstance(graph.metadata, dict) else {}
    return float(md.get("dt", 1.0))


def node_map_for(graph: nir.NIRGraph) -> dict:
    """node_map(dt) with the graph's own dt (metadata "dt", 1.0 if absent)."""
    return node_map(graph_dt(graph))


def to_torch(graph: nir.NIRGraph, dtype: torch.dtype = torch.float32, device="cpu") -> torch.fx.GraphModule:
    return nirtorch.nir_to_torch(graph, node_map_for(graph), dtype=dtype, device=device)


@torch.no_grad()
def run(module: torch.nn.Module, frames: torch.Tensor, steps: int, *, per_step: bool = False,
        record=()) -> dict[str, torch.Tensor]:
    """Runs `steps` steps from zero state. frames: [B, ...] given at every step, or [B, steps, ...] one frame per
    step (per_step=True). Returns {"output": the Output per step [steps, B, ...]} plus, for each NIR node name in
    `record`, that node's output per step (recorded by forward hooks; Input/Output nodes are not submodules)."""
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if ref is not None:
        frames = frames.to(dtype=ref.dtype, device=ref.device)
    recs: dict[str, list] = {name: [] for name in record}
    hooks = []

    def hook(out_list):
        return lambda mod, args, out: out_list.append(out[0] if isinstance(out, tuple) else out)

    try:
        for name in record:
            try:
                sub = module.get_submodule(_sanitize_name(name))
            except AttributeError:
                raise KeyError(f"{name!r} is not a submodule of this GraphModule") from None
            hooks.append(sub.register_forward_hook(hook(recs[name])))
        outs, state = [], None
        for t in range(int(steps)):
            y, state = module(frames[:, t] if per_step else frames, state)
            outs.append(y)
    finally:
        for h in hooks:
            h.remove()
    return {"output": torch.stack(outs), **{k: torch.stack(v) for k, v in recs.items()}}
