"""spk-convert end to end on a small checkpoint, --list-targets, and every kind of bad input: one line on
stderr, a nonzero exit code, nothing written."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hw_backends.nir import nir_io
from commands.convert import main
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from sim.engine import Engine
from spikformer.checkpoint import load_checkpoint, save_checkpoint

from .conftest import assert_one_line_error
from .helpers_models import randomized_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    save_checkpoint(path, randomized_model("digits-2-64", attn_drive=0.5), {"preset": "digits-2-64"})
    return path


def _only(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_end_to_end(cli, ckpt, tmp_path):
    out = tmp_path / "sub" / "model.nir"
    rc, stdout, err = cli(main, [ckpt, "--target", "nir", "-o", out])
    assert rc == 0, err
    assert out.is_file() and _only(out.parent) == ["model.nir"]
    assert "kv_first (auto)" in stdout and "qk_first" in stdout and "neurons" in stdout and "synapses" in stdout
    assert "LIF 19" in stdout and str(out) in stdout
    # the file simulates like the checkpoint's own lowered graph
    model, _, _ = load_checkpoint(ckpt)
    g = lower(spikformer_to_ir(model))
    back = nir_io.read_nir(out)
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 3
    assert torch.equal(Engine(back).run(x).outputs["output"], Engine(g).run(x).outputs["output"])
    md = nir_io.read_nir_graph(out).metadata
    assert '"preset": "digits-2-64"' in md["model_info"] and '"checkpoint_sha256"' in md["model_info"]


def test_ssa_order_option(cli, ckpt, tmp_path):
    out = tmp_path / "qk.nir"
    rc, stdout, err = cli(main, [ckpt, "-o", out, "--ssa-order", "qk_first"])
    assert rc == 0, err
    assert "qk_first (qk_first)" in stdout
    back = nir_io.read_nir(out)
    assert back.metadata["ssa"]["block.0.attn.product"]["order"] == "qk_first"
    assert "block.0.attn.product.qk_first.and.from_k" in back.nodes


def test_list_targets(cli):
    rc, stdout, err = cli(main, ["--list-targets"])
    assert rc == 0 and err == ""
    assert stdout.splitlines()[0].startswith("nir ") or any(ln.startswith("nir ") for ln in stdout.splitlines())


def test_console_script(tmp_path):
    """The installed entry point (or python -m commands.convert): exit code 2 and one error line for a user error."""
    exe = Path(sys.executable).parent / "spk-convert"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "commands.convert"]
    r = subprocess.run(cmd + [str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.nir")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("spk-convert: error:") and "does not exist" in r.stderr


@pytest.mark.parametrize("case", ["unknown_target", "missing_file", "not_a_checkpoint", "output_parent_is_file",
                                  "output_is_dir", "state_dict_of_no_preset", "unknown_preset"])
def test_bad_input(cli, ckpt, tmp_path, case):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.nir"
    args = [ckpt, "-o", out]
    needle = ""
    if case == "unknown_target":
        args += ["--target", "loihi9"]
        needle = "unknown target 'loihi9'; known targets: "
    elif case == "missing_file":
        args[0] = tmp_path / "missing.pt"
        needle = "does not exist"
    elif case == "not_a_checkpoint":
        bad = tmp_path / "bad.pt"
        bad.write_text("not a checkpoint")
        args[0] = bad
        needle = "not a PyTorch checkpoint"
    elif case == "output_parent_is_file":
        blocker = out_dir / "file"
        blocker.write_text("x")
        args[2] = blocker / "m.nir"
        needle = "is a file, not a directory"
    elif case == "output_is_dir":
        args[2] = out_dir
        needle = "is a directory"
    elif case == "state_dict_of_no_preset":
        sd = tmp_path / "sd.pt"
        torch.save(randomized_model("digits-2-64", num_classes=7).state_dict(), sd)
        args[0] = sd
        needle = "num_heads 12 from official default of the cifar layout"  # no preset has its shapes
    elif case == "unknown_preset":
        args += ["--preset", "nope-1-1"]
        needle = "unknown preset 'nope-1-1'"
    rc, stdout, err = cli(main, args)
    assert_one_line_error(rc, err, "spk-convert: error:", needle)
    assert _only(out_dir) == ([] if case != "output_parent_is_file" else ["file"])


def test_non_finite_weights(cli, tmp_path):
    model = randomized_model("digits-2-64")
    with torch.no_grad():
        model.block[1].mlp.fc1_linear.weight[0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model, {})
    out = tmp_path / "out" / "m.nir"
    rc, _, err = cli(main, [path, "-o", out])
    assert_one_line_error(rc, err, "spk-convert: error:", "block.1.mlp.fc1_linear")
    assert not out.parent.exists()


def test_ir_that_fails_validation(cli, ckpt, tmp_path, monkeypatch):
    import hw_backends.nir.target as nir_target

    real = nir_target.lower

    def broken_lower(g, *a, **k):
        g = real(g, *a, **k)
        del g.nodes["block.0.attn.q_lif"]  # leaves edges that name an unknown node
        return g

    monkeypatch.setattr(nir_target, "lower", broken_lower)
    out = tmp_path / "out" / "m.nir"
    rc, _, err = cli(main, [ckpt, "-o", out])
    assert_one_line_error(rc, err, "spk-convert: error:", "block.0.attn.q_lif", "unknown node")
    assert not out.parent.exists()


def test_unsupported_module(cli, ckpt, tmp_path, monkeypatch):
    import convert.source as source

    real = source.load_checkpoint

    def patched(*a, **k):
        model, cfg, meta = real(*a, **k)
        model.head = torch.nn.Sequential(model.head, torch.nn.ReLU())
        return model, cfg, meta

    monkeypatch.setattr(source, "load_checkpoint", patched)
    out = tmp_path / "m.nir"
    rc, _, err = cli(main, [ckpt, "-o", out])
    assert_one_line_error(rc, err, "spk-convert: error:", "'head'", "Sequential", "not supported")
    assert not out.exists()


def test_existing_output_kept_when_conversion_fails(cli, tmp_path):
    model = randomized_model("digits-2-64")
    with torch.no_grad():
        model.patch_embed.proj_conv.weight[0, 0, 0, 0] = float("inf")
    path = tmp_path / "inf.pt"
    save_checkpoint(path, model, {})
    out = tmp_path / "m.nir"
    out.write_bytes(b"previous")
    rc, _, err = cli(main, [path, "-o", out])
    assert rc != 0 and out.read_bytes() == b"previous" and _only(tmp_path) == ["inf.pt", "m.nir"]


def test_loihi_quantisation_options(cli, ckpt, tmp_path):
    """--weight-bits, --vth-mant and --input-scale reach the export (manifest options, quantization.json) and
    out-of-range values are one-line errors with exit 2 that write nothing."""
    import json
    out = tmp_path / "w8"
    rc, _, err = cli(main, [ckpt, "--target", "loihi", "-o", out, "--weight-bits", "8", "--vth-mant", "2048",
                            "--input-scale", "240"])
    assert rc == 0, err
    opts = json.loads((out / "manifest.json").read_text())["options"]
    assert (opts["weight_bits"], opts["vth_mant"], opts["input_scale"]) == (8, 2048, 240)
    q = json.loads((out / "quantization.json").read_text())
    assert q["weight_bits"] == 8 and q["input"]["payload_scale"] == 240
    assert not any(r.get("part") == "low" for r in q["synapses"].values())
    for args, needle in ((["--vth-mant", "0"], "vth mantissa must be a positive integer"),
                         (["--vth-mant", "200000"], "vth (unsigned 17 bit) exceeded"),
                         (["--input-scale", "70000"], "graded input payload (16 bit) exceeded")):
        bad = tmp_path / f"bad{args[1]}"
        rc, _, err = cli(main, [ckpt, "--target", "loihi", "-o", bad, *args])
        assert_one_line_error(rc, err, needle)
        assert rc == 2 and not bad.exists()


def test_the_literal_command_writes_beside_the_checkpoint(cli, ckpt, tmp_path):
    """`spk-convert model.pt --target loihi` as typed: model_loihi/ beside the checkpoint (model.nir for nir), the
    path printed; converting again says the old output is replaced."""
    import shutil
    model = tmp_path / "model.pt"
    shutil.copy(ckpt, model)
    for target, want in (("loihi", tmp_path / "model_loihi"), ("nir", tmp_path / "model.nir")):
        rc, out, err = cli(main, [model, "--target", target])
        assert rc == 0, err
        assert want.exists() and str(want) in out and "replaced" not in out
        rc, out, err = cli(main, [model, "--target", target])
        assert rc == 0, err
        assert f"{want} exists and will be replaced" in out
    assert (tmp_path / "model_loihi" / "manifest.json").is_file()
