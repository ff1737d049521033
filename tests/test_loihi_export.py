"""spk-convert --target loihi: artifacts, recorded quantisation, the network file simulating identically, fixed
point agreeing with float on a trained model, resource reports beyond one chip, limits as typed errors."""
import hashlib
import json

import numpy as np
import pytest
import torch

from commands import convert as convert_cli
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hardware.loihi import limits
from hw_backends.loihi.compile import compile_graph
from hw_backends.loihi.network_file import read_network
from sim.engine import Engine
from spikformer.checkpoint import save_checkpoint

from .helpers_models import randomized_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("loihi") / "model.pt"
    save_checkpoint(path, randomized_model("digits-2-64", seed=4, attn_drive=1.0), {"dataset": "random"})
    return path


@pytest.mark.parametrize("ssa", ["binary", "graded"])
def test_export_directory(ckpt, tmp_path, ssa, capsys):
    out = tmp_path / f"loihi_{ssa}"
    assert convert_cli.main([str(ckpt), "--target", "loihi", "--ssa", ssa, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loihi SSA binary" in printed and "loihi SSA graded" in printed  # the cost of both forms
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["ssa"] == ssa
    for name, rec in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == rec["sha256"]
    q = json.loads((out / "quantization.json").read_text())
    g, sched = read_network(out / "network.h5")
    populations = [n for n, node in g.nodes.items() if node.kind in ("LoihiLIF",)]
    assert set(populations) <= set(q["layers"])
    for name in populations:
        assert {"vth", "du", "dv"} <= set(q["layers"][name])
    lif = q["layers"]["block.0.attn.q_lif"]
    assert lif["dv"] == 2048 and lif["du"] == 4095 and lif["threshold_rule"]
    res = json.loads((out / "resources.json").read_text())
    assert res["total"]["cores"] >= 1 and res["ssa_forms"]["chosen"] == ssa
    assert "Cores by layer" in (out / "summary.md").read_text()


def test_network_file_simulates_like_the_built_graph(tmp_path):
    m = randomized_model("digits-2-64", seed=4, attn_drive=1.0).double()
    compiled = compile_graph(lower(spikformer_to_ir(m), ssa_form="graded"))
    from hw_backends.loihi.export import write_artifacts
    write_artifacts(tmp_path, compiled, {"name": "t"}, {})
    g, _ = read_network(tmp_path / "network.h5")
    x = torch.rand(3, 1, 16, 16)
    names = [n for n, node in compiled.graph.nodes.items() if node.spiking]
    a = Engine(compiled.graph, "loihi_fixed").run(x, record=names)
    b = Engine(g, "loihi_fixed").run(x, record=names)
    assert torch.equal(a.outputs["output"], b.outputs["output"])
    assert all(torch.equal(a.records[n], b.records[n]) for n in names)


def test_cifar_resources_beyond_one_chip():
    torch.manual_seed(0)
    from spikformer import PRESETS, Spikformer
    compiled = compile_graph(lower(spikformer_to_ir(Spikformer(PRESETS["cifar10-4-384"]).eval()), ssa_form="graded"))
    tot = compiled.resources["total"]
    assert tot["chips"] > 1 and tot["cores"] > limits.CORES_PER_CHIP


def test_limit_violation_is_a_typed_error_naming_the_node():
    m = randomized_model("digits-2-64", seed=4).double()
    with torch.no_grad():
        m.block[0].mlp.fc1_bn.bias[:] = 1e6  # a bias no 13-bit mantissa with a 3-bit exponent can hold
    with pytest.raises(limits.LoihiLimitError) as e:
        compile_graph(lower(spikformer_to_ir(m)))
    assert "block.0.mlp.fc1_lif" in str(e.value) and "allowed" in str(e.value)
    assert np.isfinite(e.value.used)
