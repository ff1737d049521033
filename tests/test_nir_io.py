"""NIR export and import: the file holds only standard NIR 1.0.8 nodes, stock `nir.read` reads and type-checks it,
it reads back into an IR graph that simulates spike for spike like the in-memory lowered graph, and the structured
synapses (1x1 Conv2d, SumPool2d, Scale on the token grid) equal the AxisSynapse kernel they replace."""
import json
import math

import h5py
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convert import ir
from hw_backends.nir import h5_writer, nir_io, structured
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
def test_stock_nir_read_type_checks_the_file(exported, order):
    g, path = exported[order]
    ng = nir.read(str(path))  # nir 1.0.8 with its defaults: type_check=True, no patch
    kinds = {type(n).__name__ for n in ng.nodes.values()}
    assert kinds <= STANDARD
    assert {"LIF", "Threshold", "Conv2d", "SumPool2d", "Scale", "I"} <= kinds
    assert not kinds & {"Conv1d", "Flatten", "NIRGraph"}
    assert all(int(n.groups) == 1 for n in ng.nodes.values() if isinstance(n, nir.Conv2d))
    assert np.array_equal(ng.nodes["block.0.attn.q_lif"].output_type["output"], [64, 4, 4])
    assert np.array_equal(ng.nodes["output"].output_type["output"], [10, 1, 1])
    # compact: no dense (neurons x inputs) matrix; the float64 weights of the model dominate
    params = sum(v.numel() for v in _params(g))
    assert path.stat().st_size < 8 * params + 1_000_000  # metadata, HDF5 headers and 0/1 structure arrays: < 1 MB


def _params(g):
    return [torch.as_tensor(n.weight) for n in g.nodes.values() if isinstance(n, (ir.Conv1d, ir.Conv2d))]


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
    assert float(md["dt"]) == 1e-4 and int(md["T"]) == 4
    assert "largest float32 below" in md["threshold_convention"] and "v_leak = v_reset" in md["lif_mapping"]
    assert json.loads(md["token_grid"]) == [4, 4] and "(C, Ht, Wt)" in md["layout_convention"]
    irmd = json.loads(md["ir_metadata"])
    assert irmd["ssa"]["block.0.attn.product"]["order"] == order
    assert set(irmd["ssa"]["block.0.attn.product"]["cost_per_step"]) == set(ORDERS)
    assert irmd["passes"] == g.metadata["passes"] and irmd["config"]["embed_dim"] == 64
    assert json.loads(md["model_info"]) == {"preset": "digits-2-64"}
    assert json.loads(md["ssa_orders"]) == {"block.0.attn.product": order, "block.1.attn.product": order}
    with h5py.File(path) as f:  # what other readers see: plain HDF5 datasets
        assert f["node/metadata/dt"][()] == 1e-4


def test_lif_parameters_follow_the_time_convention(exported):
    g, path = exported["kv_first"]
    ng = nir_io.read_nir_graph(path)
    dt = float(ng.metadata["dt"])
    for name in ("block.0.attn.attn_lif", "patch_embed.proj_lif"):
        n, want = ng.nodes[name], g.nodes[name]
        assert np.all(n.tau == want.tau * dt) and np.all(dt / n.tau == 1 / want.tau)  # exact: tau = 2 * 1e-4
        assert np.all(n.r == 1) and np.all(n.v_leak == want.v_reset) and np.all(n.v_reset == want.v_reset)
        assert np.all(n.v_threshold == np.nextafter(np.float32(want.v_threshold), np.float32(-1)))
        assert n.tau.size == math.prod(g.shapes()[name])
    assert ng.nodes["block.0.attn.attn_lif"].v_threshold.dtype == np.float32
    assert np.all(ng.nodes["block.0.attn.attn_lif"].v_threshold == np.float32(0.5 - 2 ** -25))
    assert np.all(ng.nodes["head"].r * dt == 1.0)


