"""hw_backends.nir.nirtorch_map: NIR graphs run in PyTorch through nirtorch 2.6 with NIR's semantics; per node type
on tiny hand-built graphs (hand-computed numbers), and our exported Spikformer files spike for spike against the
PyTorch model."""
import copy

import nir
import nirtorch
import numpy as np
import pytest
import torch

from hw_backends.nir.nirtorch_map import node_map, node_map_for, run

DTYPES = (torch.float32, torch.float64)


def _graph(nodes: dict, edges: list, dt=None, type_check=True) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={} if dt is None else {"dt": dt}, type_check=type_check)


def _chain(input_shape, *nodes, dt=None) -> nir.NIRGraph:
    names = ["input"] + [f"n{i}" for i in range(len(nodes))] + ["output"]
    all_nodes = {"input": nir.Input(input_type=np.array(input_shape)), **dict(zip(names[1:-1], nodes)),
                 "output": nir.Output(output_type=np.array(input_shape))}  # Output types are not checked here
    return _graph(all_nodes, list(zip(names, names[1:])), dt, type_check=False)


def _run(graph, frames, steps, dtype, per_step=False, **kw):
    module = nirtorch.nir_to_torch(graph, node_map_for(graph), dtype=dtype)
    return run(module, torch.as_tensor(frames, dtype=dtype), steps, per_step=per_step, **kw)


