"""The Spike-driven Transformer of spikformer/sdt_model.py against the official code (tests/official_sdt/, copied
unchanged from BICLab/Spike-Driven-Transformer, built as its train.py builds it): every preset's state dict has
the official keys, shapes and order and loads strictly both ways; the forward computes what the official
forward computes (lif and plif, dvs_mode's Erode, event frames). The converter's reading of it is tested in
test_sdt_lowering.py."""
from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import pytest
import torch

from spikformer.sdt_model import SpikeDrivenTransformer
from spikformer.sdt_presets import SDT_CONF_FILES, SDT_PRESETS

OFFICIAL = Path(__file__).resolve().parent / "official_sdt"


@contextlib.contextmanager
def _official_code():
    """The official `model.spikeformer` imported from tests/official_sdt, its neurons on spikingjelly's torch
    backend (they ask for cupy, which needs a GPU; tests/official_sdt/README.md)."""
    import spikingjelly.clock_driven.neuron as cd
    saved = {n: getattr(cd, n) for n in ("MultiStepLIFNode", "MultiStepParametricLIFNode")}

    def on_torch(cls):
        class OnTorch(cls):
            def __init__(self, *args, **kwargs):
                kwargs["backend"] = "torch"
                super().__init__(*args, **kwargs)
        OnTorch.__name__ = OnTorch.__qualname__ = cls.__name__
        return OnTorch

    clash = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in ("model", "module")}
    for n, c in saved.items():
        setattr(cd, n, on_torch(c))
    sys.path.insert(0, str(OFFICIAL))
    try:
        yield importlib.import_module("model.spikeformer")
    finally:
        sys.path.remove(str(OFFICIAL))
        for k in [k for k in sys.modules if k.split(".")[0] in ("model", "module")]:
            del sys.modules[k]
        sys.modules.update(clash)
        for n, c in saved.items():
            setattr(cd, n, c)


@pytest.fixture(scope="module")
def official():
    with _official_code() as mod:
        yield mod


def _official_model(official, cfg):
    """What train.py's create_model("sdt", ...) builds from the conf file's values (patch_size has no parameter;
    the class default is given, as the conf's null would fail in MS_SPS)."""
    return official.SpikeDrivenTransformer(
        img_size_h=cfg.img_size, img_size_w=cfg.img_size, patch_size=16, in_channels=cfg.in_channels,
        num_classes=cfg.num_classes, embed_dims=cfg.embed_dim, num_heads=cfg.num_heads, mlp_ratios=cfg.mlp_ratio,
        qkv_bias=False, depths=cfg.depth, sr_ratios=1, T=cfg.T, pooling_stat=cfg.pooling_stat,
        spike_mode=cfg.spike_mode, dvs_mode=cfg.dvs_mode, TET=cfg.tet).eval()


CASES = [(p, "lif") for p in SDT_PRESETS] + [(p, "plif") for p in ("sdt-cifar10-2-256", "sdt-cifar10dvs-2-256")]


@pytest.mark.parametrize("preset,spike_mode", CASES, ids=[f"{p}-{m}" for p, m in CASES])
def test_every_preset_has_the_official_state_dict(official, preset, spike_mode):
    cfg = SDT_PRESETS[preset].with_(spike_mode=spike_mode)
    ref, ours = _official_model(official, cfg), SpikeDrivenTransformer(cfg).eval()
    a, b = ref.state_dict(), ours.state_dict()
    assert list(a) == list(b)  # same keys in the same registration order
    assert {k: tuple(v.shape) for k, v in a.items()} == {k: tuple(v.shape) for k, v in b.items()}
    ours.load_state_dict(a, strict=True)
    ref.load_state_dict(b, strict=True)
    assert preset in SDT_CONF_FILES


def _randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(".w"):  # a PLIF's learned tau: 1 / sigmoid(w) in (1, inf)
                t.copy_(torch.rand(t.shape, generator=g) * 2 - 1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.3 if t.dim() > 1 else 0.5) + (0.3 if name.endswith(
                    "bn.bias") else 0.0))


FORWARD = [("sdt-cifar10-2-256", "lif", {}), ("sdt-cifar10-2-256", "plif", {}),
           ("sdt-cifar10dvs-2-256", "lif", {"img_size": 32, "T": 4}),
           ("sdt-gesture-2-256-t10", "plif", {"img_size": 32, "T": 3}),
           ("sdt-imagenet-8-384", "lif", {"img_size": 32, "depth": 1, "embed_dim": 64}),
           ("sdt-cifar10-2-256", "lif", {"embed_dim": 64, "mlp_ratio": 1})]  # MS_MLP_Conv's inner residual


@pytest.mark.parametrize("preset,spike_mode,smaller", FORWARD, ids=[f"{p}-{m}-{i}" for i, (p, m, _) in enumerate(FORWARD)])
def test_the_forward_computes_what_the_official_forward_computes(official, preset, spike_mode, smaller):
    """Logits and every neuron's spikes equal (float64, random weights and statistics, inputs firing)."""
    from spikingjelly.clock_driven import functional as official_functional
    cfg = SDT_PRESETS[preset].with_(spike_mode=spike_mode, **smaller)
    ref = _official_model(official, cfg).double()
    _randomize(ref, 1)
    ours = SpikeDrivenTransformer(cfg).double().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = torch.Generator().manual_seed(2)
    x = torch.rand((3, *cfg.input_shape), generator=g, dtype=torch.float64) * 2
    spikes = {}

    def record(tag):
        def hook(mod, inp, out):
            spikes[(tag, mod._tag)] = out.detach().clone()
        return hook

    for tag, m in (("ref", ref), ("ours", ours)):
        for name, mod in m.named_modules():
            if type(mod).__name__.endswith("LIFNode"):
                mod._tag = name
                mod.register_forward_hook(record(tag))
    official_functional.reset_net(ref)
    want, _ = ref(x)
    if cfg.tet:
        want = want.mean(0)
    got = ours(x)
    assert torch.equal(got, want)
    names = {k[1] for k in spikes if k[0] == "ref"}
    assert names == {k[1] for k in spikes if k[0] == "ours"} and len(names) >= 10
    for n in names:
        assert torch.equal(spikes[("ours", n)], spikes[("ref", n)]), n
    fired = [n for n in names if 0 < float(spikes[("ours", n)].mean()) < 1]
    assert len(fired) >= len(names) // 2, "a silent network would prove little"
