"""The frontend reads a model by tracing its forward (convert/tracing.py, convert/trace_to_ir.py): what the model's
own code computes is what the IR holds. Checked here by changing a model's code (the IR follows it and the float
engine still equals the PyTorch model spike for spike), by the layout tracking on its own, and by refusals that
name the module and the operation. (That the traced IR is the one every Spikformer layout had before is shown
by the demo's artifacts, byte-identical, and by every float-parity test of the layouts.)"""
from __future__ import annotations

import pytest
import torch

from analysis.reference import record_reference
from convert.frontend import UnsupportedModuleError, spikformer_to_ir
from convert.trace_to_ir import UntranslatableError, regroup
from sim.engine import Engine
from spikformer.model import Block

from .helpers_models import mismatches, randomized_model


def _spikes_equal(model, g, x) -> None:
    """Every LIF layer's spikes and the logits of the float engine equal the model's (float64)."""
    logits, ref = record_reference(model, x)
    lifs = [n for n in ref if "maxpool" not in n]
    res = Engine(g, numeric="float").run(x, record=[n for n in lifs if n in g.nodes])
    assert len(res.records) >= 10
    assert mismatches({n: ref[n] for n in res.records}, res.records) == {n: 0 for n in res.records}
    assert torch.allclose(res.outputs["output"], logits, rtol=0, atol=1e-12)


class NoAttentionResidual(Block):
    """A block whose code differs from Spikformer's: the attention output replaces the stream (no residual)."""

    def forward(self, x):
        x = self.attn(x)
        return x + self.mlp(x)


@pytest.mark.parametrize("preset", ["digits-2-64", "event-digits-2-64"])
def test_the_ir_follows_the_models_own_code(preset):
    model = randomized_model(preset, seed=4, attn_drive=1.0).double()
    for blk in model.block:
        blk.__class__ = NoAttentionResidual
    g = spikformer_to_ir(model)
    assert not [n for n in g.nodes if n.endswith("attn_residual")]
    assert [n for n in g.nodes if n.endswith("mlp_residual")] == ["block.0.mlp_residual", "block.1.mlp_residual"]
    src = {e.dst: [] for e in g.edges}
    for e in g.edges:
        src[e.dst].append(e.src)
    assert src["block.0.mlp_residual"] == ["block.0.attn.proj_lif", "block.0.mlp.fc2_lif"]  # skip first
    cfg = model.config
    shape = (3, cfg.T, cfg.in_channels, cfg.img_size, cfg.img_size) if cfg.event_input else \
        (3, cfg.in_channels, cfg.img_size, cfg.img_size)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    if cfg.event_input:
        x = (x * 3).floor()
    from convert.passes import lower
    _spikes_equal(model, lower(g), x)


def test_reshapes_split_and_merge_heads_and_keep_one_wide_grids():
    T, B, C, H, W = ("T", 4), ("B", 2), ("C", 96), ("H", 1), ("W", 1)
    tokens = [(T,), (B,), (H, W), (C,)]
    heads = regroup(tokens, [4, 2, 1, 3, 32], "x")  # [T, B, N, h, d]: channels split, h outer
    assert heads == [(T,), (B,), (H, W), (("C/0", 3),), (("C/1", 32),)]
    assert regroup([heads[0], heads[1], heads[3], heads[4], heads[2]], [4, 2, 96, 1], "x") == \
        [(T,), (B,), (C,), (H, W)]  # merged back in order: C again
    assert regroup([(T, B), (C,), (H, W)], [4, 2, 96, 1, 1], "x") == [(T,), (B,), (C,), (H,), (W,)]
    with pytest.raises(UntranslatableError, match="unevenly"):
        regroup([(T,), (B,), (("C", 10),)], [4, 2, 3, -1], "x")


def test_an_operation_the_ir_cannot_express_is_refused_naming_the_module():
    model = randomized_model("digits-2-64")
    mlp_forward = type(model.block[0].mlp).forward

    def doubled(self, x):
        return mlp_forward(self, x) * 2

    model.block[0].mlp.forward = doubled.__get__(model.block[0].mlp)
    with pytest.raises(UnsupportedModuleError, match=r"module 'block\.0\.mlp': call_function mul: not an operation "
                                                     r"the converter reads"):
        spikformer_to_ir(model)


def test_a_layer_without_an_ir_form_is_refused_naming_it_and_its_parent():
    model = randomized_model("digits-2-64")
    model.head = torch.nn.Sequential(model.head, torch.nn.ReLU())
    with pytest.raises(UnsupportedModuleError, match=r"module 'head\.1' of type ReLU \(in 'head', Sequential\) is "
                                                     r"not supported"):
        spikformer_to_ir(model)


def test_an_add_that_is_not_a_residual_is_refused():
    model = randomized_model("digits-2-64")

    def two_branches(self, x):
        return self.attn(x) + self.mlp(x)  # two branches of the same input: neither computed from the other

    model.block[1].forward = two_branches.__get__(model.block[1])
    with pytest.raises(UnsupportedModuleError, match=r"module 'block\.1': call_function add: a sum of two streams "
                                                     r"neither of which is computed from the other"):
        spikformer_to_ir(model)


def test_a_module_called_twice_is_refused_in_one_line():
    model = randomized_model("digits-2-64")
    mlp = model.block[0].mlp
    forward = type(mlp).forward

    def twice(self, x):
        return forward(self, forward(self, x))

    mlp.forward = twice.__get__(mlp)
    with pytest.raises(UnsupportedModuleError) as e:
        spikformer_to_ir(model)
    assert "\n" not in str(e.value)
    assert "is called a second time; the IR has one node per module" in str(e.value), str(e.value)
