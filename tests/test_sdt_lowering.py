"""The Spike-driven Transformer through the traced frontend and the passes, in float semantics, against the
official code (tests/official_sdt/, built as its train.py builds it): every neuron's spikes of the lowered graph
equal the official forward's, and the graded max-pool's ReLU chain equals torch's max-pool at every position,
its padding included (docs/sdt_lowering.md). dvs_mode's Erode (a 3x3 OR over the image of k and v, and over the
(token, channel) plane of each head for k * v and the output) is compared call by call."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convert import ir
from convert.frontend import UnsupportedModuleError, spikformer_to_ir
from convert.passes import lower, maxpool_graded
from sim.engine import Engine
from spikformer.sdt_model import SpikeDrivenTransformer
from spikformer.sdt_presets import SDT_PRESETS

from .test_sdt_model import _official_code, _official_model, _randomize


@pytest.fixture(scope="module")
def official():
    with _official_code() as mod:
        yield mod


def _official_spikes(model, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The official model's logits (averaged over steps) and every neuron's and max-pool's output, each put in
    the IR's layout here from the official shapes: SPS images [T, B, C, H, W]; block neurons [T, B, C, H, W] ->
    tokens [T, B, C, H*W]; talking_heads_lif [T, B, h, 1, d] -> [T, B, h*d, 1]; head_lif [T, B, C] -> [T, B, C, 1];
    max-pools [T*B, C, H, W] -> [T, B, C, H, W]."""
    from spikingjelly.clock_driven import functional as official_functional
    T, out = model.T, {}
    erode_calls = {}  # Erode's max-pool runs on k, v, k * v and the attention's output, in that order

    def hook(name):
        def f(mod, inp, y):
            y = y.detach().clone()
            if isinstance(mod, torch.nn.MaxPool3d):
                attn = name.removesuffix(".pool.pool")  # Erode (attn.pool) holds the nn.MaxPool3d (pool)
                i = erode_calls[attn] = erode_calls.get(attn, -1) + 1
                of = ("k_lif", "v_lif", "k_and_v", "q_and_talking_heads")[i]
                if i < 2:  # [T, B, C, H, W]
                    y = y.flatten(-2)
                else:  # heads [T, B, h, N, d]
                    y = y.permute(0, 1, 2, 4, 3).reshape(*y.shape[:2], -1, y.shape[3])
                out[f"{attn}.{of}_eroded"] = y
                return
            if isinstance(mod, torch.nn.MaxPool2d):
                y = y.reshape(T, -1, *y.shape[1:])
            elif name.endswith("talking_heads_lif"):
                y = y.permute(0, 1, 2, 4, 3).reshape(*y.shape[:2], -1, 1)
            elif name == "head_lif":
                y = y.unsqueeze(-1)
            elif name.startswith("block."):
                y = y.flatten(-2)
            out[name] = y
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if type(m).__name__.endswith("LIFNode") or isinstance(m, (torch.nn.MaxPool2d, torch.nn.MaxPool3d))]
    official_functional.reset_net(model)
    with torch.no_grad():
        logits, _ = model(x)  # images [B, C, H, W] (repeated over steps) or frames [B, T, C, H, W]
    for h in handles:
        h.remove()
    return (logits.mean(0) if logits.dim() == 3 else logits), out


def _one_line(e: pytest.ExceptionInfo, start: str, *also: str) -> None:
    """The error is one line that starts with `start` and names `also`."""
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(start) and all(a in msg for a in also), msg


CASES = [("sdt-cifar10-2-256", "lif", {}, "binary"),
         ("sdt-cifar10-2-256", "plif", {"embed_dim": 64}, "graded"),
         ("sdt-cifar100-2-512", "lif", {"embed_dim": 64, "mlp_ratio": 1}, "binary"),  # MS_MLP_Conv's inner residual
         ("sdt-imagenet-8-384", "plif", {"img_size": 64, "depth": 2, "embed_dim": 64}, "binary"),  # pooling 1111
         ("sdt-gesture-2-256-t10", "lif", {"img_size": 32, "T": 3, "embed_dim": 64}, "graded"),  # event frames
         ("sdt-cifar10dvs-2-256", "plif", {"img_size": 32, "T": 4, "embed_dim": 64}, "binary")]  # dvs_mode's Erode


@pytest.mark.parametrize("preset,spike_mode,smaller,form", CASES,
                         ids=[f"{p}-{m}-{f}-{i}" for i, (p, m, _, f) in enumerate(CASES)])
