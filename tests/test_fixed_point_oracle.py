"""An oracle of Loihi's fixed-point arithmetic written from docs/loihi_fixed_point.md (sections 1, 2 and 4) in plain
Python integers, importing neither the simulator nor the quantiser, against the simulator's fixed-point engine
(sim.engine.Engine(graph, "loihi_fixed")) on random integer networks: graded input payloads, kernel-1 synapses with
positive and negative weight exponents and mixed-sign (even) weights, LIF layers with and without u memory, leak,
bias, 24-bit u wrap and v saturation. Spikes at every step, u and v after the last step, and the wrap count must
be equal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convert import ir
from sim.engine import Engine

STATE = 2 ** 23


def _trunc0(x: int) -> int:
    """sign(x) * (|x| >> 12): rounds toward zero."""
    return -((-x) >> 12) if x < 0 else x >> 12


def _shift(a: int, e: int) -> int:
    return a << e if e > 0 else a >> -e  # arithmetic: floor for negative values


class OracleLIF:
    """docs/loihi_fixed_point.md section 1, one neuron at a time."""

    def __init__(self, n: int, du: int, dv: int, vth: int, bias_mant, bias_exp: int):
        self.du, self.dv, self.vth, self.bias_exp = du, dv, vth, bias_exp
        self.bias = [0] * n if bias_mant is None else [int(b) for b in bias_mant]
        self.u, self.v = [0] * n, [0] * n
        self.wraps = self.saturations = 0

    def step(self, a_in: list[int]) -> list[int]:
        out = []
        for i, a in enumerate(a_in):
            u = _trunc0(self.u[i] * (4096 - (self.du + 1))) + (a << 6)
            if u > STATE:
                u -= 2 * STATE
                self.wraps += 1
            elif u <= -STATE:
                u += 2 * STATE
                self.wraps += 1
            v = _trunc0(self.v[i] * (4096 - self.dv)) + u + (self.bias[i] << self.bias_exp)
            if abs(v) > STATE - 1:
                self.saturations += 1
                v = max(-(STATE - 1), min(STATE - 1, v))
            s = int(v > (self.vth << 6))
            self.u[i], self.v[i] = u, 0 if s else v
            out.append(s)
        return out


def _synapse(w: np.ndarray, e: int, x: list[int]) -> list[int]:
    """docs section 2 (logical time): a = W @ s, then shifted by the weight exponent."""
    return [_shift(sum(int(w[o, i]) * x[i] for i in range(len(x))), e) for o in range(w.shape[0])]


CASES = [  # (first synapse exponent, second, first LIF (du, dv, vth, bias?), second LIF)
    (1, -2, (4095, 2048, 300, True), (0, 0, 131071, True)),      # u kept and wrapping; v saturating, no leak
    (0, 3, (1000, 300, 300, False), (4095, 4095, 50, True)),     # u decaying; v cleared each step
    (-3, 0, (0, 1, 5, True), (2000, 1000, 20000, False)),        # tiny threshold; weak inputs, floor shifts
]


@pytest.mark.parametrize("e1,e2,l1,l2", CASES)
def test_the_simulator_equals_the_oracle_written_from_the_docs(e1, e2, l1, l2):
    rng = np.random.default_rng([e1 + 8, e2 + 8])
    C, N, H, K, S, T, B = 3, 5, 4, 3, 255, 7, 3
    w1 = rng.integers(-128, 128, (H, C)) * 2      # mixed signs: even mantissas (lava drops the lowest bit)
    w2 = rng.integers(-128, 128, (K, H)) * 2
    bias = {i: (rng.integers(-4096, 4096, n) if l[3] else None) for i, (l, n) in enumerate(((l1, H), (l2, K)))}
    g = ir.Graph(metadata={"input_payload_scale": S})
    g.add(ir.Input("input", shape=(C, N)))
    g.add(ir.Conv1d("s1", weight=w1[:, :, None].astype(float), weight_exp=e1), "input")
    g.add(ir.LoihiLIF("n1", du=l1[0], dv=l1[1], vth=l1[2], bias_exp=3,
                      bias_mant=None if bias[0] is None else bias[0].astype(float)), "s1")
    g.add(ir.Conv1d("s2", weight=w2[:, :, None].astype(float), weight_exp=e2), "n1")
    g.add(ir.LoihiLIF("n2", du=l2[0], dv=l2[1], vth=l2[2], bias_exp=5,
                      bias_mant=None if bias[1] is None else bias[1].astype(float)), "s2")
    g.add(ir.Output("output"), "n2")
    x = rng.random((B, C, N))  # off the payload grid: the input payload is round(x S) (docs section 4)
    payload = np.array([[[round(float(v) * S) for v in row] for row in img] for img in x])
    eng = Engine(g, "loihi_fixed")
    res = eng.run(torch.from_numpy(x), T=T, record="all")

    wraps = saturations = 0
    for b in range(B):
        for n in range(N):  # kernel-1 synapses: every token is its own network
            lif1 = OracleLIF(H, l1[0], l1[1], l1[2], bias[0], 3)
            lif2 = OracleLIF(K, l2[0], l2[1], l2[2], bias[1], 5)
            for t in range(T):
                s1 = lif1.step(_synapse(w1, e1, [int(p) for p in payload[b, :, n]]))
                s2 = lif2.step(_synapse(w2, e2, s1))
                assert res.records["n1"][t, b, :, n].tolist() == s1, (t, b, n)
                assert res.records["n2"][t, b, :, n].tolist() == s2, (t, b, n)
            wraps += lif1.wraps + lif2.wraps
            saturations += lif1.saturations + lif2.saturations
            for name, lif in (("n1", lif1), ("n2", lif2)):  # the state after the last step, exactly
                st = eng.last_state[name]
                assert st["v"][b, :, n].tolist() == lif.v, (name, b, n)
                if "u" in st:  # kept where u has memory (du < 4095)
                    assert st["u"][b, :, n].tolist() == lif.u, (name, b, n)
    assert sum(int(st.get("u_wrapped", 0)) for st in eng.last_state.values()) == wraps
    assert res.records["n1"].sum() > 0 and 0 < res.records["n2"].sum() < res.records["n2"].numel() or e1 != 0
    if e1 == 1:  # the first case is built to wrap u and saturate v
        assert wraps > 0 and saturations > 0
