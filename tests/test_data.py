"""Data specs: digits, cifar10:DIR (restricted unpickler), npz:FILE, conversion and errors."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from ground.errors import UserError
from spikformer.data import convert_images, dataset_info, load_dataset, load_dataset_with_info, parse_spec


def test_digits_split_shapes_and_range():
    x_tr, y_tr, x_te, y_te = load_dataset("digits", 16, 1, seed=0)
    assert x_tr.shape == (1437, 1, 16, 16) and x_te.shape == (360, 1, 16, 16)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert float(x_tr.min()) >= 0.0 and float(x_tr.max()) <= 1.0 and float(x_tr.max()) > 0.9
    # stratified: every class has 35-37 of the 360 test images
    counts = torch.bincount(y_te, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_seeded_split():
    a = load_dataset("digits", 16, 1, seed=0)
    b = load_dataset("digits", 16, 1, seed=0)
    c = load_dataset("digits", 16, 1, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.y_test, c.y_test)


def test_digits_rgb_resized_and_info():
    (x_tr, _, _, _), info = load_dataset_with_info("digits", 32, 3, seed=3)
    assert x_tr.shape == (1437, 3, 32, 32)
    assert torch.equal(x_tr[:, 0], x_tr[:, 1]) and torch.equal(x_tr[:, 1], x_tr[:, 2])
    assert info["name"] == "digits" and info["split_seed"] == 3 and info["n_train"] == 1437
    assert info["n_test"] == 360 and len(info["sha256"]) == 64
    assert dataset_info("digits", 32, 3, seed=3) == info


def test_convert_images_gray_and_downscale():
    x = torch.rand(5, 3, 32, 32)
    y = convert_images(x, 16, 1)
    assert y.shape == (5, 1, 16, 16) and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(UserError):
        convert_images(torch.rand(2, 2, 8, 8), 8, 3)


@pytest.mark.parametrize("spec,needle", [
    ("", "empty data spec"), ("mnist", "unknown data spec 'mnist'"), ("digits:foo", "takes no argument"),
    ("npz:", "needs a path"), ("cifar10", "needs a path"),
])
def test_bad_specs(spec, needle):
    with pytest.raises(UserError, match=needle):
        parse_spec(spec)


# ------------------------------------------------------------------------------------------------------- npz

@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 12, 12, 3), dtype=np.uint8)
    if layout == "nhw":
        x = x[..., 0]
    elif layout == "nchw":
        x = x.transpose(0, 3, 1, 2).copy()
    y = np.arange(50) % 5
    f = tmp_path / "d.npz"
    np.savez(f, x=x, y=y)
    x_tr, y_tr, x_te, y_te = load_dataset(f"npz:{f}", 8, 3, seed=0, num_classes=5)
    assert x_tr.shape == (40, 3, 8, 8) and x_te.shape == (10, 3, 8, 8)
    assert float(x_tr.max()) <= 1.0 and float(x_tr.min()) >= 0.0
    assert sorted(torch.cat([y_tr, y_te]).tolist()) == sorted(y.tolist())
    again = load_dataset(f"npz:{f}", 8, 3, seed=0)
    assert torch.equal(again.x_test, x_te)


def test_npz_float_data_scaled(tmp_path):
    x = np.linspace(-5, 5, 20 * 4 * 4, dtype=np.float64).reshape(20, 4, 4)
    f = tmp_path / "f.npz"
    np.savez(f, x=x, y=np.arange(20) % 2)
    x_tr, _, x_te, _ = load_dataset(f"npz:{f}", 4, 1)
    allx = torch.cat([x_tr, x_te])
    assert float(allx.min()) == 0.0 and float(allx.max()) == 1.0


@pytest.mark.parametrize("case,needle", [
    ("missing", "does not exist"),
    ("no-y", "must hold arrays 'x' and 'y'"),
    ("object", "object arrays"),
    ("float-labels", "1-D integer array"),
    ("length", "has 10 samples but y has 9"),
    ("shape", "shape"),
    ("nan", "NaN"),
    ("classes", "labels up to 12"),
    ("not-npz", "cannot read npz"),
])
def test_npz_errors(tmp_path, case, needle):
    f = tmp_path / "d.npz"
    x = np.zeros((10, 4, 4), np.float32)
    y = np.arange(10) % 2
    if case == "no-y":
        np.savez(f, x=x)
    elif case == "object":
        np.savez(f, x=np.array([object()] * 10, dtype=object), y=y)
    elif case == "float-labels":
        np.savez(f, x=x, y=y.astype(np.float32))
    elif case == "length":
        np.savez(f, x=x, y=y[:9])
    elif case == "shape":
        np.savez(f, x=np.zeros((10, 4, 4, 5, 2)), y=y)
    elif case == "nan":
        x[0, 0, 0] = np.nan
        np.savez(f, x=x, y=y)
    elif case == "classes":
        np.savez(f, x=x, y=y * 12)
    elif case == "not-npz":
        f.write_text("not a zip")
    with pytest.raises(UserError, match=needle) as ei:
        load_dataset(f"npz:{f}", 4, 1, num_classes=10)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------------------------------- cifar10

def _write_cifar(root, n=20, bad_batch=None, payload=None):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
             b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
             b"filenames": [f"{i}.png".encode() for i in range(n)]}
        if name == bad_batch:
            d[b"extra"] = payload
        with open(root / name, "wb") as f:
            pickle.dump(d, f, protocol=2)


def test_cifar10_folder(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    (x_tr, y_tr, x_te, y_te), info = load_dataset_with_info(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", 32, 3)
    assert x_tr.shape == (100, 3, 32, 32) and x_te.shape == (20, 3, 32, 32)
    assert y_tr.dtype == torch.int64 and info["name"] == "cifar10"
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"), encoding="bytes")
    assert torch.equal(x_te[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255))
    x_small = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", 16, 1).x_train
    assert x_small.shape == (100, 1, 16, 16)


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_cifar10_malicious_batch_refused(tmp_path):
    marker = tmp_path / "pwned"
    root = tmp_path / "c"
    _write_cifar(root, bad_batch="data_batch_3", payload=_Exploit(marker))
    with pytest.raises(UserError, match="refused to read .*data_batch_3.*posix.system"):
        load_dataset(f"cifar10:{root}", 32, 3)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["persistent id", "unknown codec"])
def test_a_damaged_cifar_pickle_is_one_line_of_data_error(tmp_path, damage):
    """Two damages the fuzzer found (bench/results/fuzz.md, cifar100): a persistent-id opcode, whose pickle error
    message spans two lines, and a string's codec name changed to one that does not exist (LookupError)."""
    from spikformer.data import DataError, _unpickle_plain
    raw = pickle.dumps({b"data": b"\xff" * 4}, protocol=2)  # bytes pickled through _codecs.encode(..., 'latin1')
    assert b"latin1" in raw
    raw = b"\x80\x02(X\x01\x00\x00\x00aP." if damage == "persistent id" else raw.replace(b"latin1", b"ladin1")
    path = tmp_path / "batch"
    path.write_bytes(raw)
    with pytest.raises(DataError) as e:
        _unpickle_plain(path, "CIFAR-100 file")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_cifar10_missing(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", 32, 3)
    _write_cifar(tmp_path / "c")
    (tmp_path / "c" / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch is missing"):
        load_dataset(f"cifar10:{tmp_path / 'c'}", 32, 3)
