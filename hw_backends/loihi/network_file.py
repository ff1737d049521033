"""network.h5: the quantised, timed Loihi network. One group per node (in topological order) holding the
node's kind, its source module, its scalar parameters (JSON) and its arrays; the edges and the timing schedule
as JSON attributes. No timestamps are stored, so the same network gives the same bytes.

The file starts with a 512-byte HDF5 user block (HDF5 and h5py skip it) holding `HEADER_MAGIC` and the sha256
of the rest of the file. `read_network` checks it before HDF5 parses anything: a damaged file is refused with
NetworkFileError instead of reaching the HDF5 library, which can loop forever on some corrupted structures
(found by bench/fuzzing/fuzz_readers.py). The check detects damage, not forgery: a file crafted by someone else can carry
a matching checksum, and HDF5 then parses it. So HDF5 parses it in a child process (ground.sandbox, with a
deadline and an address-space limit) and sends back plain arrays and strings: a forged file that makes the
library hang or crash is refused with NetworkFileError too ("the HDF5 parser crashed (SIGSEGV)" / "did not finish
within N s")."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from convert import ir
from ground import hdf5_read
from ground.errors import UserError

from .timing import Projection

FORMAT = "spikformer-loihi-network"
FORMAT_VERSION = 1
EXPORT_FORMAT = "spikformer-loihi-export"  # manifest.json of the export directory (export.write_artifacts)
EXPORT_FORMAT_VERSION = 1
_TUPLE_FIELDS = ("shape", "stride", "padding", "kernel", "in_axes", "out_axes")
USERBLOCK = 512
HEADER_MAGIC = b"spikformer-loihi-network sha256="


class NetworkFileError(UserError, ValueError):
    """A network file or export directory that cannot be read (one line)."""


def _params(node: ir.Node) -> tuple[dict, dict]:
    scalars, arrays = {}, {}
    for k, v in vars(node).items():
        if k in ("name", "source"):
            continue
        if isinstance(v, np.ndarray):
            arrays[k] = v
        elif v is not None:
            scalars[k] = list(v) if isinstance(v, tuple) else v
        else:
            scalars[k] = None
    return scalars, arrays


def _body_sha256(fh) -> str:
    fh.seek(USERBLOCK)
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def write_network(path: Path, g: ir.Graph, sched: dict) -> None:
    _write_hdf5(path, g, sched)
    with open(path, "r+b") as fh:  # the user block: magic and the sha256 of everything after it
        header = HEADER_MAGIC + _body_sha256(fh).encode() + b"\n"
        fh.seek(0)
        fh.write(header.ljust(USERBLOCK, b"\0"))


def check_integrity(path: Path) -> None:
    """Raises NetworkFileError unless `path` starts with our header and the rest of the file has its sha256."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(USERBLOCK)
            if not head.startswith(HEADER_MAGIC):
                raise NetworkFileError(f"{path}: not a {FORMAT} file (no spikformer header)")
            want = head[len(HEADER_MAGIC):len(HEADER_MAGIC) + 64]
            if len(head) < USERBLOCK or _body_sha256(fh).encode() != want:
                raise NetworkFileError(f"{path}: damaged network file (its sha256 does not match its header)")
    except OSError as e:
        raise NetworkFileError(f"{path}: cannot read ({e.strerror or e})") from None


