"""Image classification data for training and evaluating Spikformer models.

`load_dataset(spec, img_size, in_channels)` returns `(x_train, y_train, x_test, y_test)`: float32 tensors
[N, C, H, W] with values in [0, 1], already converted to the model's channel count and image size, and int64
labels. Data specs (the streaming readers of spikformer/datasets read these and more, one sample at a time):

- `digits`: scikit-learn's bundled 8x8 digits (1797 images, values 0..16), stratified 80/20 split with the
  given seed; nothing is downloaded.
- `cifar10:DIR`: the standard python-format `cifar-10-batches-py` folder (data_batch_1..5, test_batch), using
  its own train/test split. The batches are pickles; they are read with a restricted unpickler that only
  rebuilds numpy arrays and plain builtins, and refuses anything else.
- `npz:FILE`: a numpy .npz with arrays `x` ([N,H,W], [N,C,H,W] or [N,H,W,C]) and integer labels `y` [N]; loaded
  with allow_pickle=False and split 80/20 (stratified when every class has at least two samples) with the seed.

Event data (spikformer/events.py; they need the number of time steps, `T=`): x_train/x_test are float32 frames
[N, T, 2, H, W] of event counts per polarity (channel 0 OFF, 1 ON), integrated as SpikingJelly's
integrate_events_by_fixed_frames_number(split_by='number', frames_num=T), at the model's image size:

- `events:DIR` (or `events:DIR:HxW` to give the sensor size): SpikingJelly's processed event data sets,
  DIR/events_np/[train|test/]<class>/*.npz with arrays t, x, y, p, read with allow_pickle=False; their own
  train/test folders, or when there are none (CIFAR10-DVS) the official split (the first ceil(90 %) of each class
  in file order for training, docs/data.md), or with `:split=random` a seeded stratified 80/20 split.
- `event-digits`: the digits above rendered as N-MNIST-style saccade recordings (nothing is read or downloaded);
  the same split as `digits` for the same seed.

Every problem with a spec or its files raises `UserError` with one sentence.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .data_base import DataError
from .data_base import stratified_split as _stratified_split
from .npy_header import check_npz_members

SPEC_HELP = ("digits, cifar10:DIR (cifar-10-batches-py folder), npz:FILE (arrays x and y), event-digits or "
             "events:DIR[:HxW][:split=random] (SpikingJelly events_np folder)")
EVENT_KINDS = ("events", "event-digits")
CIFAR10_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST_BATCH = "test_batch"


class Split(NamedTuple):
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


# --------------------------------------------------------------------------------------------------- spec parsing

def split_spec(spec: str, help_text: str) -> tuple[str, str | None, bool]:
    """'KIND[:ARG]' -> (kind in lower case, ARG or None, whether it is a built-in set, which takes no ARG);
    DataError for an empty spec or a built-in set given an argument."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty data spec; use one of: {help_text}")
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("digits", "event-digits"):
        if sep and arg:
            raise DataError(f"data spec '{kind}' takes no argument, got {spec!r}")
        return kind, None, True
    return kind, arg, False


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'digits' -> ('digits', None); 'cifar10:DIR' -> ('cifar10', 'DIR'); 'npz:FILE' -> ('npz', 'FILE');
    'event-digits' -> ('event-digits', None); 'events:DIR[:HxW]' -> ('events', 'DIR[:HxW]')."""
    kind, arg, built_in = split_spec(spec, SPEC_HELP)
    if built_in:
        return kind, None
    if kind in ("cifar10", "npz", "events"):
        if not arg:
            raise DataError(f"data spec {spec!r} needs a path after '{kind}:'; use one of: {SPEC_HELP}")
        return kind, arg
    raise DataError(f"unknown data spec {spec!r}; use one of: {SPEC_HELP}")


# ------------------------------------------------------------------------------------------------------ sources

def _load_digits(seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # [N, 8, 8], values 0..16
    y = d.target.astype(np.int64)
    tr, te = _stratified_split(y, seed)
    return x[tr, None], y[tr], x[te, None], y[te], {"name": "digits", "split": "stratified 80/20",
                                                     "split_seed": seed}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes and builtin containers; any other global (code) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "bytes"),
        ("builtins", "str"), ("builtins", "int"), ("builtins", "float"), ("builtins", "set"),
        ("__builtin__", "list"), ("__builtin__", "dict"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


CIFAR_IMAGE_BYTES = 3 * 32 * 32
# The largest original file is cifar-100-python/train (50,000 images, about 155 MB); a file far larger than that
# is not a CIFAR batch, and is refused before the unpickler allocates anything for it.
MAX_CIFAR_FILE_BYTES = 256 * 2 ** 20


def read_cifar_batch(path: Path, labels_key: str = "labels", what: str = "CIFAR-10 batch",
                     missing_hint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of one python-format CIFAR file (a dict with b'data' and
    b'labels', or b'fine_labels' for CIFAR-100), unpickled with _NumpyOnlyUnpickler after a size check."""
    if not path.is_file():
        raise DataError(f"{what} file {path} is missing (expected " + (missing_hint or
                        f"the cifar-10-batches-py folder with {', '.join(CIFAR10_TRAIN_BATCHES)} and "
                        f"{CIFAR10_TEST_BATCH}") + ")")
    size = path.stat().st_size
    if size > MAX_CIFAR_FILE_BYTES:
        raise DataError(f"{what} {path} is {size} bytes, more than the {MAX_CIFAR_FILE_BYTES} a CIFAR file can be; "
                        f"refused before reading")
    d = _unpickle_plain(path, what)
    if not isinstance(d, dict):
        raise DataError(f"{what} {path} does not hold a dict")
    data = d.get(b"data", d.get("data"))
    labels = d.get(labels_key.encode(), d.get(labels_key))
    if data is None or labels is None:
        raise DataError(f"{what} {path} has no 'data' or '{labels_key}' entry")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES or labels.shape != (data.shape[0],):
        raise DataError(f"{what} {path} has data of shape {data.shape} and {labels.size} labels; "
                        f"expected [N, 3072] and N labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what} {path} has non-integer labels")
    x = data.reshape(-1, 3, 32, 32)
    return x, labels.astype(np.int64)


