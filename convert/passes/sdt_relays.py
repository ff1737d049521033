"""The Spike-driven Transformer's float stream on a chip's terms (docs/sdt_lowering.md, the Loihi form, steps 1-2):
every stream point is a graded relay population, every synapse reads a population and feeds one.

- `x_k = x_(k-1) + term_k` (an `Add`): a `GradedNeuron` relay `<add>.relay` (vth 0: emits its input) reads the
  previous relay through an identity synapse and the term's convolution directly (a synapse that reads spikes
  and now feeds this relay only). Where the sum joins images (MS_SPS: `rpe_conv` and the max-pool's `.max` relay,
  flattened to tokens), the relay is an image and its readers read its `Flatten`.
- Biases move to the readers: a relay has none (lava's GradedVec has no bias), so each term's bias (its folded
  BatchNorm, constant per channel) leaves the convolution and is summed along the chain; every reader (a LIF)
  reads its relay through its own identity synapse (depthwise, weight 1) that carries the sum so far as its bias.
  The head's mean over tokens becomes a depthwise `Conv1d` with kernel N and weight 1/N from the last relay, with
  that bias (C weights per tap instead of the AxisSynapse reading every term).
- The graded max-pool runs on bias-free values: max(r + b) = max(r) + b per channel, so the bias of the
  convolution it pools moves to the max's readers (its own reader's identity synapse, and the stream's sum).

Exact in real arithmetic (a relay with vth 0 emits its input; sums are regrouped). `metadata["stream_relays"]`
records each relay, what it reads and its readers."""
from __future__ import annotations

import numpy as np

from .. import ir
from .residual_graded import identity_synapse


class StreamRelayError(ValueError):
    pass


def _take_bias(node: ir.Node, c: int) -> np.ndarray:
    b = getattr(node, "bias", None)
    if b is None:
        return np.zeros(c)
    b = np.asarray(b, dtype=np.float64)
    if b.shape != (c,):
        raise StreamRelayError(f"{node.name}: a per-neuron bias {b.shape} cannot move to the stream's readers")
    node.bias = None
    return b


def run(g: ir.Graph) -> ir.Graph:
    shapes = dict(g.shapes())  # of the graph as it comes; new nodes are added as they are made
    carried: dict[str, np.ndarray] = {}  # population -> the bias its readers must add, per channel
    for pool in g.metadata.get("graded_maxpool", {}):
        conv = g.in_edges(f"{pool}.in")[0].src
        carried[f"{pool}.max"] = _take_bias(g.nodes[conv], shapes[conv][0])
    reads_from: dict[str, str] = {}  # Add -> what its readers read (its relay, or the relay's Flatten)
    record = {}
    for a in [n for n in g.topo_order() if isinstance(g.nodes[n], ir.Add)]:
        add = g.nodes[a]
        ins = [e.src for e in g.in_edges(a)]
        flat = all(isinstance(g.nodes[s], ir.Flatten) for s in ins)
        terms = [g.in_edges(s)[0].src for s in ins] if flat else ins
        relay = g.add(ir.GradedNeuron(f"{a}.relay", add.source, vth=0.0))
        shapes[relay] = shapes[terms[0]] if flat else shapes[a]
        bias = np.zeros(shapes[relay][0])
        for t in terms:
            node = g.nodes[t]
            if t in reads_from or node.is_population:  # an earlier stream point, or the max-pool's relay
                src = reads_from.get(t, t)
                pop = g.in_edges(src)[0].src if isinstance(g.nodes[src], ir.Flatten) else src
                bias = bias + carried.get(pop, 0.0)
                syn = g.add(identity_synapse(g.unique_name(f"{relay}.from_{pop}"), add.source, shapes[src]), src)
                g.connect(syn, relay)
            elif node.is_synapse and all(g.nodes[g.view_origin(e.src)].spiking for e in g.in_edges(t)):
                bias = bias + _take_bias(node, shapes[relay][0])
                g.edges = [e for e in g.edges if not (e.src == t and e.dst in (a, *ins))]
                g.connect(t, relay)
            else:
                raise StreamRelayError(f"{a}: a stream term {t} ({node.kind}) is neither a stream point, a graded "
                                       f"population nor a synapse driven by spikes")
        carried[relay] = bias
        out = relay
        if flat:
            out = g.add(ir.Flatten(f"{relay}.tokens", add.source), relay)
            shapes[out] = shapes[a]
        reads_from[a] = out
        readers = [e for e in g.out_edges(a) if not isinstance(g.nodes[e.dst], ir.Add)]
        for e in readers:
            _read(g, out, e, bias, shapes)
        record[a] = {"relay": relay, "terms": terms, "readers": [e.dst for e in readers]}
    for a in reads_from:
        g.remove(a)
    for n in [n for n, node in g.nodes.items() if isinstance(node, ir.Flatten) and not g.out_edges(n)]:
        g.remove(n)  # the terms' flattened views, which only the sums read
    for pool in g.metadata.get("graded_maxpool", {}):  # the max's own reader (proj_lif3) gets the pooled bias
        top = f"{pool}.max"
        for e in [e for e in g.out_edges(top) if g.nodes[e.dst].is_neuron]:
            _read(g, top, e, carried[top], shapes)
    g.metadata["stream_relays"] = record
    _padding_from_a_bias_source(g)
    return g


