"""The fixed-point engine's float32 shortcuts (sums and LIF states that provably stay below 2**24) give exactly
what the all-float64 run gives: every spike, every graded payload and the readout."""
import pytest
import torch

from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hw_backends.loihi.compile import compile_graph
from sim.engine import Engine

from .helpers_models import randomized_model


@pytest.mark.parametrize("form,bits", [("graded", 16), ("binary", 16), ("graded", 8)])
def test_float32_shortcuts_are_exact(form, bits):
    m = randomized_model("digits-2-64", seed=5, attn_drive=1.0)
    g = compile_graph(lower(spikformer_to_ir(m), ssa_form=form), weight_bits=bits).graph
    x = torch.rand(8, *g.nodes["input"].shape, generator=torch.Generator().manual_seed(2))
    x[:2] = 1.0  # bright images: large first-layer inputs
    fast = Engine(g, "loihi_fixed", fuse_ssa=True)
    names = [n for n, node in fast.graph.nodes.items() if node.spiking]
    assert fast.f32 and fast.f32_out  # the shortcuts are exercised
    a = fast.run(x, record=names)
    b = Engine(g, "loihi_fixed", fuse_ssa=True, float32_shortcuts=False).run(x, record=names)
    assert sum(int(a.records[n].abs().sum()) for n in a.records) > 0
    for n in a.records:
        assert torch.equal(a.records[n].double(), b.records[n].double()), n
    assert torch.equal(a.outputs["output"], b.outputs["output"])