def _unpickle_plain(path: Path, what: str):
    """The object of a pickle holding only numpy arrays and builtins (anything else is refused)."""
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:  # its messages may span lines (persistent ids): one line here
        raise DataError(f"refused to read {path}: it is not a plain {what} ({' '.join(str(e).split())})") from None
    # LookupError: an unknown codec named by a damaged string's encoding (and IndexError, KeyError);
    # MemoryError: a damaged length field
    except (EOFError, ValueError, TypeError, AttributeError, LookupError, OSError, MemoryError,
            RecursionError, OverflowError) as e:
        raise DataError(f"cannot read {what} {path}: {type(e).__name__}: {' '.join(str(e).split())}") \
            from None


def _load_cifar10(root: str):
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError(f"CIFAR-10 folder {root} does not exist or is not a directory")
    parts = [read_cifar_batch(root_p / name) for name in CIFAR10_TRAIN_BATCHES]
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = read_cifar_batch(root_p / CIFAR10_TEST_BATCH)
    scale = 255.0 if x_tr.dtype == np.uint8 else None
    x_tr, x_te = _to_unit_range(x_tr, scale), _to_unit_range(x_te, scale)
    return x_tr, y_tr, x_te, y_te, {"name": "cifar10", "split": "standard (data_batch_1..5 / test_batch)",
                                    "split_seed": None}


def _to_unit_range(x: np.ndarray, scale: float | None = None) -> np.ndarray:
    """uint8 -> /255; other integer types and floats outside [0, 1] -> min-max scaled over the whole array."""
    if scale is not None:
        return x.astype(np.float32) / np.float32(scale)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    x = x.astype(np.float32)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return x
    if hi == lo:
        return np.zeros_like(x)
    return (x - lo) / np.float32(hi - lo)


def _as_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        c_first, c_last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if c_first and not c_last:
            return x
        if c_last and not c_first:
            return x.transpose(0, 3, 1, 2)
        if c_first and c_last:  # e.g. [N, 3, H, 3]: take the conventional NCHW reading
            return x
        raise DataError(f"{where}: cannot tell the channel axis of x with shape {list(x.shape)}; "
                        f"expected [N,H,W], [N,C,H,W] or [N,H,W,C] with C 1 or 3")
    raise DataError(f"{where}: x has shape {list(x.shape)}; expected [N,H,W], [N,C,H,W] or [N,H,W,C]")


