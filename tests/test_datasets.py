"""spikformer.datasets: the streaming readers against independent references (torchvision's ImageFolder, timm
0.5.4's eval transform, PIL, SpikingJelly's CIFAR10DVS / DVS128Gesture / split_to_train_test_set, numpy), on
small folders written in the original layouts."""
from __future__ import annotations

import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
import timm.data as timm_data  # the referee, pinned in the dev extra: required, not skipped
import torch
from PIL import Image
from timm.data.parsers import parser_image_folder

from spikformer.data import DataError, load_dataset, load_dataset_with_info
from spikformer.data_config import OFFICIAL, RAW, DataConfig
from spikformer.datasets import BadSampleError, make_loader, open_dataset, parse_dataset_spec, worker_count
from spikformer.presets import SpikformerConfig, get_preset

CIFAR_CFG = get_preset("cifar10-4-384")
IMAGENET_CFG = get_preset("imagenet-8-512")


def _cifar_dict(rng, n, labels_key, n_classes):
    return {b"batch_label": b"batch", labels_key: [int(v) for v in rng.integers(0, n_classes, n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(n)]}


def write_cifar10(root, n=6, seed=0):
    """cifar-10-batches-py as the original: protocol-2 pickles of dicts with bytes keys."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        out[name] = _cifar_dict(rng, n, b"labels", 10)
        (root / name).write_bytes(pickle.dumps(out[name], protocol=2))
    return out


def write_cifar100(root, n=(9, 5), seed=1):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name, k in zip(("train", "test"), n):
        d = _cifar_dict(rng, k, b"fine_labels", 100)
        d[b"coarse_labels"] = [v // 5 for v in d[b"fine_labels"]]
        out[name] = d
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    names = [f"class{i:03d}".encode() for i in range(100)]
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": names[:20]},
                                             protocol=2))
    return out


def _hwc(row):
    return row.reshape(3, 32, 32).transpose(1, 2, 0)


# ------------------------------------------------------------------------------------------------------ specs

def test_parse_dataset_spec():
    assert parse_dataset_spec("cifar100:/d") == ("cifar100", "/d", "official")
    assert parse_dataset_spec("events:/d:128x128:split=random") == ("events", "/d:128x128", "random")
    assert parse_dataset_spec("events:/d") == ("events", "/d", "official")
    assert parse_dataset_spec("digits") == ("digits", None, "official")
    for bad, needle in (("foo:/x", "unknown data spec"), ("imagenet:", "needs a path"), ("", "empty"),
                        ("events:/d:split=sideways", "official' or 'random"), ("digits:x", "takes no argument")):
        with pytest.raises(DataError, match=needle):
            parse_dataset_spec(bad)


def test_kind_must_match_the_model_input():
    with pytest.raises(DataError, match="gives images but the model takes event frames"):
        open_dataset("digits", get_preset("event-digits-2-64"), RAW, "test")
    with pytest.raises(DataError, match="gives event frames but the model takes images"):
        open_dataset("event-digits", get_preset("digits-2-64"), RAW, "test")
    with pytest.raises(DataError, match="split must be"):
        open_dataset("digits", get_preset("digits-2-64"), RAW, "val")


# ------------------------------------------------------------------------------------------------- built-ins

@pytest.mark.parametrize("preset,spec", [("digits-2-64", "digits"), ("event-digits-2-64", "event-digits")])
def test_built_in_sets_are_todays_tensors(preset, spec):
    cfg = get_preset(preset)
    T = cfg.T if cfg.event_input else None
    x_tr, y_tr, x_te, y_te = load_dataset(spec, cfg.img_size, cfg.in_channels, seed=3, T=T)
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        ds = open_dataset(spec, cfg, RAW, split, seed=3)
        got = torch.stack([ds[i][0] for i in range(len(ds))])
        assert torch.equal(got, x) and [ds[i][1] for i in range(len(ds))] == y.tolist()
        assert ds.info["n"] == len(y) and ds.info["split_seed"] == 3


# ------------------------------------------------------------------------------------------------------ CIFAR

def test_cifar10_official_config_is_the_raw_pixels(tmp_path):
    raw = write_cifar10(tmp_path / "cifar-10-batches-py")
    spec = f"cifar10:{tmp_path / 'cifar-10-batches-py'}"
    train = open_dataset(spec, CIFAR_CFG, OFFICIAL["cifar"], "train")
    test = open_dataset(spec, CIFAR_CFG, OFFICIAL["cifar"], "test")
    rows = np.concatenate([raw[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = sum((raw[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert len(train) == 30 and len(test) == 6
    for i in range(len(train)):
        x, y = train[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == labels[i]
        assert torch.equal(x, torch.from_numpy(rows[i].reshape(3, 32, 32).astype(np.float32) / np.float32(255)))
        assert torch.equal((x * 255).round(), x * 255)
    assert [test[i][1] for i in range(6)] == raw["test_batch"][b"labels"]
    assert train.info["value_grid"] == 255 and train.info["num_classes"] == 10
    assert "data_batch_1" in train.info["split_rule"] and "test_batch" in test.info["split_rule"]


def test_cifar_equals_timm_eval_transform(tmp_path):
    """timm 0.5.4's create_transform for the official cifar10.yml (with the prefetcher: ToNumpy uint8) gives the
    same pixels, at 32 (Resize(32) / CenterCrop(32) leave a 32x32 image as it is) and at 24 / 40."""
    raw = write_cifar10(tmp_path / "c", n=4)
    for size in (32, 24, 40):
        cfg = CIFAR_CFG.with_(img_size=size, pool_stages=0 if size % 4 else 2)
        tf = timm_data.create_transform(**timm_data.resolve_data_config(
            {"img_size": size, "mean": OFFICIAL["cifar"].mean, "std": OFFICIAL["cifar"].std, "crop_pct": 1.0,
             "interpolation": "bicubic"}), is_training=False, use_prefetcher=True)
        ds = open_dataset(f"cifar10:{tmp_path / 'c'}", cfg, OFFICIAL["cifar"], "test")
        for i in range(len(ds)):
            ref = tf(Image.fromarray(_hwc(raw["test_batch"][b"data"][i])))
            assert ref.dtype == np.uint8 and ref.shape == (3, size, size)
            assert torch.equal(ds[i][0] * 255, torch.from_numpy(ref.astype(np.float32)))


def test_cifar_at_a_digits_size_is_a_pil_resize(tmp_path):
    raw = write_cifar10(tmp_path / "c", n=3)
    ds = open_dataset(f"cifar10:{tmp_path / 'c'}", get_preset("digits-2-64"), RAW, "test")
    for i in range(3):
        ref = Image.fromarray(_hwc(raw["test_batch"][b"data"][i])).convert("L").resize((16, 16), Image.BILINEAR)
        assert torch.equal(ds[i][0][0] * 255, torch.from_numpy(np.asarray(ref).astype(np.float32)))


def test_cifar100(tmp_path):
    raw = write_cifar100(tmp_path / "cifar-100-python")
    cfg = CIFAR_CFG.with_(num_classes=100)
    for split in ("train", "test"):
        ds = open_dataset(f"cifar100:{tmp_path / 'cifar-100-python'}", cfg, OFFICIAL["cifar"], split)
        d = raw[split]
        assert [ds[i][1] for i in range(len(ds))] == d[b"fine_labels"]
        assert all(torch.equal(ds[i][0] * 255, torch.from_numpy(d[b"data"][i].reshape(3, 32, 32).astype(np.float32)))
                   for i in range(len(ds)))
        assert ds.info["num_classes"] == 100 and ds.info["classes"][7] == "class007"
    with pytest.raises(DataError, match="labels up to .* but the model has 10 classes"):
        open_dataset(f"cifar100:{tmp_path / 'cifar-100-python'}", CIFAR_CFG, OFFICIAL["cifar"], "train")


def test_oversized_cifar_file_refused_before_reading(tmp_path):
    from spikformer.data import MAX_CIFAR_FILE_BYTES
    root = tmp_path / "cifar-100-python"
    write_cifar100(root)
    with open(root / "train", "r+b") as f:  # sparse: the size without the bytes
        f.truncate(MAX_CIFAR_FILE_BYTES + 1)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"is \d+ bytes, more than the .* refused before reading") as ei:
            open_dataset(f"cifar100:{root}", CIFAR_CFG.with_(num_classes=100), OFFICIAL["cifar"], "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20 and "\n" not in str(ei.value)


def test_cifar_missing_file(tmp_path):
    write_cifar100(tmp_path / "c")
    (tmp_path / "c" / "test").unlink()
    with pytest.raises(DataError, match="CIFAR-100 file .*test is missing"):
        open_dataset(f"cifar100:{tmp_path / 'c'}", CIFAR_CFG.with_(num_classes=100), OFFICIAL["cifar"], "test")


# --------------------------------------------------------------------------------------------------- ImageNet

SIZES = [(500, 375), (375, 500), (224, 224), (333, 221), (97, 301), (225, 224)]


def write_imagenet(root, classes=("n01440764", "n01443537", "n02102040"), seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True)
            for j, (w, h) in enumerate(SIZES[c::2]):
                img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                img = np.asarray(Image.fromarray(img).resize((w // 8 + 1, h // 8 + 1)).resize((w, h)))
                name = f"{cls}_{j}.JPEG" if j % 2 == 0 else f"{cls}_{j}.jpg"
                Image.fromarray(img).save(d / name, quality=90)
            Image.fromarray(rng.integers(0, 256, size=(40, 60), dtype=np.uint8)).save(d / "gray.png")  # grayscale
            (d / "README.txt").write_text("not an image")  # ignored, as ImageFolder does
    return root


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    return write_imagenet(tmp_path_factory.mktemp("imagenet"))


def test_imagenet_index_is_torchvisions_imagefolder(imagenet):
    from torchvision.datasets import ImageFolder
    for split, folder in (("train", "train"), ("test", "val")):
        ds = open_dataset(f"imagenet:{imagenet}", IMAGENET_CFG, OFFICIAL["imagenet"], split)
        ref = ImageFolder(str(imagenet / folder))
        assert ds.files == [p for p, _ in ref.samples] and list(ds.labels) == [c for _, c in ref.samples]
        assert ds.info["classes"] == ref.classes == sorted(ref.classes) and ds.info["num_classes"] == 3
        assert not any(p.endswith(".txt") for p in ds.files) and len(ds) == 3 + 3 + 2 + 3
        assert ds.info["split"] == split and folder in ds.info["split_rule"]


def test_imagenet_labels_agree_with_timms_folder_parser(imagenet):
    """The official training read the folders with timm 0.5.4's parser (natural class order): for synset-like
    names it gives the same class indices and the same (file, label) pairs, in another file order."""
    ds = open_dataset(f"imagenet:{imagenet}", IMAGENET_CFG, OFFICIAL["imagenet"], "test")
    items, class_to_idx = parser_image_folder.find_images_and_targets(str(imagenet / "val"))
    assert class_to_idx == {c: i for i, c in enumerate(ds.info["classes"])}
    assert sorted(items) == sorted(zip(ds.files, ds.labels.tolist()))


@pytest.mark.parametrize("crop_pct,interpolation,size", [(1.0, "bicubic", 224), (0.875, "bilinear", 224),
                                                         (0.9, "bicubic", 64)])
def test_imagenet_equals_timm_eval_transform(imagenet, crop_pct, interpolation, size):
    """Pixel for pixel what timm 0.5.4's eval transform (official imagenet.yml, and other crop/interpolation)
    hands the model with its prefetcher (uint8), for every generated size."""
    dc = DataConfig(OFFICIAL["imagenet"].mean, OFFICIAL["imagenet"].std, interpolation, crop_pct, "test")
    tf = timm_data.create_transform(**timm_data.resolve_data_config(
        {"img_size": size, "mean": dc.mean, "std": dc.std, "crop_pct": crop_pct, "interpolation": interpolation}),
        is_training=False, use_prefetcher=True)
    cfg = IMAGENET_CFG.with_(img_size=size)
    ds = open_dataset(f"imagenet:{imagenet}", cfg, dc, "test")
    for i in range(len(ds)):
        x, y = ds[i]
        with open(ds.files[i], "rb") as f:
            ref = tf(Image.open(f).convert("RGB"))
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        assert torch.equal(x * 255, torch.from_numpy(ref.astype(np.float32))), ds.files[i]
        assert torch.equal(x, torch.from_numpy(ref).float() / 255)


def test_imagenet_gray_model(imagenet):
    ds = open_dataset(f"imagenet:{imagenet}", IMAGENET_CFG.with_(in_channels=1, img_size=32), RAW, "test")
    img = Image.open(ds.files[0]).convert("RGB").convert("L")
    w, h = img.size
    s = 32 / min(w, h)
    size = (32, round(h * s)) if w <= h else (round(w * s), 32)
    ref = np.asarray(img.resize(size, Image.BILINEAR))
    top, left = int(round((ref.shape[0] - 32) / 2.0)), int(round((ref.shape[1] - 32) / 2.0))
    assert torch.equal(ds[0][0][0] * 255, torch.from_numpy(ref[top:top + 32, left:left + 32].astype(np.float32)))


def test_imagenet_layout_errors(tmp_path):
    root = write_imagenet(tmp_path / "in", classes=("a", "b"))
    (root / "val" / "b").rename(root / "val" / "c")
    with pytest.raises(DataError, match="different class folders"):
        open_dataset(f"imagenet:{root}", IMAGENET_CFG, RAW, "train")
    with pytest.raises(DataError, match="has no 'val' folder"):
        open_dataset(f"imagenet:{tmp_path / 'in' / 'train'}", IMAGENET_CFG, RAW, "test")
    (root / "val" / "c").rename(root / "val" / "b")
    for f in (root / "train" / "a").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no valid file for the classes a"):
        open_dataset(f"imagenet:{root}", IMAGENET_CFG, RAW, "train")


def _bad_images(tmp_path):
    root = write_imagenet(tmp_path / "in", classes=("a", "b"))
    files = sorted((root / "val" / "b").glob("*.JPEG"))
    data = files[0].read_bytes()
    files[0].write_bytes(data[:len(data) // 3])  # truncated JPEG
    (root / "val" / "a" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt
    return root, files[0]


def test_bad_images_raise_one_line_naming_the_file(tmp_path):
    root, truncated = _bad_images(tmp_path)
    ds = open_dataset(f"imagenet:{root}", IMAGENET_CFG.with_(img_size=32), RAW, "test")
    bad = [i for i, f in enumerate(ds.files) if f.endswith("zz.png") or f == str(truncated)]
    assert len(bad) == 2
    for i in bad:
        with pytest.raises(BadSampleError) as ei:
            ds[i]
        assert ds.files[i] in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(BadSampleError, match="zz.png") as ei:
        list(make_loader(ds, 4, workers=2))
    assert "\n" not in str(ei.value)


def test_skip_bad_skips_and_counts(tmp_path):
    root, _ = _bad_images(tmp_path)
    ds = open_dataset(f"imagenet:{root}", IMAGENET_CFG.with_(img_size=32), RAW, "test", skip_bad=True)
    loader = make_loader(ds, 3, workers=2)
    ys = torch.cat([y for _, y in loader]).tolist()
    good = [i for i, f in enumerate(ds.files) if not (f.endswith("zz.png") or "_0.JPEG" in f and "/b/" in f)]
    assert ys == [int(ds.labels[i]) for i in good]
    assert ds.info["skipped"] == 2 and len(loader.skipped) == 2
    assert {i for i, _ in loader.skipped} == set(range(len(ds))) - set(good)


@pytest.mark.parametrize("pixels", [700, 1000])  # above 2x the limit: PIL's error; between 1x and 2x: its warning
def test_decompression_bombs_refused(tmp_path, monkeypatch, pixels):
    root = tmp_path / "in"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.new("RGB", (50, 30)).save(root / split / "a" / "big.png")  # 1500 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixels)
    ds = open_dataset(f"imagenet:{root}", IMAGENET_CFG.with_(img_size=16), RAW, "test")
    with pytest.raises(BadSampleError, match=r"big.png") as ei:
        ds[0]
    assert "\n" not in str(ei.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)
    assert ds[0][0].shape == (3, 16, 16)


# -------------------------------------------------------------------------------------------------------- npz

@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_uint8_streams_the_pixels(tmp_path, save):
    from sklearn.model_selection import train_test_split
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, 16, 16, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    save(tmp_path / "d.npz", x=x, y=y)
    tr, te = train_test_split(np.arange(30), test_size=0.2, random_state=5, shuffle=True, stratify=y)
    cfg = CIFAR_CFG.with_(img_size=16)
    for split, idx in (("train", np.sort(tr)), ("test", np.sort(te))):
        ds = open_dataset(f"npz:{tmp_path / 'd.npz'}", cfg, OFFICIAL["cifar"], split, seed=5)
        assert len(ds) == len(idx) and ds.info["value_grid"] == 255
        for i, j in enumerate(idx):
            xi, yi = ds[i]
            assert yi == y[j] and torch.equal(xi * 255, torch.from_numpy(x[j].transpose(2, 0, 1).astype(np.float32)))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_is_never_loaded_whole(tmp_path, save):
    """Opening a 24 MiB npz and reading samples allocates a few samples' and pieces' worth, not the array (numpy
    reports its allocations to tracemalloc); the deflated one is inflated into a temporary file, which goes with
    the set."""
    x = np.random.default_rng(0).integers(0, 256, size=(2000, 64, 64, 3), dtype=np.uint8)
    save(tmp_path / "big.npz", x=x, y=np.arange(2000) % 10)
    del x
    np.savez(tmp_path / "small.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2)
    open_dataset(f"npz:{tmp_path / 'small.npz'}", CIFAR_CFG, RAW, "train")[0]  # imports (sklearn) before tracing
    tracemalloc.start()
    try:
        ds = open_dataset(f"npz:{tmp_path / 'big.npz'}", CIFAR_CFG.with_(img_size=64), RAW, "train")
        for i in range(0, len(ds), 97):
            ds[i]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ds) == 1600 and peak < 8 * 2 ** 20
    tmp = getattr(ds, "_tmpdir", None)
    assert (tmp is not None) == (save is np.savez_compressed)
    del ds
    import gc
    gc.collect()
    assert tmp is None or not __import__("os").path.exists(tmp)


def test_npz_float_equals_the_whole_set_loader(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 1, 8, 8)) * 3
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(20) % 2)
    ref = load_dataset(f"npz:{tmp_path / 'f.npz'}", 8, 1, seed=2)
    ds = open_dataset(f"npz:{tmp_path / 'f.npz'}", get_preset("digits-2-64").with_(img_size=8), RAW, "test", seed=2)
    got = torch.stack([ds[i][0] for i in range(len(ds))])
    assert torch.allclose(got, ref.x_test, atol=1e-6) and ds.info["value_grid"] is None


def _npy_header(shape, dtype="<u1"):
    import io
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b.getvalue()


def _refused_before_allocating(tmp_path, load):
    """`load(spec)` of an npz whose x header promises 12 GiB raises one line, allocating under 8 MiB first."""
    f = tmp_path / "huge.npz"
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("x.npy", _npy_header((2 ** 20, 64, 64, 3)) + b"\0" * 100)  # promises 12 GiB
        zf.writestr("y.npy", _npy_header((2 ** 20,), "<i8") + b"\0" * 100)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"array x .* promises \d+ bytes, more than the") as ei:
            load(f"npz:{f}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2 ** 20 and "\n" not in str(ei.value)


def test_npz_header_promising_too_much_is_refused_before_allocating(tmp_path):
    _refused_before_allocating(tmp_path, lambda spec: open_dataset(spec, CIFAR_CFG, RAW, "test"))


def test_whole_set_npz_loader_refuses_a_huge_header_before_allocating(tmp_path):
    """spikformer.data.load_dataset (the Python users' whole-set loader) checks the headers first too."""
    _refused_before_allocating(tmp_path, lambda spec: load_dataset(spec, 16, 1))


def test_npz_limit_and_damage(tmp_path, monkeypatch):
    from spikformer.datasets import npz
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4, 4), np.uint8), y=np.arange(10) % 2)
    monkeypatch.setattr(npz, "MAX_ARRAY_BYTES", 159)
    with pytest.raises(DataError, match="promises 160 bytes"):
        open_dataset(f"npz:{tmp_path / 'd.npz'}", CIFAR_CFG.with_(img_size=4, pool_stages=0), RAW, "test")
    monkeypatch.undo()
    f = tmp_path / "short.npz"
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("x.npy", _npy_header((10, 4, 4)) + b"\0" * 100)
        zf.writestr("y.npy", _npy_header((10,), "<i8") + b"\0" * 80)
    with pytest.raises(DataError, match="array x is truncated or damaged"):
        open_dataset(f"npz:{f}", CIFAR_CFG.with_(img_size=4, pool_stages=0), RAW, "test")
    x = np.empty(3, dtype=object)
    np.savez(tmp_path / "o.npz", x=x, y=np.arange(3))
    with pytest.raises(DataError, match="object array"):
        open_dataset(f"npz:{tmp_path / 'o.npz'}", CIFAR_CFG, RAW, "test")


