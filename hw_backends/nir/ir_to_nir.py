"""IR -> NIR: the lowered IR as a standard NIR 1.0.8 graph (`to_nir`, type-checked by NIR itself), one exporter
per IR node kind (`EXPORTERS`); the conventions it follows are file_format.py's."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

import nir

from convert import ir

from .file_format import (DT, EVENT_INPUT_CONVENTION, FORMAT, FORMAT_VERSION, LAYOUT_CONVENTION, LIF_MAPPING,
                          NORMALIZED_INPUT_CONVENTION, THRESHOLD_CONVENTION, TIME_CONVENTION, NIRExportError,
                          one_line, strict_threshold)
from .structured import StructureCache, StructureTooLarge, synapse_parts

class _Constants:
    """Read-only constant arrays (broadcast views: no memory per neuron), one object per (value, dtype, shape)."""

    def __init__(self):
        self._c: dict = {}

    def __call__(self, value, shape: tuple, dtype=None) -> np.ndarray:
        dt = np.dtype(dtype) if dtype is not None else _dtype_for(value)
        key = (dt.str, float(value), tuple(int(x) for x in shape))
        if key not in self._c:
            self._c[key] = np.broadcast_to(np.array(value, dtype=dt), key[2])
        return self._c[key]


def _dtype_for(*values) -> np.dtype:
    """float32 where every value is exact in float32 (0/1, powers of two, half-integers), else float64."""
    return np.dtype(np.float32) if all(float(np.float32(v)) == float(v) for v in values) else np.dtype(np.float64)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _dumps(obj) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True)


def check_exportable(graph: ir.Graph) -> dict:
    """Raises NIRExportError for a graph standard NIR cannot hold; returns the IR shapes."""
    for node in graph.of_type(ir.GradedRelu):
        raise NIRExportError(f"node {node.name!r} (GradedRelu, from {node.source or '?'}) has no standard NIR "
                             f"equivalent: a max-pool of graded values (the Spike-driven Transformer's MS_SPS) is a "
                             f"chain of graded ReLU neurons, and NIR has no ReLU node (docs/sdt_lowering.md)")
    for node in graph.nodes.values():
        if isinstance(node, ir.HIGH_LEVEL_TYPES):
            raise NIRExportError(f"node {node.name!r} ({node.kind}, from {node.source or '?'}) is a high-level node "
                                 f"with no NIR equivalent; run convert.passes.lower() before exporting")
        if int(getattr(node, "weight_exp", 0) or 0) != 0:
            raise NIRExportError(f"node {node.name!r} ({node.kind}, from {node.source or '?'}) has weight_exp "
                                 f"{node.weight_exp}: a quantized (Loihi fixed-point) graph; export the float graph")
        if isinstance(node, ir.SumPool2d) and float(node.weight) != 1.0:
            raise NIRExportError(f"node {node.name!r} (SumPool2d, from {node.source or '?'}) has tap weight "
                                 f"{node.weight}; NIR SumPool2d has none")
        if type(node) not in EXPORTERS:
            hint = ("; lower with ssa_form='binary' (graded spikes and product neurons are Loihi 2 only)"
                    if node.is_graded else "")
            raise NIRExportError(f"node {node.name!r} ({node.kind}, from {node.source or '?'}) has no standard "
                                 f"NIR equivalent{hint}")
        if "/" in node.name:
            raise NIRExportError(f"node name {node.name!r} contains '/', which HDF5 reads as a path")
        bad = [e.port for e in graph.in_edges(node.name) if e.port != "in"]
        if bad:
            raise NIRExportError(f"node {node.name!r} has input ports {bad}; NIR nodes have one input")
    for node in graph.of_type(ir.Conv1d, ir.Conv2d):
        if int(node.groups) != 1:
            raise NIRExportError(f"node {node.name!r} ({node.kind}, from {node.source or '?'}) has groups = "
                                 f"{node.groups}; nir 1.0.8 types a grouped convolution's input as "
                                 f"weight.shape[1] channels, so stock nir.read would reject the file")
    seen = set()
    for e in graph.edges:
        if (e.src, e.dst) in seen:
            raise NIRExportError(f"edge {e.src} -> {e.dst} appears twice (a sum of a stream with itself); NIR "
                                 f"rejects duplicate edges")
        seen.add((e.src, e.dst))
    try:
        return graph.validate()
    except ir.IRValidationError as e:
        raise NIRExportError(f"the graph is not valid IR: {e}") from None


def token_grid(graph: ir.Graph, shapes: dict) -> tuple[int, int] | None:
    """(Ht, Wt): the spatial grid every Flatten of the graph turns into tokens (all must agree); None if none."""
    grids = {tuple(int(x) for x in shapes[graph.in_edges(f.name)[0].src][1:]) for f in graph.of_type(ir.Flatten)}
    if len(grids) > 1:
        raise NIRExportError(f"the graph flattens grids of different sizes {sorted(grids)} into tokens; the NIR "
                             f"layout stores every token tensor on one grid")
    if not grids:
        return None
    grid = grids.pop()
    if grid[0] != grid[1]:
        raise NIRExportError(f"token grid {grid[0]}x{grid[1]} is not square: nir 1.0.8 infers a Conv2d's output "
                             f"with weight.shape[2] for both axes, so the whole-grid readout kernel needs a square "
                             f"grid")
    return grid


def _nir_shape(shape: tuple, grid, name: str) -> tuple:
    """The NIR layout of an IR tensor: images unchanged, tokens (C, N) on the grid, (C, 1) as (C, 1, 1)."""
    shape = tuple(int(x) for x in shape)
    if len(shape) != 2:
        return shape
    c, n = shape
    if n == 1:
        return (c, 1, 1)
    if grid is None or n != grid[0] * grid[1]:
        raise NIRExportError(f"{name}: token tensor {shape} does not lie on the token grid {grid}")
    return (c, *grid)


def _meta(node: ir.Node, **extra) -> dict:
    m = {"source": node.source or node.name, "ir_type": node.kind}
    m.update(extra)
    return m


def _ir_spec(node: ir.Node) -> dict:
    """The IR node's kind and scalar parameters (its arrays live in the NIR nodes)."""
    params = node.params()
    if isinstance(node, WEIGHTS_IN_NIR):
        params.pop("bias", None)
        params["has_bias"] = node.bias is not None
        params["weight_shape"] = list(node.weight.shape)
    return {"name": node.name, "kind": node.kind, "source": node.source, "params": params}


