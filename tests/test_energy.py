"""Activity counting, energy arithmetic and the spk-report CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from convert import ir
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from analysis import activity as A
from analysis.energy import PUBLISHED, conventions, dense_flops, event_energy, flops_summary, preset_flops_table
from analysis.energy_models import CMOS45, LOIHI, EnergyModelError, load_energy_model
from analysis.reference import record_reference
from spikformer.presets import PRESETS

from .conftest import assert_one_line_error
from .helpers_models import randomized_model


# ------------------------------------------------------------------------------------------------ fan-out

def _brute_conv2d_fanout(w, H, W, stride, pad, groups):
    """Connections per input position by walking every output position and kernel tap."""
    co, cig, kh, kw = w.shape
    ci = cig * groups
    Ho = (H + 2 * pad[0] - kh) // stride[0] + 1
    Wo = (W + 2 * pad[1] - kw) // stride[1] + 1
    struct = np.zeros((ci, H, W), dtype=np.int64)
    eff = np.zeros((ci, H, W), dtype=np.int64)
    per_group = co // groups
    for o in range(co):
        g = o // per_group
        for y in range(Ho):
            for x in range(Wo):
                for c in range(cig):
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = y * stride[0] - pad[0] + ky, x * stride[1] - pad[1] + kx
                            if 0 <= iy < H and 0 <= ix < W:
                                struct[g * cig + c, iy, ix] += 1
                                eff[g * cig + c, iy, ix] += int(w[o, c, ky, kx] != 0)
    return struct, eff, (co, Ho, Wo)


@pytest.mark.parametrize("H,W,k,stride,pad,groups", [(7, 6, 3, (2, 2), (1, 1), 1), (5, 8, 3, (1, 2), (0, 1), 2),
                                                     (9, 9, 2, (3, 3), (0, 0), 1), (4, 4, 3, (1, 1), (1, 1), 4)])
def test_conv2d_fanout_exact_at_borders_and_stride(H, W, k, stride, pad, groups):
    rng = np.random.default_rng(H * 100 + W)
    ci, co = 4, 4
    w = rng.normal(size=(co, ci // groups, k, k))
    w[rng.random(w.shape) < 0.3] = 0.0  # some zero weights: effective < structural
    struct, eff, out_shape = _brute_conv2d_fanout(w, H, W, stride, pad, groups)
    node = ir.Conv2d("c", weight=w, stride=stride, padding=pad, groups=groups)
    assert node.out_shape({"in": (ci, H, W)}) == out_shape
    s, e = A.fanout_maps(node, (ci, H, W), out_shape)
    assert np.array_equal(s.numpy().astype(np.int64), struct)
    assert np.array_equal(e.numpy().astype(np.int64), eff)
    assert (struct[:, 0, 0] <= struct.max()).all() and struct.min() < struct.max()  # borders really differ

    # events on a random binary input: count = sum over events of the fan-out = ops of a 0/1 conv
    x = torch.from_numpy((rng.random((3, 2, ci, H, W)) < 0.4).astype(np.float64))  # [S, B, C, H, W]
    g = ir.Graph(metadata={"T": 3})
    g.add(ir.Input("in", shape=(ci, H, W)))
    g.add(node, "in")
    g.add(ir.Threshold("th", threshold=0.5), "c")
    g.add(ir.Output("out"), "th")
    y = _conv(x, w, stride, pad, groups)
    act = A.count_activity(g, {"in": x, "c": y, "th": (y >= 0.5).double()})
    sc = act.synapses["c"]
    events_per_position = (x.numpy() != 0).astype(np.int64).sum((0, 1))
    brute = int((events_per_position * struct).sum())
    brute_eff = int((events_per_position * eff).sum())
    # independent: a conv of the 0/1 input with the 0/1 weight mask counts (non-zero input, non-zero weight) pairs
    pairs = _conv(x, (w != 0).astype(np.float64), stride, pad, groups).sum().item()
    assert sc.synaptic_events == brute
    assert sc.effective_ops == brute_eff == round(pairs)
    assert sc.ac_ops == brute_eff and sc.mac_ops == 0  # 0/1 input: ACs
    assert sc.dense_ops == struct.sum() * 3 * 2


def _conv(x, w, stride, pad, groups):
    S, B = x.shape[:2]
    y = torch.nn.functional.conv2d(x.reshape(S * B, *x.shape[2:]), torch.as_tensor(w, dtype=torch.float64),
                                   None, stride, pad, 1, groups)
    return y.reshape(S, B, *y.shape[1:])


def test_conv1d_and_sumpool_fanout_brute_force():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 3, 4))
    w[0, 1, 2] = 0.0
    node = ir.Conv1d("c", weight=w, stride=2, padding=1)
    L = 9
    out = node.out_shape({"in": (3, L)})
    s, e = A.fanout_maps(node, (3, L), out)
    bs = np.zeros((3, L), dtype=np.int64)
    be = np.zeros((3, L), dtype=np.int64)
    for o in range(5):
        for y in range(out[1]):
            for c in range(3):
                for kk in range(4):
                    i = y * 2 - 1 + kk
                    if 0 <= i < L:
                        bs[c, i] += 1
                        be[c, i] += int(w[o, c, kk] != 0)
    assert np.array_equal(s.numpy().astype(np.int64), bs) and np.array_equal(e.numpy().astype(np.int64), be)

    pool = ir.SumPool2d("p", kernel=(3, 3), stride=(2, 2), padding=(1, 1))
    out = pool.out_shape({"in": (2, 7, 7)})
    s, e = A.fanout_maps(pool, (2, 7, 7), out)
    brute = np.zeros((7, 7), dtype=np.int64)
    for y in range(out[1]):
        for x in range(out[2]):
            for ky in range(3):
                for kx in range(3):
                    iy, ix = 2 * y - 1 + ky, 2 * x - 1 + kx
                    if 0 <= iy < 7 and 0 <= ix < 7:
                        brute[iy, ix] += 1
    assert np.array_equal(s[0].numpy().astype(np.int64), brute) and np.array_equal(s, e)
    assert brute[0, 0] == 1 and brute[1, 1] == 4 and brute[2, 2] == 1  # odd positions lie in two windows per axis

    ax = ir.AxisSynapse("a", in_axes=("h", "c", "j"), out_axes=("h", "c", "e", "j"),
                        sizes={"h": 2, "c": 3, "e": 5, "j": 4}, weight=1.0)
    s, e = A.fanout_maps(ax, (6, 4), (30, 4))
    assert ax.fan_out == 5 and bool((s == 5).all()) and bool((e == 5).all())


# ------------------------------------------------------------------------------------------------ sim vs reference

@pytest.fixture(scope="module")
def sim_and_ref():
    model = randomized_model("digits-2-64", seed=2).double()
    with torch.no_grad():  # positive BN bias so that layers fire and residual sums reach 2 and more
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.bias.uniform_(0.3, 1.0)
    torch.manual_seed(5)
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64) * 2
    g = lower(spikformer_to_ir(model))
    act_sim = A.activity_from_simulator(g, x)  # Engine(g).run(x, record="all")
    act_ref = A.activity_from_reference(model, g, x)  # record_reference(model, x) spikes
    return model, g, act_sim, act_ref


def test_counts_from_simulator_equal_counts_from_reference(sim_and_ref):
    model, g, sim, ref = sim_and_ref
    convs_and_linears = [s for s in sim.synapses.values() if s.node_type in ("Conv2d", "Conv1d")]
    assert len(convs_and_linears) == 5 + 6 * 2 + 1  # SPS convs + rpe, 6 linears per block, head
    for s in convs_and_linears:
        r = ref.synapses[s.name]
        assert s.to_dict() == r.to_dict(), s.name
        assert s.effective_ops > 0 or "proj_linear" in s.name
    # everything else too: the SSA decomposition is recomputed from the reference's q/k/v spikes
    assert {k: v.to_dict() for k, v in sim.synapses.items()} == {k: v.to_dict() for k, v in ref.synapses.items()}
    assert {k: v.to_dict() for k, v in sim.neurons.items()} == {k: v.to_dict() for k, v in ref.neurons.items()}
    # residual sums really hold integers > 1 and are counted per stream
    fc1 = sim.synapses["block.1.mlp.fc1_linear"]
    assert fc1.combined_kind == "integer" and len(fc1.streams) == 5
    assert all(st.kind in ("spikes", "none") for st in fc1.streams)
    assert fc1.ac_ops > fc1.combined_ops  # a value k is k ACs, NeuroBench's rule counts it once
    first = sim.synapses["patch_embed.proj_conv"]
    assert first.mac_ops > 0 and first.ac_ops == 0 and first.streams[0].kind == "analog"


def test_spikes_and_rates_match_reference_records(sim_and_ref):
    model, g, sim, _ = sim_and_ref
    torch.manual_seed(5)
    x = torch.rand(5, 1, 16, 16, dtype=torch.float64) * 2
    _, spikes = record_reference(model, x)
    for name, s in spikes.items():
        n = sim.neurons[name]
        assert n.spikes == int((s != 0).sum()), name
        assert math.isclose(n.firing_rate, float((s != 0).double().mean()), rel_tol=1e-12)
        assert n.updates == s[0, 0].numel() * model.T * 5


# ------------------------------------------------------------------------------------------------ energy arithmetic

def _hand_activity():
    """Two synapse groups and one neuron group with round numbers; 2 samples, 4 steps."""
    syn_a = A.SynapseCount("patch_embed.proj_conv", "patch_embed.proj_conv", "Conv2d", "first_conv", (1, 4, 4),
                           (2, 4, 4), 1, 100, 90,
                           streams=[A.StreamCount("input", "input", kind="analog", positions=16, events=40,
                                                  value_sum=20.0, synaptic_events=300, effective_ops=200)],
                           steps=4, samples=2, combined_kind="analog")
    syn_b = A.SynapseCount("x.conv", "x.conv", "Conv2d", "sps_conv", (2, 4, 4), (2, 4, 4), 1, 200, 200,
                           streams=[A.StreamCount("l1", "l1", kind="spikes", positions=32, events=10,
                                                  value_sum=10.0, synaptic_events=1000, effective_ops=1000)],
                           steps=4, samples=2, combined_kind="spikes")
    syn_c = A.SynapseCount("blk.attn.product.and.from_k", "blk.attn", "AxisSynapse", "ssa_decomposition", (4, 2),
                           (8, 2), 2, 16, 16,
                           streams=[A.StreamCount("k", "k", kind="spikes", positions=8, events=5, value_sum=5.0,
                                                  synaptic_events=40, effective_ops=40)],
                           steps=4, samples=2, combined_kind="spikes")
    neu = A.NeuronCount("l1", "l1", "LIF", "first_conv", (2, 4, 4), True, steps=4, samples=2, updates=256,
                        active_updates=100, spikes=10)
    neu_ssa = A.NeuronCount("blk.attn.product.and", "blk.attn", "Threshold", "ssa_decomposition", (8, 2), True,
                            steps=4, samples=2, updates=128, active_updates=6, spikes=2)
    return A.Activity({s.name: s for s in (syn_a, syn_b, syn_c)}, {n.name: n for n in (neu, neu_ssa)}, 2, 4,
                      ("blk.attn.product.",))


def test_event_energy_by_hand():
    act = _hand_activity()
    ev = event_energy(act, CMOS45)
    # per sample: (200 MACs * 4.6 + 1000 ACs * 0.9 + 40 ACs * 0.9) / 2
    assert ev["total"]["total_pj"] == pytest.approx((200 * 4.6 + 1040 * 0.9) / 2, rel=1e-12)
    assert ev["ssa_decomposition"]["total_pj"] == pytest.approx(40 * 0.9 / 2, rel=1e-12)
    assert ev["total"]["neuron_pj"] == 0 and ev["total"]["spike_pj"] == 0
    ev = event_energy(act, LOIHI)
    syn = 1240 * 23.6
    neurons = 100 * 81 + 156 * 52 + 6 * 81 + 122 * 52
    spikes = 12 * 1.7
    assert ev["total"]["synaptic_pj"] == pytest.approx(syn / 2, rel=1e-12)
    assert ev["total"]["neuron_pj"] == pytest.approx(neurons / 2, rel=1e-12)
    assert ev["total"]["spike_pj"] == pytest.approx(spikes / 2, rel=1e-12)
    assert ev["ssa_decomposition"]["total_pj"] == pytest.approx((40 * 23.6 + 6 * 81 + 122 * 52 + 2 * 1.7) / 2)
    assert ev["total"]["total_pj"] == pytest.approx(ev["excluding_ssa_decomposition"]["total_pj"] +
                                                    ev["ssa_decomposition"]["total_pj"], rel=1e-12)
    assert ev["by_category"]["first_conv"]["total_pj"] == pytest.approx((200 * 23.6 + 100 * 81 + 156 * 52 +
                                                                         10 * 1.7) / 2)


def test_dense_flops_digits_by_hand_and_imagenet_comparison():
    cfg = PRESETS["digits-2-64"]
    f = {e.layer: e.flops for e in dense_flops(cfg)}
    assert f["patch_embed.proj_conv"] == 16 * 16 * 8 * 1 * 9
    assert f["patch_embed.proj_conv3"] == 8 * 8 * 64 * 32 * 9  # after one max-pool
    assert f["patch_embed.rpe_conv"] == 4 * 4 * 64 * 64 * 9
    assert f["block.0.mlp.fc1_linear"] == 16 * 64 * 256
    assert f["block.1.attn.q@k^T"] == f["block.1.attn.attn@v"] == 16 * 16 * 64
    assert f["head"] == 640
    s = flops_summary(cfg)
    assert s["total"] == sum(f.values()) and s["total_times_T"] == 4 * s["total"]
    t = preset_flops_table()["presets"]
    for name, pub in PUBLISHED.items():
        row = t[name]
        # the published OPs exceed one dense pass but not T dense passes; E_pub - 0.9 pJ x OPs is the same
        assert row["total"] < pub["ops_g"] * 1e9 < row["total_times_T"]
        assert row["published_energy_minus_0.9pJ_x_ops_mj"] == pytest.approx(1.596, abs=0.001)
    assert t["imagenet-8-512"]["first_conv_times_T_gmac"] == pytest.approx(0.347, abs=0.001)
    assert t["imagenet-8-768"]["total"] == pytest.approx(18.98e9, rel=1e-3)


def test_conventions_arithmetic(sim_and_ref):
    model, g, act, _ = sim_and_ref
    cfg = model.config
    c = conventions(act, cfg, CMOS45)
    rows = {r["layer"]: r for r in c["rows"]}
    src = act.by_source()
    T = cfg.T
    first = rows["patch_embed.proj_conv"]
    assert first["paper_pj"] == pytest.approx(first["flops"] * 4.6)
    assert first["spikingformer_pj"] == pytest.approx(first["flops"] * T * 4.6)
    conv1 = rows["patch_embed.proj_conv1"]
    assert conv1["paper_pj"] == pytest.approx(src["patch_embed.proj_conv1"]["input_rate"] * T * conv1["flops"] * 0.9)
    assert conv1["spikingformer_pj"] == conv1["paper_pj"]  # binary input: same in both conventions
    fc1 = rows["block.1.mlp.fc1_linear"]  # integer residual input: dense MACs at every step
    assert fc1["spikingformer_op"] == "MAC" and fc1["spikingformer_pj"] == pytest.approx(fc1["flops"] * T * 4.6)
    ssa = rows["block.0.attn (SSA product)"]
    fr = {k: act.neurons[f"block.0.attn.{k}_lif"].firing_rate for k in "qkv"}
    N, h, d = cfg.num_tokens, cfg.num_heads, cfg.head_dim
    assert cfg.product_order == "qk_first"
    assert ssa["paper_ops"] == pytest.approx(T * h * N * N * d * (min(fr["q"], fr["k"]) + fr["v"]))
    assert c["total_pj"]["ann"] == pytest.approx(flops_summary(cfg)["total"] * 4.6)
    assert c["total_pj"]["paper"] == pytest.approx(sum(r["paper_pj"] for r in c["rows"]))


# ------------------------------------------------------------------------------------------------ energy models

def test_energy_models_builtin_and_json(tmp_path):
    assert load_energy_model("cmos45") is CMOS45 and load_energy_model("loihi") is LOIHI
    assert "Loihi 2" in " ".join(LOIHI.notes) and "Davies" in LOIHI.source and "Horowitz" in CMOS45.source
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"name": "7nm", "mac_pj": 1.0, "ac_pj": 0.2, "spike_pj": 0.5, "source": "x"}))
    m = load_energy_model(str(good))
    assert (m.name, m.mac_pj, m.ac_pj, m.spike_pj, m.neuron_update_active_pj) == ("7nm", 1.0, 0.2, 0.5, 0.0)
    cases = {
        "missing.json": None,
        "bad.json": "{not json",
        "list.json": "[1, 2]",
        "nomac.json": json.dumps({"name": "x", "ac_pj": 1}),
        "neg.json": json.dumps({"name": "x", "mac_pj": -1, "ac_pj": 1}),
        "str.json": json.dumps({"name": "x", "mac_pj": "4.6", "ac_pj": 1}),
        "unknown.json": json.dumps({"name": "x", "mac_pj": 1, "ac_pj": 1, "e_foo": 2}),
        "nan.json": '{"name": "x", "mac_pj": NaN, "ac_pj": 1}',
    }
    for fname, text in cases.items():
        p = tmp_path / fname
        if text is not None:
            p.write_text(text)
        with pytest.raises(EnergyModelError) as e:
            load_energy_model(str(p))
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    from spikformer.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "digits_random.pt"
    save_checkpoint(path, randomized_model("digits-2-64", seed=0), {"preset": "digits-2-64", "note": "random"})
    return path


def test_report_cli_end_to_end_and_reproducible(random_checkpoint, tmp_path, cli):
    from analysis.render import FILES
    from commands.report import main

    args = [random_checkpoint, "--data", "digits", "--samples", "4", "--batch-size", "3", "--seed", "1",
            "--device", "cpu", "--no-progress"]
    rc, out, err = cli(main, args + ["-o", tmp_path / "a"])
    assert rc == 0, err
    assert "ANN" in out
    for f in FILES:
        assert (tmp_path / "a" / f).stat().st_size > 0, f
    rep = json.loads((tmp_path / "a" / "energy.json").read_text())
    assert rep["run"]["samples"] == 4 and rep["run"]["seed"] == 1 and rep["run"]["mode"] == "float"
    assert len(rep["model"]["sha256"]) == 64 and rep["model"]["config"]["embed_dim"] == 64
    assert rep["energy_model"]["name"] == "cmos45" and "Horowitz" in rep["energy_model"]["source"]
    t = rep["totals"]
    assert t["event_pj"] == pytest.approx(t["event_excluding_ssa_decomposition_pj"] + t["event_ssa_decomposition_pj"])
    assert 0 < t["paper_pj"] < t["ann_pj"] and t["event_ssa_decomposition_pj"] > 0
    html = (tmp_path / "a" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and rep["model"]["sha256"] in html
    md = (tmp_path / "a" / "energy.md").read_text()
    for needle in ("Horowitz", "Counting rules", "SSA decomposition", "6.82 G", "sha256"):
        assert needle in md, needle
    csv_lines = (tmp_path / "a" / "energy.csv").read_text().splitlines()
    assert csv_lines[0].startswith("layer,kind,") and csv_lines[-1].startswith("TOTAL")
    assert (tmp_path / "a" / "firing_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rc, _, err = cli(main, args + ["-o", tmp_path / "b"])
    assert rc == 0, err
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_report_cli_loihi_model_and_user_errors(random_checkpoint, tmp_path, cli):
    from commands.report import main

    rc, out, err = cli(main, [random_checkpoint, "--samples", "2", "--target", "loihi", "--ssa-order", "qk_first",
                              "--device", "cpu", "--no-progress", "-o", tmp_path / "l"])
    assert rc == 0, err
    rep = json.loads((tmp_path / "l" / "energy.json").read_text())
    assert rep["energy_model"]["name"] == "loihi" and rep["run"]["target"] == "loihi"
    assert rep["run"]["ssa_order_used"] == ["qk_first"]
    # the Loihi defaults are the exported network: fixed point, graded SSA and relays, both weight parts counted
    assert rep["run"]["mode"] == "fixed" and rep["run"]["ssa_form"] == "graded"
    types = {n["node_type"] for n in rep["nodes"]["activity"]["neurons"]}
    assert "GradedNeuron" in types and "LoihiLIF" in types
    assert rep["totals"]["event_breakdown_pj"]["neuron_pj"] > 0

    # Loihi fixed point with the graded SSA: integer kernels, Loihi LIFs, graded spikes charged as MACs
    rc, out, err = cli(main, [random_checkpoint, "--samples", "2", "--target", "loihi", "--mode", "fixed",
                              "--ssa-form", "graded", "--energy-model", "cmos45", "--device", "cpu", "--no-progress",
                              "-o", tmp_path / "f"])
    assert rc == 0, err
    rep = json.loads((tmp_path / "f" / "energy.json").read_text())
    assert rep["run"]["mode"] == "fixed" and rep["run"]["ssa_form"] == "graded"
    types = {n["node_type"] for n in rep["nodes"]["activity"]["neurons"]}
    assert "LoihiLIF" in types and "ProductNeuron" in types
    head = next(r for r in rep["layers"] if r["layer"] == "head")  # the readout's v is not a spike train
    assert head["firing_rate"] is None and head["category"] == "head"
    assert rep["totals"]["event_ops"]["effective_mac"] > 0 and rep["ssa_decomposition"][0]["energy_pj"] >= 0
    rc, _, err = cli(main, [random_checkpoint, "--mode", "fixed", "--target", "nir", "-o", tmp_path / "x"])
    assert_one_line_error(rc, err, "fixed")

    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    rc, _, err = cli(main, [random_checkpoint, "--energy-model", bad, "-o", tmp_path / "x"])
    assert_one_line_error(rc, err, "mac_pj")
    rc, _, err = cli(main, [tmp_path / "nope.pt", "-o", tmp_path / "x"])
    assert_one_line_error(rc, err, "does not exist")
    rc, _, err = cli(main, [random_checkpoint, "--data", "nosuch", "-o", tmp_path / "x"])
    assert_one_line_error(rc, err, "nosuch")
    assert not (tmp_path / "x").exists()