# ----------------------------------------------------------------------------------------------------- events

def _events(rng, n, H, W):
    return {"t": np.sort(rng.integers(0, 10 ** 6, n)).astype(">u4"), "x": rng.integers(0, W, n).astype(np.uint32),
            "y": rng.integers(0, H, n).astype(np.uint32), "p": rng.integers(0, 2, n).astype(np.int64)}


CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = (10, 11, 3, 1, 20, 10, 10, 10, 10, 4)  # ceil(0.9 n): 9, 10, 3, 1, 18, 9, 9, 9, 9, 4


@pytest.fixture(scope="module")
def cifar10dvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("c10dvs")
    rng = np.random.default_rng(3)
    for cls, n in zip(CLASSES, PER_CLASS):
        d = root / "events_np" / cls
        d.mkdir(parents=True)
        for i in range(n):
            np.savez_compressed(d / f"cifar10_{cls}_{i}.npz", **_events(rng, int(rng.integers(20, 200)), 128, 128))
    return root


DVS_CFG = get_preset("cifar10dvs-2-256").with_(T=4)


def test_cifar10dvs_official_split_is_the_first_90_percent(cifar10dvs):
    train = open_dataset(f"events:{cifar10dvs}", DVS_CFG, OFFICIAL["dvs"], "train")
    test = open_dataset(f"events:{cifar10dvs}", DVS_CFG, OFFICIAL["dvs"], "test")
    want_train, want_test = [], []
    for cls, n in zip(CLASSES, PER_CLASS):  # sorted file names: _0, _1, _10, _11, ..., _2, ...
        names = sorted(f"cifar10_{cls}_{i}.npz" for i in range(n))
        k = {10: 9, 11: 10, 3: 3, 1: 1, 20: 18, 4: 4}[n]
        want_train += [f"{cls}/{m}" for m in names[:k]]
        want_test += [f"{cls}/{m}" for m in names[k:]]
    assert [f.split("events_np/")[1] for f in train.files] == want_train
    assert [f.split("events_np/")[1] for f in test.files] == want_test
    assert "first ceil(90 %)" in train.info["split_rule"] and train.info["split_seed"] is None


