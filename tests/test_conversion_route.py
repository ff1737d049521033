"""One conversion route: the three commands take the same conversion options with the same defaults, and the
network they export, check and report is the one convert() builds from those options."""
from __future__ import annotations

import json

import pytest
import torch

from commands import convert as convert_cmd
from commands import parity as parity_cmd
from commands import report as report_cmd
from convert.options import ConversionOptions
from hw_backends.conversion import convert
from sim.engine import Engine

from .conftest import assert_one_line_error
from .helpers_models import tiny_checkpoint

FLAGS = ("--preset", "--ssa", "--ssa-order", "--weight-bits", "--vth-mant", "--input-scale")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("route") / "tiny.pt")


def _actions(parser) -> dict:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_the_commands_share_every_conversion_flag_and_default():
    parsers = {m.__name__: _actions(m.build_parser()) for m in (convert_cmd, parity_cmd, report_cmd)}
    defaults = ConversionOptions()
    for flag in FLAGS:
        seen = {name: (a[flag].dest, a[flag].default, tuple(a[flag].choices or ())) for name, a in parsers.items()}
        assert len(set(seen.values())) == 1, f"{flag} differs between the commands: {seen}"
        dest, default, _ = next(iter(seen.values()))
        assert default == getattr(defaults, dest), f"{flag}: default {default!r} is not ConversionOptions'"


def test_options_are_checked_once(ckpt):
    with pytest.raises(ValueError, match="unknown SSA form 'fast'"):
        ConversionOptions(ssa="fast")
    with pytest.raises(ValueError, match="weight bits must be one of"):
        ConversionOptions(weight_bits=4)
    with pytest.raises(ValueError, match="runs the SSA form"):  # NIR has no graded spikes
        convert(ckpt, ConversionOptions(target="nir", ssa="graded"))


def test_build_states_its_arithmetic(ckpt):
    b = convert(ckpt, ConversionOptions(target="loihi"))
    assert b.numeric == "loihi_fixed" and b.ssa_form in ("binary", "graded")
    assert b.target.ssa_forms["chosen"] == b.ssa_form
    assert b.quantization["input"]["payload_scale"] == 256  # the checkpoint's data grid reached the target
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    graph, numeric = b.runnable("fixed")
    Engine(graph, numeric).run(x)
    with pytest.raises(ValueError, match="numeric 'float' does not fit"):
        Engine(graph, "float")  # a quantised graph in float semantics is refused, not silently misread
    lowered, numeric = b.runnable("float")
    assert numeric == "float" and lowered is b.lowered
    with pytest.raises(ValueError, match="numeric 'loihi_fixed' does not fit"):
        Engine(lowered, "loihi_fixed")
    assert convert(ckpt, ConversionOptions(target="nir")).numeric == "float"


def test_report_and_parity_use_the_exported_network(ckpt, tmp_path, cli):
    """spk-report and spk-parity with --weight-bits 8 run the network spk-convert exports with --weight-bits 8
    (before the shared route, spk-report had no quantisation options at all)."""
    rc, _, err = cli(convert_cmd.main, [ckpt, "--target", "loihi", "--weight-bits", "8", "-o", tmp_path / "ex"])
    assert rc == 0, err
    manifest = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert manifest["options"]["weight_bits"] == 8 and manifest["model"]["options"]["weight_bits"] == 8
    ops = {}
    for bits in (8, 16):
        out = tmp_path / f"r{bits}"
        rc, _, err = cli(report_cmd.main, [ckpt, "--target", "loihi", "--weight-bits", bits, "--samples", "2",
                                           "--device", "cpu", "--no-progress", "-o", out])
        assert rc == 0, err
        rep = json.loads((out / "energy.json").read_text())
        assert rep["run"]["conversion"]["weight_bits"] == bits and rep["run"]["quantization"]["weight_bits"] == bits
        ops[bits] = rep["totals"]["event_ops"]["effective_ac"] + rep["totals"]["event_ops"]["effective_mac"]
    assert ops[16] > ops[8]  # the 16-bit network has a second (low-part) synapse group per weight
    rc, _, err = cli(parity_cmd.main, [ckpt, "--target", "loihi", "--weight-bits", "8", "--samples", "2",
                                       "--device", "cpu", "--no-progress", "--min-agreement", "0",
                                       "-o", tmp_path / "p"])
    assert rc == 0, err
    facts = json.loads((tmp_path / "p" / "parity.json").read_text())["run"]
    assert facts["quantization"]["weight_bits"] == 8


