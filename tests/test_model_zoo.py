"""Every configuration of the Spikformer paper loads from the official training checkpoint with no preset and no
flag: the architecture comes from the state dict's shapes and the checkpoint's args (spikformer.architecture),
the load is strict, and the loaded model computes the official forward of the same weights on officially
normalised input.

The checkpoints are written as the official scripts write them: cifar10/train.py and imagenet/train.py through
timm's CheckpointSaver ({epoch, arch, state_dict, optimizer, version, args: argparse.Namespace, metric}),
cifar10dvs/train.py its own dict ({model, optimizer, lr_scheduler, epoch, args, max_test_acc1, ...}). Their
module structure and forward are the independent reference of tests/test_official_layouts.py; the expected
configs below are spelled out by hand (the official yml values, the args each run would have saved)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from commands.convert import main as convert_main
from commands.train import eval_main
from spikformer.checkpoint import CheckpointError, load_checkpoint
from spikformer.presets import SpikformerConfig

from .conftest import assert_one_line_error
from .test_official_layouts import official_forward, official_structure, random_state_dict

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]      # cifar10/cifar10.yml
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]      # imagenet/imagenet.yml


def cifar(classes: int, depth: int, dim: int, heads: int) -> SpikformerConfig:
    return SpikformerConfig(img_size=32, in_channels=3, num_classes=classes, embed_dim=dim, num_heads=heads,
                            depth=depth, mlp_ratio=4.0, T=4, pool_stages=2, product_order="qk_first", layout="cifar")


def imagenet(depth: int, dim: int, heads: int) -> SpikformerConfig:
    return SpikformerConfig(img_size=224, in_channels=3, num_classes=1000, embed_dim=dim, num_heads=heads,
                            depth=depth, mlp_ratio=4.0, T=4, pool_stages=4, product_order="kv_first",
                            layout="imagenet")


def dvs(classes: int) -> SpikformerConfig:
    return SpikformerConfig(img_size=128, in_channels=2, num_classes=classes, embed_dim=256, num_heads=16, depth=2,
                            mlp_ratio=4.0, T=16, pool_stages=4, product_order="qk_first", layout="dvs")


# name: (expected config, the preset it equals or None). Heads: the cifar runs save num_heads in their args (12 for
# 384 as the yml; 8 for 256, the args of such a run); imagenet/train.py has no such argument: the registered 8 heads
# (imagenet/model.py), or 12 where the shapes are those of the 8-384 / 8-768 presets.
ZOO = {
    "cifar10-4-384": (cifar(10, 4, 384, 12), "cifar10-4-384"),
    "cifar10-4-256": (cifar(10, 4, 256, 8), None),
    "cifar10-2-384": (cifar(10, 2, 384, 12), None),
    "cifar10-2-256": (cifar(10, 2, 256, 8), None),
    "cifar100-4-384": (cifar(100, 4, 384, 12), None),
    "cifar100-4-256": (cifar(100, 4, 256, 8), None),
    "cifar100-2-384": (cifar(100, 2, 384, 12), None),
    "cifar100-2-256": (cifar(100, 2, 256, 8), None),
    "imagenet-6-512": (imagenet(6, 512, 8), None),
    "imagenet-8-384": (imagenet(8, 384, 12), "imagenet-8-384"),
    "imagenet-8-512": (imagenet(8, 512, 8), "imagenet-8-512"),
    "imagenet-10-512": (imagenet(10, 512, 8), None),
    "imagenet-8-768": (imagenet(8, 768, 12), "imagenet-8-768"),
    "cifar10dvs-2-256": (dvs(10), "cifar10dvs-2-256"),
    "dvs128-2-256": (dvs(11), "dvs128-2-256"),
}
# run at a smaller image size (the args' img_size; dvs: a smaller pos_embed) so the forward takes a moment
SMALL_IMG = {"cifar": 8, "imagenet": 16, "dvs": 32}


def official_args(cfg: SpikformerConfig, img_size: int) -> argparse.Namespace:
    """The args Namespace each official script saves (its argument names; values of the run)."""
    common = dict(lr=5e-4, epochs=300, seed=42, amp=True, model="spikformer")
    if cfg.layout == "cifar":  # cifar10/train.py with cifar10.yml (cifar100: the same code and yml, 100 classes)
        return argparse.Namespace(**common, time_step=cfg.T, layer=cfg.depth, dim=cfg.embed_dim,
                                  num_heads=cfg.num_heads, patch_size=4, mlp_ratio=4, num_classes=cfg.num_classes,
                                  img_size=img_size, input_size=None, mean=CIFAR_MEAN, std=CIFAR_STD, crop_pct=1.0,
                                  interpolation="bicubic", dataset=f"torch/cifar{cfg.num_classes}")
    if cfg.layout == "imagenet":  # imagenet/train.py with imagenet.yml: no model-size arguments
        return argparse.Namespace(**common, num_classes=1000, img_size=img_size, input_size=None, mean=IMAGENET_MEAN,
                                  std=IMAGENET_STD, crop_pct=1.0, interpolation="bicubic", dataset="imagenet")
    return argparse.Namespace(**common, dataset="cifar10dvs", num_classes=cfg.num_classes, T=cfg.T, T_train=None,
                              batch_size=16, opt="adamw")  # cifar10dvs/train.py


def save_official(path, cfg: SpikformerConfig, state: dict, args: argparse.Namespace) -> None:
    if cfg.layout == "dvs":
        obj = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {}, "epoch": 95,
               "args": args, "max_test_acc1": 80.9, "test_acc5_at_max_test_acc1": 99.0}
    else:  # timm CheckpointSaver.save_checkpoint
        obj = {"epoch": 299, "arch": "spikformer", "state_dict": state,
               "optimizer": {"state": {}, "param_groups": []}, "version": 2, "args": args, "metric": 95.5}
    torch.save(obj, path)


def expanded_state(ref: torch.nn.Module) -> dict:
    """The official entries with their shapes, every tensor a view of one stored number (a small file for the
    full-size models; the values do not matter for the architecture)."""
    one, steps = torch.ones(1), torch.full((1,), 100, dtype=torch.long)
    return {k: (steps if v.dtype == torch.long else one).expand(v.shape) if v.dim() else torch.tensor(100)
            for k, v in ref.state_dict().items()}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_official_training_checkpoint_loads_with_no_preset(name, tmp_path):
    cfg, preset = ZOO[name]
    with torch.device("meta"):
        ref = official_structure(cfg)
    path = tmp_path / "checkpoint-299.pth.tar"
    save_official(path, cfg, expanded_state(ref), official_args(cfg, cfg.img_size))
    model, got, meta = load_checkpoint(path)
    assert got == cfg
    assert list(model.state_dict()) == list(ref.state_dict())  # strict load of exactly the official entries
    assert meta["preset"] == preset and bool(meta.get("preset_matched")) == (preset is not None)
    origin = meta["architecture_origin"]
    for field in ("layout", "depth", "embed_dim", "num_classes", "in_channels", "mlp_ratio"):
        assert origin[field] == "state dict shapes", field
    if cfg.layout == "cifar":
        assert (origin["num_heads"], origin["T"]) == ("checkpoint args (num_heads)", "checkpoint args (time_step)")
    if cfg.layout == "dvs":
        assert origin["T"] == "checkpoint args (T)" and origin["img_size"].startswith("state dict shapes (pos_embed")
    if cfg.layout == "imagenet":
        assert origin["img_size"] == "checkpoint args (img_size)"
        assert origin["num_heads"] == ("official default of the imagenet layout" if preset is None
                                       else f"preset {preset} (same parameter names and shapes)")
    dc = meta["data_config"]
    if cfg.layout == "dvs":
        assert dc["mean"] is None and not model.input_normalized
    else:
        assert dc["mean"] == (CIFAR_MEAN if cfg.layout == "cifar" else IMAGENET_MEAN)
        assert dc["std"] == (CIFAR_STD if cfg.layout == "cifar" else IMAGENET_STD)
        assert dc["origin"] == "training checkpoint args" and model.input_normalized


def official_normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """timm's PrefetchLoader: 8-bit pixels as float minus 255 mean, over 255 std (float32 constants)."""
    u = (x * 255).round()
    m = torch.tensor([v * 255 for v in mean]).view(1, -1, 1, 1)
    s = torch.tensor([v * 255 for v in std]).view(1, -1, 1, 1)
    return (u - m) / s


