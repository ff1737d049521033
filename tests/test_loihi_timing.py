"""Hardware timing: delays balance every meeting of paths; streams that need more than a 6-bit delay go through
relay populations, which leave the logical-time result unchanged."""
import torch

from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hardware.loihi import limits
from hw_backends.loihi.compile import compile_graph
from hw_backends.loihi.quantize import quantize
from hw_backends.loihi.timing import insert_delay_relays, schedule
from sim.engine import Engine

from .helpers_models import randomized_model


def test_every_projection_arrives_at_its_population_depth():
    m = randomized_model("digits-2-64", seed=1).double()
    compiled = compile_graph(lower(spikformer_to_ir(m), ssa_form="binary"))
    s = compiled.schedule
    for p in s["projections"]:
        assert s["depth"][p.pre] + 1 + p.delay == s["depth"][p.post]
        assert 0 <= p.delay <= limits.MAX_DELAY


def test_relays_keep_results_identical(monkeypatch):
    m = randomized_model("digits-2-64", seed=1, attn_drive=1.0).double()
    q, _ = quantize(lower(spikformer_to_ir(m), ssa_form="binary"))
    x = torch.rand(3, 1, 16, 16)
    before = Engine(q, "loihi_fixed").run(x, record=["block.1.mlp.fc1_lif", "block.1.attn.q_lif"])
    monkeypatch.setattr(limits, "MAX_DELAY", 8)  # force relays on this small model
    info = insert_delay_relays(q)
    assert info["relay_populations"] > 0
    s = schedule(q)
    assert max(p.delay for p in s["projections"]) <= 8
    after = Engine(q, "loihi_fixed").run(x, record=["block.1.mlp.fc1_lif", "block.1.attn.q_lif"])
    assert torch.equal(before.outputs["output"], after.outputs["output"])
    for k in before.records:
        assert torch.equal(before.records[k], after.records[k])
