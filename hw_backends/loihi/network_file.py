"""network.h5: the quantised, timed Loihi network. One group per node (in topological order) holding the
node's kind, its source module, its scalar parameters (JSON) and its arrays; the edges and the timing schedule
as JSON attributes. No timestamps are stored, so the same network gives the same bytes."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from convert import ir

from .timing import Projection

FORMAT = "spikformer-loihi-network"
FORMAT_VERSION = 1
_TUPLE_FIELDS = ("shape", "stride", "padding", "kernel", "in_axes", "out_axes")


class NetworkFileError(ValueError):
    pass


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


def write_network(path: Path, g: ir.Graph, sched: dict) -> None:
    with h5py.File(path, "w", track_order=False, libver="earliest") as f:
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
                data = arr.astype(np.int32) if g.metadata.get("numeric") == "loihi_fixed" and \
                    np.all(np.mod(arr, 1) == 0) else arr
                grp.create_dataset(k, data=data, track_times=False)
        f.attrs["edges_json"] = json.dumps([[e.src, e.dst, e.port] for e in g.edges])
        f.attrs["timing_json"] = json.dumps({
            "depth": sched["depth"], "max_depth": sched["max_depth"], "T": sched["T"],
            "sample_period": sched["sample_period"],
            "projections": [[p.pre, p.synapse, p.post, list(p.via), p.delay, p.port]
                            for p in sched["projections"]]},
            sort_keys=True)


def read_network(path: Path) -> tuple[ir.Graph, dict]:
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise NetworkFileError(f"{path}: not a readable HDF5 network file ({e})") from None
    try:
        with f:
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
    except (KeyError, TypeError, ValueError, OSError, json.JSONDecodeError) as e:
        raise NetworkFileError(f"{path}: malformed network file ({type(e).__name__}: {e})") from None
    try:
        g.validate()
    except ir.IRValidationError as e:
        raise NetworkFileError(f"{path}: network does not validate: {e}") from None
    return g, t
