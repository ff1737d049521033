"""Every Spike-driven Transformer configuration at full size, lowered to spike-only operations and run in float
semantics, against the official code (tests/official_sdt/, vendored unchanged, built as its train.py builds it).

For each preset of spikformer/sdt_presets.py: the official model with random weights, BatchNorm statistics and
PLIF decays (seeded; tests/test_sdt_model.py's `_randomize`), its state dict loaded strictly into ours, traced and
lowered (convert.frontend + convert.passes.lower, binary form), run by the simulator in float64 on random inputs
(images in [0, 2), or event frames in [0, 6)) and compared neuron by neuron with the official forward's spikes
(tests/test_sdt_lowering.py's recorder: every LIF, every spike max-pool, every Erode call). Records the graph's
size, the conversion time, both run times, the elements compared, the mismatches and the logits' largest
difference. The tests run the same comparison on reduced sizes; this runs the official sizes.

    .venv/bin/python bench/crosschecks/bench_sdt_float.py [--presets a,b] [--samples 2] [--out bench/results]
Writes bench/results/sdt_float.json and sdt_float.md.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # first, always: site-packages holds another package named `tests`

from bench import provenance  # noqa: E402


def one(official, preset: str, samples: int) -> dict:
    import torch

    from convert import ir
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from sim.engine import Engine
    from spikformer.sdt_model import SpikeDrivenTransformer
    from spikformer.sdt_presets import SDT_PRESETS
    from tests.test_sdt_lowering import _official_spikes
    from tests.test_sdt_model import _official_model, _randomize

    cfg = SDT_PRESETS[preset]
    ref = _official_model(official, cfg).double()
    _randomize(ref, 11)
    ours = SpikeDrivenTransformer(cfg).double().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    t0 = time.perf_counter()
    g = lower(spikformer_to_ir(ours))
    convert_s = time.perf_counter() - t0
    x = torch.rand((samples, *cfg.input_shape), generator=torch.Generator().manual_seed(12), dtype=torch.float64) * \
        (6 if cfg.event_input else 2)
    t0 = time.perf_counter()
    want_logits, want = _official_spikes(ref, x)
    ref_s = time.perf_counter() - t0
    names = sorted(n for n in want if n in g.nodes)
    t0 = time.perf_counter()
    got = Engine(g, "float", dtype=torch.float64).run(x, record=names)
    sim_s = time.perf_counter() - t0
    mismatches = {n: int((got.records[n] != want[n]).sum()) for n in names}
    shapes = g.shapes()
    row = {
        "preset": preset, "samples": samples, "T": cfg.T, "nodes": len(g.nodes),
        "populations": sum(1 for n in g.nodes.values() if n.is_neuron),
        "neurons": sum(int(torch.tensor(shapes[n.name]).prod()) for n in g.nodes.values() if n.is_neuron),
        "graded_relu": len(g.of_type(ir.GradedRelu)),
        "layers_compared": len(names), "not_compared": sorted(set(want) - set(names)),
        "elements_compared": sum(int(want[n].numel()) for n in names),
        "mismatches": sum(mismatches.values()), "layers_with_mismatches": sorted(n for n, k in mismatches.items() if k),
        "busy_layers": sum(1 for n in names if 0 < float(want[n].mean()) < 1),
        "logit_max_abs_diff": float((got.outputs["output"] - want_logits).abs().max()),
        "convert_s": round(convert_s, 2), "reference_s": round(ref_s, 2), "simulator_s": round(sim_s, 2)}
    del ref, ours, g, got, want
    gc.collect()
    return row


def markdown(rows: list[dict]) -> str:
    out = ["# The Spike-driven Transformer lowered, in float semantics, against the official code", "",
           "Every preset at its official size: the official model (tests/official_sdt/) with random weights, "
           "statistics and PLIF decays, its state dict loaded into ours, traced and lowered (binary form), run by "
           "the simulator in float64 and compared with the official forward neuron by neuron (every LIF, spike "
           "max-pool and Erode call; the graded max-pool `patch_embed.maxpool3` holds float values and is compared "
           "through the neurons that read it).", "",
           "| preset | samples x T | populations | neurons | layers compared | elements compared | mismatches | "
           "busy layers | logits max diff | convert s | reference s | simulator s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| `{r['preset']}` | {r['samples']} x {r['T']} | {r['populations']} | {r['neurons']:,} | "
                   f"{r['layers_compared']} | {r['elements_compared']:,} | {r['mismatches']} | {r['busy_layers']} | "
                   f"{r['logit_max_abs_diff']:.1e} | {r['convert_s']} | {r['reference_s']} | {r['simulator_s']} |")
    total = sum(r["mismatches"] for r in rows)
    out += ["", f"Mismatches over all presets: {total} of {sum(r['elements_compared'] for r in rows):,} spikes "
                f"compared."]
    return "\n".join(out) + "\n"


def main() -> int:
    from spikformer.sdt_presets import SDT_PRESETS
    from tests.test_sdt_model import _official_code
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(SDT_PRESETS))
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    rows = []
    with _official_code() as official:
        for p in a.presets.split(","):
            rows.append(one(official, p, a.samples))
            print({k: rows[-1][k] for k in ("preset", "mismatches", "elements_compared", "simulator_s")}, flush=True)
    res = {"rows": rows, "mismatches": sum(r["mismatches"] for r in rows),
           "elements_compared": sum(r["elements_compared"] for r in rows)}
    provenance.write_result(a.out, "sdt_float", res, markdown(rows), __file__)
    return 0 if res["mismatches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
