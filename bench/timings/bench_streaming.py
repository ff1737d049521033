"""The commands stream their data: peak memory flat in the data set's size, and ImageNet throughput end to end.

1. Memory: `spk-eval` and `spk-parity` (float, the NIR target) of a small normalised model on an ImageNet-layout
   folder of 1,000 and of 8,000 JPEGs (160x120, decoded and transformed by the loader's 2 workers), each in a fresh
   process; peak resident set of the process and its workers (getrusage of the process plus RUSAGE_CHILDREN) at
   both sizes, and the ratio.
2. Throughput: imagenet-8-384 (random weights, BatchNorm statistics set so that every layer fires; saved as the
   official train.py's training checkpoint with its args, so nothing is given on the command line but the data)
   on an ImageNet-layout folder of JPEGs of ImageNet-like sizes (500x375 and 375x500), official eval transform
   (Resize 224 bicubic, CenterCrop 224, normalisation in the model): the PyTorch reference alone on the same loader
   (decode and transform included), and `spk-parity` in Loihi fixed point end to end (reference + simulator;
   images/s of its run, and the whole command including the conversion), peak RSS of each, and the projection to
   ImageNet's 50,000 validation images on this machine and on a Ray cluster of N such machines (linear: shards
   share nothing; a projection, not a measurement).

usage: .venv/bin/python bench/timings/bench_streaming.py [--sizes 1000,8000] [--imagenet-images 24] [--out bench/results]
Writes bench/results/streaming.json and streaming.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
VALIDATION_IMAGES = 50_000
CLUSTER_NODES = (8, 32)

# the child: runs one command in this fresh process and reports its peak memory (its own and its workers')
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
which, argv = sys.argv[2], sys.argv[3:]
if which == "eval":
    from commands.train import eval_main as main
elif which == "parity":
    from commands.parity import main
else:
    import torch
    from commands.data_args import model_data_config, open_split, stream
    from spikformer.checkpoint import load_checkpoint
    from spikformer.train import configure_threads, evaluate_batches
    configure_threads()
    model, config, meta = load_checkpoint(argv[0])
    ds, opener = open_split(argv[1], config, model_data_config(meta), "test", 0)
    t0 = time.perf_counter()
    correct, n = evaluate_batches(model, stream(ds, opener, None, 2).batches(int(argv[2])))
    seconds = time.perf_counter() - t0
    main = None
t0 = time.perf_counter()
rc = main(argv) if main is not None else 0
wall = time.perf_counter() - t0
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
out = {"rc": rc, "wall_s": wall, "peak_rss_mib": own / 1024, "peak_worker_rss_mib": kids / 1024}
if which == "reference":
    out.update(samples=n, run_s=seconds)
print("RESULT " + json.dumps(out))
"""


def child(which: str, *argv) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), which, *map(str, argv)], capture_output=True,
                       text=True, timeout=7200)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{which} {' '.join(map(str, argv))} failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    res = json.loads(lines[-1][7:])
    res["stdout_tail"] = p.stdout.strip().splitlines()[-1][:300] if p.stdout.strip() else ""
    return res


def jpeg_folder(root: Path, n: int, sizes, classes: int = 10, seed: int = 0) -> str:
    """ImageNet layout: val/<synset>/*.JPEG (n images over `classes` folders) and a small train/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    bases = {s: rng.integers(0, 256, size=(s[1], s[0], 3), dtype=np.uint8) for s in sizes}
    for split, count in (("train", classes), ("val", n)):
        for i in range(count):
            d = root / split / f"n{i % classes:08d}"
            d.mkdir(parents=True, exist_ok=True)
            size = sizes[i % len(sizes)]
            img = np.roll(bases[size], 7 * i, axis=1)
            Image.fromarray(img).save(d / f"ILSVRC2012_val_{i:08d}.JPEG", quality=85)
    return f"imagenet:{root}"


def official_checkpoint(path: Path, preset: str, **changes) -> None:
    """A training checkpoint as the official train.py's saver writes it (state_dict + args Namespace)."""
    import argparse as ap

    import torch
    from spikformer.presets import get_preset
    from spikformer.synthetic import randomized_model

    cfg = get_preset(preset).with_(**changes)
    model = randomized_model(preset, seed=0, **changes)
    args = ap.Namespace(model="spikformer", dim=cfg.embed_dim, layer=cfg.depth, num_heads=cfg.num_heads,
                        time_step=cfg.T, img_size=cfg.img_size, num_classes=cfg.num_classes, mlp_ratio=4,
                        patch_size=16, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                        interpolation="bicubic", crop_pct=1.0, dataset="imagenet")
    torch.save({"epoch": 1, "arch": "spikformer", "state_dict": model.state_dict(), "optimizer": {},
                "version": 2, "args": args, "metric": 0.0}, path)


def memory(sizes, tmp: Path) -> list[dict]:
    ckpt = tmp / "small.pt"
    official_checkpoint(ckpt, "imagenet-8-384", img_size=64, depth=1, embed_dim=32, num_heads=2, T=2,
                        num_classes=10)
    rows = []
    for n in sizes:
        spec = jpeg_folder(tmp / f"mem{n}", n, [(160, 120)])
        for which, argv in (("eval", [ckpt, "--data", spec, "--workers", "2", "--batch-size", "64"]),
                            ("parity", [ckpt, "--target", "nir", "--mode", "float", "--data", spec, "--workers",
                                        "2", "--batch-size", "64", "--min-agreement", "0", "--no-progress",
                                        "-o", tmp / f"par{n}"])):
            r = child(which, *argv)
            print(f"memory: {which} on {n} images: peak {r['peak_rss_mib']:.0f} MiB (workers "
                  f"{r['peak_worker_rss_mib']:.0f} MiB), {r['wall_s']:.1f} s", flush=True)
            rows.append(dict(r, command=f"spk-{which}", images=n))
    return rows


