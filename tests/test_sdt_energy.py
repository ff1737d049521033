"""The Spike-driven Transformer's energy report and attention maps (analysis/energy_sdt.py, analysis/attention.py),
against referees that do not share their code: the dense FLOPs from forward hooks on the model's own modules
(k^2 c_in c_out h_out w_out per convolution, the paper supplement's S1), the paper convention's input rates from
the PyTorch forward's own spikes (every convolution reads one LIF or max-pool output), and the attention map from
the reference's q and talking-heads spikes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from analysis import energy_sdt
from analysis.energy_models import CMOS45
from commands.report import main as report_main
from convert.options import ConversionOptions
from convert.source import ModelSource
from hw_backends.conversion import convert
from spikformer.checkpoint import save_checkpoint
from spikformer.sdt_model import SpikeDrivenTransformer
from spikformer.sdt_presets import ALL_SDT_PRESETS, SDT_PRESETS

from .test_sdt_model import _randomize

CFG = SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=32, img_size=16, num_heads=2, T=2)


def _model(cfg=CFG, seed=5) -> SpikeDrivenTransformer:
    model = SpikeDrivenTransformer(cfg).eval()
    _randomize(model, seed)
    with torch.no_grad():  # q, k, v fire about half the time
        for name, t in model.state_dict().items():
            if any(name.endswith(f"attn.{k}_bn.bias") for k in "qkv"):
                t.add_(1.5)
    return model


def _hooked_flops(model: nn.Module, x: torch.Tensor) -> dict:
    """Per convolution and linear module: MACs of one sample and one step, from the shapes its forward sees."""
    out, hooks = {}, []
    steps = model.config.T * x.shape[0]

    def hook(name):
        def f(mod, inp, y):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1]
                out[name] = k * mod.in_channels * mod.out_channels * y.shape[-1] * y.shape[-2] * y.shape[0] // steps
            else:
                out[name] = mod.in_features * mod.out_features * y[..., 0].numel() // steps
        return f

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.endswith("talking_heads"):
            hooks.append(m.register_forward_hook(hook(name)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("preset", ["sdt-cifar10-2-256", "sdt-imagenet-8-384", "sdt-gesture-2-256-t10",
                                    "sdt-event-digits-2-64"])
def test_dense_flops_are_those_the_forward_sees(preset):
    cfg = ALL_SDT_PRESETS[preset]
    small = cfg.with_(img_size=min(cfg.img_size, 64), embed_dim=min(cfg.embed_dim, 64), num_heads=2, depth=1,
                      T=2)
    model = SpikeDrivenTransformer(small).eval()
    x = torch.zeros((1, *small.input_shape))
    want = _hooked_flops(model, x)
    got = {e.layer: e.flops for e in energy_sdt.dense_flops(small) if e.kind != "sdsa"}
    assert got == want
    N = (small.img_size // 2 ** small.pooling_stat.count("1")) ** 2
    assert [e.flops for e in energy_sdt.dense_flops(small) if e.kind == "sdsa"] == [2 * N * N * small.embed_dim]


def _reference_rates(model: nn.Module, x: torch.Tensor) -> dict:
    """Mean input value of every convolution and the head over samples, steps and positions, from hooks on the
    PyTorch forward (their inputs are the LIF and max-pool outputs)."""
    rates = {}

    def hook(name):
        def f(mod, inp, y):
            rates[name] = float(inp[0].double().mean())
        return f

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear)) and not n.endswith("talking_heads")]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rates


def test_the_paper_convention_prices_the_forward_s_own_rates(tmp_path):
    """Float mode: every convolution after the first and the head cost E_AC * rate * T * FLOPs with the rate of the
    PyTorch forward's own spikes (hooks, not the simulator's counters); the first convolution E_MAC * FLOPs once;
    the attention only its counted accumulates (ACs), never the ANN's 2 N^2 D."""
    from analysis.report import build_report
    model = _model().double()
    x = torch.rand((4, *CFG.input_shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    build = convert(ModelSource(model, CFG, {}, "sdt"), ConversionOptions(target="loihi"))
    rep = build_report(build, mode="float", images=x, labels=None, energy_model=CMOS45, checkpoint={}, data={}).report
    assert rep["paper_convention"] == "Spike-driven Transformer"
    rows = {r["layer"]: r for r in rep["conventions"]}
    rates = _reference_rates(model, x)
    first = rows.pop("patch_embed.proj_conv")
    assert first["paper_op"] == "MAC" and first["paper_pj"] == pytest.approx(first["flops"] * CMOS45.mac_pj)
    for b in range(CFG.depth):
        sdsa = rows.pop(f"block.{b}.attn (SDSA)")
        assert sdsa["paper_op"] == "AC" and 0 < sdsa["paper_ops"] < sdsa["flops"]
    for layer, r in rows.items():
        assert r["paper_op"] == "AC", layer
        assert r["paper_ops"] == pytest.approx(rates[layer] * CFG.T * r["flops"], rel=1e-9), layer
    assert sum(r["paper_ops"] > 0 for r in rows.values()) >= 0.8 * len(rows)  # the comparison is not of zeros
    assert rep["totals"]["paper_pj"] < rep["totals"]["ann_pj"]


def test_spk_report_on_a_spike_driven_transformer_with_its_attention_maps(tmp_path, cli):
    """spk-report --target loihi (the graded form in fixed point): the Spike-driven Transformer's conventions, its
    published ImageNet power beside the presets' dense FLOPs, the placement section (its bias source included in
    the chip crossings), and q * kv maps; in float mode the maps of the
    simulated AND neurons equal the reference's product of its q and talking-heads spikes."""
    from analysis.attention import attention_maps
    model = _model()
    save_checkpoint(tmp_path / "m.pt", model)
    rc, out, err = cli(report_main, [tmp_path / "m.pt", "--target", "loihi", "--samples", 4, "--no-progress",
                                     "--attention-samples", 2, "-o", tmp_path / "r"])
    assert rc == 0, err
    assert "(Spike-driven Transformer convention)" in out and "SSA decomposition" not in out
    rep = json.loads((tmp_path / "r" / "energy.json").read_text())
    assert rep["dense_flops"]["presets"]["sdt-imagenet-8-768"]["published_power_mj"] == 6.09
    crossings = rep["loihi_placement"]["chip_crossings"]["projections"]  # the bias source sends at every step
    from_bias = [r for r in crossings if r["pre"] == "bias_source"]
    assert from_bias and all(r["from_host"] and r["crossing_spikes"] == 4 * CFG.T for r in from_bias)
    md = (tmp_path / "r" / "energy.md").read_text()
    assert "paper convention (Spike-driven Transformer)" in md and "SSA decomposition (reported" not in md
    assert json.loads((tmp_path / "r" / "attention.json").read_text())["what"].startswith("SDSA output q * kv")
    build = convert(ModelSource(model.double(), CFG, {}, "sdt"), ConversionOptions(target="loihi"))
    x = torch.rand((2, *CFG.input_shape), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    maps = attention_maps(build, "float", x)
    assert maps["equal_entries"] == maps["entries"] > 0 and maps["reference"].sum() > 0
