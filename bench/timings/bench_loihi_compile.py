"""Time of `spk-convert --target loihi` per preset, split by step: the frontend, then the target's compilation
(hw_backends/loihi/compile.py: both SSA forms lowered and taken through the passes quantise -> relays ->
schedule -> place on --hw, the chosen form placed on the other profiles too), then the export (files). Also what
the conversion's compilations shared (compile.SharedWork: dense weights quantised once, population cuts made
once) and the process's peak RSS.

Random-weight models (spikformer.synthetic.randomized_model, seed 0), default options; each preset in a fresh
process. Goal: imagenet-8-768 in <= 40 s (frontend + compilation + export) on this project's machine.

    .venv/bin/python bench/timings/bench_loihi_compile.py [--presets digits-2-64,imagenet-8-768] [--out bench/results]
Writes bench/results/loihi_compile.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from preset_workers import add_preset_arguments, run_presets_and_write  # bench/timings/, beside this file

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ("digits-2-64", "imagenet-8-768")
GOAL = {"preset": "imagenet-8-768", "seconds": 40.0}
STEPS = ("lower", "quantise", "relays", "schedule", "place", "place_other_profiles")


def worker(preset: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from convert.frontend import spikformer_to_ir
    from convert.options import ConversionOptions
    from convert.source import ModelSource
    from hw_backends.base import get_backend
    from hw_backends.conversion import Build
    from hw_backends.loihi.compile import SharedWork, compile_target
    from spikformer.synthetic import randomized_model

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = randomized_model(preset)
    options = ConversionOptions(target="loihi", preset=preset)
    t0 = time.perf_counter()
    frontend = spikformer_to_ir(model)
    t1 = time.perf_counter()
    shared = SharedWork()
    target = compile_target(frontend, options, shared=shared)
    t2 = time.perf_counter()
    backend = get_backend("loihi")
    build = Build(options, ModelSource(model, model.config, name=preset, preset=preset), backend, frontend, target)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        summary = build.export(Path(d) / "out")
    t3 = time.perf_counter()
    return {"preset": preset, "frontend_s": round(t1 - t0, 2), "compile_s": round(t2 - t1, 2),
            "export_s": round(t3 - t2, 2), "total_s": round(t3 - t0, 2),
            "steps_s": {k: round(shared.seconds.get(k, 0.0), 2) for k in STEPS},
            "weights_shared": shared.weights.hits, "weights_quantised": shared.weights.misses,
            "cuts_shared": shared.placements.hits, "cuts_made": shared.placements.misses,
            "ssa": summary["ssa"]["chosen"], "cores": summary["resources"]["cores"],
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)}


def markdown(rows: list[dict], env: dict) -> str:
    out = ["# Loihi conversion time (`bench/timings/bench_loihi_compile.py`)", "",
           f"Machine: {env['cpus']} CPUs, Python {env['python']}; load average at start {env['loadavg_start']}, at "
           f"end {env['loadavg_end']} (shared machine: timings include contention). Random-weight models, default "
           "options (both SSA forms built, the chosen one placed on every profile); each preset in a fresh process.",
           "", "| preset | frontend s | " + " | ".join(f"{k} s" for k in STEPS) + " | compile s | export s | total s | "
           "weights quantised / shared | cuts made / shared | peak RSS GiB |",
           "|---|" + "---:|" * (len(STEPS) + 7)]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['preset']} | error: {r['error']} |")
            continue
        out.append(f"| {r['preset']} | {r['frontend_s']:.2f} | " + " | ".join(f"{r['steps_s'][k]:.2f}" for k in STEPS)
                   + f" | {r['compile_s']:.2f} | {r['export_s']:.2f} | {r['total_s']:.2f} | "
                   f"{r['weights_quantised']} / {r['weights_shared']} | {r['cuts_made']:,} / {r['cuts_shared']:,} | "
                   f"{r['peak_rss_gib']:.2f} |")
    goal = next((r for r in rows if r.get("preset") == GOAL["preset"] and "error" not in r), None)
    if goal:
        ok = goal["total_s"] <= GOAL["seconds"]
        out += ["", f"Goal {GOAL['preset']} --target loihi <= {GOAL['seconds']:.0f} s: {'met' if ok else 'NOT met'} "
                f"({goal['total_s']:.2f} s)."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_arguments(ap, PRESETS, ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    return run_presets_and_write(args, Path(__file__).resolve(), ROOT, "loihi_compile", markdown,
                                 extra_json={"goal": GOAL})


if __name__ == "__main__":
    sys.exit(main())
