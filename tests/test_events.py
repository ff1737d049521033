"""Event data (spikformer/events.py): events:DIR read as SpikingJelly 0.0.0.0.14 reads it (frames compared with
SpikingJelly's own functions and data set classes), the built-in event-digits, and malformed files."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
import torch

from spikformer import events as E
from spikformer.data import (DataError, _stratified_split, load_dataset, load_dataset_with_info, parse_spec,
                             value_grid)

import spikingjelly.datasets as sjds  # noqa: E402  (a pinned dependency: required, not skipped)


def _events(rng, n, H, W, t_dtype=np.int64, xy_dtype=np.int64, p_dtype=np.int64):
    return {"t": np.sort(rng.integers(0, 10 ** 6, n)).astype(t_dtype),
            "x": rng.integers(0, W, n).astype(xy_dtype), "y": rng.integers(0, H, n).astype(xy_dtype),
            "p": rng.integers(0, 2, n).astype(p_dtype)}


def _sj_frames(ev, T, H, W):
    return sjds.integrate_events_by_fixed_frames_number(ev, "number", T, H, W)


def _ours(ev, T, H, W):
    return E.integrate_events([len(ev["x"])], ev["x"], ev["y"], ev["p"], T, H, W)[0]


# -------------------------------------------------------------------------------------------- integration

@pytest.mark.parametrize("n,T", [(0, 4), (3, 4), (4, 4), (1001, 4), (997, 16), (50, 1), (12345, 7)])
def test_integration_equals_spikingjelly(n, T):
    rng = np.random.default_rng(n * 31 + T)
    H, W = 11, 13
    ev = _events(rng, n, H, W)
    ref = _sj_frames(ev, T, H, W)
    ours = _ours(ev, T, H, W)
    assert ours.dtype == np.float32 and ours.shape == (T, 2, H, W)
    assert np.array_equal(ours.astype(np.float64), ref)
    assert ours.sum() == n


def test_integration_dtypes_as_spikingjelly_saves_them():
    """CIFAR10-DVS events_np: t big-endian uint32, x/y uint32, p int64; DVS128 Gesture: int64; bool p."""
    rng = np.random.default_rng(1)
    for kw in ({"t_dtype": ">u4", "xy_dtype": np.uint32}, {"p_dtype": np.bool_}, {"t_dtype": np.float64}):
        ev = _events(rng, 777, 128, 128, **kw)
        assert np.array_equal(_ours(ev, 5, 128, 128).astype(np.float64), _sj_frames(ev, 5, 128, 128))


def test_batch_integration_equals_per_sample():
    rng = np.random.default_rng(2)
    evs = [_events(rng, n, 6, 5) for n in (0, 2, 40, 41)]
    cat = {k: np.concatenate([e[k] for e in evs]) for k in "xyp"}
    batch = E.integrate_events([len(e["x"]) for e in evs], cat["x"], cat["y"], cat["p"], 4, 6, 5)
    for i, e in enumerate(evs):
        assert np.array_equal(batch[i].astype(np.float64), _sj_frames(e, 4, 6, 5))


def test_resize_sum_pool_and_nearest():
    rng = np.random.default_rng(3)
    ev = _events(rng, 3000, 128, 128)
    ref = _sj_frames(ev, 4, 128, 128)
    small = E.integrate_resized([3000], ev["x"], ev["y"], ev["p"], 4, (128, 128), 32)[0]
    assert np.array_equal(small.astype(np.float64), ref.reshape(4, 2, 32, 4, 32, 4).sum(axis=(3, 5)))
    ev = _events(rng, 300, 8, 8)
    big = E.integrate_resized([300], ev["x"], ev["y"], ev["p"], 2, (8, 8), 16)[0]
    assert np.array_equal(big.astype(np.float64), _sj_frames(ev, 2, 8, 8).repeat(2, axis=2).repeat(2, axis=3))
    odd = E.integrate_resized([300], ev["x"], ev["y"], ev["p"], 2, (8, 8), 5)[0]  # not a divisor: binned
    assert odd.shape == (2, 2, 5, 5) and odd.sum() == 300
    assert E.resize_method((128, 128), 32).startswith("H 128->32 sum-pooled")
    assert E.resize_method((16, 16), 16) == "none"


# -------------------------------------------------------------------------------------------- events:DIR

def _write_folder(root, classes, per_class, H, W, rng, splits=None, compressed=True, n=(20, 400)):
    save = np.savez_compressed if compressed else np.savez
    files = []
    for split in splits or [None]:
        for c in classes:
            d = root / "events_np" / (split or "") / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                ev = _events(rng, int(rng.integers(*n)), H, W, t_dtype=">u4", xy_dtype=np.uint32)
                save(d / f"{c}_{i}.npz", **ev)
                files.append((split, c, d / f"{c}_{i}.npz", ev))
    return files


def _sj_items(ds):
    return [(np.asarray(x, np.float64), int(y)) for x, y in ds]


def test_cifar10dvs_layout_equals_spikingjelly_dataset(tmp_path):
    """The CIFAR10-DVS layout (no split folders, 128x128 known sensor): every frame and label equals what
    SpikingJelly's CIFAR10DVS(data_type='frame', frames_number=T, split_by='number') gives (the official
    Spikformer training's loader), split as the official training splits it (SpikingJelly's
    split_to_train_test_set(0.9, ds, 10)); with ':split=random' our seeded stratified split picks from them."""
    from spikingjelly.datasets import split_to_train_test_set
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS
    rng = np.random.default_rng(4)
    _write_folder(tmp_path, E.CIFAR10_CLASSES, 5, 128, 128, rng)
    origin = CIFAR10DVS(str(tmp_path), data_type="frame", frames_number=4, split_by="number")
    ref = _sj_items(origin)
    labels = np.array([y for _, y in ref])
    sj_train, sj_test = split_to_train_test_set(0.9, origin, 10)
    official = (np.array(sj_train.indices, dtype=np.int64), np.array(sj_test.indices, dtype=np.int64))
    for suffix, (tr, te), n_test in (("", official, 0), (":split=random", _stratified_split(labels, 0), 10)):
        (x_tr, y_tr, x_te, y_te), info = load_dataset_with_info(f"events:{tmp_path}{suffix}", 128, 2, seed=0, T=4)
        assert x_tr.shape == (50 - n_test, 4, 2, 128, 128) and x_te.shape == (n_test, 4, 2, 128, 128)
        for xs, ys, idx in ((x_tr, y_tr, tr), (x_te, y_te, te)):
            assert ys.tolist() == labels[idx].tolist()
            for i, j in enumerate(idx):
                assert np.array_equal(xs[i].numpy().astype(np.float64), ref[j][0])
        assert info["name"] == "events:cifar10-dvs" and info["sensor"] == [128, 128]
        assert info["sensor_source"] == "known data set cifar10-dvs"
        assert info["value_grid"] == 1 and info["T"] == 4 and info["resize"] == "none" and len(info["sha256"]) == 64
    assert info["split"] == "stratified 80/20" and sorted(torch.bincount(y_te).tolist()) == [1] * 10


def test_gesture_layout_equals_spikingjelly_dataset(tmp_path):
    """train/test folders with classes '0'..'10' (DVS128 Gesture): labels by sorted folder name ('10' is
    label 2), as SpikingJelly's DVS128Gesture gives them; frames equal."""
    from spikingjelly.datasets.dvs128_gesture import DVS128Gesture
    rng = np.random.default_rng(5)
    _write_folder(tmp_path, [str(i) for i in range(11)], 1, 128, 128, rng, splits=["train", "test"])
    (x_tr, y_tr, x_te, y_te), info = load_dataset_with_info(f"events:{tmp_path}", 128, 2, seed=0, T=3)
    for train, xs, ys in ((True, x_tr, y_tr), (False, x_te, y_te)):
        ref = _sj_items(DVS128Gesture(str(tmp_path), train=train, data_type="frame", frames_number=3,
                                      split_by="number"))
        assert ys.tolist() == [y for _, y in ref]
        assert all(np.array_equal(xs[i].numpy().astype(np.float64), r[0]) for i, r in enumerate(ref))
    assert info["name"] == "events:dvs128-gesture" and info["split"] == "folders train/test"
    assert info["split_seed"] is None and info["classes"][2] == "10"


