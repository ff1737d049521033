"""The researcher's workflow on data as the official code feeds it: a small Spikformer trained here with the
official normalisation on a CIFAR-format folder and on an ImageNet-format folder of JPEGs, then `spk-eval` and
`spk-parity` on its checkpoint.

The referee is timm 0.5.4 (the version the official train/test scripts use) and the official loader's
arithmetic written out here from the official files, not our pipeline: timm's eval transform
(`create_transform(**resolve_data_config(yml values), is_training=False, use_prefetcher=True)`) on the PIL image
(torchvision's CIFAR10 makes one with Image.fromarray of the HWC pixels; ImageFolder opens the JPEG and converts it
to RGB), then PrefetchLoader's normalisation (uint8 -> float, minus 255 mean, divided by 255 std, constants
float32). The model, with its own normalisation switched off, on that tensor must give the same logits as our
pipeline (raw pixel / 255 in, normalised by the model), and `spk-eval` must count the same correct predictions.
"""
from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

import timm.data as timm_data  # the referee, pinned in the dev extra: required, not skipped

from commands.parity import main as parity_main
from commands.train import eval_main, main as train_main
from spikformer.checkpoint import load_checkpoint

# the official yml files (ZK-Zhou/spikformer cifar10/cifar10.yml, imagenet/imagenet.yml), typed in here
CIFAR_YML = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616), "crop_pct": 1.0,
             "interpolation": "bicubic"}
IMAGENET_YML = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 1.0,
                "interpolation": "bicubic"}
CLASS_COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])  # a learnable signal per class
SMALL = ["--depth", "1", "--dim", "32", "--heads", "2", "--time-steps", "2", "--epochs", "2", "--batch-size", "16",
         "--no-progress", "--device", "cpu", "--workers", "0"]


def _image(rng, label, h, w):
    noise = rng.integers(-60, 61, size=(h, w, 3))
    return np.clip(CLASS_COLOURS[label % 3] + noise, 0, 255).astype(np.uint8)


def write_cifar10(root, per_batch=24, test=30, seed=0):
    """cifar-10-batches-py as the original files: protocol-2 pickles of dicts with bytes keys, rows of 3072
    uint8 (channel planes, row-major)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        labels = [int(v) for v in rng.integers(0, 3, n)]
        rows = np.stack([_image(rng, c, 32, 32).transpose(2, 0, 1).reshape(-1) for c in labels])
        (root / name).write_bytes(pickle.dumps({b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                                                b"filenames": [b"x.png"] * n}, protocol=2))
    return root


def write_imagenet(root, per_class=(14, 6), seed=0):
    """ImageFolder layout with JPEGs of ImageNet-like, unequal sizes."""
    rng = np.random.default_rng(seed)
    sizes = [(500, 375), (375, 500), (333, 221), (224, 224), (97, 301)]
    for split, n in zip(("train", "val"), per_class):
        for c, synset in enumerate(("n01440764", "n01443537", "n02102040")):
            (root / split / synset).mkdir(parents=True)
            for j in range(n):
                w, h = sizes[(j + c) % len(sizes)]
                Image.fromarray(_image(rng, c, h, w)).save(root / split / synset / f"{synset}_{j}.JPEG", quality=92)
    return root


def _prefetcher_normalise(u8: np.ndarray, yml: dict) -> torch.Tensor:
    """timm 0.5.4's PrefetchLoader, as the official loader.py has it: x.float().sub_(255 mean).div_(255 std)."""
    mean = torch.tensor([x * 255 for x in yml["mean"]]).view(1, 3, 1, 1)
    std = torch.tensor([x * 255 for x in yml["std"]]).view(1, 3, 1, 1)
    return torch.from_numpy(u8).float().unsqueeze(0).sub_(mean).div_(std)


def _official_inputs(pil_images, yml: dict, img_size: int) -> torch.Tensor:
    tf = timm_data.create_transform(**timm_data.resolve_data_config(dict(yml, img_size=img_size)),
                                    is_training=False, use_prefetcher=True)
    return torch.cat([_prefetcher_normalise(tf(img), yml) for img in pil_images])