def test_a_bad_option_is_one_line_in_every_command(ckpt, tmp_path, cli):
    for main, extra in ((convert_cmd.main, ["--target", "nir"]), (parity_cmd.main, ["--target", "nir"]),
                        (report_cmd.main, ["--target", "nir"])):
        rc, _, err = cli(main, [ckpt, *extra, "--ssa", "graded", "-o", tmp_path / "x"])
        assert_one_line_error(rc, err, "error:", "graded")


def test_attention_maps_of_the_float_lowering_equal_the_reference(ckpt, tmp_path, cli):
    """spk-report draws per-head Q K^T maps of the simulated network beside the PyTorch reference; in float
    semantics the lowering is spike-exact, so every map entry agrees."""
    out = tmp_path / "r"
    rc, stdout, err = cli(report_cmd.main, [ckpt, "--target", "nir", "--samples", "3", "--attention-samples", "2",
                                            "--device", "cpu", "--no-progress", "-o", out])
    assert rc == 0, err
    a = json.loads((out / "attention.json").read_text())
    assert (a["block"], a["step"], a["heads"], a["samples"]) == (0, 1, 2, 2)
    assert a["entries"] == 2 * 2 * a["tokens"] and a["equal_entries"] == a["entries"]
    assert sum(map(sum, a["per_sample_head"]["reference_total"])) > 0  # the attention is not silent
    assert (out / "attention.png").read_bytes()[:4] == b"\x89PNG"
    rc, _, err = cli(report_cmd.main, [ckpt, "--samples", "2", "--attention-block", "3", "--no-progress",
                                       "--device", "cpu", "-o", tmp_path / "bad"])
    assert_one_line_error(rc, err, "--attention-block 3", "blocks 0..0")


@pytest.mark.parametrize("layout", ["imagenet", "dvs"])
def test_every_command_runs_the_official_imagenet_and_dvs_layouts(layout, tmp_path, cli):
    """The ImageNet layout (bias-free Conv1d q/k/v, 1x1 Conv2d MLP) and the DVS layout (event frames, one per
    step) through every command: exported to NIR and Loihi, spike-exact in float semantics, reported."""
    import numpy as np

    from spikformer.checkpoint import save_checkpoint as save
    from spikformer.synthetic import randomized_model

    from .test_official_layouts import SMALL
    preset, changes = SMALL[layout]
    model = randomized_model(preset, seed=3, attn_drive=1.0, **changes)
    ckpt = tmp_path / f"{layout}.pt"
    save(ckpt, model, {})
    if layout == "imagenet":
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
                 y=np.arange(40) % model.config.num_classes)
        data = f"npz:{tmp_path / 'd.npz'}"
    else:
        data = "event-digits"
    for target in ("nir", "loihi"):
        rc, _, err = cli(convert_cmd.main, [ckpt, "--target", target, "-o", tmp_path / f"out_{target}"])
        assert rc == 0, err
    rc, _, err = cli(parity_cmd.main, [ckpt, "--target", "nir", "--data", data, "--samples", "6",
                                       "--min-agreement", "1.0", "--min-layer-agreement", "1.0", "--device", "cpu",
                                       "--no-progress", "-o", tmp_path / "p"])
    assert rc == 0, err
    overall = json.loads((tmp_path / "p" / "parity.json").read_text())["overall"]
    assert overall["total_spike_mismatches"] == 0
    for target in ("nir", "loihi"):
        rc, _, err = cli(report_cmd.main, [ckpt, "--target", target, "--data", data, "--samples", "4",
                                           "--attention-samples", "1", "--device", "cpu", "--no-progress",
                                           "-o", tmp_path / f"r_{target}"])
        assert rc == 0, err
    rep = json.loads((tmp_path / "r_nir" / "energy.json").read_text())
    first = next(r for r in rep["conventions"] if r["kind"] == "first_conv")
    assert first["paper_op"] == ("AC" if layout == "dvs" else "MAC")  # event frames are spikes
    assert any(r["layer"].endswith(".attn.q_conv") for r in rep["conventions"])