def test_events_dir_forms_sensor_and_resize(tmp_path):
    rng = np.random.default_rng(6)
    files = _write_folder(tmp_path, ["a", "b"], 2, 10, 12, rng, splits=["train", "test"], compressed=False)
    # inferred sensor (max coordinates + 1), resized 10x12 -> 8x8 by binning
    (x_tr, y_tr, x_te, _), info = load_dataset_with_info(f"events:{tmp_path}", 8, 2, seed=0, T=2)
    hi_y = max(int(f[3]["y"].max()) for f in files)
    hi_x = max(int(f[3]["x"].max()) for f in files)
    assert info["sensor"] == [hi_y + 1, hi_x + 1] and info["sensor_source"].startswith("inferred")
    assert x_tr.shape == (4, 2, 2, 8, 8) and y_tr.tolist() == [0, 0, 1, 1]
    assert float(x_tr.sum()) == sum(len(f[3]["x"]) for f in files if f[0] == "train")
    # the events_np folder itself, and the sensor in the spec: no resize, equal to SpikingJelly
    (x_tr2, _, _, _), info2 = load_dataset_with_info(f"events:{tmp_path / 'events_np'}:10x12", 12, 2, T=2)
    assert info2["sensor"] == [10, 12] and info2["sensor_source"] == "spec"
    assert info2["resize"].startswith("H 10->12 nearest")
    train = [f for f in files if f[0] == "train"]
    for i, (_, _, _, ev) in enumerate(train):
        ref = _sj_frames(ev, 2, 10, 12)
        assert np.array_equal(x_tr2[i].numpy().astype(np.float64), ref[:, :, E._upsample_index(10, 12)])
    assert load_dataset(f"events:{tmp_path}:10x12", 12, 2, T=2).x_train.shape == (4, 2, 2, 12, 12)


