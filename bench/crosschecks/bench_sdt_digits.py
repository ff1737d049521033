"""A small Spike-driven Transformer trained on the built-in digits, converted and checked as the Spikformer demo is:
float parity in both forms, and the Loihi graded form in the fixed-point simulator against the float32 reference
(the issue's gate: >= 99 % prediction agreement on a trained model).

The model: 8x8 digits (1 channel), embed 64, 4 heads, depth 2, MLP ratio 4, T = 4, pooling "0011" (2 x 2 tokens),
lif; AdamW (lr 3e-3, weight decay 0.01, cosine) for 15 epochs, batch 64, on the stratified 80/20 split (seed 0);
all 360 test images checked.

    .venv/bin/python bench/crosschecks/bench_sdt_digits.py [--out bench/results]
Writes bench/results/sdt_digits.json and sdt_digits.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import provenance  # noqa: E402


def main() -> int:
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from analysis.parity import run_parity
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.loihi.quantize import quantize
    from spikformer.sdt_model import SpikeDrivenTransformer
    from spikformer.sdt_presets import SDTConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=d.target, random_state=0)
    cfg = SDTConfig(img_size=8, in_channels=1, num_classes=10, embed_dim=64, num_heads=4, depth=2, mlp_ratio=4, T=4,
                    pooling_stat="0011")
    model = SpikeDrivenTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    epochs = 15
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.tensor(tr)[torch.randperm(len(tr))]
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    xt, yt = x[te], y[te]
    res = {"config": cfg.to_dict(), "epochs": epochs, "train_s": round(train_s, 1), "test_images": len(te)}
    for form in ("binary", "graded"):
        c = run_parity(model, lower(spikformer_to_ir(model), ssa_form=form), xt, yt, mode="float", batch_size=60,
                       progress=False)
        res[f"float_{form}"] = {"agreement": c.agreeing / c.samples, "spike_mismatches":
                                sum(s.mismatches for s in c.layers.values()), "accuracy": c.correct_reference / c.samples}
    q, report = quantize(lower(spikformer_to_ir(model), ssa_form="graded"))
    c = run_parity(model, q, xt, yt, mode="fixed", batch_size=60, progress=False)
    worst = min((1 - s.mismatches / s.elements, n) for n, s in c.layers.items())
    res["fixed_graded"] = {"agreement": c.agreeing / c.samples, "agreeing": c.agreeing, "samples": c.samples,
                           "accuracy_reference": c.correct_reference / c.samples,
                           "accuracy_simulator": c.correct_simulator / c.samples,
                           "worst_layer": worst[1], "worst_layer_agreement": worst[0],
                           "payload": report["graded_payload"]}
    f = res["fixed_graded"]
    md = "\n".join([
        "# A Spike-driven Transformer trained on the built-in digits, checked as the demo checks Spikformer", "",
        f"8x8 digits, embed 64, 4 heads, depth 2, T = 4, lif; {epochs} epochs in {res['train_s']} s on this machine; "
        f"all {len(te)} test images.", "",
        "| check | result |", "|---|---|",
        f"| test accuracy (PyTorch) | {res['float_binary']['accuracy'] * 100:.2f} % |",
        f"| float parity, binary form | {res['float_binary']['spike_mismatches']} spike mismatches, "
        f"{res['float_binary']['agreement'] * 100:.2f} % prediction agreement |",
        f"| float parity, graded (Loihi) form | {res['float_graded']['spike_mismatches']} spike mismatches, "
        f"{res['float_graded']['agreement'] * 100:.2f} % prediction agreement |",
        f"| Loihi fixed point, graded form | {f['agreement'] * 100:.2f} % prediction agreement ({f['agreeing']} of "
        f"{f['samples']}; gate 99 %), worst layer {f['worst_layer']} {f['worst_layer_agreement'] * 100:.2f} % of "
        f"spikes; payload scale P = {f['payload']['scale']:g} (value bound {f['payload']['value_bound']:.0f}) |", ""])
    provenance.write_result(a.out, "sdt_digits", res, md, __file__)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
