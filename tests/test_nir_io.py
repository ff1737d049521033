"""NIR export and import: the file holds only standard NIR 1.0.8 nodes, reads back (type-checked) into an IR graph
that simulates spike for spike like the in-memory lowered graph, and the structured Conv1d synapses equal the
AxisSynapse kernel they replace."""
import json
import math

import h5py
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convert import ir
from hw_backends.nir import nir_io
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from convert import kernels
from sim.engine import Engine
from analysis.reference import record_reference

from .helpers_models import mismatches, randomized_model

STANDARD = {"Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten",
            "Delay", "Threshold", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF", "NIRGraph"}
ORDERS = ("kv_first", "qk_first")


@pytest.fixture(scope="module")
def model():
    return randomized_model("digits-2-64", attn_drive=0.5).double()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(3)
    return torch.rand(3, 1, 16, 16, dtype=torch.float64) * 3


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """order -> (lowered graph, path of its NIR file)."""
    out = {}
    d = tmp_path_factory.mktemp("nir")
    for order in ORDERS:
        g = lower(spikformer_to_ir(model), ssa_order=order)
        path = d / f"digits_{order}.nir"
        nir_io.write_nir(path, g, model_info={"preset": "digits-2-64"})
        out[order] = (g, path)
    return out


def _conv_chain(parts, x):
    for p in parts:
        x = F.conv1d(x, torch.as_tensor(p.weight, dtype=x.dtype), None, 1, p.padding, 1, p.groups)
    return x


# ------------------------------------------------------------------------------------------------ the file
@pytest.mark.parametrize("order", ORDERS)
def test_file_has_only_standard_nodes_and_type_checks(exported, order):
    g, path = exported[order]
    with nir_io.grouped_conv_types():
        ng = nir.read(str(path), type_check=True)
    kinds = {type(n).__name__ for n in ng.nodes.values()}
    assert kinds <= STANDARD
    assert "NIRGraph" not in kinds  # flat
    assert {"LIF", "Threshold", "Conv1d", "Conv2d", "SumPool2d", "Flatten", "I"} <= kinds
    # stock NIR reads it without type inference; with it, NIR 1.0.8 miscounts grouped conv channels
    stock = nir.read(str(path), type_check=False)
    assert set(stock.nodes) == set(ng.nodes)
    if nir_io._nir_ignores_groups():
        with pytest.raises(ValueError, match="type mismatch"):
            nir.read(str(path), type_check=True)


@pytest.mark.parametrize("order", ORDERS)
def test_names_are_module_paths_and_sources_round_trip(exported, model, order):
    g, path = exported[order]
    ng = nir_io.read_nir_graph(path)
    modules = {n for n, _ in model.named_modules()} | {"input"}
    for name, node in ng.nodes.items():
        src = node.metadata["source"]
        assert src in modules, (name, src)
        assert name == src or name.startswith(src + ".") or name == "output", (name, src)
        assert g.nodes[node.metadata.get("ir_name", name)].source == src
    for lif in ("patch_embed.proj_lif", "block.0.attn.q_lif", "block.1.mlp.fc2_lif", "block.0.attn.attn_lif"):
        assert isinstance(ng.nodes[lif], nir.LIF)
    back = nir_io.read_nir(path)
    assert {n: back.nodes[n].source for n in back.nodes} == {n: g.nodes[n].source for n in g.nodes}


@pytest.mark.parametrize("order", ORDERS)
def test_metadata(exported, order):
    g, path = exported[order]
    md = nir_io.read_nir_graph(path).metadata
    assert md["format"] == nir_io.FORMAT and int(md["format_version"]) == nir_io.FORMAT_VERSION
    assert float(md["dt"]) == 1.0 and int(md["T"]) == 4
    assert ">=" in md["threshold_convention"] and "v_leak = v_reset" in md["lif_mapping"]
    irmd = json.loads(md["ir_metadata"])
    assert irmd["ssa"]["block.0.attn.product"]["order"] == order
    assert set(irmd["ssa"]["block.0.attn.product"]["cost_per_step"]) == set(ORDERS)
    assert irmd["passes"] == g.metadata["passes"] and irmd["config"]["embed_dim"] == 64
    assert json.loads(md["model_info"]) == {"preset": "digits-2-64"}
    assert json.loads(md["ssa_orders"]) == {"block.0.attn.product": order, "block.1.attn.product": order}
    with h5py.File(path) as f:  # what other readers see: plain HDF5 datasets
        assert f["node/metadata/dt"][()] == 1.0


def test_lif_parameters_follow_the_time_convention(exported):
    g, path = exported["kv_first"]
    ng = nir_io.read_nir_graph(path)
    for name in ("block.0.attn.attn_lif", "patch_embed.proj_lif"):
        n, want = ng.nodes[name], g.nodes[name]
        assert np.all(n.tau == want.tau) and np.all(n.r == 1) and np.all(n.v_leak == want.v_reset)
        assert np.all(n.v_threshold == want.v_threshold) and np.all(n.v_reset == want.v_reset)
        assert n.tau.shape == tuple(g.shapes()[name])
    assert np.all(ng.nodes["block.0.attn.attn_lif"].v_threshold == 0.5)


# ------------------------------------------------------------------------------------------------ simulating it
@pytest.mark.parametrize("order", ORDERS)
def test_file_simulates_like_the_lowered_graph(exported, images, order):
    """Read back with each AxisSynapse rebuilt from its metadata (after an exact check of the stored Conv1d
    weights), in float64: every spike and the logits equal the in-memory lowered graph."""
    g, path = exported[order]
    back = nir_io.read_nir(path, structured="axis")
    spiking = [n for n, node in g.nodes.items() if node.spiking]
    want = Engine(g).run(images, record=spiking)
    got = Engine(back).run(images, record=spiking)
    assert torch.equal(got.outputs["output"], want.outputs["output"])
    assert mismatches(want.records, got.records) == {n: 0 for n in spiking}
    # the attention does something (a silent SSA would test nothing)
    assert want.records["block.0.attn.attn_lif"].sum() > 0
    assert want.records[f"block.0.attn.product.{order}.bit1.and"].sum() > 0


@pytest.mark.parametrize("order", ORDERS)
def test_stored_conv1d_weights_simulate_like_the_lowered_graph(exported, images, order):
    """Read back with every Conv1d as stored in the file (the structured SSA convolutions included). Run in
    float32 on both sides: torch's float64 grouped conv1d is ~50x slower on CPU, and float32 is exact here too:
    both graphs share every other layer's weights and kernels, and the SSA sums are integers times powers of two
    far below 2**24."""
    g, path = exported[order]
    back = nir_io.read_nir(path, structured="conv")
    assert not back.of_type(ir.AxisSynapse) and len(back.of_type(ir.Conv1d)) > 40
    spiking = [n for n, node in g.nodes.items() if node.spiking]
    want = Engine(g, dtype=torch.float32).run(images, record=spiking)
    got = Engine(back, dtype=torch.float32).run(images, record=spiking)
    assert torch.equal(got.outputs["output"], want.outputs["output"])
    assert mismatches(want.records, got.records) == {n: 0 for n in spiking}


def test_read_back_graph_reexports_identically(exported, tmp_path):
    g, path = exported["qk_first"]
    back = nir_io.read_nir(path)
    again = tmp_path / "again.nir"
    nir_io.write_nir(again, back, model_info={"preset": "digits-2-64"})
    a, b = nir_io.read_nir_graph(path), nir_io.read_nir_graph(again)
    assert a.edges == b.edges and list(a.nodes) == list(b.nodes)
    for name in a.nodes:
        for attr in ("weight", "bias", "tau", "threshold"):
            if hasattr(a.nodes[name], attr):
                assert np.array_equal(getattr(a.nodes[name], attr), getattr(b.nodes[name], attr)), (name, attr)


def test_delay_and_integrator_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    g = ir.Graph(metadata={"T": 5})
    g.add(ir.Input("input", "input", shape=(3, 6)))
    g.add(ir.Conv1d("a", "a", weight=rng.normal(size=(4, 3, 3)), bias=rng.normal(size=4), padding=1), "input")
    g.add(ir.LIF("a_lif", "a_lif", tau=1.7, v_threshold=0.3, v_reset=0.0), "a")
    g.add(ir.Delay("a_lif.delay", "a_lif", steps=2), "a_lif")
    g.add(ir.Conv1d("b", "b", weight=rng.normal(size=(2, 4, 6))), "a_lif.delay", "a_lif")
    g.add(ir.Integrator("b_int", "b"), "b")
    g.add(ir.Output("output", "b"), "b_int")
    path = tmp_path / "small.nir"
    nir_io.write_nir(path, g)
    ng = nir_io.read_nir_graph(path)
    assert np.all(ng.nodes["a_lif.delay"].delay == 2) and isinstance(ng.nodes["b_int"], nir.I)
    back = nir_io.read_nir(path)
    assert back.nodes["a_lif.delay"].steps == 2 and back.nodes["b"].bias is None
    x = torch.rand(4, 3, 6, dtype=torch.float64) * 2
    want = Engine(g).run(x, record="all")
    got = Engine(back).run(x, record="all")
    assert torch.equal(want.outputs["output"], got.outputs["output"])
    assert all(torch.equal(want.records[n], got.records[n]) for n in g.nodes)
    assert want.records["a_lif"].sum() > 0


# ------------------------------------------------------------------------------------------------ structured weights
def _synthetic_synapses():
    sizes = {"h": 3, "c": 5, "e": 4, "i": 7, "j": 7, "one": 1}
    cases = [  # every case of axis_synapse_parts, with sizes that do not divide each other
        (("h", "c", "j"), ("h", "c", "e", "j"), 1.0),      # token kept, broadcast over a channel axis
        (("h", "e", "j"), ("h", "c", "e", "j"), 1.0),      # token kept, group prefix h only
        (("h", "c", "e", "j"), ("h", "c", "e", "one"), 1.0),  # sum over tokens
        (("h", "c", "e", "one"), ("h", "c", "e", "one"), -4.0),  # 'one' -> 'one' (bit inhibition)
        (("h", "c", "e", "one"), ("h", "c", "e", "i"), 1.0),  # broadcast to tokens
        (("h", "c", "e", "i"), ("h", "e", "i"), 0.25),     # sum over a channel axis
        (("h", "c", "j"), ("h", "c", "j", "i"), 1.0),      # token -> channel (gather + broadcast)
        (("h", "e", "j"), ("h", "e", "j", "i"), 1.0),
        (("h", "c", "j", "i"), ("h", "j", "i"), 1.0),
        (("h", "j", "i"), ("h", "e", "j", "i"), 1.0),
        (("h", "e", "j", "i"), ("h", "e", "i"), 0.125 * 8),
        (("h", "c", "j"), ("h", "c", "i"), 0.5),            # sum one token axis, broadcast another
        (("c", "h", "j"), ("h", "c", "j"), 1.0),            # a permutation of channel axes
        (("h", "c", "j"), ("h", "c", "j", "one"), 2.0),     # token -> channel only (one gather conv)
    ]
    out = [ir.AxisSynapse(f"syn{k}", "", in_axes=a, out_axes=b, sizes=sizes, weight=w)
           for k, (a, b, w) in enumerate(cases)]
    no_one = {k: v for k, v in sizes.items() if k != "one"}  # 'one' may be left out of sizes
    out.append(ir.AxisSynapse("syn_no_one", "", in_axes=("h", "c", "j"), out_axes=("h", "e", "i"), sizes=no_one))
    return out


def _lowered_synapses(model):
    """Every distinct AxisSynapse (axes, sizes, weight) of both lowerings of the digits model."""
    out = {}
    for order in ORDERS:
        for s in lower(spikformer_to_ir(model), ssa_order=order).of_type(ir.AxisSynapse):
            out.setdefault((s.in_axes, s.out_axes, tuple(sorted(s.sizes.items())), s.weight), s)
    return list(out.values())


def test_structured_conv1d_equals_axis_synapse_kernel(model):
    torch.manual_seed(0)
    synthetic = _synthetic_synapses()
    roles = set()
    for node in synthetic + _lowered_synapses(model):
        parts = nir_io.axis_synapse_parts(node)
        roles |= {(p.role, p.weight.shape[2] > 1, p.padding > 0, p.groups > 1) for p in parts}
        shape = node._flat(node.in_axes)
        spikes = torch.randint(0, 2, (3, *shape)).float()  # exact in float32: integer sums times powers of two
        want = kernels.axis_synapse(node, spikes)
        got = _conv_chain(parts, spikes)
        assert got.shape == want.shape and torch.equal(got, want), node.name
        if node in synthetic:  # real values, float64 (torch's float64 grouped conv is slow: small sizes only)
            x = torch.randn(2, *shape, dtype=torch.float64)
            assert torch.allclose(_conv_chain(parts, x), kernels.axis_synapse(node, x), rtol=1e-12, atol=1e-12)
        # structured, never dense: the weights are far smaller than a (neurons x inputs) matrix when it is big
        dense = math.prod(node._flat(node.out_axes)) * math.prod(shape)
        stored = sum(p.weight.size for p in parts)
        assert stored <= dense
        if dense > 10 ** 6:
            assert stored * 20 < dense, node.name
    assert {r[0] for r in roles} == {"main", "gather", "sum"}


def test_identical_weights_are_shared(exported):
    g, _ = exported["kv_first"]
    ng = nir_io.to_nir(g)
    a = ng.nodes["block.0.attn.product.kv_first.count"].weight
    b = ng.nodes["block.1.attn.product.kv_first.count"].weight
    assert a is b
    e0 = ng.nodes["block.0.attn.product.kv_first.bit0.expand"].weight
    e1 = ng.nodes["block.0.attn.product.kv_first.bit1.expand"].weight
    assert e0 is e1
    t = [ng.nodes[f"block.{i}.attn.product.kv_first.and"].threshold for i in (0, 1)]
    assert t[0] is t[1] and t[0].strides == (0, 0)  # constant neuron parameters: broadcast views
    # the folded BatchNorm weights are the IR's own arrays, not copies
    assert ng.nodes["block.0.attn.q_linear"].weight is g.nodes["block.0.attn.q_linear"].weight


# ------------------------------------------------------------------------------------------------ errors
def test_high_level_and_graded_graphs_are_refused(model):
    with pytest.raises(nir_io.NIRExportError, match=r"patch_embed\.proj_bn.*BatchNorm.*lower"):
        nir_io.to_nir(spikformer_to_ir(model))
    graded = lower(spikformer_to_ir(model), ssa_form="graded")
    with pytest.raises(nir_io.NIRExportError, match="(GradedNeuron|ProductNeuron).*binary"):
        nir_io.to_nir(graded)


def test_failed_write_leaves_nothing_and_keeps_the_old_file(exported, tmp_path, monkeypatch):
    g, _ = exported["kv_first"]
    path = tmp_path / "m.nir"
    path.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        nir_io.write_nir(path, g)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nir"]


def test_read_errors_are_clear(tmp_path, exported):
    with pytest.raises(nir_io.NIRReadError, match="does not exist"):
        nir_io.read_nir(tmp_path / "missing.nir")
    with pytest.raises(nir_io.NIRReadError, match="is a directory"):
        nir_io.read_nir(tmp_path)
    (tmp_path / "empty.nir").write_bytes(b"")
    with pytest.raises(nir_io.NIRReadError, match="not a NIR file.*empty"):
        nir_io.read_nir(tmp_path / "empty.nir")
    (tmp_path / "text.nir").write_text("hello")
    with pytest.raises(nir_io.NIRReadError, match="not a NIR file"):
        nir_io.read_nir(tmp_path / "text.nir")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(nir_io.NIRReadError, match="not a valid NIR graph"):
        nir_io.read_nir(tmp_path / "other.h5")
    _, good = exported["kv_first"]
    data = good.read_bytes()
    (tmp_path / "cut.nir").write_bytes(data[: len(data) // 2])
    with pytest.raises(nir_io.NIRReadError):
        nir_io.read_nir(tmp_path / "cut.nir")
    # a valid NIR graph from elsewhere: no time convention, so it is refused by name
    foreign = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((2, 3))), nir.LIF(
        tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2)))
    nir.write(tmp_path / "foreign.nir", foreign)
    with pytest.raises(nir_io.NIRReadError, match="not written by spk-convert"):
        nir_io.read_nir(tmp_path / "foreign.nir")