def test_cifar10dvs_equals_spikingjelly_and_its_split(cifar10dvs):
    from spikingjelly.datasets import split_to_train_test_set
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS
    ref = CIFAR10DVS(str(cifar10dvs), data_type="frame", frames_number=4, split_by="number")
    sj_train, sj_test = split_to_train_test_set(0.9, ref, 10)
    for split, sub in (("train", sj_train), ("test", sj_test)):
        ds = open_dataset(f"events:{cifar10dvs}", DVS_CFG, OFFICIAL["dvs"], split)
        assert len(ds) == len(sub)
        for i in range(len(ds)):
            x, y = ds[i]
            fx, fy = sub[i]
            assert y == fy and x.shape == (4, 2, 128, 128)
            assert np.array_equal(x.numpy().astype(np.float64), np.asarray(fx, np.float64))
        assert ds.info["value_grid"] == 1 and ds.info["sensor"] == [128, 128] and ds.info["T"] == 4


def test_cifar10dvs_random_split_only_when_asked(cifar10dvs):
    (x_tr, y_tr, x_te, y_te), info = load_dataset_with_info(f"events:{cifar10dvs}:split=random", 128, 2, seed=4,
                                                            T=4)
    ds = open_dataset(f"events:{cifar10dvs}:split=random", DVS_CFG, OFFICIAL["dvs"], "test", seed=4)
    assert len(ds) == len(y_te) and [ds[i][1] for i in range(len(ds))] == y_te.tolist()
    assert torch.equal(torch.stack([ds[i][0] for i in range(len(ds))]), x_te)
    assert "split=random" in ds.info["split_rule"] and ds.info["split_seed"] == 4


