"""Scale-out of `spk-parity` on Ray: one process vs a local Ray cluster with 1 and 2 worker shards, on this machine.

Runs `spk-parity CKPT --target loihi --mode fixed` on the same samples three ways (no Ray; --ray --ray-shards 1;
--ray --ray-shards 2, one local Ray instance started by each command), checks that parity.json is identical apart
from `run.scale_out`, and reports the wall times (Ray start-up included, as a user sees it) and the cost model of a
large run: per-image time x images / workers.

    .venv/bin/python bench/timings/bench_scaleout.py [--checkpoint model.pt] [--samples 256] [--batch-size 32]
Without --checkpoint a randomized digits-2-64 model is used (the time per image does not depend on the weights
being trained). Writes bench/results/scaleout.json and scaleout.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
LARGE_RUNS = {"10,000 images (CIFAR-10 test set size)": 10_000, "50,000 images (ImageNet validation size)": 50_000}


def _checkpoint(d: Path) -> Path:
    from spikformer.checkpoint import save_checkpoint
    from spikformer.synthetic import randomized_model
    path = d / "digits.pt"
    save_checkpoint(path, randomized_model("digits-2-64", seed=0, attn_drive=0.5), {})
    return path


def _run(ckpt: Path, out: Path, samples: int, batch: int, ray_args: list[str]) -> float:
    cmd = [str(ROOT / ".venv" / "bin" / "spk-parity"), str(ckpt), "--target", "loihi", "--mode", "fixed",
           "--samples", str(samples), "--batch-size", str(batch), "--min-agreement", "0", "--no-progress",
           "-o", str(out), *ray_args]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return wall


def _without_scale_out(path: Path) -> dict:
    d = json.loads(path.read_text())
    d.get("run", {}).pop("scale_out", None)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ckpt = Path(a.checkpoint) if a.checkpoint else _checkpoint(d)
        for name, extra in (("one process", []), ("ray, 1 shard", ["--ray", "--ray-shards", "1"]),
                            ("ray, 2 shards", ["--ray", "--ray-shards", "2"])):
            print(f"[bench_scaleout] {name} ...", file=sys.stderr, flush=True)
            out = d / name.replace(" ", "_").replace(",", "")
            rows[name] = {"wall_s": round(_run(ckpt, out, a.samples, a.batch_size, extra), 2),
                          "parity": _without_scale_out(out / "parity.json")}
    base = rows["one process"]["parity"]
    for r in rows.values():
        r["identical_to_one_process"] = r.pop("parity") == base
    t1, t2 = rows["ray, 1 shard"]["wall_s"], rows["ray, 2 shards"]["wall_s"]
    per_image = rows["one process"]["wall_s"] / a.samples
    env = {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg(),
           "checkpoint": str(ckpt) if a.checkpoint else "randomized digits-2-64", "samples": a.samples,
           "batch_size": a.batch_size, "command": "spk-parity --target loihi --mode fixed"}
    cost = {k: {"images": n, "hours_one_worker": round(per_image * n / 3600, 2),
                "hours_8_workers": round(per_image * n / 8 / 3600, 3)} for k, n in LARGE_RUNS.items()}
    result = {"env": env, "runs": rows, "speedup_2_vs_1_shard": round(t1 / t2, 2),
              "seconds_per_image_one_process": per_image, "cost_model": cost}
    lines = ["# Scale-out benchmark (`bench/timings/bench_scaleout.py`)", "",
             f"{env['command']}, {a.samples} samples of {env['checkpoint']}, batch {a.batch_size}; machine: "
             f"{env['cpus']} CPUs, load average {tuple(round(x, 1) for x in env['loadavg'])} (shared: timings "
             f"include contention). Wall times include Python and Ray start-up.", "",
             "| run | wall s | parity.json identical to one process (apart from run.scale_out) |", "|---|---:|---|"]
    lines += [f"| {k} | {r['wall_s']:.2f} | {'yes' if r['identical_to_one_process'] else 'NO'} |"
              for k, r in rows.items()]
    lines += ["", f"2 shards vs 1 shard on Ray: {result['speedup_2_vs_1_shard']:.2f}x faster.", "",
              f"Cost model (time per image x images / workers, one-process time per image "
              f"{per_image * 1000:.1f} ms for this model on this machine, start-up included; a larger model scales with "
              f"its own time per image, e.g. from bench/timings/bench_sim.py):", "",
              "| run | images | hours, 1 worker | hours, 8 workers |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {c['images']:,} | {c['hours_one_worker']} | {c['hours_8_workers']} |" for k, c in cost.items()]
    from bench import provenance
    provenance.write_result(a.out, "scaleout", result, "\n".join(lines), __file__, extra=["commands.parity"])
    print("\n".join(lines))
    return 0 if all(r["identical_to_one_process"] for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