RUN = sorted(n for n in ZOO if n not in ("imagenet-8-384", "imagenet-8-512", "imagenet-8-768"))  # those three:
# tests/test_official_layouts.py runs their layout at small size


@pytest.mark.parametrize("name", RUN)
def test_loaded_model_computes_the_official_forward(name, tmp_path):
    full, _ = ZOO[name]
    small = SMALL_IMG[full.layout]
    cfg = full.with_(img_size=small, T=min(full.T, 4))  # dvs: 4 of its 16 steps (args T) are enough here
    ref = official_structure(cfg).eval()
    state = random_state_dict(ref, seed=7)
    ref.load_state_dict(state, strict=True)
    path = tmp_path / "ckpt.pth.tar"
    save_official(path, cfg, state, official_args(cfg, small))
    model, got, meta = load_checkpoint(path)
    assert got == cfg
    g = torch.Generator().manual_seed(3)
    if cfg.event_input:
        x = torch.poisson(torch.rand(2, *cfg.input_shape, generator=g) * 1.5, generator=g)
        official_input = x
    else:
        x = torch.randint(0, 256, (2, *cfg.input_shape), generator=g).float() / 255  # what our data pipeline gives
        mean, std = (CIFAR_MEAN, CIFAR_STD) if cfg.layout == "cifar" else (IMAGENET_MEAN, IMAGENET_STD)
        official_input = official_normalize(x, mean, std)
    with torch.no_grad():
        want = official_forward(ref, cfg, official_input)
        assert torch.equal(model(x), want)
    assert not torch.equal(want[0], want[1]), "the same logits for different inputs test nothing"


