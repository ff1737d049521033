"""The simulator on a CUDA GPU (issue: faster than the reference, on a GPU too). Run it on a machine with a GPU;
without one it prints that nothing was measured and writes nothing. (bench/results/archive/sim_gpu.* is the record
of an older, step-major engine measured at commit e85c7a6; kept for history, not quoted as the present engine's.)

1. Identical results: the fixed-point simulator on `cuda` against the same simulator on the CPU of the same
   machine, node by node (every population recorded) and fused (what spk-parity runs), on cifar10-4-384
   (random weights, both SSA forms, batch 16) and digits-2-64 (both forms): every record and output compared
   exactly. Why they can be identical: fixed point carries integers in float64 (or in float32 where
   sim.fixed_point.precision_plan proves |values| < 2**24), so every sum is exact whatever the order of its
   terms (parallel reductions and atomics included) and rounding never happens; TF32 would drop mantissa bits,
   so the engine turns it off on CUDA. The float mode (reference semantics, non-integer float64 sums) is
   reported too; there the summation order may change the last bit, so it is counted, not required.
2. Time: simulator (fused, fixed point) against the PyTorch float32 reference, both on the GPU, cifar10-4-384,
   batch 16 and 64, both SSA forms.
0. With --checkpoint: spk-parity on the whole digits test set with --device cpu and --device cuda, every count
   compared.
3. Throughput of the official imagenet-8-384 at 224x224 (random weights): images per second of the simulator
   and the reference per batch size, peak GPU memory, and the projected time of a 50,000-image parity run
   (reference + simulator) on this one GPU.

usage: python bench/timings/bench_sim_gpu.py [--checkpoint runs/demo/model.pt] [--repeats 5] [--imagenet-batches 1,8,32,64]
       [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cuda"  # --device cpu: the same script on the CPU, to check the script itself where no GPU is
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
PARITY_IMAGES = 50_000


def _build(preset: str, form: str, **changes):
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.compile import compile_graph
    from spikformer.synthetic import randomized_model
    model = randomized_model(preset, seed=0, attn_drive=0.5, **changes).float()
    lowered = lower(spikformer_to_ir(model), ssa_form=form)
    return model, lowered, compile_graph(lowered)


def _sync():
    import torch
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _compare(a, b) -> int:
    return sum(int((a.records[n] != b.records[n].cpu()).sum()) for n in a.records) + \
        sum(int((a.outputs[n] != b.outputs[n].cpu()).sum()) for n in a.outputs)


def identical(cases) -> list:
    import torch
    from sim.engine import Engine
    rows = []
    for name, form, batch, (model, lowered, compiled) in cases:
        g = torch.Generator().manual_seed(0)
        shape = tuple(compiled.graph.nodes[compiled.graph.inputs()[0]].shape)
        x = torch.rand(batch, *shape, generator=g)
        row = {"model": name, "ssa_form": form, "batch": batch}
        for fuse, rec in ((False, "spiking"), (True, "spiking")):
            cpu = Engine(compiled.graph, "loihi_fixed", fuse_ssa=fuse).run(x, record=rec)
            gpu = Engine(compiled.graph, "loihi_fixed", device=DEVICE, fuse_ssa=fuse).run(x, record=rec)
            key = "fused" if fuse else "node_by_node"
            row[key] = {"mismatches": _compare(cpu, gpu),
                        "values_compared": sum(v.numel() for v in cpu.records.values()),
                        "records": len(cpu.records),
                        "spikes": int(sum(float((v != 0).sum()) for v in cpu.records.values()))}
            del cpu, gpu
        fcpu = Engine(lowered, "float").run(x.double(), record="spiking")
        fgpu = Engine(lowered, "float", device=DEVICE).run(x.double(), record="spiking")
        row["float_mode"] = {"spike_mismatches": _compare(fcpu, fgpu),
                             "values_compared": sum(v.numel() for v in fcpu.records.values())}
        rows.append(row)
        print(f"{name} {form} batch {batch}: fixed point cuda vs cpu mismatches node by node "
              f"{row['node_by_node']['mismatches']} of {row['node_by_node']['values_compared']:,}, fused "
              f"{row['fused']['mismatches']}; float mode {row['float_mode']['spike_mismatches']} of "
              f"{row['float_mode']['values_compared']:,}", flush=True)
    return rows


def _best(fn, repeats: int) -> float:
    fn()
    _sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t)
    return min(ts)


def time_vs_reference(repeats: int) -> list:
    import torch
    from sim.engine import Engine
    rows = []
    for form in ("graded", "binary"):
        model, _, compiled = _build("cifar10-4-384", form)
        model = model.to(DEVICE)
        eng = Engine(compiled.graph, "loihi_fixed", device=DEVICE, fuse_ssa=True)
        for batch in (16, 64):
            x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(DEVICE)
            with torch.no_grad():
                ref = _best(lambda: model(x), repeats)
                sim = _best(lambda: eng.run(x), repeats)
            rows.append({"model": "cifar10-4-384", "ssa_form": form, "batch": batch, "reference_s": ref,
                         "simulator_s": sim, "ratio": sim / ref})
            print(f"GPU cifar10-4-384 batch {batch}, SSA {form}: reference {ref * 1e3:.1f} ms, simulator "
                  f"{sim * 1e3:.1f} ms, ratio {sim / ref:.2f}x", flush=True)
        del model, eng
    return rows


def imagenet_throughput(batches: list, repeats: int) -> dict:
    import torch
    from sim.engine import Engine
    t0 = time.perf_counter()
    model, _, compiled = _build("imagenet-8-384", "graded")
    build_s = time.perf_counter() - t0
    model = model.to(DEVICE)
    eng = Engine(compiled.graph, "loihi_fixed", device=DEVICE, fuse_ssa=True)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(DEVICE)
        row = {"batch": batch}
        for side, fn in (("reference", lambda: model(x)), ("simulator", lambda: eng.run(x))):
            if DEVICE.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                with torch.no_grad():
                    s = _best(fn, repeats)
            except torch.cuda.OutOfMemoryError:
                row[side] = {"fits": False}
                print(f"GPU imagenet-8-384 batch {batch}: {side} out of memory", flush=True)
                continue
            row[side] = {"fits": True, "s": s, "images_per_s": batch / s,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if DEVICE.startswith("cuda")
                         else float("nan")}
            print(f"GPU imagenet-8-384 224x224 batch {batch}: {side} {batch / s:.1f} images/s, peak "
                  f"{row[side]['peak_gib']:.1f} GiB", flush=True)
        rows.append(row)
        del x
    best = {side: max((r[side]["images_per_s"] for r in rows if r.get(side, {}).get("fits")), default=None)
            for side in ("reference", "simulator")}
    proj = None
    if best["reference"] and best["simulator"]:
        proj = PARITY_IMAGES / best["reference"] + PARITY_IMAGES / best["simulator"]
    print(f"projected 50,000-image parity run (reference + simulator, best batch) on this GPU: "
          f"{proj / 60:.1f} min" if proj else "no projection (nothing fitted)", flush=True)
    return {"build_s": build_s, "rows": rows, "best_images_per_s": best, "parity_50k_projected_s": proj}


def parity_cpu_vs_cuda(checkpoint: str, out: Path) -> dict:
    """spk-parity (fixed point, whole digits test set) with --device cpu and --device cuda: the reference and the
    simulator both move; every count must be identical. The float32 reference's own logits may differ in the last
    bits between CPU and GPU kernels, so the two logit-difference statistics are listed apart."""
    import shutil
    from commands.parity import main as parity
    reports = {}
    for d in ("cpu", "cuda"):
        path = out / f"parity_{d}.tmp"
        rc = parity([checkpoint, "--target", "loihi", "--data", "digits", "--device", d, "--no-progress", "-o",
                     str(path)])
        reports[d] = json.loads((path / "parity.json").read_text())
        shutil.rmtree(path)
        if rc not in (0, 1):
            raise RuntimeError(f"spk-parity --device {d} exited with {rc}")
    a, b = (dict(reports[d]["overall"]) for d in ("cpu", "cuda"))
    float_stats = ("logits_max_abs_diff", "logits_mean_abs_diff")
    differ = sorted(k for k in a if a[k] != b[k] and k not in float_stats)
    layers_equal = reports["cpu"]["layers"] == reports["cuda"]["layers"]
    print(f"spk-parity cpu vs cuda: counts identical {not differ and layers_equal}", flush=True)
    return {"checkpoint": checkpoint, "counts_identical": not differ and layers_equal, "differing": differ,
            "layers_identical": layers_equal, "cpu": a, "cuda": b}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Simulator on a GPU", "",
             f"Measured {res['date']} on {m['gpu']} (torch {m['torch']}, CUDA {m['cuda']}, Python {m['python']}; "
             f"{m['cpus']} CPU cores for the CPU side of the comparison). "
             f"Command: `python bench/timings/bench_sim_gpu.py --checkpoint runs/demo/model.pt`.",
             "", "## Identical results: the simulator on cuda vs on the CPU (exact comparison)", "",
             "| model | SSA | batch | fixed point, node by node | fixed point, fused | float mode (not required) |",
             "|---|---|---|---|---|---|"]
    for r in res["identical"]:
        lines.append(f"| {r['model']} | {r['ssa_form']} | {r['batch']} | {r['node_by_node']['mismatches']} of "
                     f"{r['node_by_node']['values_compared']:,} differ | {r['fused']['mismatches']} of "
                     f"{r['fused']['values_compared']:,} differ | {r['float_mode']['spike_mismatches']} of "
                     f"{r['float_mode']['values_compared']:,} differ |")
    lines += ["", "## Simulator vs reference, both on the GPU", "",
              "| model | SSA | batch | reference | simulator | ratio |", "|---|---|---|---|---|---|"]
    for r in res["time_vs_reference"]:
        lines.append(f"| {r['model']} | {r['ssa_form']} | {r['batch']} | {r['reference_s'] * 1e3:.1f} ms | "
                     f"{r['simulator_s'] * 1e3:.1f} ms | {r['ratio']:.2f}x |")
    pc = res.get("parity_cpu_vs_cuda")
    if pc:
        a, b = pc["cpu"], pc["cuda"]
        lines += ["", f"## spk-parity --device cpu vs --device cuda ({pc['checkpoint']}, {a['samples']} digits test "
                      f"images, fixed point)", "",
                  f"Every count identical: {pc['counts_identical']} (prediction agreement {a['prediction_agreement']:.4f}, "
                  f"spike mismatches to the reference {a['total_spike_mismatches']:,}; "
                  + (f"per-layer rows identical {pc['layers_identical']}" if pc["layers_identical"] is not None
                     else pc.get("note", "")) + "). The float32 reference's logits differ in the last bits between the "
                  f"CPU and GPU kernels: max |ref - sim| {a['logits_max_abs_diff']:.7g} (cpu) vs "
                  f"{b['logits_max_abs_diff']:.7g} (cuda)."]
    im = res.get("imagenet")
    if im is None:
        return "\n".join(lines) + "\n"
    lines += ["", "## imagenet-8-384 at 224x224 (random weights, graded SSA, fused simulator)", "",
              "| batch | reference images/s | reference peak GiB | simulator images/s | simulator peak GiB |",
              "|---|---|---|---|---|"]
    for r in im["rows"]:
        cells = []
        for side in ("reference", "simulator"):
            d = r.get(side, {})
            cells += [f"{d['images_per_s']:.1f}", f"{d['peak_gib']:.1f}"] if d.get("fits") else ["out of memory", "-"]
        lines.append(f"| {r['batch']} | " + " | ".join(cells) + " |")
    if im["parity_50k_projected_s"]:
        lines += ["", f"Projected 50,000-image parity run (reference + simulator at their best batch) on this one "
                      f"GPU: {im['parity_50k_projected_s'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--imagenet-batches", default="1,8,32,64")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--checkpoint", default=None, help="also run spk-parity on it with --device cpu and cuda "
                                                     "(e.g. runs/demo/model.pt from scripts/demo.sh)")
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global DEVICE
    DEVICE = a.device
    import torch
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print("bench_sim_gpu: no CUDA device on this machine: nothing measured, nothing written")
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    res = {"date": time.strftime("%Y-%m-%d"), "device": DEVICE,
           "machine": {"gpu": torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "no GPU (script check)", "torch": torch.__version__,
                       "cuda": torch.version.cuda, "python": platform.python_version(), "cpus": os.cpu_count()}}
    cases = [("digits-2-64", f, 64, _build("digits-2-64", f)) for f in ("graded", "binary")]
    cases += [("cifar10-4-384", f, 16, _build("cifar10-4-384", f)) for f in ("graded", "binary")]
    if a.checkpoint:
        res["parity_cpu_vs_cuda"] = parity_cpu_vs_cuda(a.checkpoint, Path(a.out))
    res["identical"] = identical(cases)
    del cases
    res["time_vs_reference"] = time_vs_reference(a.repeats)
    if not a.skip_imagenet:
        res["imagenet"] = imagenet_throughput([int(b) for b in a.imagenet_batches.split(",")], max(1, a.repeats // 2))
    from bench import provenance
    provenance.write_result(a.out, "sim_gpu", res, markdown(res), __file__,
                            extra=["commands.parity"] if a.checkpoint else ())
    print(f"written {Path(a.out) / 'sim_gpu.json'} and {Path(a.out) / 'sim_gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