def test_gesture_uses_its_folders(tmp_path):
    from spikingjelly.datasets.dvs128_gesture import DVS128Gesture
    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        for c in range(11):
            d = tmp_path / "events_np" / split / str(c)
            d.mkdir(parents=True)
            for i in range(1 + (c % 2)):
                np.savez(d / f"u{i}.npz", **_events(rng, 50, 128, 128))
    cfg = get_preset("dvs128-2-256").with_(T=3)
    for split in ("train", "test"):
        ds = open_dataset(f"events:{tmp_path}", cfg, OFFICIAL["dvs"], split)
        ref = DVS128Gesture(str(tmp_path), train=split == "train", data_type="frame", frames_number=3,
                            split_by="number")
        assert [ds[i][1] for i in range(len(ds))] == [int(y) for _, y in ref]
        assert all(np.array_equal(ds[i][0].numpy(), np.asarray(ref[i][0], np.float32)) for i in range(len(ds)))
        assert ds.info["split_rule"] == f"the data set's own {split}/ folder"
    with pytest.raises(DataError, match="split=random is for folders without"):
        open_dataset(f"events:{tmp_path}:split=random", cfg, OFFICIAL["dvs"], "test")


def test_bad_event_file_is_a_bad_sample(cifar10dvs, tmp_path):
    import shutil
    root = tmp_path / "c"
    shutil.copytree(cifar10dvs, root)
    victim = root / "events_np" / "bird" / "cifar10_bird_1.npz"
    victim.write_bytes(victim.read_bytes()[:50])
    ds = open_dataset(f"events:{root}", DVS_CFG, OFFICIAL["dvs"], "train", skip_bad=True)
    i = [k for k, f in enumerate(ds.files) if f.endswith("cifar10_bird_1.npz")][0]
    with pytest.raises(BadSampleError, match="cifar10_bird_1.npz"):
        ds[i]
    loader = make_loader(ds, 8, workers=0)
    assert sum(len(y) for _, y in loader) == len(ds) - 1 and ds.info["skipped"] == 1


