"""Event-camera data: SpikingJelly's processed event files (`events:DIR`) and a built-in event data set rendered
from scikit-learn's digits (`event-digits`), both integrated into frames by one function.

Frames. Every sample (events t, x, y, p in recording order) becomes float32 frames [T, 2, H, W] of event counts
exactly as the official Spikformer CIFAR10-DVS training gets them: SpikingJelly 0.0.0.0.14
`CIFAR10DVS(root, data_type='frame', frames_number=T, split_by='number')`, i.e.
`spikingjelly.datasets.integrate_events_by_fixed_frames_number(events, 'number', T, H, W)`:
the N events are cut by their index into T segments of N // T events (the last segment takes the remainder;
with N < T every event lands in the last frame), and each segment is counted per pixel and polarity, channel 0
for p == 0 (OFF) and channel 1 for p == 1 (ON), pixel [y, x]. Timestamps only fix the order, which is the file
order (SpikingJelly does not sort either); `integrate_events` is that computation, vectorised.

Resizing to the model's image size. The official training feeds the 128x128 frames to a 128x128 model, with no
resize. When the sensor and the model differ, each axis is mapped so that counts stay integers:
- shrinking (model side S < sensor side D): sum-pooling by binning event coordinates, x -> floor(x * S / D)
  (for D a multiple of S exactly the sum of S/D-sized blocks; the total event count is kept);
- enlarging (S > D): nearest-neighbour upsampling of the counted frames, out[o] = in[floor(o * D / S)].
Frames therefore always hold non-negative integer counts (value grid 1; see spikformer.data.count_value_grid).

`events:DIR` layout (SpikingJelly's processed data sets, read with np.load(allow_pickle=False), never pickle):
DIR/events_np/<split>/<class>/**.npz with splits `train` and `test` (DVS128 Gesture, N-MNIST), or
DIR/events_np/<class>/**.npz without splits (CIFAR10-DVS: the official split, the first ceil(90 %) of each class
in file order for training, or with `:split=random` a seeded stratified 80/20 split; docs/data.md); DIR may also
be the events_np folder itself. Each .npz holds 1-D arrays t (integer or float), x, y (integers), p (0/1 integers
or bool) of one length. Labels are the positions of the class folder names in sorted order, as SpikingJelly's
DatasetFolder (torchvision) gives them (so DVS128 Gesture's folder '10' is label 2). Files are found as
torchvision does (sorted walk of each class folder, names ending in .npz, case-insensitive), without following
symbolic links below the class folder. Sensor size: `events:DIR:HxW`, else the known data set the class folders
identify (KNOWN_DATA_SETS), else inferred as (max y + 1, max x + 1) over all files.

`event-digits`: the 1797 8x8 scikit-learn digits, each rendered as an N-MNIST-style recording (see
`render_digit_events`), integrated like the above; no file is read or downloaded. The rendering has no
randomness (the same events on every machine: float64 element-wise arithmetic only); the seed only chooses the
split, which is the `digits` split.

Every problem with a file or folder raises spikformer.data.DataError with one line.
"""
from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from .data_base import DataError
from .data_base import stratified_split as _stratified_split
from .npy_header import read_npy_header

EVENT_ARRAYS = ("t", "x", "y", "p")
SPLIT_BY = "number"
INTEGRATION = ("spikingjelly.datasets.integrate_events_by_fixed_frames_number(events, split_by='number', "
               "frames_num=T, H, W) (SpikingJelly 0.0.0.0.14)")
MAX_SENSOR_SIDE = 4096       # larger than any event camera sold; bounds the frames an inferred size can ask for
MAX_EVENTS_PER_FILE = 2 ** 28  # declared array lengths beyond this are refused before anything is allocated

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# name -> (class folder names in sorted order, split folders train/test?, sensor (H, W)) as SpikingJelly makes them
KNOWN_DATA_SETS = {
    "cifar10-dvs": (CIFAR10_CLASSES, False, (128, 128)),
    "dvs128-gesture": (tuple(sorted(str(i) for i in range(11))), True, (128, 128)),
    "n-mnist": (tuple(str(i) for i in range(10)), True, (34, 34)),
}
SENSOR_SIZES = {name: v[2] for name, v in KNOWN_DATA_SETS.items()}


