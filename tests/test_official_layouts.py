"""Every official Spikformer goes in: the three module layouts of ZK-Zhou/spikformer (cifar10/model.py,
imagenet/model.py, cifar10dvs/model.py) load official state dicts strictly, have the official parameter counts,
compute what the official forward computes, and lower to an IR graph that is spike-exact against the model.

The reference here is written from reading the official files (module names, types, shapes, registration order
and the forward's order of operations), independently of spikformer/model.py:

- cifar:    Linear q/k/v/proj/fc1/fc2 with bias, BatchNorm1d over channels of [T, B, N, C]; max-pool after SPS
            stages 2 and 3; attn = (Q K^T) * 0.125, then attn V.
- imagenet: q/k/v Conv1d(k=1, bias=False), proj Conv1d(k=1) with bias, BatchNorm1d; MLP 1x1 Conv2d with bias +
            BatchNorm2d on [T, B, C, H, W]; max-pool after all four SPS stages; Q (K^T V) * 0.125; the head
            averages over tokens (flatten(3).mean(3)) then over time; T = 4 (hard-coded in its forward).
- dvs:      as imagenet for the SSA, but MLP Conv1d(k=1) with bias + BatchNorm1d on [T, B, C, N]; scale 0.25,
            (Q K^T V) * scale; unused pos_embed [1, N, D] and norm LayerNorm(D); input [B, T, 2, H, W] permuted to
            time-major (no repetition); T = 16 (cifar10dvs/train.py).
All LIFs: MultiStepLIFNode(tau=2.0, detach_reset=True) (v_threshold 1, v_reset 0, decay_input), attn_lif
v_threshold 0.5. LayerNorms norm1/norm2 are never called.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from analysis.reference import record_reference
from convert import ir
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from sim.engine import Engine, InputError
from spikformer.model import Spikformer, count_parameters, functional, lif_modules, neuron
from spikformer.presets import PRESETS, SpikformerConfig, get_preset

from .helpers_models import mismatches
from .test_model import EXPECTED_PARAMS, PAPER_PARAMS_M

LAYOUT_OF = {"cifar10-4-384": "cifar", "digits-2-64": "cifar", "imagenet-8-384": "imagenet",
             "imagenet-8-512": "imagenet", "imagenet-8-768": "imagenet", "cifar10dvs-2-256": "dvs",
             "dvs128-2-256": "dvs", "event-digits-2-64": "dvs"}

# Parameter counts of the official module structures (measured on the reference below, all parameters including
# the never-called LayerNorms and, for DVS, pos_embed and norm).
OFFICIAL_PARAMS = EXPECTED_PARAMS  # one table: tests/test_model.py
# The papers' figures (Zhou et al. 2023, Tables 1-3) leave out the parameters that the forward never uses
# (LayerNorms norm1/norm2 of every block; DVS: pos_embed and norm): what remains rounds to them within 0.01M
# (PAPER_PARAMS_M, also from tests/test_model.py).


def test_every_preset_has_a_layout_and_count():
    assert set(PRESETS) == set(LAYOUT_OF) == set(OFFICIAL_PARAMS)
    for name, cfg in PRESETS.items():
        assert cfg.layout == LAYOUT_OF[name], name
        assert cfg.event_input == (cfg.layout == "dvs")


# ------------------------------------------------------------------------------------ the official structure
def _lif(v_threshold: float = 1.0) -> neuron.LIFNode:  # MultiStepLIFNode(tau=2.0, detach_reset=True[, v_threshold])
    return neuron.LIFNode(tau=2.0, v_threshold=v_threshold, detach_reset=True, step_mode="m")


def _sfx(i: int) -> str:
    return "" if i == 0 else str(i)


def official_structure(cfg: SpikformerConfig) -> nn.Module:
    """The official module tree of cfg.layout (names, types, shapes, registration order), from the official
    files. `pooled_stages` follows cfg.pool_stages (the official files: 2 for cifar, 4 for imagenet and dvs)."""
    layout, D, C = cfg.layout, cfg.embed_dim, cfg.in_channels
    ln_eps = 1e-5 if layout == "cifar" else 1e-6
    root = nn.Module()
    sps = nn.Module()
    widths = [C, D // 8, D // 4, D // 2, D]
    for i in range(4):
        setattr(sps, f"proj_conv{_sfx(i)}", nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=1, padding=1,
                                                      bias=False))
        setattr(sps, f"proj_bn{_sfx(i)}", nn.BatchNorm2d(widths[i + 1]))
        setattr(sps, f"proj_lif{_sfx(i)}", _lif())
        if i >= 4 - cfg.pool_stages:
            setattr(sps, f"maxpool{_sfx(i)}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    sps.rpe_conv = nn.Conv2d(D, D, kernel_size=3, stride=1, padding=1, bias=False)
    sps.rpe_bn = nn.BatchNorm2d(D)
    sps.rpe_lif = _lif()
    root.patch_embed = sps
    if layout == "dvs":
        root.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, D))
    blocks = nn.ModuleList()
    H = int(D * cfg.mlp_ratio)
    for _ in range(cfg.depth):
        blk = nn.Module()
        blk.norm1 = nn.LayerNorm(D, eps=ln_eps)
        attn = nn.Module()
        for t in ("q", "k", "v"):
            if layout == "cifar":
                setattr(attn, f"{t}_linear", nn.Linear(D, D))
            else:
                setattr(attn, f"{t}_conv", nn.Conv1d(D, D, kernel_size=1, stride=1, bias=False))
            setattr(attn, f"{t}_bn", nn.BatchNorm1d(D))
            setattr(attn, f"{t}_lif", _lif())
        attn.attn_lif = _lif(0.5)
        if layout == "cifar":
            attn.proj_linear = nn.Linear(D, D)
        else:
            attn.proj_conv = nn.Conv1d(D, D, kernel_size=1, stride=1)
        attn.proj_bn = nn.BatchNorm1d(D)
        attn.proj_lif = _lif()
        blk.attn = attn
        blk.norm2 = nn.LayerNorm(D, eps=ln_eps)
        mlp = nn.Module()
        if layout == "cifar":
            mlp.fc1_linear, mlp.fc1_bn = nn.Linear(D, H), nn.BatchNorm1d(H)
        elif layout == "imagenet":
            mlp.fc1_conv, mlp.fc1_bn = nn.Conv2d(D, H, kernel_size=1, stride=1), nn.BatchNorm2d(H)
        else:
            mlp.fc1_conv, mlp.fc1_bn = nn.Conv1d(D, H, kernel_size=1, stride=1), nn.BatchNorm1d(H)
        mlp.fc1_lif = _lif()
        if layout == "cifar":
            mlp.fc2_linear, mlp.fc2_bn = nn.Linear(H, D), nn.BatchNorm1d(D)
        elif layout == "imagenet":
            mlp.fc2_conv, mlp.fc2_bn = nn.Conv2d(H, D, kernel_size=1, stride=1), nn.BatchNorm2d(D)
        else:
            mlp.fc2_conv, mlp.fc2_bn = nn.Conv1d(H, D, kernel_size=1, stride=1), nn.BatchNorm1d(D)
        mlp.fc2_lif = _lif()
        blk.mlp = mlp
        blocks.append(blk)
    root.block = blocks
    if layout == "dvs":
        root.norm = nn.LayerNorm(D, eps=ln_eps)
    root.head = nn.Linear(D, cfg.num_classes)
    return root


def shapes(module: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_state_dict_names_shapes_and_parameter_count_are_official(name):
    """Full-size presets, built on the meta device (no memory): every state-dict entry has the official name and
    shape, a state dict with exactly the official entries loads with strict=True, and the parameter totals are
    equal."""
    cfg = get_preset(name)
    with torch.device("meta"):
        ref = official_structure(cfg)
        model = Spikformer(cfg)
    assert shapes(model) == shapes(ref)
    assert list(shapes(model)) == list(shapes(ref)), "state-dict order differs from the official registration order"
    result = model.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    n = count_parameters(model)
    assert n == count_parameters(ref) == OFFICIAL_PARAMS[name]
    if name in PAPER_PARAMS_M:
        unused = sum(p.numel() for k, p in model.named_parameters()
                     if ".norm1." in k or ".norm2." in k or k.startswith(("pos_embed", "norm.")))
        assert round((n - unused) / 1e6, 2) == pytest.approx(PAPER_PARAMS_M[name], abs=0.011)


def test_official_key_spellings():
    """A few entries spelled out by hand from the official files (not derived from any structure)."""
    inet = shapes(Spikformer(get_preset("imagenet-8-512").with_(img_size=32, depth=1)))
    assert inet["block.0.attn.q_conv.weight"] == (512, 512, 1)
    assert "block.0.attn.q_conv.bias" not in inet
    assert inet["block.0.attn.proj_conv.bias"] == (512,)
    assert inet["block.0.mlp.fc1_conv.weight"] == (2048, 512, 1, 1)
    assert inet["block.0.mlp.fc1_bn.running_mean"] == (2048,)
    assert inet["patch_embed.proj_conv.weight"] == (64, 3, 3, 3)
    dvs = shapes(Spikformer(get_preset("cifar10dvs-2-256")))
    assert dvs["pos_embed"] == (1, 64, 256) and dvs["norm.weight"] == (256,)
    assert dvs["block.1.mlp.fc2_conv.weight"] == (256, 1024, 1)
    assert dvs["patch_embed.proj_conv.weight"] == (32, 2, 3, 3)
    assert dvs["head.weight"] == (10, 256)
    assert shapes(Spikformer(get_preset("dvs128-2-256")))["head.weight"] == (11, 256)


# ------------------------------------------------------------------------------------ the official forward
def _tb(y: torch.Tensor, T: int, B: int) -> torch.Tensor:
    return y.reshape(T, B, *y.shape[1:]).contiguous()


def _official_sps(sps, x, layout):
    T, B = x.shape[:2]
    y = x.flatten(0, 1)
    for i in range(4):
        y = getattr(sps, f"proj_bn{_sfx(i)}")(getattr(sps, f"proj_conv{_sfx(i)}")(y))
        y = getattr(sps, f"proj_lif{_sfx(i)}")(_tb(y, T, B)).flatten(0, 1).contiguous()
        if hasattr(sps, f"maxpool{_sfx(i)}"):
            y = getattr(sps, f"maxpool{_sfx(i)}")(y)
    if layout == "dvs":  # x = x + x_rpe on the flattened batch, then [T, B, C, N]
        rpe = sps.rpe_lif(_tb(sps.rpe_bn(sps.rpe_conv(y)), T, B)).flatten(0, 1)
        y = y + rpe
        return y.reshape(T, B, -1, y.shape[-2] * y.shape[-1]).contiguous()
    feat = _tb(y, T, B)
    y = sps.rpe_lif(_tb(sps.rpe_bn(sps.rpe_conv(y)), T, B)) + feat
    if layout == "cifar":
        return y.flatten(-2).transpose(-1, -2)  # [T, B, N, C]
    return y  # imagenet: [T, B, C, H, W]


def _split_heads(y, h):  # [T, B, N, C] -> [T, B, h, N, C/h]
    T, B, N, C = y.shape
    return y.reshape(T, B, N, h, C // h).permute(0, 1, 3, 2, 4).contiguous()


def _official_attn(a, x, layout, h):
    if layout == "cifar":
        T, B, N, C = x.shape
        flat = x.flatten(0, 1)

        def qkv(t):
            y = getattr(a, f"{t}_linear")(flat)
            y = getattr(a, f"{t}_bn")(y.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
            return _split_heads(getattr(a, f"{t}_lif")(y), h)
        q, k, v = qkv("q"), qkv("k"), qkv("v")
        y = ((q @ k.transpose(-2, -1)) * 0.125) @ v
        y = a.attn_lif(y.transpose(2, 3).reshape(T, B, N, C).contiguous()).flatten(0, 1)
        return a.proj_lif(a.proj_bn(a.proj_linear(y).transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C))
    full = x.shape
    x = x.flatten(3)
    T, B, C, N = x.shape
    flat = x.flatten(0, 1)

    def qkv(t):
        y = getattr(a, f"{t}_bn")(getattr(a, f"{t}_conv")(flat)).reshape(T, B, C, N).contiguous()
        return _split_heads(getattr(a, f"{t}_lif")(y).transpose(-1, -2), h)
    q, k, v = qkv("q"), qkv("k"), qkv("v")
    if layout == "imagenet":
        y = (q @ (k.transpose(-2, -1) @ v)) * 0.125
    else:
        y = ((q @ k.transpose(-2, -1)) @ v) * 0.25
    y = a.attn_lif(y.transpose(3, 4).reshape(T, B, C, N).contiguous()).flatten(0, 1)
    return a.proj_lif(a.proj_bn(a.proj_conv(y)).reshape(full))


def _official_mlp(m, x, layout):
    T, B = x.shape[:2]
    if layout == "cifar":
        N, C = x.shape[2:]
        y = m.fc1_linear(x.flatten(0, 1))
        y = m.fc1_lif(m.fc1_bn(y.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, -1).contiguous())
        y = m.fc2_linear(y.flatten(0, 1))
        return m.fc2_lif(m.fc2_bn(y.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous())
    y = m.fc1_lif(_tb(m.fc1_bn(m.fc1_conv(x.flatten(0, 1))), T, B))
    return m.fc2_lif(_tb(m.fc2_bn(m.fc2_conv(y.flatten(0, 1))), T, B))


def official_forward(ref: nn.Module, cfg: SpikformerConfig, x: torch.Tensor) -> torch.Tensor:
    functional.reset_net(ref)
    if cfg.layout == "dvs":
        x = x.permute(1, 0, 2, 3, 4)
    else:
        x = x.unsqueeze(0).repeat(cfg.T, 1, 1, 1, 1)
    x = _official_sps(ref.patch_embed, x, cfg.layout)
    for blk in ref.block:
        x = x + _official_attn(blk.attn, x, cfg.layout, cfg.num_heads)
        x = x + _official_mlp(blk.mlp, x, cfg.layout)
    x = x.mean(2) if cfg.layout == "cifar" else x.flatten(3).mean(3)
    return ref.head(x.mean(0))


def random_state_dict(ref: nn.Module, seed: int, attn_drive: float = 1.0) -> dict[str, torch.Tensor]:
    """Random values for every official entry, BatchNorm statistics included (an identity BatchNorm would hide
    errors); the q/k/v BatchNorm biases are raised so that the attention neurons fire in a random model."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in ref.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(100, dtype=torch.long)
        elif k.endswith("running_var") or (k.endswith(".weight") and "_bn" in k):
            sd[k] = torch.rand(v.shape, generator=g) * 1.5 + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.rand(v.shape, generator=g) - 0.5
        elif k.endswith(".bias") and "_bn" in k:
            sd[k] = torch.rand(v.shape, generator=g) - 0.2 + (attn_drive if k.split(".")[-2] in
                                                             ("q_bn", "k_bn", "v_bn") else 0.0)
        else:
            fan_in = max(1, v[0].numel()) if v.dim() > 1 else 1
            sd[k] = torch.randn(v.shape, generator=g) * (1.5 / fan_in ** 0.5)
    return sd


