"""The Loihi section of spk-report's energy report (`loihi_placement`, analysis.report): what a chip planner needs
from a run of the quantised graph."""
from __future__ import annotations

from convert import ir

from ..base import TargetBuild
from .crossings import chip_crossings


def placement_section(target: TargetBuild, graph: ir.Graph, spike_counts: dict, samples: int, steps: int) -> dict:
    """The hardware profile, cores, chips, pipeline latency, the binding limit of every population
    (target.resources, hw_backends.loihi.placement) and the spikes per step that cross chip boundaries in this
    run of `graph` (per-neuron `spike_counts` over `samples` samples of `steps` steps; hw_backends.loihi.crossings)."""
    res = target.resources
    tot = res["total"]
    return {"profile": res["profile"]["name"], "profile_description": res["profile"]["description"],
            "limits": res["limits"], "cores": tot["cores"], "chips": tot["chips"],
            "pipeline_latency_steps": tot["pipeline_latency_steps"], "chip_rule": res["chip_rule"],
            "other_profiles": {k: {x: v[x] for x in ("cores", "chips", "unplaceable") if x in v}
                               for k, v in res.get("other_profiles", {}).items()},
            "populations_bound_by": tot["populations_bound_by"],
            "binding": {name: {"binding": r["binding"], "cores": r["cores"], "tile": r["tile"]}
                        for name, r in res["populations"].items()},
            "chip_crossings": chip_crossings(graph, target.schedule["projections"], res, spike_counts, samples,
                                             steps)}
