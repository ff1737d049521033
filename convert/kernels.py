"""Float-semantics kernels, one per IR node type. Each takes (node, inputs-by-port, state) and returns the
node's output for one time step, batched: tensors are [B, *shape]."""
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


def step(node: ir.Node, inp: dict, state: dict, pc: ParamCache, t: int):
    x = inp.get("in")
    if isinstance(node, ir.Add):
        return x
    if isinstance(node, ir.Output):
        return x.reshape(x.shape[0], -1)
    if isinstance(node, ir.InputNorm):
        return input_norm(node, x, pc)
    if isinstance(node, ir.Conv2d):
        bias = pc.get(node, "bias", x)
        per_neuron = bias is not None and bias.dim() > 1  # [C, H, W]: a folded input normalisation's
        y = F.conv2d(x, pc.get(node, "weight", x), None if per_neuron else bias, node.stride, node.padding, 1,
                     node.groups)
        return _exp(node, y + bias.unsqueeze(0) if per_neuron else y)  # border terms (passes/fold_input_norm)
    if isinstance(node, ir.Conv1d):
        return _exp(node, F.conv1d(x, pc.get(node, "weight", x), pc.get(node, "bias", x), node.stride,
                                   node.padding, 1, node.groups))
    if isinstance(node, ir.BatchNorm):
        return batch_norm(node, x, pc)
    if isinstance(node, ir.LIF):
        v = state.get("v")
        if v is None:
            v = torch.zeros_like(x)
        h = v + (x - (v - node.v_reset)) / node.tau
        s = (h >= node.v_threshold).to(x.dtype)
        state["v"] = torch.where(s.bool(), torch.full_like(h, node.v_reset), h)
        return s
    if isinstance(node, ir.Threshold):
        return (x >= node.threshold).to(x.dtype)
    if isinstance(node, ir.GradedNeuron):
        return x * (x.abs() > node.vth)
    if isinstance(node, ir.ProductNeuron):
        v = inp["in1"] * inp["in2"]
        if node.exp:
            v = torch.floor(v / 2.0 ** node.exp)
        return v * (v.abs() > node.vth)
    if isinstance(node, ir.MaxPool2d):
        return F.max_pool2d(x, node.kernel, node.stride, node.padding)
    if isinstance(node, ir.SumPool2d):
        return _exp(node, node.weight * F.avg_pool2d(x, node.kernel, node.stride, node.padding,
                                                     count_include_pad=True, divisor_override=1))
    if isinstance(node, ir.Flatten):
        return x.flatten(2)
    if isinstance(node, ir.AxisSynapse):
        return _exp(node, axis_synapse(node, x))
    if isinstance(node, ir.SSAProduct):
        return ssa_product(node, inp["q"], inp["k"], inp["v"])
    if isinstance(node, ir.TokenTimeMeanLinear):
        acc = state.get("acc")
        m = x.mean(-1)
        acc = m if acc is None else acc + m
        state["acc"] = acc
        return F.linear(acc / node.T, pc.get(node, "weight", x), pc.get(node, "bias", x))
    if isinstance(node, ir.Integrator):
        v = state.get("v")
        state["v"] = x if v is None else v + x
        return state["v"]
    if isinstance(node, ir.Delay):
        buf = state.setdefault("buf", [])
        buf.append(x)
        if len(buf) > node.steps:
            return buf.pop(0)
        return torch.zeros_like(x)
    raise NotImplementedError(f"no float kernel for node type {node.kind} ({node.name})")
