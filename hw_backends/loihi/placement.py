"""Placement of every population on cores under all four per-core limits of a hardware profile (profiles.py):
compartments, synapse memory, input axons and output axons (docs/limits.md, section 4).

A population is cut into a grid of equal boxes (tiles) over its own shape, (C, H, W) or (C, L), like nengo-loihi's
BlockShape; one tile per core, cores not shared between populations. Per tile every limit is counted exactly from
the synapses' structure (connectivity.py): the worst tile of each class of identical tiles is evaluated, never a
synapse. Populations are placed consumers first (reverse topological order), so a population's output axons, which
depend on how its consumers are cut, are known when it is cut. The search minimises the number of tiles: for each
spatial tile extent, the fewest channel tiles that satisfy every limit (binary search; the limits grow with the
tile). A population that violates a limit even with one neuron per core raises LoihiLimitError."""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from convert import ir

from hardware.loihi import limits as L
from .connectivity import DimStats, geometry, intervals, synapse_bits, tap_invariance
from hardware.loihi.profiles import HardwareProfile
from .placement_memo import PlacementMemo
from .timing import Projection

LIMIT_NAMES = ("compartments", "synapse_bits", "input_axons", "output_axons")
LIMIT_LABELS = {"compartments": "compartments (neurons) per core", "synapse_bits": "synapse memory bits per core",
                "input_axons": "input axons per core", "output_axons": "output axons per core"}


@dataclass
class Incoming:
    """One projection into a population: its synapse geometry, axon format and the key of the input axons it
    uses (where the profile lets synapse groups share axons, projections with the same presynaptic population,
    delay, format and geometry, e.g. the high and low parts of a 16-bit weight, share them, as do a synapse's
    exponent groups; otherwise each projection, and each exponent group of it on a core, has its own)."""
    proj: Projection
    geom: object
    population: bool
    delay_bits: int
    shares_axons: bool

    @property
    def key(self) -> tuple:
        shared = (self.proj.pre, self.proj.delay, self.population, self.geom.signature)
        return shared if self.shares_axons else shared + (self.proj.synapse,)

    @functools.cached_property
    def fingerprint(self) -> tuple:
        """Everything of this projection the placement reads (for PlacementMemo keys)."""
        g = self.geom
        structure = (type(g.node).__name__, g.signature, getattr(g, "invariant", None), g.n_exp,
                     g.exp_group.tobytes() if hasattr(g, "exp_group") else None)
        return self.proj, structure, self.population, self.delay_bits, self.shares_axons


@dataclass
class _Classes:
    rep: np.ndarray        # a representative interval per class of identical intervals
    mult: np.ndarray       # intervals per class
    length: np.ndarray     # interval length per class
    stats: list            # per incoming projection: DimStats over all intervals


@dataclass
class Usage:
    worst: dict            # limit -> used on the worst core
    totals: dict = field(default_factory=dict)

    def ratios(self, allowed: dict) -> dict:
        return {k: self.worst[k] / allowed[k] for k in LIMIT_NAMES}

    def ok(self, allowed: dict) -> bool:
        return all(self.worst[k] <= allowed[k] for k in LIMIT_NAMES)


def _outer(arrays: list[np.ndarray]) -> np.ndarray:
    out = arrays[0]
    for a in arrays[1:]:
        out = np.multiply.outer(out, a)
    return out


