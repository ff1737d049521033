"""The researcher's workflow end to end, as the README shows it: an official training checkpoint of a paper
configuration that is not a preset (CIFAR-100 Spikformer-4-384: cifar10/model.py with num_classes=100, saved as the
official train.py's CheckpointSaver does: state_dict + args Namespace) and a dataset folder in the original layout
(cifar-100-python), then every command with no flag but the data:

    spk-convert CKPT --target nir -o DIR        spk-convert CKPT --target loihi -o DIR
    spk-eval CKPT --data cifar100:DIR
    spk-parity CKPT --target nir --mode float --data cifar100:DIR -o DIR
    spk-parity CKPT --target loihi --data cifar100:DIR -o DIR        (Loihi fixed point)
    spk-report CKPT --target loihi --data cifar100:DIR -o DIR

The weights are random (BatchNorm statistics set so that every layer fires) and the images generated (pixels of
a per-class colour plus noise, written as the original pickles): the numbers measure the toolchain (exactness,
agreement, time, memory), not a trained model's accuracy. Each command runs in its own process; its wall time,
peak RSS and result line are recorded.

usage: .venv/bin/python bench/timings/bench_official_workflow.py [--test-images 200] [--out bench/results]
Writes bench/results/official_workflow.json and official_workflow.md.
"""
from __future__ import annotations

import argparse
import json
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
CIFAR_YML = dict(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616], interpolation="bicubic", crop_pct=1.0)


def write_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(100, 3))
    root.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        img = np.clip(colours[fine][:, :, None, None] + rng.integers(-50, 51, size=(n, 3, 32, 32)), 0, 255)
        d = {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": [int(v) for v in fine],
             b"coarse_labels": [int(v) // 5 for v in fine], b"data": img.astype(np.uint8).reshape(n, -1)}
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"c%d" % i for i in range(100)],
                                              b"coarse_label_names": [b"s%d" % i for i in range(20)]}, protocol=2))


def official_checkpoint(path: Path) -> None:
    import torch
    from spikformer.synthetic import randomized_model

    model = randomized_model("cifar10-4-384", seed=0, num_classes=100)
    args = argparse.Namespace(model="spikformer", dataset="torch/cifar100", num_classes=100, img_size=32, dim=384,
                              layer=4, num_heads=12, time_step=4, patch_size=4, mlp_ratio=4, epochs=300,
                              batch_size=128, **CIFAR_YML)
    torch.save({"epoch": 299, "arch": "spikformer", "state_dict": model.state_dict(), "optimizer": {},
                "version": 2, "args": args, "metric": 0.0}, path)


def run(name: str, argv: list) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([str(BIN / name), *map(str, argv)], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    out = (p.stdout + p.stderr).strip().splitlines()
    res = {"command": " ".join([name] + [str(a) for a in argv]), "rc": p.returncode, "seconds": round(wall, 1),
           "peak_rss_mib_so_far": round(peak), "output": out[-12:]}
    print(f"{name}: rc {p.returncode}, {wall:.1f} s", flush=True)
    if p.returncode != 0:
        raise SystemExit(f"{res['command']} failed:\n" + "\n".join(out[-20:]))
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    steps = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = tmp / "cifar100-4-384.pth.tar"
        official_checkpoint(ckpt)
        write_cifar100(tmp / "cifar-100-python", 100, a.test_images)
        data = f"cifar100:{tmp / 'cifar-100-python'}"
        steps.append(run("spk-convert", [ckpt, "--target", "nir", "-o", tmp / "nir"]))
        steps.append(run("spk-convert", [ckpt, "--target", "loihi", "-o", tmp / "loihi"]))
        steps.append(run("spk-eval", [ckpt, "--data", data]))
        steps.append(run("spk-parity", [ckpt, "--target", "nir", "--mode", "float", "--data", data,
                                        "--min-agreement", "1.0", "--no-progress", "-o", tmp / "parity_float"]))
        steps.append(run("spk-parity", [ckpt, "--target", "loihi", "--data", data, "--min-agreement", "0",
                                        "--no-progress", "-o", tmp / "parity_fixed"]))
        steps.append(run("spk-report", [ckpt, "--target", "loihi", "--data", data, "--no-progress",
                                        "-o", tmp / "report"]))
        pf = json.loads((tmp / "parity_float" / "parity.json").read_text())
        px = json.loads((tmp / "parity_fixed" / "parity.json").read_text())
        q = json.loads((tmp / "loihi" / "quantization.json").read_text())
    res = {"machine": f"{platform.machine()}, {platform.python_version()}",
           "test_images": a.test_images, "steps": steps,
           "float_parity": {k: pf["overall"][k] for k in ("samples", "total_spike_mismatches", "prediction_agreement",
                                                          "logits_max_abs_diff")},
           "fixed_parity": {k: px["overall"][k] for k in ("samples", "total_spike_mismatches", "prediction_agreement",
                                                          "min_layer_agreement")},
           "architecture_origin": pf["run"].get("architecture_origin"), "data_config": pf["run"].get("data_config"),
           "input_normalization": q["input"].get("normalization", {}).get("convention")}
    lines = ["# The official workflow end to end (bench/timings/bench_official_workflow.py)", "",
             f"Machine: {res['machine']}. An official training checkpoint of CIFAR-100 Spikformer-4-384 "
             "(random weights, args as the official train.py saves them) and a generated cifar-100-python folder "
             f"({a.test_images} test images); no flag but the data.", "",
             "| command | seconds | last line |", "|---|---:|---|"]
    for s in steps:
        last = next((ln for ln in reversed(s["output"]) if ln.strip()), "")
        lines.append(f"| `{s['command'].replace(str(tmp), '...')}` | {s['seconds']} | "
                     f"{last.replace(str(tmp), '...')[:160]} |")
    lines += ["", f"Float parity: {res['float_parity']}", f"Fixed-point parity: {res['fixed_parity']}",
              f"Architecture origins: {res['architecture_origin']}", f"Data config: {res['data_config']}",
              f"Loihi input: {res['input_normalization']}"]
    from bench import provenance
    provenance.write_result(a.out, "official_workflow", res, "\n".join(lines), __file__,
                            extra=["commands.convert", "commands.parity", "commands.report", "commands.train"])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
