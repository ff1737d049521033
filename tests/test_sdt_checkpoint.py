"""Spike-driven Transformer checkpoints as users have them: the official code's state dicts (tests/official_sdt,
built as its train.py builds them) and its training checkpoints (timm's, with train.py's args) load without flags
beyond what the file lacks, the architecture inferred from the shapes, the args and the presets; spk-convert takes
them to Loihi; spk-train trains one of ours (docs/sdt_lowering.md, "Checkpoints")."""
from __future__ import annotations

import argparse

import pytest
import torch

from commands.convert import main as convert_main
from commands.train import main as train_main
from spikformer.architecture import ArchitectureError
from spikformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from spikformer.data_config import OFFICIAL
from spikformer.sdt_architecture import infer_sdt_architecture
from spikformer.sdt_model import SpikeDrivenTransformer
from spikformer.sdt_presets import SDT_PRESETS, SDTConfig

from .conftest import assert_one_line_error
from .test_sdt_model import _official_code, _official_model, _randomize

# presets whose state dicts have the same shapes as another preset's: what tells them apart must be given
NEEDS = {"sdt-gesture-2-256-t10": {"T": 10}, "sdt-gesture-2-256-t16": {"T": 16}}
TWINS = {"sdt-cifar10-2-512-tet": "sdt-cifar10-2-512"}  # the same shapes and inference, trained without TET


@pytest.fixture(scope="module")
def official():
    with _official_code() as mod:
        yield mod


def _official_state(official, cfg: SDTConfig, meta: bool = False) -> dict:
    if meta:  # names and shapes only: the ImageNet presets without allocating their weights (the drop-path rates'
        # linspace is read with .item(), which a meta tensor cannot give: it alone stays on the CPU)
        linspace = torch.linspace
        with torch.device("meta"), pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
            return _official_model(official, cfg).state_dict()
    model = _official_model(official, cfg)
    _randomize(model, 3)
    return model.state_dict()


@pytest.mark.parametrize("preset", list(SDT_PRESETS))
def test_every_official_configuration_is_inferred_from_its_state_dict(official, preset):
    """Only the official code's parameter names and shapes (and, for the two gesture presets, which share them, T)
    go in; the preset's configuration comes out. TET changes training, not inference: a TET state dict whose
    shapes are also a preset's without TET is inferred as that twin."""
    cfg = SDT_PRESETS[preset]
    arch = infer_sdt_architecture(_official_state(official, cfg, meta=True), None, NEEDS.get(preset), preset)
    twin = TWINS.get(preset, preset)
    assert arch.config == SDT_PRESETS[twin] and arch.preset == twin
    assert arch.origin["embed_dim"] == arch.origin["num_heads"] == "state dict shapes"


def test_what_the_shapes_cannot_tell_is_asked_for_in_one_line(official):
    state = _official_state(official, SDT_PRESETS["sdt-gesture-2-256-t10"], meta=True)
    with pytest.raises(ArchitectureError, match="--time-steps") as e:
        infer_sdt_architecture(state, None, None, "g.pth")
    assert "\n" not in str(e.value) and "sdt-gesture-2-256-t16" in str(e.value)
    odd = _official_state(official, SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=96, num_heads=4), meta=True)
    with pytest.raises(ArchitectureError, match="img_size is not in the checkpoint.*give --img-size"):
        infer_sdt_architecture(odd, None, None, "odd.pth")
    assert infer_sdt_architecture(odd, None, {"img_size": 32}, "odd.pth").config.embed_dim == 96


def _training_checkpoint(path, state: dict, **args) -> None:
    """What timm's CheckpointSaver writes from the official train.py: its argparse Namespace beside the weights."""
    torch.save({"epoch": 7, "arch": "sdt", "state_dict": state, "optimizer": {}, "version": 2,
                "args": argparse.Namespace(model="sdt", **args)}, path)


def test_a_training_checkpoint_s_args_say_what_the_shapes_cannot(official, tmp_path):
    """The gesture and cifar10-dvs set-ups of train.py, small: T, img_size, pooling_stat and the data set (event
    frames; dvs_mode for cifar10-dvs, which train.py sets into the args) from the args, no flag given."""
    for dataset, dvs in (("gesture", False), ("cifar10-dvs", True)):
        cfg = SDTConfig(img_size=32, in_channels=2, num_classes=11, embed_dim=32, num_heads=2, depth=1, T=3,
                        pooling_stat="0111", spike_mode="plif", dvs_mode=dvs, event_input=True)
        state = _official_state(official, cfg)
        path = tmp_path / f"{dataset}.pth.tar"
        _training_checkpoint(path, state, dataset=dataset, time_steps=3, img_size=32, pooling_stat="0111", TET=False,
                             dim=32, layer=1, num_heads=2, spike_mode="plif", mean=None, std=None, dvs_mode=dvs)
        model, config, meta = load_checkpoint(path)
        assert config == cfg and isinstance(model, SpikeDrivenTransformer)
        assert meta["architecture_origin"]["T"] == "checkpoint args (time_steps)"
        assert meta["architecture_origin"]["dvs_mode"] == "checkpoint args (dvs_mode)"
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    _training_checkpoint(tmp_path / "bad.pth.tar", state, dataset="gesture", time_steps=3, img_size=32, dim=64)
    with pytest.raises(CheckpointError, match="args say dim 64 but the state dict's shapes give embed_dim 32"):
        load_checkpoint(tmp_path / "bad.pth.tar")