def test_every_field_is_described_with_its_origin():
    from spikformer.architecture import describe
    cfg = cifar(100, 2, 256, 8)
    origin = {k: f"from-{k}" for k in cfg.to_dict()}
    line = describe(cfg, origin)
    assert "\n" not in line and line.startswith("no preset: ")
    for k, v in cfg.to_dict().items():
        assert f"{k} {v:g} (from-{k})" in line if isinstance(v, float) else f"{k} {v} (from-{k})" in line, k


# ------------------------------------------------------------------------------------- flags, args, errors
def _cifar100_small(tmp_path, **arg_changes):
    cfg = cifar(100, 2, 64, 4).with_(img_size=8, T=2)
    ref = official_structure(cfg)
    args = official_args(cfg, 8)
    for k, v in arg_changes.items():
        setattr(args, k, v)
    path = tmp_path / "c100.pth.tar"
    save_official(path, cfg, random_state_dict(ref, seed=1), args)
    return path, cfg


def test_flags_agree_with_or_contradict_the_args(tmp_path):
    path, cfg = _cifar100_small(tmp_path)
    _, got, meta = load_checkpoint(path, heads=4, time_steps=2, img_size=8)
    assert got == cfg and meta["architecture_origin"]["num_heads"] == "--heads (= checkpoint args num_heads)"
    for kw, flag, arg in (("heads", "--heads 8", "num_heads 4"), ("time_steps", "--time-steps 4", "time_step 2"),
                          ("img_size", "--img-size 16", "img_size 8")):
        with pytest.raises(CheckpointError) as ei:
            load_checkpoint(path, **{kw: {"heads": 8, "time_steps": 4, "img_size": 16}[kw]})
        msg = str(ei.value)
        assert "\n" not in msg and flag in msg and arg in msg and "contradicts" in msg, msg


