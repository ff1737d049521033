"""Untrusted HDF5 files parsed in ground.sandbox's child process: a hang or a crash of the HDF5 library (not
hardened against crafted files: bench/fuzzing/fuzz_readers.py found forged network.h5 files that make it loop forever or
segfault) becomes a typed error instead of taking the caller down.

`read_hdf5(path)` dumps an HDF5 file in the child (`hdf5_dump`: groups, attributes, datasets; hard links only)
into `H5Group` / `H5Dataset` objects that answer the few h5py calls the readers make (`f.attrs`, `f[name]`,
`keys()`, `items()`, `dataset[()]`); hw_backends.nir.nir_io.read_nir and hw_backends.loihi.network_file.read_network
parse every user-supplied HDF5 file through it. The deadline grows with the file (`deadline_for`), and so does
the child's address-space limit (`memory_for`). `prepare_helper` is what the sandbox's helper runs once before
its first call (no HDF5 filter plugins; the libraries warmed up).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .sandbox import MEMORY_MIN, TIMEOUT_S, SandboxError, run
from .sandbox_codec import Arrays, Out, decode, encode

# h5py is imported only in the sandbox's helper and child (inside the functions they run): nothing untrusted
# reaches the HDF5 library in the caller's process

TIMEOUT_S_PER_MB = 0.25     # the deadline: sandbox.TIMEOUT_S, plus this per MB of the file read
TIMEOUT_ENV = "SPIKFORMER_PARSE_TIMEOUT_S"   # overrides the base deadline (slow machines, huge files)
MEMORY_PER_FILE_BYTE = 32   # the child's address-space limit: sandbox.MEMORY_MIN or 32 x the file size
MAX_DEPTH = 32              # HDF5 groups nested deeper than this are refused (link cycles end here)
MAX_OBJECTS = 1_000_000     # and so are files with more groups, datasets and attributes than this
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def deadline_for(path, base: float | None = None) -> float:
    """The default deadline for parsing `path`: TIMEOUT_S (or $SPIKFORMER_PARSE_TIMEOUT_S) plus
    TIMEOUT_S_PER_MB per MB of file."""
    if base is None:
        try:
            base = float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S))
        except ValueError:
            base = TIMEOUT_S
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return base + TIMEOUT_S_PER_MB * size / 1e6


def memory_for(path) -> int:
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return max(MEMORY_MIN, MEMORY_PER_FILE_BYTE * size)


class H5Dataset:
    """A dataset read in the child: `ds[()]` is its value as h5py returns it (ndarray, numpy scalar, bytes)."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, key):
        if key != ():
            raise TypeError("only ds[()] is supported")
        return self.value


class H5Group(dict):
    """A group read in the child: a dict of its members (H5Group or H5Dataset) with `attrs` (a dict)."""

    def __init__(self, attrs: dict, members: dict):
        super().__init__(members)
        self.attrs = attrs