class SenderLoad:
    """Output axons of a population's neurons toward its (already cut) consumers, summed per tile: discrete axons
    per neuron, population axons per position (all channels of a position share one axon). Sums over tiles are
    differences of prefix sums (exact integers): prefix sums over every axis once per sender, gathered at the
    tiles' bounds for each cut, so a cut costs what its tiles number."""

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)
        self.per_neuron = np.zeros(self.shape, np.int64)
        self.per_position = np.zeros(self.shape[1:], np.int64)
        self._prefix = None   # prefix sums of per_neuron and per_position

    def add(self, counts: np.ndarray, factor: int, population: bool) -> None:
        if population:
            self.per_position += (counts * factor).reshape(self.shape[1:])
        else:
            self.per_neuron += counts.reshape(self.shape)
        self._prefix = None

    @staticmethod
    def _prefix_sums(a: np.ndarray) -> np.ndarray:
        """Prefix sums over every axis, each padded with a leading zero."""
        out = np.zeros(tuple(n + 1 for n in a.shape), np.int64)
        out[(slice(1, None),) * a.ndim] = a
        for ax in range(a.ndim):
            np.cumsum(out, axis=ax, out=out)
        return out

    def _bounds(self, extents: tuple) -> list[np.ndarray]:
        if self._prefix is None:
            self._prefix = (self._prefix_sums(self.per_neuron), self._prefix_sums(self.per_position))
        # the sums over the intervals [a, b) of an axis are the differences of its prefix at the bounds a..., size
        return [np.append(intervals(size, t)[0], size) for size, t in zip(self.shape, extents)]

    def _tile_sums(self, bounds: list[np.ndarray], channel_tiles: slice | None = None) -> np.ndarray:
        """Output axons per tile of the channel tiles `channel_tiles` (all by default) x every spatial tile."""
        c = bounds[0] if channel_tiles is None else bounds[0][channel_tiles.start:channel_tiles.stop + 1]
        neurons, positions = self._prefix[0][np.ix_(c, *bounds[1:])], self._prefix[1][np.ix_(*bounds[1:])]
        for ax in range(len(bounds)):
            neurons = np.diff(neurons, axis=ax)
        for ax in range(len(bounds) - 1):
            positions = np.diff(positions, axis=ax)
        return neurons + positions[None]

    def per_tile(self, extents: tuple) -> np.ndarray:
        if all(t == 1 for t in extents):  # one neuron per tile: the loads themselves
            return self.per_neuron + self.per_position[None]
        return self._tile_sums(self._bounds(extents))

    def worst_and_total(self, extents: tuple) -> tuple[int, int]:
        """per_tile(extents)'s max and sum, taken over blocks of channel tiles: on the largest populations
        (imagenet-8-768's attention, 9.6 M neurons) the search's probes with a few neurons per tile would
        otherwise allocate grid-sized temporaries, whose fresh pages cost more than the sums."""
        ones = all(t == 1 for t in extents)
        bounds = None if ones else self._bounds(extents)
        n_c = self.shape[0] if ones else len(bounds[0]) - 1
        rows = max(1, TILE_BLOCK // max(1, math.prod(self.shape[1:]) if ones else
                                        math.prod(len(b) - 1 for b in bounds[1:])))
        worst, total = None, 0
        for i in range(0, n_c, rows):
            block = (self.per_neuron[i:i + rows] + self.per_position[None] if ones
                     else self._tile_sums(bounds, slice(i, min(i + rows, n_c))))
            m = int(block.max())
            worst = m if worst is None else max(worst, m)
            total += int(block.sum())
        return worst, total


TILE_BLOCK = 1 << 16  # tiles per block in SenderLoad.worst_and_total


