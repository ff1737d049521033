"""Loihi fixed-point kernels, bit-exact to lava-nc 0.10.0's bit-accurate process models:
LIF = PyLifModelBitAcc (lava/proc/lif/models.py), synapses = PySparseModelBitAcc / PyDenseModelBitAcc
(weighted sum of the 8-bit mantissas, then << weight_exp or arithmetic >> -weight_exp).

Integer values are carried in float64 tensors (exact below 2**53; much faster than integer convolutions on
CPU); every operation below keeps them integers."""
from __future__ import annotations

import numpy as np
import torch

from convert import ir

from . import kernels

STATE_MAX = 2 ** 23


def shift(node, a: torch.Tensor) -> torch.Tensor:
    """a << weight_exp, or arithmetic a >> -weight_exp (floor). weight_exp is one integer or one per output
    channel (axis 1 of a)."""
    e = node.weight_exp
    if np.ndim(e) == 0:
        e = int(e)
        if e >= 0:
            return a * (2.0 ** e)
        return torch.floor(a / (2.0 ** -e))
    e = torch.as_tensor(np.asarray(e, dtype=np.float64), dtype=a.dtype, device=a.device)
    e = e.view((1, -1) + (1,) * (a.dim() - 2))
    return torch.where(e >= 0, a * torch.exp2(e.clamp(min=0)), torch.floor(a / torch.exp2((-e).clamp(min=0))))


def _decay(x: torch.Tensor, factor: int) -> torch.Tensor:
    """trunc0(x * factor / 4096): Loihi's decay, rounding toward zero (exact in float64 below 2**53)."""
    if factor == 0:
        return torch.zeros_like(x)
    if factor == 4096:
        return x
    return torch.trunc(x * factor / 4096)


def lif_step(node: ir.LoihiLIF, a: torch.Tensor, state: dict, pc) -> torch.Tensor:
    """One step of PyLifModelBitAcc on integer-valued float64 tensors."""
    u, v = state.get("u"), state.get("v")
    uu = a * 64 if u is None else _decay(u, 4096 - (node.du + 1)) + a * 64
    if uu.numel() and float(uu.abs().max()) >= STATE_MAX:  # lava's 24-bit wrap of u
        w = torch.where(uu > STATE_MAX, uu - 2 * STATE_MAX, uu)
        uu = torch.where(w <= -STATE_MAX, uu + 2 * STATE_MAX, w)
        state["u_wrapped"] = state.get("u_wrapped", 0) + int((w != uu).sum())
    state["u"] = uu
    vv = uu if v is None else _decay(v, 4096 - node.dv) + uu
    if node.bias_mant is not None:
        b = pc.get(node, "bias_mant", a) * (2 ** node.bias_exp)
        vv = vv + b.view((1, -1) + (1,) * (a.dim() - 2))
    if vv.numel() and float(vv.abs().max()) >= STATE_MAX - 1:  # v saturates at 24 bit
        state["saturated"] = state.get("saturated", 0) + int((vv.abs() >= STATE_MAX - 1).sum())
        vv = vv.clamp(-(STATE_MAX - 1), STATE_MAX - 1)
    s = vv > (node.vth * 64)
    if node.readout:
        state["v"] = vv
        state["fired"] = state.get("fired", 0) + int(s.sum())
        return vv
    state["v"] = vv.masked_fill(s, 0.0)
    return s.to(a.dtype)


def step(node: ir.Node, inp: dict, state: dict, pc, t: int, input_scale: int, f32: bool = False):
    """`f32`: this synapse's integer sums provably stay below 2**24 (see `float32_exact_synapses`), so they
    are computed in float32, exactly, and much faster than float64 on CPU."""
    x = inp.get("in")
    if isinstance(node, ir.LoihiLIF):
        return lif_step(node, x, state, pc)
    if node.is_synapse:
        saved = node.weight_exp
        try:
            node.weight_exp = 0  # the float kernel computes the integer weighted sum; the shift is Loihi's
            if f32:
                y = kernels.step(node, {"in": x.float()}, state, pc, t).double()
            else:
                y = kernels.step(node, inp, state, pc, t)
        finally:
            node.weight_exp = saved
        return shift(node, y)
    if isinstance(node, (ir.LIF, ir.Threshold, ir.Integrator)):
        raise TypeError(f"{node.name}: {node.kind} in a fixed-point graph; quantize the graph first")
    return kernels.step(node, inp, state, pc, t)


def value_bounds(g: ir.Graph, input_scale: int) -> dict[str, float]:
    """An upper bound of |output| of every node of a fixed-point graph (spikes 1, graded payloads and synaptic
    sums from the weights), used to prove that float32 sums are exact."""

    bound: dict[str, float] = {}
    for name in g.topo_order():
        node = g.nodes[name]
        ins = sum(bound[e.src] for e in g.in_edges(name))
        if isinstance(node, ir.Input):
            bound[name] = float(input_scale)
        elif isinstance(node, ir.LoihiLIF):
            bound[name] = float(STATE_MAX) if node.readout else 1.0
        elif isinstance(node, ir.ProductNeuron):
            a = sum(bound[e.src] for e in g.in_edges(name, "in1"))
            b = sum(bound[e.src] for e in g.in_edges(name, "in2"))
            bound[name] = a * b
        elif node.is_synapse:
            w = node.weight
            if isinstance(w, np.ndarray):
                row = float(np.abs(w).reshape(w.shape[0], -1).sum(1).max())
            elif isinstance(node, ir.AxisSynapse):
                row = abs(float(w)) * node.fan_in
            else:  # SumPool2d
                row = abs(float(w)) * node.kernel[0] * node.kernel[1]
            bound[name] = row * ins * 2.0 ** max(float(np.max(node.weight_exp)), 0.0)
        else:
            bound[name] = ins
    return bound


def float32_exact_synapses(g: ir.Graph, input_scale: int) -> set[str]:
    b = value_bounds(g, input_scale)
    return {n for n, node in g.nodes.items() if node.is_synapse and b[n] < 2 ** 24}


def encode_input(images: torch.Tensor, input_scale: int) -> torch.Tensor:
    return torch.round(images.clamp(0, 1) * input_scale)
