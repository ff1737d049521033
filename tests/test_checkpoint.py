"""Checkpoint format, round trip, byte reproducibility and every refusal of load_checkpoint."""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch

from spikformer.checkpoint import (FORMAT, FORMAT_VERSION, CheckpointError, checkpoint_bytes, load_checkpoint,
                                   save_checkpoint)
from ground.errors import UserError
from spikformer.data import load_dataset
from spikformer.model import Spikformer
from spikformer.presets import get_preset

from .test_model import random_official_state_dict


class Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def write_exploit(path, marker):
    torch.save({"state_dict": {"head.weight": torch.zeros(10, 64)}, "payload": Exploit(marker)}, path)


def test_checkpoint_error_is_a_user_error():
    assert issubclass(CheckpointError, UserError)


def test_round_trip_identical_outputs(trained_model, tmp_path):
    cfg = trained_model.config
    meta = {"dataset": {"spec": "digits"}, "test_accuracy": 0.5, "note": ("a", 1)}
    path = save_checkpoint(tmp_path / "sub" / "m.pt", trained_model, meta)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    assert raw["config"] == cfg.to_dict()
    assert all(v.device.type == "cpu" for v in raw["state_dict"].values())
    model, cfg2, meta2 = load_checkpoint(path)
    assert cfg2 == cfg
    assert not model.training
    assert meta2["test_accuracy"] == 0.5 and meta2["note"] == ["a", 1]
    for k, v in trained_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    x = load_dataset("digits", cfg.img_size, cfg.in_channels)[2][:64]
    with torch.no_grad():
        assert torch.equal(trained_model(x), model(x))
    assert list(tmp_path.joinpath("sub").iterdir()) == [path], "temporary files left behind"


def test_same_model_same_bytes(digits_model, tmp_path):
    meta = {"train_seed": 0, "versions": {"torch": torch.__version__}}
    a = save_checkpoint(tmp_path / "a.pt", digits_model, meta)
    b = save_checkpoint(tmp_path / "other-name.pt", digits_model, meta)
    assert a.read_bytes() == b.read_bytes()
    assert checkpoint_bytes(digits_model, digits_model.config, meta) == a.read_bytes()


def test_trained_checkpoint_metadata(trained_digits):
    path, rc, _ = trained_digits
    assert rc == 0
    meta = torch.load(path, weights_only=True)["metadata"]
    for key in ("dataset", "split_seed", "train_seed", "epochs", "test_accuracy", "versions", "created_by"):
        assert key in meta, key
    assert meta["epochs"] == 8 and meta["train_seed"] == 0 and meta["split_seed"] == 0
    assert meta["dataset"]["name"] == "digits" and meta["dataset"]["n_test"] == 360
    assert set(meta["versions"]) >= {"torch", "spikingjelly", "numpy", "python"}
    assert all(isinstance(v, str) for v in meta["versions"].values())
    assert "time" not in " ".join(meta).lower()


# ---------------------------------------------------------------------------------------- official / bare dicts

@pytest.mark.parametrize("wrap", [None, "model", "state_dict", "module-prefix"])
def test_official_state_dict_finds_or_takes_its_preset(tmp_path, wrap):
    sd = random_official_state_dict()
    obj = sd
    if wrap == "module-prefix":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap:
        obj = {wrap: sd, "epoch": 299}
    path = tmp_path / "official.pth"
    torch.save(obj, path)
    found, cfg, meta = load_checkpoint(path)  # no preset: the one whose names and shapes match
    assert cfg == get_preset("cifar10-4-384") and meta["preset"] == "cifar10-4-384" and meta["preset_matched"]
    model, cfg, meta = load_checkpoint(path, preset="cifar10-4-384")
    assert cfg == get_preset("cifar10-4-384") and "preset_matched" not in meta
    assert torch.equal(model.state_dict()["head.weight"], sd["head.weight"])
    assert torch.equal(found.state_dict()["head.weight"], sd["head.weight"])


