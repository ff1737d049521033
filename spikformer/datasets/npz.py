"""`npz:FILE`: a numpy .npz (np.savez or np.savez_compressed) with arrays x ([N,H,W], [N,C,H,W] or [N,H,W,C], C 1
or 3) and integer labels y [N], split 80/20 with the seed as spikformer.data does (stratified when every class
has two samples).

Nothing is loaded whole. The .npy header of each member is read first (numpy.lib.format.read_magic and
read_array_header_1_0/2_0, which allocate nothing for the data) and arrays whose header promises more than
MAX_ARRAY_BYTES, object arrays and members whose size disagrees with their header are refused. A stored member
(np.savez) is then read in place, one sample per os.pread at its offset in the .npz; a deflated member
(np.savez_compressed) cannot be read at an offset, so it is first inflated in 1 MiB pieces into a temporary
file (zipfile checks its CRC at the end) and read from there. pread rather than a memory map: the pages of a
map that a pass touches count in the process's resident memory, so its peak would grow with the file.

Values: uint8 pixels (bool as 0/255) give x = pixel / 255 through the eval transform (images.py), as CIFAR;
other numbers are scaled to [0, 1] as spikformer.data does (kept when already within [0, 1], else min-max over
the whole array, found in one streamed pass) and resized with spikformer.data.convert_images."""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import weakref
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .. import npy_header
from ..data import convert_images
from ..data_base import DataError, stratified_split
from ..data_config import DataConfig
from .base import SampleDataset
from .images import array_image, describe_transform, eval_transform, pil_mode, to_raw

MAX_ARRAY_BYTES = npy_header.MAX_ARRAY_BYTES
CHUNK_BYTES = 2 ** 20
ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length


def read_npy_header(fp, where: str, name: str):
    """(shape, fortran_order, dtype, data offset, bytes) of the .npy stream `fp`, checked: format 1.0/2.0, no
    object dtype, at most MAX_ARRAY_BYTES promised."""
    return npy_header.read_npy_header(fp, f"npz file {where}", name, MAX_ARRAY_BYTES)


def _chw_axes(shape: tuple, where: str) -> tuple[int, ...] | None:
    """The transpose of one sample to [C, H, W] (None: [H, W], one channel), as spikformer.data._as_nchw."""
    if len(shape) == 3:
        return None
    if len(shape) == 4:
        c_first, c_last = shape[1] in (1, 3), shape[3] in (1, 3)
        if c_first:
            return (0, 1, 2)
        if c_last:
            return (2, 0, 1)
    raise DataError(f"npz file {where}: x has shape {list(shape)}; expected [N,H,W], [N,C,H,W] or [N,H,W,C] "
                    f"with C 1 or 3")


