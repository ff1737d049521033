"""Every official Spike-driven Transformer configuration, as a user has it (the official code's state dict, random
weights, saved bare as its training would save the weights), through `spk-convert` with no flag beyond what the
file lacks: `--target loihi` (the graded form, quantised, timed and placed on Loihi 2) and `--target nir`.

For each preset of spikformer/sdt_presets.py: the official model (tests/official_sdt/, built as its train.py builds
it) with random weights, BatchNorm statistics and PLIF decays (tests/test_sdt_model.py's `_randomize`, seeded),
`torch.save(model.state_dict())`, then the console script in a subprocess. Records the exit code, the preset the
shapes matched, the flags given (the two gesture presets share their shapes: `--time-steps`), cores, chips,
neurons, synapses and pipeline depth of the Loihi 2 build, its wall time, and the NIR target's one-line refusal
(NIR has no node for the max-pool of graded values, docs/sdt_lowering.md step 7).

    .venv/bin/python bench/crosschecks/bench_sdt_convert.py [--presets a,b] [--out bench/results]
Writes bench/results/sdt_convert.json and sdt_convert.md.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # first, always: site-packages holds another package named `tests`

from bench import provenance  # noqa: E402

FLAGS = {"sdt-gesture-2-256-t10": ["--time-steps", "10"], "sdt-gesture-2-256-t16": ["--time-steps", "16"]}
CONVERT = str(ROOT / ".venv" / "bin" / "spk-convert")


def one(official, preset: str, tmp: Path) -> dict:
    import torch

    from spikformer.sdt_presets import SDT_PRESETS
    from tests.test_sdt_model import _official_model, _randomize
    model = _official_model(official, SDT_PRESETS[preset])
    _randomize(model, 11)
    ckpt = tmp / f"{preset}.pth"
    torch.save(model.state_dict(), ckpt)
    del model
    flags = FLAGS.get(preset, [])
    row = {"preset": preset, "flags": " ".join(flags)}
    t0 = time.perf_counter()
    r = subprocess.run([CONVERT, str(ckpt), "--target", "loihi", "-o", str(tmp / f"{preset}_loihi"), *flags],
                       capture_output=True, text=True, cwd=ROOT)
    row["loihi_s"] = round(time.perf_counter() - t0, 1)
    row["loihi_rc"] = r.returncode
    out = r.stdout
    matched = re.search(r"\((\S+) matched by parameter names and shapes", out) or re.search(r"\((\S+), \d+ blocks", out)
    row["matched"] = matched.group(1) if matched else None
    build = re.search(r"loihi SSA graded \(chosen, on loihi2\): ([\d,]+) cores, ([\d,]+) chips, ([\d,]+) neurons, "
                      r"([\d,]+) synapses, depth (\d+)", out)
    if build:
        row.update({k: int(v.replace(",", "")) for k, v in zip(("cores", "chips", "neurons", "synapses", "depth"),
                                                                build.groups())})
    row["binary_form"] = "not built" if "loihi SSA binary: not built" in out else "?"
    if r.returncode:
        row["loihi_error"] = (r.stderr.strip().splitlines() or [""])[-1]
    manifest = tmp / f"{preset}_loihi" / "manifest.json"
    row["manifest_files"] = len(json.loads(manifest.read_text())["files"]) if manifest.exists() else 0
    n = subprocess.run([CONVERT, str(ckpt), "--target", "nir", "-o", str(tmp / f"{preset}.nir"), *flags],
                       capture_output=True, text=True, cwd=ROOT)
    err = [ln for ln in n.stderr.splitlines() if ln.strip()]
    row["nir_rc"], row["nir_stderr_lines"] = n.returncode, len(err)
    row["nir_refusal"] = err[-1] if err else ""
    row["nir_written"] = (tmp / f"{preset}.nir").exists()
    ckpt.unlink()
    for p in tmp.glob(f"{preset}_loihi*"):
        subprocess.run(["rm", "-rf", str(p)])
    return row


def markdown(rows: list[dict]) -> str:
    ok = sum(r["loihi_rc"] == 0 for r in rows)
    out = ["# Official Spike-driven Transformer state dicts through spk-convert "
           "(`bench/crosschecks/bench_sdt_convert.py`)", "",
           f"{ok} of {len(rows)} official configurations convert to Loihi 2 from a bare state dict (random weights); "
           f"NIR refuses each in one line.", "",
           "| preset | flags | matched | Loihi 2: cores, chips | neurons | synapses | depth | time | NIR |",
           "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        loihi = (f"{r['cores']:,}, {r['chips']:,}" if "cores" in r else f"failed: {r.get('loihi_error', '')}")
        nir = ("refused in one line" if r["nir_rc"] and r["nir_stderr_lines"] == 1 and not r["nir_written"]
               else f"rc {r['nir_rc']}")
        out.append(f"| {r['preset']} | {r['flags'] or '-'} | {r['matched']} | {loihi} | {r.get('neurons', 0):,} | "
                   f"{r.get('synapses', 0):,} | {r.get('depth', '-')} | {r['loihi_s']} s | {nir} |")
    if rows:
        out += ["", f"The NIR refusal: `{rows[0]['nir_refusal']}`"]
    return "\n".join(out) + "\n"


def main() -> int:
    from spikformer.sdt_presets import SDT_PRESETS
    from tests.test_sdt_model import _official_code
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(SDT_PRESETS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    rows = []
    with _official_code() as official, tempfile.TemporaryDirectory() as tmp:
        for p in a.presets.split(","):
            rows.append(one(official, p, Path(tmp)))
            print({k: rows[-1].get(k) for k in ("preset", "loihi_rc", "matched", "cores", "chips", "loihi_s",
                                                "nir_rc")}, flush=True)
    res = {"rows": rows, "converted": sum(r["loihi_rc"] == 0 for r in rows), "presets": len(rows)}
    provenance.write_result(a.out, "sdt_convert", res, markdown(rows), __file__,
                            extra=["commands.convert", "spikformer.sdt_architecture"])
    return 0 if res["converted"] == res["presets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