@dataclass
class _Export:
    """What the exporters of one graph share: the IR, its shapes on the NIR layout, and the NIR graph so far."""
    graph: ir.Graph
    shapes: dict
    grid: tuple | None
    cache: StructureCache
    const: _Constants
    nodes: dict = field(default_factory=dict)  # NIR nodes by name
    edges: list = field(default_factory=list)
    first_part: dict = field(default_factory=dict)  # IR node -> the NIR node its in-edges enter, where they differ
    through: dict = field(default_factory=dict)  # IR Flatten -> the node whose output it passes on


def to_nir(graph: ir.Graph, model_info: dict | None = None, cache: StructureCache | None = None) -> nir.NIRGraph:
    """The lowered IR graph as a NIRGraph built with NIR's own type check (raises NIRExportError naming the node
    it cannot map). Weight arrays of IR nodes are shared, not copied; neuron parameters are broadcast views."""
    shapes = check_exportable(graph)
    grid = token_grid(graph, shapes)
    x = _Export(graph, shapes, grid, cache or StructureCache(), _Constants())
    for name in graph.topo_order():
        node = graph.nodes[name]
        srcs = [e.src for e in graph.in_edges(name)]
        in_shape = _nir_shape(shapes[srcs[0]], grid, srcs[0]) if srcs else None
        out_shape = _nir_shape(shapes[name], grid, name)
        exporter = EXPORTERS.get(type(node))
        if exporter is None:
            raise NIRExportError(f"node {name!r} ({node.kind}, from {node.source or '?'}) has no NIR mapping")
        exporter(x, node, srcs, in_shape, out_shape)
    for e in graph.edges:
        if e.dst in x.through:
            continue
        edge = (x.through.get(e.src, e.src), x.first_part.get(e.dst, e.dst))
        if edge in x.edges:
            raise NIRExportError(f"edges {e.src} -> {e.dst} and {edge[0]} -> {edge[1]} become one NIR edge")
        x.edges.append(edge)
    meta = graph_metadata(graph, model_info, grid)
    try:
        return nir.NIRGraph(nodes=x.nodes, edges=x.edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError) as e:
        raise NIRExportError(f"NIR rejected the exported graph: {one_line(e)}") from None


