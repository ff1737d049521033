"""The literal NIR executor of tests/nir_spec.py: each node type's equation against hand-computed numbers, and the
exported trained digits model run under NIR's own semantics against the PyTorch model and the project's simulator."""
import copy

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .nir_spec import run_nir


def arr(*v):
    return np.array(v, dtype=np.float64)


def chain(in_shape, *nodes, dt=None):
    """Input -> nodes... -> Output, named input, n0, n1, ..., output (no NIR type inference)."""
    names = ["input"] + [f"n{i}" for i in range(len(nodes))] + ["output"]
    all_nodes = [nir.Input(input_type=np.array(in_shape)), *nodes, nir.Output(output_type=None)]
    return nir.NIRGraph(nodes=dict(zip(names, all_nodes)), edges=list(zip(names, names[1:])),
                        metadata={} if dt is None else {"dt": dt}, type_check=False)


def out_per_step(graph, x, steps, node="output", per_step=False):
    """The recorded output of `node` of the first sample, [steps, *shape], as a numpy array."""
    return run_nir(graph, torch.as_tensor(x)[None], steps, per_step).records[node][:, 0].numpy()


def lif(tau, thr, r=1.0, v_leak=0.0, v_reset=0.0, n=1):
    full = lambda v: np.full(n, v, dtype=np.float64)  # noqa: E731
    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(v_leak), v_threshold=full(thr), v_reset=full(v_reset))


# ------------------------------------------------------------------------------------------------ neurons
def test_lif_tau_two_dt_at_dt_1e_4():
    """tau = 2 dt: v <- v + 0.5 ((0 - v) + I). I = 1.5: v = 0.75, 1.125 (> 1: spike, v = 0), 0.75, 1.125, ...
    I = 1.0: v = 0.5, 0.75, 0.875, ... approaches 1 from below and never fires."""
    g = chain([2], lif(2e-4, 1.0, n=2), dt=1e-4)
    s = out_per_step(g, arr(1.5, 1.0), 6)
    assert s[:, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert s[:, 1].tolist() == [0] * 6


def test_lif_leak_resistance_and_reset():
    """dt/tau = 1/4, r = 2, v_leak = 0.5, v_reset = -1, I = 1: v = 0.625, 1.09375 (spike, v = -1), -0.125, 0.53125,
    1.0234375 (spike)."""
    g = chain([1], lif(4.0, 1.0, r=2.0, v_leak=0.5, v_reset=-1.0))
    assert out_per_step(g, arr(1.0), 5)[:, 0].tolist() == [0, 1, 0, 0, 1]


def test_lif_tie_at_threshold_does_not_fire():
    """tau = dt: v <- I. I = 1 = v_threshold sits exactly on the threshold every step: NIR's v > v_thr never fires."""
    g = chain([2], lif(1.0, 1.0, n=2))
    s = out_per_step(g, arr(1.0, 1.25), 4)
    assert s[:, 0].tolist() == [0] * 4 and s[:, 1].tolist() == [1] * 4


def test_lif_and_li_follow_the_float64_euler_step_exactly():
    """v <- v + (dt / tau) * ((v_leak - v) + r * I), dt / tau in float64, evaluated in this order (bit for bit)."""
    dt, tau, r, leak, thr = 1e-4, 3e-4, 1.3, 0.1, 0.7
    x = np.random.default_rng(0).uniform(-0.5, 1.5, size=(12, 3))
    li = nir.LI(tau=np.full(3, tau), r=np.full(3, r), v_leak=np.full(3, leak))
    lif_node = lif(tau, thr, r=r, v_leak=leak, n=3)
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "li": li, "lif": lif_node},
                     edges=[("input", "li"), ("input", "lif")], metadata={"dt": dt}, type_check=False)
    res = run_nir(g, torch.as_tensor(x)[None], 12, per_step_input=True)
    k = np.float64(dt) / np.float64(tau)
    v_li, v_lif = np.zeros(3), np.zeros(3)
    for t in range(12):
        v_li = v_li + k * ((leak - v_li) + r * x[t])
        v_lif = v_lif + k * ((leak - v_lif) + r * x[t])
        spikes = v_lif > thr
        v_lif = np.where(spikes, 0.0, v_lif)
        assert res.records["li"][t, 0].numpy().tolist() == v_li.tolist()
        assert res.records["lif"][t, 0].numpy().tolist() == spikes.astype(float).tolist()


def test_threshold_is_strict_and_stateless():
    g = chain([3], nir.Threshold(threshold=arr(0.5, 0.5, 0.5)))
    s = out_per_step(g, arr(0.5, 0.5 + 1e-12, 0.25), 3)
    assert s.tolist() == [[0, 1, 0]] * 3