class PopulationCut:
    """Usage of every tile of one population for a given tile extent per dimension. `memo`: classes of intervals
    already found in this conversion (placement_memo.py)."""

    def __init__(self, name: str, shape: tuple, incoming: list[Incoming], sender: SenderLoad,
                 profile: HardwareProfile, memo: PlacementMemo | None = None):
        self.name, self.shape, self.incoming, self.sender, self.profile = name, tuple(shape), incoming, sender, profile
        self.memo = memo
        self._cache: dict = {}
        self.keys: dict[tuple, list[int]] = {}
        for i, inc in enumerate(incoming):
            self.keys.setdefault(inc.key, []).append(i)

    def _classes(self, d: int, t: int) -> _Classes:
        if (d, t) not in self._cache:
            if self.memo is None:
                self._cache[(d, t)] = self._find_classes(d, t)
            else:  # what dim_stats reads: the geometry, the axon format and, for channels only, per_format
                key = (d, t, self.shape[d], tuple((inc.fingerprint[1], inc.population,
                                                   (not inc.shares_axons) if d == 0 else None)
                                                  for inc in self.incoming))
                self._cache[(d, t)] = self.memo.classes(key, lambda: self._find_classes(d, t))
        return self._cache[(d, t)]

    def _find_classes(self, d: int, t: int) -> _Classes:
        a, b = intervals(self.shape[d], t)
        stats = [inc.geom.dim_stats(d, t, inc.population, not inc.shares_axons) for inc in self.incoming]
        cols = [(b - a)[:, None]]
        for st in stats:
            cols += [st.reached[:, None], st.synapses[:, None], st.n.reshape(len(a), -1),
                     st.count.reshape(len(a), -1)]
        _, rep, mult = np.unique(np.concatenate(cols, axis=1), axis=0, return_index=True, return_counts=True)
        return _Classes(rep, mult, (b - a)[rep], stats)

    def in_side(self, extents: tuple) -> tuple[dict, dict]:
        """Worst compartments, input axons and synapse bits over the tiles, and their totals over all tiles."""
        cls = [self._classes(d, t) for d, t in enumerate(extents)]
        D = len(cls)
        neurons = _outer([c.length for c in cls])
        mult = _outer([c.mult for c in cls])
        index_bits = np.maximum(self.profile.index_bits_min, np.ceil(np.log2(np.maximum(neurons, 2))).astype(np.int64))
        axons = np.zeros(neurons.shape, np.int64)
        for members in self.keys.values():
            st = [c.stats[members[0]] for c in cls]
            axons += _outer([s.reached[c.rep] for s, c in zip(st, cls)])
        bits = np.zeros(neurons.shape, np.int64)
        syn = np.zeros(neurons.shape, np.int64)
        for i, inc in enumerate(self.incoming):
            st: list[DimStats] = [c.stats[i] for c in cls]
            syn += _outer([s.synapses[c.rep] for s, c in zip(st, cls)])
            n_tot = c_tot = None
            for d, (s, c) in enumerate(zip(st, cls)):
                shape = [1] * (2 * D + 1)
                nd, cd = s.n[c.rep], s.count[c.rep]  # [K_d, G_d, H_d]
                shape[d], shape[D], shape[D + 1 + d] = nd.shape
                nd, cd = nd.reshape(shape), cd.reshape(shape)
                n_tot = nd if n_tot is None else n_tot * nd
                c_tot = cd if c_tot is None else c_tot * cd
            w = (self.profile.weight_bits + inc.delay_bits + index_bits).reshape(neurons.shape + (1,) * (D + 1))
            per = c_tot * synapse_bits(n_tot, w, self.profile)
            bits += per.reshape(per.shape[:D] + (-1,)).sum(-1)
        worst = {"compartments": int(neurons.max()), "input_axons": int(axons.max()),
                 "synapse_bits": int(bits.max())}
        totals = {"input_axons": int((axons * mult).sum()), "synapse_bits": int((bits * mult).sum()),
                  "synapses": int((syn * mult).sum())}
        return worst, totals

    def usage(self, extents: tuple, allowed: dict) -> Usage:
        worst, totals = self.in_side(extents)
        if any(worst[k] > allowed[k] for k in worst):
            worst["output_axons"] = -1  # not evaluated: the tile already fails
            return Usage(worst, totals)
        worst["output_axons"], totals["output_axons"] = self.sender.worst_and_total(extents)
        return Usage(worst, totals)


