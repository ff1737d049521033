"""Simulator benchmarks (issue: fast bit-accurate simulation). One run prints the measured ratios side by side
and writes bench/results/sim.json and sim.md.

1. Fixed-point simulator (fused SSA) vs the PyTorch float32 reference on the same CPU: cifar10-4-384
   (random weights, randomised BatchNorm), batch 16, T=4. Targets: simulator time <= 1.2x the reference in the
   graded SSA form, <= 2x in the binary form.
2. Peak memory (ru_maxrss of a fresh subprocess) of simulating cifar10-4-384 at batch 16. Goal < 8 GiB.
3. The official imagenet-8-384 at 224x224 on this CPU: images per second of the reference and the simulator per
   batch size, peak memory, and the projected time of a 50,000-image parity run on one machine.
4. Simulator vs lava-nc's runtime on the whole demo model (digits-2-64; the trained checkpoint when
   scripts/demo.sh has run), 16 digits test images, identical results required (every population, the readout
   and the predictions). Target: the simulator >= 10,000x faster. (Skipped with a note when lava is missing.)
5. The GPU: a row saying that bench/timings/bench_sim_gpu.py measures it, on a machine with one (bench/results/sim_gpu.*).

usage: .venv/bin/python bench/timings/bench_sim.py [--repeats 3] [--skip-lava] [--skip-imagenet] [--lava-samples 16]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"


def _cifar_case(form: str):
    import torch
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.compile import compile_graph
    from spikformer.synthetic import randomized_model
    model = randomized_model("cifar10-4-384", seed=0, attn_drive=0.5).float()
    compiled = compile_graph(lower(spikformer_to_ir(model), ssa_form=form))
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    return model, compiled, x


def time_vs_reference(repeats: int) -> dict:
    import torch
    from sim.engine import Engine
    torch.set_num_threads(2)
    out = {}
    for form in ("graded", "binary"):
        model, compiled, x = _cifar_case(form)
        eng = Engine(compiled.graph, "loihi_fixed", fuse_ssa=True)
        with torch.no_grad():
            model(x[:2]), eng.run(x[:2])  # warm-up
            ref_t, sim_t = [], []
            for _ in range(repeats):
                t = time.perf_counter(); model(x); ref_t.append(time.perf_counter() - t)
                t = time.perf_counter(); eng.run(x); sim_t.append(time.perf_counter() - t)
        out[form] = {"reference_s": min(ref_t), "simulator_s": min(sim_t), "ratio": min(sim_t) / min(ref_t)}
        print(f"cifar10-4-384 batch 16, SSA {form}: reference {min(ref_t):.2f} s, fixed-point simulator "
              f"{min(sim_t):.2f} s, ratio {min(sim_t) / min(ref_t):.2f}x "
              f"(target <= {'1.2x' if form == 'graded' else '2x'})", flush=True)
    return out


def _memory_child() -> None:
    from sim.engine import Engine
    _, compiled, x = _cifar_case("graded")
    Engine(compiled.graph, "loihi_fixed", fuse_ssa=True).run(x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_memory() -> dict:
    r = subprocess.run([sys.executable, __file__, "--memory-child"], capture_output=True, text=True, check=True,
                       cwd=ROOT)
    kib = int(r.stdout.strip().splitlines()[-1])
    gib = kib / 2 ** 20
    print(f"peak memory, simulating cifar10-4-384 batch 16 (conversion included): {gib:.2f} GiB (goal < 8 GiB)",
          flush=True)
    return {"peak_rss_gib": gib, "goal_gib": 8}


DEMO_MODELS = {  # data -> (preset, checkpoint scripts/demo.sh writes)
    "digits": ("digits-2-64", "runs/demo/model.pt"),
    "event-digits": ("event-digits-2-64", "runs/demo/events/model.pt"),
}


def _demo_build(data: str):
    """The Loihi build of a demo model (the trained checkpoint of scripts/demo.sh when it exists), else of a
    random-weight model of the same preset (said in the results)."""
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    preset, checkpoint = DEMO_MODELS[data]
    if (ROOT / checkpoint).exists():
        return convert(ROOT / checkpoint, ConversionOptions(target="loihi")), f"trained demo model {checkpoint}"
    import tempfile
    from spikformer.checkpoint import save_checkpoint
    from spikformer.synthetic import randomized_model
    meta = {"dataset": {"max_count": 8, "value_grid": 1}} if data == "event-digits" else None
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(Path(tmp) / "demo.pt", randomized_model(preset, seed=2, attn_drive=1.0), meta)
        return (convert(path, ConversionOptions(target="loihi")),
                f"random-weight {preset} (no {checkpoint}; run scripts/demo.sh for the trained one)")


def _best_time(fn, at_most: int = 3, budget_s: float = 0.0) -> float:
    """The shortest of several timed calls of `fn` after one untimed warm-up call: at least 3, then more while
    they add up to less than `budget_s`, at most `at_most`."""
    fn()
    times = []
    while len(times) < at_most and (len(times) < 3 or sum(times) < budget_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _operation_time(eng, x, runs: int = 10) -> dict:
    """Where the simulator's time on `x` goes: per run, the wall time, the tensor operations' own time (torch
    profiler, self CPU of every operation: the kernels and their dispatch, no Python) and the compiled LIF
    passes' (sim.lif_kernel.run, timed around each call); the rest is the engine's Python."""
    import torch
    from sim import lif_kernel
    eng.run(x)
    lif = []
    run = lif_kernel.run

    def timed(*args):
        t = time.perf_counter()
        out = run(*args)
        lif.append(time.perf_counter() - t)
        return out

    lif_kernel.run = timed
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for _ in range(runs):
                eng.run(x)
            wall = (time.perf_counter() - t) / runs
    finally:
        lif_kernel.run = run
    ops = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6 / runs
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:4]
    return {"runs": runs, "wall_s_profiled": wall, "tensor_ops_s": ops, "lif_kernel_s": sum(lif) / runs,
            "largest": {e.key: e.self_cpu_time_total / 1e6 / runs for e in top}}


def lava_vs_sim(samples: int, data: str = "digits") -> dict:
    """lava-nc's runtime against the simulator on the whole demo model, the same test images, identical results
    required: every population, the readout's v at every logical step and the predictions compared exactly
    (the comparison spk-parity --engine lava makes)."""
    try:
        from hw_backends.loihi import lava_run  # noqa: F401
    except ImportError as e:
        print(f"lava comparison skipped: {e}")
        return {"skipped": str(e)}
    from analysis.engine_crosscheck import make_sim_runner
    from hw_backends.loihi.lava_engine import LavaEngine
    from sim.engine import Engine
    from spikformer.data import load_dataset
    b, what = _demo_build(data)
    cfg = b.source.config
    x_all = load_dataset(data, cfg.img_size, cfg.in_channels, 0, cfg.num_classes, T=cfg.T).x_test.double()
    x = x_all[:samples]
    g = b.target.graph
    # cold: a freshly built engine's first run (what one Lava run is: build, compile, run once)
    t = time.perf_counter()
    eng = Engine(g, "loihi_fixed", fuse_ssa=True)  # what spk-parity --engine sim runs
    eng.run(x)
    sim_cold_s = time.perf_counter() - t

    # warm: best of up to 20 runs within 2 s (a run of a few ms varies 1.5x on a shared machine)
    sim_s = _best_time(lambda: eng.run(x), at_most=20, budget_s=2.0)
    whole_s = _best_time(lambda: eng.run(x_all), at_most=20, budget_s=2.0)  # the whole test set in one batch,
    # as a parity run over it batches it
    floor = _operation_time(eng, x)
    runner = make_sim_runner(LavaEngine(b.target, timeout_s=1800, retries=0), progress=True)  # a hang fails it
    t = time.perf_counter()
    runner(x, [])
    lava_s = time.perf_counter() - t
    xc = runner.crosscheck.to_dict()
    tm, net = runner.engine.last_facts["timing"], runner.engine.last_facts["network"]
    lava_warm_s = tm["s_per_step_after_first"] * tm["steps"]
    res = {"model": what, "data": data, "samples": samples,
           # both sides timed alike: cold (build and first run) against cold, warm against warm
           "cold": {"lava_s": lava_s, "simulator_s": sim_cold_s, "ratio": lava_s / sim_cold_s,
                    "what": "one Lava run as spk-parity --engine lava makes it (worker start, process build, compile, "
                            "run) against a freshly built simulator engine's first run, both on these samples"},
           "warm": {"lava_s": lava_warm_s, "simulator_s": sim_s, "ratio": lava_warm_s / sim_s,
                    "what": "Lava's steady state (its mean time per step after the first run chunk, times the steps) "
                            "against the simulator's best of up to 20 runs after a warm-up run"},
           "crosscheck": xc, "lava_timing": tm, "lava_network": net,
           # per image, warm: Lava's steady-state time per sample (every sample runs the same steps) against the
           # simulator's on the whole test set in one batch; a derived figure, said so where it is shown
           "per_image": {"test_images": int(x_all.shape[0]), "simulator_whole_s": whole_s,
                         "lava_s_per_image": lava_warm_s / samples, "simulator_s_per_image": whole_s / x_all.shape[0],
                         "ratio": (lava_warm_s / samples) / (whole_s / x_all.shape[0])},
           "simulator_operations": floor}
    print(f"lava-nc vs simulator on the {what}, {samples} samples: warm {lava_warm_s:.1f} s vs {sim_s:.4f} s, "
          f"{lava_warm_s / sim_s:.0f}x (target >= 10,000x); cold {lava_s:.1f} s vs {sim_cold_s:.3f} s, "
          f"{lava_s / sim_cold_s:.0f}x; Lava {tm['s_per_step_after_first'] * 1e3:.0f} ms per step "
          f"over {tm['steps']} steps, {net['processes']} processes; differences Lava vs simulator "
          f"{xc['differences']} ({xc['spikes_compared']:,} spikes/payloads in {xc['populations']} populations); "
          f"per image {res['per_image']['ratio']:,.0f}x (the simulator on all {x_all.shape[0]} test images: "
          f"{whole_s * 1e3:.0f} ms); the simulator's operations on the {samples}: tensor operations "
          f"{floor['tensor_ops_s'] * 1e3:.1f} ms, compiled LIF passes {floor['lif_kernel_s'] * 1e3:.1f} ms per run "
          f"({floor['wall_s_profiled'] * 1e3:.1f} ms profiled)", flush=True)
    return res


def _imagenet_child(batch: int) -> None:
    import torch
    from sim.engine import Engine
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.compile import compile_graph
    from spikformer.synthetic import randomized_model
    model = randomized_model("imagenet-8-384", seed=0, attn_drive=0.5).float()
    compiled = compile_graph(lower(spikformer_to_ir(model), ssa_form="graded"))
    build_s = time.perf_counter() - t0
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    eng = Engine(compiled.graph, "loihi_fixed", fuse_ssa=True)
    out = {"batch": batch, "build_s": build_s}
    with torch.no_grad():
        for side, fn in (("reference", lambda: model(x)), ("simulator", lambda: eng.run(x))):
            out[side + "_s"] = _best_time(fn)  # best of 3: one timed call varied 3x between runs on this machine
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps(out))


def imagenet_throughput(batches: list) -> dict:
    """The official imagenet-8-384 (random weights, graded SSA, fused simulator) at 224x224 on this machine's CPU,
    one fresh process per batch size (its peak RSS is the batch's memory): images per second of both sides and
    the projected time of a 50,000-image parity run (reference + simulator) on one such machine."""
    rows = []
    for batch in batches:
        r = subprocess.run([sys.executable, __file__, "--imagenet-child", str(batch)], capture_output=True,
                           text=True, cwd=ROOT)
        if r.returncode != 0:
            rows.append({"batch": batch, "fits": False, "error": r.stderr.strip().splitlines()[-1:]})
            print(f"imagenet-8-384 batch {batch}: failed ({rows[-1]['error']})", flush=True)
            continue
        row = json.loads(r.stdout.strip().splitlines()[-1])
        row.update(fits=True, reference_images_per_s=batch / row["reference_s"],
                   simulator_images_per_s=batch / row["simulator_s"])
        rows.append(row)
        print(f"imagenet-8-384 224x224 batch {batch} (CPU, 2 threads): reference {row['reference_images_per_s']:.2f} "
              f"images/s, simulator {row['simulator_images_per_s']:.2f} images/s, peak RSS "
              f"{row['peak_rss_gib']:.1f} GiB", flush=True)
    ok = [r for r in rows if r.get("fits")]
    proj = None
    if ok:
        ref = max(r["reference_images_per_s"] for r in ok)
        sim = max(r["simulator_images_per_s"] for r in ok)
        proj = 50_000 / ref + 50_000 / sim
        print(f"projected 50,000-image parity run on one such machine: {proj / 3600:.1f} h", flush=True)
    return {"rows": rows, "parity_50k_projected_s": proj}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-lava", action="store_true")
    ap.add_argument("--skip-imagenet", action="store_true")
    ap.add_argument("--lava-samples", type=int, default=16,
                    help="digits test images run through both (Lava: about 0.3 s per time step, 34 steps per image)")
    ap.add_argument("--lava-event-samples", type=int, default=4,
                    help="event-digits test samples through the event demo model on both (0: skip)")
    ap.add_argument("--imagenet-batches", default="1,4")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--imagenet-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        _memory_child()
        return
    if a.imagenet_child is not None:
        _imagenet_child(a.imagenet_child)
        return
    results = {"time_vs_reference": time_vs_reference(a.repeats), "memory": peak_memory()}
    if not a.skip_imagenet:
        results["imagenet_cpu"] = imagenet_throughput([int(b) for b in a.imagenet_batches.split(",")])
    if not a.skip_lava:
        results["lava_vs_simulator"] = lava_vs_sim(a.lava_samples, "digits")
        if a.lava_event_samples:
            results["lava_vs_simulator_events"] = lava_vs_sim(a.lava_event_samples, "event-digits")
    write_results(results)


def write_results(results: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["# Simulator benchmark", "", f"Machine: {os.cpu_count()} CPU cores, torch threads 2. Command: "
             "`.venv/bin/python bench/timings/bench_sim.py`.", "",
             "| measurement | value | target |", "|---|---|---|"]
    for form, r in results["time_vs_reference"].items():
        lines.append(f"| sim / reference time, cifar10-4-384 b16, SSA {form} | {r['ratio']:.2f}x "
                     f"({r['simulator_s']:.2f} s / {r['reference_s']:.2f} s) | "
                     f"{'<= 1.2x' if form == 'graded' else '<= 2x'} |")
    lines.append(f"| peak memory, cifar10-4-384 b16 | {results['memory']['peak_rss_gib']:.2f} GiB | < 8 GiB |")
    for key in ("lava_vs_simulator", "lava_vs_simulator_events"):
        lv = results.get(key, {})
        if "warm" not in lv:
            continue
        xc = lv["crosscheck"]
        w, c = lv["warm"], lv["cold"]
        lines.append(f"| lava-nc / simulator time, {lv['model']}, {lv['samples']} {lv['data']} test samples | "
                     f"warm {w['ratio']:,.0f}x ({w['lava_s']:.1f} s / {w['simulator_s'] * 1e3:.1f} ms), cold "
                     f"{c['ratio']:,.0f}x ({c['lava_s']:.1f} s / {c['simulator_s'] * 1e3:.0f} ms); Lava "
                     f"{lv['lava_timing']['s_per_step_after_first'] * 1e3:.0f} ms per step, "
                     f"{lv['lava_network']['processes']} processes; {xc['differences']} differences in "
                     f"{xc['spikes_compared']:,} spikes/payloads of {xc['populations']} populations, readout and "
                     f"predictions | {'>= 10,000x warm, ' if key == 'lava_vs_simulator' else ''}0 differences |")
        pi = lv.get("per_image")
        if pi:
            lines.append(f"| per image, warm: lava-nc (its {lv['samples']}-sample run) / simulator (all {pi['test_images']} "
                         f"{lv['data']} test images in one batch), {lv['model']} | {pi['ratio']:,.0f}x "
                         f"({pi['lava_s_per_image']:.2f} s / {pi['simulator_s_per_image'] * 1e3:.2f} ms; simulator "
                         f"{pi['simulator_whole_s'] * 1e3:.0f} ms for the {pi['test_images']}) | derived, not a target |")
        op = lv.get("simulator_operations")
        if op:
            big = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in op["largest"].items())
            lines.append(f"| where the simulator's time goes, {lv['samples']} {lv['data']} samples (per run, "
                         f"{op['runs']} runs under torch's profiler) | tensor operations' own time "
                         f"{op['tensor_ops_s'] * 1e3:.1f} ms (largest: {big}), compiled LIF passes "
                         f"{op['lif_kernel_s'] * 1e3:.1f} ms, of {op['wall_s_profiled'] * 1e3:.1f} ms profiled "
                         f"(the rest: the engine's Python) | |")
    im = results.get("imagenet_cpu")
    if im:
        for r in im["rows"]:
            if r.get("fits"):
                lines.append(f"| imagenet-8-384 224x224 batch {r['batch']}, this CPU | reference "
                             f"{r['reference_images_per_s']:.2f} images/s, simulator {r['simulator_images_per_s']:.2f} "
                             f"images/s, peak RSS {r['peak_rss_gib']:.1f} GiB | |")
        if im["parity_50k_projected_s"]:
            lines.append(f"| projected 50,000-image imagenet parity run, one such machine | "
                         f"{im['parity_50k_projected_s'] / 3600:.1f} h | |")
    lines.append("| GPU | the present engine has not run on a GPU; bench/timings/bench_sim_gpu.py measures it on one "
                 "(an older engine's record: bench/results/archive/sim_gpu.md) | |")
    from bench import provenance
    provenance.write_result(OUT, "sim", results, "\n".join(lines), __file__)
    print(f"written {OUT / 'sim.json'} and {OUT / 'sim.md'}")


if __name__ == "__main__":
    main()
