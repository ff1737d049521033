"""spk-train / spk-eval end to end (in-process) and every user error: nonzero exit, one stderr line, no
traceback, no output file. The >= 95 % accuracy claim is measured by `bash scripts/demo.sh` (20 epochs); here a
2-epoch run is a smoke test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import assert_one_line_error
from commands.train import eval_main, main
from spikformer.train import train
from spikformer.presets import get_preset

from .test_model import random_official_state_dict


def test_train_smoke_via_cli(trained_digits):
    path, rc, out = trained_digits
    assert rc == 0, out
    assert path.is_file()
    assert "test accuracy:" in out and "parameters: 164,418" in out
    meta = torch.load(path, weights_only=True)["metadata"]
    assert meta["test_accuracy"] > 0.8  # chance is 0.1; 8 epochs reach about 0.92
    assert [h["epoch"] for h in meta["history"]] == list(range(1, 9))
    assert meta["dataset"]["value_grid"] == 256  # digits 0..16 upsampled to 16x16: multiples of 1/256
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_eval_cli_reproduces_training_accuracy(trained_digits, cli):
    path, _, _ = trained_digits
    meta = torch.load(path, weights_only=True)["metadata"]
    rc, out, err = cli(eval_main, ["--checkpoint", path, "--device", "cpu"])
    assert rc == 0, err
    assert f"test accuracy: {100 * meta['test_accuracy']:.2f} %" in out


def test_train_function_is_seeded():
    cfg = get_preset("digits-2-64").with_(depth=1, embed_dim=16, num_heads=2, img_size=8, pool_stages=1, T=2)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((40, 1, 8, 8), dtype=np.float32))
    y = torch.arange(40) % 10
    data = ((x[:32], y[:32], x[32:], y[32:]), {"name": "toy"})
    a = train(cfg, "toy", epochs=1, batch_size=16, seed=5, device="cpu", progress=False, data=data, log=None)
    b = train(cfg, "toy", epochs=1, batch_size=16, seed=5, device="cpu", progress=False, data=data, log=None)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert len(a.history) == 1 and 0.0 <= a.test_accuracy <= 1.0


@pytest.mark.parametrize("args,needle", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--data", "mnist"], "unknown data spec 'mnist'"),
    (["--data", "npz:/nonexistent/d.npz"], "does not exist"),
    (["--data", "cifar10:/nonexistent"], "does not exist"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--device", "tpu"], "device"),
])
def test_train_user_errors(tmp_path, cli, args, needle):
    out = tmp_path / "o" / "model.pt"
    rc, _, err = cli(main, ["--out", out, "--no-progress", *args])
    assert_one_line_error(rc, err, "spk-train: error:", needle)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_train_out_is_directory(tmp_path, cli):
    rc, _, err = cli(main, ["--out", tmp_path, "--epochs", "1"])
    assert_one_line_error(rc, err, "is a directory")


def test_train_error_has_traceback_only_with_debug(tmp_path, cli):
    rc, _, err = cli(main, ["--out", tmp_path / "m.pt", "--preset", "nope", "--debug"])
    assert rc != 0 and "Traceback" in err and "unknown preset" in err


def test_train_bad_npz_leaves_no_output(tmp_path, cli):
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((10, 4, 4)), y=np.arange(10) * 3)  # labels up to 27 for a 10-class preset
    out = tmp_path / "model.pt"
    rc, _, err = cli(main, ["--data", f"npz:{f}", "--out", out])
    assert_one_line_error(rc, err, "labels up to 27")
    assert not out.exists()


# ------------------------------------------------------------------------------------ checkpoints through the CLI

def _exploit_file(tmp_path):
    from .test_checkpoint import write_exploit

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    write_exploit(path, marker)
    return path, marker


def test_eval_refuses_malicious_checkpoint(tmp_path, cli):
    path, marker = _exploit_file(tmp_path)
    rc, out, err = cli(eval_main, ["--checkpoint", path, "--preset", "digits-2-64"])
    assert_one_line_error(rc, err, "spk-eval: error:", "refused", "full unpickling")
    assert not marker.exists(), "the payload ran"
    assert out == ""


def _official(tmp_path, mutate=None):
    sd = random_official_state_dict()
    if mutate:
        mutate(sd)
    path = tmp_path / "official.pth"
    torch.save(sd, path)
    return path


@pytest.mark.parametrize("case,extra,needle", [
    ("missing-file", [], "does not exist"),
    ("not-a-checkpoint", [], "not a PyTorch checkpoint"),
    ("fits-no-preset", ["--heads", "7"], "embed_dim 384 is not divisible by num_heads 7"),
    ("missing-params", ["--preset", "cifar10-4-384"], "2 missing: block.3.mlp.fc2_bn.weight, head.bias"),
    ("misshaped", ["--preset", "cifar10-4-384"], "head.weight (expected [10, 384], got [100, 384])"),
    ("unexpected", ["--preset", "cifar10-4-384"], "1 unexpected: pos_embed"),
    ("unknown-preset", ["--preset", "nope"], "unknown preset 'nope'"),
    ("bad-data", ["--preset", "cifar10-4-384", "--data", "mnist"], "unknown data spec 'mnist'"),
])
def test_eval_checkpoint_errors(tmp_path, cli, case, extra, needle):
    if case == "missing-file":
        path = tmp_path / "nope.pt"
    elif case == "not-a-checkpoint":
        path = tmp_path / "notes.txt"
        path.write_text("just text\n")
    elif case == "missing-params":
        path = _official(tmp_path, lambda sd: (sd.pop("block.3.mlp.fc2_bn.weight"), sd.pop("head.bias")))
    elif case in ("misshaped", "fits-no-preset"):
        path = _official(tmp_path, lambda sd: (sd.__setitem__("head.weight", torch.zeros(100, 384)),
                                               sd.__setitem__("head.bias", torch.zeros(100))))
    elif case == "unexpected":
        path = _official(tmp_path, lambda sd: sd.__setitem__("pos_embed", torch.zeros(1, 64, 384)))
    else:
        path = _official(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, out, err = cli(eval_main, ["--checkpoint", path, "--device", "cpu", *extra])
    assert_one_line_error(rc, err, "spk-eval: error:", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
