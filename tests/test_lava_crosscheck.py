"""Cross-check of the Loihi export on real lava-nc processes against the fixed-point simulator.

A tiny Spikformer (8x8 input, D = 16, 2 heads, 1 block, T = 2) with random weights whose BatchNorms are set so
that every layer fires on the chosen digits (a cross-check of silent layers proves nothing), exported with
write_artifacts, loaded back from the directory as a Lava process graph (LIFReset, Sparse, DelaySparse,
RingBuffer), run on lava-nc's bit-accurate CPU models and compared with sim.engine's fixed-point mode:
zero differences allowed in the readout and in the spikes of every population, for both SSA product orders.
About 20 s of Lava per order on 2 cores.
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
from hw_backends.loihi.export import build, write_artifacts
from tests.helpers_models import randomized_model

lava = pytest.importorskip("lava.proc.lif.process")

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


@pytest.fixture(scope="module", params=["kv_first", "qk_first"])
def checked(request, tmp_path_factory):
    from hw_backends.loihi.lava_run import crosscheck
    order = request.param
    x = digits()
    built = build(lower(spikformer_to_ir(firing_model(order, x)), ssa_order=order))
    out = tmp_path_factory.mktemp(f"lava_{order}")
    write_artifacts(out, built, {"name": f"tiny-{order}"}, {"ssa_order": order})
    rep = crosscheck(out, x.numpy(), record="all", sim_graph=built["graph"], timeout_s=300, progress=False)
    summary = {k: v for k, v in rep.items() if k not in ("lava_result", "sim_result")}
    print(f"\n[lava crosscheck {order}] " + json.dumps(
        {"sim_s": summary["sim_s"], "lava": summary["lava"], "network": summary["network"],
         "readout_mismatches": summary["readout_mismatches"],
         "total_spike_mismatches": summary["total_spike_mismatches"]}, default=float))
    return {"order": order, "built": built, "dir": out, "report": rep}


def test_every_population_fires(checked):
    rates = checked["report"]["firing_rates"]
    g = checked["built"]["graph"]
    pops = [n for n, node in g.nodes.items() if isinstance(node, ir.LoihiLIF) and not node.readout]
    assert sorted(rates) == sorted(pops)  # everything recorded
    silent = [n for n in pops if rates[n] == 0]
    assert not silent, f"silent populations prove nothing: {silent}"
    ssa = [n for n in pops if ".product." in n]
    assert len(ssa) >= 7 and all(0 < rates[n] < 1 for n in ssa), {n: rates[n] for n in ssa}


def test_readout_bit_exact(checked):
    rep = checked["report"]
    lava_res, sim = rep["lava_result"], rep["sim_result"]
    assert rep["readout"] == "head"
    assert lava_res.readout_v.shape == (N_IMAGES, 10)
    assert np.any(lava_res.readout_v != 0)
    assert rep["readout_mismatches"] == 0, (lava_res.readout_v, sim.outputs["output"].numpy())
    scale = checked["built"]["graph"].metadata["readout_scale"]
    np.testing.assert_array_equal(lava_res.logits, sim.outputs["output"].numpy() / scale)


def test_spikes_bit_exact_every_population(checked):
    rep, order = checked["report"], checked["order"]
    p = f"block.0.attn.product.{order}"
    nbits = 3 if order == "kv_first" else 4  # counts up to N = 4 tokens / d = 8 dimensions
    must = ["patch_embed.proj_lif", "patch_embed.maxpool3", f"{p}.and", *(f"{p}.bit{k}" for k in range(nbits)),
            *(f"{p}.bit{k}.and" for k in range(nbits)), "block.0.attn.attn_lif", "block.0.mlp.fc1_lif"]
    missing = [n for n in must if n not in rep["spike_mismatches"]]
    assert not missing
    bad = {n: c for n, c in rep["spike_mismatches"].items() if c}
    assert not bad, f"Lava and the fixed-point simulator differ: {bad}"
    spikes = rep["lava_result"].spikes
    assert spikes["block.0.attn.attn_lif"].shape == (2, N_IMAGES, 16, 4)  # logical time [T, B, ...]
    assert rep["spikes_compared"] > 5000


def test_process_graph_shape(checked):
    net, sched = checked["report"]["network"], checked["built"]["schedule"]
    pops = [n for n, node in checked["built"]["graph"].nodes.items() if isinstance(node, ir.LoihiLIF)]
    delayed = sum(1 for pr in sched["projections"] if pr.delay)
    assert net["populations"] == len(pops)
    assert net["delay_sparse"] == delayed > 0
    assert net["sparse"] + net["delay_sparse"] == len(sched["projections"])
    assert net["processes"] == 1 + len(pops) + len(sched["projections"]) + net["sinks"]
    # the run ends at the last logical step of the last sample in the deepest population
    assert net["n_steps"] == (N_IMAGES - 1) * sched["sample_period"] + sched["T"] + sched["max_depth"]


# ---------------------------------------------------------------------------------------------- no Lava run
@pytest.fixture(scope="module")
def tiny_built():
    x = digits()
    return build(lower(spikformer_to_ir(firing_model("kv_first", x)), ssa_order="kv_first"))


def test_matrices_follow_the_ir_kernels(tiny_built):
    """The CSR of a conv projection applied to a spike vector equals the IR kernel (flat, row-major)."""
    from hw_backends.loihi.lava_graph import synapse_matrix
    from sim import kernels
    g, sched = tiny_built["graph"], tiny_built["schedule"]
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


def test_matrix_size_limit_names_the_node(tiny_built):
    from hw_backends.loihi.lava_graph import LavaGraphError, synapse_matrix
    g, sched = tiny_built["graph"], tiny_built["schedule"]
    pr = next(p for p in sched["projections"] if p.synapse == "block.0.mlp.fc1_linear")
    with pytest.raises(LavaGraphError, match=r"block\.0\.mlp\.fc1_linear.*exceeds the limit"):
        synapse_matrix(g, pr, max_entries=1000)


def test_lava_weight_rules_leave_quantised_weights_alone(tiny_built):
    from hw_backends.loihi.lava_graph import lava_weight_rules_csr, synapse_matrix
    g, sched = tiny_built["graph"], tiny_built["schedule"]
    for pr in sched["projections"]:
        w = synapse_matrix(g, pr)
        assert (lava_weight_rules_csr(w) != w).nnz == 0, pr.synapse
    import scipy.sparse as sp
    odd = sp.csr_matrix(np.array([[3, -2]], dtype=np.int32))  # mixed sign: lava drops the lowest bit
    assert lava_weight_rules_csr(odd).toarray().tolist() == [[2, -2]]


def test_timeout_kills_the_lava_processes(tiny_built):
    from hw_backends.loihi.lava_run import LavaTimeoutError, run_lava
    with pytest.raises(LavaTimeoutError) as e:
        run_lava(tiny_built, digits(1).numpy(), timeout_s=1.0, progress=False)
    with pytest.raises(ProcessLookupError):
        os.killpg(e.value.pgid, 0)


def test_export_dir_loads_as_the_same_network(tiny_built, tmp_path):
    from hw_backends.loihi.lava_graph import load_export
    write_artifacts(tmp_path, tiny_built, {"name": "tiny"}, {})
    g, sched = load_export(tmp_path)
    assert sched["sample_period"] == tiny_built["schedule"]["sample_period"]
    assert [(p.pre, p.synapse, p.post, p.delay) for p in sched["projections"]] == \
        [(p.pre, p.synapse, p.post, p.delay) for p in tiny_built["schedule"]["projections"]]
    assert set(g.nodes) == set(tiny_built["graph"].nodes)
    assert Path(tmp_path, "network.h5").exists()


# ---------------------------------------------------------------------------------------------- Lava facts
_FACTS = r"""
import json, numpy as np
from scipy.sparse import csr_matrix
from lava.proc.io.source import RingBuffer as Src
from lava.proc.sparse.process import Sparse, DelaySparse
from lava.proc.lif.process import LIFReset
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
va, vb = [], []
try:
    for k in range(8):
        src.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        va.append(a.v.get().astype(int).tolist()); vb.append(b.v.get().astype(int).tolist())
