"""The lowered graph reproduces the PyTorch model spike for spike (float64 on both sides, so a difference can
only come from the lowering, not from float32 rounding)."""
import pytest
import torch

from convert import ir
from convert.frontend import spikformer_to_ir
from convert.passes import PIPELINE, lower
from sim.engine import Engine
from analysis.reference import record_reference

from .helpers_models import mismatches, randomized_model


@pytest.fixture(scope="module")
def model():
    return randomized_model("digits-2-64").double()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(6, 1, 16, 16, dtype=torch.float64) * 3


@pytest.fixture(scope="module")
def reference(model, images):
    return record_reference(model, images)


def test_frontend_graph_matches_model(model, images, reference):
    logits, recs = reference
    res = Engine(spikformer_to_ir(model)).run(images, record="spiking")
    assert torch.equal(res.outputs["output"], logits)
    assert mismatches({k: v for k, v in recs.items() if "maxpool" not in k}, res.records) == \
        {k: 0 for k in recs if "maxpool" not in k}


@pytest.mark.parametrize("upto", PIPELINE)
def test_each_pass_prefix_is_exact(model, images, reference, upto):
    logits, recs = reference
    g = lower(spikformer_to_ir(model), upto=upto)
    res = Engine(g).run(images, record=[n for n in recs if n in g.nodes])
    assert torch.allclose(res.outputs["output"], logits, rtol=0, atol=1e-12)
    assert all(v == 0 for v in mismatches({k: recs[k] for k in res.records}, res.records).values())


@pytest.mark.parametrize("form", ["binary", "graded"])
@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
def test_fully_lowered_graph_is_exact_and_spike_only(model, images, reference, order, form):
    logits, recs = reference
    g = lower(spikformer_to_ir(model), ssa_order=order, ssa_form=form)
    res = Engine(g).run(images, record=[n for n in recs if n in g.nodes])
    assert torch.allclose(res.outputs["output"], logits, rtol=0, atol=1e-12)
    assert all(v == 0 for v in mismatches(recs, res.records).values())
    assert not g.of_type(*ir.HIGH_LEVEL_TYPES)
    assert g.metadata["ssa"]["block.0.attn.product"]["order"] == order
    # every edge into a synapse carries spikes from a spiking node (or the analog input into the first conv)
    for e in g.edges:
        dst = g.nodes[e.dst]
        if dst.is_synapse and not isinstance(g.nodes[e.src], ir.Input):
            src = g.nodes[e.src]
            while isinstance(src, ir.Flatten):
                src = g.nodes[g.in_edges(src.name)[0].src]
            graded = form == "graded" and isinstance(src, (ir.GradedNeuron, ir.ProductNeuron))
            assert src.spiking or graded, f"{e.src} -> {e.dst} carries non-spike values"