def has_hdf5_signature(path) -> bool:
    """Whether `path` carries the HDF5 signature where the library looks for it (offset 0, 512, 1024, ...);
    plain Python, so that nothing untrusted reaches the library in this process."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        off = 0
        while off + len(HDF5_SIGNATURE) <= size:
            f.seek(off)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            off = 512 if off == 0 else off * 2
    return False


def _value(v):
    if isinstance(v, np.ndarray) and v.dtype.kind == "O":
        for x in v.flat:
            if not isinstance(x, (bytes, str)):
                raise TypeError(f"unsupported HDF5 element type {type(x).__name__}")
    elif not isinstance(v, (np.ndarray, np.generic, bytes, str)):
        raise TypeError(f"unsupported HDF5 value type {type(v).__name__}")
    return v


def hdf5_dump(out: Out, path: str, roots: list | None = None):
    """In the child: the file's root attributes and the members named in `roots` (all when None), recursively;
    groups as {"attrs", "members"} dicts, datasets as {"value"}. Only hard links are followed; external and
    soft links, virtual datasets and datasets stored in external files are refused (they would make the library
    read other files)."""
    import h5py

    budget = [MAX_OBJECTS]

    def spend(n=1):
        budget[0] -= n
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_OBJECTS} HDF5 objects")

    def attrs(obj):
        d = {}
        for k in obj.attrs.keys():
            spend()
            d[k] = _value(obj.attrs[k])
        return d

    def dataset(ds):
        dcpl = ds.id.get_create_plist()
        if dcpl.get_layout() == h5py.h5d.VIRTUAL or dcpl.get_external_count():
            raise ValueError(f"dataset {ds.name} refused: it refers to other files (virtual or external storage)")
        return {"value": out.keep(_value(ds[()]))}

    def group(g, depth, names=None):
        if depth > MAX_DEPTH:
            raise ValueError(f"HDF5 groups nested deeper than {MAX_DEPTH}")
        members = {}
        for k in g.keys():
            if names is not None and k not in names:
                continue
            spend()
            if g.id.links.get_info(k.encode()).type != h5py.h5l.TYPE_HARD:
                raise ValueError(f"link {g.name.rstrip('/')}/{k} refused: soft and external links are not followed")
            obj = g[k]
            if isinstance(obj, h5py.Group):
                members[k] = group(obj, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                members[k] = dataset(obj)
            else:
                raise ValueError(f"unsupported HDF5 object {g.name.rstrip('/')}/{k}")
        return {"attrs": attrs(g), "members": members}

    with h5py.File(path, "r") as f:
        return group(f, 0, None if roots is None else set(roots))


def _tree(d) -> H5Group | H5Dataset:
    if "members" in d:
        return H5Group(d["attrs"], {k: _tree(v) for k, v in d["members"].items()})
    return H5Dataset(d["value"])


HDF5_DUMP = "ground.hdf5_read:hdf5_dump"  # what read_hdf5 runs in the child (tests point it at a crash)


def read_hdf5(path, roots: list | None = None, timeout: float | None = None) -> H5Group:
    """The HDF5 file `path` parsed in a child process (hdf5_dump): its root group with its attributes and the
    top-level members named in `roots` (all when None). Raises SandboxError."""
    path = os.fspath(path)
    timeout = deadline_for(path) if timeout is None else timeout
    tree = run(HDF5_DUMP, str(Path(path).resolve()), None if roots is None else list(roots),
               timeout=timeout, memory=memory_for(path), what="HDF5 parser")
    return _tree(tree)


def read_hdf5_or_raise(path, roots: list | None, error_cls: type, unreadable: str) -> H5Group:
    """read_hdf5 for a reader of untrusted files: its failures become the reader's `error_cls` with one line,
    "`unreadable` (parser message)" when the parser raised, "PATH: crash/timeout; the file is malformed or
    forged" otherwise."""
    try:
        return read_hdf5(path, roots=roots)
    except SandboxError as e:
        if e.kind == "error":
            raise error_cls(f"{unreadable} ({e})") from None
        raise error_cls(f"{path}: {e}; the file is malformed or forged") from None


def _warm_up() -> None:
    """Everything a child would otherwise initialise on first use (lazy imports of h5py and numpy, HDF5's type
    and filter tables), done once in the helper: dumps a small file of our own with every kind of object."""
    import h5py
    d = tempfile.mkdtemp(prefix="spikformer-sandbox-warm-")
    try:
        path = os.path.join(d, "warm.h5")
        with h5py.File(path, "w") as f:
            f.attrs["s"], f.attrs["i"] = "x", 1
            g = f.create_group("g")
            g.create_dataset("big", data=np.zeros(1000, np.float32), compression="gzip")
            g.create_dataset("small", data=np.arange(3))
            g.create_dataset("str", data="x", dtype=h5py.string_dtype())
            g.create_dataset("strs", data=[["a", "b"]], dtype=h5py.string_dtype())
            g.create_dataset("num", data=1.5)
        out = Out(d)
        doc = json.dumps(encode(hdf5_dump(out, path), out))
        out.close()
        decode(json.loads(doc), Arrays(d))
    except Exception:  # noqa: BLE001 - only an optimisation
        pass
    finally:
        shutil.rmtree(d, ignore_errors=True)


def prepare_helper() -> None:
    """Run once by the sandbox's helper process before it serves: no HDF5 filter plugins (a file must not make
    the library load a shared object from disk), then the warm-up."""
    try:
        from h5py import h5pl
        while h5pl.size():
            h5pl.remove(0)
    except Exception:  # noqa: BLE001
        pass
    _warm_up()