def _extent_candidates(size: int) -> list[int]:
    return sorted({-(-size // k) for k in range(1, size + 1)}, reverse=True)


def _axon_counts(incoming: list[Incoming], pre: str, extents, profile: HardwareProfile):
    """Per axon set of `pre` into one consumer cut with `extents` (projections that share axons counted once):
    the output axons each presynaptic neuron (discrete) or position (population, times `factor`) uses there,
    output slots included; yields (counts, factor, population)."""
    seen = set()
    for inc in incoming:
        if inc.proj.pre != pre or inc.key in seen:
            continue
        seen.add(inc.key)
        counts, factor = inc.geom.sender_counts(tuple(extents), inc.population, not inc.shares_axons)
        yield counts * (profile.population_axon_slots if inc.population else 1), factor, inc.population


def fan_out(incoming: list[Incoming], pre: str, extents: tuple, profile: HardwareProfile) -> int:
    """Output axons the neediest neuron of `pre` uses toward one consumer cut with `extents` (per projection
    the largest count, summed over the projections from `pre`: an upper bound where they differ in shape)."""
    return sum(int(counts.max()) * factor if counts.size else 0
               for counts, factor, _ in _axon_counts(incoming, pre, extents, profile))


def choose_extents(cut: PopulationCut, allowed: dict, caps: dict | None = None) -> tuple[tuple, Usage]:
    """The tile extents with the fewest tiles whose every tile obeys every limit, and under which the neediest
    neuron of each producer named in `caps` uses at most that many output axons toward this population (a cap
    place() sets when a producer's fan-out cannot fit one core otherwise). Where no tiling meets the caps, the
    one closest to them (smallest fan-out / cap, then fewest cores)."""
    C, spatial = cut.shape[0], cut.shape[1:]
    cap = allowed["compartments"]
    cands = []
    for sp in itertools.product(*[_extent_candidates(s) for s in spatial]):
        area = math.prod(sp)
        if area > cap:
            continue
        n_sp = math.prod(-(-s // t) for s, t in zip(spatial, sp))
        nc_lo = -(-C // min(C, cap // area))
        cands.append((n_sp * nc_lo, n_sp, nc_lo, sp))
    cands.sort(key=lambda c: (c[0], c[3]))
    best = fallback = None  # fallback: where no tiling meets the caps, the one that comes closest
    for lb, n_sp, nc_lo, sp in cands:
        if best is not None and lb >= best[0]:
            break
        nc_hi = C if best is None else min(C, (best[0] - 1) // n_sp)
        if nc_hi < nc_lo:
            continue

        def feasible(nc):
            u = cut.usage((-(-C // nc),) + sp, allowed)
            return u if u.ok(allowed) else None

        u = feasible(nc_hi)
        if u is None:
            continue
        lo, hi = nc_lo, nc_hi
        while lo < hi:
            mid = (lo + hi) // 2
            m = feasible(mid)
            if m is not None:
                hi, u = mid, m
            else:
                lo = mid + 1
        ext = (-(-C // hi),) + sp
        cores = n_sp * len(intervals(C, ext[0])[0])
        if caps:  # fewer channel tiles only lower a producer's fan-out: the fewest that fit decide for sp
            excess = max(fan_out(cut.incoming, pre, ext, cut.profile) / cap for pre, cap in caps.items())
            if excess > 1:
                if fallback is None or (excess, cores) < fallback[:2]:
                    fallback = (excess, cores, ext, u)
                continue
        if best is None or cores < best[0]:
            best = (cores, ext, u)
    if best is None and fallback is not None:
        return fallback[2], fallback[3]
    if best is None:
        unit = (1,) * len(cut.shape)
        u = cut.usage(unit, allowed)
        if u.worst["output_axons"] < 0:
            u.worst["output_axons"] = int(cut.sender.per_tile(unit).max())
        ratios = u.ratios(allowed)
        lim = max(LIMIT_NAMES, key=lambda k: ratios[k])
        raise L.LoihiLimitError(cut.name, f"{LIMIT_LABELS[lim]} on {cut.profile.name} (one neuron per core)",
                                u.worst[lim], allowed[lim])
    return best[1], best[2]


def _incoming(g: ir.Graph, projs: list[Projection], shapes: dict, profile: HardwareProfile,
              memo: PlacementMemo | None = None) -> dict:
    into: dict[str, list[Incoming]] = {}
    for p in projs:
        syn = g.nodes[p.synapse]
        in_shape = shapes[g.in_edges(p.synapse)[0].src]
        geom = geometry(syn, in_shape, shapes[p.synapse], memo.invariance if memo else tap_invariance)
        # population axons (one per position, shared by the channels) need the view to keep the population's
        # channel axis: a Reshape of the heads' channels (h*d, N) -> (h, d, N) regroups them (discrete axons)
        population = bool(profile.population_axons and geom.can_population and in_shape[0] == shapes[p.pre][0])
        if p.delay.bit_length() > profile.max_delay_bits:
            raise L.LoihiLimitError(f"{p.synapse} ({p.pre} -> {p.post})", f"synaptic delay ({profile.max_delay_bits} "
                                    f"bit, {profile.name})", p.delay, 2 ** profile.max_delay_bits - 1)
        into.setdefault(p.post, []).append(Incoming(p, geom, population, p.delay.bit_length(),
                                                     profile.synapse_groups_share_axons))
    return into


def _sender_load(name: str, shape: tuple, into: dict, tiles: dict, profile: HardwareProfile) -> SenderLoad:
    """Output axons of population `name` toward its consumers, cut with `tiles[post]` (extents)."""
    sender = SenderLoad(shape)
    for post, incs in into.items():
        for counts, factor, population in _axon_counts(incs, name, tiles.get(post), profile):
            sender.add(counts, factor, population)
    return sender


def tile_usage(g: ir.Graph, projs: list[Projection], profile: HardwareProfile, tiles: dict) -> dict:
    """For given tile extents of every population: the worst tile's usage of each limit, totals over the tiles,
    and the output axons of every tile (array over the grid). For checks and for other planners' tiles."""
    shapes = g.shapes()
    into = _incoming(g, projs, shapes, profile)
    out = {}
    for name, ext in tiles.items():
        cut = PopulationCut(name, shapes[name], into[name], _sender_load(name, shapes[name], into, tiles, profile),
                            profile)
        worst, totals = cut.in_side(tuple(ext))
        per_tile = cut.sender.per_tile(tuple(ext))
        worst["output_axons"] = int(per_tile.max())
        out[name] = {"worst": worst, "totals": totals, "output_axons_per_tile": per_tile}
    return out


FAN_OUT_PASSES = 6  # placements tried while a producer's fan-out is repaired by re-cutting its consumers


class _FanOut(Exception):
    """A producer's neuron needs more output axons than a core has; `placed`: the cuts made before it."""

    def __init__(self, error: L.LoihiLimitError, producer: str, placed: dict):
        super().__init__(str(error))
        self.error, self.producer, self.placed = error, producer, placed


def _consumers(into: dict, pre: str) -> list[str]:
    return sorted({post for post, incs in into.items() if any(inc.proj.pre == pre for inc in incs)})


def _cut(name: str, shape: tuple, incoming: list[Incoming], into: dict, placed: dict, profile: HardwareProfile,
         allowed: dict, caps: dict | None, memo: PlacementMemo | None = None) -> dict:
    """The placement record of population `name`, its consumers cut as in `placed`."""
    sender = _sender_load(name, shape, into, {k: v["tile"] for k, v in placed.items()}, profile)
    cut = PopulationCut(name, shape, incoming, sender, profile, memo)
    ext, usage = choose_extents(cut, allowed, caps)
    grid = tuple(len(intervals(s, t)[0]) for s, t in zip(shape, ext))
    ratios = usage.ratios(allowed)
    tightest = max(LIMIT_NAMES, key=lambda k: ratios[k])
    record = {
        "shape": list(shape), "tile": list(ext), "grid": list(grid), "cores": math.prod(grid),
        "binding": tightest if math.prod(grid) > 1 else "none", "tightest": tightest,
        "worst_core": {k: {"used": usage.worst[k], "allowed": allowed[k]} for k in LIMIT_NAMES},
        "synapses": usage.totals["synapses"], "synapse_bits": usage.totals["synapse_bits"],
        "input_axons": usage.totals["input_axons"], "output_axons": usage.totals.get("output_axons", 0),
        "axon_formats": {inc.proj.synapse: ("population" if inc.population else "discrete") for inc in incoming}}
    if caps:  # what the repair asked and what this cut gives (above the cap where no tiling meets it)
        record["fan_out_caps"] = {pre: {"cap": cap, "used": fan_out(incoming, pre, ext, profile)}
                                  for pre, cap in caps.items()}
    return record


def _memo_key(name: str, shape: tuple, incoming: list[Incoming], into: dict, placed: dict,
              profile: HardwareProfile, caps: dict | None) -> tuple:
    """Everything _cut reads: the population, its inputs, each consumer's tile with what `name` sends it."""
    sends = tuple((post, tuple(placed[post]["tile"]), tuple(inc.fingerprint for inc in incs if inc.proj.pre == name))
                  for post, incs in sorted(into.items()) if any(inc.proj.pre == name for inc in incs))
    return (profile, name, shape, tuple(inc.fingerprint for inc in incoming), sends,
            tuple(sorted(caps.items())) if caps else None)


def _place_pass(order: list[str], shapes: dict, into: dict, profile: HardwareProfile, allowed: dict, caps: dict,
                previous: dict, memo: PlacementMemo | None = None) -> dict:
    """One placement, consumers first. Populations cut before the first capped one are taken from `previous`
    (their cut does not depend on the caps); others from `memo` where an equal cut was made before. Raises
    _FanOut where a producer's fan-out does not fit a core."""
    placed: dict[str, dict] = {}
    reuse = True
    for name in reversed(order):
        reuse = reuse and name not in caps and name in previous
        if reuse:
            placed[name] = previous[name]
            continue
        shape = tuple(shapes[name])
        incoming = into.get(name, [])
        if not incoming:
            raise ir.IRValidationError(f"{name}: population without input")

        def make():
            return _cut(name, shape, incoming, into, placed, profile, allowed, caps.get(name), memo)
        try:
            placed[name] = make() if memo is None else memo.cut(
                _memo_key(name, shape, incoming, into, placed, profile, caps.get(name)), make)
        except L.LoihiLimitError as e:
            if e.limit.startswith(LIMIT_LABELS["output_axons"]) and _consumers(into, name):
                raise _FanOut(e, name, placed) from None
            raise
    return placed


def place(g: ir.Graph, projs: list[Projection], profile: HardwareProfile, memo: PlacementMemo | None = None) -> dict:
    """Tiles, usage and cores of every population; cores numbered population by population in topological order
    (tiles row-major over the grid), chip = core // cores_per_chip (nengo-loihi's Greedy allocator's rule).

    Consumers are cut first, each for its fewest cores; a producer whose neuron then needs more output axons
    than a core has (it feeds too many consumer cores) is repaired by re-cutting its consumers under a cap on
    that producer's fan-out toward each (its share of the allowed output axons, by its present use), e.g. a
    3x3 conv cut into deeper channel tiles over fewer positions, and placing again; the caps only tighten,
    for at most FAN_OUT_PASSES placements, after which the producer's LoihiLimitError stands. `memo`: cuts made
    by earlier placements of this conversion (placement_memo.py), taken where every input of a cut is equal."""
    shapes = g.shapes()
    allowed = profile.limits()
    into = _incoming(g, projs, shapes, profile, memo)
    order = [n for n in g.topo_order() if g.nodes[n].is_population]
    caps: dict[str, dict[str, int]] = {}  # consumer -> producer -> most output axons toward it
    previous: dict[str, dict] = {}
    for _ in range(FAN_OUT_PASSES):
        try:
            placed = _place_pass(order, shapes, into, profile, allowed, caps, previous, memo)
            break
        except _FanOut as f:
            last = f
            tiles = {k: v["tile"] for k, v in f.placed.items()}
            share = {q: fan_out(into[q], f.producer, tiles[q], profile) for q in _consumers(into, f.producer)}
            total = sum(share.values())
            budget = allowed["output_axons"] - len(share)  # room for rounding down
            new = {q: max(1, use * budget // max(total, 1)) for q, use in share.items()}
            if all(caps.get(q, {}).get(f.producer, math.inf) <= c for q, c in new.items()):
                raise f.error from None  # no cap tightens: the repair cannot progress
            for q, c in new.items():
                caps.setdefault(q, {})[f.producer] = min(c, caps.get(q, {}).get(f.producer, math.inf))
            previous = f.placed
    else:
        raise last.error from None
    out = {}
    offset = 0
    for name in order:
        r = placed[name]
        r["first_core"] = offset
        r["chips"] = [offset // profile.cores_per_chip, (offset + r["cores"] - 1) // profile.cores_per_chip]
        offset += r["cores"]
        out[name] = r
    return out