def test_non_monotonic_timestamps_are_read_in_file_order(tmp_path):
    rng = np.random.default_rng(7)
    ev = _events(rng, 99, 4, 4)
    ev["t"] = ev["t"][::-1].copy()
    f = tmp_path / "e.npz"
    np.savez(f, **ev)
    got = E.read_event_file(f, (4, 4))
    assert np.array_equal(_ours(got, 3, 4, 4).astype(np.float64), _sj_frames(ev, 3, 4, 4))


# -------------------------------------------------------------------------------------------- event-digits

@pytest.fixture(scope="module")
def event_digits():
    return load_dataset_with_info("event-digits", 16, 2, seed=0, T=4)


def test_event_digits_shape_split_and_info(event_digits):
    (x_tr, y_tr, x_te, y_te), info = event_digits
    assert x_tr.shape == (1437, 4, 2, 16, 16) and x_te.shape == (360, 4, 2, 16, 16)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    counts = torch.bincount(y_te, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    digits = load_dataset("digits", 16, 1, seed=0)
    assert torch.equal(digits.y_train, y_tr) and torch.equal(digits.y_test, y_te)  # the same split as digits
    assert float(x_tr[:, :, 0].sum()) > 0 and float(x_tr[:, :, 1].sum()) > 0  # OFF and ON events
    assert bool((x_tr == x_tr.round()).all()) and float(x_tr.min()) == 0.0
    assert info["value_grid"] == 1 and info["max_count"] == int(max(x_tr.max(), x_te.max()))
    assert info["name"] == "event-digits" and info["T"] == 4 and info["sensor"] == [16, 16]
    per_sample = torch.cat([x_tr, x_te]).sum(dim=(1, 2, 3, 4))
    assert float(per_sample.min()) > 0  # every digit makes events


def test_event_digits_deterministic(event_digits):
    split, info = load_dataset_with_info("event-digits", 16, 2, seed=0, T=4)
    assert info["sha256"] == event_digits[1]["sha256"]
    assert all(torch.equal(a, b) for a, b in zip(split, event_digits[0]))
    other = load_dataset_with_info("event-digits", 16, 2, seed=1, T=4)[0]
    assert not torch.equal(other.y_test, split.y_test)


def test_event_digits_events_integrate_like_spikingjelly():
    from sklearn.datasets import load_digits
    imgs = load_digits().images[:5] / 16.0
    n, t, x, y, p = E.render_digit_events(imgs, 16)
    frames = E.integrate_events(n, x, y, p, 4, 16, 16)
    start = 0
    for i, k in enumerate(n):
        ev = {"t": t[start:start + k], "x": x[start:start + k], "y": y[start:start + k], "p": p[start:start + k]}
        assert np.all(np.diff(ev["t"]) >= 0) and set(np.unique(ev["p"])) == {0, 1}
        assert 0 <= ev["t"].min() and ev["t"].max() <= 3 * E.DIGITS_RENDERING["saccade_us"]
        assert np.array_equal(frames[i].astype(np.float64), _sj_frames(ev, 4, 16, 16))
        start += k


def test_event_digits_other_size_and_T():
    (x_tr, _, x_te, _), info = load_dataset_with_info("event-digits", 8, 2, seed=0, T=2)
    assert x_tr.shape == (1437, 2, 2, 8, 8) and info["sensor"] == [8, 8]


# -------------------------------------------------------------------------------------------- specs and errors

def test_specs():
    assert parse_spec("event-digits") == ("event-digits", None)
    assert parse_spec("events:/d:16x16") == ("events", "/d:16x16")
    assert E.parse_events_arg("/nonexistent/d:16x20") == ("/nonexistent/d", (16, 20))
    with pytest.raises(DataError, match="takes no argument"):
        parse_spec("event-digits:4")
    with pytest.raises(DataError, match="needs a path"):
        parse_spec("events:")
    assert value_grid(torch.ones(2, 3, 2, 4, 4) * 3) == 1 and value_grid(torch.full((1, 1, 2, 2, 2), 0.5)) is None
    # image specs ignore T
    assert load_dataset("digits", 8, 1, T=4).x_train.shape == (1437, 1, 8, 8)


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _npy_bytes(a, shape=None):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(a.dtype), "fortran_order": False,
                                               "shape": shape or a.shape})
    return buf.getvalue() + a.tobytes()


