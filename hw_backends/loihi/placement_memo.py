"""Population cuts shared between the placements of one conversion (its SSA forms, the fan-out repair's passes):
a population's cut is a function of its shape, its incoming projections, the tiles of its consumers with the
projections it sends them, the caps on its producers' fan-out and the hardware profile (placement.py), so a cut
made once under a key holding all of them is the cut every later placement with an equal key makes. Also the
tap invariance of a conv weight array (a pass over the head's 150 M weights on imagenet-8-768), by the array
itself: the placements of one graph on several profiles, and the SSA forms' quantised graphs, which share the
arrays of their equal synapses (dense_weights.WeightMemo), read the same arrays. And the classes of identical
intervals of a cut's dimension, which depend only on the interval extent and the incoming projections'
structure (on every profile alike, except where the channel dimension counts axons per synapse format)."""
from __future__ import annotations

import copy

import numpy as np

from hardware.loihi.limits import LoihiLimitError
from .connectivity import tap_invariance


class PlacementMemo:
    def __init__(self):
        self._cuts: dict = {}
        self._invariance: dict = {}
        self._classes: dict = {}
        self.hits = self.misses = 0

    def classes(self, key: tuple, find):
        """The classes of identical intervals of one dimension of a cut (placement._Classes), found once per key
        (the interval extent and size, and per incoming projection what its dim_stats read)."""
        if key not in self._classes:
            self._classes[key] = find()
        return self._classes[key]

    def invariance(self, w: np.ndarray, nd: int) -> tuple:
        """tap_invariance(w, nd), computed once per array (held here, so that its id stays its own)."""
        done = self._invariance.get((id(w), nd))
        if done is None or done[0] is not w:
            done = self._invariance[(id(w), nd)] = (w, tap_invariance(w, nd))
        return done[1]

    def cut(self, key: tuple, make) -> dict:
        """The record `make()` gives under `key` (a copy: callers add to it), or its LoihiLimitError, raised."""
        if key in self._cuts:
            self.hits += 1
            done = self._cuts[key]
            if isinstance(done, LoihiLimitError):
                raise done
            return copy.deepcopy(done)
        self.misses += 1
        try:
            record = make()
        except LoihiLimitError as e:
            self._cuts[key] = e
            raise
        self._cuts[key] = copy.deepcopy(record)
        return record