def test_integrator_and_if():
    """I: v <- v + dt r I (dt = 0.5, r = 2, I = 3: 3, 6, 9). IF (dt = 1, v_thr = 1, I = 0.5): v = 0.5, 1.0 (a tie:
    no spike), 1.5 (spike, v = 0), 0.5, 1.0, 1.5 (spike)."""
    g = chain([1], nir.I(r=arr(2.0)), dt=0.5)
    assert out_per_step(g, arr(3.0), 3)[:, 0].tolist() == [3, 6, 9]
    g = chain([1], nir.IF(r=arr(1.0), v_threshold=arr(1.0)))
    assert out_per_step(g, arr(0.5), 6)[:, 0].tolist() == [0, 0, 1, 0, 0, 1]


def test_li_and_cuba_neurons():
    """LI (dt/tau = 1/2, I = 1): v = 0.5, 0.75, 0.875. Cuba (dt/tau_syn = dt/tau_mem = 1/2, S = 1), forward Euler
    from the state at the start of each step: I = 0.5, 0.75, 0.875, ..., v = 0, 0.25, 0.5, 0.6875; CubaLIF with
    v_thr = 0.4 fires at v = 0.5 (reset to 0), then at v = 0 + 0.5 (0 + 0.875) = 0.4375."""
    g = chain([1], nir.LI(tau=arr(2.0), r=arr(1.0), v_leak=arr(0.0)))
    assert out_per_step(g, arr(1.0), 3)[:, 0].tolist() == [0.5, 0.75, 0.875]
    kw = dict(tau_syn=arr(2.0), tau_mem=arr(2.0), r=arr(1.0), v_leak=arr(0.0))
    assert out_per_step(chain([1], nir.CubaLI(**kw)), arr(1.0), 4)[:, 0].tolist() == [0, 0.25, 0.5, 0.6875]
    g = chain([1], nir.CubaLIF(**kw, v_threshold=arr(0.4)))
    assert out_per_step(g, arr(1.0), 4)[:, 0].tolist() == [0, 0, 1, 1]


# ------------------------------------------------------------------------------------------------ graph, synapses
def test_fan_in_is_summed_and_outputs_are_the_last_step():
    """input -> a (x2), input -> b (x-0.5), a + b -> c (x1) and a + b -> output: 3 -> 6 - 1.5 = 4.5."""
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([1])), "a": nir.Scale(arr(2.0)), "b": nir.Scale(arr(-0.5)),
                            "c": nir.Scale(arr(1.0)), "output": nir.Output(None)},
                     edges=[("input", "a"), ("input", "b"), ("a", "c"), ("b", "c"), ("a", "output"),
                            ("b", "output")], metadata={}, type_check=False)
    frames = torch.tensor([[[3.0], [1.0]]], dtype=torch.float64)  # [B=1, T=2, 1]
    res = run_nir(g, frames, 2, per_step_input=True, record=["c"])
    assert set(res.records) == {"c"} and res.records["c"].shape == (2, 1, 1)
    assert res.records["c"][:, 0, 0].tolist() == [4.5, 1.5]
    assert res.outputs["output"].tolist() == [[1.5]]


def test_delay_in_steps_of_dt():
    """delay (0.3, 0.1, 0) with dt = 0.1: 3, 1 and 0 steps (0.3 / 0.1 is 2.9999999999999996 in float64)."""
    g = chain([3], nir.Delay(delay=arr(0.3, 0.1, 0.0)), dt=0.1)
    x = np.arange(1.0, 6.0)[:, None].repeat(3, 1)  # frame t holds t + 1
    y = out_per_step(g, x, 5, per_step=True)
    assert y.T.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]
    with pytest.raises(ValueError, match="whole"):
        run_nir(chain([1], nir.Delay(delay=arr(0.15)), dt=0.1), torch.zeros(1, 1), 2, False)


def test_sum_and_avg_pool_with_padding():
    """x = 1..9 (3x3), kernel 2, stride 2, padding 1: windows {1}, {2, 3}, {4, 7}, {5, 6, 8, 9}."""
    x = np.arange(1.0, 10.0).reshape(1, 3, 3)
    pool = dict(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([1, 1]))
    assert out_per_step(chain([1, 3, 3], nir.SumPool2d(**pool)), x, 1)[0].tolist() == [[[1, 5], [11, 28]]]
    assert out_per_step(chain([1, 3, 3], nir.AvgPool2d(**pool)), x, 1)[0].tolist() == [[[0.25, 1.25], [2.75, 7]]]


