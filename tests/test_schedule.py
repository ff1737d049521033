"""The engine's fast paths give exactly what the step-by-step engine with float kernels gives: the layer schedule
(every node once over all time steps) against the step schedule, the int8 kernels (sim/int8.py) against the
float ones, the LIF layer against lif_step, the float32 fused SSA against the float64 one. Records of every node,
outputs, state counters, with steps after the input (extra_steps), both numeric modes and both SSA forms."""
import numpy as np
import pytest
import torch

from convert import ir
from convert.frontend import spikformer_to_ir
from convert.kernels import ParamCache
from convert.passes import lower
from hw_backends.loihi.compile import compile_graph
from sim import fixed_point, fused, int8, lif_kernel
from sim.engine import Engine

from .helpers_models import randomized_model

COUNTERS = ("a_in_over_16bit", "a_in_max", "u_wrapped", "saturated", "fired")


def _same_run(a, b, ea: Engine, eb: Engine, names=None):
    names = names if names is not None else [n for n in a.records if n in b.records]
    assert names
    for n in names:
        assert torch.equal(a.records[n], b.records[n]), n
    assert torch.equal(a.outputs["output"], b.outputs["output"])
    for n, st in ea.last_state.items():
        for k in COUNTERS:
            assert st.get(k) == eb.last_state.get(n, {}).get(k), (n, k)


def _images(g, n=5, seed=0):
    x = torch.rand(n, *g.nodes["input"].shape, generator=torch.Generator().manual_seed(seed))
    x[0] = 1.0  # a bright image: large first-layer sums
    return x


@pytest.fixture(scope="module")
def graphs():
    m = randomized_model("digits-2-64", seed=3, attn_drive=1.0)
    out = {}
    for form in ("graded", "binary"):
        low = lower(spikformer_to_ir(m), ssa_form=form, ssa_order="kv_first" if form == "binary" else "qk_first")
        out[form] = (low, compile_graph(low).graph)
    return out


@pytest.mark.parametrize("form", ["graded", "binary"])
def test_layer_schedule_equals_step_schedule_fixed_point(graphs, form):
    g = graphs[form][1]
    eng = Engine(g, "loihi_fixed", fuse_ssa=True)
    x = _images(g)
    a = eng.run(x, record="all", schedule="step", extra_steps=2)
    sa = {n: dict(s) for n, s in eng.last_state.items()}
    b = eng.run(x, record="all", extra_steps=2)
    assert a.records["output"].shape[0] == eng.graph.metadata["T"] + 2
    for n in a.records:
        assert torch.equal(a.records[n], b.records[n]), n
    assert torch.equal(a.outputs["output"], b.outputs["output"])
    for n, st in sa.items():
        for k in COUNTERS:
            assert st.get(k) == eng.last_state[n].get(k), (n, k)


@pytest.mark.parametrize("form", ["graded", "binary"])
def test_layer_schedule_equals_step_schedule_float(graphs, form):
    g = graphs[form][0]
    eng = Engine(g, "float")
    x = _images(g, 3)
    a = eng.run(x, record="all", schedule="step", extra_steps=1)
    b = eng.run(x, record="all", extra_steps=1)
    spiking = [n for n, node in g.nodes.items() if node.spiking]
    assert sum(int(a.records[n].sum()) for n in spiking) > 0
    for n in a.records:  # float64 sums over T * B instead of B samples: equal up to rounding, spikes exactly
        if n in spiking:
            assert torch.equal(a.records[n], b.records[n]), n
        else:
            assert torch.allclose(a.records[n], b.records[n], rtol=1e-12, atol=1e-12), n
    assert torch.allclose(a.outputs["output"], b.outputs["output"], rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not int8.available(), reason="no exact oneDNN int8 kernels here")
