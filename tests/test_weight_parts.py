"""16-bit weights: the simulator's one-synapse shortcut for a high and a low 8-bit group
(sim/weight_parts.py) gives the same spikes and readout as running both groups, and the fixed-point graph
with 16-bit weights follows the float reference more closely than with 8-bit ones."""
import pytest
import torch

from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hardware.loihi import limits as L
from hw_backends.loihi.compile import compile_graph
from sim.engine import Engine
from sim.weight_parts import fuse_weight_parts

from .helpers_models import randomized_model


def _graph(bits: int, form: str = "graded"):
    m = randomized_model("digits-2-64", seed=3, attn_drive=1.0)
    return m, compile_graph(lower(spikformer_to_ir(m), ssa_form=form), weight_bits=bits).graph


@pytest.mark.parametrize("form", ["graded", "binary"])  # binary: residual streams, shifted stream by stream
def test_fused_weight_parts_are_bit_identical(form):
    _, g = _graph(16, form)
    parts = g.metadata["weight_low_parts"]
    assert len(parts) >= 10  # every dense layer and the head has a low part
    fused = fuse_weight_parts(g)
    assert 0 < len(fused.metadata["weight_low_parts_fused"]) <= len(parts)
    assert not any(n in fused.nodes for n in fused.metadata["weight_low_parts_fused"])
    x = torch.rand(6, *g.nodes["input"].shape, generator=torch.Generator().manual_seed(0))
    names = [n for n, node in g.nodes.items() if node.spiking]
    a = Engine(g, "loihi_fixed").run(x, record=names)
    b = Engine(fused, "loihi_fixed").run(x, record=names)
    assert sum(int(a.records[n].sum()) for n in names) > 0
    for n in names:
        assert torch.equal(a.records[n], b.records[n]), n
    assert torch.equal(a.outputs["output"], b.outputs["output"])


def test_low_parts_shrink_the_recorded_weight_error():
    """quantization.json gives each dense synapse's largest weight error; with the low part it is at most
    2**-6 of the 8-bit one (7 more bits), or, where the low exponent is clamped at the smallest one (the first
    layer, whose weights are divided by the input payload scale), one even step 2**(WEIGHT_EXP_MIN + 1)."""
    m = randomized_model("digits-2-64", seed=3, attn_drive=1.0)
    g = lower(spikformer_to_ir(m), ssa_form="graded")
    rep = {bits: compile_graph(g, weight_bits=bits).quantization["synapses"] for bits in (8, 16)}
    dense = [n for n, r in rep[8].items() if "max_abs_error" in r and r["max_abs_error"] > 0]
    assert len(dense) >= 10
    for n in dense:
        assert rep[16][n]["low_part"] == n + ".low"
        assert rep[16][n + ".low"]["part"] == "low" and rep[16][n + ".low"]["max_abs_mantissa"] <= 255
        bound = max(rep[8][n]["max_abs_error"] * 2.0 ** -6, 2.0 ** (L.WEIGHT_EXP_MIN + 1))
        assert rep[16][n]["max_abs_error"] <= bound, n
    assert sum(rep[16][n]["max_abs_error"] <= rep[8][n]["max_abs_error"] * 2.0 ** -6 for n in dense) >= 10
