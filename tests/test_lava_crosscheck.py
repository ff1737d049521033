"""Cross-check of the Loihi export on real lava-nc processes against the fixed-point simulator.

A tiny Spikformer (8x8 input, D = 16, 2 heads, 1 block, T = 2) with random weights whose BatchNorms are set so
that every layer fires on the chosen digits (a cross-check of silent layers proves nothing), exported with
write_artifacts, loaded back from the directory as a Lava process graph (LIFReset, GradedVec, ProdNeuron,
Sparse, DelaySparse, RingBuffer), run on lava-nc's bit-accurate CPU models and compared with sim.engine's
fixed-point mode: zero differences allowed in the readout (v at every logical step) and in the spikes of every
population, and in the integer payloads of the graded populations, for both SSA forms (binary, graded) and
both product orders. About 15-20 s of Lava per case on 2 cores; one more Lava run for spk-parity --engine lava,
and one of the demo model's size (digits-2-64, 2 samples, about 40 s).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from convert import ir
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hw_backends.loihi.compile import compile_graph
from hw_backends.loihi.export import write_artifacts
from tests.helpers_models import randomized_model

import lava.proc.lif.process  # noqa: E402,F401  (lava-nc is pinned: required, not skipped)

N_IMAGES = 3
# BatchNorm shift per module (after normalising with the statistics of the chosen images): beta 1.5 makes a
# LIF (tau 2, threshold 1) fire on about 40% of its inputs; q/k/v are set so that every bit of the SSA
# cascade, including the highest (all keys and values of a column / all dimensions of a head on), fires.
BETA = 1.5
BETA_QKV = {"kv_first": {"q_bn": 1.0, "k_bn": 3.0, "v_bn": 3.0},
            "qk_first": {"q_bn": 3.0, "k_bn": 3.0, "v_bn": 1.5}}


def digits(n: int = N_IMAGES) -> torch.Tensor:
    from sklearn.datasets import load_digits
    return torch.tensor(load_digits().images[:n] / 16.0, dtype=torch.float64).unsqueeze(1)  # native 8x8


def firing_model(order: str, x: torch.Tensor, seed: int = 0):
    m = randomized_model("digits-2-64", seed=seed, img_size=8, embed_dim=16, num_heads=2, depth=1, T=2).double()
    bns = {n: b for n, b in m.named_modules() if isinstance(b, torch.nn.modules.batchnorm._BatchNorm)}
    with torch.no_grad():
        for name, bn in bns.items():
            bn.weight.fill_(1.0)
            bn.bias.fill_(BETA_QKV[order].get(name.split(".")[-1], BETA))
            bn.reset_running_stats()
            bn.momentum = None  # running statistics = the statistics of this one pass
        m.train()
        m(x)
        m.eval()
        for bn in bns.values():
            bn.running_var.clamp_(min=0.05)
    return m


CASES = [("binary", "kv_first"), ("binary", "qk_first"), ("graded", "kv_first"), ("graded", "qk_first")]


def _populations(g):
    """The recorded populations, listed here by kind (not through ir's groupings, which the runners use)."""
    return [n for n, node in g.nodes.items()
            if isinstance(node, (ir.LoihiLIF, ir.GradedNeuron, ir.ProductNeuron))
            and not (isinstance(node, ir.LoihiLIF) and node.readout)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{o}" for f, o in CASES])
def checked(request, tmp_path_factory):
    from analysis.engine_crosscheck import crosscheck
    from hw_backends.loihi.lava_engine import LavaEngine
    form, order = request.param
    x = digits()
    compiled = compile_graph(lower(spikformer_to_ir(firing_model(order, x)), ssa_order=order, ssa_form=form))
    out = tmp_path_factory.mktemp(f"lava_{form}_{order}")
    write_artifacts(out, compiled, {"name": f"tiny-{form}-{order}"}, {"ssa_order": order, "ssa_form": form})
    rep = crosscheck(LavaEngine(out, timeout_s=300, retries=0, pin_models=False), x.numpy(), record="all",
                     sim_graph=compiled.graph, progress=False)
    summary = {k: v for k, v in rep.items() if k not in ("engine_result", "records", "sim_result")}
    print(f"\n[lava crosscheck {form} {order}] " + json.dumps(
        {"sim_s": summary["sim_s"], "lava": summary["engine_facts"]["timing"],
         "network": summary["engine_facts"]["network"],
         "readout_mismatches": summary["readout_mismatches"],
         "readout_step_mismatches": summary["readout_step_mismatches"],
         "total_spike_mismatches": summary["total_spike_mismatches"],
         "graded_payload_max": summary["graded_payload_max"]}, default=float))
    return {"form": form, "order": order, "compiled": compiled, "dir": out, "report": rep}


def test_every_population_fires(checked):
    rates = checked["report"]["firing_rates"]
    g = checked["compiled"].graph
    pops = _populations(g)
    assert sorted(rates) == sorted(pops)  # everything recorded
    silent = [n for n in pops if rates[n] == 0]
    assert not silent, f"silent populations prove nothing: {silent}"
    ssa = [n for n in pops if ".product." in n]
    assert len(ssa) >= (7 if checked["form"] == "binary" else 3)
    # binary spikes must both fire and stay silent somewhere; a graded count may be nonzero everywhere (all
    # counts >= 1 in qk_first here): its values are checked in test_graded_payloads_exact
    spiking = [n for n in ssa if isinstance(g.nodes[n], ir.LoihiLIF)]
    assert all(0 < rates[n] < 1 for n in spiking), {n: rates[n] for n in ssa}


def test_readout_bit_exact(checked):
    rep = checked["report"]
    lava_res, sim = rep["engine_result"], rep["sim_result"]
    assert rep["readout"] == "head"
    assert lava_res.readout_v.shape == (N_IMAGES, 10)
    assert np.any(lava_res.readout_v != 0)
    assert rep["readout_mismatches"] == 0, (lava_res.readout_v, sim.outputs["output"].numpy())
    # v at every logical step (readout_steps=True), the simulator's record of the readout
    assert lava_res.readout_v_steps.shape == (2, N_IMAGES, 10)
    assert rep["readout_step_mismatches"] == 0
    np.testing.assert_array_equal(lava_res.readout_v_steps[-1], lava_res.readout_v)
    scale = checked["compiled"].graph.metadata["readout_scale"]
    np.testing.assert_array_equal(lava_res.logits, sim.outputs["output"].numpy() / scale)


def test_spikes_bit_exact_every_population(checked):
    rep, order = checked["report"], checked["order"]
    p = f"block.0.attn.product.{order}"
    nbits = 3 if order == "kv_first" else 4  # counts up to N = 4 tokens / d = 8 dimensions
    if checked["form"] == "binary":
        ssa = [f"{p}.and", *(f"{p}.bit{k}" for k in range(nbits)), *(f"{p}.bit{k}.and" for k in range(nbits))]
    else:
        ssa = [f"{p}.and", f"{p}.count", f"{p}.product"]
    must = ["patch_embed.proj_lif", "patch_embed.maxpool3", *ssa, "block.0.attn.attn_lif", "block.0.mlp.fc1_lif"]
    missing = [n for n in must if n not in rep["spike_mismatches"]]
    assert not missing
    bad = {n: c for n, c in rep["spike_mismatches"].items() if c}
    assert not bad, f"Lava and the fixed-point simulator differ: {bad}"
    spikes = rep["engine_result"].spikes
    assert spikes["block.0.attn.attn_lif"].shape == (2, N_IMAGES, 16, 4)  # logical time [T, B, ...]
    assert rep["spikes_compared"] > 5000


def test_graded_payloads_exact(checked):
    """The graded populations are compared by value, not by nonzero-ness: counts above 1 reach the product
    neurons and the attention LIF through Sparse(num_message_bits=24)."""
    if checked["form"] != "graded":
        pytest.skip("binary SSA form has no graded populations")
    rep, g = checked["report"], checked["compiled"].graph
    graded = [n for n in _populations(g) if isinstance(g.nodes[n], (ir.GradedNeuron, ir.ProductNeuron))]
    relays = [r["relay"] for r in g.metadata["residual_relays"].values()]
    ssa = [n for n in graded if n not in relays]
    assert len(ssa) == 2 and len(relays) == 3  # count + product; the sums after rpe, attention and MLP
    assert sorted(rep["graded_payload_max"]) == sorted(graded)
    lava_res, sim = rep["engine_result"], rep["sim_result"]
    for n in graded:
        lv, sv = lava_res.spikes[n], sim.records[n].numpy()
        assert lv.dtype == np.int32
        np.testing.assert_array_equal(lv, sv, err_msg=n)
        if n in ssa:
            assert len(np.unique(lv)) >= 3 and lv.max() > 1, (n, np.unique(lv))  # more than 0/1
        else:
            assert lv.max() >= 1, n
    net = rep["engine_facts"]["network"]
    assert net["population_kinds"] == {"LIFReset": len(_populations(g)) + 1 - len(graded),
                                       "GradedVec": len(graded) - 1, "ProdNeuron": 1}
    # graded senders: the image (its high and low weight parts), the count (-> product in1), the product
    # (-> attention LIF) and each residual relay (-> every synapse layer reading the sum, high and low parts);
    # one Sparse process per weight exponent of each
    sched = checked["compiled"].schedule
    image = [pr for pr in sched["projections"] if pr.pre == g.inputs()[0]]
    from_relays = [pr for pr in sched["projections"] if pr.pre in relays]
    assert len(image) == 2 and len(from_relays) >= 2 * len(relays)
    assert net["graded_connections"] == sum(_exponent_groups(g, pr) for pr in image + from_relays) + 2


def _exponent_groups(g, pr) -> int:
    """One Sparse process per distinct weight exponent of a projection (per-channel exponents)."""
    e = g.nodes[pr.synapse].weight_exp
    return len(np.unique(e)) if np.ndim(e) else 1


def test_process_graph_shape(checked):
    net, sched = checked["report"]["engine_facts"]["network"], checked["compiled"].schedule
    pops = _populations(checked["compiled"].graph) + ["head"]
    g = checked["compiled"].graph

    def groups(pr):
        return _exponent_groups(g, pr)

    delayed = sum(groups(pr) for pr in sched["projections"] if pr.delay)
    n_conns = sum(groups(pr) for pr in sched["projections"])
    assert n_conns > len(sched["projections"])  # the per-channel exponents are exercised
    assert net["populations"] == len(pops)
    assert net["delay_sparse"] == delayed > 0
    assert net["sparse"] + net["delay_sparse"] == n_conns
    assert net["processes"] == 1 + len(pops) + n_conns + net["sinks"]
    # the run ends at the last logical step of the last sample in the deepest population
    assert net["n_steps"] == (N_IMAGES - 1) * sched["sample_period"] + sched["T"] + sched["max_depth"]


# ---------------------------------------------------------------------------------------------- no Lava run
@pytest.fixture(scope="module")
def tiny_compiled():
    x = digits()
    return compile_graph(lower(spikformer_to_ir(firing_model("kv_first", x)), ssa_order="kv_first"))


def test_matrices_follow_the_ir_kernels(tiny_compiled):
    """The CSR of a conv projection applied to a spike vector equals the IR kernel (flat, row-major)."""
    from hw_backends.loihi.lava_matrices import synapse_matrix
    from convert import kernels
    g, sched = tiny_compiled.graph, tiny_compiled.schedule
    shapes = g.shapes()
    rng = np.random.default_rng(0)
    for pr in sched["projections"]:
        node = g.nodes[pr.synapse]
        w = synapse_matrix(g, pr, shapes)
        s = (rng.random(w.shape[1]) < 0.4).astype(np.float64)
        feed = pr.via[-1] if pr.via else pr.pre
        saved, node.weight_exp = node.weight_exp, 0
        try:
            ref = kernels.step(node, {"in": torch.tensor(s).reshape(1, *shapes[feed])}, {}, kernels.ParamCache(), 0)
        finally:
            node.weight_exp = saved
        np.testing.assert_array_equal(w @ s, ref.reshape(-1).numpy(), err_msg=pr.synapse)


def test_matrix_size_limit_names_the_node(tiny_compiled):
    from hw_backends.loihi.lava_conventions import LavaGraphError
    from hw_backends.loihi.lava_matrices import synapse_matrix
    g, sched = tiny_compiled.graph, tiny_compiled.schedule
    pr = next(p for p in sched["projections"] if p.synapse == "block.0.mlp.fc1_linear")
    with pytest.raises(LavaGraphError, match=r"block\.0\.mlp\.fc1_linear.*exceeds the limit"):
        synapse_matrix(g, pr, max_entries=1000)


def test_lava_weight_rules_leave_quantised_weights_alone(tiny_compiled):
    from hw_backends.loihi.lava_matrices import lava_weight_rules_csr, synapse_matrix
    g, sched = tiny_compiled.graph, tiny_compiled.schedule
    for pr in sched["projections"]:
        w = synapse_matrix(g, pr)
        assert (lava_weight_rules_csr(w) != w).nnz == 0, pr.synapse
    import scipy.sparse as sp
    odd = sp.csr_matrix(np.array([[3, -2]], dtype=np.int32))  # mixed sign: lava drops the lowest bit
    assert lava_weight_rules_csr(odd).toarray().tolist() == [[2, -2]]


def test_timeout_kills_the_lava_processes(tiny_compiled):
    from hw_backends.loihi.lava_run import LavaTimeoutError, run_lava
    with pytest.raises(LavaTimeoutError) as e:
        run_lava(tiny_compiled, digits(1).numpy(), timeout_s=1.0, progress=False)
    with pytest.raises(ProcessLookupError):
        os.killpg(e.value.pgid, 0)


def test_a_timed_out_lava_run_is_started_afresh_and_reported(tiny_compiled, monkeypatch):
    """A Lava run that times out (lava-nc's runtime occasionally hangs) is killed and started again, up to
    `retries` times; every timeout is kept as an incident of the engine; with no retry left the timeout is
    raised."""
    from analysis.engine_crosscheck import make_sim_runner
    from hw_backends.loihi import lava_engine
    from hw_backends.loihi.lava_run import LavaTimeoutError
    real, calls = lava_engine.run_lava, []

    def hangs_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise LavaTimeoutError("the Lava run did not finish within 120 s (a stand-in for a hang)")
        return real(*args, **kwargs)

    monkeypatch.setattr(lava_engine, "run_lava", hangs_once)
    runner = make_sim_runner(lava_engine.LavaEngine(tiny_compiled, timeout_s=120, retries=1))
    runner(digits(1), [])
    assert len(calls) == 2 and runner.engine.incidents == [
        {"samples": 1, "timeout_s": 120, "error": "the Lava run did not finish within 120 s (a stand-in for a hang)",
         "restarted": True, "what": "a Lava run of 1 samples timed out after 120 s and was started again "
                                    "(lava-nc's runtime occasionally hangs)"}]
    assert runner.crosscheck.to_dict()["differences"] == 0
    calls.clear()
    no_retry = make_sim_runner(lava_engine.LavaEngine(tiny_compiled, timeout_s=120, retries=0))
    with pytest.raises(LavaTimeoutError):
        no_retry(digits(1), [])
    assert len(calls) == 1 and [i["restarted"] for i in no_retry.engine.incidents] == [False]


def test_the_lava_runtime_is_split_at_its_process_boundary():
    """The isolated worker (the Lava side) starts without torch; the parent side (opening the network, the weight
    matrices, the run, the cross-check) imports no Lava runtime (lava.magma, lava.proc) when imported."""
    import subprocess
    import sys

    from hw_backends.loihi.lava_run import ROOT

    def imported(modules: str, probe: str) -> list[str]:
        """The modules for which `probe` (an expression in m) holds after importing `modules` in a fresh process."""
        code = f"import sys, {modules}; print(' '.join(m for m in sys.modules if {probe}))"
        return subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True,
                              timeout=300, check=True).stdout.split()

    assert imported("hw_backends.loihi.lava_worker", "m.split('.')[0] == 'torch'") == []
    parent = "hw_backends.loihi.runnable, hw_backends.loihi.lava_matrices, hw_backends.loihi.lava_run, " \
             "hw_backends.loihi.lava_engine, analysis.engine_crosscheck"
    assert imported(parent, "m.startswith(('lava.magma', 'lava.proc'))") == []
    assert "lava.proc.lif.process" in imported("hw_backends.loihi.lava_worker", "m.startswith('lava.proc')")


def test_export_dir_loads_as_the_same_network(tiny_compiled, tmp_path):
    from hw_backends.loihi.runnable import load_export
    write_artifacts(tmp_path, tiny_compiled, {"name": "tiny"}, {})
    g, sched = load_export(tmp_path)
    assert sched["sample_period"] == tiny_compiled.schedule["sample_period"]
    assert [(p.pre, p.synapse, p.post, p.delay) for p in sched["projections"]] == \
        [(p.pre, p.synapse, p.post, p.delay) for p in tiny_compiled.schedule["projections"]]
    assert set(g.nodes) == set(tiny_compiled.graph.nodes)
    assert Path(tmp_path, "network.h5").exists()


# ---------------------------------------------------------------------------------------------- Lava facts
_FACTS = r"""
import json, numpy as np
from scipy.sparse import csr_matrix
from lava.proc.io.source import RingBuffer as Src
from lava.proc.sparse.process import Sparse, DelaySparse
from lava.proc.lif.process import LIFReset
from lava.proc.graded.process import GradedVec
from lava.proc.prodneuron.process import ProdNeuron
from lava.proc.io.sink import RingBuffer as Sink
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
data = np.zeros((2, 8), dtype=np.int32); data[:, 0] = [200, 7]        # graded payload at time_step 1 only
src = Src(data=data)
w = csr_matrix(np.array([[1, 0], [0, 1]], dtype=np.int32))
sp = Sparse(weights=w, num_message_bits=8, weight_exp=-1)             # 200 >> 1 = 100, 7 >> 1 = 3
dl = DelaySparse(weights=w, delays=csr_matrix(np.array([[2, 0], [0, 2]])), num_message_bits=8)
a = LIFReset(shape=(2,), du=4095, dv=0, vth=100000, bias_mant=np.array([1, 1]), bias_exp=0,
             reset_interval=6, reset_offset=2)
b = LIFReset(shape=(2,), du=4095, dv=0, vth=100000, reset_interval=100, reset_offset=50)
src.s_out.connect(sp.s_in); sp.a_out.connect(a.a_in); src.s_out.connect(dl.s_in); dl.a_out.connect(b.a_in)
# graded: src -> Sparse(2, -2) -> GradedVec g -> Sparse(num_message_bits=24) -> ProdNeuron.a_in1 (exp 1);
# src -> DelaySparse(delay 1) -> ProdNeuron.a_in2; g -> Sparse(num_message_bits=0) -> GradedVec h
g = GradedVec(shape=(2,), vth=0)
gw = Sparse(weights=csr_matrix(np.array([[2, 0], [0, -2]], dtype=np.int32)), num_message_bits=8)
pn = ProdNeuron(shape=(2,), vth=0, exp=1)
g1 = Sparse(weights=w, num_message_bits=24)
g2 = DelaySparse(weights=w, delays=csr_matrix(np.array([[1, 0], [0, 1]])), num_message_bits=8)
h = GradedVec(shape=(2,), vth=0)
hb = Sparse(weights=w, num_message_bits=0)
sinks = {k: Sink(shape=(2,), buffer=8) for k in ("g", "p", "h")}
src.s_out.connect(gw.s_in); gw.a_out.connect(g.a_in); g.s_out.connect(g1.s_in); g1.a_out.connect(pn.a_in1)
src.s_out.connect(g2.s_in); g2.a_out.connect(pn.a_in2); g.s_out.connect(hb.s_in); hb.a_out.connect(h.a_in)
g.s_out.connect(sinks["g"].a_in); pn.s_out.connect(sinks["p"].a_in); h.s_out.connect(sinks["h"].a_in)
va, vb, vg = [], [], []
try:
    for k in range(8):
        src.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        va.append(a.v.get().astype(int).tolist()); vb.append(b.v.get().astype(int).tolist())
        vg.append(g.v.get().astype(int).tolist())
    out = {k: s.data.get().astype(int).T.tolist() for k, s in sinks.items()}
finally:
    src.stop()
print("RESULT" + json.dumps({"a": va, "b": vb, "g_v": vg, **out}))
"""


def test_lava_timing_facts():
    """The facts lava_graph relies on, measured on lava-nc itself (independent of the simulator):
    time_step starts at 1 (the source sends column 0 at step 1); a Sparse delivers at the next step; a
    DelaySparse with delay d at step 1 + 1 + d; LIFReset clears u and v at time_step % interval == offset
    before integrating that step's input; graded payloads pass through Sparse(num_message_bits=8) with an
    arithmetic right shift for weight_exp < 0.
    Graded neurons: GradedVec and ProdNeuron emit in the step their input arrives (no latency beyond the
    synapse hop, like a LIF); GradedVec's v does not accumulate; payloads above 1 and negative payloads pass
    through Sparse(num_message_bits=24) intact (its s_in, declared bool, carries the sender's int32), while
    num_message_bits=0 casts them to 1; ProdNeuron computes (in1 * in2) >> exp, arithmetically."""
    import subprocess
    import sys

    from ground.isolated import kill_group
    from hw_backends.loihi.lava_run import KILL_GRACE_S, ROOT
    proc = subprocess.Popen([sys.executable, "-c", _FACTS], cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        kill_group(proc, KILL_GRACE_S)
    res = json.loads(out.split("RESULT", 1)[1])
    a, b = np.array(res["a"]), np.array(res["b"])
    # a: bias 1 per step; reset at steps 2 and 8 (offset 2, interval 6); the payload of step 1 arrives at
    # step 2, after the reset: v = 100 << 6 (+ bias)
    assert a[0].tolist() == [1, 1]                       # step 1: bias only
    assert a[1].tolist() == [100 * 64 + 1, 3 * 64 + 1]    # step 2: reset, then input + bias
    assert a[2].tolist() == [100 * 64 + 2, 3 * 64 + 2]
    assert a[6].tolist() == [100 * 64 + 6, 3 * 64 + 6]    # step 7
    assert a[7].tolist() == [1, 1]                       # step 8 = 2 + 6: reset again
    # b: delay 2 -> the payload of step 1 arrives at step 1 + 1 + 2 = 4
    assert b[:3].tolist() == [[0, 0]] * 3 and b[3].tolist() == [200 * 64, 7 * 64]
    gs, ps, hs = np.array(res["g"]), np.array(res["p"]), np.array(res["h"])  # [step - 1, neuron]
    # g: the payload of step 1 arrives at step 2 and is sent in step 2 (same step as its input)
    assert gs[1].tolist() == [400, -14] and not np.any(np.delete(gs, 1, 0))
    assert not np.any(res["g_v"])  # cleared every step: nothing accumulates
    # product at step 3: in1 = g's step-2 payload (one hop), in2 = src step 1 + 1 + delay 1
    assert ps[2].tolist() == [(400 * 200) >> 1, (-14 * 7) >> 1] == [40000, -49]
    assert not np.any(np.delete(ps, 2, 0))
    # num_message_bits = 0: the payloads count as binary spikes
    assert hs[2].tolist() == [1, 1] and not np.any(np.delete(hs, 2, 0))


def test_run_lava_refuses_big_networks_before_starting_lava():
    from hw_backends.loihi.lava_conventions import LavaGraphError
    from hw_backends.loihi.lava_run import run_lava
    # 16x16 input, D = 512: patch_embed.proj_conv2 (128 -> 256 channels, 3x3, 16x16) alone has 75 M synapses
    m = randomized_model("digits-2-64", embed_dim=512, num_heads=8, depth=1).double()
    compiled = compile_graph(lower(spikformer_to_ir(m), ssa_order="kv_first"))
    with pytest.raises(LavaGraphError, match=r"patch_embed\.proj_conv2 \(Conv2d, from .*: [\d,]+ synapses exceeds "
                                             r"the limit of 33,554,432"):
        run_lava(compiled, digits(1).expand(-1, 1, -1, -1).numpy(), timeout_s=5)


# ---------------------------------------------------------------------------------------------- spk-parity
def test_parity_cli_lava_engine_equals_sim_engine(tmp_path):
    """`spk-parity --target loihi --engine lava` (the target's engine: one isolated Lava run per batch) against the same
    command with the built-in simulator: both compare with the same float reference, so every layer's mismatch
    count and the overall numbers must be identical."""
    from commands.parity import main
    from spikformer.checkpoint import save_checkpoint
    ckpt = save_checkpoint(tmp_path / "tiny.pt", randomized_model(
        "digits-2-64", img_size=8, embed_dim=16, num_heads=2, depth=1, T=2, attn_drive=1.0))
    reports = {}
    for engine in ("sim", "lava"):
        out = tmp_path / f"parity_{engine}"
        rc = main([str(ckpt), "--target", "loihi", "--engine", engine, "--samples", "2", "--data", "digits",
                   "--device", "cpu", "--min-agreement", "0", "--no-progress", "-o", str(out)])
        assert rc == 0, engine
        reports[engine] = json.loads((out / "parity.json").read_text())
    sim, lv = reports["sim"], reports["lava"]
    assert lv["run"]["engine"] == "lava" and sim["run"]["engine"] == "sim"
    assert lv["overall"] == sim["overall"]
    assert lv["layer_order"] == sim["layer_order"] and len(lv["layer_order"]) >= 10
    assert {d["layer"]: d["mismatches"] for d in lv["layers"]} == {d["layer"]: d["mismatches"] for d in sim["layers"]}
    assert lv["layers"] == sim["layers"]
    assert lv["overall"]["samples"] == 2
    assert any(d["rate_simulator"] > 0 for d in lv["layers"])  # a silent network would prove little
    xc = lv["engine_crosscheck"]  # every population, exactly, against the simulator on the same images
    assert xc["differences"] == 0 and xc["samples"] == 2 and xc["spikes_compared"] > 0
    assert "engine_crosscheck" not in sim


def test_parity_cli_lava_engine_runs_the_demo_size_model(tmp_path):
    """The demo model's architecture (digits-2-64: 16x16 input, D = 64, 4 heads, 2 blocks, T = 4), whole, on lava-nc:
    convolutions and sum pools as sparse matrices built from their structure; every population's spikes, the
    readout's v at every logical step and the predictions equal the fixed-point simulator's (2 samples here;
    bench/timings/bench_sim.py runs 16 of the trained demo model)."""
    from commands.parity import main
    from spikformer.checkpoint import save_checkpoint
    ckpt = save_checkpoint(tmp_path / "demo_size.pt", randomized_model("digits-2-64", seed=2, attn_drive=1.0))
    out = tmp_path / "parity_lava"
    rc = main([str(ckpt), "--target", "loihi", "--engine", "lava", "--samples", "2", "--data", "digits",
               "--device", "cpu", "--min-agreement", "0", "--no-progress", "--lava-timeout", "300",
               "--lava-retries", "1", "-o", str(out)])
    assert rc == 0
    rep = json.loads((out / "parity.json").read_text())
    xc = rep["engine_crosscheck"]
    assert xc["engine"] == "Lava" and isinstance(xc["incidents"], list)
    assert xc["differences"] == 0 and xc["spike_mismatches"] == 0 and xc["readout_step_mismatches"] == 0
    assert xc["populations"] >= 30 and xc["spikes_compared"] > 500_000
    assert any(d["rate_simulator"] > 0 for d in rep["layers"] if "attn" in d["layer"])
    assert "Lava against the fixed-point simulator" in (out / "parity.md").read_text()


def test_engine_crosscheck_counts_a_changed_spike(tiny_compiled):
    """The Lava-vs-simulator comparison of spk-parity --engine lava sees one flipped spike, one changed readout
    value and the prediction it changes (a Lava result made from the simulator's own records, then altered)."""
    from analysis.engine_crosscheck import EngineCrosscheck
    from hw_backends.engines import RunRecords
    from hw_backends.loihi.lava_conventions import populations, readout_population
    from sim.engine import Engine
    g = tiny_compiled.graph
    readout = readout_population(g)
    pops = [n for n in populations(g) if n != readout]
    x = digits(2)
    sim = Engine(g, numeric="loihi_fixed").run(x, record=pops + [readout])
    v_steps = sim.records[readout].reshape(2, 2, -1).numpy().astype(np.int64)
    spikes = {n: sim.records[n].numpy().copy() for n in pops}
    same = RunRecords(spikes=spikes, readout_v=v_steps[-1].copy(), readout_v_steps=v_steps.copy())
    check = EngineCrosscheck(g, readout, populations(g))
    check.add(x, same)
    assert check.differences == 0 and check.samples == 2
    lif = next(n for n in pops if isinstance(g.nodes[n], ir.LoihiLIF))
    spikes[lif].reshape(-1)[0] = 1 - spikes[lif].reshape(-1)[0]
    v = v_steps[-1].copy()
    v[0] = v[0].max() + 1000 - v[0]  # reverses the ranking of sample 0: its prediction changes
    changed = RunRecords(spikes=spikes, readout_v=v, readout_v_steps=v_steps)
    check = EngineCrosscheck(g, readout, populations(g))
    check.add(x, changed)
    d = check.to_dict()
    assert d["spike_mismatches_by_population"] == {lif: 1}
    assert d["readout_mismatches"] > 0 and d["prediction_differences"] == 1 and d["readout_step_mismatches"] == 0


@pytest.mark.parametrize("binary", [False, True], ids=["graded-counts", "binary-spikes"])
def test_event_frames_on_lava_match_the_simulator(binary, tmp_path):
    """An event-camera model (DVS layout, one frame per step) on lava-nc: the frames enter as graded spike counts
    (or, for 0/1 data, as binary spikes) through the source RingBuffer, step by step; 0 differences to the
    fixed-point simulator in every population and the readout."""
    from analysis.engine_crosscheck import crosscheck
    from convert.options import ConversionOptions
    from hw_backends.loihi.lava_engine import LavaEngine
    from hw_backends.conversion import convert
    from spikformer.checkpoint import save_checkpoint

    model = randomized_model("event-digits-2-64", seed=1, attn_drive=1.5, img_size=8, embed_dim=16, num_heads=2,
                             depth=1, T=2)
    path = tmp_path / "ev.pt"
    save_checkpoint(path, model, {"dataset": {"max_count": 1 if binary else 3, "value_grid": 1}})
    b = convert(path, ConversionOptions(target="loihi", ssa="graded"))
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 2 if binary else 4, (2, 2, 2, 8, 8), generator=g).double()
    rep = crosscheck(LavaEngine(b.target, timeout_s=300, retries=0, pin_models=False), frames.numpy(), record="all",
                     progress=False)
    assert rep["total_spike_mismatches"] == 0 and rep["readout_step_mismatches"] == 0
    assert rep["readout_mismatches"] == 0
    assert sum(rep["firing_rates"].values()) > 0
    from hw_backends.loihi.lava_conventions import INPUT_MESSAGE_BITS, message_bits
    assert message_bits(b.graph.nodes["input"], b.graph) == (0 if binary else INPUT_MESSAGE_BITS)
