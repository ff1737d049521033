"""Resources of a quantised, timed graph on a Loihi hardware profile: the placement (placement.py) of every
population under every per-core limit, cores and chips, the limit that binds each population, and totals per
source layer (docs/limits.md, section 4)."""
from __future__ import annotations

import math

from convert import ir

from .placement import LIMIT_NAMES, place
from .placement_memo import PlacementMemo
from hardware.loihi.profiles import HardwareProfile, get_profile
from .timing import Projection

CHIP_RULE = ("cores are not shared between populations; populations in topological order, each one's tiles "
             "row-major over its grid, fill chips in turn: chip = core // cores_per_chip (nengo-loihi's Greedy "
             "allocator)")


def map_resources(g: ir.Graph, projs: list[Projection], profile: HardwareProfile | str | None = None,
                  pipeline_depth: int | None = None, memo: PlacementMemo | None = None) -> dict:
    """`memo`: cuts already made in this conversion (placement_memo.py), shared with other placements."""
    profile = get_profile(profile)
    placed = place(g, projs, profile, memo)
    pops = {}
    for name, r in placed.items():
        node = g.nodes[name]
        pops[name] = {"source": node.source, "kind": node.kind, "neurons": math.prod(r["shape"]), **r}
    cores = sum(r["cores"] for r in pops.values())
    by_source: dict[str, dict] = {}
    for r in pops.values():
        s = by_source.setdefault(r["source"], {"populations": 0, "neurons": 0, "synapses": 0, "cores": 0})
        s["populations"] += 1
        s["neurons"] += r["neurons"]
        s["synapses"] += r["synapses"]
        s["cores"] += r["cores"]
    binding: dict[str, int] = {k: 0 for k in LIMIT_NAMES + ("none",)}
    for r in pops.values():
        binding[r["binding"]] += 1
    assert len(pops) == sum(n.is_population for n in g.nodes.values())
    return {"profile": profile.to_dict(), "limits": profile.limits(), "chip_rule": CHIP_RULE,
            "total": {"populations": len(pops), "neurons": sum(r["neurons"] for r in pops.values()),
                      "synapses": sum(r["synapses"] for r in pops.values()),
                      "synapse_bits": sum(r["synapse_bits"] for r in pops.values()), "cores": cores,
                      "chips": math.ceil(cores / profile.cores_per_chip), "pipeline_latency_steps": pipeline_depth,
                      "populations_bound_by": binding},
            "by_source": by_source, "populations": pops, "warnings": []}