def test_flags_fill_what_args_do_not_say(tmp_path):
    path, cfg = _cifar100_small(tmp_path, num_heads=None, time_step=None, img_size=None)
    _, got, meta = load_checkpoint(path, heads=4, time_steps=2, img_size=8)
    assert got == cfg
    assert [meta["architecture_origin"][k] for k in ("num_heads", "T", "img_size")] == \
        ["--heads", "--time-steps", "--img-size"]
    _, got, meta = load_checkpoint(path, heads=4)
    assert (got.T, got.img_size) == (4, 32) and meta["architecture_origin"]["T"] == \
        "official default of the cifar layout"


@pytest.mark.parametrize("arg,value,needle", [("dim", 128, "dim 128 but the state dict's shapes give embed_dim 64"),
                                              ("layer", 4, "layer 4 but the state dict's shapes give depth 2"),
                                              ("num_classes", 10, "num_classes 10 but the state dict's shapes give "
                                                                  "num_classes 100"),
                                              ("mlp_ratio", 2, "mlp_ratio 2 but the state dict's shapes give")])
def test_args_that_contradict_the_shapes_are_an_error(tmp_path, arg, value, needle):
    path, _ = _cifar100_small(tmp_path, **{arg: value})
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    assert "\n" not in str(ei.value) and needle in str(ei.value)


def test_dvs_img_size_comes_from_pos_embed(tmp_path):
    cfg = dvs(10).with_(img_size=32, T=2)
    path = tmp_path / "dvs.pth"
    save_official(path, cfg, expanded_state(official_structure(cfg)), official_args(cfg, 32))
    assert load_checkpoint(path)[1] == cfg
    with pytest.raises(CheckpointError, match=r"--img-size 128 contradicts pos_embed, whose 2x2 token grid with 4 "
                                              r"max-pools .* means img_size 32"):
        load_checkpoint(path, img_size=128)
    with pytest.raises(CheckpointError, match="event input is not normalised"):
        load_checkpoint(path, normalize="0.5,0.5/0.2,0.2")


def test_dvs_args_num_classes_is_not_a_model_fact(tmp_path):
    """cifar10dvs/train.py never passes --num-classes to create_model: a DVS128 run (11 classes) keeps the default
    10 in its args, and that is no contradiction."""
    cfg = dvs(11).with_(img_size=32)
    args = official_args(cfg, 32)
    args.num_classes = 10
    path = tmp_path / "dvs128.pth"
    save_official(path, cfg, expanded_state(official_structure(cfg)), args)
    assert load_checkpoint(path)[1] == cfg


def test_a_state_dict_that_is_no_spikformer(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048),
                "fc.bias": torch.zeros(1000)}, path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert "\n" not in msg and "is not a Spikformer state dict" in msg and "patch_embed.proj_conv.weight" in msg


def test_normalize_flag_overrides_the_args(tmp_path):
    path, _ = _cifar100_small(tmp_path)
    model, _, meta = load_checkpoint(path, normalize="none")
    assert not model.input_normalized and meta["data_config"]["origin"] == "--normalize none"
    model, _, meta = load_checkpoint(path, normalize="imagenet")
    assert meta["data_config"]["mean"] == IMAGENET_MEAN and model.input_normalized


# ------------------------------------------------------------------------------------------------ commands
@pytest.mark.parametrize("target,artifact", [("nir", "model.nir"), ("loihi", "loihi")])
def test_spk_convert_takes_a_non_preset_official_checkpoint(cli, tmp_path, target, artifact):
    path, cfg = _cifar100_small(tmp_path)
    out = tmp_path / artifact
    rc, stdout, err = cli(convert_main, [path, "--target", target, "-o", out])
    assert rc == 0, err
    assert out.exists()
    assert stdout.count("architecture: no preset: layout cifar, depth 2, embed_dim 64") == 1
    assert "num_heads 4 (checkpoint args (num_heads))" in stdout
    assert stdout.count("input: normalised with mean [0.4914, 0.4822, 0.4465]") == 1
    assert "(training checkpoint args)" in stdout
    if target == "nir":
        from hw_backends.nir import nir_io
        info = json.loads(nir_io.read_nir_graph(out).metadata["model_info"])
    else:
        info = json.loads((out / "manifest.json").read_text())["model"]
    assert info["config"] == cfg.to_dict() and info["preset"] is None
    assert info["architecture_origin"]["num_heads"] == "checkpoint args (num_heads)"
    assert info["architecture_origin"]["embed_dim"] == "state dict shapes"
    assert info["data_config"] == {"mean": CIFAR_MEAN, "std": CIFAR_STD, "interpolation": "bicubic",
                                   "crop_pct": 1.0, "origin": "training checkpoint args"}