def test_preset_must_agree_with_saved_config(digits_model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", digits_model, {})
    load_checkpoint(path, preset="digits-2-64")  # agreeing preset is fine
    with pytest.raises(CheckpointError, match="different architecture"):
        load_checkpoint(path, preset="cifar10-4-384")


def test_unknown_preset(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(random_official_state_dict(), path)
    with pytest.raises(CheckpointError, match="unknown preset 'nope'"):
        load_checkpoint(path, preset="nope")


# ----------------------------------------------------------------------------------------------- refusals

def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    write_exploit(path, marker)
    with pytest.raises(CheckpointError, match="refused.*full unpickling.*execute code"):
        load_checkpoint(path, preset="digits-2-64")
    assert not marker.exists(), "loading ran the payload"
    # the file really is an exploit: full unpickling would have created the marker
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Exploit(marker), protocol=2))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_unexpected_and_misshaped_are_listed(tmp_path):
    sd = random_official_state_dict()
    del sd["block.1.attn.q_linear.weight"], sd["head.bias"]
    sd["block.0.attn.extra.weight"] = torch.zeros(3)
    sd["head.weight"] = torch.zeros(11, 384)
    sd["patch_embed.proj_conv.weight"] = torch.zeros(48, 1, 3, 3)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, preset="cifar10-4-384")
    msg = str(ei.value)
    assert "\n" not in msg
    assert "2 missing: block.1.attn.q_linear.weight, head.bias" in msg
    assert "1 unexpected: block.0.attn.extra.weight" in msg
    assert "head.weight (expected [10, 384], got [11, 384])" in msg
    assert "patch_embed.proj_conv.weight (expected [48, 3, 3, 3], got [48, 1, 3, 3])" in msg


def test_long_lists_are_truncated_on_one_line(tmp_path):
    path = tmp_path / "cifar.pt"
    torch.save(random_official_state_dict(), path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, preset="digits-2-64")  # wrong preset: nearly everything mis-shaped
    msg = str(ei.value)
    assert "\n" not in msg and "more" in msg and "mis-shaped" in msg and len(msg) < 3000


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "zip", "truncated", "no-tensors",
                                  "future-version"])