def test_the_data_config_is_the_official_conf_s_and_the_model_normalises_as_its_loader(official, tmp_path):
    """A bare CIFAR state dict takes conf/cifar10's mean and std (the official loader normalises; the state dict
    does not say so); the loaded model's logits on raw [0, 1] pixels equal the official model's on the
    normalised tensor, computed here from the yml's numbers as timm's PrefetchLoader does."""
    ref = _official_model(official, SDT_PRESETS["sdt-cifar10-2-256"])
    _randomize(ref, 4)
    torch.save(ref.state_dict(), tmp_path / "c.pth")
    model, _, meta = load_checkpoint(tmp_path / "c.pth")
    assert meta["data_config"]["mean"] == list(OFFICIAL["sdt-cifar"].mean)
    u = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1)).float()
    mean = torch.tensor([m * 255 for m in (0.4914, 0.4822, 0.4465)])  # PrefetchLoader: 255 m in double, then float32
    std = torch.tensor([s * 255 for s in (0.2470, 0.2435, 0.2616)])
    from spikingjelly.clock_driven import functional as official_functional
    official_functional.reset_net(ref)
    with torch.no_grad():
        want, _ = ref((u - mean[:, None, None]) / std[:, None, None])
        got = model(u / 255)
    assert torch.equal(got, want.mean(0) if want.dim() == 3 else want)


def test_our_format_keeps_the_architecture_and_a_spikformer_file_is_as_before(tmp_path):
    cfg = SDT_PRESETS["sdt-cifar10-2-256"].with_(embed_dim=32, num_heads=2, spike_mode="plif")
    model = SpikeDrivenTransformer(cfg).eval()
    _randomize(model, 2)
    save_checkpoint(tmp_path / "m.pt", model, {"note": "x"})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["architecture"] == "spike-driven-transformer"
    back, config, meta = load_checkpoint(tmp_path / "m.pt")
    assert config == cfg and isinstance(back, SpikeDrivenTransformer) and meta["preset"] is None
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
    from spikformer.model import Spikformer
    from spikformer.presets import get_preset
    save_checkpoint(tmp_path / "s.pt", Spikformer(get_preset("digits-2-64")))
    assert "architecture" not in torch.load(tmp_path / "s.pt", weights_only=True)
    raw["architecture"] = "vgg"
    torch.save(raw, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="holds a 'vgg' model"):
        load_checkpoint(tmp_path / "v.pt")


def test_spk_convert_takes_an_official_state_dict_to_loihi_and_nir_refuses_in_one_line(official, cli, tmp_path):
    """No flag: the preset comes from the shapes, the data config from its conf; the binary form is reported as not
    built (float semantics only), the graded form placed; NIR refuses the graded max-pool and writes nothing."""
    path = tmp_path / "sdt.pth"
    torch.save(_official_state(official, SDT_PRESETS["sdt-cifar10-2-256"]), path)
    rc, out, err = cli(convert_main, [path, "--target", "loihi", "-o", tmp_path / "loihi"])
    assert rc == 0, err
    assert "sdt-cifar10-2-256 matched by parameter names and shapes" in out
    assert "loihi SSA binary: not built" in out and "loihi SSA graded (chosen, on loihi2)" in out
    assert (tmp_path / "loihi" / "network.h5").is_file()
    rc, out, err = cli(convert_main, [path, "--target", "nir", "-o", tmp_path / "m.nir"])
    assert_one_line_error(rc, err, "patch_embed.maxpool3", "NIR has no ReLU node")
    assert not (tmp_path / "m.nir").exists()


def test_spk_train_trains_a_spike_driven_transformer_and_refuses_spikformer_only_flags(cli, tmp_path):
    out = tmp_path / "m.pt"
    rc, stdout, err = cli(train_main, ["--preset", "sdt-digits-2-64", "--data", "digits", "--out", out, "--epochs", 1,
                                       "--dim", 32, "--depth", 1, "--no-progress"])
    assert rc == 0, err
    model, config, meta = load_checkpoint(out)
    assert isinstance(model, SpikeDrivenTransformer) and (config.embed_dim, config.depth) == (32, 1)
    assert meta["architecture_origin"]["embed_dim"] == "--dim" and meta["test_accuracy"] is not None
    rc, _, err = cli(train_main, ["--preset", "sdt-digits-2-64", "--data", "digits", "--out", out, "--layout", "cifar"])
    assert_one_line_error(rc, err, "--layout does not apply to the Spike-driven Transformer preset sdt-digits-2-64")
