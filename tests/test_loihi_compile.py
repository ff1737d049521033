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


def test_weights_repeated_along_the_last_axis_quantise_as_the_whole_array(monkeypatch):
    """The head's weights hold one copy per token (passes/head_readout.py) and are quantised as one copy; the
    mantissas, both parts, every count in the record and warnings, and the mean error are those the whole array
    gives (8 and 16 bit; with clipped weights; a channel of zeros; mixed and one-signed weights)."""
    rng = np.random.default_rng(0)
    cases = []
    for two_parts, scale, signs in ((False, 64.0, 1), (True, 64.0, 1), (True, 2.0 ** 18, 1), (False, 3.0, -1)):
        w = rng.normal(size=(6, 5, 1))
        w = np.abs(w) * signs if signs < 0 else w
        w[2] = 0.0
        cases.append((np.repeat(w, 13, axis=-1), scale, two_parts))
    assert dense_weights.repeats_along_last_axis(cases[0][0]) == 13
    fast = [dense_weights.quantise_dense("h", w, s, True, p) for w, s, p in cases]
    monkeypatch.setattr(dense_weights, "repeats_along_last_axis", lambda w: 1)
    whole = [dense_weights.quantise_dense("h", w, s, True, p) for w, s, p in cases]
    assert any("clipped" in what for d in whole for what, _ in d.warnings)  # the clipping case is exercised
    for f, w in zip(fast, whole):
        assert _json(f.record) == _json(w.record) and f.warnings == w.warnings
        assert np.array_equal(f.mantissas, w.mantissas) and np.asarray(f.weight_exp).tolist() == np.asarray(w.weight_exp).tolist()
        assert (f.low is None) == (w.low is None)
        if f.low is not None:
            assert np.array_equal(f.low.mantissas, w.low.mantissas)
            assert (f.low.sign_mode, f.low.max_abs_mantissa) == (w.low.sign_mode, w.low.max_abs_mantissa)


def test_only_arrays_repeated_along_their_last_axis_count_as_repeated():
    w = np.repeat(np.arange(12.0).reshape(3, 4, 1), 5, axis=-1)
    assert dense_weights.repeats_along_last_axis(w) == 5
    w[2, 3, 4] += 1e-12
    assert dense_weights.repeats_along_last_axis(w) == 1
    assert dense_weights.repeats_along_last_axis(np.ones((4, 1))) == 1
    assert dense_weights.repeats_along_last_axis(np.ones(7)) == 1