def test_flatten_dims_exclude_the_batch():
    x = np.arange(24.0).reshape(2, 3, 4)
    for start, end, shape in ((1, 2, (2, 12)), (0, -1, (24,)), (0, 1, (6, 4))):
        node = nir.Flatten(input_type={"input": np.array([2, 3, 4])}, start_dim=start, end_dim=end)
        y = run_nir(chain([2, 3, 4], node), np.stack([x, x + 100]), 1, False).outputs["output"].numpy()
        assert y.shape == (2, *shape) and y.reshape(2, -1).tolist() == [x.reshape(-1).tolist(),
                                                                          (x + 100).reshape(-1).tolist()]


def test_grouped_conv1d_by_hand():
    """groups 2, kernel 2, padding 1; out0 = c0[t-1] + c1[t] + 0.5, out1 = 2 c2[t] + c3[t-1] - 1 (t = 0..3)."""
    x = np.array([[1, 2, 3], [10, 20, 30], [100, 200, 300], [1000, 2000, 3000]], dtype=np.float64)
    w = np.array([[[1, 0], [0, 1]], [[0, 2], [1, 0]]], dtype=np.float64)  # [C_out=2, C_in/groups=2, k=2]
    node = nir.Conv1d(input_shape=3, weight=w, stride=1, padding=1, dilation=1, groups=2, bias=arr(0.5, -1.0))
    y = out_per_step(chain([4, 3], node), x, 1)[0]
    assert y.tolist() == [[10.5, 21.5, 32.5, 3.5], [199, 1399, 2599, 2999]]


@pytest.mark.parametrize("n,groups,stride,padding,dilation", [
    (1, 1, 2, 1, 1), (1, 3, 1, "same", 2), (1, 3, 1, "valid", 1), (2, 1, (2, 1), (1, 0), 1), (2, 3, 1, "same", 2),
    (2, 3, 2, 2, (1, 2))])
def test_conv_is_torch_cross_correlation(n, groups, stride, padding, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, *(9, 8)[:n], generator=g, dtype=torch.float64)
    w = torch.randn(9, 6 // groups, *(3, 2)[:n], generator=g, dtype=torch.float64)
    b = torch.randn(9, generator=g, dtype=torch.float64)
    cls, conv = (nir.Conv1d, F.conv1d) if n == 1 else (nir.Conv2d, F.conv2d)
    node = cls(input_shape=None, weight=w.numpy(), stride=stride, padding=padding, dilation=dilation, groups=groups,
               bias=b.numpy())
    y = run_nir(chain(list(x.shape[1:]), node), x, 1, False).outputs["output"]
    torch.testing.assert_close(y, conv(x, w, b, stride, padding, dilation, groups), rtol=0, atol=1e-12)


def test_scale_linear_affine():
    w, b, x = np.array([[1.0, 2.0], [3.0, 4.0]]), arr(0.5, -0.5), arr(1.0, -1.0)
    assert out_per_step(chain([2], nir.Scale(arr(2.0, 3.0))), x, 1)[0].tolist() == [2, -3]
    assert out_per_step(chain([2], nir.Linear(weight=w)), x, 1)[0].tolist() == [-1, -1]
    assert out_per_step(chain([2], nir.Affine(weight=w, bias=b)), x, 1)[0].tolist() == [-0.5, -1.5]


def test_refusals():
    from nir.ir.graph import Identity  # a NIR 1.0.8 class outside the primitives (not serialisable)

    with pytest.raises(TypeError, match="Identity"):
        run_nir(chain([2], Identity(input_type={"input": np.array([2])})), torch.zeros(1, 2), 1, False)
    with pytest.raises(NotImplementedError, match="nested"):
        run_nir(chain([2], chain([2], nir.Scale(arr(1.0, 1.0)))), torch.zeros(1, 2), 1, False)
    cyc = chain([1], nir.Scale(arr(1.0)), nir.Scale(arr(1.0)))
    cyc.edges.append(("n1", "n0"))
    with pytest.raises(ValueError, match="cycle"):
        run_nir(cyc, torch.zeros(1, 1), 1, False)
    with pytest.raises(ValueError, match="shape"):
        run_nir(chain([2], nir.Scale(arr(1.0, 1.0))), torch.zeros(1, 3), 1, False)


# ------------------------------------------------------------------------------------------------ the exported model
@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
def test_exported_trained_model_runs_spike_for_spike_under_nir_semantics(trained_model, tmp_path, order):
    """The trained digits model, lowered and written by hw_backends.nir.nir_io, read back with stock nir.read (NIR's
    own type check) and run by the literal executor: every spiking population equals the project's float simulator
    and (LIF modules) the float64 PyTorch reference, and the predictions equal the model's. Needs a file format in
    which NIR's strict v > v_threshold reproduces the model's v >= v_threshold (format 2 stores the largest float32
    below each threshold); with thresholds stored unchanged (format 1) exact ties, e.g. in block.0.attn.attn_lif,
    differ. Mismatches are reported per population."""
    from analysis.reference import record_reference
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.nir import nir_io
    from sim.engine import Engine
    from spikformer.data import load_dataset

    model = copy.deepcopy(trained_model).double()  # the fixture is shared: no in-place dtype change
    cfg = model.config
    images = load_dataset("digits", cfg.img_size, cfg.in_channels)[2][:16].double()
    graph = lower(spikformer_to_ir(model), ssa_order=order)
    path = tmp_path / "model.nir"
    nir_io.write_nir(path, graph, model_info={"preset": "digits-2-64"})
    ng = nir.read(str(path))  # stock NIR 1.0.8, type_check=True
    steps = int(ng.metadata["T"])
    res = run_nir(ng, images, steps, per_step_input=bool(ng.metadata.get("input_per_step", False)))
    spiking = [n for n, node in ng.nodes.items() if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold))]
    sim = Engine(graph, "float").run(images, record=[n for n in spiking if n in graph.nodes])
    logits, ref = record_reference(model, images)

    missing = [n for n in spiking if n not in sim.records]
    assert not missing, f"NIR populations without a simulator population of the same name: {missing}"
    bad = {}
    for n in spiking:
        src = ng.nodes[n].metadata.get("source")
        others = {"sim": sim.records[n], "torch": ref.get(src) if isinstance(ng.nodes[n], nir.LIF) else None}
        for what, other in others.items():
            if other is not None:
                assert res.records[n].numel() == other.numel(), (n, what, res.records[n].shape, other.shape)
                k = int((res.records[n].reshape(other.shape) != other.to(torch.float64)).sum())
                if k:
                    bad[f"{n} vs {what}"] = k
    (out,) = res.outputs.values()
    out = out.reshape(len(images), -1)
    pred_diff = int((out.argmax(1) != logits.argmax(1)).sum())
    logit_diff = float((out - logits).abs().max()) if out.shape == logits.shape else float("nan")
    assert not bad and pred_diff == 0, (
        f"NIR semantics differ from the model ({order}): {pred_diff}/{len(images)} predictions (max |output - "
        f"logits| {logit_diff:.3g}); spike mismatches per population: {bad}")


