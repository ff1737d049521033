"""An independent executor of flat NIR graphs that follows the NIR specification literally (nir 1.0.8 primitives,
neuromorphs.github.io/NIR "Primitives"), for tests: it proves that a NIR file reproduces the model under NIR's own
semantics. It deliberately shares no code with the project's simulator (sim/, convert/kernels.py, hw_backends/).

Semantics (discrete time, the graph's own time step dt = graph.metadata["dt"], 1.0 when absent):
- every step, nodes run in topological order of the graph (a DAG; every edge delivers within the step);
- a node's input is the sum of its predecessors' outputs at that step;
- ODE nodes are integrated by forward Euler with step dt; every state starts at zero for each run;
- all arithmetic is float64.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.nn.functional as F

F64 = torch.float64


@dataclass
class SpecResult:
    outputs: dict[str, torch.Tensor]  # Output node -> its value at the last step [B, *shape]
    records: dict[str, torch.Tensor] = field(default_factory=dict)  # node -> [steps, B, *shape]
    steps: int = 0


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64))


def _tuple(v, n: int) -> tuple:
    a = [int(x) for x in np.atleast_1d(np.asarray(v)).reshape(-1)]
    return tuple(a * n) if len(a) == 1 else tuple(a)


def _zeros(st: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    return st[key] if key in st else torch.zeros_like(like)


# ---------------------------------------------------------------------------------------------- node semantics
# Each builder takes (node, dt) and returns step(x, state) -> y; state is the node's own dict, empty at t = 0.

def _output(node, dt):
    """Input / Output: the input frame / the node's input, unchanged."""
    return lambda x, st: x