# ------------------------------------------------------------------------------------ one exporter per IR kind
# Each takes (export state, IR node, its sources, input and output shape on the NIR layout) and adds the node's
# NIR nodes (and the edges between them).

def _export_input(x: _Export, node: ir.Input, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = nir.Input(input_type=np.array(out_shape), metadata=_meta(node))


def _export_output(x: _Export, node: ir.Output, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = nir.Output(output_type=np.array(in_shape), metadata=_meta(node))


def _export_input_norm(x: _Export, node: ir.InputNorm, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = _input_norm(node, in_shape)


def _export_flatten(x: _Export, node: ir.Flatten, srcs, in_shape, out_shape) -> None:
    """No NIR node: token tensors are stored on the grid, so the edges bypass it."""
    x.through[node.name] = x.through.get(srcs[0], srcs[0])


def _export_conv2d(x: _Export, node: ir.Conv2d, srcs, in_shape, out_shape) -> None:
    w = node.weight
    stride, padding = tuple(int(v) for v in node.stride), tuple(int(v) for v in node.padding)
    kh, kw = w.shape[2:]
    if kh != kw:
        raise NIRExportError(f"{node.name} (Conv2d from {node.source}): kernel {kh}x{kw}; nir 1.0.8 infers "
                             f"Conv2d shapes with weight.shape[2] for both axes, so only square kernels are "
                             f"exported")
    x.nodes[node.name] = _nir_conv(node, in_shape, w, stride, padding, x.const)


def _export_conv1d(x: _Export, node: ir.Conv1d, srcs, in_shape, out_shape) -> None:
    name = node.name
    if _sums_tokens(node, in_shape, x.grid):  # the head: sum the grid per channel, then a 1x1 Conv2d
        x.first_part[name] = pool = f"{name}.pool_sum"
        x.nodes[pool] = _grid_pool(x.grid, _meta(node, ir_name=name, part=0, role="pool_sum"))
        x.nodes[name] = _token_conv(node, (in_shape[0], 1, 1), None, x.const)
        x.edges.append((pool, name))
    else:
        x.nodes[name] = _token_conv(node, in_shape, x.grid, x.const)


def _export_sum_pool(x: _Export, node: ir.SumPool2d, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = nir.SumPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                                       padding=np.array(node.padding), metadata=_meta(node))


def _export_lif(x: _Export, node: ir.LIF, srcs, in_shape, out_shape) -> None:
    const = x.const
    thr = strict_threshold(node.v_threshold)
    x.nodes[node.name] = nir.LIF(tau=const(node.tau * DT, out_shape, np.float64), r=const(1.0, out_shape),
                                 v_leak=const(node.v_reset, out_shape), v_threshold=const(thr, out_shape, np.float32),
                                 v_reset=const(node.v_reset, out_shape), metadata=_meta(node))


def _export_threshold(x: _Export, node: ir.Threshold, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = nir.Threshold(threshold=x.const(strict_threshold(node.threshold), out_shape, np.float32),
                                       metadata=_meta(node))


def _export_integrator(x: _Export, node: ir.Integrator, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = nir.I(r=x.const(1.0 / DT, out_shape, np.float32), metadata=_meta(node))


def _export_delay(x: _Export, node: ir.Delay, srcs, in_shape, out_shape) -> None:
    x.nodes[node.name] = nir.Delay(delay=x.const(float(node.steps) * DT, out_shape, np.float64),
                                   metadata=_meta(node))


def _export_axis_synapse(x: _Export, node: ir.AxisSynapse, srcs, in_shape, out_shape) -> None:
    x.first_part[node.name] = _axis_synapse(node, in_shape, x.grid, x.cache, x.const, x.nodes, x.edges, x.graph)


EXPORTERS = {
    ir.Input: _export_input, ir.InputNorm: _export_input_norm, ir.Output: _export_output, ir.Conv2d: _export_conv2d,
    ir.Conv1d: _export_conv1d, ir.SumPool2d: _export_sum_pool, ir.Flatten: _export_flatten, ir.LIF: _export_lif,
    ir.Threshold: _export_threshold, ir.Integrator: _export_integrator, ir.Delay: _export_delay,
    ir.AxisSynapse: _export_axis_synapse,
}
KINDS = {cls.__name__: cls for cls in EXPORTERS}  # the IR kinds a file can hold, by name
# IR kinds whose weight and bias arrays the file keeps only in their NIR Conv2d (ir_graph records their shape)
WEIGHTS_IN_NIR = (ir.Conv2d, ir.Conv1d)


def _grid_pool(grid, meta: dict, broadcast: bool = False) -> nir.SumPool2d:
    """SumPool2d whose window is the token grid: a (C, Ht, Wt) input summed to (C, 1, 1), or (broadcast, padding
    grid - 1) a (C, 1, 1) input copied to every token."""
    pad = [grid[0] - 1, grid[1] - 1] if broadcast else [0, 0]
    return nir.SumPool2d(kernel_size=np.array(grid), stride=np.array([1, 1]), padding=np.array(pad), metadata=meta)


def _sums_tokens(node, in_shape, grid) -> bool:
    """An IR Conv1d whose kernel spans all N tokens with the same weights at every token (the head's readout
    synapses, W / (N T) per token): in NIR a whole-grid SumPool2d then a 1x1 Conv2d (N times fewer weights)."""
    if grid is None or int(node.padding) != 0 or len(in_shape) != 3:
        return False
    w = node.weight
    return w.shape[2] == grid[0] * grid[1] > 1 and tuple(in_shape[1:]) == tuple(grid) and \
        bool(np.all(w == w[:, :, :1]))


def _token_conv(node: ir.Conv1d, in_shape, grid, const) -> nir.Conv2d:
    """An IR Conv1d over tokens as a Conv2d on the token grid: kernel 1 -> 1x1, a kernel spanning all N tokens
    without padding -> a kernel spanning the grid; after a token sum (`_sums_tokens`, grid None) the kernel's
    first tap as a 1x1 Conv2d."""
    w = node.weight
    k = int(w.shape[2])
    n = int(in_shape[1] * in_shape[2])
    if grid is None and in_shape[1:] == (1, 1):
        w = w[:, :, :1].reshape(*w.shape[:2], 1, 1)
    elif int(node.stride) == 1 and int(node.padding) == 0 and k == 1:
        w = w.reshape(*w.shape[:2], 1, 1)
    elif int(node.padding) == 0 and k == n and in_shape[1:] == tuple(grid or ()):
        w = w.reshape(*w.shape[:2], *grid)
    else:
        raise NIRExportError(f"{node.name} (Conv1d from {node.source}): kernel {k}, stride {node.stride}, "
                             f"padding {node.padding} over {n} tokens has no Conv2d form on the token grid")
    return _nir_conv(node, in_shape, w, (1, 1), (0, 0), const)


def _nir_conv(node, in_shape, w, stride, padding, const) -> nir.Conv2d:
    bias = node.bias if node.bias is not None else const(0.0, (w.shape[0],))
    return nir.Conv2d(input_shape=tuple(int(x) for x in in_shape[1:]), weight=w, stride=stride, padding=padding,
                      dilation=(1, 1), groups=1, bias=bias, metadata=_meta(node))


def _input_norm(node: ir.InputNorm, in_shape) -> nir.Conv2d:
    """The per-channel affine map (x * 255 - mean255) / std255 as a dense 1x1 Conv2d with a diagonal weight
    (nir 1.0.8 types a grouped convolution's input as weight.shape[1] channels, so a depthwise one would fail
    stock nir.read's type check). Its weights are the map rounded to float64; the metadata keeps the exact
    constants and the order of operations (docs/nir.md, "Input normalisation")."""
    mean = np.asarray(node.mean255, dtype=np.float64)
    std = np.asarray(node.std255, dtype=np.float64)
    weight = np.zeros((len(std), len(std), 1, 1))
    weight[np.arange(len(std)), np.arange(len(std)), 0, 0] = 255.0 / std
    meta = _meta(node, mean255=mean, std255=std, arithmetic="y = (x * 255 - mean255) / std255 per channel")
    return nir.Conv2d(input_shape=tuple(int(x) for x in in_shape[1:]), weight=weight, stride=(1, 1),
                      padding=(0, 0), dilation=(1, 1), groups=1, bias=-mean / std, metadata=meta)


def _axis_synapse(node, in_shape, grid, cache, const, nodes, edges, graph) -> str:
    """Adds the NIR parts of an AxisSynapse (chained by edges); returns the name of the first."""
    try:
        parts = synapse_parts(node, grid or (1, 1), cache)
    except StructureTooLarge as e:
        raise NIRExportError(f"{e}; export the kv_first SSA order (--ssa-order kv_first)") from None
    except ValueError as e:
        raise NIRExportError(f"{node.name} (AxisSynapse from {node.source or '?'}): {e}") from None
    shape = tuple(in_shape)
    prev = None
    for i, part in enumerate(parts):
        if part.name != node.name and part.name in graph.nodes:
            raise NIRExportError(f"{node.name}: its part name {part.name!r} is taken by another node")
        meta = _meta(node, ir_name=node.name, part=i, role=part.role)
        if part.kind == "conv":
            c = part.weight
            nodes[part.name] = nir.Conv2d(input_shape=shape[1:], weight=c, stride=(1, 1), padding=(0, 0),
                                          dilation=(1, 1), groups=1, bias=const(0.0, (c.shape[0],), np.float32),
                                          metadata=meta)
            shape = (c.shape[0], shape[1] - c.shape[2] + 1, shape[2] - c.shape[3] + 1)
        elif part.kind == "pool_sum":
            nodes[part.name] = _grid_pool(grid, meta)
            shape = (shape[0], 1, 1)
        elif part.kind == "pool_broadcast":
            nodes[part.name] = _grid_pool(grid, meta, broadcast=True)
            shape = (shape[0], *grid)
        else:
            nodes[part.name] = nir.Scale(scale=const(node.weight, shape), metadata=meta)
        if prev is not None:
            edges.append((prev, part.name))
        prev = part.name
    return parts[0].name


def graph_metadata(graph: ir.Graph, model_info: dict | None = None, grid=None) -> dict:
    """h5py-writable graph metadata: scalars and strings; nested values as JSON strings. `ir_graph` is the IR
    (node kinds, scalar parameters and edges) that the file is the export of; `read_nir` rebuilds it."""
    md = graph.metadata
    ssa = md.get("ssa", {})
    out = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dt": DT,
        "T": int(md.get("T", 1)),
        "time_convention": TIME_CONVENTION,
        "lif_mapping": LIF_MAPPING,
        "threshold_convention": THRESHOLD_CONVENTION,
        "layout_convention": LAYOUT_CONVENTION,
        "token_grid": _dumps(list(grid) if grid else None),
        "ssa_orders": _dumps({k: v.get("order") for k, v in ssa.items()}),
        "passes": _dumps(md.get("passes", [])),
        "ir_metadata": _dumps(md),
        "ir_graph": _dumps({"nodes": [_ir_spec(graph.nodes[n]) for n in graph.nodes],
                            "edges": [[e.src, e.dst, e.port] for e in graph.edges]}),
        "model_info": _dumps(model_info or {}),
    }
    if md.get("input_per_step"):
        out["input_convention"] = EVENT_INPUT_CONVENTION
    norms = graph.of_type(ir.InputNorm)
    if norms:
        out["input_convention"] = NORMALIZED_INPUT_CONVENTION.format(name=norms[0].name)
    return out