# ----------------------------------------------------------------------------------------------------- loader

def test_loader_order_and_seeded_shuffle(tmp_path):
    write_cifar10(tmp_path / "c", n=7)
    ds = open_dataset(f"cifar10:{tmp_path / 'c'}", CIFAR_CFG, OFFICIAL["cifar"], "train")
    direct = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    for workers in (0, 2):
        batches = list(make_loader(ds, 4, workers=workers))
        assert [len(y) for _, y in batches] == [4] * 8 + [3]
        assert torch.equal(torch.cat([x for x, _ in batches]), direct)
        assert torch.equal(torch.cat([y for _, y in batches]), labels)
    orders = []
    for workers in (0, 2, 2):
        xs = torch.cat([x for x, _ in make_loader(ds, 5, workers=workers, shuffle=True, seed=9)])
        order = [int(torch.nonzero((direct == x).flatten(1).all(1))[0]) for x in xs]
        assert sorted(order) == list(range(len(ds))) and order != sorted(order)
        orders.append(order)
    assert orders[0] == orders[1] == orders[2]
    other = torch.cat([x for x, _ in make_loader(ds, 5, shuffle=True, seed=10)])
    assert not torch.equal(other, direct[orders[0]])


def test_worker_count_is_capped():
    import os
    cpus = len(os.sched_getaffinity(0))
    assert worker_count(0) == 0 and worker_count(1000) == min(cpus, 8) and worker_count(1) == 1


