"""The weight matrices of a Lava network, computed on the parent side of the Lava process boundary (with torch:
the IR kernels of convert.kernels; the isolated Lava worker gets them ready-made and imports neither torch nor
this module; lava_graph's docstring says what the Lava side does with them).

Every weight matrix is materialised from the IR node (conv, sum pool, axis synapse, ...) as a CSR matrix (lava's
Sparse holds only the synapses that exist): a convolution or a sum pool straight from its structure
(conv_matrix), any other synapse by applying the node's own kernel to unit inputs, chunk by chunk, keeping only
the nonzero entries, so building costs n_pre x n_post kernel outputs once but the memory is that of the
synapses; networks whose projections exceed `max_matrix_entries` are refused before building (build_size).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from convert import ir, kernels  # the IR kernels (same code the simulators use)

from hardware.loihi.numerics import value_bounds

from .lava_conventions import GRADED_MESSAGE_BITS, LavaGraphError
from .timing import Projection

# build-time bound per projection (build_size): a convolution's synapses, or the (post x pre) kernel outputs of
# the unit-vector build of any other synapse (the digits demo model's largest: 1024 x 1024 tokens; cifar10-4-384's
# token projections are 24,576 x 24,576 = 6e8, minutes each)
DEFAULT_MAX_MATRIX_ENTRIES = 2 ** 25
MATRIX_CHUNK_ENTRIES = 4_000_000  # dense kernel outputs held at once while building (32 MB of float64)


def synapse_matrix(g: ir.Graph, proj: Projection, shapes: dict | None = None,
                   max_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> sp.csr_matrix:
    """Integer weight mantissas of one projection as a CSR matrix (post_flat, pre_flat), without weight_exp.

    Built from the structure of a convolution or sum pool (STRUCTURED_SYNAPSES), else by running the synapse
    node's float kernel (convert.kernels) on the unit vectors of the pre population, reshaped through the layout
    nodes (Flatten = identity on row-major flat indices)."""
    shapes = shapes or g.shapes()
    node = g.nodes[proj.synapse]
    if not node.is_synapse:
        raise LavaGraphError(f"{proj.synapse}: {node.kind} is not a synapse")
    if getattr(node, "bias", None) is not None:
        raise LavaGraphError(f"{proj.synapse}: synapse still has a bias (quantise the graph first)")
    in_edge_srcs = {e.src for e in g.in_edges(proj.synapse)}
    feed = proj.via[-1] if proj.via else proj.pre
    if feed not in in_edge_srcs:
        raise LavaGraphError(f"{proj.synapse}: projection input {feed} is not an input of the node")
    in_shape = shapes[feed]
    out_shape = shapes[proj.synapse]
    n_pre, n_post = math.prod(shapes[proj.pre]), math.prod(out_shape)
    if math.prod(in_shape) != n_pre:
        raise LavaGraphError(f"{proj.synapse}: layout {proj.via} changes the size of {proj.pre}")
    _check_build_size(proj, node, n_pre, n_post, max_entries)
    structured = STRUCTURED_SYNAPSES.get(type(node))
    if structured is not None:
        return structured[0](node, in_shape, out_shape)
    parts = []
    chunk = max(1, MATRIX_CHUNK_ENTRIES // max(n_post, 1))
    saved = node.weight_exp
    try:
        node.weight_exp = 0  # the mantissas only; weight_exp goes to the Sparse process
        for start in range(0, n_pre, chunk):
            stop = min(n_pre, start + chunk)
            eye = torch.zeros(stop - start, n_pre, dtype=torch.float64)
            eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            y = kernels.step(node, {"in": eye.reshape(stop - start, *in_shape)}, {}, kernels.ParamCache(), 0)
            block = y.reshape(stop - start, n_post).numpy()
            if not np.all(block == np.rint(block)):
                raise LavaGraphError(f"{proj.synapse}: weights are not integer mantissas (quantise the graph first)")
            parts.append(sp.csr_matrix(block.astype(np.int32)))  # (pre chunk, post), zeros dropped
    finally:
        node.weight_exp = saved
    return sp.vstack(parts, format="csr").T.tocsr()  # (post, pre)


def conv_matrix(node, in_shape, out_shape) -> sp.csr_matrix:
    """The CSR matrix (post_flat, pre_flat) of a Conv2d / Conv1d straight from its weight, stride, padding and
    groups (row-major (C, H, W) / (C, L) flat indices): one entry per nonzero tap and output position whose input
    lies inside the image (zero padding contributes nothing). Same result as running the kernel on unit inputs
    (tests/test_lava_matrices.py), in time proportional to the synapses."""
    w = np.asarray(node.weight)
    if not np.all(w == np.rint(w)):
        raise LavaGraphError(f"{node.name}: weights are not integer mantissas (quantise the graph first)")
    if isinstance(node, ir.Conv1d):  # (C, L) as (C, 1, L)
        w = w[:, :, None, :]
        in_shape, out_shape = (in_shape[0], 1, in_shape[1]), (out_shape[0], 1, out_shape[1])
        stride, padding = (1, int(node.stride)), (0, int(node.padding))
    else:
        stride, padding = tuple(node.stride), tuple(node.padding)
    cin, hi, wi = in_shape
    cout, ho, wo = out_shape
    per_group_out = cout // node.groups
    o, ci, ky, kx = np.nonzero(w)
    vals = w[o, ci, ky, kx].astype(np.int32)
    c = ci + (o // per_group_out) * w.shape[1]           # the input channel of each tap
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    oy, ox = oy.reshape(-1, 1), ox.reshape(-1, 1)          # output positions x taps
    iy = oy * stride[0] - padding[0] + ky
    ix = ox * stride[1] - padding[1] + kx
    inside = (iy >= 0) & (iy < hi) & (ix >= 0) & (ix < wi)
    rows = (o * (ho * wo) + oy * wo + ox)[inside]
    cols = (c * (hi * wi) + iy * wi + ix)[inside]
    data = np.broadcast_to(vals, inside.shape)[inside]
    m = sp.csr_matrix((data, (rows, cols)), shape=(cout * ho * wo, cin * hi * wi), dtype=np.int32)
    m.sum_duplicates()
    return m


def sum_pool_as_conv(node: ir.SumPool2d, channels: int) -> ir.Conv2d:
    """A sum pool is a depthwise convolution whose taps all carry the pool's weight (zero padding)."""
    w = np.full((channels, 1, *node.kernel), float(node.weight))
    return ir.Conv2d(name=node.name, weight=w, stride=tuple(node.stride), padding=tuple(node.padding),
                     groups=channels)


