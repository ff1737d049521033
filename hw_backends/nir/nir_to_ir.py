"""NIR -> IR: the IR graph a NIR graph written by this package is the export of (`from_nir`), rebuilt from the
graph's `ir_graph` metadata and the NIR nodes' weights, and checked by exporting it again (`ir_to_nir.to_nir`)
and comparing with the graph read, so simulating the IR is simulating the file."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

import nir

from convert import ir

from .file_format import DT, FORMAT, FORMAT_VERSION, NIRExportError, NIRReadError, one_line
from .ir_to_nir import KINDS, WEIGHTS_IN_NIR, to_nir


def _md_str(md: dict, key: str, default=None):
    v = md.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def from_nir(ng: nir.NIRGraph) -> ir.Graph:
    """The IR graph a NIR graph written by `to_nir` is the export of: rebuilt from the graph's `ir_graph`
    metadata and the NIR nodes' weights, then exported again and compared with `ng` node by node (types, every
    parameter array, shapes, edges). Any difference raises NIRReadError naming the node and the field, so the
    returned IR simulates exactly what the file holds."""
    try:
        return _from_nir(ng)
    except NIRReadError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, AssertionError, OverflowError,
            RecursionError) as e:  # malformed metadata or parameters the checks below do not name
        raise NIRReadError(f"malformed NIR graph ({type(e).__name__}: {one_line(e)})") from None


def _from_nir(ng: nir.NIRGraph) -> ir.Graph:
    md = ng.metadata if isinstance(ng.metadata, dict) else {}
    if _md_str(md, "format") != FORMAT:
        raise NIRReadError(f"this NIR graph was not written by spk-convert (metadata format is "
                           f"{_md_str(md, 'format')!r}, expected {FORMAT!r}); its time convention is unknown")
    version = int(md.get("format_version", -1))
    if version != FORMAT_VERSION:
        hint = "; it was written by an older spk-convert: export it again" if 0 < version < FORMAT_VERSION else ""
        raise NIRReadError(f"NIR graph format version {version}; this reader takes {FORMAT_VERSION}{hint}")
    if float(md.get("dt", -1)) != DT:
        raise NIRReadError(f"NIR graph dt is {md.get('dt')!r}; this reader takes dt = {DT}")
    try:
        metadata = json.loads(_md_str(md, "ir_metadata", "{}"))
        spec = json.loads(_md_str(md, "ir_graph"))
    except (json.JSONDecodeError, TypeError) as e:
        raise NIRReadError(f"NIR graph metadata 'ir_metadata'/'ir_graph' is missing or not JSON ({one_line(e)})") \
            from None
    if not isinstance(metadata, dict) or not isinstance(spec, dict):
        raise NIRReadError("NIR graph metadata 'ir_metadata'/'ir_graph' is not a JSON object")
    metadata.setdefault("T", int(md.get("T", 1)))
    g = ir.Graph(metadata=metadata)
    for s in spec["nodes"]:
        g.add(_ir_node(s, ng))
    for src, dst, port in spec["edges"]:
        if src not in g.nodes or dst not in g.nodes:
            raise NIRReadError(f"ir_graph edge {src} -> {dst} names an unknown node")
        g.connect(str(src), str(dst), str(port))
    try:
        g.validate()
    except ir.IRValidationError as e:
        raise NIRReadError(f"the NIR graph does not form valid IR: {one_line(e)}") from None
    try:
        expected = to_nir(g)
    except NIRExportError as e:
        raise NIRReadError(f"the IR described by the file cannot be exported: {one_line(e)}") from None
    _same_graph(expected, ng)
    return g


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _ir_node(s: dict, ng: nir.NIRGraph) -> ir.Node:
    kind, name = s["kind"], str(s["name"])
    if kind not in KINDS:
        raise NIRReadError(f"ir_graph node {name!r} has kind {kind!r}, which the NIR export does not write")
    params = {k: (v if k == "sizes" else _tuples(v)) for k, v in dict(s["params"]).items()}
    if KINDS[kind] in WEIGHTS_IN_NIR:
        stored = ng.nodes.get(name)
        if not isinstance(stored, nir.Conv2d):
            raise NIRReadError(f"NIR node {name!r}: expected the Conv2d of IR {kind} {name!r}, found "
                               f"{type(stored).__name__ if stored is not None else 'nothing'}")
        shape = tuple(int(x) for x in params.pop("weight_shape"))
        weight = np.asarray(stored.weight)
        if f"{name}.pool_sum" in ng.nodes and kind == "Conv1d" and weight.ndim == 4 and len(shape) == 3:
            weight = np.repeat(weight.reshape(*weight.shape[:2], 1), shape[2], axis=2)  # same weight per token
        if weight.size != math.prod(shape):
            raise NIRReadError(f"NIR node {name!r}: weight has {weight.size} entries, the IR layer {shape}")
        params["weight"] = weight.reshape(shape)
        params["bias"] = np.asarray(stored.bias) if params.pop("has_bias") else None
    try:
        return KINDS[kind](name, str(s.get("source") or ""), **params)
    except TypeError as e:
        raise NIRReadError(f"ir_graph node {name!r} ({kind}): {one_line(e)}") from None


def _same(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and \
            all(_same(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    x, y = np.asarray(a), np.asarray(b)
    return x.shape == y.shape and np.array_equal(x, y)


def _same_graph(expected: nir.NIRGraph, actual: nir.NIRGraph) -> None:
    missing = sorted(set(expected.nodes) - set(actual.nodes))
    extra = sorted(set(actual.nodes) - set(expected.nodes))
    if missing or extra:
        raise NIRReadError(f"the NIR graph's nodes differ from the export of the IR it describes "
                           f"(missing: {missing[:5]}, unexpected: {extra[:5]})")
    for name, want in expected.nodes.items():
        got = actual.nodes[name]
        if type(got) is not type(want):
            raise NIRReadError(f"NIR node {name!r} is a {type(got).__name__}; the IR exports a "
                               f"{type(want).__name__}")
        for f in [f.name for f in dataclasses.fields(want) if f.name != "metadata"]:
            if not _same(getattr(want, f), getattr(got, f)):
                raise NIRReadError(f"NIR node {name!r}: {f} differs from the export of the IR it describes")
    want_edges = {tuple(map(str, e)) for e in expected.edges}
    got_edges = {tuple(map(str, e)) for e in actual.edges}
    if want_edges != got_edges:
        diff = sorted(want_edges ^ got_edges)[:3]
        raise NIRReadError(f"the NIR graph's edges differ from the export of the IR it describes (e.g. {diff})")