GOOD = {"t": np.arange(10, dtype=np.int64), "x": np.arange(10) % 4, "y": np.arange(10) % 3,
        "p": np.arange(10) % 2}


def _bad_file(path, case, marker):
    ev = {k: v.copy() for k, v in GOOD.items()}
    if case == "not-zip":
        path.write_bytes(b"\x80\x04not a zip")
        return
    if case == "truncated":
        np.savez_compressed(path, **ev)
        path.write_bytes(path.read_bytes()[:-40])
        return
    if case == "header-size":
        with zipfile.ZipFile(path, "w") as zf:
            for k, v in ev.items():
                zf.writestr(f"{k}.npy", _npy_bytes(v, (10 ** 6,) if k == "x" else None))
        return
    if case == "pickled":
        obj = np.empty(10, dtype=object)
        obj[:] = [_Exploit(marker)] * 10
        ev["x"] = obj
    elif case == "missing":
        del ev["p"]
    elif case == "x-float":
        ev["x"] = ev["x"].astype(np.float32)
    elif case == "t-string":
        ev["t"] = np.array(["a"] * 10)
    elif case == "p-float":
        ev["p"] = ev["p"].astype(np.float64)
    elif case == "negative":
        ev["y"][3] = -1
    elif case == "out-of-range":
        ev["x"][3] = 200
    elif case == "polarity":
        ev["p"][2] = 2
    elif case == "nan-t":
        ev["t"] = ev["t"].astype(np.float64)
        ev["t"][5] = np.nan
    elif case == "2d":
        ev["x"] = ev["x"].reshape(2, 5)
    elif case == "length":
        ev["y"] = ev["y"][:9]
    elif case == "huge-coordinate":
        ev["x"] = ev["x"].astype(np.uint64)
        ev["x"][0] = 2 ** 63
    np.savez(path, **ev)