SMALL = {  # every layout at a size the tests run in seconds; (preset, changes)
    "cifar": ("cifar10-4-384", dict(img_size=16, embed_dim=32, num_heads=4, depth=2, T=3)),
    "imagenet": ("imagenet-8-384", dict(img_size=32, embed_dim=32, num_heads=4, depth=2, T=3, num_classes=7)),
    "dvs": ("cifar10dvs-2-256", dict(img_size=32, embed_dim=32, num_heads=2, depth=2, T=4)),
    "event-digits": ("event-digits-2-64", dict(depth=2, T=3)),
}


def small_config(key: str) -> SpikformerConfig:
    name, changes = SMALL[key]
    return get_preset(name).with_(**changes)


def sample_input(cfg: SpikformerConfig, batch: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    """Images in [0, 3) (direct encoding), or event frames of Poisson counts (event input)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *cfg.input_shape, generator=g, dtype=torch.float64) * 3
    if cfg.event_input:
        x = torch.poisson(x / 2, generator=g)
    return x.to(dtype)


def loaded_pair(cfg: SpikformerConfig, seed: int = 0):
    ref = official_structure(cfg).eval()
    sd = random_state_dict(ref, seed)
    ref.load_state_dict(sd, strict=True)
    model = Spikformer(cfg).eval()
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ref, model


@pytest.mark.parametrize("key", sorted(SMALL))
def test_forward_is_the_official_forward(key):
    """Same official state dict in the official-order reference and in our model: identical logits, bit for bit
    (float32, as the official code runs), and identical spikes in every LIF."""
    cfg = small_config(key)
    ref, model = loaded_pair(cfg)
    x = sample_input(cfg, 3)
    seen = {}

    def hook(name):
        def f(m, inp, out):
            seen[name] = out.detach().reshape(out.shape[0], out.shape[1], -1).clone()
        return f

    ref_lifs, our_lifs = lif_modules(ref), lif_modules(model)
    assert set(ref_lifs) == set(our_lifs)
    handles = [m.register_forward_hook(hook(("ref", n))) for n, m in ref_lifs.items()]
    handles += [m.register_forward_hook(hook(("ours", n))) for n, m in our_lifs.items()]
    try:
        with torch.no_grad():
            want = official_forward(ref, cfg, x)
            got = model(x)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(got, want)
    for n in ref_lifs:
        assert torch.equal(seen[("ours", n)], seen[("ref", n)]), n
    fired = {n for n in ref_lifs if seen[("ref", n)].any()}
    assert fired == set(ref_lifs), f"silent neurons make the test weak: {sorted(set(ref_lifs) - fired)}"


def test_cifar10dvs_full_size_forward_is_official():
    """The official DVS SPS hard-codes its reshapes for 128x128 (64, 32, 16): at full size (T cut to 2 for time)
    the tokens are the 8x8 grid, as pos_embed [1, 64, 256] implies."""
    cfg = get_preset("cifar10dvs-2-256").with_(T=2)
    assert (cfg.img_size, cfg.grid, cfg.num_tokens) == (128, 8, 64)
    ref, model = loaded_pair(cfg, seed=3)
    x = sample_input(cfg, 1)
    tokens = {}

    def record(m, inp, out):
        tokens["sps"] = tuple(out.shape)

    model.patch_embed.register_forward_hook(record)
    with torch.no_grad():
        assert torch.equal(model(x), official_forward(ref, cfg, x))
    assert tokens["sps"] == (2, 1, 256, 64)


# ------------------------------------------------------------------------------------ configs and inputs
def test_config_layout_field_and_old_configs():
    old = {k: v for k, v in get_preset("digits-2-64").to_dict().items() if k != "layout"}
    assert SpikformerConfig.from_dict(old).layout == "cifar"
    assert SpikformerConfig.from_dict(old) == get_preset("digits-2-64")
    for name, cfg in PRESETS.items():
        assert SpikformerConfig.from_dict(cfg.to_dict()) == cfg, name
    with pytest.raises(ValueError, match="layout"):
        SpikformerConfig(layout="vit")
    dvs = get_preset("cifar10dvs-2-256")
    assert dvs.event_input and dvs.input_shape == (16, 2, 128, 128) and dvs.attn_scale == 0.25
    inet = get_preset("imagenet-8-512")
    assert not inet.event_input and inet.input_shape == (3, 224, 224) and inet.attn_scale == 0.125
    assert (inet.T, inet.num_tokens, inet.product_order) == (4, 196, "kv_first")
    assert get_preset("event-digits-2-64").input_shape == (8, 2, 16, 16)


def test_old_spk_train_checkpoint_loads_as_cifar_layout(digits_model, tmp_path):
    """A checkpoint written before the layout field existed (its config dict has no "layout") loads as the CIFAR
    layout it is."""
    from spikformer.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "old.pt", digits_model, {})
    raw = torch.load(path, weights_only=True)
    del raw["config"]["layout"]
    torch.save(raw, path)
    model, cfg, _ = load_checkpoint(path)
    assert cfg.layout == "cifar" and cfg == digits_model.config
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), digits_model(x))


def test_event_model_takes_one_frame_per_step():
    cfg = small_config("event-digits")
    _, model = loaded_pair(cfg)
    x = sample_input(cfg, 2)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 10)
        assert not torch.equal(model(x.flip(1)), y), "frame order has no effect: frames are not fed per step"
    with pytest.raises(ValueError, match=r"\[B, 3, 2, 16, 16\]"):
        model(x[:, 0])
    with pytest.raises(ValueError, match="time steps"):
        model(x[:, :2])


# ------------------------------------------------------------------------------------ lowering is exact
def exact_model(key: str) -> Spikformer:
    cfg = small_config(key)
    _, model = loaded_pair(cfg, seed=5)
    return model.double()


@pytest.fixture(scope="module", params=sorted(SMALL))
def case(request):
    model = exact_model(request.param)
    x = sample_input(model.config, 4, seed=2, dtype=torch.float64)
    logits, recs = record_reference(model, x)
    return model, x, logits, recs


def test_frontend_graph_is_spike_exact(case):
    model, x, logits, recs = case
    g = spikformer_to_ir(model)
    assert g.metadata.get("input_per_step", False) == model.config.event_input
    lifs = set(lif_modules(model))
    assert lifs <= set(recs), "a neuron of the model was never called"
    assert all(recs[n].any() for n in lifs), "silent neurons make the test weak"
    res = Engine(g, "float").run(x, record=list(recs))  # every LIF and max-pool (same names in the graph)
    torch.testing.assert_close(res.outputs["output"], logits, rtol=0, atol=1e-12)
    assert mismatches(recs, res.records) == {k: 0 for k in recs}


@pytest.mark.parametrize("form", ["binary", "graded"])
def test_lowered_graph_is_spike_exact(case, form):
    model, x, logits, recs = case
    g = lower(spikformer_to_ir(model), ssa_form=form)
    assert not g.of_type(*ir.HIGH_LEVEL_TYPES)
    res = Engine(g, "float").run(x, record=[n for n in recs if n in g.nodes])
    torch.testing.assert_close(res.outputs["output"], logits, rtol=0, atol=1e-12)
    assert set(lif_modules(model)) <= set(res.records)
    assert mismatches(recs, res.records) == {k: 0 for k in recs}


def test_token_wise_synapses_become_conv1d():
    model = exact_model("imagenet")
    g = spikformer_to_ir(model)
    q = g.nodes["block.0.attn.q_conv"]
    assert isinstance(q, ir.Conv1d) and q.bias is None and q.weight.shape == (32, 32, 1)
    fc1 = g.nodes["block.0.mlp.fc1_conv"]
    assert isinstance(fc1, ir.Conv1d) and fc1.bias is not None and fc1.weight.shape == (128, 32, 1)
    assert g.nodes["block.0.attn.product"].scale == 0.125
    assert spikformer_to_ir(exact_model("dvs")).nodes["block.1.attn.product"].scale == 0.25


def test_engine_event_input_shape_checks():
    model = exact_model("event-digits")
    g = spikformer_to_ir(model)
    eng = Engine(g, "float")
    x = sample_input(model.config, 2, dtype=torch.float64)
    with pytest.raises(InputError, match=r"\[B, 3, 2, 16, 16\].*time steps"):
        eng.run(x[:, 0])
    with pytest.raises(InputError, match="time steps"):
        eng.run(x[:, :2])
    with pytest.raises(InputError, match="4 time steps"):
        eng.run(x, T=4)
    # steps after the input (extra_steps) get zero frames, as an image graph gets a zero image
    res = eng.run(x, extra_steps=1, record=["patch_embed.proj_lif"])
    assert res.records["patch_embed.proj_lif"].shape[0] == 4


def test_frontend_refuses_a_conv_that_is_not_token_wise():
    from convert.frontend import UnsupportedModuleError

    model = exact_model("dvs")
    model.block[0].attn.q_conv = nn.Conv1d(32, 32, kernel_size=3, padding=1, bias=False).double()
    with pytest.raises(UnsupportedModuleError, match=r"block\.0\.attn\.q_conv.*kernel 1"):
        spikformer_to_ir(model)


def test_fixed_point_engine_takes_event_counts():
    """Loihi route of an event model: the fixed-point engine encodes frames as counts (hardware.loihi.numerics
    encode_input(counts=True), as the Lava runner), with no [0, 1] image-range warning, and agrees with the
    model."""
    import warnings

    from convert.options import ConversionOptions
    from convert.source import ModelSource
    from hw_backends.conversion import convert

    model = exact_model("dvs").float()
    build = convert(ModelSource(model, model.config), ConversionOptions(target="loihi"))
    assert build.graph.metadata["input_per_step"] is True
    x = sample_input(model.config, 4)
    assert x.max() > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = Engine(build.graph, build.numeric).run(x)
    with torch.no_grad():
        want = model(x).argmax(1)
    assert torch.equal(res.outputs["output"].argmax(1), want)