def _load_npz(file: str, seed: int):
    path = Path(file)
    if not path.is_file():
        raise DataError(f"npz file {file} does not exist")
    if not zipfile.is_zipfile(path):  # np.load would otherwise try to unpickle it
        raise DataError(f"cannot read npz file {file}: it is not an .npz archive (np.savez output with arrays x and y)")
    try:
        check_npz_members(path, f"npz file {file}", ("x", "y"))  # before np.load allocates anything
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if not {"x", "y"} <= names:
                raise DataError(f"npz file {file} must hold arrays 'x' and 'y'; it has {sorted(names) or 'none'}")
            x, y = z["x"], z["y"]
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(f"npz file {file} cannot be read without pickle (object arrays are refused): {e}") from None
    except Exception as e:  # noqa: BLE001 - zipfile/format errors of all kinds
        raise DataError(f"cannot read npz file {file}: {type(e).__name__}: {e}") from None
    if x.dtype == object or y.dtype == object:
        raise DataError(f"npz file {file} holds object arrays; expected numbers")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"npz file {file}: x has dtype {x.dtype}; expected numbers")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"npz file {file}: y must be a 1-D integer array, got dtype {y.dtype} shape {list(y.shape)}")
    if len(y) != len(x):
        raise DataError(f"npz file {file}: x has {len(x)} samples but y has {len(y)} labels")
    if len(y) < 2:
        raise DataError(f"npz file {file} has {len(y)} samples; need at least 2 for a train/test split")
    if y.min() < 0:
        raise DataError(f"npz file {file}: labels must be >= 0, found {int(y.min())}")
    if not np.isfinite(x.astype(np.float64)).all():
        raise DataError(f"npz file {file}: x holds NaN or infinite values")
    x = _as_nchw(x, f"npz file {file}")
    x = _to_unit_range(x if x.dtype != np.bool_ else x.astype(np.uint8) * 255)
    y = y.astype(np.int64)
    tr, te = _stratified_split(y, seed)
    return x[tr], y[tr], x[te], y[te], {"name": f"npz:{path.name}", "split": "80/20", "split_seed": seed}


# -------------------------------------------------------------------------------------------------- conversion