finally:
    src.stop()
print("RESULT" + json.dumps({"a": va, "b": vb}))
"""


def test_lava_timing_facts():
    """The facts lava_graph relies on, measured on lava-nc itself (independent of the simulator):
    time_step starts at 1 (the source sends column 0 at step 1); a Sparse delivers at the next step; a
    DelaySparse with delay d at step 1 + 1 + d; LIFReset clears u and v at time_step % interval == offset
    before integrating that step's input; graded payloads pass through Sparse(num_message_bits=8) with an
    arithmetic right shift for weight_exp < 0."""
    import subprocess
    import sys

    from hw_backends.loihi.lava_run import ROOT, _kill_group
    proc = subprocess.Popen([sys.executable, "-c", _FACTS], cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
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


def test_run_lava_refuses_big_networks_before_starting_lava():
    from hw_backends.loihi.lava_graph import LavaGraphError
    from hw_backends.loihi.lava_run import run_lava
    m = randomized_model("digits-2-64").double()  # 16x16 input, D = 64: far too big for the CPU cross-check
    built = build(lower(spikformer_to_ir(m), ssa_order="kv_first"))
    with pytest.raises(LavaGraphError, match=r"patch_embed\.proj_conv\S* \(Conv2d.*exceeds the limit"):
        run_lava(built, digits(1).expand(-1, 1, -1, -1).numpy(), timeout_s=5)
