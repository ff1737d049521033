"""Sharded runs with an exact merge: the samples of spk-parity and spk-report split into contiguous shards on
batch boundaries, one count per shard, merged by the same function that merges the counts of consecutive
batches in a one-process run.

Every quantity a shard returns merges exactly, in any grouping: integer counts add, maxima take the maximum, and
the few sums of float values (|logit differences|, input values) are `ExactSum`s, floats that carry their exact
value as an integer, so that ((b1 + b2) + b3) and (b1 + (b2 + b3)) give the same bits. A shard runs the same
batches as the one-process run (`shard_ranges` cuts only between batches), so every per-batch number is the same
and the merged result equals the one-process result bit for bit.

`run_sharded` runs a shard function `fn(job, samples, progress) -> counts` either in this process (one
shard, all batches) or through an executor (`commands.ray_scaleout.RayExecutor`: one Ray task per shard); this
module does not import Ray."""
from __future__ import annotations

import math
from functools import reduce
from typing import Callable, Protocol, Sequence

import numpy as np
from tqdm import tqdm

# float64 values are integer multiples of 2**-1074 (the smallest subnormal): an exact sum is an integer of those
_UNIT_BITS = 1074
_UNIT = 1 << _UNIT_BITS


def _units(x: float) -> int | None:
    """x as an exact integer multiple of 2**-1074; None for inf / NaN."""
    if not math.isfinite(x):
        return None
    p, q = float(x).as_integer_ratio()  # q is a power of two <= 2**1074
    return p * (_UNIT // q)


class ExactSum(float):
    """A float that is the correctly rounded value of an exact sum of float64 terms. `ExactSum + ExactSum` (or
    + float / int) adds exactly, so partial sums merge in any order and grouping to the same float; every other
    operation is the float's (the result is a plain float). JSON writes it as the float it is."""

    __slots__ = ("units",)

    def __new__(cls, value: float = 0.0, units: int | None = None):
        if units is None:
            units = _units(float(value))
            if units is None:  # inf / NaN: no exact value, the float stands
                self = super().__new__(cls, float(value))
                self.units = None
                return self
        self = super().__new__(cls, units / _UNIT)  # int / int: correctly rounded in CPython
        self.units = units
        return self

    def _plus(self, other) -> float:
        if isinstance(other, ExactSum):
            u = other.units
        elif isinstance(other, (int, float)) and not isinstance(other, bool):
            u = _units(float(other)) if isinstance(other, float) else other * _UNIT
        else:
            return NotImplemented
        if self.units is None or u is None:  # inf / NaN: float arithmetic
            return ExactSum(float(self) + float(other))
        return ExactSum(units=self.units + u)

    __add__ = _plus
    __radd__ = _plus

    def times(self, k: int) -> "ExactSum":
        """k copies of the sum, exactly (k an integer)."""
        return ExactSum(float(self) * k) if self.units is None else ExactSum(units=self.units * int(k))

    def mean(self, n: int) -> float:
        """The exact sum divided by n, rounded once."""
        return float(self) / n if self.units is None else self.units / (_UNIT * n)

    def __reduce__(self):
        return (_exact_sum, (float(self), self.units))

    def __repr__(self) -> str:
        return float.__repr__(self)


def exact_sum(values) -> ExactSum:
    """The exact sum of an array or tensor of floats (as float64), independent of order and thread count (a
    torch or numpy sum of a large tensor depends on how it is split among threads)."""
    a = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, dtype=np.float64).ravel()
    if a.size == 0:
        return ExactSum()
    if not np.isfinite(a).all():
        return ExactSum(float(a.sum()))  # NaN / inf: no exact value
    if float(np.abs(a).max()) * a.size < 2.0 ** 52 and bool((a == np.round(a)).all()):
        return ExactSum(float(a.sum()))  # integers whose every partial sum is exact in float64: any order
    m, e = np.frexp(a)  # a = m * 2**e, 0.5 <= |m| < 1: m * 2**53 is an integer below 2**53
    mant = (m * 2.0 ** 53).astype(np.int64)
    shift = e.astype(np.int64) + (_UNIT_BITS - 53)  # a = mant * 2**shift units (shift < 0: subnormals, exact)
    hi = mant >> 26  # split so that int64 sums of up to 2**36 terms cannot overflow
    lo = mant - (hi << 26)
    order = np.argsort(shift, kind="stable")
    shift, hi, lo = shift[order], hi[order], lo[order]
    starts = np.flatnonzero(np.r_[True, shift[1:] != shift[:-1]])
    total = 0
    for s_, h, low in zip(shift[starts].tolist(), np.add.reduceat(hi, starts).tolist(),
                          np.add.reduceat(lo, starts).tolist()):
        v = (h << 26) + low
        total += v << s_ if s_ >= 0 else v >> -s_
    return ExactSum(units=total)


def _exact_sum(value: float, units: int | None) -> ExactSum:
    return ExactSum(value) if units is None else ExactSum(units=units)


def nan_max(a: float, b: float) -> float:
    """max that propagates NaN (as torch.max does) whatever the order of its arguments."""
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


def shard_ranges(samples: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) sample ranges of `shards` shards (fewer when there are fewer batches), cut only
    between batches of `batch_size`, as even in batches as possible. Depends on the three numbers alone."""
    if samples < 0 or batch_size < 1 or shards < 1:
        raise ValueError(f"shard_ranges({samples}, {batch_size}, {shards}): need samples >= 0, batch_size >= 1, "
                         "shards >= 1")
    batches = -(-samples // batch_size)
    k = min(shards, batches)
    cuts = [min(samples, (i * batches // k) * batch_size) for i in range(k + 1)] if k else [0]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


class ShardExecutor(Protocol):
    """Runs shard functions elsewhere (commands.ray_scaleout.RayExecutor)."""

    shards: int  # how many shards to cut

    def map(self, fn: Callable, job, parts: Sequence[tuple], on_done: Callable[[int], None]) -> list:
        """fn(job, part, None) for every part (analysis.samples) of `parts`; results in the order of `parts`;
        on_done(samples) as each part completes."""
        ...

    def describe(self) -> dict:
        """How the run was spread (the run description's scale_out field), after map."""
        ...


def run_sharded(fn: Callable, job, samples, batch_size: int, merge: Callable, executor: ShardExecutor |
                None = None, progress: bool = True, desc: str = "", unit: str = "img"):
    """fn(job, samples, progress) -> counts over whole batches of `batch_size` (`samples`: analysis.samples, in
    memory or streamed); `merge(a, b)` merges two counts exactly. Without an executor: one shard in this process.
    With one: `executor.shards` contiguous shards on batch boundaries, merged in shard order; each shard gets its
    samples' `for_worker()` (a streamed data set's recipe where the workers can read it, else its tensors)."""
    n = len(samples)
    with tqdm(total=n, desc=desc, unit=unit, disable=not progress, leave=False) as bar:
        if executor is None:
            return fn(job, samples, bar.update)
        parts = [samples.slice(a, b).for_worker() for a, b in shard_ranges(n, batch_size, executor.shards)]
        return reduce(merge, executor.map(fn, job, parts, bar.update))
