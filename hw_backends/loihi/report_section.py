"""The Loihi section of spk-report's energy report (`loihi_placement`, analysis.report): what a chip planner needs
from a run of the quantised graph, and how energy.md and report.html show it (analysis.render)."""
from __future__ import annotations

from convert import ir

from ..base import CompiledNetwork
from .crossings import chip_crossings


def placement_section(target: CompiledNetwork, graph: ir.Graph, spike_counts: dict, samples: int, steps: int) -> dict:
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


def placement_doc(pl: dict, num) -> list[tuple]:
    """The section as energy.md / report.html items (analysis.render); `num` formats a number as the report does."""
    cx = pl["chip_crossings"]
    others = "; ".join(f"{k}: cannot be placed ({v['unplaceable']})" if "unplaceable" in v else
                       f"{k}: {v['cores']:,} cores, {v['chips']:,} chips" for k, v in pl["other_profiles"].items())
    return [("h2", f"Loihi placement ({pl['profile']})"),
            ("p", f"{pl['profile_description']}. {pl['cores']:,} cores, {pl['chips']:,} chips"
                  + (f" (for comparison {others})" if others else "") + f"; pipeline latency "
                  f"{pl['pipeline_latency_steps']} steps. Populations by binding limit: "
                  + ", ".join(f"{k} {v}" for k, v in pl["populations_bound_by"].items() if v) + ". Chips: "
                  f"{pl['chip_rule']}."),
            ("p", f"Spikes crossing chip boundaries per step: {num(cx['between_chips_per_step'])} between chips, "
                  f"{num(cx['host_to_chips_per_step'])} from the host to chips ({cx['definition']})."),
            ("table", ["from", "to", "crossing spikes per step", "neurons reaching other chips"],
             [[r["pre"] + (" (host)" if r["from_host"] else ""), r["post"], num(r["crossing_spikes_per_step"]),
               num(r["neurons_reaching_other_chips"])]
              for r in cx["projections"] if r["crossing_spikes"] or r["neurons_reaching_other_chips"]])]