def convert_images(x: torch.Tensor, img_size: int, in_channels: int) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] -> [N, in_channels, img_size, img_size] in [0, 1]. Grayscale <-> RGB by repeating
    or averaging channels; resizing is bilinear (antialiased when shrinking)."""
    c = x.shape[1]
    if c != in_channels:
        if in_channels == 1:
            x = x.mean(1, keepdim=True)
        elif c == 1:
            x = x.repeat(1, in_channels, 1, 1)
        else:
            raise DataError(f"cannot convert {c}-channel images to the model's {in_channels} channels")
    h, w = x.shape[-2:]
    if (h, w) != (img_size, img_size):
        shrink = h > img_size or w > img_size
        out = []
        for i in range(0, len(x), 4096):  # bounded memory for large sets
            out.append(F.interpolate(x[i:i + 4096], size=(img_size, img_size), mode="bilinear",
                                     align_corners=False, antialias=shrink))
        x = torch.cat(out) if out else x.new_zeros((0, x.shape[1], img_size, img_size))
    return x.clamp_(0.0, 1.0).contiguous()


def _digest(*arrays: torch.Tensor) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(tuple(a.shape)).encode())
        h.update(a.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


VALUE_GRID_CANDIDATES = (255,) + tuple(2 ** k for k in range(1, 17))  # 8-bit images first, then powers of two


def value_grid(*tensors: torch.Tensor) -> int | None:
    """The smallest N of VALUE_GRID_CANDIDATES with every value x * N an integer (up to float32 rounding of x:
    |x N - round(x N)| <= N 2**-22), or None.
    A fixed-point target encodes x as round(x * N): on this grid the encoding is exact (e.g. the digits, 0..16
    upsampled bilinearly to 16x16, lie on multiples of 1/256; 8-bit images on multiples of 1/255).
    Event frames (5-D tensors [N, T, 2, H, W] of counts): count_value_grid, i.e. 1 (or None if not integers)."""
    if tensors and all(t.ndim == 5 for t in tensors):
        return count_value_grid(*tensors)
    vals = torch.cat([t.reshape(-1) for t in tensors]).double().unique()
    for n in VALUE_GRID_CANDIDATES:
        scaled = vals * n
        if bool(((scaled - scaled.round()).abs() <= n * 2.0 ** -22).all()):
            return n
    return None


def count_value_grid(*tensors: torch.Tensor) -> int | None:
    """The value grid of event frames: 1 when every value is a non-negative integer (event counts), else None.
    (value_grid would answer 255 for integers: its candidates are fractions of [0, 1].) A fixed-point target
    encodes an event frame as the integer counts themselves (input scale 1, no clipping to [0, 1]); the largest
    count (dataset info 'max_count') must fit its input payload."""
    for t in tensors:
        flat = t.reshape(-1)
        for i in range(0, flat.numel(), 1 << 24):  # in chunks: event data sets can be gigabytes
            v = flat[i:i + (1 << 24)]
            if not bool(((v >= 0) & (v == v.round())).all()):
                return None
    return 1


def _load_events(kind: str, arg: str | None, img_size: int, in_channels: int, seed: int, T):
    from . import events
    if kind == "event-digits":
        return events.load_event_digits(T, img_size, in_channels, seed)
    return events.load_events_dir(arg, T, img_size, in_channels, seed)


def load_dataset_with_info(spec: str, img_size: int, in_channels: int, seed: int = 0,
                           num_classes: int | None = None, T: int | None = None) -> tuple[Split, dict]:
    """Like load_dataset, plus metadata for checkpoints: spec, name, split, split_seed, sizes, classes, image
    size/channels after conversion and a sha256 of the converted tensors.
    Event specs (events:DIR, event-digits) need T and give frames [N, T, 2, img_size, img_size] of event counts
    (in_channels must be 2); their info adds T, sensor, sensor_source, integration, resize, n_events, max_count,
    and value_grid 1 (count_value_grid). T is ignored by the image specs."""
    kind, arg = parse_spec(spec)
    if kind in EVENT_KINDS:
        x_tr, y_tr, x_te, y_te, info = _load_events(kind, arg, img_size, in_channels, seed, T)
        n_cls = int(max(y_tr.max(initial=-1), y_te.max(initial=-1))) + 1
        if num_classes is not None and n_cls > num_classes:
            raise DataError(f"data spec {spec!r} has labels up to {n_cls - 1} but the model has {num_classes} "
                            f"classes")
        split = Split(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (x_tr, y_tr, x_te, y_te)))
        info = dict(info, spec=spec, n_train=len(y_tr), n_test=len(y_te), num_classes=n_cls, img_size=img_size,
                    in_channels=in_channels, sha256=_digest(*split),
                    value_grid=value_grid(split.x_train, split.x_test),
                    max_count=int(max((float(a.max()) for a in (x_tr, x_te) if a.size), default=0.0)))
        return split, info
    if kind == "digits":
        x_tr, y_tr, x_te, y_te, info = _load_digits(seed)
    elif kind == "cifar10":
        x_tr, y_tr, x_te, y_te, info = _load_cifar10(arg)
    else:
        x_tr, y_tr, x_te, y_te, info = _load_npz(arg, seed)
    n_cls = int(max(y_tr.max(initial=-1), y_te.max(initial=-1))) + 1
    if num_classes is not None and n_cls > num_classes:
        raise DataError(f"data spec {spec!r} has labels up to {n_cls - 1} but the model has {num_classes} classes")
    xt = convert_images(torch.from_numpy(np.ascontiguousarray(x_tr)), img_size, in_channels)
    xe = convert_images(torch.from_numpy(np.ascontiguousarray(x_te)), img_size, in_channels)
    split = Split(xt, torch.from_numpy(np.ascontiguousarray(y_tr)), xe, torch.from_numpy(np.ascontiguousarray(y_te)))
    info = dict(info, spec=spec, n_train=len(y_tr), n_test=len(y_te), num_classes=n_cls,
                img_size=img_size, in_channels=in_channels, sha256=_digest(*split),
                value_grid=value_grid(xt, xe))
    return split, info


def load_dataset(spec: str, img_size: int, in_channels: int, seed: int = 0,
                 num_classes: int | None = None, T: int | None = None) -> Split:
    """(x_train, y_train, x_test, y_test): float32 [N, in_channels, img_size, img_size] in [0, 1], int64 labels
    (event specs: float32 counts [N, T, 2, img_size, img_size])."""
    return load_dataset_with_info(spec, img_size, in_channels, seed, num_classes, T=T)[0]


def dataset_info(spec: str, img_size: int, in_channels: int, seed: int = 0, T: int | None = None) -> dict:
    """Metadata of a data spec (name, split, split seed, sizes, digest) as stored in checkpoints."""
    return load_dataset_with_info(spec, img_size, in_channels, seed, T=T)[1]
