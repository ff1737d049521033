"""Conversion cost per preset: time and peak memory of frontend + lowering and of the NIR export, and the SSA
neuron/synapse counts of both product orders per block.

Each preset runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own; tracemalloc adds the
peak of Python/numpy allocations inside each phase (torch's own allocator is not traced). Models are randomly
initialised: the conversion cost does not depend on the weight values. The NIR export of a preset is skipped
(and reported) when its estimated peak exceeds --max-export-gib. write_nir feeds nir.write one node at a time
(hw_backends.nir.nir_io.StreamingGraph); "arrays materialised" is what a plain NIRGraph.to_dict() would copy (twice).

    .venv/bin/python bench/bench_convert.py [--presets a,b] [--max-export-gib 12] [--out bench/results]
Writes bench/results/convert.json and convert.md. Goal: cifar10-4-384 frontend + lowering <= 30 s, <= 4 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("digits-2-64", "cifar10-4-384", "imagenet-8-384", "imagenet-8-512", "imagenet-8-768")
GOAL = {"preset": "cifar10-4-384", "seconds": 30.0, "gib": 4.0}
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


def worker(preset: str, export: str, max_export_gib: float) -> dict:
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
    res["nir_export"] = {"to_nir_s": round(t4 - t3, 3), "materialised_arrays_gib": round(total, 3),
                         "largest_node_arrays_gib": round(largest, 3)}
    est = _rss_gib() + 3 * largest + 0.5
    if export == "auto" and est > max_export_gib:
        tracemalloc.stop()
        res["nir_export"]["skipped"] = (f"estimated peak {est:.1f} GiB (rss {_rss_gib():.1f} + 3 x {largest:.2f} "
                                        f"GiB for the largest node + 0.5) > --max-export-gib {max_export_gib}")
        return res
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
        if preset in ("digits-2-64", "cifar10-4-384"):  # read-back cost (nir.read type-checked + IR rebuild)
            t7 = time.perf_counter()
            back = nir_io.read_nir(path)
            res["nir_export"]["read_nir_s"] = round(time.perf_counter() - t7, 3)
            res["nir_export"]["read_back_nodes"] = len(back.nodes)
            res["nir_export"]["peak_rss_after_read_gib"] = round(_rss_gib(), 3)
    return res


def run_all(presets, max_export_gib: float, timeout: int) -> list[dict]:
    rows = []
    for p in presets:
        export = "yes" if p in ("digits-2-64", "cifar10-4-384") else "auto"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", p, "--export", export,
               "--max-export-gib", str(max_export_gib)]
        t = time.perf_counter()
        print(f"[bench_convert] {p} ...", file=sys.stderr, flush=True)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            rows.append({"preset": p, "error": f"timed out after {timeout} s"})
            continue
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        if r.returncode != 0 or not line:
            tail = " | ".join(r.stderr.strip().splitlines()[-3:])
            rows.append({"preset": p, "error": f"exit {r.returncode}: {tail}"})
            continue
        row = json.loads(line[-1])
        row["subprocess_wall_s"] = round(time.perf_counter() - t, 2)
        rows.append(row)
    return rows


def _f(x, nd=2):
    return "-" if x is None else (f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}")


def markdown(rows: list[dict], env: dict) -> str:
    out = ["# Conversion benchmark (`bench/bench_convert.py`)", "",
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
            "| preset | to_nir s | write_nir s | file MB | peak RSS GiB | arrays materialised GiB | read back s | note |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            continue
        e = r["nir_export"]
        out.append(f"| {r['preset']} | {_f(e.get('to_nir_s'))} | {_f(e.get('write_nir_s'))} | "
                   f"{_f(e['bytes'] / 1e6, 1) if 'bytes' in e else '-'} | {_f(e.get('peak_rss_gib'))} | "
                   f"{_f(e.get('materialised_arrays_gib'), 3)} | {_f(e.get('read_nir_s'))} | {e.get('skipped', '')} |")
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
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--max-export-gib", type=float, default=12.0,
                    help="skip an (ImageNet) NIR export whose estimated peak RSS exceeds this (default 12)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per preset")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--export", default="auto", choices=["yes", "no", "auto"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.export, args.max_export_gib)))
        return 0

    import torch
    env = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
           "loadavg_start": [round(x, 1) for x in os.getloadavg()]}
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    rows = run_all(presets, args.max_export_gib, args.timeout)
    env["loadavg_end"] = [round(x, 1) for x in os.getloadavg()]
    out = Path(args.out)
    sys.path.insert(0, str(ROOT))
    from ground.atomic import write_text
    write_text(out / "convert.json", json.dumps({"env": env, "goal": GOAL, "results": rows}, indent=1) + "\n")
    md = markdown(rows, env)
    write_text(out / "convert.md", md)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