class NpzDataset(SampleDataset):
    def __init__(self, file: str, split: str, img_size: int, in_channels: int, data_config: DataConfig,
                 seed: int, info: dict, skip_bad: bool = False):
        path = Path(file)
        self.where = " ".join(str(file).split())
        if not path.is_file():
            raise DataError(f"npz file {self.where} does not exist")
        if not zipfile.is_zipfile(path):
            raise DataError(f"cannot read npz file {self.where}: it is not an .npz archive (np.savez output with "
                            f"arrays x and y)")
        self._tmpdir = None
        try:
            y_all = self._open(path)
        except DataError:
            self._cleanup()
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, struct.error, NotImplementedError,
                KeyError, RuntimeError) as e:
            self._cleanup()
            raise DataError(f"cannot read npz file {self.where}: {type(e).__name__}: {' '.join(str(e).split())}") \
                from None
        if len(y_all) < 2:
            raise DataError(f"npz file {self.where} has {len(y_all)} samples; need at least 2 for a train/test split")
        tr, te = stratified_split(y_all, seed)
        self.index = tr if split == "train" else te
        self.labels = y_all[self.index]
        self.img_size, self.in_channels = img_size, in_channels
        self.eight_bit = self.dtype == np.uint8 or self.dtype == np.bool_
        if self.eight_bit:
            self.mode = pil_mode(in_channels, f"npz:{self.where}")
            self.transform = eval_transform(img_size, data_config)
            self.scale = None
        else:
            self.scale = self._value_range()
        super().__init__(dict(info, name=f"npz:{path.name}", n=len(self.labels), num_classes=int(y_all.max()) + 1,
                              split_rule=f"stratified 80/20 (sklearn train_test_split, seed {seed}) of the "
                                         f"{len(y_all)} samples",
                              split_seed=seed, value_grid=255 if self.eight_bit else None,
                              transform=describe_transform(img_size, data_config) if self.eight_bit else
                              "values scaled to [0, 1] (spikformer.data), bilinear resize (convert_images)"),
                         skip_bad)

    # ------------------------------------------------------------------------------------------------ reading
    def _open(self, path: Path) -> np.ndarray:
        with zipfile.ZipFile(path) as zf:
            members = {i.filename: i for i in zf.infolist()}
            missing = [k for k in ("x", "y") if f"{k}.npy" not in members]
            if missing:
                have = sorted(m[:-4] for m in members if m.endswith(".npy"))
                raise DataError(f"npz file {self.where} must hold arrays 'x' and 'y'; it lacks "
                                f"{', '.join(missing)} (has {', '.join(have) or 'none'})")
            heads = {}
            for k in ("x", "y"):
                info = members[f"{k}.npy"]
                with zf.open(info) as fp:
                    shape, fortran, dtype, offset, nbytes = read_npy_header(fp, self.where, k)
                if offset + nbytes != info.file_size:
                    raise DataError(f"npz file {self.where}: array {k} is truncated or damaged (header says {nbytes} "
                                    f"bytes, the archive holds {info.file_size - offset})")
                heads[k] = (info, shape, fortran, dtype, offset, nbytes)
            xs, ys = heads["x"][1], heads["y"][1]
            xd, yd = heads["x"][3], heads["y"][3]
            if not (xd.kind in "iuf" or xd == np.bool_):
                raise DataError(f"npz file {self.where}: x has dtype {xd}; expected numbers")
            if len(ys) != 1 or yd.kind not in "iu":
                raise DataError(f"npz file {self.where}: y must be a 1-D integer array, got dtype {yd} shape "
                                f"{list(ys)}")
            self.axes = _chw_axes(xs, self.where)
            if xs[0] != ys[0]:
                raise DataError(f"npz file {self.where}: x has {xs[0]} samples but y has {ys[0]} labels")
            with zf.open(heads["y"][0]) as fp:
                fp.seek(heads["y"][4])
                y = np.frombuffer(fp.read(heads["y"][5]), dtype=yd).astype(np.int64)
            if len(y) and y.min() < 0:
                raise DataError(f"npz file {self.where}: labels must be >= 0, found {int(y.min())}")
            info, shape, fortran, dtype, offset, nbytes = heads["x"]
            self.shape, self.fortran, self.dtype = shape, fortran, dtype
            self.sample_shape = shape[1:]
            self.sample_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 1:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    sig, name_len, extra_len = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
                if sig != b"PK\x03\x04":
                    raise DataError(f"npz file {self.where}: the zip entry of x is damaged")
                self.source = str(path)
                self.start = info.header_offset + ZIP_LOCAL_HEADER.size + name_len + extra_len + offset
                if self.start + nbytes > path.stat().st_size:
                    raise DataError(f"npz file {self.where}: array x is truncated")
            else:
                self.source, self.start = self._inflate(zf, info, offset, nbytes), 0
        self._fd = None
        return y

    def _inflate(self, zf, info, offset: int, nbytes: int) -> str:
        self._tmpdir = tempfile.mkdtemp(prefix="spk-npz-")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        out = os.path.join(self._tmpdir, "x.raw")
        with zf.open(info) as src, open(out, "wb") as dst:
            src.seek(offset)
            left = nbytes
            while left:
                piece = src.read(min(CHUNK_BYTES, left))
                if not piece:
                    raise DataError(f"npz file {self.where}: array x is truncated")
                dst.write(piece)
                left -= len(piece)
            src.read()  # to the end of the member: zipfile compares the CRC there
        return out

    def _cleanup(self):
        if getattr(self, "_tmpdir", None):
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __getstate__(self):
        return dict(self.__dict__, _fd=None)

    def _raw(self, j: int) -> np.ndarray:
        """Sample j of x as stored (its own dtype and layout)."""
        if self.fortran:
            m = np.memmap(self.source, self.dtype, "r", offset=self.start, shape=self.shape, order="F")
            return np.array(m[j])
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.source, os.O_RDONLY))
        data = os.pread(self._fd[1], self.sample_bytes, self.start + j * self.sample_bytes)
        if len(data) != self.sample_bytes:
            raise DataError(f"npz file {self.where}: sample {j} is truncated")
        return np.frombuffer(data, self.dtype).reshape(self.sample_shape)

    def _value_range(self):
        """(lo, hi) for min-max scaling, or None when every value is in [0, 1] (spikformer.data._to_unit_range);
        refuses NaN and infinities. One pass over the samples."""
        lo, hi = np.inf, -np.inf
        for j in range(self.shape[0]):
            a = self._raw(j).astype(np.float64)
            if not np.isfinite(a).all():
                raise DataError(f"npz file {self.where}: x holds NaN or infinite values")
            if a.size:
                lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        return None if lo >= 0.0 and hi <= 1.0 else (lo, hi)

    # ------------------------------------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, i: int):
        a = self._raw(int(self.index[i]))
        chw = a[None] if self.axes is None else a.transpose(self.axes)
        if self.eight_bit:
            u = chw.astype(np.uint8) * 255 if chw.dtype == np.bool_ else chw
            return to_raw(self.transform(array_image(u, self.mode))), int(self.labels[i])
        x = chw.astype(np.float32)
        if self.scale is not None:
            lo, hi = self.scale
            x = np.zeros_like(x) if hi == lo else (x - np.float32(lo)) / np.float32(hi - lo)
        return convert_images(torch.from_numpy(np.ascontiguousarray(x))[None], self.img_size,
                              self.in_channels)[0], int(self.labels[i])