def _sum_pool_matrix(node: ir.SumPool2d, in_shape, out_shape) -> sp.csr_matrix:
    return conv_matrix(sum_pool_as_conv(node, in_shape[0]), in_shape, out_shape)


def _conv_synapses(node, n_post: int) -> int:
    return int(np.count_nonzero(node.weight)) * (n_post // node.weight.shape[0])


def _sum_pool_synapses(node: ir.SumPool2d, n_post: int) -> int:
    return n_post * node.kernel[0] * node.kernel[1]


# the synapse kinds whose matrix is built from their structure, in time proportional to their synapses:
# kind -> (matrix builder, synapse count); any other synapse is built from its kernel on unit inputs
STRUCTURED_SYNAPSES = {ir.Conv2d: (conv_matrix, _conv_synapses), ir.Conv1d: (conv_matrix, _conv_synapses),
                       ir.SumPool2d: (_sum_pool_matrix, _sum_pool_synapses)}


def build_size(node, n_pre: int, n_post: int) -> tuple[int, str]:
    """What building a projection's matrix costs: the synapses of a convolution or sum pool (built from its
    structure, STRUCTURED_SYNAPSES), else the n_post x n_pre kernel outputs of the unit-vector build; and how to say it."""
    structured = STRUCTURED_SYNAPSES.get(type(node))
    if structured is not None:
        n = structured[1](node, n_post)
        return n, f"{n:,} synapses"
    return n_pre * n_post, f"weight matrix {n_post} x {n_pre} = {n_pre * n_post:,} entries"


def _check_build_size(proj: Projection, node, n_pre: int, n_post: int, max_entries: int) -> int:
    n, what = build_size(node, n_pre, n_post)
    if n > max_entries:
        raise LavaGraphError(
            f"{proj.synapse} ({node.kind}, from {node.source or '?'}): {what} exceeds the limit of {max_entries:,} "
            f"for building Lava matrices; the Lava cross-check is only for small networks")
    return n


def check_matrix_sizes(g: ir.Graph, schedule: dict, max_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> int:
    """Raises LavaGraphError naming the first projection whose matrix would exceed `max_entries` to build
    (build_size; before any matrix is built); returns the largest size."""
    shapes = g.shapes()
    largest = 0
    for proj in schedule["projections"]:
        node = g.nodes[proj.synapse]
        n = _check_build_size(proj, node, math.prod(shapes[proj.pre]), math.prod(shapes[proj.synapse]), max_entries)
        largest = max(largest, n)
    return largest


def lava_weight_rules_csr(w: sp.csr_matrix, num_weight_bits: int = 8) -> sp.csr_matrix:
    """What lava's bit-accurate Sparse does to the matrix on its first step (clip_weights, truncate_weights
    with the sign mode determined from the matrix itself; lava/proc/sparse/models.py)."""
    # the one lava import of the parent side: lava's own rule, not a copy of it (lava.utils is light)
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    mode = determine_sign_mode(w)
    out = clip_weights(w, mode, num_bits=8)
    return truncate_weights(out, mode, num_weight_bits)


def check_graded_payloads(graph: ir.Graph) -> dict:
    """Upper bounds of the graded payloads (numerics.value_bounds); raises LavaGraphError where one does
    not fit the 24-bit signed payload of GradedVec / ProdNeuron (the image's payload is bounded by input_payload_scale)."""
    bounds = value_bounds(graph, int(graph.metadata.get("input_payload_scale", 255)))
    out = {}
    for name, node in graph.nodes.items():
        if node.is_graded:
            out[name] = bounds[name]
            if bounds[name] > 2 ** (GRADED_MESSAGE_BITS - 1) - 1:
                raise LavaGraphError(f"{name}: graded payload bound {bounds[name]:g} does not fit "
                                     f"{GRADED_MESSAGE_BITS}-bit signed messages")
    return out


def prepare_matrices(graph: ir.Graph, schedule: dict,
                     max_matrix_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> list[sp.csr_matrix]:
    """The weight mantissas of every projection (schedule order), checked against lava's weight rules, after
    checking the graded payload bounds. Needs torch (the IR kernels); build_lava_network takes the result."""
    check_graded_payloads(graph)
    shapes = graph.shapes()
    out = []
    for proj in schedule["projections"]:
        w = synapse_matrix(graph, proj, shapes, max_matrix_entries)
        lw = lava_weight_rules_csr(w)
        if (lw != w).nnz:
            raise LavaGraphError(f"{proj.synapse}: lava's clip/truncate weight rules would change "
                                 f"{(lw != w).nnz} weights of the projection {proj.pre} -> {proj.post}")
        out.append(w)
    return out
