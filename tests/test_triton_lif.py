"""sim.triton_lif (the LIF layer as one Triton kernel, for the GPU) equals sim.lif_kernel (the compiled CPU pass,
itself checked against lif_step in tests/test_schedule.py) bit for bit: spikes, the final v, wrap and saturation
counts, from no state and from a given one, float32 and float64 storage, biases of different sizes, each
decay, u wrapping and v saturating. Triton is pinned through torch; without a GPU here, the kernel runs in
Triton's interpreter (TRITON_INTERPRET=1, numpy on the CPU), in a child process because Triton reads that
variable when a kernel is defined."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, itertools
import numpy as np, torch
from sim import lif_kernel, triton_lif
assert triton_lif.available() and lif_kernel.available()
out = []
g = torch.Generator().manual_seed(0)
for (amp, dv, dtype, fresh, per_neuron, T) in itertools.product(
        (3000, 150_000, 600_000), (0, 2048, 4095, 1000), (torch.float32, torch.float64), (True, False), (False, True),
        (1, 4)):
    if dtype == torch.float32 and amp >= 2 ** 24 // 64:
        continue  # a float32 payload must stay below 2**24 (the engine's precision plan)
    P, L = 3, 10
    a = torch.randint(-amp, amp, (T, P, L), generator=g).to(dtype)
    a[0, 0, 0] = -amp  # the wrap's edge
    bias = (torch.randint(-4000, 4000, (L,), generator=g).double() * (8 if per_neuron else 1)).numpy()
    v0 = torch.randint(-5_000_000, 5_000_000, (P, L), generator=g).to(dtype)
    th = float(500 << 6)
    res = []
    for run in (lif_kernel.run, triton_lif.run):
        v = v0.clone()
        s = torch.full((T, P, L), -1.0, dtype=dtype)
        counts = run(a.contiguous(), v, bias, 4096 - dv, th, s, True, True, fresh)
        res.append((s, v, counts))
    (s1, v1, c1), (s2, v2, c2) = res
    out.append({"case": [amp, dv, str(dtype), fresh, per_neuron, T], "spikes_equal": bool(torch.equal(s1, s2)),
                "v_equal": bool(torch.equal(v1, v2)), "counts": [list(c1), list(c2)],
                "spikes": int(s1.sum()), "elements": s1.numel()})
try:  # a non-integer input is refused, not rounded
    triton_lif.run(torch.full((1, 1, 2), 0.5), torch.zeros(1, 2), np.zeros(2), 2048, 64.0, torch.zeros(1, 1, 2),
                   True, True, True)
    refused = False
except ValueError:
    refused = True
print(json.dumps({"rows": out, "refused_fraction": refused}))
"""


def test_triton_lif_equals_the_compiled_cpu_pass():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    rows = res["rows"]
    assert res["refused_fraction"]
    assert len(rows) == 160
    bad = [row["case"] for row in rows if not (row["spikes_equal"] and row["v_equal"]
                                               and row["counts"][0] == row["counts"][1])]
    assert not bad, f"the Triton LIF differs from the CPU pass in {len(bad)} cases, e.g. {bad[:3]}"
    # the cases exercise what they are meant to: spikes and silence, wraps and saturations
    assert all(0 < row["spikes"] < row["elements"] for row in rows if row["case"][5] == 4)
    assert any(row["counts"][0][0] for row in rows) and any(row["counts"][0][1] for row in rows)