def _cifar_test_images(root):
    with open(root / "test_batch", "rb") as f:
        d = pickle.load(f, encoding="bytes")  # our own file, written above
    pil = [Image.fromarray(r.reshape(3, 32, 32).transpose(1, 2, 0)) for r in d[b"data"]]
    return pil, torch.tensor(d[b"labels"])


def _imagenet_test_images(root):
    from torchvision.datasets import ImageFolder
    ref = ImageFolder(str(root / "val"))
    pil = []
    for path, _ in ref.samples:
        with open(path, "rb") as f:
            pil.append(Image.open(f).convert("RGB"))
    return pil, torch.tensor([c for _, c in ref.samples])


CASES = {
    "cifar10": (write_cifar10, _cifar_test_images, CIFAR_YML, ["--preset", "cifar10-4-384"]),
    "imagenet": (write_imagenet, _imagenet_test_images, IMAGENET_YML,
                 ["--preset", "imagenet-8-384", "--img-size", "32", "--num-classes", "3"]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, tmp_path_factory):
    kind = request.param
    write, read_test, yml, arch = CASES[kind]
    root = tmp_path_factory.mktemp(kind)
    data = write(root / "data")
    ckpt = root / "model.pt"
    rc = train_main(arch + SMALL + ["--data", f"{kind}:{data}", "--out", str(ckpt)])
    assert rc == 0
    return kind, data, ckpt, read_test, yml


def test_the_checkpoint_carries_the_official_data_config(trained):
    kind, _, ckpt, _, yml = trained
    stored = torch.load(ckpt, weights_only=True)["metadata"]["data_config"]
    assert tuple(stored["mean"]) == yml["mean"] and tuple(stored["std"]) == yml["std"]
    assert stored["interpolation"] == yml["interpolation"] and stored["crop_pct"] == yml["crop_pct"]


def test_spk_eval_gives_the_official_eval_transforms_accuracy(trained, capsys):
    kind, data, ckpt, read_test, yml = trained
    model, config, _ = load_checkpoint(ckpt)
    pil, labels = read_test(data)
    official = _official_inputs(pil, yml, config.img_size)
    ours = torch.stack([x for x, _ in _our_test_set(kind, data, ckpt)])
    with torch.no_grad():
        logits_ours = model(ours)
        model.set_input_normalization(None)
        logits_official = model(official)
    assert torch.equal(logits_ours, logits_official)
    correct = int((logits_official.argmax(1) == labels).sum())

    capsys.readouterr()
    assert eval_main([str(ckpt), "--data", f"{kind}:{data}", "--workers", "2"]) == 0
    m = re.search(r"test accuracy: [\d.]+ % \((\d+)/(\d+)\)", capsys.readouterr().out)
    assert m and (int(m.group(1)), int(m.group(2))) == (correct, len(labels))


def _our_test_set(kind, data, ckpt):
    from commands.data_args import model_data_config
    from spikformer.datasets import open_dataset
    _, config, meta = load_checkpoint(ckpt)
    ds = open_dataset(f"{kind}:{data}", config, model_data_config(meta), "test")
    return [ds[i] for i in range(len(ds))]


def test_float_parity_is_spike_exact_on_normalised_input(trained, tmp_path):
    kind, data, ckpt, _, _ = trained
    out = tmp_path / "parity"
    rc = parity_main([str(ckpt), "--target", "nir", "--mode", "float", "--data", f"{kind}:{data}",
                      "--min-agreement", "1.0", "--no-progress", "--device", "cpu", "-o", str(out)])
    assert rc == 0
    summary = json.loads((out / "parity.json").read_text())
    assert summary["overall"]["total_spike_mismatches"] == 0
    assert summary["run"]["data_config"]["mean"] is not None
    assert summary["run"]["data_info"]["skipped"] == 0 and len(summary["overall"]["samples_sha256"]) == 64
