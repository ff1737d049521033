"""Conversion cost per preset: time and peak memory of frontend + lowering and of the NIR export, and the SSA
neuron/synapse counts of both product orders per block.

Each preset runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own; tracemalloc adds the
peak of Python/numpy allocations inside each phase (torch's own allocator is not traced). Models are randomly
initialised: the conversion cost does not depend on the weight values. write_nir writes nir.write's layout with
constant neuron parameters as HDF5 fill values and shared arrays hard-linked (hw_backends/nir/h5_writer.py);
"arrays on read GiB" is what stock nir.read materialises when it reads the file back.

    .venv/bin/python bench/timings/bench_convert.py [--presets a,b] [--out bench/results]
Writes bench/results/convert.json and convert.md. Goals: cifar10-4-384 frontend + lowering <= 30 s, <= 4 GiB;
imagenet-8-768 NIR export (write_nir: to_nir + file) <= 20 s with the process's peak RSS <= 4 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from preset_workers import add_preset_arguments, run_presets_and_write  # bench/timings/, beside this file

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ("digits-2-64", "cifar10-4-384", "imagenet-8-384", "imagenet-8-512", "imagenet-8-768")
GOAL = {"preset": "cifar10-4-384", "seconds": 30.0, "gib": 4.0}
EXPORT_GOAL = {"preset": "imagenet-8-768", "seconds": 20.0, "gib": 4.0}
GIB = 1024 ** 3


def _rss_gib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB


def _nir_array_bytes(ng) -> tuple[int, int]:
    """(all arrays, the largest node's arrays) of a NIR graph once materialised, in bytes. A plain
    NIRGraph.to_dict() copies all of them twice at once; write_nir streams, holding one node's copy at a time."""
    import numpy as np
    total = largest = 0
    for node in ng.nodes.values():
        b = sum(v.size * v.itemsize for v in vars(node).values() if isinstance(v, np.ndarray))
        total += b
        largest = max(largest, b)
    return total, largest


def worker(preset: str, export: str) -> dict:
    import math
    import tempfile
    import tracemalloc

    sys.path.insert(0, str(ROOT))
    import torch

    from hw_backends.nir import nir_io
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from spikformer import PRESETS as CFGS, Spikformer

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    res: dict = {"preset": preset, "rss_after_imports_gib": round(_rss_gib(), 3)}
    cfg = CFGS[preset]
    torch.manual_seed(0)
    model = Spikformer(cfg).eval()
    res["parameters"] = sum(p.numel() for p in model.parameters())
    res["rss_after_model_gib"] = round(_rss_gib(), 3)

    tracemalloc.start()
    t0 = time.perf_counter()
    frontend = spikformer_to_ir(model)
    t1 = time.perf_counter()
    g = lower(frontend)
    t2 = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    shapes = g.shapes()
    res.update({
        "frontend_s": round(t1 - t0, 3), "lower_s": round(t2 - t1, 3), "convert_s": round(t2 - t0, 3),
        "convert_tracemalloc_peak_gib": round(peak / GIB, 3), "convert_peak_rss_gib": round(_rss_gib(), 3),
        "ir_nodes": len(g.nodes), "ir_edges": len(g.edges), "ir_node_types": g.summary(),
        "spiking_neurons": int(sum(math.prod(shapes[n.name]) for n in g.nodes.values() if n.spiking)),
    })
    ssa = {}
    for name, info in g.metadata.get("ssa", {}).items():
        ssa[name] = {"chosen": info["order"], "bits": info["bits"], "heads": info["heads"],
                     "head_dim": info["head_dim"], "tokens": info["tokens"], "cost_per_step": info["cost_per_step"]}
    res["ssa"] = ssa

    if export == "no":
        res["nir_export"] = {"skipped": "not requested"}
        return res
    del frontend, model
    tracemalloc.start()
    t3 = time.perf_counter()
    ng = nir_io.to_nir(g)
    t4 = time.perf_counter()
    total, largest = (b / GIB for b in _nir_array_bytes(ng))
    res["nir_export"] = {"to_nir_s": round(t4 - t3, 3), "arrays_on_read_gib": round(total, 3),
                         "largest_node_arrays_gib": round(largest, 3)}
    del ng
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        path = Path(d) / f"{preset}.nir"
        t5 = time.perf_counter()
        summary = nir_io.write_nir(path, g, model_info={"preset": preset, "bench": True})
        t6 = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        res["nir_export"].update({
            "write_nir_s": round(t6 - t5, 3), "bytes": summary["bytes"], "nir_nodes": summary["nir_nodes"],
            "nir_edges": summary["nir_edges"], "export_tracemalloc_peak_gib": round(peak / GIB, 3),
            "peak_rss_gib": round(_rss_gib(), 3)})
        res["nir_export"].update({k: summary[k] for k in ("constant_arrays", "hard_links", "stored_arrays")})
        if preset in ("digits-2-64", "cifar10-4-384"):  # read-back cost (nir.read type-checked + IR rebuild)
            t7 = time.perf_counter()
            back = nir_io.read_nir(path)
            res["nir_export"]["read_nir_s"] = round(time.perf_counter() - t7, 3)
            res["nir_export"]["read_back_nodes"] = len(back.nodes)
            res["nir_export"]["peak_rss_after_read_gib"] = round(_rss_gib(), 3)
    return res


def _f(x, nd=2):
    return "-" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}")