@pytest.mark.parametrize("order", ["kv_first", "qk_first"])
def test_exported_event_model_runs_spike_for_spike_under_nir_semantics(tmp_path, order):
    """The event-camera preset (official DVS layout) on the built-in event digits (real digits rendered as ON/OFF
    events, one frame of counts per step): the exported file under the literal NIR executor equals the float64
    PyTorch model in every LIF population and in the predictions. Random weights with the attention driven (a
    silent attention would test nothing)."""
    from analysis.reference import record_reference
    from convert.frontend import spikformer_to_ir
    from convert.passes import lower
    from hw_backends.nir import nir_io
    from spikformer.data import load_dataset_with_info
    from spikformer.synthetic import randomized_model

    model = randomized_model("event-digits-2-64", seed=1, attn_drive=0.5).double()
    cfg = model.config
    (_, _, x_te, _), _ = load_dataset_with_info("event-digits", cfg.img_size, cfg.in_channels, seed=0, T=cfg.T)
    frames = x_te[:12].double()  # [B, T, 2, H, W]
    graph = lower(spikformer_to_ir(model), ssa_order=order)
    path = tmp_path / "events.nir"
    nir_io.write_nir(path, graph)
    ng = nir.read(str(path))
    assert "one frame per time step" in ng.metadata["input_convention"]
    res = run_nir(ng, frames, int(ng.metadata["T"]), per_step_input=True)
    logits, ref = record_reference(model, frames)
    bad = {}
    for n, node in ng.nodes.items():
        other = ref.get(node.metadata.get("source")) if isinstance(node, nir.LIF) else None
        if other is not None:
            k = int((res.records[n].reshape(other.shape) != other).sum())
            if k:
                bad[n] = k
    out = res.outputs["output"].reshape(len(frames), -1)
    assert not bad and torch.equal(out.argmax(1), logits.argmax(1)), (order, bad)
    assert ref["block.0.attn.attn_lif"].sum() > 0 and len([n for n in ng.nodes if n in ref]) >= 10