@pytest.mark.parametrize("order", ORDERS)
def test_strict_thresholds_reproduce_ties_for_every_value_a_layer_receives(exported, order):
    """NIR fires on v > stored, the model on v >= threshold. Proof over the values each layer can receive:
    - every LIF and Threshold: no float32 lies strictly between the stored value and the model's threshold, so
      the two rules agree on every float32 membrane value (the model computes in float32);
    - the SSA's Threshold neurons receive integer sums of spikes and the attention LIF multiples of 1/8 halved
      at most T times (decay by 1/2 per step): enumerated exhaustively over their whole range, the rules agree
      in float32 and in float64 too (so any arithmetic that holds these exact values reproduces the ties)."""
    g, path = exported[order]
    ng = nir_io.read_nir_graph(path)
    T = int(ng.metadata["T"])
    n_checked = 0
    for name, node in ng.nodes.items():
        if not isinstance(node, (nir.LIF, nir.Threshold)):
            continue
        stored = np.unique(node.v_threshold if isinstance(node, nir.LIF) else node.threshold)
        assert stored.size == 1 and stored.dtype == np.float32, name
        ir_node = g.nodes[name]
        model = ir_node.v_threshold if isinstance(ir_node, ir.LIF) else ir_node.threshold
        s = stored[0]
        assert np.nextafter(s, np.float32(np.inf)) == np.float32(model), name  # nothing in between
        if isinstance(ir_node, ir.Threshold) or name.endswith("attn_lif"):
            step = 1.0 if isinstance(ir_node, ir.Threshold) else 0.125 / 2 ** T
            k = np.arange(-4096, 4097)
            for dtype in (np.float32, np.float64):
                v = (k * step).astype(dtype)
                assert np.array_equal(v > s.astype(dtype), v >= dtype(model)), (name, dtype)
            n_checked += 1
    assert n_checked >= 10


def test_strict_threshold_is_the_float32_just_below():
    for v in (0.5, 1.0, 1.5, 0.0, -2.0, 2.0 ** -20):
        s = nir_io.strict_threshold(v)
        assert s.dtype == np.float32 and s < v and nir_io.model_threshold(s) == v
        x = np.array([s, np.float32(v), np.nextafter(np.float32(v), np.float32(np.inf))], dtype=np.float32)
        assert list(x > s) == [False, True, True] and list(x >= np.float32(v)) == [False, True, True]
    with pytest.raises(ValueError, match="not a float32"):
        nir_io.strict_threshold(0.1)


# ------------------------------------------------------------------------------------------------ simulating it
@pytest.mark.parametrize("order", ORDERS)
def test_file_simulates_like_the_lowered_graph(exported, images, order):
    """Read back (the IR rebuilt and checked to export exactly to the file), in float64: every spike and the
    logits equal the in-memory lowered graph."""
    g, path = exported[order]
    back = nir_io.read_nir(path)
    spiking = [n for n, node in g.nodes.items() if node.spiking]
    want = Engine(g).run(images, record=spiking)
    got = Engine(back).run(images, record=spiking)
    assert torch.equal(got.outputs["output"], want.outputs["output"])
    assert mismatches(want.records, got.records) == {n: 0 for n in spiking}
    # the attention does something (a silent SSA would test nothing)
    assert want.records["block.0.attn.attn_lif"].sum() > 0
    assert want.records[f"block.0.attn.product.{order}.bit1.and"].sum() > 0


def test_read_back_graph_reexports_identically(exported, tmp_path):
    g, path = exported["qk_first"]
    back = nir_io.read_nir(path)
    again = tmp_path / "again.nir"
    nir_io.write_nir(again, back, model_info={"preset": "digits-2-64"})
    a, b = nir_io.read_nir_graph(path), nir_io.read_nir_graph(again)
    assert sorted(a.edges) == sorted(b.edges) and sorted(a.nodes) == sorted(b.nodes)
    for name in a.nodes:
        for attr in ("weight", "bias", "tau", "threshold"):
            if hasattr(a.nodes[name], attr):
                assert np.array_equal(getattr(a.nodes[name], attr), getattr(b.nodes[name], attr)), (name, attr)


