"""Peak memory of the streaming data sets (spikformer.datasets) does not grow with the data set: each kind is
generated with 1,000 and with 8,000 samples, and a fresh process opens it and reads every sample through
make_loader (batch 64, no worker processes, so that all the work is in the measured process); its peak resident
set (getrusage ru_maxrss) is compared between the two sizes. For contrast, the whole-set loader of
spikformer.data (load_dataset) on the same npz files.

usage: .venv/bin/python bench/timings/bench_datasets_memory.py [--sizes 1000,8000] [--out bench/results]
Writes bench/results/datasets_memory.json and datasets_memory.md.

Kinds: npz:FILE (uint8 [N, 64, 64, 3], 12 KiB a sample; npz stored by np.savez, npz_z deflated by
np.savez_compressed: inflated into a temporary file first), imagenet:DIR (JPEGs of 160x120 in 10 class
folders), events:DIR (CIFAR10-DVS layout, 10 classes, 2,000 events a file at 128x128, the official split).
CIFAR is left out: its files have a fixed size (the reader's cache is bounded by CACHE_BYTES, not by the set).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MODELS = {  # spikformer.presets.SpikformerConfig fields of the model each kind is opened for
    "npz": dict(img_size=64, in_channels=3, num_classes=10, embed_dim=16, num_heads=2, depth=1, T=1),
    "npz_z": dict(img_size=64, in_channels=3, num_classes=10, embed_dim=16, num_heads=2, depth=1, T=1),
    "imagenet": dict(img_size=112, in_channels=3, num_classes=10, embed_dim=16, num_heads=2, depth=1, T=1),
    "events": dict(img_size=128, in_channels=2, num_classes=10, embed_dim=16, num_heads=2, depth=1, T=16,
                   pool_stages=4, layout="dvs"),
}


def generate(kind: str, n: int, dest: Path) -> str:
    """Writes a data set of `n` samples into dest; returns its spec."""
    import numpy as np

    rng = np.random.default_rng(n)
    if kind in ("npz", "npz_z"):
        x = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
        (np.savez if kind == "npz" else np.savez_compressed)(dest / "data.npz", x=x, y=np.arange(n) % 10)
        return f"npz:{dest / 'data.npz'}"
    if kind == "imagenet":
        from PIL import Image
        base = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
        for split, count in (("train", 10), ("val", n)):
            for i in range(count):
                d = dest / split / f"n{i % 10:08d}"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.roll(base, i, axis=1)).save(d / f"img_{i:05d}.JPEG", quality=85)
        return f"imagenet:{dest}"
    for i in range(n):
        d = dest / "events_np" / CLASSES[i % 10]
        d.mkdir(parents=True, exist_ok=True)
        m = 2000
        np.savez(d / f"s_{i:05d}.npz", t=np.arange(m, dtype=np.int64), x=rng.integers(0, 128, m).astype(np.uint16),
                 y=rng.integers(0, 128, m).astype(np.uint16), p=rng.integers(0, 2, m).astype(np.uint8))
    return f"events:{dest}"


def measure(kind: str, spec: str, whole_set: bool) -> dict:
    """In this (fresh) process: read every sample of the spec's larger split; peak RSS in MiB."""
    import torch

    from spikformer.data import load_dataset
    from spikformer.data_config import OFFICIAL
    from spikformer.datasets import make_loader, open_dataset
    from spikformer.presets import SpikformerConfig

    torch.set_num_threads(1)
    cfg = SpikformerConfig(**MODELS[kind])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if whole_set:
        split = load_dataset(spec, cfg.img_size, cfg.in_channels)
        n, total = len(split.y_train) + len(split.y_test), float(split.x_train.sum() + split.x_test.sum())
    else:
        ds = open_dataset(spec, cfg, OFFICIAL["dvs" if cfg.event_input else "imagenet"],
                          "test" if kind == "imagenet" else "train")
        n, total = 0, 0.0
        for x, y in make_loader(ds, 64, workers=0):
            n += len(y)
            total += float(x.sum())
    return {"samples_read": n, "checksum": total, "seconds": round(time.perf_counter() - t0, 2),
            "rss_after_imports_mib": round(before, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,8000")
    ap.add_argument("--kinds", default="npz,npz_z,imagenet,events")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # kind spec whole_set
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(a.child[0], a.child[1], a.child[2] == "1")))
        return 0
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = []
    for kind in a.kinds.split(","):
        for n in sizes:
            tmp = Path(tempfile.mkdtemp(prefix=f"bench-ds-{kind}-"))
            try:
                spec = generate(kind, n, tmp)
                for whole in ([False, True] if kind == "npz" else [False]):
                    p = subprocess.run([sys.executable, __file__, "--child", kind, spec, "1" if whole else "0"],
                                       capture_output=True, text=True, cwd=str(ROOT), check=True)
                    r = dict(json.loads(p.stdout.strip().splitlines()[-1]), kind=kind, generated=n,
                             reader="spikformer.data.load_dataset (whole set)" if whole else
                             "spikformer.datasets.open_dataset + make_loader")
                    rows.append(r)
                    print(json.dumps(r), flush=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    result = {"sizes": sizes, "python": platform.python_version(), "machine": platform.machine(), "rows": rows}
    lines = ["# Peak memory of the data readers", "",
             "Each row: a fresh process reads every sample of a generated data set (bench/timings/bench_datasets_memory.py);"
             " peak RSS from getrusage. The streaming readers should show the same peak at both sizes.", "",
             "| kind | reader | generated samples | samples read | peak RSS (MiB) | after imports (MiB) | s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['reader']} | {r['generated']} | {r['samples_read']} | {r['peak_rss_mib']} | "
                     f"{r['rss_after_imports_mib']} | {r['seconds']} |")
    from bench import provenance
    provenance.write_result(a.out, "datasets_memory", result, "\n".join(lines), __file__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