@pytest.mark.parametrize("form", ["graded", "binary"])
def test_fast_engine_equals_the_step_engine_with_float_kernels(graphs, form):
    """The default engine (layer schedule, int8 kernels, float32 fused SSA, buffer pool) against the step
    schedule on float kernels, on the same graph (the SSA fused, the 16-bit weights as two groups): every
    node's record, twice in a row (the pool's buffers are reused; the first run's records must not change)."""
    g = fused.fuse_ssa(graphs[form][1])
    ref_eng, eng = Engine(g, "loihi_fixed", int8=False), Engine(g, "loihi_fixed")
    assert eng.q and not ref_eng.q
    x = _images(g, 6, seed=1)
    ref = ref_eng.run(x, record="all", schedule="step", extra_steps=1)
    first = eng.run(x, record="all", extra_steps=1)
    kept = {n: r.clone() for n, r in first.records.items()}
    second = eng.run(x.flip(0), record="all", extra_steps=1)
    _same_run(ref, first, ref_eng, eng)
    for n, r in kept.items():
        assert torch.equal(first.records[n], r), n
    again = ref_eng.run(x.flip(0), record="all", schedule="step", extra_steps=1)
    _same_run(again, second, ref_eng, eng)


@pytest.mark.skipif(not int8.available(), reason="no exact oneDNN int8 kernels here")
def test_int8_engine_equals_float_kernels_with_fused_weight_parts():
    """spk-parity's engine (fuse_ssa) with and without the int8 kernels, 16- and 8-bit weights."""
    m = randomized_model("digits-2-64", seed=5, attn_drive=1.0)
    for bits in (16, 8):
        g = compile_graph(lower(spikformer_to_ir(m), ssa_form="binary"), weight_bits=bits).graph
        x = _images(g, 4, seed=2)
        a_eng, b_eng = Engine(g, "loihi_fixed", fuse_ssa=True, int8=False), Engine(g, "loihi_fixed", fuse_ssa=True)
        names = [n for n, node in a_eng.graph.nodes.items() if node.spiking and n in b_eng.graph.nodes]
        _same_run(a_eng.run(x, record=names, schedule="step"), b_eng.run(x, record=names), a_eng, b_eng, names)


