"""The fused SSA kernel gives bit-identical spikes to the explicit node-by-node execution of the lowering,
in float and in Loihi fixed point, for every form and order."""
import pytest
import torch

from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hw_backends.loihi.compile import compile_graph
from sim.engine import Engine
from sim.fused import FusedSSA

from .helpers_models import randomized_model

RECORD = ["block.0.attn.attn_lif", "block.1.attn.attn_lif", "block.1.mlp.fc2_lif"]


@pytest.fixture(scope="module")
def model():
    return randomized_model("digits-2-64", seed=3, attn_drive=1.0, embed_dim=32, num_heads=4).double()


@pytest.mark.parametrize("numeric", ["float", "fixed"])
@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
@pytest.mark.parametrize("form", ["binary", "graded"])
def test_fused_equals_explicit(model, form, order, numeric):
    g = lower(spikformer_to_ir(model), ssa_order=order, ssa_form=form)
    if numeric == "fixed":
        g = compile_graph(g).graph
    torch.manual_seed(5)
    x = torch.rand(4, 1, 16, 16)
    num = "loihi_fixed" if numeric == "fixed" else "float"
    explicit = Engine(g, num).run(x, record=RECORD)
    eng = Engine(g, num, fuse_ssa=True)
    assert len(eng.graph.of_type(FusedSSA)) == 2
    fused = eng.run(x, record=RECORD)
    assert torch.equal(explicit.outputs["output"], fused.outputs["output"])
    for name in RECORD:
        assert torch.equal(explicit.records[name], fused.records[name]), name
    assert explicit.records["block.1.attn.attn_lif"].sum() > 0  # the attention actually fired
