"""What one projection needs on the cores of a tiling, counted exactly from its synapse's structure (no synapse is
enumerated): per dimension of the post population and per interval of a tiling of that dimension, the
presynaptic indices that reach the interval and how many synapses each has there; per presynaptic neuron, how many
intervals (cores) it reaches. A conv (Conv2d, Conv1d, SumPool2d) is separable by dimension: channels through its
groups, each spatial axis through kernel, stride and padding. An AxisSynapse is separable into its output channel
part (the kept axes among the output's channel axes, a "key") and its token axis.

Two axon formats (docs/limits.md, section 4): "discrete" (one input axon per presynaptic neuron, its own synapse
list) and "population" (one axon per input position, the input channel carried in the spike; the kernel stored
once per distinct tap pattern on a core; nengo-loihi's convolution format, pop32). Where a profile keeps one
synapse format per axon (`per_format`), each exponent group of a synapse present on a core has its own axons.
Counts are structural: every
connection of the geometry counts, zero weights included (an upper bound where a trained weight is exactly 0)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convert import ir


@dataclass
class DimStats:
    """One post dimension cut into intervals of one tile extent; arrays over the intervals. `n` / `count` are
    [intervals, exponent groups, H]: `count` presynaptic indices along this dimension (discrete format) or
    `count` distinct weight sets (population format) have `n` targets inside the interval; padding has count 0."""
    starts: np.ndarray
    stops: np.ndarray
    reached: np.ndarray    # presynaptic indices along this dimension that reach the interval (axons: product)
    synapses: np.ndarray   # structural synapses, this dimension's factor
    n: np.ndarray
    count: np.ndarray


def intervals(size: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(0, size, t, dtype=np.int64)
    return a, np.minimum(a + t, size)


def _hist(interval: np.ndarray, n: np.ndarray, weight: np.ndarray | None, n_int: int, groups: np.ndarray | None = None,
          n_groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Padded [n_int, n_groups, H] arrays of the distinct n values per (interval, group) and their summed weight."""
    groups = np.zeros_like(interval) if groups is None else groups
    keep = n > 0
    interval, n, groups = interval[keep], n[keep], groups[keep]
    weight = np.ones_like(n) if weight is None else weight[keep]
    if n.size == 0:
        return np.zeros((n_int, n_groups, 1), np.int64), np.zeros((n_int, n_groups, 1), np.int64)
    nmax = int(n.max()) + 1
    code = (interval * n_groups + groups) * nmax + n
    u, inv = np.unique(code, return_inverse=True)
    w = np.bincount(inv, weights=weight.astype(np.float64)).astype(np.int64)
    cell, nv = u // nmax, u % nmax
    first = np.r_[True, cell[1:] != cell[:-1]]
    rank = np.arange(len(u)) - np.maximum.accumulate(np.where(first, np.arange(len(u)), 0))
    H = int(rank.max()) + 1
    n_out = np.zeros((n_int * n_groups, H), np.int64)
    c_out = np.zeros((n_int * n_groups, H), np.int64)
    n_out[cell, rank] = nv
    c_out[cell, rank] = w
    return n_out.reshape(n_int, n_groups, H), c_out.reshape(n_int, n_groups, H)


def tap_invariance(w: np.ndarray, nd: int) -> tuple:
    """Per spatial axis of a conv weight [C_out, C_in, *kernel]: whether every tap along it has the same weights
    (then one weight set serves every tap pattern along it)."""
    return tuple(bool(np.all(np.take(w, [0], axis=2 + d) == w)) for d in range(nd))