def test_every_neuron_of_the_lowered_graph_spikes_as_the_official_forward(official, preset, spike_mode, smaller,
                                                                          form):
    cfg = SDT_PRESETS[preset].with_(spike_mode=spike_mode, **smaller)
    ref = _official_model(official, cfg).double()
    _randomize(ref, 3)
    ours = SpikeDrivenTransformer(cfg).double().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = lower(spikformer_to_ir(ours), ssa_form=form)
    assert not g.of_type(*ir.HIGH_LEVEL_TYPES)
    x = torch.rand((2, *cfg.input_shape), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * \
        (6 if cfg.event_input else 2)
    want_logits, want = _official_spikes(ref, x)
    eroded = {n for n in want if n.endswith("_eroded")}
    assert len(eroded) == (4 * cfg.depth if cfg.dvs_mode else 0) and eroded <= set(g.nodes)
    spiking = {n for n in want if n in g.nodes and g.nodes[n].spiking} | eroded  # (an Erode's output is a view)
    # every neuron the official forward calls is a population of the graph (the graded max-pool excepted)
    assert set(want) - spiking == ({"patch_embed.maxpool3"} if cfg.pooling_stat[3] == "1" else set())
    got = Engine(g, "float", dtype=torch.float64).run(x, record=sorted(spiking))
    for n in sorted(spiking):
        assert got.records[n].shape == want[n].shape, n
        assert int((got.records[n] != want[n]).sum()) == 0, f"{n}: spikes differ"
    assert float((got.outputs["output"] - want_logits).abs().max()) <= 1e-9
    busy = [n for n in spiking if 0 < float(want[n].mean()) < 1]
    assert len(busy) >= 0.7 * len(spiking), "a silent network would prove little"


def _pool_graph(c: int, h: int, kernel, stride, padding, bias: float, seed: int) -> ir.Graph:
    """Input -> spikes (threshold 0.5) -> 3x3 conv with bias -> max-pool -> output."""
    rng = np.random.default_rng(seed)
    g = ir.Graph(metadata={"T": 1})
    g.add(ir.Input("input", "input", shape=(2, h, h)))
    g.add(ir.Threshold("spikes", "spikes", threshold=0.5), "input")
    g.add(ir.Conv2d("conv", "conv", weight=rng.normal(0, 0.3, (c, 2, 3, 3)), bias=np.full(c, bias), padding=(1, 1)),
          "spikes")
    g.add(ir.MaxPool2d("pool", "pool", kernel=kernel, stride=stride, padding=padding), "conv")
    g.add(ir.Output("output", "output"), "pool")
    g.validate()
    return g


GEOMETRIES = [(8, (3, 3), (2, 2), (1, 1)),   # MS_SPS's max-pool: padding in the first row and column
              (7, (3, 3), (2, 2), (1, 1)),   # odd size: padding at both ends
              (6, (3, 3), (1, 1), (1, 1)),   # stride 1 (Erode's window)
              (8, (2, 2), (2, 2), (0, 0))]   # no padding, even kernel


@pytest.mark.parametrize("h,kernel,stride,padding", GEOMETRIES)
@pytest.mark.parametrize("bias", [-6.0, 0.0])
def test_the_graded_max_pool_is_torch_max_pool_at_every_position(h, kernel, stride, padding, bias):
    """The referee is F.max_pool2d on the conv's output (its padding is -inf); bias -6 makes most values negative,
    where a zero-padded tap would win at the border."""
    g = _pool_graph(5, h, kernel, stride, padding, bias, seed=h)
    lowered = maxpool_graded.run(g.copy())
    relus = lowered.of_type(ir.GradedRelu)
    assert len(relus) == kernel[0] * kernel[1] - 1 and not lowered.of_type(ir.MaxPool2d)
    x = torch.rand((3, 2, h, h), generator=torch.Generator().manual_seed(h), dtype=torch.float64)
    conv = g.nodes["conv"]
    s = (x >= 0.5).double()
    want = F.max_pool2d(F.conv2d(s, torch.tensor(conv.weight), torch.tensor(conv.bias), padding=1), kernel, stride,
                        padding).flatten(1)
    got = Engine(lowered, "float", dtype=torch.float64).run(x).outputs["output"]
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-12
    if bias < 0 and any(padding):
        assert float(want.max()) < 0  # the border windows hold no zero: padding read as 0 would show
        for name in [r.name + ".taps" for r in relus]:
            lowered.nodes[name].bias = None  # the mutation: padded taps read as the conv's zero padding
        wrong = Engine(lowered, "float", dtype=torch.float64).run(x).outputs["output"]
        assert float((wrong - want).abs().max()) > 0.5


def test_a_max_pool_of_values_without_a_bound_is_refused_in_one_line():
    g = ir.Graph(metadata={"T": 1})
    g.add(ir.Input("input", "input", shape=(2, 8, 8)))
    g.add(ir.Conv2d("conv", "conv", weight=np.ones((2, 2, 3, 3)), padding=(1, 1)), "input")
    g.add(ir.MaxPool2d("pool", "pool"), "conv")
    g.add(ir.Output("output", "output"), "pool")
    with pytest.raises(maxpool_graded.GradedMaxPoolError) as e:
        maxpool_graded.run(g)
    _one_line(e, "conv: a max-pool over graded values must read")


@pytest.mark.parametrize("preset", list(SDT_PRESETS))
def test_every_official_configuration_lowers_to_spike_only_operations(preset):
    """Full size, the model's own initialisation: the graph validates, holds no high-level node, names every
    neuron the forward calls by its module path, and its attention is ANDs, token sums and LIFs."""
    cfg = SDT_PRESETS[preset]
    model = SpikeDrivenTransformer(cfg).eval()
    g = lower(spikformer_to_ir(model))
    assert not g.of_type(*ir.HIGH_LEVEL_TYPES)
    called = {n for n, m in model.named_modules() if type(m).__name__.endswith("LIFNode")
              and not n.endswith(("rpe_lif", "attn_lif"))}  # built but never called, as upstream
    assert called <= {n.name for n in g.of_type(ir.LIF)}
    ands = [n for n in g.of_type(ir.Threshold) if n.name.endswith(("k_and_v", "q_and_talking_heads"))]
    assert len(ands) == 2 * cfg.depth and all(n.threshold == 1.5 for n in ands)
    assert len(g.of_type(ir.GradedRelu)) == (8 if cfg.pooling_stat[3] == "1" else 0)
    erodes = [n for n in g.of_type(ir.Threshold) if n.source.endswith("attn.pool.pool")]
    assert len(erodes) == (4 * cfg.depth if cfg.dvs_mode else 0) and all(n.threshold == 0.5 for n in erodes)


def test_an_erode_of_another_geometry_is_refused_in_one_line():
    model = SpikeDrivenTransformer(SDT_PRESETS["sdt-cifar10dvs-2-256"].with_(embed_dim=64)).eval()
    model.block[1].attn.pool.pool = torch.nn.MaxPool3d((1, 5, 5), 1, (0, 2, 2))
    with pytest.raises(UnsupportedModuleError) as e:
        spikformer_to_ir(model)
    _one_line(e, "module 'block.1.attn.pool.pool': call_module block.1.attn.pool.pool: a MaxPool3d "
              "other than Erode's")


def test_a_product_of_spikes_and_counts_is_refused_in_one_line(monkeypatch):
    """Only products of spikes are ANDs: q times the token sum itself (before talking_heads_lif) is refused."""
    import spikformer.sdt_model as sdt

    def without_the_lif(q, k, v, kv_lif, erode):
        return q.mul(k.mul(v).sum(dim=-2, keepdim=True))

    monkeypatch.setattr(sdt, "sdsa", without_the_lif)
    model = sdt.SpikeDrivenTransformer(SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=64)).eval()
    with pytest.raises(UnsupportedModuleError) as e:
        spikformer_to_ir(model)
    _one_line(e, "module 'block.0.attn': call_method mul: a product of spike tensors reads "
              "'block.0.attn.k_and_v.token_sum' (AxisSynapse), not spikes")


