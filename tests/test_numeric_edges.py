"""Numeric edge cases end in a clear error or a warning that names the layer: NaN/Inf parameters, BatchNorm with
zero variance, weights beyond the 8-bit Loihi range after BatchNorm folding, all-zero layers, and inputs of the
wrong shape or outside [0, 1]."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from convert.frontend import ConversionWarning, NonFiniteParameterError, spikformer_to_ir
from convert.passes import lower
from convert.passes.fold_bn import FoldError
from sim.engine import Engine, InputError, InputRangeWarning
from analysis.reference import record_reference
from ground.errors import UserError

from .conftest import assert_one_line_error
from .helpers_models import TINY, mismatches, randomized_model



def tiny(seed=3):
    return randomized_model("digits-2-64", seed=seed, attn_drive=1.0, **TINY)


def images(n=4, scale=1.0):
    torch.manual_seed(0)
    return torch.rand(n, 1, 8, 8, dtype=torch.float64) * scale


def assert_exact(model, graph, x):
    """The lowered graph (float64) reproduces the reference spike for spike and logit for logit."""
    logits, recs = record_reference(model.double(), x)
    res = Engine(graph).run(x, record=[n for n in recs if n in graph.nodes])
    assert torch.allclose(res.outputs["output"], logits, rtol=0, atol=1e-12)
    assert all(v == 0 for v in mismatches({k: recs[k] for k in res.records}, res.records).values())


def max_exp(rec: dict) -> int:
    """The largest weight exponent of a synapse record (one per layer, or one per output channel)."""
    return int(max(np.atleast_1d(rec["weight_exp"])))


def quantization_warnings(compiled) -> list[dict]:
    return compiled.quantization["warnings"]


# ---------------------------------------------------------------------------------------------- NaN / Inf
@pytest.mark.parametrize("param,value", [("block.0.mlp.fc1_linear.weight", float("nan")),
                                         ("patch_embed.proj_bn.running_mean", float("inf")),
                                         ("head.bias", float("-inf"))])
def test_non_finite_parameters_are_refused_by_name(param, value):
    m = tiny()
    sd = m.state_dict()
    assert param in sd, sorted(sd)[:20]
    with torch.no_grad():
        sd[param].view(-1)[1] = value
    with pytest.raises(NonFiniteParameterError) as ei:
        spikformer_to_ir(m)
    msg = str(ei.value)
    assert param in msg and "1 NaN/infinite" in msg and "\n" not in msg
    assert isinstance(ei.value, UserError)


def test_non_finite_checkpoint_is_refused_by_spk_convert(tmp_path, cli):
    from commands.convert import main
    from spikformer.checkpoint import save_checkpoint
    m = tiny()
    with torch.no_grad():
        m.block[0].attn.q_linear.weight[0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", m, {})
    rc, _, err = cli(main, [path, "--target", "nir", "-o", tmp_path / "m.nir"])
    assert_one_line_error(rc, err, "spk-convert: error:", "block.0.attn.q_linear.weight", "NaN")
    assert rc == 2 and not (tmp_path / "m.nir").exists()


# ---------------------------------------------------------------------------------------------- BatchNorm
def _bn(model, name="block.0.mlp.fc1_bn"):
    return dict(model.named_modules())[name]


def test_zero_variance_without_eps_names_the_batchnorm():
    m = tiny()
    bn = _bn(m)
    with torch.no_grad():
        bn.running_var[:3] = 0.0
    bn.eps = 0.0
    with pytest.raises(FoldError, match=r"block\.0\.mlp\.fc1_bn: running_var \+ eps <= 0 in channels \[0, 1, 2\]"):
        lower(spikformer_to_ir(m))


def test_negative_variance_names_the_batchnorm():
    m = tiny()
    with torch.no_grad():
        _bn(m, "patch_embed.rpe_bn").running_var[5] = -1.0
    with pytest.raises(FoldError, match=r"patch_embed\.rpe_bn: .*channels \[5\]"):
        lower(spikformer_to_ir(m))


def test_zero_variance_with_eps_converts_exactly():
    m = tiny()
    with torch.no_grad():
        _bn(m).running_var[:4] = 0.0  # eps = 1e-5 keeps 1/sqrt(var + eps) finite (x316)
    g = lower(spikformer_to_ir(m))
    assert_exact(m, g, images())


# ---------------------------------------------------------------------------------------------- 8-bit range
def test_weights_beyond_the_8_bit_range_are_clipped_with_a_warning(tmp_path):
    """A huge BatchNorm gain (x 3e4 after folding) needs a weight exponent beyond Loihi's 7: the largest
    weights are clipped, and quantization.json / summary.md say which synapse, how many and by how much."""
    from hw_backends.loihi.compile import compile_graph
    from hw_backends.loihi.export import write_artifacts
    m = tiny()
    bn = _bn(m)
    with torch.no_grad():
        bn.weight.mul_(3e4)
        bn.running_mean.zero_()  # the folded bias stays beta (a huge bias is a separate, named error below)
    compiled = compile_graph(lower(spikformer_to_ir(m)))
    rec = compiled.quantization["synapses"]["block.0.mlp.fc1_linear"]
    assert max_exp(rec) == 7 and rec["weight_exp_needed"] > 7 and rec["clipped_weights"] > 0
    assert rec["max_clip_model_units"] > 0
    w = [w for w in quantization_warnings(compiled) if w["node"] == "block.0.mlp.fc1_linear"]
    assert len(w) == 1 and w[0]["what"] == "weights clipped"
    assert f"{rec['clipped_weights']} of" in w[0]["detail"] and "clipped to" in w[0]["detail"]
    assert "%" in w[0]["detail"]
    write_artifacts(tmp_path, compiled, {"name": "overflow"}, {})
    q = json.loads((tmp_path / "quantization.json").read_text())
    assert any(x["node"] == "block.0.mlp.fc1_linear" and x["what"] == "weights clipped" for x in q["warnings"])
    assert "block.0.mlp.fc1_linear: weights clipped" in (tmp_path / "summary.md").read_text()
    # every exponent stays in Loihi's range
    assert all(max_exp(r) <= 7 for r in compiled.quantization["synapses"].values())


def test_bias_beyond_the_loihi_range_is_a_named_error():
    from hw_backends.loihi.compile import compile_graph
    from hardware.loihi.limits import LoihiLimitError
    m = tiny()
    bn = _bn(m)
    with torch.no_grad():
        bn.running_var[:] = 1e-12  # gain 1e6 on weights and on the folded bias
    bn.eps = 1e-12
    with pytest.raises(LoihiLimitError, match=r"block\.0\.mlp\.fc1_lif: bias range in thresholds per step "
                                              r"\(13-bit mantissa << 3-bit exponent\) exceeded: uses [0-9.e+]+, "
                                              r"allowed 16128") as e:
        compile_graph(lower(spikformer_to_ir(m)))
    assert e.value.used > e.value.allowed == 16128.0


def test_a_head_bias_beyond_the_readout_range_is_a_named_error():
    """The readout holds v = 65536 * logit; its bias per step is bias_mant << bias_exp with a 3-bit exponent, so at
    most 4095 * 2**7 / 65536 = 8 logits per step. A larger head bias is refused by name (it was once given a wider
    exponent than the hardware has, silently); a smaller one is rounded to the bias grid and the report says how far."""
    from hw_backends.loihi.compile import compile_graph
    from hardware.loihi.limits import LoihiLimitError
    m = tiny()
    with torch.no_grad():
        m.head.bias[:] = 1000.0
    with pytest.raises(LoihiLimitError, match=r"readout bias exponent \(3 bit\).* exceeded: uses \d+, allowed 7") as e:
        compile_graph(lower(spikformer_to_ir(m)))
    assert "head" in e.value.node
    with torch.no_grad():
        m.head.bias[:] = torch.linspace(-2.0, 2.0, m.head.bias.numel()) + 1e-6
    c = compile_graph(lower(spikformer_to_ir(m)))
    rec = next(r for r in c.quantization["layers"].values() if r["kind"] == "Readout")
    assert 0 < rec["bias_max_abs_error_v_units"] <= 0.5 * 2 ** rec["bias_exp"]


def test_a_large_bias_lowers_that_layers_scale_with_a_warning():
    """A bias of 10 thresholds per step does not fit bias_mant << bias_exp at vth 4096; the layer gets the
    largest vth that holds it (1637), the others keep 4096, and the warning says so."""
    from hw_backends.loihi.compile import compile_graph
    m = tiny()
    bn = _bn(m)
    with torch.no_grad():
        bn.bias[:] = 10.0
        bn.running_mean[:] = 0.0
    q = compile_graph(lower(spikformer_to_ir(m))).quantization
    lif = q["layers"]["block.0.mlp.fc1_lif"]
    assert lif["vth"] == 1637 and lif["bias_exp"] == 7
    assert q["layers"]["block.0.attn.q_lif"]["vth"] == 4096
    warn = [w for w in q["warnings"] if w["node"] == "block.0.mlp.fc1_lif"]
    assert len(warn) == 1 and warn[0]["what"] == "fixed-point scale reduced"
    assert "vth 4096 -> 1637" in warn[0]["detail"]


def test_large_weights_within_range_get_a_larger_exponent_and_no_warning():
    from hw_backends.loihi.compile import compile_graph
    base = compile_graph(lower(spikformer_to_ir(tiny())))
    m = tiny()
    with torch.no_grad():
        m.block[0].mlp.fc1_linear.weight *= 8.0
    compiled = compile_graph(lower(spikformer_to_ir(m)))
    a = max_exp(base.quantization["synapses"]["block.0.mlp.fc1_linear"])
    b = max_exp(compiled.quantization["synapses"]["block.0.mlp.fc1_linear"])
    assert b == a + 3 and b <= 7
    assert not [w for w in quantization_warnings(compiled) if "clipped" in w["what"]]


# ---------------------------------------------------------------------------------------------- zero layers
def test_all_zero_layer_warns_by_name_and_converts_exactly():
    from hw_backends.loihi.compile import compile_graph
    m = tiny()
    with torch.no_grad():
        m.block[0].mlp.fc1_linear.weight.zero_()
    with pytest.warns(ConversionWarning, match=r"block\.0\.mlp\.fc1_linear"):
        frontend = spikformer_to_ir(m)
    g = lower(frontend)
    assert [w["node"] for w in g.metadata["warnings"]] == ["block.0.mlp.fc1_linear"]
    assert_exact(m, g, images())
    compiled = compile_graph(g)  # the Loihi report carries the warning too
    assert any(w["node"] == "block.0.mlp.fc1_linear" and w["what"] == "all-zero weights"
               for w in quantization_warnings(compiled))


def test_all_zero_batchnorm_gain_and_head_warn_and_quantise():
    from hw_backends.loihi.compile import compile_graph
    m = tiny()
    with torch.no_grad():
        m.patch_embed.rpe_bn.weight.zero_()
        m.head.weight.zero_()
    with pytest.warns(ConversionWarning) as rec:
        g = lower(spikformer_to_ir(m))
    named = " ".join(str(r.message) for r in rec)
    assert "patch_embed.rpe_bn" in named and "head" in named
    assert_exact(m, g, images())
    compiled = compile_graph(g)  # an all-zero head used to divide by zero in the readout scale
    assert compiled.graph.metadata["readout_scale"] > 0


def test_healthy_model_converts_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)
        g = lower(spikformer_to_ir(tiny()))
    assert "warnings" not in g.metadata


# ---------------------------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def graphs():
    from hw_backends.loihi.compile import compile_graph
    m = tiny()
    g = lower(spikformer_to_ir(m))
    return m, g, compile_graph(g).graph


@pytest.mark.parametrize("shape", [(2, 1, 9, 9), (2, 3, 8, 8), (1, 8, 8), (2, 1, 8, 8, 1)])
def test_wrong_input_shape_names_the_expected_shape(graphs, shape):
    _, g, q = graphs
    for graph, numeric in ((g, "float"), (q, "loihi_fixed")):
        with pytest.raises(InputError, match=r"expects \[B, 1, 8, 8\]") as ei:
            Engine(graph, numeric).run(torch.rand(*shape))
        assert str(list(shape)) in str(ei.value) and isinstance(ei.value, UserError)


def test_non_finite_input_is_refused(graphs):
    _, g, _ = graphs
    x = images(2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="1 NaN/infinite"):
        Engine(g).run(x)


def test_parity_checks_the_input_before_running(graphs):
    from analysis.parity import run_parity
    m, g, _ = graphs
    with pytest.raises(InputError, match=r"expects \[B, 1, 8, 8\]"):
        run_parity(m, g, torch.rand(3, 1, 16, 16), torch.zeros(3, dtype=torch.long), "float", progress=False)


def test_out_of_range_input_is_clipped_with_a_warning_in_fixed_point(graphs):
    _, g, q = graphs
    with pytest.warns(InputRangeWarning, match=r"outside \[0, 1\].*clips them") as rec:
        out_of_range = Engine(q, "loihi_fixed").run(images(2, scale=2.0))
    assert "max 1.9" in str(rec[0].message)
    clipped = Engine(q, "loihi_fixed").run(images(2, scale=2.0).clamp(0, 1))
    assert torch.equal(out_of_range.outputs["output"], clipped.outputs["output"])  # it really is clipping
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        Engine(q, "loihi_fixed").run(images(2))             # in range: silent
        Engine(g).run(images(2, scale=2.0))  # float semantics take any value, like the reference: silent


def test_parity_fixed_point_reports_clipping(graphs):
    from analysis.parity import run_parity
    m, _, q = graphs
    with pytest.warns(InputRangeWarning):
        run_parity(m, q, images(2, scale=3.0).float(), torch.zeros(2, dtype=torch.long), "fixed", progress=False)


def test_an_input_grid_finer_than_the_payload_is_a_warning_not_a_silent_fallback():
    from hw_backends.loihi.compile import compile_graph
    g = lower(spikformer_to_ir(tiny()))
    g.metadata["input_value_grid"] = 2 ** 16  # one more than a 16-bit payload holds
    q = compile_graph(g).quantization
    assert q["input"]["payload_scale"] == 255
    warn = [w for w in q["warnings"] if w["node"] == "input"]
    assert len(warn) == 1 and "1/65536" in warn[0]["detail"] and "1/255" in warn[0]["detail"]
    g.metadata["input_value_grid"] = 256
    q = compile_graph(g).quantization
    assert q["input"]["payload_scale"] == 256 and not [w for w in q["warnings"] if w["node"] == "input"]