def markdown(rows: list[dict], env: dict) -> str:
    out = ["# Conversion benchmark (`bench/timings/bench_convert.py`)", "",
           f"Machine: {env['cpus']} CPUs, {env['python']}, torch {env['torch']}; load average at start "
           f"{env['loadavg_start']}, at end {env['loadavg_end']} (shared machine: timings include contention).",
           "Random-init models; each preset in a fresh process. RSS = peak resident set of that process "
           "(includes ~0.6 GiB of imported libraries); tracemalloc = peak Python/numpy allocations within the phase.",
           "", "## Frontend + lowering", "",
           "| preset | params | frontend s | lower s | total s | peak RSS GiB | tracemalloc GiB | IR nodes | "
           "spiking neurons / step |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['preset']} | error: {r['error']} |||||||| ")
            continue
        out.append(f"| {r['preset']} | {_f(r['parameters'])} | {_f(r['frontend_s'])} | {_f(r['lower_s'])} | "
                   f"{_f(r['convert_s'])} | {_f(r['convert_peak_rss_gib'])} | "
                   f"{_f(r['convert_tracemalloc_peak_gib'], 3)} | {r['ir_nodes']} | {_f(r['spiking_neurons'])} |")
    out += ["", "## NIR export (gzip, atomic)", "",
            "| preset | to_nir s | write_nir s | file MB | peak RSS GiB | constant / hard-linked / stored arrays | "
            "arrays on read GiB | read back s |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            continue
        e = r["nir_export"]
        out.append(f"| {r['preset']} | {_f(e.get('to_nir_s'))} | {_f(e.get('write_nir_s'))} | "
                   f"{_f(e['bytes'] / 1e6, 1) if 'bytes' in e else '-'} | {_f(e.get('peak_rss_gib'))} | "
                   f"{e.get('constant_arrays', '-')} / {e.get('hard_links', '-')} / {e.get('stored_arrays', '-')} | "
                   f"{_f(e.get('arrays_on_read_gib'), 3)} | {_f(e.get('read_nir_s'))} |")
    out += ["", "## SSA per block and time step (binary form)", "",
            "| preset | blocks | heads x d x N | bits | chosen | kv_first neurons | kv_first synapses | "
            "qk_first neurons | qk_first synapses |", "|---|---:|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r or not r["ssa"]:
            continue
        blocks = list(r["ssa"].values())
        b = blocks[0]
        same = all(x["cost_per_step"] == b["cost_per_step"] and x["chosen"] == b["chosen"] for x in blocks)
        c = b["cost_per_step"]
        out.append(f"| {r['preset']} | {len(blocks)}{'' if same else ' (differ: see JSON)'} | "
                   f"{b['heads']} x {b['head_dim']} x {b['tokens']} | {b['bits']} | {b['chosen']} | "
                   f"{_f(c['kv_first']['neurons'])} | {_f(c['kv_first']['synapses'])} | "
                   f"{_f(c['qk_first']['neurons'])} | {_f(c['qk_first']['synapses'])} |")
    goal = next((r for r in rows if r.get("preset") == GOAL["preset"] and "error" not in r), None)
    if goal:
        ok = goal["convert_s"] <= GOAL["seconds"] and goal["convert_peak_rss_gib"] <= GOAL["gib"]
        out += ["", f"Goal {GOAL['preset']} frontend + lowering <= {GOAL['seconds']:.0f} s and <= {GOAL['gib']:.0f} "
                f"GiB: {'met' if ok else 'NOT met'} ({goal['convert_s']:.2f} s, {goal['convert_peak_rss_gib']:.2f} "
                f"GiB peak RSS; with NIR export {goal['convert_s'] + goal['nir_export'].get('to_nir_s', 0) + goal['nir_export'].get('write_nir_s', 0):.2f} s, "
                f"{goal['nir_export'].get('peak_rss_gib', 0):.2f} GiB)."]
    eg = next((r for r in rows if r.get("preset") == EXPORT_GOAL["preset"] and "error" not in r), None)
    if eg and "write_nir_s" in eg["nir_export"]:
        e = eg["nir_export"]
        ok = e["write_nir_s"] <= EXPORT_GOAL["seconds"] and e["peak_rss_gib"] <= EXPORT_GOAL["gib"]
        out += ["", f"Goal {EXPORT_GOAL['preset']} NIR export <= {EXPORT_GOAL['seconds']:.0f} s and <= "
                f"{EXPORT_GOAL['gib']:.0f} GiB peak RSS: {'met' if ok else 'NOT met'} ({e['write_nir_s']:.2f} s, "
                f"{e['peak_rss_gib']:.2f} GiB; the RSS includes the model, its lowering and the libraries)."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_preset_arguments(ap, PRESETS, ROOT / "bench" / "results")
    ap.add_argument("--export", default="yes", choices=["yes", "no"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.export)))
        return 0

    import torch
    return run_presets_and_write(args, Path(__file__).resolve(), ROOT, "convert", markdown, ("--export", "yes"),
                                 {"torch": torch.__version__}, {"goal": GOAL, "export_goal": EXPORT_GOAL})


if __name__ == "__main__":
    sys.exit(main())
