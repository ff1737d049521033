"""Float-semantics kernels, one per IR node type (`KERNELS`). Each takes (node, inputs-by-port, state, ParamCache)
and returns the node's output for one time step, batched: tensors are [B, *shape]."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from convert import ir


def _t(arr, like: torch.Tensor):
    return None if arr is None else torch.as_tensor(arr, dtype=like.dtype, device=like.device)


class ParamCache:
    """Node arrays converted once per (node, dtype, device)."""

    def __init__(self):
        self._c = {}

    def memo(self, key, make):
        """Any derived per-node value, made once."""
        if key not in self._c:
            self._c[key] = make()
        return self._c[key]

    def get(self, node, attr, like):
        key = (id(node), attr, like.dtype, like.device)
        if key not in self._c:
            self._c[key] = _t(getattr(node, attr), like)
        return self._c[key]


def axis_synapse(node: ir.AxisSynapse, x: torch.Tensor) -> torch.Tensor:
    B = x.shape[0]
    s = node.sizes
    x = x.reshape(B, *[s[a] for a in node.in_axes])
    drop = [i + 1 for i, a in enumerate(node.in_axes) if a not in node.out_axes]
    if drop:
        x = x.sum(dim=drop)
    kept = [a for a in node.in_axes if a in node.out_axes]
    order = [kept.index(a) + 1 for a in node.out_axes if a in kept]
    x = x.permute(0, *order)
    shape, k = [B], 1
    for a in node.out_axes:
        if a in kept:
            shape.append(x.shape[k])
            k += 1
        else:
            shape.append(1)
    x = x.reshape(shape).expand(B, *[s[a] for a in node.out_axes])
    if node.weight != 1.0:
        x = x * node.weight
    return x.reshape(B, math.prod(s[a] for a in node.out_axes[:-1]), s[node.out_axes[-1]])


def ssa_product(node: ir.SSAProduct, q, k, v):
    B, D, N = q.shape
    h = node.num_heads

    def heads(t):  # [B, D, N] -> [B, h, N, d]
        return t.reshape(B, h, D // h, N).transpose(-1, -2)

    q, k, v = heads(q), heads(k), heads(v)
    if node.product_order == "qk_first":
        y = ((q @ k.transpose(-2, -1)) * node.scale) @ v
    else:
        y = (q @ (k.transpose(-2, -1) @ v)) * node.scale
    return y.transpose(-1, -2).reshape(B, D, N)


def batch_norm(node: ir.BatchNorm, x, pc: ParamCache):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = pc.get(node, "running_mean", x).view(shape)
    var = pc.get(node, "running_var", x).view(shape)
    return (x - mean) / torch.sqrt(var + node.eps) * pc.get(node, "weight", x).view(shape) + \
        pc.get(node, "bias", x).view(shape)


def input_norm(node: ir.InputNorm, x, pc: ParamCache):
    """(x * 255 - mean255) / std255 per channel, in x's dtype: Spikformer.normalize_input's operations in its
    order, so float64 runs match the float64 reference bit for bit."""
    def make():
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (torch.tensor(node.mean255, dtype=x.dtype, device=x.device).view(shape),
                torch.tensor(node.std255, dtype=x.dtype, device=x.device).view(shape))
    mean, std = pc.memo((id(node), "input_norm", x.dtype, x.device, x.dim()), make)
    return (x * 255 - mean) / std


def _exp(node, y):
    e = node.weight_exp
    if np.ndim(e) == 0:
        return y if e == 0 else y * (2.0 ** e)
    scale = torch.as_tensor(np.exp2(np.asarray(e, dtype=np.float64)), dtype=y.dtype, device=y.device)
    return y * scale.view((1, -1) + (1,) * (y.dim() - 2))


# One kernel per node kind: (node, inputs by port, state, ParamCache) -> the node's output for one step.

def _add(node: ir.Add, inp, state, pc):
    return inp["in"]


def _output(node: ir.Output, inp, state, pc):
    x = inp["in"]
    return x.reshape(x.shape[0], -1)


def _input_norm(node: ir.InputNorm, inp, state, pc):
    return input_norm(node, inp["in"], pc)


def _conv2d(node: ir.Conv2d, inp, state, pc):
    x = inp["in"]
    bias = pc.get(node, "bias", x)
    per_neuron = bias is not None and bias.dim() > 1  # [C, H, W]: a folded input normalisation's
    y = F.conv2d(x, pc.get(node, "weight", x), None if per_neuron else bias, node.stride, node.padding, 1,
                 node.groups)
    return _exp(node, y + bias.unsqueeze(0) if per_neuron else y)  # border terms (passes/fold_input_norm)


def _conv1d(node: ir.Conv1d, inp, state, pc):
    x = inp["in"]
    return _exp(node, F.conv1d(x, pc.get(node, "weight", x), pc.get(node, "bias", x), node.stride, node.padding,
                               1, node.groups))


def _batch_norm(node: ir.BatchNorm, inp, state, pc):
    return batch_norm(node, inp["in"], pc)


def _lif(node: ir.LIF, inp, state, pc):
    x = inp["in"]
    v = state.get("v")
    if v is None:
        v = torch.zeros_like(x)
    h = v + (x - (v - node.v_reset)) / node.tau
    s = (h >= node.v_threshold).to(x.dtype)
    state["v"] = torch.where(s.bool(), torch.full_like(h, node.v_reset), h)
    return s


def _threshold(node: ir.Threshold, inp, state, pc):
    x = inp["in"]
    return (x >= node.threshold).to(x.dtype)


def _graded_neuron(node: ir.GradedNeuron, inp, state, pc):
    x = inp["in"]
    return x * (x.abs() > node.vth)


def _graded_relu(node: ir.GradedRelu, inp, state, pc):
    x = inp["in"]
    return x * (x > node.vth)


def _product_neuron(node: ir.ProductNeuron, inp, state, pc):
    v = inp["in1"] * inp["in2"]
    if node.exp:
        v = torch.floor(v / 2.0 ** node.exp)
    return v * (v.abs() > node.vth)


def _max_pool(node: ir.MaxPool2d, inp, state, pc):
    return F.max_pool2d(inp["in"], node.kernel, node.stride, node.padding)


def _sum_pool(node: ir.SumPool2d, inp, state, pc):
    return _exp(node, node.weight * F.avg_pool2d(inp["in"], node.kernel, node.stride, node.padding,
                                                 count_include_pad=True, divisor_override=1))


def _flatten(node: ir.Flatten, inp, state, pc):
    return inp["in"].flatten(2)


def _reshape(node: ir.Reshape, inp, state, pc):
    x = inp["in"]
    return x.reshape(x.shape[0], *node.shape)


def _axis_synapse(node: ir.AxisSynapse, inp, state, pc):
    return _exp(node, axis_synapse(node, inp["in"]))


def _ssa_product(node: ir.SSAProduct, inp, state, pc):
    return ssa_product(node, inp["q"], inp["k"], inp["v"])


def _token_time_mean_linear(node: ir.TokenTimeMeanLinear, inp, state, pc):
    x = inp["in"]
    acc = state.get("acc")
    m = x.mean(-1)
    acc = m if acc is None else acc + m
    state["acc"] = acc
    return F.linear(acc / node.T, pc.get(node, "weight", x), pc.get(node, "bias", x))


def _integrator(node: ir.Integrator, inp, state, pc):
    v = state.get("v")
    state["v"] = inp["in"] if v is None else v + inp["in"]
    return state["v"]


def _delay(node: ir.Delay, inp, state, pc):
    x = inp["in"]
    buf = state.setdefault("buf", [])
    buf.append(x)
    if len(buf) > node.steps:
        return buf.pop(0)
    return torch.zeros_like(x)


# LoihiLIF has no float kernel: sim/fixed_point.py runs it
KERNELS = {
    ir.Add: _add, ir.Output: _output, ir.InputNorm: _input_norm, ir.Conv2d: _conv2d, ir.Conv1d: _conv1d,
    ir.BatchNorm: _batch_norm, ir.LIF: _lif, ir.Threshold: _threshold, ir.GradedNeuron: _graded_neuron,
    ir.GradedRelu: _graded_relu, ir.ProductNeuron: _product_neuron, ir.MaxPool2d: _max_pool, ir.SumPool2d: _sum_pool,
    ir.Flatten: _flatten, ir.Reshape: _reshape,
    ir.AxisSynapse: _axis_synapse, ir.SSAProduct: _ssa_product, ir.TokenTimeMeanLinear: _token_time_mean_linear,
    ir.Integrator: _integrator, ir.Delay: _delay,
}


def step(node: ir.Node, inp: dict, state: dict, pc: ParamCache, t: int):
    kernel = KERNELS.get(type(node))
    if kernel is None:
        raise NotImplementedError(f"no float kernel for node type {node.kind} ({node.name})")
    return kernel(node, inp, state, pc)