class ConvGeometry:
    """Conv2d, Conv1d or SumPool2d from input shape (C_in, *S_in) to output (C_out, *S_out). `invariance`:
    tap_invariance, or a memo of it (placement_memo.py)."""

    def __init__(self, node: ir.Node, in_shape: tuple, out_shape: tuple, invariance=tap_invariance):
        self.node, self.in_shape, self.out_shape = node, tuple(in_shape), tuple(out_shape)
        nd = len(in_shape) - 1
        if isinstance(node, ir.SumPool2d):
            self.groups, k, s, p = in_shape[0], tuple(node.kernel), tuple(node.stride), tuple(node.padding)
            invariant = (True,) * nd  # every tap has the same weight
        else:
            self.groups = node.groups
            k = tuple(node.weight.shape[2:])
            s = (node.stride,) * nd if np.ndim(node.stride) == 0 else tuple(node.stride)
            p = (node.padding,) * nd if np.ndim(node.padding) == 0 else tuple(node.padding)
            invariant = invariance(np.asarray(node.weight), nd)
        self.kernel, self.stride, self.padding, self.invariant = k, s, p, invariant
        self.cin_g, self.cout_g = in_shape[0] // self.groups, out_shape[0] // self.groups
        e = np.asarray(node.weight_exp)
        exps = np.broadcast_to(e, (out_shape[0],)) if e.ndim else np.zeros(out_shape[0], np.int64)
        _, self.exp_group = np.unique(exps, return_inverse=True)
        self.n_exp = int(self.exp_group.max()) + 1
        self.can_population = not isinstance(node, ir.SumPool2d) and self.groups == 1

    @property
    def signature(self) -> tuple:
        return ("conv", self.in_shape, self.out_shape, self.groups, self.kernel, self.stride, self.padding)

    # ---------------------------------------------------------------- per post dimension
    def dim_stats(self, d: int, t: int, population: bool, per_format: bool = False) -> DimStats:
        return self._channels(t, population, per_format) if d == 0 else self._spatial(d - 1, t, population)

    def _channels(self, t: int, population: bool, per_format: bool = False) -> DimStats:
        a, b = intervals(self.out_shape[0], t)
        n_int, G = len(a), self.n_exp
        onehot = np.zeros((G, self.out_shape[0] + 1), np.int64)
        onehot[self.exp_group, np.arange(self.out_shape[0]) + 1] = 1
        cum = np.cumsum(onehot, axis=1)
        length = b - a
        if population:  # atoms: every input channel; one weight set per exponent group
            per_g = (cum[:, b] - cum[:, a]).T  # [n_int, G]
            n = (per_g * self.in_shape[0])[:, :, None]
            reached = (per_g > 0).sum(1) if per_format else np.ones(n_int, np.int64)
            return DimStats(a, b, reached, length * self.in_shape[0], n, (n > 0).astype(np.int64))
        g0, g1 = a // self.cout_g, (b - 1) // self.cout_g
        reps = g1 - g0 + 1
        iv = np.repeat(np.arange(n_int), reps)
        gam = np.repeat(g0, reps) + (np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps))
        lo = np.maximum(a[iv], gam * self.cout_g)
        hi = np.minimum(b[iv], (gam + 1) * self.cout_g)
        per = (cum[:, hi] - cum[:, lo]).T  # [pairs, G]: out channels of conv group gam in the interval, per exponent
        pairs = np.repeat(iv, G)
        grp = np.tile(np.arange(G), len(iv))
        n, cnt = _hist(pairs, per.ravel(), np.full(per.size, self.cin_g), n_int, grp, G)
        reached = (np.bincount(iv, weights=(per > 0).sum(1), minlength=n_int).astype(np.int64) if per_format
                   else reps) * self.cin_g
        return DimStats(a, b, reached, length * self.cin_g, n, cnt)

    def _spatial_reach(self, d: int, a: np.ndarray, b: np.ndarray):
        """Per interval [a, b) of output positions: the input positions that can reach it (rows), how many outputs
        in the interval each reaches (n) and its first tap (the tap pattern is (first tap, n), taps step by the
        stride)."""
        N_in, k, s, p = self.in_shape[d + 1], self.kernel[d], self.stride[d], self.padding[d]
        lo = np.maximum(0, a * s - p)
        hi = np.minimum(N_in, (b - 1) * s - p + k)
        width = max(int((hi - lo).max()), 0) if len(a) else 0
        i = lo[:, None] + np.arange(width)[None, :]
        q = i + p
        o_hi = np.minimum(b[:, None] - 1, q // s)
        o_lo = np.maximum(a[:, None], -((k - 1 - q) // s))
        n = np.where(i < hi[:, None], np.maximum(o_hi - o_lo + 1, 0), 0)
        return i, n, q - o_hi * s

    def _spatial(self, d: int, t: int, population: bool) -> DimStats:
        a, b = intervals(self.out_shape[d + 1], t)
        n_int = len(a)
        i, n, first = self._spatial_reach(d, a, b)
        reached = (n > 0).sum(1)
        synapses = n.sum(1)
        iv = np.broadcast_to(np.arange(n_int)[:, None], n.shape).ravel()
        if not population:
            nn, cc = _hist(iv, n.ravel(), None, n_int)
            return DimStats(a, b, reached, synapses, nn, cc)
        key = n if self.invariant[d] else first * (self.kernel[d] + 1) + n  # one weight set per distinct key
        keep = n.ravel() > 0
        flat_iv, flat_key, flat_n = iv[keep], key.ravel()[keep], n.ravel()[keep]
        K = int(flat_key.max()) + 1 if flat_key.size else 1
        _, first_of = np.unique(flat_iv * K + flat_key, return_index=True)
        nn, cc = _hist(flat_iv[first_of], flat_n[first_of], None, n_int)
        return DimStats(a, b, reached, synapses, nn, cc)

    # ---------------------------------------------------------------- presynaptic side
    def _spatial_targets(self, d: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Per input position along spatial dim d: the first and last output tile (interval index) it reaches;
        last < first where it reaches none (padding only)."""
        N_in, N_out = self.in_shape[d + 1], self.out_shape[d + 1]
        k, s, p = self.kernel[d], self.stride[d], self.padding[d]
        q = np.arange(N_in) + p
        o_lo = np.maximum(0, -((k - 1 - q) // s))
        o_hi = np.minimum(N_out - 1, q // s)
        return np.where(o_lo <= o_hi, o_lo // t, 0), np.where(o_lo <= o_hi, o_hi // t, -1)

    def _channel_targets(self, t: int, per_format: bool) -> np.ndarray:
        """Per conv group: the output channel tiles its outputs lie in, each counted once per exponent group
        present there when `per_format`."""
        o = np.arange(self.out_shape[0])
        grp = self.exp_group if per_format else np.zeros_like(o)
        gam, cell = o // self.cout_g, (o // t) * self.n_exp + grp
        n_cells = (self.out_shape[0] // t + 1) * self.n_exp
        return np.bincount(np.unique(gam * n_cells + cell) // n_cells, minlength=self.groups)

    def sender_counts(self, extents: tuple, population: bool, per_format: bool = False):
        """Output axons each presynaptic neuron (discrete: array in the input shape) or position (population:
        array in the spatial input shape, times the returned factor) uses toward a post tiled with `extents`."""
        per_dim = []
        for d in range(len(self.kernel)):
            f, l_ = self._spatial_targets(d, extents[d + 1])
            per_dim.append(np.maximum(l_ - f + 1, 0))
        sp = per_dim[0] if len(per_dim) == 1 else np.multiply.outer(per_dim[0], per_dim[1])
        per_gam = self._channel_targets(extents[0], per_format)
        if population:
            return sp, int(per_gam[0])
        return np.multiply.outer(np.repeat(per_gam, self.cin_g), sp), 1

    def reach_indices(self, box: list[tuple[int, int]]) -> np.ndarray:
        """Flat indices (input shape) of the presynaptic neurons that reach the post box [(lo, hi) per dim]."""
        (a, b), rest = box[0], box[1:]
        g0, g1 = a // self.cout_g, (b - 1) // self.cout_g
        axes = [np.arange(g0 * self.cin_g, (g1 + 1) * self.cin_g)]
        for d, (lo, hi) in enumerate(rest):
            i, n, _ = self._spatial_reach(d, np.array([lo]), np.array([hi]))
            axes.append(i[0][n[0] > 0])
        return np.ravel_multi_index(np.ix_(*axes), self.in_shape).ravel()


class AxisGeometry:
    """AxisSynapse from (C_in, L_in) to (C_out, L_out): an output neuron o receives every input whose kept axes
    (named in both views) equal o's; the input's other axes are summed, the output's other axes broadcast."""

    def __init__(self, node: ir.AxisSynapse, in_shape: tuple, out_shape: tuple):
        self.node, self.in_shape, self.out_shape = node, tuple(in_shape), tuple(out_shape)
        sz = node.sizes
        kept = [a for a in node.in_axes if a in node.out_axes]
        self.key_axes = [a for a in node.out_axes[:-1] if a in kept]
        self.token_kept = node.out_axes[-1] in kept
        self.summed = math.prod(sz[a] for a in node.in_axes if a not in node.out_axes)
        self.key_sizes = [sz[a] for a in self.key_axes]
        out_idx = np.unravel_index(np.arange(out_shape[0]), [sz[a] for a in node.out_axes[:-1]])
        pos = {a: i for i, a in enumerate(node.out_axes[:-1])}
        self.out_code = (np.ravel_multi_index([out_idx[pos[a]] for a in self.key_axes], self.key_sizes)
                         if self.key_axes else np.zeros(out_shape[0], np.int64))
        self.n_exp = 1
        self.can_population = False
        self._in_code = None

    def _over_inputs(self, per_key: np.ndarray) -> np.ndarray:
        """An array over the key axes, broadcast to every presynaptic neuron (input shape)."""
        sz, ax = self.node.sizes, self.node.in_axes
        order = [self.key_axes.index(a) for a in ax if a in self.key_axes]
        arr = per_key.reshape(self.key_sizes).transpose(order) if self.key_axes else per_key.reshape(())
        arr = arr.reshape([sz[a] if a in self.key_axes else 1 for a in ax])
        return np.broadcast_to(arr, [sz[a] for a in ax]).reshape(self.in_shape)

    def _in_index(self):
        """Per presynaptic neuron (flat): its key code and its value on the output's token axis (None: broadcast)."""
        if self._in_code is None:
            nk = max(math.prod(self.key_sizes), 1)
            code = self._over_inputs(np.arange(nk)).ravel()
            tok = None
            if self.token_kept:
                sz, ax = self.node.sizes, self.node.in_axes
                t = self.node.out_axes[-1]
                shape = [sz[a] if a == t else 1 for a in ax]
                tok = np.broadcast_to(np.arange(sz[t]).reshape(shape), [sz[a] for a in ax]).ravel()
            self._in_code = (code, tok)
        return self._in_code

    @property
    def signature(self) -> tuple:
        n = self.node
        return ("axis", self.in_shape, self.out_shape, tuple(n.in_axes), tuple(n.out_axes),
                tuple(sorted(n.sizes.items())))

    def _codes_per_interval(self, t: int):
        a, b = intervals(self.out_shape[0], t)
        iv = np.arange(self.out_shape[0]) // t
        nk = max(math.prod(self.key_sizes), 1)
        u, m = np.unique(iv * nk + self.out_code, return_counts=True)
        return a, b, u // nk, u % nk, m

    def dim_stats(self, d: int, t: int, population: bool, per_format: bool = False) -> DimStats:
        if d == 0:
            a, b, iv, _, m = self._codes_per_interval(t)
            reached = np.bincount(iv, minlength=len(a)) * self.summed
            n, cnt = _hist(iv, m, np.full(len(m), self.summed), len(a))
            return DimStats(a, b, reached, (b - a) * self.summed, n, cnt)
        a, b = intervals(self.out_shape[1], t)
        ln = b - a
        ones = np.ones_like(ln)
        if self.token_kept:
            return DimStats(a, b, ln, ln, ones[:, None, None], ln[:, None, None])
        return DimStats(a, b, ones, ln, ln[:, None, None], ones[:, None, None])

    def sender_counts(self, extents: tuple, population: bool, per_format: bool = False):
        _, _, _, codes, _ = self._codes_per_interval(extents[0])
        per_code = np.bincount(codes, minlength=max(math.prod(self.key_sizes), 1))
        k_tok = 1 if self.token_kept else len(intervals(self.out_shape[1], extents[1])[0])
        return self._over_inputs(per_code * k_tok), 1

    def reach_indices(self, box: list[tuple[int, int]]) -> np.ndarray:
        (a, b), (l0, l1) = box
        code, tok = self._in_index()
        mask = np.isin(code, np.unique(self.out_code[a:b]))
        if self.token_kept:
            mask &= (tok >= l0) & (tok < l1)
        return np.flatnonzero(mask)


def geometry(node: ir.Node, in_shape: tuple, out_shape: tuple, invariance=tap_invariance):
    if isinstance(node, (ir.Conv2d, ir.Conv1d, ir.SumPool2d)):
        return ConvGeometry(node, in_shape, out_shape, invariance)
    if isinstance(node, ir.AxisSynapse):
        return AxisGeometry(node, in_shape, out_shape)
    raise TypeError(f"{node.name}: no placement rule for synapse kind {node.kind}")


def synapse_bits(n: np.ndarray, bits_per_synapse, profile) -> np.ndarray:
    """Synapse memory of synapse lists of n synapses each (nengo-loihi's SynapseConfig.bits_per_axon): blocks of at
    most `synapses_per_block`, each with a header, each rounded up to whole memory words."""
    n = np.asarray(n, np.int64)
    B, W, hdr = profile.synapses_per_block, profile.memory_word_bits, profile.block_header_bits

    def words(x):
        return -(-x // W) * W

    full, rem = n // B, n % B
    return full * words(B * bits_per_synapse + hdr) + np.where(rem > 0, words(rem * bits_per_synapse + hdr), 0)
