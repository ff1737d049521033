"""AxisSynapses as standard NIR 1.0.8 nodes that its type inference accepts: Conv2d without groups, SumPool2d and
Scale, on token tensors laid out as (C, Ht, Wt) (the patch grid the tokens came from).

Why not grouped convolutions: nir 1.0.8 types a Conv1d/Conv2d input as `weight.shape[1]` channels, which is
C_in / groups, so a grouped convolution fails `nir.read(path)` with its default `type_check=True` (docs/nir.md).
Convolutions here therefore never have groups. What an AxisSynapse shares over its common axes is shared instead
by the *spatial* axes of the token grid (a 1x1 convolution or a pooling window applies the same weights at every
token) and by depthwise sum pooling (SumPool2d sums each channel on its own):

- token axis summed away (e.g. the SSA count, `j -> one`): SumPool2d with the whole grid as its window -> (C, 1, 1);
- token axis created (a broadcast, `one -> i`): SumPool2d with the whole grid as its window and padding grid - 1
  on a (C, 1, 1) input -> (C, Ht, Wt), every output reads the one input exactly once;
- the token axis becoming a channel axis (the qk_first gather, `j -> channel j`): Conv2d with the whole grid as
  its kernel, one-hot in the kernel position;
- channel axes summed, broadcast or kept: a 1x1 Conv2d with a 0/1 weight (equal indices on the axes present on
  both sides); when the channel axes do not change, no convolution at all;
- the synapse's weight: a Scale node (0/1 structure arrays are then shared by every bit and every block).

The structure weights are dense in the channels they connect (a 1x1 Conv2d has no groups); `MAX_STRUCTURE_ENTRIES`
bounds one such array and a synapse above it is refused with `StructureTooLarge` naming it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convert import ir

# One 0/1 structure array of a 1x1 Conv2d holds at most this many entries (float32: 512 MiB). The largest ones
# needed by the kv_first order: imagenet-8-768 37,748,736 (49,152 x 768); qk_first gathers grow as C^2 N^2.
MAX_STRUCTURE_ENTRIES = 1 << 27


class StructureTooLarge(ValueError):
    """An AxisSynapse whose NIR form needs a structure array above MAX_STRUCTURE_ENTRIES."""


@dataclass
class Part:
    """One NIR node that implements (part of) an AxisSynapse. kind: "conv" (Conv2d, no groups, weight 0/1),
    "pool_sum" (SumPool2d, window = grid), "pool_broadcast" (SumPool2d, window = grid, padding grid - 1) or
    "scale" (Scale by the synapse weight)."""
    name: str
    kind: str
    role: str
    weight: np.ndarray | None = None  # conv: [C_out, C_in, kh, kw] of 0/1 (float32)
    out_channels: int = 0


class StructureCache:
    """Identical structure arrays are built once and shared (the same object) across synapses and blocks."""

    def __init__(self):
        self._c: dict = {}
        self.hits = 0

    def get(self, key, build):
        if key in self._c:
            self.hits += 1
            return self._c[key]
        v = self._c[key] = build()
        return v


def _channel_matrix(in_axes: tuple, out_axes: tuple, sizes: dict, kernel_axis: str | None = None,
                    grid: tuple = (1, 1)) -> np.ndarray:
    """0/1 weight [prod(out), prod(in), kh, kw]: 1 where every axis present on both sides has equal indices
    (axes only in the input are summed, axes only in the output broadcast); with `kernel_axis` (an output
    channel axis that is the input's token axis) also only where the kernel position equals that index."""
    kh, kw = grid if kernel_axis else (1, 1)
    dims = [sizes[a] for a in out_axes] + [sizes[a] for a in in_axes] + [kh * kw]
    nd = len(dims)
    arr = np.ones(dims, dtype=np.float32)

    def eye(i, j, n):
        shape = [1] * nd
        shape[i] = shape[j] = n
        return np.eye(n, dtype=np.float32).reshape(shape)

    for a in out_axes:
        if a in in_axes:
            arr = arr * eye(out_axes.index(a), len(out_axes) + in_axes.index(a), sizes[a])
    if kernel_axis is not None:
        arr = arr * eye(out_axes.index(kernel_axis), nd - 1, sizes[kernel_axis])
    n_out, n_in = math.prod(dims[:len(out_axes)]), math.prod(dims[len(out_axes):-1])
    return np.ascontiguousarray(np.broadcast_to(arr, dims).reshape(n_out, n_in, kh, kw))


def _conv(node, name, role, in_axes, out_axes, sizes, cache, kernel_axis=None, grid=(1, 1)) -> Part:
    n_out = math.prod(sizes[a] for a in out_axes)
    n_in = math.prod(sizes[a] for a in in_axes)
    taps = grid[0] * grid[1] if kernel_axis else 1
    if n_out * n_in * taps > MAX_STRUCTURE_ENTRIES:
        raise StructureTooLarge(
            f"{node.name} (AxisSynapse from {node.source or '?'}): its standard NIR form needs a Conv2d structure "
            f"array of {n_out:,} x {n_in:,} x {taps} = {n_out * n_in * taps:,} entries, above the limit of "
            f"{MAX_STRUCTURE_ENTRIES:,} (nir 1.0.8 cannot type grouped convolutions; see docs/nir.md)")
    key = (tuple(in_axes), tuple(out_axes), tuple(sorted((a, sizes[a]) for a in set(in_axes) | set(out_axes))),
           kernel_axis, tuple(grid) if kernel_axis else None)
    w = cache.get(key, lambda: _channel_matrix(tuple(in_axes), tuple(out_axes), sizes, kernel_axis, grid))
    return Part(name, "conv", role, weight=w, out_channels=n_out)


def synapse_parts(node: ir.AxisSynapse, grid: tuple, cache: StructureCache | None = None) -> list[Part]:
    """The NIR nodes (in data-flow order) computing `node` on token tensors laid out (C, Ht, Wt) = grid, with
    (C, 1, 1) for tensors without a token axis. The last part carries the synapse's own name."""
    cache = cache or StructureCache()
    sizes = dict(node.sizes)
    sizes.setdefault("one", 1)
    if sizes["one"] != 1:
        raise ValueError(f"{node.name}: axis 'one' must have size 1, not {sizes['one']}")
    ins, outs = tuple(node.in_axes), tuple(node.out_axes)
    ch_in, t_in, ch_out, t_out = ins[:-1], ins[-1], outs[:-1], outs[-1]
    for t in (t_in, t_out):
        if t != "one" and sizes[t] != grid[0] * grid[1]:
            raise ValueError(f"{node.name}: token axis {t!r} has {sizes[t]} tokens, the grid {grid} holds "
                             f"{grid[0] * grid[1]}")
    if t_in != "one" and t_in in ch_out and t_out == t_in:
        raise ValueError(f"{node.name}: axis {t_in!r} is both a channel and the token axis of the output")
    steps: list[tuple] = []  # (kind, role, extra)
    ch = ch_in
    if t_in != "one" and t_in != t_out:  # the input's token axis goes away: gathered into a channel, or summed
        if t_in in ch_out:
            mid = ch + (t_in,)
            steps.append(("gather", ch, mid))
            ch = mid
        else:
            steps.append(("pool_sum", None, None))
    if ch != ch_out:
        steps.append(("mix", ch, ch_out))
    if node.weight != 1.0:
        steps.append(("scale", None, None))
    if t_out != "one" and t_out != t_in:
        steps.append(("pool_broadcast", None, None))
    if not steps:  # identity with weight 1 still needs a node to carry the synapse's name
        steps.append(("scale", None, None))
    parts = []
    for i, (kind, a, b) in enumerate(steps):
        name = node.name if i == len(steps) - 1 else f"{node.name}.{kind}"
        if kind == "gather":
            parts.append(_conv(node, name, kind, a, b, sizes, cache, kernel_axis=t_in, grid=grid))
        elif kind == "mix":
            parts.append(_conv(node, name, kind, a, b, sizes, cache))
        else:
            parts.append(Part(name, "scale" if kind == "scale" else kind, kind))
    return parts