def test_loihi_refuses_the_float_form_and_nir_the_graded_max_pool_in_one_line():
    """The binary (float) form is not chip-shaped: the quantiser says so; NIR has no ReLU: its writer says so."""
    from hw_backends.loihi.quantize import NotQuantisableError, quantize
    from hw_backends.nir.file_format import NIRExportError
    from hw_backends.nir.ir_to_nir import to_nir
    g = lower(spikformer_to_ir(SpikeDrivenTransformer(SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=64)).eval()))
    with pytest.raises(NotQuantisableError) as e:
        quantize(g)
    _one_line(e, "the Spike-driven Transformer's binary form is float semantics only")
    with pytest.raises(NIRExportError) as e:
        to_nir(g)
    _one_line(e, "node 'patch_embed.maxpool3.relu1' (GradedRelu, from patch_embed.maxpool3) has "
              "no standard NIR equivalent")


def test_the_parity_api_compares_every_neuron_of_it_and_finds_no_mismatch():
    """analysis.parity.run_parity (the spk-parity machinery) on a Spike-driven Transformer: the reference recorder
    puts its neurons in the IR's layout (the model's ir_layout) and every neuron the forward calls is compared."""
    from analysis.parity import run_parity
    cfg = SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=64, spike_mode="plif")
    model = SpikeDrivenTransformer(cfg).eval()
    _randomize(model, 5)
    g = lower(spikformer_to_ir(model))
    x = torch.rand((6, *cfg.input_shape), generator=torch.Generator().manual_seed(6)) * 2
    counts = run_parity(model, g, x, torch.zeros(6, dtype=torch.long), mode="float", batch_size=3, progress=False)
    called = {n for n, m in model.named_modules() if type(m).__name__.endswith("LIFNode")
              and not n.endswith(("rpe_lif", "attn_lif"))}
    assert called <= set(counts.layers)
    assert all(s.mismatches == 0 and s.elements > 0 for s in counts.layers.values())
    assert counts.agreeing == counts.within_tolerance == 6
    assert sum(0 < s.ref_spikes < s.elements for s in counts.layers.values()) >= 0.7 * len(counts.layers)