def test_spk_convert_one_line_errors(cli, tmp_path):
    path, _ = _cifar100_small(tmp_path)
    rc, _, err = cli(convert_main, [path, "-o", tmp_path / "m.nir", "--heads", "8"])
    assert_one_line_error(rc, err, "spk-convert: error:", "--heads 8 contradicts", "num_heads 4")
    bad = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(10, 8)}, bad)
    rc, _, err = cli(convert_main, [bad, "-o", tmp_path / "m.nir"])
    assert_one_line_error(rc, err, "spk-convert: error:", "is not a Spikformer state dict")
    assert not (tmp_path / "m.nir").exists()


def test_spk_eval_takes_the_checkpoint_first_or_as_option(cli, tmp_path):
    path, _ = _cifar100_small(tmp_path)
    rc, _, err = cli(eval_main, [])
    assert_one_line_error(rc, err, "spk-eval: error:", "give the checkpoint once")
    rc, _, err = cli(eval_main, [path, "--checkpoint", path])
    assert_one_line_error(rc, err, "spk-eval: error:", "give the checkpoint once")
    # the flags reach the loader from either spelling (a conflict is the quickest proof, no data needed)
    for argv in ([path, "--heads", "8"], ["--checkpoint", path, "--heads", "8"]):
        rc, _, err = cli(eval_main, argv)
        assert_one_line_error(rc, err, "spk-eval: error:", "--heads 8 contradicts")


# ------------------------------------------------------------------------------------------------ spk-train
TINY_FLAGS = ["--depth", "1", "--dim", "16", "--heads", "2", "--img-size", "8", "--pool-stages", "1",
              "--time-steps", "2"]


def _train(cli, out, *extra):
    """One epoch on 60 random 8x8 images (an npz data set: unnormalised by default, as digits)."""
    import numpy as np
    from commands.train import main as train_main
    data = out.parent / "toy.npz"
    if not data.exists():
        rng = np.random.default_rng(0)
        np.savez(data, x=rng.integers(0, 256, (60, 8, 8)).astype(np.float32) / 255, y=np.arange(60) % 10)
    return cli(train_main, ["--data", f"npz:{data}", "--out", out, "--epochs", "1", "--device", "cpu",
                            "--no-progress", *extra])


def test_spk_train_builds_a_preset_with_overrides(cli, tmp_path):
    out = tmp_path / "tiny.pt"
    rc, stdout, err = _train(cli, out, *TINY_FLAGS)
    assert rc == 0, err
    saved = torch.load(out, weights_only=True)
    want = SpikformerConfig(img_size=8, in_channels=1, num_classes=10, embed_dim=16, num_heads=2, depth=1,
                            mlp_ratio=4.0, T=2, pool_stages=1, product_order="qk_first", layout="cifar")
    assert SpikformerConfig.from_dict(saved["config"]) == want
    meta = saved["metadata"]
    assert meta["base_preset"] == "digits-2-64" and meta["preset"] is None and "data_config" not in meta
    assert meta["architecture_origin"] == {"layout": "preset digits-2-64", "img_size": "--img-size",
                                           "in_channels": "preset digits-2-64",
                                           "num_classes": "preset digits-2-64", "embed_dim": "--dim",
                                           "num_heads": "--heads", "depth": "--depth",
                                           "mlp_ratio": "preset digits-2-64", "T": "--time-steps",
                                           "pool_stages": "--pool-stages", "product_order": "preset digits-2-64"}
    assert stdout.count("architecture: no preset: layout cifar, mlp_ratio 4, num_classes 10, in_channels 1, "
                        "product_order qk_first (preset digits-2-64); depth 1 (--depth); embed_dim 16 (--dim); "
                        "num_heads 2 (--heads)") == 1
    _, cfg, loaded = load_checkpoint(out)
    assert cfg == want and loaded["architecture_origin"]["embed_dim"] == "--dim"
    assert loaded["data_config"]["mean"] is None


