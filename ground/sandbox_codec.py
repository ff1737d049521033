"""The data format of ground.sandbox's results: what the child's function returns travels as tagged JSON plus one
file of raw array bytes, never as a pickle. `encode` (in the child: dicts, lists, tuples, str, bytes, numbers,
numpy scalars, arrays of numbers or fixed-width strings, object arrays of those) and `decode` (in the parent:
every dtype checked, no objects, no structures; arrays built with np.frombuffer), so nothing the child sends can
make the parent run code.
"""
from __future__ import annotations

import os

import numpy as np


class ArrayRef:
    """An array the child has already written to the output (see Out.array)."""
    __slots__ = ("dtype", "shape", "offset", "nbytes")

    def __init__(self, dtype: str, shape: list, offset: int, nbytes: int):
        self.dtype, self.shape, self.offset, self.nbytes = dtype, shape, offset, nbytes


ARRAYS = "arrays.bin"   # the child's arrays, raw bytes one after the other (64-byte aligned)
INLINE_MAX = 16         # numeric arrays up to this many elements travel inside the JSON document
ARRAY_KINDS = "biufcSU"  # numbers, fixed-width byte and unicode strings: no objects, no structures


class Out:
    """Given to the child's function as its first argument: `out.keep(a)` writes a large array to the output
    now (so that the child holds one array at a time) and returns a reference to put into the result; a small
    one is returned as it is (it travels inline in the JSON)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.file = None
        self.size = 0

    def keep(self, a):
        if isinstance(a, np.ndarray) and a.dtype.kind != "O" and not _inline(a):
            return self.array(a)
        return a

    def array(self, a: np.ndarray) -> ArrayRef:
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
        if a.dtype.kind not in ARRAY_KINDS or a.dtype.fields is not None or a.dtype.subdtype is not None:
            raise TypeError(f"unsupported array dtype {a.dtype}")
        try:
            if self.file is None:
                self.file = open(os.path.join(self.dir, ARRAYS), "wb")
            pad = -self.size % 64
            self.file.write(b"\0" * pad)
            self.size += pad
            ref = ArrayRef(a.dtype.str, list(a.shape), self.size, a.nbytes)
            if a.nbytes:
                self.file.write(a.reshape(-1).view(np.uint8).data)
            self.size += a.nbytes
        except OSError as e:
            raise OutputError(e.errno, e.strerror) from None
        return ref

    def close(self):
        if self.file is not None:
            try:
                self.file.close()
            except OSError as e:
                raise OutputError(e.errno, e.strerror) from None


class OutputError(OSError):
    """The child could not write its output (a full temporary directory): reported to the caller as an OSError,
    not as a problem of the file."""


def _inline(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf" and a.dtype.fields is None and a.size <= INLINE_MAX


def encode(v, out: Out):
    """Tagged JSON for the values a parser returns; anything else is a TypeError (in the child)."""
    if isinstance(v, ArrayRef):
        return ["n", v.dtype, v.shape, v.offset, v.nbytes]
    if v is None or isinstance(v, bool):
        return ["v", v]
    if isinstance(v, str):  # np.str_ too
        return ["s", str(v)]
    if isinstance(v, bytes):  # np.bytes_ too
        return ["b", bytes(v).decode("latin-1")]
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        return ["f", repr(v)]
    if isinstance(v, dict):
        return ["d", [[encode(k, out), encode(x, out)] for k, x in v.items()]]
    if isinstance(v, (list, tuple)):
        return ["l" if isinstance(v, list) else "t", [encode(x, out) for x in v]]
    if isinstance(v, np.generic) and v.dtype.kind in "biuf":
        return ["x", v.dtype.str, v.item()]
    if isinstance(v, np.generic) and v.dtype.kind in ARRAY_KINDS:
        return ["y"] + encode(out.array(np.asarray(v)), out)[1:]
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "O":  # e.g. HDF5 variable-length strings: each element encoded on its own
            return ["o", list(v.shape), [encode(x, out) for x in v.reshape(-1).tolist()]]
        if _inline(v):
            return ["a", v.dtype.str, list(v.shape), v.reshape(-1).tolist()]
        return encode(out.array(v), out)
    raise TypeError(f"unsupported value of type {type(v).__name__}")


def _dtype(s, kinds: str) -> np.dtype:
    dt = np.dtype(str(s))
    if dt.kind not in kinds or dt.fields is not None or dt.subdtype is not None or dt.hasobject:
        raise ValueError(f"unexpected dtype {dt}")
    return dt


class Arrays:
    """The parent's view of the child's arrays.bin: read once, arrays are views into it (no pickle involved:
    np.frombuffer of a checked numeric or fixed-width string dtype)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, ARRAYS)
        self.buf = None

    def get(self, dtype, shape, offset, nbytes) -> np.ndarray:
        if self.buf is None:
            with open(self.path, "rb") as f:
                self.buf = bytearray(os.fstat(f.fileno()).st_size)
                f.readinto(self.buf)
        dt = _dtype(dtype, ARRAY_KINDS)
        shape = tuple(int(x) for x in shape)
        if any(x < 0 for x in shape) or type(offset) is not int or type(nbytes) is not int or offset < 0 \
                or nbytes != int(np.prod(shape, dtype=object)) * dt.itemsize or offset + nbytes > len(self.buf):
            raise ValueError("array reference out of bounds")
        return np.frombuffer(self.buf, dtype=dt, count=nbytes // dt.itemsize if dt.itemsize else 0,
                             offset=offset).reshape(shape)


def decode(e, arrays: Arrays):
    """The inverse of encode, in the parent: builds only plain values, numpy arrays of numbers or strings and
    object arrays of decoded values that it fills itself."""
    if not isinstance(e, list) or not e or not isinstance(e[0], str):
        raise ValueError("malformed sandbox result")
    tag = e[0]
    if tag == "v" and (e[1] is None or isinstance(e[1], bool)):
        return e[1]
    if tag == "s" and isinstance(e[1], str):
        return e[1]
    if tag == "b" and isinstance(e[1], str):
        return e[1].encode("latin-1")
    if tag == "i" and isinstance(e[1], str):
        return int(e[1])
    if tag == "f" and isinstance(e[1], str):
        return float(e[1])
    if tag == "d" and isinstance(e[1], list):
        return {decode(k, arrays): decode(x, arrays) for k, x in e[1]}
    if tag in ("l", "t") and isinstance(e[1], list):
        items = [decode(x, arrays) for x in e[1]]
        return items if tag == "l" else tuple(items)
    if tag in ("n", "y") and len(e) == 5 and isinstance(e[2], list):
        a = arrays.get(*e[1:])
        return a[()] if tag == "y" else a
    if tag == "x" and isinstance(e[2], (bool, int, float)):
        return _dtype(e[1], "biuf").type(e[2])
    if tag == "a" and isinstance(e[2], list) and isinstance(e[3], list):
        return np.array(e[3], dtype=_dtype(e[1], "biuf")).reshape([int(x) for x in e[2]])
    if tag == "o" and isinstance(e[1], list) and all(type(s) is int and s >= 0 for s in e[1]):
        items = [decode(x, arrays) for x in e[2]]
        a = np.empty(len(items), dtype=object)
        a[:] = items
        return a.reshape(e[1])
    raise ValueError(f"malformed sandbox result (tag {tag!r})")