def _f(*a):
    return np.array(a, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ node types
@pytest.mark.parametrize("dtype", DTYPES)
def test_lif_forward_euler_with_graph_dt_and_strict_threshold(dtype):
    # dt / tau = 1e-4 / 2e-4 = 0.5; neuron 1 reaches exactly v_threshold (a tie: no spike); neuron 3 has
    # r = 2, v_leak = -1, v_reset = -0.5.
    lif = nir.LIF(tau=np.full(4, 2e-4), r=_f(1, 1, 1, 2), v_leak=_f(0, 0, 0, -1), v_threshold=np.ones(4),
                  v_reset=_f(0, 0, 0, -0.5))
    g = _chain([4], lif, dt=1e-4)
    out = _run(g, [[1.0, 2.0, 4.0, 2.0]], 3, dtype, record=["n0"])
    # v: [.5, 1, 2, 1.5] -> s [0,0,1,1]; v [.5, 1, 0, -.5] -> [.75, 1.5, 2, 1.25] -> s [0,1,1,1];
    # v [.75, 0, 0, -.5] -> [.875, 1, 2, 1.25] -> s [0,0,1,1]
    want = torch.tensor([[[0, 0, 1, 1]], [[0, 1, 1, 1]], [[0, 0, 1, 1]]], dtype=dtype)
    assert torch.equal(out["output"], want)
    assert torch.equal(out["n0"], want)
    # the same file read with dt = 1 would be a different network (dt / tau = 5000): the map must use the graph's dt
    wrong = run(nirtorch.nir_to_torch(g, node_map(1.0), dtype=dtype), torch.tensor([[1.0, 2.0, 4.0, 2.0]]), 3)
    assert not torch.equal(wrong["output"], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_is_strict_and_stateless(dtype):
    g = _chain([3], nir.Threshold(threshold=_f(0.5, 0.5, 1.5)))
    out = _run(g, [[0.5, 0.6, 1.5]], 2, dtype)["output"]
    assert torch.equal(out, torch.tensor([[[0, 1, 0]], [[0, 1, 0]]], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sumpool2d_with_padding(dtype):
    x = torch.arange(1, 17, dtype=torch.float64).reshape(1, 1, 4, 4)  # x[r, c] = 4 r + c + 1
    g = _chain([1, 4, 4], nir.SumPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]),
                                        padding=np.array([1, 1])))
    out = _run(g, x, 1, dtype)["output"][0]
    assert torch.equal(out, torch.tensor([[[[14, 30], [57, 99]]]], dtype=dtype))
    # padding larger than half the kernel (torch's pooling layers refuse it)
    g = _chain([1, 2, 2], nir.SumPool2d(kernel_size=np.array([1, 1]), stride=np.array([1, 1]),
                                        padding=np.array([1, 1])))
    out = _run(g, [[[[1.0, 2.0], [3.0, 4.0]]]], 1, dtype)["output"][0]
    assert torch.equal(out, torch.nn.functional.pad(torch.tensor([[[[1, 2], [3, 4]]]], dtype=dtype), (1, 1, 1, 1)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_delay_in_steps_of_dt(dtype):
    # delays 0, 2 and 3 steps of dt = 1e-4 (3e-4 / 1e-4 = 2.9999999999999996 in float64: rounded)
    g = _chain([3], nir.Delay(delay=_f(0, 2e-4, 3e-4)), dt=1e-4)
    t = torch.arange(1, 6, dtype=torch.float64)
    frames = (t[:, None] * torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64))[None]  # [B=1, T=5, 3]
    out = _run(g, frames, 5, dtype, per_step=True)["output"][:, 0]
    want = torch.tensor([[1, 0, 0], [2, 0, 0], [3, 10, 0], [4, 20, 100], [5, 30, 200]], dtype=dtype)
    assert torch.equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grouped_conv1d(dtype):
    w = np.array([[[1, 2], [3, 4]], [[-1, 0], [0, 10]]], dtype=np.float32)  # [C_out 2, C_in/groups 2, k 2]
    conv = nir.Conv1d(input_shape=2, weight=w, stride=1, padding=1, dilation=1, groups=2,
                      bias=np.array([0.5, -1], dtype=np.float32))
    # stock NIR 1.0.8 types a grouped conv with weight.shape[1] input channels: build without the type check
    nodes = {"input": nir.Input(input_type=np.array([4, 2])), "conv": conv,
             "output": nir.Output(output_type=np.array([2, 3]))}
    g = _graph(nodes, [("input", "conv"), ("conv", "output")], type_check=False)
    x = [[[1.0, 2.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]]
    out = _run(g, x, 1, dtype)["output"][0]
    assert torch.equal(out, torch.tensor([[[2.5, 9.5, 5.5], [19, -2, -2]]], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_affine_linear_scale_integrator_and_summed_edges(dtype):
    # input (2, 2) -> Flatten(0, 1) (unbatched dims) -> Affine -> Scale -> I, plus Flatten -> Linear -> I (summed);
    # dt = 0.5, I's r = (1, 2)
    nodes = {
        "input": nir.Input(input_type=np.array([2, 2])),
        "flat": nir.Flatten(input_type={"input": np.array([2, 2])}, start_dim=0, end_dim=1),
        "aff": nir.Affine(weight=_f([1, 0, 0, 0], [0, 1, 1, 1]), bias=_f(1, -1)),
        "scale": nir.Scale(scale=_f(2, 0.5)),
        "lin": nir.Linear(weight=_f([0, 0, 0, 1], [1, 0, 0, 0])),
        "int": nir.I(r=_f(1, 2)),
        "output": nir.Output(output_type=np.array([2])),
    }
    edges = [("input", "flat"), ("flat", "aff"), ("aff", "scale"), ("scale", "int"), ("flat", "lin"),
             ("lin", "int"), ("int", "output")]
    g = _graph(nodes, edges, dt=0.5)
    out = _run(g, [[[1.0, 2.0], [3.0, 4.0]]], 2, dtype, record=["flat", "aff"])
    # flat [1,2,3,4]; aff [2, 8]; scale [4, 4]; lin [4, 1]; I input [8, 5]; v += 0.5 * r * I
    assert torch.equal(out["flat"][0], torch.tensor([[1, 2, 3, 4]], dtype=dtype))
    assert torch.equal(out["aff"][0], torch.tensor([[2, 8]], dtype=dtype))
    assert torch.equal(out["output"], torch.tensor([[[4, 5]], [[8, 10]]], dtype=dtype))


# ------------------------------------------------------------------------------------------------ Spikformer files
def _meta(node, key):
    v = (node.metadata or {}).get(key)
    return v.decode() if isinstance(v, bytes) else v


@pytest.fixture(scope="module")
def digits_reference(trained_model):
    """(float64 copy of the trained model, 16 digits test images, logits, per-module spike records)."""
    from analysis.reference import record_reference
    from spikformer.data import load_dataset

    model = copy.deepcopy(trained_model).double().eval()  # float64 on both sides: only the semantics can differ
    cfg = model.config
    images = load_dataset("digits", cfg.img_size, cfg.in_channels)[2][:16].double()
    logits, recs = record_reference(model, images)
    return model, images, logits, recs


@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
def test_exported_spikformer_runs_spike_for_spike_in_nirtorch(digits_reference, order, tmp_path):
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.nir import nir_io

    model, images, logits, recs = digits_reference
    path = tmp_path / f"digits_{order}.nir"
    nir_io.write_nir(path, lower(spikformer_to_ir(model), ssa_order=order), model_info={})
    ng = nir.read(str(path))  # stock reader, type-checked (format 2 has no grouped convolutions)
    module = nirtorch.nir_to_torch(ng, node_map_for(ng), dtype=torch.float64)

    # nodes compared: every LIF population, and any other node standing for a recorded module under its own name
    # (the max-pool Threshold nodes); the file may store token populations (C, H, W) where records are (C, N)
    compare = {name: _meta(node, "source") for name, node in ng.nodes.items()
               if _meta(node, "source") in recs and (isinstance(node, nir.LIF) or name == _meta(node, "source"))}
    lif_modules = {k for k in recs if "maxpool" not in k}
    assert lif_modules <= set(compare.values()), f"no NIR node for {lif_modules - set(compare.values())}"

    md = ng.metadata
    per_step = "input_convention" in md  # event input: one frame per step, [B, T, C, H, W]
    res = run(module, images, int(md["T"]), per_step=per_step, record=list(compare))

    counts = {}
    for name, src in compare.items():
        got, ref = res[name], recs[src]
        assert got.numel() == ref.numel(), f"{name}: {tuple(got.shape)} vs reference {src} {tuple(ref.shape)}"
        counts[name] = int((got.reshape(ref.shape) != ref).sum())
    preds = res["output"][-1].reshape(len(images), -1).argmax(1)
    counts["(predictions)"] = int((preds != logits.argmax(1)).sum())
    bad = {k: v for k, v in counts.items() if v}
    assert not bad, f"{order}: mismatches per node (spikes, or predictions of {len(images)} images): {bad}"