def test_delay_and_integrator_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    g = ir.Graph(metadata={"T": 5})
    g.add(ir.Input("input", "input", shape=(2, 3, 3)))
    g.add(ir.Conv2d("a", "a", weight=rng.normal(size=(4, 2, 3, 3)), bias=rng.normal(size=4), padding=(1, 1)),
          "input")
    g.add(ir.LIF("a_lif", "a_lif", tau=1.75, v_threshold=0.375, v_reset=0.0), "a")
    g.add(ir.Delay("a_lif.delay", "a_lif", steps=2), "a_lif")
    g.add(ir.Flatten("a_lif.tokens", "a_lif"), "a_lif.delay")
    g.add(ir.Flatten("a.tokens", "a_lif"), "a_lif")
    g.add(ir.Conv1d("b", "b", weight=rng.normal(size=(2, 4, 9))), "a_lif.tokens", "a.tokens")
    g.add(ir.Integrator("b_int", "b"), "b")
    g.add(ir.Output("output", "b"), "b_int")
    path = tmp_path / "small.nir"
    nir_io.write_nir(path, g)
    ng = nir.read(str(path))
    assert np.allclose(ng.nodes["a_lif.delay"].delay / float(ng.metadata["dt"]), 2)
    assert isinstance(ng.nodes["b_int"], nir.I) and ng.nodes["b"].weight.shape == (2, 4, 3, 3)
    back = nir_io.read_nir(path)
    assert back.nodes["a_lif.delay"].steps == 2 and back.nodes["b"].bias is None
    assert back.nodes["a_lif"].tau == 1.75 and back.nodes["a_lif"].v_threshold == 0.375
    x = torch.rand(4, 2, 3, 3, dtype=torch.float64) * 2
    want = Engine(g).run(x, record="all")
    got = Engine(back).run(x, record="all")
    assert torch.equal(want.outputs["output"], got.outputs["output"])
    assert all(torch.equal(want.records[n], got.records[n]) for n in g.nodes)
    assert want.records["a_lif"].sum() > 0


