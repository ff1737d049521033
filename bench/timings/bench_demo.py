"""The demo's figures, from the demo itself: runs `bash scripts/demo.sh` (the README's first command, which writes
runs/demo/) and records, for each of its models (digits-2-64 on the digits, event-digits-2-64 on the event
digits, the Spike-driven Transformers sdt-digits-2-64 and sdt-event-digits-2-64 on both), the test accuracy the training reached, float parity (spike mismatches, prediction agreement), Loihi
fixed-point parity (prediction agreement, worst layer) and the energy totals of the reports, with the demo's wall
time, its training times and a sha256 over every file it wrote (two runs on one machine give the same digest: the
demo is deterministic). Then where the fixed-point error of the digits model comes from: spk-parity --target loihi
on all its test images with coarser settings than the default (8-bit weights and input, vth 1024; 16-bit weights,
8-bit input; a finer vth). Writes bench/results/demo.json and demo.md; the README quotes them.

usage: .venv/bin/python bench/timings/bench_demo.py [--out bench/results]     (about 5 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"
DEMO = ROOT / "runs" / "demo"
MODELS = {"digits-2-64": DEMO, "event-digits-2-64": DEMO / "events", "sdt-digits-2-64": DEMO / "sdt",
          "sdt-event-digits-2-64": DEMO / "sdt_events"}
# spk-parity --target loihi settings on the digits model: coarser than the default, and one finer
ERROR_SOURCES = {"8-bit weights, 8-bit input (scale 255), vth 1024": ["--weight-bits", "8", "--input-scale", "255",
                                                                      "--vth-mant", "1024"],
                 "16-bit weights, 8-bit input (scale 255), vth 4096": ["--input-scale", "255"],
                 "default: 16-bit weights, the data's exact grid, vth 4096": [],
                 "16-bit weights, the data's exact grid, vth 8192": ["--vth-mant", "8192"]}


SDT_DIRS = ("sdt", "sdt_events")  # the Spike-driven Transformer's outputs (the rest are Spikformer's)


def files_digest(d: Path, exclude: tuple = ()) -> tuple[int, str]:
    """(number of files, sha256 over their sorted relative paths and contents' sha256) under `d`, leaving out the
    top-level folders `exclude`."""
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.relative_to(d).parts[0] not in exclude)
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(d)}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return len(files), h.hexdigest()


def figures(d: Path) -> dict:
    from spikformer.checkpoint import load_checkpoint
    _, _, meta = load_checkpoint(d / "model.pt")
    pf = json.loads((d / "parity_float" / "parity.json").read_text())["overall"]
    px = json.loads((d / "parity_loihi" / "parity.json").read_text())["overall"]
    energy = json.loads((d / "report_loihi" / "energy.json").read_text())
    return {"test_accuracy": meta["test_accuracy"], "epochs": meta["epochs"],
            "float_parity": {k: pf[k] for k in ("samples", "total_spike_mismatches", "prediction_agreement",
                                                "logits_max_abs_diff")},
            "fixed_parity": {k: px[k] for k in ("samples", "prediction_agreement", "min_layer_agreement",
                                                "accuracy_reference", "accuracy_simulator")},
            "energy_loihi_event_pj": energy["totals"]["event_pj"], "energy_loihi_paper_pj": energy["totals"]["paper_pj"],
            "energy_loihi_ann_pj": energy["totals"]["ann_pj"]}


def error_sources(tmp: Path) -> dict:
    out = {}
    for what, flags in ERROR_SOURCES.items():
        d = tmp / f"parity{len(out)}"
        r = subprocess.run([str(ROOT / ".venv" / "bin" / "spk-parity"), str(DEMO / "model.pt"), "--target", "loihi",
                            "--data", "digits", "--min-agreement", "0", "--no-progress", "-o", str(d), *flags],
                           cwd=ROOT, capture_output=True, text=True)
        row = {"flags": flags, "rc": r.returncode}
        if (d / "parity.json").exists():
            p = json.loads((d / "parity.json").read_text())
            row.update({k: p["overall"][k] for k in ("samples", "prediction_agreement", "min_layer_agreement",
                                                     "state_events")})
        else:
            row["error"] = (r.stderr.strip().splitlines() or [""])[-1]
        out[what] = row
        print(f"{what}: {row}", flush=True)
    return out


def markdown(res: dict) -> str:
    lines = ["# The demo's figures (`bench/timings/bench_demo.py` runs `bash scripts/demo.sh`)", "",
             f"Machine: {res['machine']}; the whole demo took {res['demo_seconds']:.0f} s; it wrote "
             f"{res['files']} files under runs/demo/, sha256 over all of them {res['files_sha256'][:16]}; the "
             f"Spikformer models' {res['spikformer_files']} files alone: {res['spikformer_files_sha256'][:16]}.", "",
             "| model | test accuracy | float parity: spike mismatches, prediction agreement | Loihi fixed point: "
             "prediction agreement, worst layer | energy per inference (loihi model): event-based, paper, ANN |",
             "|---|---:|---|---|---|"]
    for name, f in res["models"].items():
        fp, xp = f["float_parity"], f["fixed_parity"]
        lines.append(f"| {name} ({f['epochs']} epochs, {f.get('training_seconds', 0):.0f} s) | {100 * f['test_accuracy']:.2f} % | "
                     f"{fp['total_spike_mismatches']}, {100 * fp['prediction_agreement']:.2f} % of {fp['samples']} | "
                     f"{100 * xp['prediction_agreement']:.2f} %, {100 * xp['min_layer_agreement']:.2f} % of spikes | "
                     f"{f['energy_loihi_event_pj'] / 1e6:.3g}, {f['energy_loihi_paper_pj'] / 1e6:.3g}, "
                     f"{f['energy_loihi_ann_pj'] / 1e6:.3g} uJ |")
    lines += ["", "Where the digits model's fixed-point error comes from (spk-parity --target loihi, all its test images):",
              "", "| settings | prediction agreement | worst layer (share of spikes) | state events (wraps, saturations, "
              "inputs over 16 bits) |", "|---|---:|---:|---|"]
    for what, r in res["error_sources"].items():
        if "prediction_agreement" in r:
            ev = "; ".join(f"{k}: {v}" for k, v in (r.get("state_events") or {}).items()) or "none"
            lines.append(f"| {what} | {100 * r['prediction_agreement']:.2f} % | {100 * r['min_layer_agreement']:.2f} % "
                         f"| {ev} |")
        else:
            lines.append(f"| {what} | refused: {r['error']} | | |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    t = time.perf_counter()
    r = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    secs = time.perf_counter() - t
    if r.returncode:
        print(r.stdout[-4000:])
        raise SystemExit(f"bench_demo: scripts/demo.sh failed ({r.returncode}); nothing written")
    n, digest = files_digest(DEMO)
    trained = [float(ln.split(":")[1].split()[0]) for ln in r.stdout.splitlines() if ln.startswith("training time:")]
    res = {"machine": f"{os.cpu_count()} CPU cores, Python {platform.python_version()}", "demo_seconds": round(secs, 1),
           "files": n, "files_sha256": digest, "models": {k: figures(d) for k, d in MODELS.items()}}
    # the Spikformer models' files alone: their digest before the Spike-driven Transformer steps existed was the
    # whole demo's, f87fafbf8965ef63 (53 files); equal means byte-identical through the extended frontend
    res["spikformer_files"], res["spikformer_files_sha256"] = files_digest(DEMO, exclude=SDT_DIRS)
    for (name, f), s in zip(res["models"].items(), trained):
        f["training_seconds"] = s
    with tempfile.TemporaryDirectory() as tmp:
        res["error_sources"] = error_sources(Path(tmp))
    from bench import provenance
    provenance.write_result(a.out, "demo", res, markdown(res), __file__,
                            extra=["scripts/demo.sh", "scripts/setup.sh", "commands.train", "commands.convert",
                                   "commands.parity", "commands.report"])
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
