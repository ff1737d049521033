"""Networks whose every number survives quantisation (binary spikes, integer weights, thresholds hit exactly) run
spike-identical in Loihi fixed point and in float, ties included: an input exactly at a threshold, which the
model fires on (v >= theta) and Loihi only above (v > vth << 6). The quantiser's tie rules must make them fire:
threshold neurons vth = 2 ceil(theta) - 1; LIFs with dyadic synapses vth = lambda theta / 64 - 1; other LIFs
lambda = (64 vth + 1) / theta. A statistical agreement gate would hardly see a broken tie rule; these see every
tie."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from convert import ir
from hw_backends.loihi.quantize import quantize
from sim.engine import Engine

N = 4


def _tie_network(theta: float):
    """Input (2, N) binary pixels, and:
    - s1 (x 4 theta) -> LIF n1 (tau 2, theta): fires on every 1 pixel (H = 2 theta, no tie); then
      s2 (ones) -> Threshold `and` (2): AND of the two channels, fired exactly at its threshold (a tie);
    - n1 -> an identity AxisSynapse -> LIF n2 (tau 2, theta 1/2, the quantiser's exact dyadic path): every spike
      of n1 puts n2's H exactly at 1/2 (a tie), so n2 repeats n1;
    - s3 (zero weights, bias 2 theta) -> LIF n3 (tau 2, theta): H = theta at every step (a tie, from the bias
      alone), so n3 fires at every step; its fixed-point v is lambda theta = 64 vth + 1 exactly where
      64 vth + 1 fits the 13-bit bias mantissa (vth <= 63)."""
    g = ir.Graph(metadata={"T": 3})
    g.add(ir.Input("input", shape=(2, N)))
    g.add(ir.Conv1d("s1", weight=np.eye(2)[:, :, None] * 4 * theta), "input")
    g.add(ir.LIF("n1", tau=2.0, v_threshold=theta), "s1")
    g.add(ir.Conv1d("s2", weight=np.ones((1, 2, 1))), "n1")
    g.add(ir.Threshold("and", threshold=2.0), "s2")
    g.add(ir.AxisSynapse("s3", in_axes=("c", "n"), out_axes=("c", "n"), sizes={"c": 2, "n": N}, weight=1.0), "n1")
    g.add(ir.LIF("n2", tau=2.0, v_threshold=0.5), "s3")
    g.add(ir.Conv1d("s4", weight=np.zeros((2, 2, 1)), bias=np.full(2, 2 * theta)), "input")
    g.add(ir.LIF("n3", tau=2.0, v_threshold=theta), "s4")
    g.add(ir.Output("output"), "and")
    g.validate()
    return g


@pytest.mark.parametrize("theta,vth_mant", [(1.0, 50), (0.5, 63), (3.0, 7), (0.25, 1)])
def test_ties_fire_in_fixed_point_as_in_float(theta, vth_mant):
    g = _tie_network(theta)
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2 * N)), dtype=torch.float64).reshape(-1, 2, N)
    names = ["n1", "and", "n2", "n3"]
    ref = Engine(g, "float").run(x, record=names)
    q, report = quantize(g, vth_mant=vth_mant, input_scale=1)  # binary pixels: the payload is x itself
    assert report["layers"]["n2"]["exact_dyadic"] and not report["layers"]["n3"]["exact_dyadic"]
    got = Engine(q, "loihi_fixed").run(x, record=names)
    assert ref.records["and"].sum() > 0 and torch.equal(ref.records["n2"], ref.records["n1"])  # the ties fire
    assert bool(ref.records["n3"].all())
    for n in names:
        assert torch.equal(got.records[n], ref.records[n]), n