def test_the_attention_costs_accumulates_only_and_says_where_multiplies_remain():
    """The paper's claim, on the lowered graph and its counted activity (analysis.activity decides per stream
    whether its values are spikes): every synaptic operation of the attention blocks (q/k/v and proj convolutions,
    the AND synapses, the token sum, the broadcast) reads spikes, an accumulate; multiplies remain only where
    values are graded: the first convolution (the analog image), the graded max-pool of MS_SPS and the head's
    mean over the float stream."""
    from analysis.activity import activity_from_simulator
    cfg = SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=64)
    model = SpikeDrivenTransformer(cfg).eval()
    _randomize(model, 5)
    g = lower(spikformer_to_ir(model))
    act = activity_from_simulator(g, torch.rand((2, *cfg.input_shape), generator=torch.Generator().manual_seed(7)) * 2)
    attention = {n: s for n, s in act.synapses.items() if n.startswith("block.") and ".attn." in n}
    assert len(attention) == 9 * cfg.depth
    assert all(s.mac_ops == 0 and s.combined_kind == "spikes" for s in attention.values())
    assert all(s.ac_ops > 0 for s in attention.values())
    multiplies = {n for n, s in act.synapses.items() if s.mac_ops}
    assert "patch_embed.proj_conv" in multiplies and "head_lif.token_mean" in multiplies
    assert all(n.startswith("patch_embed.maxpool3.") for n in multiplies - {"patch_embed.proj_conv", "head_lif.token_mean"})


def _chip_shape_violations(g: ir.Graph) -> list[str]:
    """Where the graph is not chip-shaped: a synapse must read one population (through layout views) and feed one
    population; a graded population receives no bias (lava's graded neurons have none)."""
    bad = []

    for name, node in g.nodes.items():
        if not node.is_synapse:
            continue
        pre = {g.view_origin(e.src) for e in g.in_edges(name)}
        post = {e.dst for e in g.out_edges(name)}
        if len(pre) != 1 or not all(g.nodes[p].is_population or g.nodes[p].spiking or isinstance(g.nodes[p], ir.Input)
                                    for p in pre):
            bad.append(f"{name} reads {sorted(pre)}")
        if len(post) != 1 or not all(g.nodes[p].is_neuron for p in post):
            bad.append(f"{name} feeds {sorted(post)}")
        if getattr(node, "bias", None) is not None and any(g.nodes[p].is_graded for p in post):
            bad.append(f"{name} gives a graded population a bias")
    for name, node in g.nodes.items():
        if node.is_neuron and not isinstance(node, ir.Integrator):
            direct = [e.src for e in g.in_edges(name) if not g.nodes[e.src].is_synapse]
            if direct:
                bad.append(f"{name} reads {direct} without a synapse")
    return bad