def _conv(n: int):
    def build(node, dt):
        """Conv1d / Conv2d: y[o, p] = b[o] + sum over c in o's group and kernel offsets j of W[o, c, j] *
        x_pad[c, p * stride + j * dilation] (cross-correlation, as torch), zero padding (int, tuple, 'same' as torch
        or 'valid'), groups. Computed here by unfold + einsum (float64 grouped convolutions are slow in torch)."""
        w = _t(node.weight)
        groups, k = int(node.groups), w.shape[2:]
        w = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])  # [G, C_out/G, C_in/G, *k]
        b = None if node.bias is None else _t(node.bias).reshape(-1, *[1] * n)
        stride, dil = _tuple(node.stride, n), _tuple(node.dilation, n)
        pad = node.padding.decode() if isinstance(node.padding, bytes) else node.padding
        if isinstance(pad, str) and pad not in ("same", "valid"):
            raise ValueError(f"Conv padding {pad!r}: NIR takes an int, a tuple, 'same' or 'valid'")
        span = [d * (kk - 1) for d, kk in zip(dil, k)]
        if isinstance(pad, str):
            pads = [(s // 2, s - s // 2) if pad == "same" else (0, 0) for s in span]
        else:
            pads = [(p, p) for p in _tuple(pad, n)]
        flat_pads = [p for pair in reversed(pads) for p in pair]  # F.pad takes the last dim first
        letters = "xy"[:n], "ij"[:n]
        spec = f"bgc{letters[0]}{letters[1]},goc{letters[1]}->bgo{letters[0]}"

        def step(x, st):
            x = F.pad(x, flat_pads)
            for d in range(n):  # windows: [B, C_in, *out, *k]
                x = x.unfold(2 + d, span[d] + 1, stride[d])[..., :: dil[d]]
            x = x.reshape(x.shape[0], groups, x.shape[1] // groups, *x.shape[2:])
            y = torch.einsum(spec, x, w)
            y = y.reshape(y.shape[0], -1, *y.shape[3:])
            return y + b if b is not None else y
        return step
    return build


def _pool(mean: bool):
    def build(node, dt):
        """SumPool2d: y = sum of x over each (kernel_size) window, with stride and zero padding.
        AvgPool2d: the window's mean, the padding zeros counted (divisor = kernel height * width)."""
        k, s, (ph, pw) = _tuple(node.kernel_size, 2), _tuple(node.stride, 2), _tuple(node.padding, 2)

        def step(x, st):
            x = F.pad(x, (pw, pw, ph, ph))
            windows = x.unfold(-2, k[0], s[0]).unfold(-2, k[1], s[1])  # [..., H', W', kh, kw]
            y = windows.sum(dim=(-2, -1))
            return y / (k[0] * k[1]) if mean else y
        return step
    return build


def _flatten(node, dt):
    """Flatten: merges dims start_dim..end_dim of the unbatched input (NIR dims exclude the batch)."""
    def step(x, st):
        nd = x.dim() - 1
        return x.flatten(int(node.start_dim) % nd + 1, int(node.end_dim) % nd + 1)
    return step


def _scale(node, dt):
    """Scale: y = s * x (elementwise)."""
    s = _t(node.scale)
    return lambda x, st: s * x


def _linear(node, dt):
    """Linear: y = W x. Affine: y = W x + b."""
    w = _t(node.weight)
    b = _t(node.bias) if isinstance(node, nir.Affine) else None

    def step(x, st):
        y = torch.matmul(w, x.unsqueeze(-1)).squeeze(-1)
        return y + b if b is not None else y
    return step


def _fire(v, thr, reset, st):
    """z = 1 where v > v_threshold (strictly), else 0; v = v_reset where z = 1."""
    z = v > thr
    st["v"] = torch.where(z, reset, v)
    return z.to(F64)


def _lif(node, dt):
    """LIF: tau dv/dt = (v_leak - v) + R I, z = (v > v_thr), v = v_reset after a spike.
    Forward Euler: v <- v + (dt / tau) * ((v_leak - v) + r * I), with dt / tau in float64 from the stored tau."""
    k = _t(np.float64(dt) / np.asarray(node.tau, dtype=np.float64))
    leak, r, thr, reset = (_t(a) for a in (node.v_leak, node.r, node.v_threshold, node.v_reset))

    def step(x, st):
        v = _zeros(st, "v", x)
        return _fire(v + k * ((leak - v) + r * x), thr, reset, st)
    return step


def _li(node, dt):
    """LI: tau dv/dt = (v_leak - v) + R I. Forward Euler: v <- v + (dt / tau) * ((v_leak - v) + r * I); y = v."""
    k = _t(np.float64(dt) / np.asarray(node.tau, dtype=np.float64))
    leak, r = _t(node.v_leak), _t(node.r)

    def step(x, st):
        v = _zeros(st, "v", x)
        st["v"] = v = v + k * ((leak - v) + r * x)
        return v
    return step


def _integrator(node, dt):
    """I: dv/dt = R I. Forward Euler: v <- v + dt * r * I; y = v."""
    dr = np.float64(dt) * _t(node.r)

    def step(x, st):
        st["v"] = v = _zeros(st, "v", x) + dr * x
        return v
    return step


def _if(node, dt):
    """IF: dv/dt = R I, z = (v > v_thr), v = v_reset after a spike. Forward Euler: v <- v + dt * r * I."""
    dr, thr, reset = np.float64(dt) * _t(node.r), _t(node.v_threshold), _t(node.v_reset)
    return lambda x, st: _fire(_zeros(st, "v", x) + dr * x, thr, reset, st)


def _cuba(node, dt):
    """CubaLI / CubaLIF: tau_syn dI/dt = -I + w_in S, tau_mem dv/dt = (v_leak - v) + R I (CubaLIF: z = (v > v_thr),
    v = v_reset after a spike). Forward Euler on the pair: both right-hand sides are evaluated at the state at the
    start of the step, so an input S reaches v one step after it reaches I. Output: z (CubaLIF) or v (CubaLI)."""
    ks = _t(np.float64(dt) / np.asarray(node.tau_syn, dtype=np.float64))
    km = _t(np.float64(dt) / np.asarray(node.tau_mem, dtype=np.float64))
    w_in, leak, r = _t(node.w_in), _t(node.v_leak), _t(node.r)
    spiking = isinstance(node, nir.CubaLIF)
    thr, reset = (_t(node.v_threshold), _t(node.v_reset)) if spiking else (None, None)

    def step(x, st):
        i, v = _zeros(st, "i", x), _zeros(st, "v", x)
        st["i"] = i + ks * (-i + w_in * x)
        v = v + km * ((leak - v) + r * i)
        if spiking:
            return _fire(v, thr, reset, st)
        st["v"] = v
        return v
    return step


def _threshold(node, dt):
    """Threshold: z = 1 where I > threshold (strictly; a tie does not fire), else 0. Stateless."""
    thr = _t(node.threshold)
    return lambda x, st: (x > thr).to(F64)


def _delay(node, dt):
    """Delay: y(t) = x(t - tau); with steps d = tau / dt (a whole number per element): y[t] = x[t - d], zero before."""
    d = np.asarray(node.delay, dtype=np.float64) / np.float64(dt)
    steps = np.round(d)
    if np.any(np.abs(d - steps) > 1e-9 * np.maximum(1.0, np.abs(d))) or np.any(steps < 0):
        raise ValueError(f"Delay of {np.unique(d)[:5]} steps (delay / dt) is not a whole non-negative number")
    steps = torch.as_tensor(steps.astype(np.int64))

    def step(x, st):
        hist = st.setdefault("hist", [])
        hist.append(x)
        y = torch.zeros_like(x)
        for k in torch.unique(steps).tolist():
            if k < len(hist):
                y = torch.where(steps == k, hist[-1 - k], y)
        del hist[: max(0, len(hist) - 1 - int(steps.max()))]
        return y
    return step


BUILDERS = {
    nir.Input: _output, nir.Output: _output, nir.Conv1d: _conv(1), nir.Conv2d: _conv(2),
    nir.SumPool2d: _pool(False), nir.AvgPool2d: _pool(True), nir.Flatten: _flatten, nir.Scale: _scale,
    nir.Linear: _linear, nir.Affine: _linear, nir.LIF: _lif, nir.LI: _li, nir.I: _integrator, nir.IF: _if,
    nir.CubaLI: _cuba, nir.CubaLIF: _cuba, nir.Threshold: _threshold, nir.Delay: _delay,
}


# ---------------------------------------------------------------------------------------------- the graph
def topo_order(graph: nir.NIRGraph) -> list[str]:
    """Kahn's algorithm over the edges, ties broken by the order of graph.nodes; a cycle raises ValueError."""
    preds = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise ValueError(f"edge {src} -> {dst} names an unknown node {end!r}")
        preds[dst].append(src)
    order, done = [], set()
    while len(order) < len(preds):
        ready = [n for n in preds if n not in done and all(p in done for p in preds[n])]
        if not ready:
            raise ValueError(f"the graph has a cycle through {sorted(set(preds) - done)[:5]}; this executor takes "
                             f"DAGs")
        order += ready
        done.update(ready)
    return order


def run_nir(graph: nir.NIRGraph, inputs, steps: int, per_step_input: bool, record=None) -> SpecResult:
    """Run `graph` for `steps` steps. inputs: [B, *input_shape] (the same frame every step) or [B, T, *input_shape]
    when per_step_input (frame t at step t); a dict {Input node: array} for several Input nodes. record: node names
    to record per step (None: all nodes)."""
    dt = float(graph.metadata.get("dt", 1.0)) if isinstance(graph.metadata, dict) else 1.0
    if not dt > 0:
        raise ValueError(f"graph metadata dt = {dt}; it must be positive")
    steppers = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise NotImplementedError(f"node {name!r} is a nested NIRGraph; this executor takes flat graphs")
        if type(node) not in BUILDERS:
            raise TypeError(f"node {name!r} has NIR type {type(node).__name__}, which this executor does not know "
                            f"(known: {', '.join(sorted(c.__name__ for c in BUILDERS))})")
        steppers[name] = BUILDERS[type(node)](node, dt)
    order = topo_order(graph)
    preds = {n: [s for s, d in graph.edges if d == n] for n in graph.nodes}
    in_names = [n for n in order if isinstance(graph.nodes[n], nir.Input)]
    if not isinstance(inputs, Mapping):
        if len(in_names) != 1:
            raise ValueError(f"the graph has Input nodes {in_names}; pass inputs as a dict by name")
        inputs = {in_names[0]: inputs}
    frames = {n: torch.as_tensor(np.asarray(inputs[n])).to(F64) for n in in_names}
    for n, x in frames.items():
        shape = tuple(int(s) for s in graph.nodes[n].input_type["input"])
        if tuple(x.shape[2 if per_step_input else 1:]) != shape or (per_step_input and x.shape[1] < steps):
            want = f"[B, T >= {steps}, *{shape}]" if per_step_input else f"[B, *{shape}]"
            raise ValueError(f"input for {n!r} has shape {tuple(x.shape)}; expected {want}")
    rec = list(graph.nodes) if record is None else list(record)
    unknown = [n for n in rec if n not in graph.nodes]
    if unknown:
        raise KeyError(f"cannot record unknown nodes {unknown}")
    state = {n: {} for n in order}
    records = {n: [] for n in rec}
    with torch.no_grad():
        for t in range(steps):
            out: dict[str, torch.Tensor] = {}
            for n in order:
                if n in frames:
                    x = frames[n][:, t] if per_step_input else frames[n]
                else:
                    if not preds[n]:
                        raise ValueError(f"node {n!r} has no input edge")
                    ins = [out[p] for p in preds[n]]
                    if any(i.shape != ins[0].shape for i in ins):
                        raise ValueError(f"node {n!r}: inputs of shapes {[tuple(i.shape) for i in ins]} differ")
                    x = sum(ins[1:], ins[0])  # fan-in: the sum of the predecessors' outputs, in edge order
                out[n] = steppers[n](x, state[n])
            for n in rec:
                records[n].append(out[n])
    outputs = {n: out[n] for n in order if isinstance(graph.nodes[n], nir.Output)} if steps else {}
    return SpecResult(outputs, {n: torch.stack(v) for n, v in records.items() if v}, steps)
