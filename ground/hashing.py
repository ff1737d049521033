"""sha256 of files and arrays: the one implementation behind every checksum in artifacts and reports."""
from __future__ import annotations

import hashlib


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def array_sha256(a) -> str:
    """sha256 of an array's raw bytes (C order); a torch tensor is read through .numpy() on the CPU."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().contiguous().numpy()
    import numpy as np
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