def test_the_graded_form_is_chip_shaped():
    """The graded (Loihi) form: one relay per stream point, each synapse from one population to one, biases at the
    readers, the max-pool's padding from a bias source (docs/sdt_lowering.md, steps 1-3); the float (binary) form
    is not chip-shaped."""
    model = SpikeDrivenTransformer(SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=64)).eval()
    g = lower(spikformer_to_ir(model), ssa_form="graded")
    assert _chip_shape_violations(g) == []
    assert len([n for n in g.nodes if n.endswith(".taps.bias")]) == 5  # the taps in the first row or column
    binary = _chip_shape_violations(lower(spikformer_to_ir(model), ssa_form="binary"))
    assert any("reads" in b and "without a synapse" in b for b in binary)  # the float form is not chip-shaped


def test_the_graded_form_runs_in_loihi_fixed_point_close_to_the_reference():
    """WIP (docs/sdt_lowering.md, step 4): the chip form quantised (payload scale per graded population, the bias
    source's payload) and run in the fixed-point simulator against the float32 reference on random weights."""
    from analysis.parity import run_parity
    from hw_backends.loihi.quantize import quantize
    cfg = SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=64)
    model = SpikeDrivenTransformer(cfg).eval()
    _randomize(model, 5)
    q, report = quantize(lower(spikformer_to_ir(model), ssa_form="graded"))
    P = report["graded_payload"]["scale"]
    assert P >= 1 and (4 * report["graded_payload"]["value_bound"] + 1) * P <= 2 ** 23
    assert all(report["layers"][n.name]["payload_scale"] == P for n in q.of_type(ir.GradedRelu))
    x = torch.rand((16, *cfg.input_shape), generator=torch.Generator().manual_seed(7))
    counts = run_parity(model, q, x, torch.zeros(16, dtype=torch.long), mode="fixed", batch_size=8, progress=False)
    assert counts.agreeing >= 15
    assert min(1 - s.mismatches / s.elements for s in counts.layers.values()) >= 0.95


@pytest.mark.parametrize("dvs", [False, True], ids=["images", "events-erode"])
def test_lava_runs_the_graded_form_as_the_fixed_point_simulator(tmp_path, dvs):
    """The chip form compiled (timing, placement), written, and run by lava-nc (GradedVec relays, GradedReluVec
    max-pool, a RingBuffer bias source; with dvs_mode, Erode's sum pools and threshold neurons reading reshaped
    views of k, v and the heads): every population's spikes and payloads and the readout equal the fixed-point
    simulator's."""
    from analysis.engine_crosscheck import crosscheck
    from hw_backends.loihi.compile import compile_graph
    from hw_backends.loihi.export import write_artifacts
    from hw_backends.loihi.lava_engine import LavaEngine
    preset = "sdt-cifar10dvs-2-256" if dvs else "sdt-cifar10-2-256"
    cfg = SDT_PRESETS[preset].with_(embed_dim=32, img_size=16, num_heads=2, T=2)
    model = SpikeDrivenTransformer(cfg).eval()
    _randomize(model, 5)
    with torch.no_grad():  # q, k, v fire about half the time, so the ANDs and the heads' Erodes fire too
        for name, t in model.state_dict().items():
            if any(name.endswith(f"attn.{k}_bn.bias") for k in "qkv"):
                t.add_(1.5)
    g = lower(spikformer_to_ir(model), ssa_form="graded")
    assert _chip_shape_violations(g) == []
    compiled = compile_graph(g)
    write_artifacts(tmp_path, compiled, {"name": "sdt-tiny"}, {"ssa_form": "graded"})
    scale = 3.0 if dvs else 1.0  # event frames hold counts
    x = torch.rand((2, *cfg.input_shape), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x = (x * scale).round() if dvs else x
    rep = crosscheck(LavaEngine(tmp_path, timeout_s=300, retries=0, pin_models=False), x.numpy(), record="all",
                     sim_graph=compiled.graph, progress=False)
    assert rep["readout_mismatches"] == 0 and rep["total_spike_mismatches"] == 0
    assert len(rep["graded_payload_max"]) >= 15 and max(rep["graded_payload_max"].values()) > 0
    if dvs:
        eroded = [n for n in compiled.graph.nodes if n.endswith("_eroded.or")]  # Erode's OR populations
        assert len(eroded) == 4 * cfg.depth
        assert all(rep["firing_rates"].get(n, 0) > 0 for n in eroded), {n: rep["firing_rates"].get(n) for n in eroded}