# ------------------------------------------------------------------------------------------------ structured weights
def _synthetic_synapses():
    sizes = {"h": 3, "c": 5, "e": 4, "i": 9, "j": 9, "one": 1}
    cases = [  # every case of structured.synapse_parts, with sizes that do not divide each other
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


def _run_parts(parts, node, x, grid):
    """The NIR parts applied as NIR defines them, on (B, C, Ht, Wt) (tokens on the grid, (C, 1, 1) without)."""
    for p in parts:
        if p.kind == "conv":
            x = F.conv2d(x, torch.tensor(np.array(p.weight), dtype=x.dtype))
        elif p.kind == "pool_sum":
            x = x.sum(dim=(2, 3), keepdim=True)
        elif p.kind == "pool_broadcast":  # SumPool2d, window = grid, padding grid - 1, on a 1x1 input
            ones = torch.ones(x.shape[1], 1, *grid, dtype=x.dtype)
            x = F.conv2d(x, ones, padding=(grid[0] - 1, grid[1] - 1), groups=x.shape[1])
        else:
            x = x * node.weight
    return x


def _on_grid(x, grid):
    return x.reshape(*x.shape[:2], *(grid if x.shape[-1] > 1 else (1, 1)))


def test_structured_parts_equal_axis_synapse_kernel(model):
    torch.manual_seed(0)
    synthetic = _synthetic_synapses()
    kinds = set()
    for node in synthetic + _lowered_synapses(model):
        grid = (3, 3) if node in synthetic else (4, 4)
        parts = structured.synapse_parts(node, grid)
        kinds |= {p.role for p in parts}
        assert parts[-1].name == node.name
        assert all(p.weight is None or set(np.unique(p.weight)) <= {0.0, 1.0} for p in parts)
        shape = node._flat(node.in_axes)
        spikes = torch.randint(0, 2, (3, *shape)).double()
        want = kernels.axis_synapse(node, spikes)
        got = _run_parts(parts, node, _on_grid(spikes, grid), grid)
        assert torch.equal(got.reshape(want.shape), want), node.name
        x = torch.randn(2, *shape, dtype=torch.float64)
        assert torch.allclose(_run_parts(parts, node, _on_grid(x, grid), grid).reshape(want.shape[0] - 1, -1),
                              kernels.axis_synapse(node, x).reshape(2, -1), rtol=1e-12, atol=1e-12)
    assert kinds == {"gather", "pool_sum", "mix", "scale", "pool_broadcast"}


def test_structure_arrays_have_a_size_limit(model):
    node = ir.AxisSynapse("big", "m", in_axes=("h", "c", "j"), out_axes=("h", "c", "j", "i"),
                          sizes={"h": 8, "c": 64, "i": 196, "j": 196})
    with pytest.raises(structured.StructureTooLarge, match=r"big \(AxisSynapse from m\).*above the limit"):
        structured.synapse_parts(node, (14, 14))


def test_identical_weights_are_shared(exported):
    g, _ = exported["kv_first"]
    ng = nir_io.to_nir(g)
    a = ng.nodes["block.0.attn.product.kv_first.q_expand"].weight
    b = ng.nodes["block.1.attn.product.kv_first.q_expand"].weight
    assert a is b and a is ng.nodes["block.0.attn.product.kv_first.and.from_k"].weight
    outs = [f"block.0.attn.product.kv_first.bit{i}.out" for i in range(5)]
    o = [ng.nodes.get(f"{n}.mix", ng.nodes[n]).weight for n in outs]  # bit3's weight is 1: no Scale
    assert all(w is o[0] for w in o)  # the bit weights are Scale nodes, the 0/1 structure is one array
    t = [ng.nodes[f"block.{i}.attn.product.kv_first.and"].threshold for i in (0, 1)]
    assert t[0] is t[1] and t[0].strides == (0, 0, 0)  # constant neuron parameters: broadcast views
    # the folded BatchNorm weights are the IR's own arrays, not copies
    assert np.shares_memory(ng.nodes["block.0.attn.q_linear"].weight, g.nodes["block.0.attn.q_linear"].weight)


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

    monkeypatch.setattr(h5_writer, "write_graph", boom)
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
    old = tmp_path / "old.nir"  # format version 1 (dt = 1, grouped Conv1d): refused with a hint
    old.write_bytes(good.read_bytes())
    with h5py.File(old, "r+") as f:
        del f["node/metadata/format_version"]
        f["node/metadata/format_version"] = 1
    with pytest.raises(nir_io.NIRReadError, match="version 1.*older spk-convert"):
        nir_io.read_nir(old)


@pytest.mark.parametrize("dataset, field", [
    ("block.0.attn.product.kv_first.count.pool_sum", None),
    ("block.0.attn.product.kv_first.q_expand/weight", "weight"),
    ("block.0.attn.attn_lif/v_threshold", "v_threshold"),
    ("block.1.attn.product.kv_first.bit2.out/scale", "scale"),
])
def test_tampered_files_are_detected(exported, tmp_path, dataset, field):
    _, path = exported["kv_first"]
    bad = tmp_path / "bad.nir"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "r+") as f:
        nodes = f["node/nodes"]
        if field is None:  # a node removed
            name = next(n for n in nodes if n.startswith("block.0.attn.product.kv_first.count"))
            del nodes[name]
        else:
            arr = nodes[dataset][()]
            arr.reshape(-1)[0] += 1
            del nodes[dataset]
            nodes[dataset] = arr
    with pytest.raises(nir_io.NIRReadError, match=field or "node|edge"):
        nir_io.read_nir(bad)


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
    """Every link (a hard-linked dataset under each of its names)."""
    out = {}

    def walk(group, prefix):
        for k, obj in group.items():
            name = prefix + k
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.compression, obj[()])
            else:
                out[name] = "group"
                walk(obj, name + "/")

    with h5py.File(path) as f:
        walk(f, "")
    return out


def test_compact_writer_holds_what_nir_write_writes(exported, tmp_path):
    """h5_writer writes nir.write's layout: the same groups and datasets with the same dtypes and values (constants
    as fill values, shared arrays as hard links, which HDF5 readers return as ordinary datasets)."""
    g, path = exported["qk_first"]
    plain = tmp_path / "plain.nir"
    nir.write(plain, nir_io.to_nir(g, model_info={"preset": "digits-2-64"}), compression="gzip")
    a, b = _h5_items(path), _h5_items(plain)
    assert a.keys() == b.keys()
    for k in a:
        if a[k] == "group":
            assert b[k] == "group"
            continue
        assert a[k][0] == b[k][0], k
        assert np.array_equal(a[k][2], b[k][2]), k
    assert path.stat().st_size < plain.stat().st_size
