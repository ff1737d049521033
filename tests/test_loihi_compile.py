"""The Loihi compilation (hw_backends/loihi/compile.py): the named passes in order, and the work one conversion's
compilations share (quantised weights, population cuts) giving exactly what unshared compilations give."""
from __future__ import annotations

import json

import numpy as np

from convert.frontend import spikformer_to_ir
from convert.options import ConversionOptions
from convert.passes import lower
from hw_backends.loihi import dense_weights
from hw_backends.loihi.compile import PASSES, SharedWork, compile_graph, compile_target
from hw_backends.loihi.quantize import quantize
from hw_backends.loihi.resources import map_resources

from .helpers_models import randomized_model


def _weights(g) -> dict:
    return {n.name: (np.asarray(getattr(n, "weight", 0)).tolist(), np.asarray(getattr(n, "weight_exp", 0)).tolist())
            for n in g.nodes.values()}


def _json(x) -> str:
    return json.dumps(x, default=float, sort_keys=True)


def test_the_passes_run_in_order_and_each_is_timed():
    assert PASSES == ("quantise", "relays", "schedule", "place")
    shared = SharedWork()
    compile_graph(lower(spikformer_to_ir(randomized_model("digits-2-64", seed=1).double()), ssa_form="graded"),
          shared=shared)
    assert list(shared.seconds) == list(PASSES) and all(s >= 0 for s in shared.seconds.values())


def test_shared_work_gives_what_unshared_compilations_give():
    frontend = spikformer_to_ir(randomized_model("digits-2-64", seed=1).double())
    options = ConversionOptions(target="loihi")
    shared = SharedWork()
    b = compile_target(frontend, options, shared=shared)
    assert shared.weights.hits > 0 and shared.placements.hits > 0  # the second form and the repair reuse work
    fresh = compile_graph(lower(frontend, ssa_form=b.ssa_form), vth_mant=options.vth_mant, profile=options.hw)
    assert _json(b.quantization) == _json(fresh.quantization)
    assert _weights(b.graph) == _weights(fresh.graph)
    assert _json(b.resources["populations"]) == _json(fresh.resources["populations"])
    assert b.resources["total"] == fresh.resources["total"]
    for name, tot in b.resources["other_profiles"].items():
        alone = map_resources(fresh.graph, fresh.schedule["projections"], name, fresh.schedule["max_depth"])
        assert tot == alone["total"]


def test_dense_weights_do_not_depend_on_the_block_size(monkeypatch):
    """The quantisation runs over blocks of output channels; one channel per block gives every number the whole
    array in one block gives (16-bit: high and low part, per-channel exponents, sign modes, mean error)."""
    lowered = lower(spikformer_to_ir(randomized_model("digits-2-64", seed=2).double()), ssa_form="binary")
    whole_q, whole_rep = quantize(lowered, weight_bits=16)
    monkeypatch.setattr(dense_weights, "BLOCK", 1)
    rows_q, rows_rep = quantize(lowered, weight_bits=16)
    assert _json(rows_rep) == _json(whole_rep)
    assert _weights(rows_q) == _weights(whole_q)
