"""The header of one .npy member of an .npz archive, read and checked before its array is allocated (shared by the
npz data set reader and the event file reader)."""
from __future__ import annotations

import numpy as np

from .data import DataError

MAX_NPY_HEADER = 10_000  # bytes of header text numpy may parse


def read_npy_header(fp, what: str, name: str, max_bytes: int | None = None):
    """(shape, fortran_order, dtype, offset of the data, bytes promised) of the .npy stream `fp`, checked: format
    1.0 or 2.0, no object (pickled) dtype, at most `max_bytes` promised. `what` starts every error ("npz file F")."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
    else:
        raise DataError(f"{what}: array {name} has .npy format version {version}; expected 1.0 or 2.0")
    if dtype.hasobject:
        raise DataError(f"{what}: array {name} is an object array, which needs pickle; refused")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise DataError(f"{what}: array {name} {list(shape)} {dtype} promises {nbytes} bytes, more than the "
                        f"{max_bytes} allowed")
    return tuple(shape), fortran, dtype, fp.tell(), nbytes