def test_event_input_layer_schedule():
    m = randomized_model("event-digits-2-64", seed=2, attn_drive=1.0, depth=1, T=3)
    g = compile_graph(lower(spikformer_to_ir(m), ssa_form="graded")).graph
    x = (torch.rand(3, 3, *g.nodes["input"].shape, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    eng = Engine(g, "loihi_fixed", fuse_ssa=True)
    a = eng.run(x, record="spiking", schedule="step", extra_steps=2)
    b = eng.run(x, record="spiking", extra_steps=2)
    for n in a.records:
        assert torch.equal(a.records[n], b.records[n]), n
    assert torch.equal(a.outputs["output"], b.outputs["output"])


def test_stateful_nodes_run_step_by_step_in_the_layer_schedule():
    """Delay, Integrator and a LIF with u memory (du < 4095) inside the layer schedule."""
    rng = np.random.default_rng(0)
    g = ir.Graph()
    g.add(ir.Input("input", shape=(2, 6, 6)))
    g.add(ir.Conv2d("c1", weight=rng.normal(0, 1, (4, 2, 3, 3)), padding=(1, 1)), "input")
    g.add(ir.LIF("l1", tau=2.0, v_threshold=0.3), "c1")
    g.add(ir.Delay("d", steps=2), "l1")
    g.add(ir.Conv2d("c2", weight=rng.normal(0, 1, (3, 4, 3, 3))), "d")
    g.add(ir.Integrator("acc"), "c2")
    g.add(ir.Output("output"), "acc")
    x = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    eng = Engine(g, "float")
    a, b = eng.run(x, T=4, record="all", schedule="step", extra_steps=2), eng.run(x, T=4, record="all", extra_steps=2)
    assert a.records["d"].sum() > 0
    for n in a.records:
        assert torch.allclose(a.records[n], b.records[n], rtol=1e-12, atol=1e-12), n

    q = ir.Graph(metadata={"input_payload_scale": 255})
    q.add(ir.Input("input", shape=(3, 5)))
    q.add(ir.Conv1d("s", weight=rng.integers(-128, 128, (4, 3, 1)).astype(float) * 2, weight_exp=1), "input")
    q.add(ir.LoihiLIF("u", du=1000, dv=300, vth=300, bias_mant=rng.integers(-50, 50, 4).astype(float)), "s")
    q.add(ir.Output("output"), "u")
    eng = Engine(q, "loihi_fixed")
    x = torch.rand(4, 3, 5, generator=torch.Generator().manual_seed(2))
    a, b = eng.run(x, T=5, record="all", schedule="step"), eng.run(x, T=5, record="all")
    assert a.records["u"].sum() > 0
    for n in a.records:
        assert torch.equal(a.records[n], b.records[n]), n


def _lif_by_steps(node, a, steps, state):
    B = a.shape[0] // steps
    return torch.cat([fixed_point.lif_step(node, a[t * B:(t + 1) * B], state, ParamCache()) for t in range(steps)])


@pytest.mark.parametrize("amp", [3000, 40_000, 150_000, 250_000, 600_000])  # float32; counted; wrap (f32, f64)
@pytest.mark.parametrize("dv,bias", [(2048, True), (0, False), (4095, True), (1000, True)])
@pytest.mark.parametrize("compiled", [True, False])  # sim.lif_kernel's one pass, tensor operations step by step
def test_lif_layer_equals_lif_step(amp, dv, bias, compiled):
    assert not compiled or lif_kernel.available(), "numba is pinned in pyproject.toml; the compiled LIF must run"
    steps, B = 4, 3
    g = torch.Generator().manual_seed(amp + dv)
    node = ir.LoihiLIF("n", du=4095, dv=dv, vth=500,
                       bias_mant=(torch.randint(-4000, 4000, (6,), generator=g).double().numpy() if bias else None),
                       bias_exp=3)
    a = torch.randint(-amp, amp, (steps * B, 5, 6), generator=g).double().transpose(1, 2)  # token-major memory
    a[0, 0, 0] = -amp  # the wrap's edge cases
    for dt in (torch.float32, torch.float64) if amp < 2 ** 24 else (torch.float64,):
        s_ref, s_new = {}, {}
        want = _lif_by_steps(node, a.to(dt), steps, s_ref)
        got = fixed_point.lif_layer(node, a.to(dt), s_new, ParamCache(), steps, compiled=compiled)
        assert got.shape == want.shape and torch.equal(got, want)
        assert torch.equal(s_new["v"], s_ref["v"].to(s_new["v"].dtype))
        for k in COUNTERS:
            assert s_new.get(k) == s_ref.get(k), k
        # and from that state on: the next steps continue from it as lif_step does
        more_ref, more_new = _lif_by_steps(node, a.to(dt), steps, s_ref), fixed_point.lif_layer(
            node, a.to(dt), s_new, ParamCache(), steps, compiled=compiled)
        assert torch.equal(more_ref, more_new)
    if amp >= 250_000:
        assert s_ref.get("u_wrapped") or s_ref.get("saturated")


@pytest.mark.parametrize("bias", [True, False])
def test_lif_kernel_on_images_in_channels_last_memory_equals_the_tensor_version(bias):
    """Image-shaped input with rows before channels in memory (the kernel's [steps, rows, channels] view), from
    no state and from a given state, wrapping u and saturating v."""
    assert lif_kernel.available(), "numba is pinned in pyproject.toml; the compiled LIF must run"
    steps, B = 3, 5
    g = torch.Generator().manual_seed(7)
    node = ir.LoihiLIF("n", du=4095, dv=2048, vth=200, bias_exp=2, bias_mant=torch.randint(
        -900, 900, (4,), generator=g).double().numpy() if bias else None)
    a = torch.randint(-300_000, 300_000, (steps * B, 6, 7, 4), generator=g).float().permute(0, 3, 1, 2)
    for v0 in (None, torch.randint(-5000, 5000, (B, 4, 6, 7), generator=g).float()):
        s_new, s_ref = ({} if v0 is None else {"v": v0.clone()}), ({} if v0 is None else {"v": v0.clone()})
        got = fixed_point.lif_layer(node, a, s_new, ParamCache(), steps, compiled=True)
        want = fixed_point.lif_layer(node, a, s_ref, ParamCache(), steps, compiled=False)
        assert got.shape == want.shape and got.stride() == want.stride() and got.dtype == want.dtype
        assert torch.equal(got, want) and 0 < got.sum() < got.numel() and torch.equal(s_new["v"], s_ref["v"])
        assert s_ref.get("u_wrapped") and all(s_new.get(k) == s_ref.get(k) for k in COUNTERS)


@pytest.mark.skipif(not int8.available(), reason="no exact oneDNN int8 kernels here")
def test_int8_synapse_is_exact_or_declines():
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    cases = [
        (ir.Conv2d("c", weight=rng.integers(-128, 128, (5, 4, 3, 3)) * 2.0, stride=(2, 1), padding=(1, 0),
                   weight_exp=np.array([-3, 0, 2, -8, 1])), (6, 4, 9, 7)),
        (ir.Conv2d("odd", weight=rng.integers(0, 256, (5, 4, 3, 3)).astype(float), weight_exp=-2), (3, 4, 5, 5)),
        (ir.Conv1d("lin", weight=rng.integers(-128, 128, (7, 9, 1)) * 2.0, weight_exp=-5), (4, 9, 11)),
        (ir.Conv1d("full", weight=rng.integers(-128, 128, (3, 9, 11)) * 2.0, weight_exp=-6), (4, 9, 11)),
    ]
    for node, shape in cases:
        q = int8.Int8Synapse(node)
        for x in (torch.randint(0, 2, shape, generator=g).double(), torch.randint(0, 256, shape, generator=g).float()):
            for layout in (x, x.transpose(1, -1).contiguous().transpose(1, -1)):
                y = q(layout)
                w = torch.as_tensor(node.weight, dtype=torch.float64)
                conv = (torch.nn.functional.conv2d(x.double(), w, stride=node.stride, padding=node.padding)
                        if isinstance(node, ir.Conv2d) else torch.nn.functional.conv1d(x.double(), w))
                e = torch.as_tensor(np.broadcast_to(np.exp2(np.asarray(node.weight_exp, float)), (len(w),)).copy())
                want = torch.floor(conv * e.view(1, -1, *[1] * (conv.dim() - 2)))
                assert y is not None and torch.equal(y.double(), want), node.name
        assert q(-torch.ones(shape)) is None and q(torch.full(shape, 256.0)) is None
    big = int8.Int8Synapse(ir.Conv1d("big", weight=np.full((2, 600, 1), 254.0)))
    assert big(torch.full((1, 600, 3), 255.0)) is None  # the sum could reach 2**24: declined
    assert int8.pieces(np.array([300.0])) is None


@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
@pytest.mark.parametrize("weights", [
    [(1.0, 0)],  # graded
    [(1.0, 0), (1.0, 1), (1.0, 2), (128.0, -4), (128.0, -3), (128.0, -2)],  # as the lowering: w0 2**b
    [(3.0, 1), (254.0, -6), (1.0, 5), (-7.0, 0), (100.0, -1)],  # any weights, shifts right and left
    [(128.0, -7), (64.0, -2)],  # every bit floored
])
def test_fused_ssa_float32_equals_float64(order, weights):
    g = torch.Generator().manual_seed(len(weights))
    form = "graded" if len(weights) == 1 else "binary"
    node = fused.FusedSSA("f", num_heads=2, order=order, form=form, bits=0 if form == "graded" else len(weights),
                          out_weights=weights)
    q, k, v = ((torch.rand(5, 8, 7, generator=g) < p).float() for p in (0.5, 0.7, 0.6))
    got = fused.run_fused_fixed(node, q, k, v)
    assert got.dtype == torch.float32
    assert torch.equal(got.double(), fused.run_fused(node, q, k, v, True))