def test_tampered_structured_weights_are_detected(exported, tmp_path):
    _, path = exported["kv_first"]
    bad = tmp_path / "bad.nir"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "r+") as f:
        w = f["node/nodes/block.0.attn.product.kv_first.count/weight"]
        arr = w[()]
        arr[0, 0, 0] = 2.0
        w[...] = arr
    with pytest.raises(nir_io.NIRReadError, match="differ from the AxisSynapse"):
        nir_io.read_nir(bad)
    nir_io.read_nir(bad, structured="conv")  # as stored: readable, simulates the changed weights


# ------------------------------------------------------------------------------------------------ full size
def test_cifar10_file_matches_pytorch_model(tmp_path):
    """A random-weight cifar10-4-384 (official CIFAR architecture): the NIR file, read back, reproduces every LIF
    and max-pool of the float64 PyTorch model and its logits exactly."""
    model = randomized_model("cifar10-4-384").double()
    torch.manual_seed(5)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 3
    logits, recs = record_reference(model, x)
    g = lower(spikformer_to_ir(model))
    path = tmp_path / "cifar.nir"
    nir_io.write_nir(path, g)
    back = nir_io.read_nir(path)
    res = Engine(back).run(x, record=list(recs))
    assert torch.equal(res.outputs["output"], logits)
    assert mismatches(recs, res.records) == {n: 0 for n in recs}
    assert len(recs) == 5 + 2 + 4 * 7  # 4 SPS LIFs + rpe, 2 max-pools, 7 LIFs per block
    assert recs["block.0.attn.attn_lif"].sum() > 0


def _h5_items(path) -> dict:
    out = {}
    with h5py.File(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.compression, obj[()])
            else:
                out[name] = "group"
        f.visititems(visit)
    return out


def test_streaming_write_equals_plain_nir_write(exported, tmp_path):
    """write_nir hands nir.write the nodes one at a time; the file holds exactly what nir.write(NIRGraph) writes."""
    g, path = exported["qk_first"]
    plain = tmp_path / "plain.nir"
    nir.write(plain, nir_io.to_nir(g, model_info={"preset": "digits-2-64"}), compression="gzip")
    a, b = _h5_items(path), _h5_items(plain)
    assert a.keys() == b.keys()
    for k in a:
        if a[k] == "group":
            assert b[k] == "group"
            continue
        assert a[k][:2] == b[k][:2], k
        assert np.array_equal(a[k][2], b[k][2]), k