def test_unusable_files(tmp_path, kind, digits_model):
    path = tmp_path / "x.pt"
    expect = {"missing": "does not exist", "directory": "is a directory", "empty": "not a PyTorch checkpoint",
              "text": "not a PyTorch checkpoint", "zip": "not a valid PyTorch checkpoint",
              "truncated": "not a valid PyTorch checkpoint", "no-tensors": "neither a spikformer checkpoint",
              "future-version": "format version 2"}[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.txt", "x")
    elif kind == "truncated":
        data = checkpoint_bytes(digits_model, digits_model.config, {})
        path.write_bytes(data[: len(data) // 2])
    elif kind == "no-tensors":
        torch.save({"hello": [1, 2, 3]}, path)
    elif kind == "future-version":
        buf = io.BytesIO(checkpoint_bytes(digits_model, digits_model.config, {}))
        obj = torch.load(buf, weights_only=True)
        obj["format_version"] = 2
        torch.save(obj, path)
    with pytest.raises(CheckpointError, match=expect) as ei:
        load_checkpoint(path)
    assert "\n" not in str(ei.value)


def test_load_on_requested_device(digits_model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", digits_model, {})
    model, _, _ = load_checkpoint(path, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert isinstance(model, Spikformer)


# ---------------------------------------------------------------------------------------- training checkpoints

def _timm_checkpoint(sd: dict, ema: dict, args) -> dict:
    """What timm's CheckpointSaver writes (the official training scripts use it), from a DDP run."""
    model = Spikformer(get_preset("digits-2-64"))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.rand(2, 1, 16, 16)).sum().backward()
    opt.step()
    return {"epoch": 299, "arch": "spikformer", "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "optimizer": opt.state_dict(), "version": 2, "args": args, "metric": 95.2,
            "state_dict_ema": {f"module.{k}": v for k, v in ema.items()}}


def test_training_checkpoint_loads_without_running_code(digits_model, tmp_path):
    import argparse
    sd = digits_model.state_dict()
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in sd.items()}
    args = argparse.Namespace(model="spikformer", lr=5e-4, epochs=300, img_size=16, mean=[0.5], amp=True)
    path = tmp_path / "checkpoint-299.pth.tar"
    torch.save(_timm_checkpoint(sd, ema, args), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the case this supports: weights_only alone refuses the Namespace
    model, cfg, meta = load_checkpoint(path)  # the official test script's choice: state_dict
    assert cfg == get_preset("digits-2-64") and meta["preset_matched"]
    assert torch.equal(model.state_dict()["head.weight"], sd["head.weight"])
    assert meta["training"]["epoch"] == 299 and meta["training"]["metric"] == 95.2
    assert meta["training"]["args"] == {"model": "spikformer", "lr": 5e-4, "epochs": 300, "img_size": 16,
                                        "mean": [0.5], "amp": True}
    model, _, meta = load_checkpoint(path, weights="ema")
    assert torch.equal(model.state_dict()["head.weight"], ema["head.weight"])
    assert "EMA" in meta["source"]
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_checkpoint(bare, weights="ema")


def test_training_checkpoint_with_code_in_its_args_is_refused(digits_model, tmp_path):
    import argparse
    marker = tmp_path / "pwned"
    sd = digits_model.state_dict()
    path = tmp_path / "evil.pth.tar"
    torch.save(_timm_checkpoint(sd, sd, argparse.Namespace(lr=0.1, hook=Exploit(marker))), path)
    with pytest.raises(CheckpointError, match="refused.*full unpickling"):
        load_checkpoint(path)
    assert not marker.exists(), "loading ran the payload"


def test_a_state_dict_that_fits_no_preset_needs_what_its_shapes_do_not_say(digits_model, tmp_path):
    """7 classes: no preset has these shapes, so the head count is the cifar layout's official 12, which does not
    divide 64: one line naming the value, its origin and the flag; with --heads the model loads."""
    sd = dict(digits_model.state_dict())
    sd["head.weight"] = torch.zeros(7, 64)
    sd["head.bias"] = torch.zeros(7)
    path = tmp_path / "odd.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert "\n" not in msg and "not divisible by num_heads 12" in msg
    assert "num_heads 12 from official default of the cifar layout" in msg and "--heads" in msg
    with pytest.raises(CheckpointError, match="normalises 3 channels but the model takes 1; give --normalize none"):
        load_checkpoint(path, heads=4)  # the cifar layout's official normalisation is for RGB
    model, cfg, meta = load_checkpoint(path, heads=4, normalize="none")
    assert cfg == get_preset("digits-2-64").with_(num_classes=7, img_size=32) and meta["preset"] is None
    assert meta["architecture_origin"]["img_size"] == "official default of the cifar layout"
    model, cfg, meta = load_checkpoint(path, heads=4, img_size=16, normalize="none")
    assert cfg == get_preset("digits-2-64").with_(num_classes=7)
    assert meta["data_config"]["mean"] is None and meta["data_config"]["origin"] == "--normalize none"
    assert meta["architecture_origin"]["num_heads"] == "--heads"
    assert meta["architecture_origin"]["num_classes"] == "state dict shapes"
    assert torch.equal(model.state_dict()["head.weight"], sd["head.weight"])


def test_several_matching_presets_is_an_error(digits_model, tmp_path, monkeypatch):
    import spikformer.checkpoint as ck
    monkeypatch.setitem(ck.PRESETS, "digits-2-64-t8", get_preset("digits-2-64").with_(T=8))
    path = tmp_path / "sd.pt"
    torch.save(digits_model.state_dict(), path)
    with pytest.raises(CheckpointError, match="matches several presets.*digits-2-64, digits-2-64-t8.*--preset"):
        load_checkpoint(path)
    _, cfg, _ = load_checkpoint(path, preset="digits-2-64")
    assert cfg.T == 4


def test_every_preset_is_found_from_its_own_state_dict():
    """The shapes of the eight presets are distinct: each one's state dict matches exactly itself."""
    from spikformer.checkpoint import match_preset
    from spikformer.presets import PRESETS
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            sd = Spikformer(cfg).state_dict()
        assert match_preset(sd) == name
