"""A NIR graph written in exactly the HDF5 layout of `nir.write` (nir 1.0.8, `nir/serialization.py`), so stock
`nir.read` reads it, but compact and fast for networks with hundreds of millions of neurons:

- a constant array (every neuron of a layer has the same tau, threshold, ...; `np.broadcast_to` views in memory)
  is a dataset whose HDF5 fill value is the constant and whose storage is never allocated: any HDF5 reader returns
  the full array, the file holds a few hundred bytes;
- an array object that appears in several nodes (0/1 structure weights shared by every block, one bias of zeros)
  is written once and hard-linked (an HDF5 hard link is the same dataset under a second name; readers see two
  ordinary datasets);
- other arrays are written gzip-compressed as `nir.write` does (with HDF5's shuffle filter, which any HDF5
  reader undoes).

Nodes are serialised one at a time from their fields (no `dataclasses.asdict`, which copies every array and
would materialise every broadcast constant)."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np

import nir

_TYPE_FIELDS = ("input_type", "output_type")


def node_dict(node) -> dict:
    """What `node.to_dict()` returns (nir 1.0.8), with the arrays themselves instead of deep copies."""
    if isinstance(node, nir.NIRGraph):
        d = {"nodes": {k: node_dict(n) for k, n in node.nodes.items()},
             "edges": [tuple(e) for e in node.edges], "metadata": node.metadata}
    else:
        d = {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.name not in _TYPE_FIELDS}
    d["type"] = type(node).__name__
    if isinstance(node, nir.Input):
        d["shape"] = node.input_type["input"]
    elif isinstance(node, nir.Output):
        d["shape"] = node.output_type["output"]
    elif isinstance(node, nir.Flatten):
        d["input_type"] = node.input_type["input"]
    return d


def _is_constant_view(a: np.ndarray) -> bool:
    return a.size > 1 and all(s == 0 for s in a.strides)


class _Writer:
    def __init__(self, compression: str, compression_opts):
        self.compression = compression
        self.compression_opts = compression_opts
        self.written: dict[int, h5py.Dataset] = {}  # id(array) -> its dataset
        self.keep: list = []  # keeps written arrays alive so their ids stay unique
        self.stats = {"constant_arrays": 0, "hard_links": 0, "stored_arrays": 0}

    def array(self, group: h5py.Group, key: str, a: np.ndarray) -> None:
        first = self.written.get(id(a))
        if first is not None:
            group[key] = first  # hard link
            self.stats["hard_links"] += 1
            return
        if _is_constant_view(a):
            ds = group.create_dataset(key, shape=a.shape, dtype=a.dtype, fillvalue=a.reshape(-1)[0])
            self.stats["constant_arrays"] += 1
        else:
            shuffle = self.compression is not None and a.size > 1
            ds = group.create_dataset(key, data=a, dtype=a.dtype, compression=self.compression,
                                      compression_opts=self.compression_opts, shuffle=shuffle)
            self.stats["stored_arrays"] += 1
        self.written[id(a)] = ds
        self.keep.append(a)

    def recursive(self, group: h5py.Group, d: dict) -> None:  # the branches of nir.write's write_recursive
        for k, v in d.items():
            if k == "metadata":
                if v != {}:
                    self.recursive(group.create_group(k), v)
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            elif isinstance(v, np.ndarray):
                self.array(group, k, v)
            elif isinstance(v, dict):
                self.recursive(group.create_group(str(k)), v)
            else:
                group.create_dataset(k, data=v)

    def graph(self, group: h5py.Group, ng: nir.NIRGraph) -> None:
        self.recursive(group, {"metadata": ng.metadata, "edges": [tuple(e) for e in ng.edges], "type": "NIRGraph"})
        nodes = group.create_group("nodes")
        for name, node in ng.nodes.items():
            if isinstance(node, nir.NIRGraph):
                self.graph(nodes.create_group(name), node)
            else:
                self.recursive(nodes.create_group(name), node_dict(node))


def write_graph(path, ng: nir.NIRGraph, compression: str | None = "gzip", compression_opts=None) -> dict:
    """Writes `ng` to `path` (an HDF5 file in nir.write's layout); returns counts of constant, hard-linked and
    stored arrays."""
    w = _Writer(compression, compression_opts)
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
        w.graph(f.create_group("node"), ng)
    return dict(w.stats)