def throughput(n: int, tmp: Path) -> dict:
    ckpt = tmp / "imagenet-8-384.pt"
    official_checkpoint(ckpt, "imagenet-8-384")
    spec = jpeg_folder(tmp / "imagenet", n, [(500, 375), (375, 500)])
    ref = child("reference", ckpt, spec, 4)
    print(f"throughput: reference alone {ref['samples'] / ref['run_s']:.2f} images/s", flush=True)
    runs = {}
    for k in (n // 3, n):  # the same command on fewer samples: the difference is the time per image
        runs[k] = child("parity", ckpt, "--data", spec, "--samples", k, "--workers", "2", "--batch-size", "4",
                        "--min-agreement", "0", "--no-progress", "--device", "cpu", "-o", tmp / f"parity{k}")
        print(f"throughput: spk-parity on {k} images {runs[k]['wall_s']:.1f} s ({runs[k]['stdout_tail']})",
              flush=True)
    par = runs[n]
    summary = json.loads((tmp / f"parity{n}" / "parity.json").read_text())
    per_image = (runs[n]["wall_s"] - runs[n // 3]["wall_s"]) / (n - n // 3)
    fixed = runs[n]["wall_s"] - n * per_image
    out = {"images": n, "sizes": "500x375 and 375x500 JPEG (quality 85)", "batch_size": 4, "workers": 2,
           "reference_images_per_s": ref["samples"] / ref["run_s"], "reference_peak_rss_mib": ref["peak_rss_mib"],
           "parity_command_s": {str(k): r["wall_s"] for k, r in runs.items()},
           "parity_images_per_s": 1 / per_image, "parity_fixed_cost_s": fixed,
           "parity_peak_rss_mib": par["peak_rss_mib"], "parity_worker_peak_rss_mib": par["peak_worker_rss_mib"],
           "parity_samples": summary["overall"]["samples"], "parity_mode": summary["run"]["mode"],
           "parity_prediction_agreement": summary["overall"]["prediction_agreement"]}
    out["projection_50k_one_machine_h"] = (fixed + VALIDATION_IMAGES * per_image) / 3600
    out["projection_50k_cluster_h"] = {str(k): (fixed + VALIDATION_IMAGES * per_image / k) / 3600
                                       for k in CLUSTER_NODES}
    return out


def render(res: dict) -> str:
    lines = ["# Streaming data: memory flat in the data set's size, ImageNet throughput end to end", "",
             f"Measured by `bench/timings/bench_streaming.py` on {res['machine']}.", "",
             "## Peak memory (fresh process each; ImageNet-layout folder of 160x120 JPEGs, 2 loader workers)", "",
             "| command | images | peak RSS (MiB) | largest worker's peak (MiB) | seconds |", "|---|---:|---:|---:|---:|"]
    for r in res["memory"]:
        lines.append(f"| {r['command']} | {r['images']:,} | {r['peak_rss_mib']:.0f} | "
                     f"{r['peak_worker_rss_mib']:.0f} | {r['wall_s']:.1f} |")
    for cmd, ratio in res["memory_ratio"].items():
        lines.append(f"\n{cmd}: peak RSS at {res['sizes'][-1]:,} / at {res['sizes'][0]:,} images = {ratio:.3f}")
    t = res["throughput"]
    if t:
        lines += ["", f"## imagenet-8-384, {t['images']} JPEGs ({t['sizes']}), official eval transform", "",
                  f"- PyTorch reference alone on the same loader (decode + transform included): "
                  f"{t['reference_images_per_s']:.2f} images/s, peak RSS {t['reference_peak_rss_mib']:.0f} MiB",
                  f"- `spk-parity` (Loihi fixed point, reference + simulator, decode and transform included): "
                  f"{t['parity_images_per_s']:.2f} images/s (the difference of the whole command on "
                  + " and ".join(f"{k} images ({v:.1f} s)" for k, v in t["parity_command_s"].items())
                  + f"; fixed cost, the conversion and start-up, {t['parity_fixed_cost_s']:.0f} s); peak RSS "
                  f"{t['parity_peak_rss_mib']:.0f} MiB; the largest loader worker's {t['parity_worker_peak_rss_mib']:.0f}"
                  " MiB (forked: pages shared with the command at the fork count in it)",
                  f"- Projection to ImageNet's {VALIDATION_IMAGES:,} validation images at that rate: "
                  f"{t['projection_50k_one_machine_h']:.1f} h on one such machine; "
                  + ", ".join(f"{h:.2f} h on {k} machines" for k, h in t["projection_50k_cluster_h"].items())
                  + " of a Ray cluster (`--ray ADDRESS`, `--ray-data shared`; shards share nothing, so linear in "
                  "the per-image time plus the fixed cost once; projected, not measured)"]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,8000")
    p.add_argument("--imagenet-images", type=int, default=30)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    res = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
           "sizes": sizes}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res["memory"] = memory(sizes, tmp)
        res["memory_ratio"] = {}
        for cmd in ("spk-eval", "spk-parity"):
            peak = {r["images"]: r["peak_rss_mib"] + r["peak_worker_rss_mib"] for r in res["memory"]
                    if r["command"] == cmd}
            res["memory_ratio"][cmd] = peak[sizes[-1]] / peak[sizes[0]]
        res["throughput"] = None if a.skip_throughput else throughput(a.imagenet_images, tmp)
    from bench import provenance
    provenance.write_result(a.out, "streaming", res, render(res), __file__,
                            extra=["commands.train", "commands.parity"])
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
