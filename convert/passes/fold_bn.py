"""Fold each BatchNorm (eval statistics) into the conv/linear synapse in front of it:
W' = W * g / sqrt(var + eps) per output channel, b' = (b - mean) * g / sqrt(var + eps) + beta."""
from __future__ import annotations

import numpy as np

from .. import ir


class FoldError(ValueError):
    pass


def run(g: ir.Graph) -> ir.Graph:
    for bn in g.of_type(ir.BatchNorm):
        srcs = g.in_edges(bn.name)
        if len(srcs) != 1 or not isinstance(g.nodes[srcs[0].src], (ir.Conv1d, ir.Conv2d)):
            raise FoldError(f"{bn.name}: BatchNorm must follow exactly one conv/linear to be folded")
        syn = g.nodes[srcs[0].src]
        if len(g.out_edges(syn.name)) != 1:
            raise FoldError(f"{bn.name}: {syn.name} feeds other nodes too; folding would change them")
        var = bn.running_var
        if np.any(var + bn.eps <= 0):
            raise FoldError(f"{bn.name}: running_var + eps <= 0 in channels "
                            f"{np.flatnonzero(var + bn.eps <= 0)[:8].tolist()}")
        gain = bn.weight / np.sqrt(var + bn.eps)
        bias = syn.bias if syn.bias is not None else np.zeros_like(bn.running_mean)
        syn.weight = syn.weight * gain.reshape((-1,) + (1,) * (syn.weight.ndim - 1))
        syn.bias = (bias - bn.running_mean) * gain + bn.bias
        syn.source = syn.source  # the synapse keeps its own module name; the BN's name goes to the record
        g.metadata.setdefault("folded_batchnorm", {})[bn.name] = syn.name
        g.redirect_outputs(bn.name, syn.name)
        g.remove(bn.name)
    return g