def _as_int32(arr: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """`arr` as int32 where every value is an integer that int32 holds, else `arr` unchanged. A cast and a
    comparison per block (cache-sized, stops at the first block that differs) instead of np.mod over the array:
    NaN, +-inf and values out of int32's range cast to something unequal, so they keep `arr`."""
    flat = arr.reshape(-1)
    ints = np.empty(arr.shape, np.int32)
    out = ints.reshape(-1)
    with np.errstate(invalid="ignore"):  # NaN, inf and out-of-range values cast with a warning; they compare unequal
        for i in range(0, flat.size, block):
            np.copyto(out[i:i + block], flat[i:i + block], casting="unsafe")
            if not np.array_equal(out[i:i + block], flat[i:i + block]):
                return arr
    return ints


def _write_hdf5(path: Path, g: ir.Graph, sched: dict) -> None:
    with h5py.File(path, "w", track_order=False, libver="earliest", userblock_size=USERBLOCK) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["metadata_json"] = json.dumps(g.metadata, sort_keys=True, default=str)
        nodes = f.create_group("nodes")
        for i, name in enumerate(g.topo_order()):
            node = g.nodes[name]
            grp = nodes.create_group(f"{i:05d}")
            grp.attrs["name"] = name
            grp.attrs["source"] = node.source
            grp.attrs["kind"] = node.kind
            scalars, arrays = _params(node)
            grp.attrs["params_json"] = json.dumps(scalars, sort_keys=True)
            for k, arr in arrays.items():
                data = _as_int32(arr) if g.metadata.get("numeric") == "loihi_fixed" else arr
                grp.create_dataset(k, data=data, track_times=False)
        f.attrs["edges_json"] = json.dumps([[e.src, e.dst, e.port] for e in g.edges])
        f.attrs["timing_json"] = json.dumps({
            "depth": sched["depth"], "max_depth": sched["max_depth"], "T": sched["T"],
            "sample_period": sched["sample_period"],
            "projections": [[p.pre, p.synapse, p.post, list(p.via), p.delay, p.port]
                            for p in sched["projections"]]},
            sort_keys=True)


def read_network(path: Path) -> tuple[ir.Graph, dict]:
    """(graph, schedule) of a network.h5; NetworkFileError (one line) for anything else."""
    if not Path(path).is_file():
        raise NetworkFileError(f"{path}: no such network file")
    check_integrity(path)
    # HDF5 parses the file in a child process: a forged file that hangs or crashes the library ends here
    f = hdf5_read.read_hdf5_or_raise(path, ["nodes"], NetworkFileError,
                                   f"{path}: not a readable HDF5 network file")
    try:
        if f.attrs.get("format") != FORMAT:
            raise NetworkFileError(f"{path}: not a {FORMAT} file")
        if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise NetworkFileError(f"{path}: format version {f.attrs.get('format_version')} is not "
                                   f"{FORMAT_VERSION}")
        g = ir.Graph(metadata=json.loads(f.attrs["metadata_json"]))
        for key in sorted(f["nodes"].keys()):
            grp = f["nodes"][key]
            kind = str(grp.attrs["kind"])
            cls = ir.NODE_TYPES.get(kind)
            if cls is None:
                raise NetworkFileError(f"{path}: node {key} has unknown kind {kind!r}")
            params = json.loads(grp.attrs["params_json"])
            for k in _TUPLE_FIELDS:
                if isinstance(params.get(k), list):
                    params[k] = tuple(params[k])
            for k in grp.keys():
                params[k] = np.asarray(grp[k][()], dtype=np.float64)
            g.add(cls(str(grp.attrs["name"]), str(grp.attrs["source"]), **params))
        for src, dst, port in json.loads(f.attrs["edges_json"]):
            g.connect(src, dst, port)
        t = json.loads(f.attrs["timing_json"])
        t["projections"] = [Projection(a, b, c, tuple(v), d, port) for a, b, c, v, d, port in t["projections"]]
    except NetworkFileError:
        raise
    except (KeyError, TypeError, ValueError, OSError, json.JSONDecodeError, RuntimeError, AttributeError,
            IndexError, RecursionError, OverflowError) as e:
        raise NetworkFileError(f"{path}: malformed network file ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:300]})") from None
    try:
        g.validate()
    except ir.IRValidationError as e:
        raise NetworkFileError(f"{path}: network does not validate: {' '.join(str(e).split())[:300]}") from None
    return g, t


def read_export(export_dir) -> tuple[ir.Graph, dict]:
    """(graph, schedule) of an export directory, after checking it against its manifest.json: the manifest must
    be this tool's format and every file it lists must be present with the recorded sha256, so a damaged or
    edited artifact is refused (NetworkFileError) instead of being simulated."""
    d = Path(export_dir)
    if not d.is_dir():
        raise NetworkFileError(f"{d}: not an export directory")
    mpath = d / "manifest.json"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NetworkFileError(f"{d}: no manifest.json; not a complete Loihi export") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NetworkFileError(f"{mpath}: not a readable manifest ({type(e).__name__}: "
                               f"{' '.join(str(e).split())[:200]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise NetworkFileError(f"{mpath}: not a {EXPORT_FORMAT} manifest")
    if manifest.get("format_version") != EXPORT_FORMAT_VERSION:
        raise NetworkFileError(f"{mpath}: export format version {manifest.get('format_version')!r} is not "
                               f"{EXPORT_FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or "network.h5" not in files:
        raise NetworkFileError(f"{mpath}: the manifest does not list network.h5")
    for name, rec in sorted(files.items()):
        if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str) or Path(name).name != name \
                or name in ("", ".", ".."):
            raise NetworkFileError(f"{mpath}: invalid entry for {name!r}")
        p = d / name
        if not p.is_file():
            raise NetworkFileError(f"{d}: {name} listed in the manifest is missing")
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != rec["sha256"]:
            raise NetworkFileError(f"{p}: sha256 differs from manifest.json (the file was damaged or edited)")
    return read_network(d / "network.h5")