def test_values_are_raw_and_the_model_normalises(tmp_path):
    """The loader's x never carries mean/std: it is the same for a normalising and a raw data config, and the
    model's normalize_input gives timm's prefetcher arithmetic (255 x - 255 mean) / (255 std)."""
    from spikformer.model import Spikformer
    raw = write_cifar10(tmp_path / "c", n=2)
    spec = f"cifar10:{tmp_path / 'c'}"
    a = open_dataset(spec, CIFAR_CFG, OFFICIAL["cifar"], "test")[0][0]
    b = open_dataset(spec, CIFAR_CFG, DataConfig(interpolation="bicubic"), "test")[0][0]
    assert torch.equal(a, b)
    cfg = SpikformerConfig(img_size=32, embed_dim=16, num_heads=2, depth=1, T=1)
    m = Spikformer(cfg)
    m.set_input_normalization(OFFICIAL["cifar"])
    u = torch.from_numpy(raw["test_batch"][b"data"][0].reshape(3, 32, 32).astype(np.float32))
    mean = torch.tensor([v * 255 for v in OFFICIAL["cifar"].mean], dtype=torch.float32)[:, None, None]
    std = torch.tensor([v * 255 for v in OFFICIAL["cifar"].std], dtype=torch.float32)[:, None, None]
    assert torch.equal(m.normalize_input(a[None])[0], (u - mean) / std)