def _padding_from_a_bias_source(g: ir.Graph) -> None:
    """The graded max-pool's per-position padding bias (-M at padded taps) as synapses from one always-firing
    neuron: a Conv2d from its 1x1 output with kernel (Ho, Wo) and padding (Ho - 1, Wo - 1) reaches output (y, x)
    through kernel tap (Ho - 1 - y, Wo - 1 - x), so the kernel is the bias map flipped. Exact: 1 x w = w."""
    biased = [n for n, node in g.nodes.items() if node.is_synapse and getattr(node, "bias", None) is not None
              and any(g.nodes[e.dst].is_graded for e in g.out_edges(n))]
    if not biased:
        return
    src = g.add(ir.BiasSource("bias_source", "bias_source"))
    for name in biased:
        syn = g.nodes[name]
        b = np.asarray(syn.bias, dtype=np.float64)
        if b.ndim != 3:
            raise StreamRelayError(f"{name}: a bias {b.shape} into a graded population; expected one per neuron "
                                   f"(C, H, W)")
        c, ho, wo = b.shape
        syn.bias = None
        from_source = g.add(ir.Conv2d(f"{name}.bias", syn.source, weight=b[:, None, ::-1, ::-1].copy(),
                                      padding=(ho - 1, wo - 1)), src)
        for e in g.out_edges(name):
            g.connect(from_source, e.dst, e.port)


def _read(g: ir.Graph, out: str, e: ir.Edge, bias: np.ndarray, shapes: dict) -> None:
    """Reader e.dst of a stream point reads `out` (a relay or its Flatten) through its own synapse with `bias`."""
    dst = g.nodes[e.dst]
    g.edges = [x for x in g.edges if x != e]
    shape = shapes[out]
    if isinstance(dst, ir.AxisSynapse) and dst.in_axes == ("c", "n") and dst.out_axes == ("c", "one"):
        c, n = shape  # the head's token mean: a depthwise Conv1d, kernel N, weight 1/N, the bias carried
        outs = g.out_edges(dst.name)
        g.remove(dst.name)
        g.add(identity_synapse(dst.name, dst.source, shape, bias=bias.copy(), weight=dst.weight, kernel=n), out)
        g.edges.extend(outs)
        return
    if not dst.is_neuron:
        raise StreamRelayError(f"{e.dst} ({dst.kind}) reads the stream; its readers are neurons and the head's mean")
    syn = g.add(identity_synapse(g.unique_name(f"{e.dst}.from_stream"), dst.source, shape, bias=bias.copy()), out)
    g.connect(syn, e.dst, e.port)
