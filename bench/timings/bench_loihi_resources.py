"""Loihi placement of every preset under both hardware profiles (hardware/loihi/profiles.py: loihi2 and loihi1),
both SSA forms and both weight precisions: cores, chips, pipeline latency, the limit that binds each population,
and a check that no population's fullest core exceeds any per-core limit of its profile. Random-weight models
(seed 0): the counts are structural, except that the weight-exponent groups of a synapse follow its weights'
magnitudes (loihi1 gives each group on a core its own axons), so trained weights may differ there. A configuration that
cannot be placed is reported with the population, the limit, used and allowed (LoihiLimitError).

Weight precisions: 16 (the default: high and low 8-bit synapse groups per dense weight) and 8.
Writes bench/results/loihi_resources.json and .md (atomically).

usage: .venv/bin/python bench/timings/bench_loihi_resources.py [--presets digits-2-64,cifar10-4-384,...]
           [--weight-bits 16,8] [--profiles loihi2,loihi1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
ALL = ["digits-2-64", "cifar10-4-384", "imagenet-8-384", "imagenet-8-512", "imagenet-8-768"]
LIMITS = ("compartments", "synapse_bits", "input_axons", "output_axons")


def place_row(q, sched, profile: str) -> dict:
    from hardware.loihi.limits import LoihiLimitError
    from hw_backends.loihi.placement import tile_usage
    from hardware.loihi.profiles import get_profile
    from hw_backends.loihi.resources import map_resources
    t = time.perf_counter()
    try:
        res = map_resources(q, sched["projections"], profile, sched["max_depth"])
    except LoihiLimitError as e:
        return {"profile": profile, "unplaceable": {"population": e.node, "limit": e.limit, "used": e.used,
                                                    "allowed": e.allowed}, "seconds": time.perf_counter() - t}
    tot, pops = res["total"], res["populations"]
    placed_in = time.perf_counter() - t
    # the check: every core's usage recounted from the chosen tiles alone, against the profile's figures
    recount = tile_usage(q, sched["projections"], get_profile(profile), {n: r["tile"] for n, r in pops.items()})
    allowed = res["limits"]
    over = [(n, k) for n, u in recount.items() for k in LIMITS if u["worst"][k] > allowed[k]]
    fullest = {k: max(r["worst_core"][k]["used"] / r["worst_core"][k]["allowed"] for r in pops.values())
               for k in LIMITS}
    return {"profile": profile, "cores": tot["cores"], "chips": tot["chips"], "neurons": tot["neurons"],
            "synapses": tot["synapses"], "synapse_bits": tot["synapse_bits"],
            "latency_steps": tot["pipeline_latency_steps"], "bound_by": tot["populations_bound_by"],
            "ssa_cores": sum(r["cores"] for n, r in pops.items() if ".attn.product." in n),
            "populations_over_a_limit": over, "fullest_core_fraction": fullest,
            "binding": {n: r["binding"] for n, r in pops.items()}, "seconds": placed_in}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default=",".join(ALL))
    ap.add_argument("--weight-bits", default="16,8")
    ap.add_argument("--profiles", default="loihi2,loihi1")
    a = ap.parse_args()
    import torch
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.quantize import quantize
    from hw_backends.loihi.timing import insert_delay_relays, schedule
    from spikformer import PRESETS, Spikformer
    rows = []
    for name in a.presets.split(","):
        torch.manual_seed(0)
        g = spikformer_to_ir(Spikformer(PRESETS[name]).eval())
        for form, bits in [(f, int(b)) for f in ("binary", "graded") for b in a.weight_bits.split(",")]:
            q, qrep = quantize(lower(g, ssa_form=form), weight_bits=bits)
            insert_delay_relays(q)
            sched = schedule(q)
            for profile in a.profiles.split(","):
                row = {"preset": name, "ssa": form, "weight_bits": bits, **place_row(q, sched, profile)}
                rows.append(row)
                if "unplaceable" in row:
                    u = row["unplaceable"]
                    print(f"{name:15s} {form:7s} w{bits:<2d} {profile}: cannot be placed: {u['population']}: "
                          f"{u['limit']}: uses {u['used']:,}, allowed {u['allowed']:,}", flush=True)
                else:
                    print(f"{name:15s} {form:7s} w{bits:<2d} {profile}: cores {row['cores']:>9,} chips "
                          f"{row['chips']:>6,} latency {row['latency_steps']} bound by {row['bound_by']} "
                          f"over a limit: {len(row['populations_over_a_limit'])} [{row['seconds']:.1f} s]", flush=True)
            del q
    from bench import provenance
    provenance.write_result(OUT, "loihi_resources", {"rows": rows}, markdown(rows), __file__)
    print(f"written {OUT / 'loihi_resources.md'}")


def markdown(rows: list[dict]) -> str:
    lines = ["# Loihi placement per preset and hardware profile", "",
             "Every population cut into tiles (one per core) so that on every core compartments, synapse memory, "
             "input axons and output axons stay within the profile's per-core figures (hardware/loihi/profiles.py; "
             "sources and assumptions: docs/limits.md). Random-weight presets (seed 0; the counts are structural "
             "except the weight-exponent groups per synapse, which follow the weights). `bound by`: populations per "
             "binding limit (none: the population fits one core). `fullest`: the highest used/allowed fraction of "
             "each limit over all cores (compartments / synapse bits / input axons / output axons). `over`: "
             "populations with a core over a limit, recounted from the chosen tiles (must be 0). A configuration that "
             "cannot be placed names the population, the limit, used and allowed (one neuron per core already "
             "exceeds it, after the fan-out repair: the consumers of a producer that feeds too many cores re-cut "
             "under a cap on its fan-out, docs/limits.md section 4). loihi1 gives every synapse format (the high "
             "and low part of a 16-bit weight, each weight-exponent group) its own axons, as nengo-loihi does; "
             "loihi2 lets them share (an assumption, docs/limits.md section 2 (f)).", "",
             "| preset | SSA | weight bits | profile | cores | chips | latency (steps) | bound by | fullest | over |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['preset']} | {r['ssa']} | {r['weight_bits']} | {r['profile']} |"
        if "unplaceable" in r:
            u = r["unplaceable"]
            lines.append(f"{head} cannot be placed: {u['population']}, {u['limit']}: uses {u['used']:,}, allowed "
                         f"{u['allowed']:,} | | | | | |")
            continue
        bound = ", ".join(f"{k} {v}" for k, v in r["bound_by"].items() if v)
        full = " / ".join(f"{r['fullest_core_fraction'][k]:.2f}" for k in LIMITS)
        lines.append(f"{head} {r['cores']:,} | {r['chips']:,} | {r['latency_steps']} | {bound} | {full} | "
                     f"{len(r['populations_over_a_limit'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
