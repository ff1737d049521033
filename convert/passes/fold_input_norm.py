"""Fold the model's input normalisation (an InputNorm node) into the convolution after it, for targets that take
raw 8-bit pixels (Loihi: the payload is the pixel value). Per input channel c, y = (255 x - m[c]) / s[c] with
m = mean255, s = std255; the convolution then sees y zero-padded. On raw x:

    W'[o, c, kh, kw] = W[o, c, kh, kw] * 255 / s[c]
    b'[o, i, j]      = b[o] - sum over the taps (c, kh, kw) of output (i, j) that fall inside the image of
                       W[o, c, kh, kw] * m[c] / s[c]

The padding is zero in normalised space, i.e. the mean in raw space, so border neurons lose the mean terms of
their outside taps: the bias is per neuron [O, H', W'] (docs/loihi_fixed_point.md, "Input normalisation").
Run after fold_bn (the BatchNorm's gain then already sits in W and b): a BatchNorm still behind the conv is
refused."""
from __future__ import annotations

import numpy as np

from .. import ir
from .fold_bn import FoldError


def inside_taps(n: int, k: int, stride: int, pad: int) -> np.ndarray:
    """[k, n_out] 0/1: whether tap t of output position i reads an input row inside 0..n-1."""
    n_out = (n + 2 * pad - k) // stride + 1
    rows = np.arange(n_out)[None, :] * stride - pad + np.arange(k)[:, None]
    return ((rows >= 0) & (rows < n)).astype(np.float64)


def fold_into(conv: ir.Conv2d, norm: ir.InputNorm, in_shape: tuple) -> dict:
    """Rewrites `conv` to take raw x; returns the record of the fold."""
    c_in, h, w = in_shape
    m = np.asarray(norm.mean255, dtype=np.float64)
    s = np.asarray(norm.std255, dtype=np.float64)
    o, c_group = conv.weight.shape[:2]
    # the input channel each weight reads: output o belongs to group o // (O / groups)
    channel = (np.arange(o) // (o // conv.groups))[:, None] * c_group + np.arange(c_group)[None, :]
    mean_terms = np.einsum("ockl,oc->okl", conv.weight, (m / s)[channel])  # per output channel and tap
    border = np.einsum("okl,ki,lj->oij", mean_terms, inside_taps(h, conv.weight.shape[2], conv.stride[0],
                                                                  conv.padding[0]),
                       inside_taps(w, conv.weight.shape[3], conv.stride[1], conv.padding[1]))
    bias = np.zeros(o) if conv.bias is None else np.asarray(conv.bias, dtype=np.float64)
    if bias.ndim != 1:
        raise FoldError(f"{conv.name}: already has a per-neuron bias; the input normalisation is folded once")
    conv.weight = conv.weight * (255.0 / s)[channel][:, :, None, None]
    conv.bias = bias[:, None, None] - border
    return {"folded_into": conv.name, "bias_range": [float(conv.bias.min()), float(conv.bias.max())],
            "border_terms_range": [float(-border.max()), float(-border.min())]}


def run(g: ir.Graph) -> ir.Graph:
    """Folds every InputNorm into the Conv2d layers it feeds (each must have it as its only input)."""
    shapes = None
    for norm in g.of_type(ir.InputNorm):
        shapes = shapes or g.shapes()
        src = g.in_edges(norm.name)
        outs = g.out_edges(norm.name)
        convs = [g.nodes[e.dst] for e in outs]
        if len(src) != 1 or not outs or not all(isinstance(c, ir.Conv2d) and len(g.in_edges(c.name)) == 1
                                                for c in convs):
            raise FoldError(f"{norm.name}: the input normalisation must feed convolutions that take nothing else "
                            f"to be folded (it feeds {[c.name for c in convs]})")
        for c in convs:
            if any(isinstance(g.nodes[e.dst], ir.BatchNorm) for e in g.out_edges(c.name)):
                raise FoldError(f"{norm.name}: fold the BatchNorm after {c.name} first (fold_bn), then the input "
                                f"normalisation")
        records = [fold_into(c, norm, shapes[src[0].src]) for c in convs]
        g.redirect_outputs(norm.name, src[0].src)
        g.remove(norm.name)
        g.metadata.setdefault("folded_input_norm", {})[norm.name] = {
            "mean255": list(norm.mean255), "std255": list(norm.std255),
            "mean": [v / 255 for v in norm.mean255], "std": [v / 255 for v in norm.std255],
            "folds": records}
    return g