MALFORMED = [("not-zip", "not an .npz archive"), ("truncated", "cannot read event file"),
             ("header-size", "truncated or damaged"), ("pickled", "object array"), ("missing", "lacks p"),
             ("x-float", "x has dtype float32"), ("t-string", "t has dtype <U1"), ("p-float", "p has dtype"),
             ("negative", "y = -1 is negative"), ("out-of-range", "x = 200 is outside the 8x8"),
             ("polarity", "must be 0 or 1, found 2"), ("nan-t", "NaN"), ("2d", r"shape \[2, 5\]; expected 1-D"),
             ("length", "1-D arrays of one length"), ("huge-coordinate", "x = 9223372036854775808")]


@pytest.mark.parametrize("case,needle", MALFORMED)
def test_malformed_event_files(tmp_path, case, needle):
    marker = tmp_path / "pwned"
    root = tmp_path / "d"
    _write_folder(root, ["a", "b"], 1, 8, 8, np.random.default_rng(0), splits=["train", "test"])
    _bad_file(root / "events_np" / "train" / "b" / "b_0.npz", case, marker)
    sensor = "" if case == "huge-coordinate" else ":8x8"
    with pytest.raises(DataError, match=needle) as ei:
        load_dataset(f"events:{root}{sensor}", 8, 2, T=2)
    msg = str(ei.value)
    assert "\n" not in msg and msg.strip()
    assert not marker.exists()


@pytest.mark.parametrize("case,needle", [
    ("missing", "does not exist"), ("no-classes", "no class folders"), ("empty-class", "holds no .npz"),
    ("train-only", "has a 'train' folder but no 'test'"), ("class-mismatch", "different class folders"),
    ("no-T", "needs the number of time steps T"), ("bad-T", "T must be an integer"),
    ("channels", "model has 1 input channel"), ("sensor", "must be 1..4096"), ("classes", "labels up to 1"),
    ("no-events", "holds no events"), ("digits-no-T", "needs the number of time steps"),
])
def test_event_folder_errors(tmp_path, case, needle):
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    spec, T, ch, ncls = f"events:{root}", 2, 2, None
    if case == "missing":
        pass
    elif case == "no-classes":
        (root / "events_np").mkdir(parents=True)
    elif case == "empty-class":
        _write_folder(root, ["a"], 2, 8, 8, rng)
        (root / "events_np" / "b").mkdir()
    elif case == "train-only":
        _write_folder(root, ["a"], 2, 8, 8, rng, splits=["train"])
    elif case == "class-mismatch":
        _write_folder(root, ["a", "b"], 1, 8, 8, rng, splits=["train"])
        _write_folder(root, ["a", "c"], 1, 8, 8, rng, splits=["test"])
    elif case == "no-events":
        _write_folder(root, ["a", "b"], 1, 8, 8, rng, splits=["train", "test"], n=(0, 1))
    else:
        _write_folder(root, ["a", "b"], 1, 8, 8, rng, splits=["train", "test"])
        T = {"no-T": None, "bad-T": 0}.get(case, 2)
        ch = 1 if case == "channels" else 2
        spec = f"events:{root}:0x8" if case == "sensor" else spec
        ncls = 1 if case == "classes" else None
        spec = "event-digits" if case == "digits-no-T" else spec
        T = None if case == "digits-no-T" else T
    with pytest.raises(DataError, match=needle) as ei:
        load_dataset(spec, 8, ch, T=T, num_classes=ncls)
    assert "\n" not in str(ei.value)


def test_newline_in_path_stays_one_line(tmp_path):
    root = tmp_path / "a\nb"
    _write_folder(root, ["a", "b"], 1, 8, 8, np.random.default_rng(0), splits=["train", "test"])
    (root / "events_np" / "train" / "a" / "a_0.npz").write_bytes(b"junk")
    with pytest.raises(DataError) as ei:
        load_dataset(f"events:{root}", 8, 2, T=2)
    assert "\n" not in str(ei.value)
