"""Loihi 2 resources (cores, chips, neurons, synapses) of every preset under both SSA forms, from
`hw_backends.loihi.export.build` on random-weight models (resources do not depend on trained values except
for zero weights). Writes bench/results/loihi_resources.json and .md.

Both weight precisions: 16 (the default: high and low 8-bit synapse groups per dense weight) and 8.

usage: .venv/bin/python bench/bench_loihi_resources.py [--presets digits-2-64,cifar10-4-384,...] [--weight-bits 16,8]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
ALL = ["digits-2-64", "cifar10-4-384", "imagenet-8-384", "imagenet-8-512", "imagenet-8-768"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default=",".join(ALL))
    ap.add_argument("--weight-bits", default="16,8")
    a = ap.parse_args()
    import torch
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.export import build
    from spikformer import PRESETS, Spikformer
    rows = []
    for name in a.presets.split(","):
        torch.manual_seed(0)
        model = Spikformer(PRESETS[name]).eval()
        g = spikformer_to_ir(model)
        for form, bits in [(f, int(b)) for f in ("binary", "graded") for b in a.weight_bits.split(",")]:
            t = time.perf_counter()
            built = build(lower(g, ssa_form=form), weight_bits=bits)
            tot = built.resources["total"]
            ssa_cores = sum(r["cores"] for s, r in built.resources["by_source"].items() if s.endswith(".attn"))
            row = {"preset": name, "ssa": form, "weight_bits": bits, **tot, "ssa_cores": ssa_cores,
                   "pipeline_depth": built.schedule["max_depth"], "seconds": time.perf_counter() - t}
            rows.append(row)
            print(f"{name:16s} {form:7s} w{bits:<2d} cores {tot['cores']:>8,} chips {tot['chips']:>5,} neurons "
                  f"{tot['neurons']:>14,} synapses {tot['synapses']:>16,} (SSA cores {ssa_cores:,}) "
                  f"depth {row['pipeline_depth']} [{row['seconds']:.1f} s]", flush=True)
            del built
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "loihi_resources.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Loihi 2 resources per preset", "", "Limits: hw_backends/loihi/limits.py (sources there).", "",
             "| preset | SSA | weight bits | cores | chips | neurons | synapses | SSA cores | depth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['ssa']} | {r['weight_bits']} | {r['cores']:,} | {r['chips']:,} | {r['neurons']:,} | "
                     f"{r['synapses']:,} | {r['ssa_cores']:,} | {r['pipeline_depth']} |")
    (OUT / "loihi_resources.md").write_text("\n".join(lines) + "\n")
    print(f"written {OUT / 'loihi_resources.md'}")


if __name__ == "__main__":
    main()
