"""Spikes that cross chip boundaries, from per-neuron spike counts of a simulated run and a placement
(resources.json `populations`: tiles, grid, first core; chip = core // cores_per_chip). A spike of presynaptic
neuron i goes once to every chip, other than its own, that holds a core receiving it through the projection
(all synapse groups and delays between the same two populations together); the input comes from the host, so
each chip it reaches counts. Counts are exact integers: spikes of i times its number of foreign chips."""
from __future__ import annotations

import itertools
import math

import numpy as np

from convert import ir

from .connectivity import geometry
from .timing import Projection

DEFINITION = ("a spike of presynaptic neuron i goes once to every chip, other than its own, that holds a core "
              "receiving it through the projection (all synapse groups and delays between the two populations "
              "together); input from the host counts once per chip it reaches; averaged per sample and logical time "
              "step")


def tile_boxes(rec: dict):
    """(core index, box [(lo, hi) per dim]) of every tile of a placed population, in core order."""
    ranges = [range(n) for n in rec["grid"]]
    for k, idx in enumerate(itertools.product(*ranges)):
        box = [(i * t, min((i + 1) * t, s)) for i, t, s in zip(idx, rec["tile"], rec["shape"])]
        yield rec["first_core"] + k, box


def chip_of_neurons(rec: dict, cores_per_chip: int) -> np.ndarray:
    """The chip of every neuron (flat index) of a placed population."""
    idx = np.indices(rec["shape"]).reshape(len(rec["shape"]), -1)
    tile = [i // t for i, t in zip(idx, rec["tile"])]
    return (rec["first_core"] + np.ravel_multi_index(tile, rec["grid"])) // cores_per_chip


def foreign_chips(g: ir.Graph, projs: list[Projection], populations: dict, cores_per_chip: int) -> np.ndarray:
    """Per presynaptic neuron (flat): how many chips other than its own hold a core that receives it through any
    of `projs` (all from one presynaptic population to one post)."""
    shapes = g.shapes()
    pre, post = projs[0].pre, populations[projs[0].post]
    geoms = [geometry(g.nodes[p.synapse], shapes[g.in_edges(p.synapse)[0].src], shapes[p.synapse]) for p in projs]
    size = math.prod(shapes[pre])
    own = (chip_of_neurons(populations[pre], cores_per_chip) if pre in populations
           else np.full(size, -1, np.int64))
    count = np.zeros(size, np.int64)
    by_chip: dict[int, list] = {}
    for core, box in tile_boxes(post):
        by_chip.setdefault(core // cores_per_chip, []).append(box)
    for chip, boxes in by_chip.items():
        reached = np.zeros(size, bool)
        for box in boxes:
            for geom in geoms:
                reached[geom.reach_indices(box)] = True
        count += reached & (own != chip)
    return count


def chip_crossings(g: ir.Graph, projs: list[Projection], resources: dict, spikes: dict, samples: int,
                   steps: int) -> dict:
    """Per projection (presynaptic population -> post) the spikes per step that leave their chip, averaged over
    `samples` x `steps`; `spikes[name]`: per-neuron spike counts (flat, integers) of the run."""
    pops, cpc = resources["populations"], resources["profile"]["cores_per_chip"]
    groups: dict[tuple, list[Projection]] = {}
    for p in projs:
        groups.setdefault((p.pre, p.post), []).append(p)
    per_step = max(samples * steps, 1)
    rows = []
    for (pre, post), members in groups.items():
        foreign = foreign_chips(g, members, pops, cpc)
        # the bias source is not counted by a run: its one neuron fires at every step of every sample
        sent = np.full(1, samples * steps) if isinstance(g.nodes[pre], ir.BiasSource) else spikes[pre]
        crossing = int(np.dot(np.asarray(sent, np.int64).ravel(), foreign))
        rows.append({"pre": pre, "post": post, "synapses": sorted({p.synapse for p in members}),
                     "from_host": pre not in pops, "crossing_spikes": crossing,
                     "crossing_spikes_per_step": crossing / per_step,
                     "neurons_reaching_other_chips": int((foreign > 0).sum())})
    chip_rows = [r for r in rows if not r["from_host"]]
    host = [r for r in rows if r["from_host"]]
    return {"definition": DEFINITION, "samples": samples, "steps": steps,
            "between_chips_per_step": sum(r["crossing_spikes"] for r in chip_rows) / per_step,
            "host_to_chips_per_step": sum(r["crossing_spikes"] for r in host) / per_step,
            "projections": rows}