def _line(s) -> str:
    """One line of text (paths and messages from elsewhere may hold line breaks)."""
    s = str(s)
    return s if s.splitlines() == [s] else " ".join(s.split())


# ------------------------------------------------------------------------------------------------ integration

def frame_index(n_events: np.ndarray, T: int) -> np.ndarray:
    """The frame of every event of samples with `n_events` events each (events of all samples concatenated):
    SpikingJelly's cal_fixed_frames_number_segment_index(split_by='number'): with di = N // T, frame
    min(i // di, T - 1) for event i; di == 0 puts every event into the last frame."""
    n_events = np.asarray(n_events, dtype=np.int64)
    total = int(n_events.sum())
    starts = np.cumsum(n_events) - n_events
    within = np.arange(total, dtype=np.int64) - np.repeat(starts, n_events)
    di = np.repeat(n_events // T, n_events)
    return np.where(di > 0, np.minimum(within // np.maximum(di, 1), T - 1), T - 1)


def integrate_events(n_events, x, y, p, T: int, H: int, W: int) -> np.ndarray:
    """Counts of the events of len(n_events) samples, concatenated in x, y, p (recording order within each
    sample), into float32 frames [len(n_events), T, 2, H, W] (channel 0: p == 0, channel 1: p != 0).
    Equal to SpikingJelly's integrate_events_by_fixed_frames_number(split_by='number') per sample."""
    n_events = np.asarray(n_events, dtype=np.int64).reshape(-1)
    n = len(n_events)
    sample = np.repeat(np.arange(n, dtype=np.int64), n_events)
    frame = frame_index(n_events, T)
    chan = (np.asarray(p) != 0).astype(np.int64)
    flat = (((sample * T + frame) * 2 + chan) * H + np.asarray(y, dtype=np.int64)) * W + np.asarray(x, np.int64)
    counts = np.bincount(flat, minlength=n * T * 2 * H * W)
    return counts.astype(np.float32).reshape(n, T, 2, H, W)


def _bin_axis(c: np.ndarray, src: int, dst: int) -> np.ndarray:
    return c if dst >= src else (c * dst) // src


def _upsample_index(src: int, dst: int) -> np.ndarray:
    return (np.arange(dst, dtype=np.int64) * src) // dst


def integrate_resized(n_events, x, y, p, T: int, sensor: tuple[int, int], size: int) -> np.ndarray:
    """integrate_events at the sensor size (H, W), then resized to size x size (module docstring: sum-pooling by
    coordinate binning on a shrinking axis, nearest-neighbour on an enlarging one; both keep integer counts)."""
    H, W = sensor
    x = _bin_axis(np.asarray(x, dtype=np.int64), W, size)
    y = _bin_axis(np.asarray(y, dtype=np.int64), H, size)
    h, w = min(H, size), min(W, size)
    frames = integrate_events(n_events, x, y, p, T, h, w)
    if h < size:
        frames = frames[..., _upsample_index(h, size), :]
    if w < size:
        frames = frames[..., _upsample_index(w, size)]
    return np.ascontiguousarray(frames)


def resize_method(sensor: tuple[int, int], size: int) -> str:
    H, W = sensor
    if (H, W) == (size, size):
        return "none"
    parts = []
    for axis, d in (("H", H), ("W", W)):
        if size < d:
            parts.append(f"{axis} {d}->{size} sum-pooled (coordinates binned: floor(c * {size} / {d}))")
        elif size > d:
            parts.append(f"{axis} {d}->{size} nearest-neighbour")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------ event files

def _npy_headers(path: Path, where: str) -> dict:
    """Shape and dtype of the four arrays, read from the .npy headers inside the zip before any array is
    loaded; refuses object (pickled) arrays, missing arrays and members whose size does not match the header."""
    if not zipfile.is_zipfile(path):  # np.load would otherwise try to read it as a pickle
        raise DataError(f"cannot read event file {where}: it is not an .npz archive (np.savez output with arrays "
                        f"t, x, y, p)")
    out = {}
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: i for i in zf.infolist()}
        missing = [k for k in EVENT_ARRAYS if f"{k}.npy" not in members]
        if missing:
            have = sorted(m[:-4] for m in members if m.endswith(".npy"))
            raise DataError(f"event file {where} must hold arrays t, x, y, p; it lacks {', '.join(missing)} "
                            f"(has {', '.join(have) or 'none'})")
        for k in EVENT_ARRAYS:
            info = members[f"{k}.npy"]
            with zf.open(info) as fp:
                shape, _, dtype, offset, _ = read_npy_header(fp, f"event file {where}", k)
            if len(shape) != 1:
                raise DataError(f"event file {where}: array {k} has shape {list(shape)}; expected 1-D")
            if shape[0] > MAX_EVENTS_PER_FILE:
                raise DataError(f"event file {where}: array {k} declares {shape[0]} events, more than the "
                                f"{MAX_EVENTS_PER_FILE} allowed per file")
            if offset + shape[0] * dtype.itemsize != info.file_size:
                raise DataError(f"event file {where}: array {k} is truncated or damaged (header says "
                                f"{shape[0] * dtype.itemsize} bytes, the archive holds {info.file_size - offset})")
            out[k] = (shape, dtype)
    return out


def read_event_file(path, sensor: tuple[int, int] | None = None, where: str | None = None) -> dict:
    """The events of one SpikingJelly .npz (np.savez or np.savez_compressed with 1-D arrays t, x, y, p), checked:
    x, y integers in [0, W) x [0, H) of `sensor` (without a sensor: >= 0 and < MAX_SENSOR_SIDE), p 0/1 (integer
    or bool), t integers or finite floats (not necessarily increasing: the order is the file's, as in
    SpikingJelly), all of one length. Returns {'t', 'x', 'y', 'p'} with x, y, p as int64. Never unpickles."""
    path = Path(path)
    where = _line(where or path)
    if not path.is_file():
        raise DataError(f"event file {where} does not exist")
    try:
        _npy_headers(path, where)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in EVENT_ARRAYS}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile, zlib and .npy format errors of all kinds, MemoryError
        raise DataError(f"cannot read event file {where}: {type(e).__name__}: {_line(e)}") from None
    t, x, y, p = (arrays[k] for k in EVENT_ARRAYS)
    n = len(t)
    if any(a.ndim != 1 or len(a) != n for a in (x, y, p)):
        raise DataError(f"event file {where}: t, x, y, p must be 1-D arrays of one length; got "
                        + ", ".join(f"{k} {list(arrays[k].shape)}" for k in EVENT_ARRAYS))
    if t.dtype.kind not in "iuf":
        raise DataError(f"event file {where}: t has dtype {t.dtype}; expected integers or floats")
    for k, a in (("x", x), ("y", y)):
        if a.dtype.kind not in "iu":
            raise DataError(f"event file {where}: {k} has dtype {a.dtype}; expected integers")
    if p.dtype.kind not in "iub":
        raise DataError(f"event file {where}: p has dtype {p.dtype}; expected 0/1 integers or bool")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise DataError(f"event file {where}: t holds NaN or infinite timestamps")
    if p.dtype.kind != "b" and n and not ((p == 0) | (p == 1)).all():
        bad = p[(p != 0) & (p != 1)][0]
        raise DataError(f"event file {where}: polarity p must be 0 or 1, found {int(bad)}")
    limits = (("x", x, sensor[1] if sensor else MAX_SENSOR_SIDE), ("y", y, sensor[0] if sensor else MAX_SENSOR_SIDE))
    for k, a, lim in limits:
        if n and int(a.min()) < 0:
            raise DataError(f"event file {where}: coordinate {k} = {int(a.min())} is negative")
        if n and int(a.max()) >= lim:
            what = (f"outside the {sensor[0]}x{sensor[1]} (HxW) sensor" if sensor else
                    f"beyond the largest sensor side {MAX_SENSOR_SIDE}")
            raise DataError(f"event file {where}: coordinate {k} = {int(a.max())} is {what}")
    return {"t": t, "x": x.astype(np.int64), "y": y.astype(np.int64), "p": p.astype(np.int64)}


# ------------------------------------------------------------------------------------------------ folders

_SENSOR_SUFFIX = re.compile(r"^(?P<dir>.+):(?P<h>\d+)x(?P<w>\d+)$")
_SPLIT_SUFFIX = re.compile(r"^(?P<rest>.+):split=(?P<rule>[A-Za-z]+)$")
SPLIT_RULES = ("official", "random")
OFFICIAL_TRAIN_RATIO = 0.9


def parse_split_option(arg: str) -> tuple[str, str]:
    """'DIR[:HxW]:split=RULE' -> ('DIR[:HxW]', RULE); without the option the rule is 'official'."""
    m = _SPLIT_SUFFIX.match(arg)
    if not m:
        return arg, "official"
    rule = m["rule"].lower()
    if rule not in SPLIT_RULES:
        raise DataError(f"events:{_line(arg)}: split must be 'official' or 'random', got {m['rule']!r}")
    return m["rest"], rule


def official_split(labels, num_classes: int, train_ratio: float = OFFICIAL_TRAIN_RATIO):
    """(train indices, test indices) as the official cifar10dvs/train.py's split_to_train_test_set(train_ratio,
    ds, num_classes) without random_split (docs/data.md): per class, in data set order, the first
    ceil(n * train_ratio) samples train, the rest test, classes one after the other."""
    train, test = [], []
    for c in range(num_classes):
        idx = [i for i, y in enumerate(labels) if y == c]
        pos = math.ceil(len(idx) * train_ratio)
        train.extend(idx[:pos])
        test.extend(idx[pos:])
    return np.array(train, dtype=np.int64), np.array(test, dtype=np.int64)


OFFICIAL_SPLIT_RULE = ("official CIFAR10-DVS split (cifar10dvs/train.py split_to_train_test_set(0.9)): first "
                       "ceil(90 %) of each class in sorted file order for training, the rest for testing")


def parse_events_arg(arg: str) -> tuple[str, tuple[int, int] | None]:
    """'DIR' -> (DIR, None); 'DIR:HxW' -> (DIR, (H, W)) (unless a folder is literally named 'DIR:HxW')."""
    m = _SENSOR_SUFFIX.match(arg)
    if m and not Path(arg).exists():
        h, w = int(m["h"]), int(m["w"])
        if not (1 <= h <= MAX_SENSOR_SIDE and 1 <= w <= MAX_SENSOR_SIDE):
            raise DataError(f"sensor size {h}x{w} in {_line(arg)!r} must be 1..{MAX_SENSOR_SIDE} per side")
        return m["dir"], (h, w)
    return arg, None


def _class_dirs(root: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir())
    except OSError as e:
        raise DataError(f"cannot list {_line(root)}: {_line(e.strerror or e)}") from None


def _npz_files(class_dir: Path) -> list[Path]:
    """torchvision's make_dataset order: sorted walk, sorted names, extension .npz (any case)."""
    out = []
    for dirpath, _, names in sorted(os.walk(class_dir)):
        out.extend(Path(dirpath) / n for n in sorted(names) if n.lower().endswith(".npz"))
    return out


def scan_event_folder(dir_: str) -> dict:
    """The layout of an events:DIR folder: {'root', 'classes', 'splits': {'train': [(file, label)], 'test': ...}
    or {'all': [...]}}."""
    d = Path(dir_)
    if not d.is_dir():
        raise DataError(f"event data folder {_line(dir_)} does not exist or is not a directory")
    root = d / "events_np" if (d / "events_np").is_dir() else d
    subdirs = _class_dirs(root)
    split_names = [s for s in ("train", "test") if s in subdirs]
    if split_names and len(split_names) != 2:
        raise DataError(f"event data folder {_line(root)} has a '{split_names[0]}' folder but no "
                        f"'{({'train', 'test'} - set(split_names)).pop()}' folder")
    parts = {s: root / s for s in ("train", "test")} if split_names else {"all": root}
    classes = None
    for name, part in parts.items():
        c = _class_dirs(part)
        if not c:
            raise DataError(f"event data folder {_line(part)} has no class folders (expected "
                            f"<class>/*.npz as in SpikingJelly's events_np)")
        if classes is not None and c != classes:
            raise DataError(f"event data folders {_line(parts['train'])} and {_line(parts['test'])} have different "
                            f"class folders ({len(classes)} and {len(c)})")
        classes = c
    splits = {}
    for name, part in parts.items():
        items = []
        for label, cls in enumerate(classes):
            files = _npz_files(part / cls)
            if not files:
                raise DataError(f"class folder {_line(part / cls)} holds no .npz event files")
            items.extend((f, label) for f in files)
        splits[name] = items
    return {"root": root, "classes": classes, "splits": splits, "layout": "train/test" if split_names else "flat"}


def known_data_set(classes, has_splits: bool) -> str | None:
    for name, (cls, splits, _) in KNOWN_DATA_SETS.items():
        if tuple(classes) == cls and splits == has_splits:
            return name
    return None


def _check_T(T) -> int:
    if T is None:
        raise DataError("event data needs the number of time steps T (frames per sample); pass T=")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or not 1 <= int(T) <= 4096:
        raise DataError(f"T must be an integer in 1..4096, got {T!r}")
    return int(T)


def _check_channels(in_channels: int, spec: str):
    if in_channels != 2:
        raise DataError(f"data spec {spec!r} gives 2-channel (OFF/ON) event frames but the model has "
                        f"{in_channels} input channel(s); use a model with in_channels 2")


def resolve_sensor(scan: dict, sensor: tuple[int, int] | None):
    """(known data set name or None, sensor (H, W), where the size came from) of a scanned events folder: the
    spec's size, else the known data set's, else (max y + 1, max x + 1) over all its files (one pass)."""
    known = known_data_set(scan["classes"], scan["layout"] == "train/test")
    root = scan["root"]
    if sensor is not None:
        return known, sensor, "spec"
    if known is not None:
        return known, SENSOR_SIZES[known], f"known data set {known}"
    hi_x = hi_y = -1
    for items in scan["splits"].values():
        for f, _ in items:
            ev = read_event_file(f, None, _where(f, root))
            if len(ev["x"]):
                hi_x, hi_y = max(hi_x, int(ev["x"].max())), max(hi_y, int(ev["y"].max()))
    if hi_x < 0:
        raise DataError(f"event data folder {_line(root)} holds no events; cannot infer the sensor size "
                        f"(give it as events:DIR:HxW)")
    return known, (hi_y + 1, hi_x + 1), "inferred (max y + 1, max x + 1)"


def load_events_dir(arg: str, T: int, img_size: int, in_channels: int, seed: int):
    """events:DIR[:HxW][:split=random] -> (x_train, y_train, x_test, y_test, info): frames float32
    [N, T, 2, S, S], int64 labels."""
    T = _check_T(T)
    _check_channels(in_channels, f"events:{arg}")
    arg, rule = parse_split_option(arg)
    dir_, sensor = parse_events_arg(arg)
    scan = scan_event_folder(dir_)
    known, sensor, source = resolve_sensor(scan, sensor)
    root = scan["root"]
    n_events = 0
    arrays = {}
    for name, items in scan["splits"].items():
        frames = np.empty((len(items), T, 2, img_size, img_size), np.float32)
        for i, (f, _) in enumerate(items):
            ev = read_event_file(f, sensor, _where(f, root))
            n_events += len(ev["x"])
            frames[i] = integrate_resized([len(ev["x"])], ev["x"], ev["y"], ev["p"], T, sensor, img_size)[0]
        arrays[name] = (frames, np.array([label for _, label in items], dtype=np.int64))
    if "all" in arrays:
        x, y = arrays["all"]
        if rule == "random":
            tr, te = _stratified_split(y, seed)
            split, split_seed = "stratified 80/20", seed
        else:
            tr, te = official_split(y, len(scan["classes"]))
            split, split_seed = OFFICIAL_SPLIT_RULE, None
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
    else:
        if rule == "random":
            raise DataError(f"events:{_line(arg)}: split=random is for folders without train/ and test/; this one "
                            f"has them")
        (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
        split, split_seed = "folders train/test", None
    info = {"name": f"events:{known or Path(dir_).name}", "split": split, "split_seed": split_seed, "T": T,
            "sensor": list(sensor), "sensor_source": source, "integration": INTEGRATION,
            "resize": resize_method(sensor, img_size), "classes": list(scan["classes"]),
            "layout": scan["layout"], "n_events": n_events}
    return x_tr, y_tr, x_te, y_te, info


def _where(f: Path, root: Path) -> str:
    try:
        return f"{_line(root)}/{_line(f.relative_to(root))}"
    except ValueError:
        return _line(f)


# ------------------------------------------------------------------------------------------------ event-digits

# the N-MNIST-style rendering (Orchard et al. 2015: a sensor moved in three saccades over a static image)
DIGITS_RENDERING = {
    "path": "triangle (0,0) -> (a/2, a) -> (-a/2, a) -> (0,0) in (x, y) pixels, a = size / 8",
    "steps_per_saccade": 8,
    "saccade_us": 100_000,
    "log_offset": 0.1,          # log(I + 0.1): the dark background has a finite log intensity
    "contrast_threshold": 0.3,  # an event each time log(I + 0.1) crosses a multiple of 0.3
}


def _upscale_digits(img: np.ndarray, size: int) -> np.ndarray:
    """[N, 8, 8] -> [N, size, size] bilinear (align_corners=False, as torch), in explicit float64 element-wise
    operations (no BLAS, no FMA: the same bits on every machine)."""
    src = img.shape[-1]

    def axis(n):
        c = np.maximum((np.arange(n, dtype=np.float64) + 0.5) * (src / n) - 0.5, 0.0)
        i0 = np.minimum(np.floor(c).astype(np.int64), src - 1)
        i1 = np.minimum(i0 + 1, src - 1)
        w1 = c - i0
        return i0, i1, 1.0 - w1, w1

    y0, y1, wy0, wy1 = axis(size)
    x0, x1, wx0, wx1 = axis(size)
    rows = img[:, y0, :] * wy0[None, :, None] + img[:, y1, :] * wy1[None, :, None]
    return rows[:, :, x0] * wx0[None, None, :] + rows[:, :, x1] * wx1[None, None, :]


def _shifted(padded: np.ndarray, m: int, size: int, dx: float, dy: float) -> np.ndarray:
    """The image moved by (dx, dy) pixels (bilinear, zeros outside): out[y, x] = img(y - dy, x - dx)."""
    ix, iy = math.floor(-dx), math.floor(-dy)
    fx, fy = -dx - ix, -dy - iy
    r0, c0 = m + iy, m + ix

    def win(r, c):
        return padded[:, r:r + size, c:c + size]
    return ((1 - fy) * ((1 - fx) * win(r0, c0) + fx * win(r0, c0 + 1))
            + fy * ((1 - fx) * win(r0 + 1, c0) + fx * win(r0 + 1, c0 + 1)))


def saccade_path(size: int) -> list[tuple[float, float]]:
    """The (dx, dy) image offsets at every sub-step: 3 straight saccades along a triangle, start = end."""
    a = size / 8.0
    verts = [(0.0, 0.0), (a / 2, a), (-a / 2, a), (0.0, 0.0)]
    k = DIGITS_RENDERING["steps_per_saccade"]
    pts = [verts[0]]
    for (x0, y0), (x1, y1) in zip(verts[:-1], verts[1:]):
        pts.extend((x0 + (x1 - x0) * j / k, y0 + (y1 - y0) * j / k) for j in range(1, k + 1))
    return pts


def _levels() -> np.ndarray:
    """The intensity thresholds exp(j C) - offset (log(I + offset) = j C) covering I in [0, 1], exp(j C) rounded
    to a multiple of 2**-30 so that the table has the same bits on every machine (whatever its libm)."""
    c, off = DIGITS_RENDERING["contrast_threshold"], DIGITS_RENDERING["log_offset"]
    lo, hi = math.floor(math.log(off) / c) - 1, math.ceil(math.log(1.0 + off) / c) + 1
    return np.array([round(math.exp(j * c) * 2 ** 30) / 2 ** 30 for j in range(lo, hi + 1)], np.float64) - off


def render_digit_events(images: np.ndarray, size: int):
    """N-MNIST-style events of [N, 8, 8] images in [0, 1]: the image, upscaled to size x size, moves along
    `saccade_path` (3 saccades of DIGITS_RENDERING['saccade_us'] each, linear sub-steps); an ideal DVS pixel emits
    one event each time its log intensity log(I + 0.1) crosses a multiple of the contrast threshold (ON p=1 when
    rising, OFF p=0 when falling), timestamped (integer microseconds) where the linear change of I between two
    sub-steps reaches the level. Returns (n_events [N], t, x, y, p) with each sample's events in time order
    (ties: raster order). Deterministic: no randomness, float64 element-wise arithmetic only."""
    n = len(images)
    img = _upscale_digits(images.astype(np.float64), size)
    pts = saccade_path(size)
    m = int(math.ceil(size / 8.0)) + 2
    padded = np.zeros((n, size + 2 * m, size + 2 * m))
    padded[:, m:m + size, m:m + size] = img
    levels = _levels()
    k = DIGITS_RENDERING["steps_per_saccade"]
    dt = DIGITS_RENDERING["saccade_us"] // k
    prev = _shifted(padded, m, size, *pts[0])
    prev_lv = np.searchsorted(levels, prev, side="right")
    chunks = []
    for s, (dx, dy) in enumerate(pts[1:], start=1):
        cur = _shifted(padded, m, size, dx, dy)
        lv = np.searchsorted(levels, cur, side="right")
        d = lv - prev_lv
        idx = np.flatnonzero(d)
        if idx.size:
            cnt = np.abs(d.reshape(-1)[idx])
            rep = np.repeat(idx, cnt)
            within = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            up = np.repeat(d.reshape(-1)[idx] > 0, cnt)
            a0 = np.repeat(prev_lv.reshape(-1)[idx], cnt)
            j = np.where(up, a0 + within, a0 - 1 - within)
            i0, i1 = prev.reshape(-1)[rep], cur.reshape(-1)[rep]
            frac = (levels[j] - i0) / (i1 - i0)
            t = (s - 1) * dt + np.floor(np.clip(frac, 0.0, 1.0) * dt).astype(np.int64)
            sample, pix = np.divmod(rep, size * size)
            chunks.append((sample, t, pix, up.astype(np.int64)))
        prev, prev_lv = cur, lv
    sample, t, pix, p = (np.concatenate([c[i] for c in chunks]) if chunks else np.zeros(0, np.int64)
                         for i in range(4))
    t_span = 3 * DIGITS_RENDERING["saccade_us"] + 1
    order = np.argsort((sample * t_span + t) * (size * size) + pix, kind="stable")  # by sample, time, pixel
    sample, t, pix, p = sample[order], t[order], pix[order], p[order]
    y, x = np.divmod(pix, size)
    return np.bincount(sample, minlength=n), t, x, y, p


def load_event_digits(T: int, img_size: int, in_channels: int, seed: int):
    """event-digits -> (x_train, y_train, x_test, y_test, info): frames float32 [N, T, 2, S, S] rendered at the
    model's size S; the same stratified 80/20 split as `digits` for the same seed."""
    from sklearn.datasets import load_digits

    T = _check_T(T)
    _check_channels(in_channels, "event-digits")
    if not 1 <= img_size <= 512:
        raise DataError(f"event-digits renders at the model's image size; {img_size} is outside 1..512")
    d = load_digits()
    n_events, t, x, y, p = render_digit_events(d.images / 16.0, img_size)
    frames = integrate_events(n_events, x, y, p, T, img_size, img_size)
    labels = d.target.astype(np.int64)
    tr, te = _stratified_split(labels, seed)
    info = {"name": "event-digits", "split": "stratified 80/20", "split_seed": seed, "T": T,
            "sensor": [img_size, img_size], "sensor_source": "rendered at the model's image size",
            "integration": INTEGRATION, "resize": "none", "rendering": dict(DIGITS_RENDERING),
            "n_events": int(n_events.sum())}
    return frames[tr], labels[tr], frames[te], labels[te], info