def test_binary_event_frames_enter_as_binary_spikes(tmp_path):
    """Event data whose counts are all 0/1 (dataset max_count 1): the Loihi input is binary spikes (no graded
    payload), recorded in the quantisation; frames with larger counts are refused, not clipped."""
    from spikformer.checkpoint import save_checkpoint as save
    from spikformer.synthetic import randomized_model
    model = randomized_model("event-digits-2-64", seed=2, attn_drive=1.0, depth=1, T=2)
    for max_count, binary in ((1, True), (3, False)):
        path = tmp_path / f"m{max_count}.pt"
        save(path, model, {"dataset": {"spec": "event-digits", "max_count": max_count, "value_grid": 1}})
        b = convert(path, ConversionOptions(target="loihi"))
        assert bool(b.graph.metadata.get("input_binary")) == binary
        assert ("binary spikes" in b.quantization["input"]["encoding"]) == binary
    from hw_backends.loihi.lava_conventions import message_bits
    b = convert(tmp_path / "m1.pt", ConversionOptions(target="loihi"))
    assert message_bits(b.graph.nodes["input"], b.graph) == 0
    frames = torch.zeros(1, 2, 2, 16, 16)
    frames[0, 0, 0, 3, 3] = 1.0
    Engine(b.graph, "loihi_fixed").run(frames)
    frames[0, 1, 1, 5, 5] = 2.0
    with pytest.raises(ValueError, match="binary event frames.*counts up to 2"):
        Engine(b.graph, "loihi_fixed").run(frames)


def test_a_matched_preset_is_named_in_every_output(tmp_path, cli):
    from spikformer.synthetic import randomized_model
    path = tmp_path / "official.pth"
    torch.save({f"module.{k}": v for k, v in randomized_model("digits-2-64", seed=1).state_dict().items()}, path)
    rc, out, err = cli(convert_cmd.main, [path, "--target", "nir"])
    assert rc == 0, err
    assert "digits-2-64 matched by parameter names and shapes" in out
    rc, _, err = cli(parity_cmd.main, [path, "--target", "nir", "--samples", "2", "--min-agreement", "0",
                                       "--device", "cpu", "--no-progress", "-o", tmp_path / "p"])
    assert rc == 0, err
    run = json.loads((tmp_path / "p" / "parity.json").read_text())["run"]
    assert run["preset"] == "matched: digits-2-64"
    assert run["architecture_origin"]["num_heads"] == "preset digits-2-64 (same parameter names and shapes)"
    assert run["data_config"]["mean"] is None  # our own preset: raw [0, 1] input, as it is trained
    rc, _, err = cli(report_cmd.main, [path, "--samples", "2", "--attention-samples", "0", "--device", "cpu",
                                       "--no-progress", "-o", tmp_path / "r"])
    assert rc == 0, err
    model = json.loads((tmp_path / "r" / "energy.json").read_text())["model"]
    assert model["preset"] == "digits-2-64" and model["preset_matched"] is True
    assert model["architecture_origin"]["depth"] == "state dict shapes"
    assert model["data_config"]["origin"] == "none: raw values in [0, 1], as preset digits-2-64 is trained"