def test_spk_train_a_plain_preset_writes_no_new_entries(cli, tmp_path):
    """The checkpoint of a preset trained as before has the metadata it always had (so the bytes are the same):
    flags that repeat the preset's values change nothing."""
    out = tmp_path / "plain.pt"
    rc, _, err = _train(cli, out, "--preset", "digits-2-64", "--dim", "64", "--layout", "cifar", "--depth", "1",
                        "--img-size", "8")
    assert rc == 0, err
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["base_preset"] == "digits-2-64"  # depth 1 is an override
    out2 = tmp_path / "plain2.pt"
    rc, _, err = _train(cli, out2, "--preset", "digits-2-64", "--dim", "64", "--normalize", "none")  # 16x16
    assert rc == 0, err
    meta = torch.load(out2, weights_only=True)["metadata"]
    assert meta["preset"] == "digits-2-64"
    assert not {"base_preset", "architecture_origin", "data_config"} & set(meta)


def test_spk_train_with_normalisation_writes_it_and_the_model_applies_it(cli, tmp_path):
    out = tmp_path / "norm.pt"
    rc, stdout, err = _train(cli, out, *TINY_FLAGS, "--normalize", "0.5/0.25")
    assert rc == 0, err
    assert "input: normalised with mean [0.5] std [0.25]" in stdout
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["data_config"]["mean"] == [0.5] and meta["data_config"]["std"] == [0.25]
    model, _, loaded = load_checkpoint(out)
    assert model.input_normalized and loaded["data_config"]["origin"] == "checkpoint data_config"
    x = torch.randint(0, 256, (4, 1, 8, 8)).float() / 255
    raw, _, _ = load_checkpoint(out, normalize="none")
    assert not raw.input_normalized
    with torch.no_grad():
        assert torch.equal(model(x), raw((x * 255 - 127.5) / 63.75))  # 255 * 0.5, 255 * 0.25: exact in float32


@pytest.mark.parametrize("extra,needle", [
    (["--dim", "60"], "embed_dim must be a multiple of 8"),
    (["--heads", "5"], "embed_dim 64 is not divisible by num_heads 5"),
    (["--depth", "-1"], "--depth must be positive"),
    (["--layout", "dvs", "--in-channels", "2", "--normalize", "cifar"], "takes event counts"),
    (["--normalize", "cifar"], "normalises 3 channels but the model takes 1"),
    (["--normalize", "0.5"], "--normalize '0.5'"),
])
def test_spk_train_architecture_errors(cli, tmp_path, extra, needle):
    out = tmp_path / "m.pt"
    rc, _, err = _train(cli, out, *extra)
    assert_one_line_error(rc, err, "spk-train: error:", needle)
    assert not out.exists()


def test_spk_train_normalises_the_official_data_sets_by_default():
    from commands.train_config import training_data_config
    cfg = cifar(10, 4, 384, 12)
    for spec, mean in (("cifar10:/data", CIFAR_MEAN), ("cifar100:/data", CIFAR_MEAN), ("digits", None),
                       ("npz:/x.npz", None)):
        dc = training_data_config(argparse.Namespace(normalize=None, data=spec), cfg)
        assert (list(dc.mean) if dc.mean else None) == mean, spec
    inet = training_data_config(argparse.Namespace(normalize=None, data="imagenet:/data"), imagenet(8, 512, 8))
    assert list(inet.mean) == IMAGENET_MEAN and "imagenet/imagenet.yml" in inet.origin
    assert not training_data_config(argparse.Namespace(normalize=None, data="cifar10:/d"), dvs(10)).normalized
