"""Loihi's fixed-point arithmetic facts that both sides use: the fixed-point simulator (sim.fixed_point) and
the Lava side (lava_matrices, lava_graph, lava_run), which never import each other (docs/loihi_fixed_point.md).

- state range: u wraps and v saturates in 24-bit two's complement (lava-nc 0.10.0, lif/models.py);
- synaptic input: 16 bit on chip (the LIF's a_in port);
- input encoding: the image as a graded payload round(clip(x, 0, 1) * input_scale); event frames (spike counts
  per polarity, pixel and step) as graded payloads round(count * input_scale), only clipped at the payload's
  range (the quantiser records which);
- value bounds: an upper bound of |output| of every node of a quantised graph, from its weights."""
from __future__ import annotations

import numpy as np

from convert import ir

from . import limits as L

STATE_RANGE = 2 ** (L.STATE_BITS - 1)  # u wraps beyond +-2**23; v saturates at +-(2**23 - 1) = limits.STATE_MAX
ACTIVATION_MAX = L.ACTIVATION_MAX      # |a_in| on chip (16-bit synaptic input)


PAYLOAD_MAX = L.GRADED_PAYLOAD_MAX  # the graded input payload's range


def encode_input(images, input_scale: int, counts: bool = False):
    """The graded input payload of a torch tensor (round half to even): round(clip(x, 0, 1) * input_scale) for
    an image, round(clip(x * input_scale, 0, PAYLOAD_MAX)) for event counts (`counts`)."""
    if counts:
        return (images * input_scale).clamp(0, PAYLOAD_MAX).round()
    return (images.clamp(0, 1) * input_scale).round()


def value_bounds(g: ir.Graph, input_scale: int) -> dict[str, float]:
    """An upper bound of |output| of every node of a fixed-point graph (spikes 1, graded payloads and synaptic
    sums from the weights): proves that float32 sums are exact and that graded payloads fit their messages."""
    bound: dict[str, float] = {}
    shifted: dict[str, float] = {}  # a synapse's output after its negative exponent's shift (what a neuron adds)
    shapes = g.shapes() if g.of_type(ir.BiasSource) else {}
    for name in g.topo_order():
        node = g.nodes[name]
        ins = sum(shifted.get(e.src, bound[e.src]) for e in g.in_edges(name))
        if isinstance(node, ir.Input):  # event counts: only the payload's range bounds them
            bound[name] = float(PAYLOAD_MAX if g.metadata.get("input_per_step") else input_scale)
        elif isinstance(node, ir.BiasSource):
            bound[name] = abs(float(node.payload))
        elif isinstance(node, ir.LoihiLIF):
            bound[name] = float(STATE_RANGE) if node.readout else 1.0
        elif isinstance(node, ir.ProductNeuron):
            a = sum(bound[e.src] for e in g.in_edges(name, "in1"))
            b = sum(bound[e.src] for e in g.in_edges(name, "in2"))
            bound[name] = a * b
        elif node.is_synapse:
            w = node.weight
            src = g.in_edges(name)[0].src
            if isinstance(g.nodes[src], ir.BiasSource) and shapes[src] == (1, 1, 1):
                row = float(np.abs(w).max())  # from a single neuron each output reads one tap (a position map)
            elif isinstance(w, np.ndarray):
                row = float(np.abs(w).reshape(w.shape[0], -1).sum(1).max())
            elif isinstance(node, ir.AxisSynapse):
                row = abs(float(w)) * node.fan_in
            else:  # SumPool2d
                row = abs(float(w)) * node.kernel[0] * node.kernel[1]
            bound[name] = row * ins * 2.0 ** max(float(np.max(node.weight_exp)), 0.0)
            if float(np.max(node.weight_exp)) < 0:  # floor(x 2**e): |.| <= |x| 2**e + 1
                shifted[name] = row * ins * 2.0 ** float(np.max(node.weight_exp)) + 1.0
        elif isinstance(node, ir.GradedRelu):  # relu: a non-positive constant input (the padding) only lowers it
            bound[name] = sum(shifted.get(e.src, bound[e.src]) for e in g.in_edges(name)
                              if not _non_positive_constant(g, e.src))
        else:
            bound[name] = ins
    return bound


def _non_positive_constant(g: ir.Graph, syn: str) -> bool:
    """A synapse from the bias source whose weights are all <= 0 (its output is a constant <= 0)."""
    node = g.nodes[syn]
    srcs = [e.src for e in g.in_edges(syn)]
    return node.is_synapse and bool(srcs) and all(isinstance(g.nodes[s], ir.BiasSource) for s in srcs) and \
        bool(np.all(np.asarray(node.weight) <= 0))
