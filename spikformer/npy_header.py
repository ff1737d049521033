"""The header of one .npy member of an .npz archive, read and checked before its array is allocated (shared by the
npz data set reader and the event file reader)."""
from __future__ import annotations

import numpy as np

from .data_base import DataError

MAX_NPY_HEADER = 10_000  # bytes of header text numpy may parse
MAX_ARRAY_BYTES = 2 * 2 ** 30  # a header promising more than this is refused before anything is allocated


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
        raise DataError(f"{what}: array {name} is an object array, which needs pickle (object arrays are refused)")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise DataError(f"{what}: array {name} {list(shape)} {dtype} promises {nbytes} bytes, more than the "
                        f"{max_bytes} allowed")
    return tuple(shape), fortran, dtype, fp.tell(), nbytes


def check_npz_members(path, what: str, names, max_bytes: int = MAX_ARRAY_BYTES) -> None:
    """Reads the header of each member `names` (e.g. 'x', 'y') of the .npz at `path` and refuses one that promises
    more than `max_bytes` (or is an object array) before np.load allocates it; a missing member is left to the
    caller's own message."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {i.filename: i for i in zf.infolist()}
        for name in names:
            if f"{name}.npy" in members:
                with zf.open(members[f"{name}.npy"]) as fp:
                    read_npy_header(fp, what, name, max_bytes)
