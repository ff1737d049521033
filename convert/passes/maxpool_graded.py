"""A max-pool over graded values (the Spike-driven Transformer's MS_SPS max-pools its last BatchNorm's output) as
a chain of graded ReLU neurons, from max(m, a) = m + relu(a - m) (docs/sdt_lowering.md, rewrite 2):

- `<pool>.in`: a graded relay (GradedNeuron, vth 0: emits its input) of the pooled values r, so that every later
  synapse reads a population;
- the window's taps in raster order, starting with a tap `c` that lies inside the image for every output
  position (the centre for the usual kernel 3, stride 2, padding 1): m_0 = r[c];
- `<pool>.relu<k>` (GradedRelu, vth 0) for every other tap t_k: R_k = relu(r[t_k] - m_(k-1)) with
  m_(k-1) = r[c] + R_1 + ... + R_(k-1), read as a depthwise Conv2d from the relay (+1 at t_k, -1 at c) plus an
  identity (weight -1) from each earlier R_j;
- `<pool>.max` (a graded relay): m = r[c] + R_1 + ... + R_8, the max, which the max-pool's readers now read.

Exact in real arithmetic (and so on integers): m_k = max(m_(k-1), r[t_k]). A tap in the max-pool's padding counts
as -infinity upstream; here its value is the conv's zero padding plus a per-neuron bias -M_c with M_c larger than
any |r| can be (channel c's bias plus the L1 norm of its weights times the number of spike streams it reads, the
input being 0/1 spikes), so relu(-M_c - m) = 0 exactly and such a tap never changes m. In float semantics
m + (a - m) may differ from a in the last bit (the readers' spikes are what parity compares). The chain start is
in every window, so a padded tap is only ever the subtracted-from side. `metadata["graded_maxpool"]` records each
chain's taps and the bound M per channel."""
from __future__ import annotations

import numpy as np

from .. import ir


class GradedMaxPoolError(ValueError):
    pass


def _input_bound(g: ir.Graph, syn: ir.Node) -> np.ndarray:
    """Per output channel, a bound of |syn's output| when syn is a Conv2d reading 0/1 spikes."""
    srcs = g.in_edges(syn.name)
    if not isinstance(syn, ir.Conv2d) or not srcs or not all(g.nodes[e.src].spiking for e in srcs):
        raise GradedMaxPoolError(f"{syn.name}: a max-pool over graded values must read a Conv2d driven by spikes "
                                 f"(its values are then bounded), got {syn.kind} reading "
                                 f"{[g.nodes[e.src].kind for e in srcs]}")
    w = np.abs(syn.weight).reshape(syn.weight.shape[0], -1).sum(1) * len(srcs)
    b = np.zeros_like(w) if syn.bias is None else np.abs(np.asarray(syn.bias)).reshape(len(w), -1).max(1)
    return w + b


def _in_bounds(n_in: int, n_out: int, k: int, s: int, p: int) -> np.ndarray:
    """[k, n_out]: whether tap i of output position y reads a real input (not padding)."""
    pos = np.arange(n_out)[None, :] * s - p + np.arange(k)[:, None]
    return (pos >= 0) & (pos < n_in)


def _depthwise(name: str, source: str, c: int, taps: dict, kernel, stride, padding, bias=None) -> ir.Conv2d:
    w = np.zeros((c, 1, *kernel))
    for (i, j), v in taps.items():
        w[:, 0, i, j] = v
    return ir.Conv2d(name, source, weight=w, bias=bias, stride=tuple(stride), padding=tuple(padding), groups=c)


def run(g: ir.Graph) -> ir.Graph:
    shapes = g.shapes()
    for mp in g.of_type(ir.MaxPool2d):
        srcs = g.in_edges(mp.name)
        if len(srcs) != 1 or g.nodes[srcs[0].src].spiking:
            continue  # spikes: maxpool_or
        src = srcs[0].src
        c, h, w = shapes[src]
        _, ho, wo = shapes[mp.name]
        (kh, kw), (sh, sw), (ph, pw) = mp.kernel, mp.stride, mp.padding
        rows, cols = _in_bounds(h, ho, kh, sh, ph), _in_bounds(w, wo, kw, sw, pw)
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        inside = [t for t in taps if rows[t[0]].all() and cols[t[1]].all()]
        if not inside:
            raise GradedMaxPoolError(f"{mp.name}: no tap of the {kh}x{kw} window lies inside the image for every "
                                     f"output position (stride {mp.stride}, padding {mp.padding})")
        centre = (kh // 2, kw // 2)
        start = centre if centre in inside else inside[0]
        bound = _input_bound(g, g.nodes[src])
        pad_bias = -(2.0 * bound + 1.0)
        geometry = dict(kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw))
        relay = g.add(ir.GradedNeuron(f"{mp.name}.in", mp.source, vth=0.0), src)
        chain = []
        for t in (t for t in taps if t != start):
            real = rows[t[0]][:, None] & cols[t[1]][None, :]  # [ho, wo]
            bias = None if real.all() else np.where(real[None], 0.0, pad_bias[:, None, None])
            relu = g.unique_name(f"{mp.name}.relu{len(chain) + 1}")
            syn = g.add(_depthwise(f"{relu}.taps", mp.source, c, {t: 1.0, start: -1.0}, **geometry, bias=bias), relay)
            ins = [syn]
            for prev in chain:
                ins.append(g.add(_depthwise(f"{relu}.from_{prev.rsplit('.', 1)[-1]}", mp.source, c, {(0, 0): -1.0},
                                            (1, 1), (1, 1), (0, 0)), prev))
            g.add(ir.GradedRelu(relu, mp.source, vth=0.0), *ins)
            chain.append(relu)
        out_edges = g.out_edges(mp.name)
        g.remove(mp.name)
        ins = [g.add(_depthwise(f"{mp.name}.max.start", mp.source, c, {start: 1.0}, **geometry), relay)]
        for prev in chain:
            ins.append(g.add(_depthwise(f"{mp.name}.max.{prev.rsplit('.', 1)[-1]}", mp.source, c, {(0, 0): 1.0},
                                        (1, 1), (1, 1), (0, 0)), prev))
        top = g.add(ir.GradedNeuron(f"{mp.name}.max", mp.source, vth=0.0), *ins)
        g.edges.extend(ir.Edge(top, e.dst, e.port) for e in out_edges)
        g.metadata.setdefault("graded_maxpool", {})[mp.name] = {
            "start_tap": list(start), "taps": [list(t) for t in taps if t != start], "relu": chain,
            "padding_bias_per_channel": [float(x) for x in pad_bias]}
    return g
