"""The lowered IR as a standard NIR 1.0.8 graph, and back.

`to_nir(graph)` builds the NIRGraph (type-checked by NIR itself); `write_nir(path, graph)` writes it atomically in
`nir.write`'s HDF5 layout (`h5_writer`: constants as fill values, shared arrays hard-linked); `read_nir(path)` reads
a file with NIR's own reader and type check and rebuilds the IR it came from, checking that this IR exports to
exactly the file's nodes, parameters and edges (so simulating the IR is simulating the file).

The file follows NIR's semantics with its own time step, spike for spike with the PyTorch model (docs/nir.md):
- Time: one logical step of the model is dt = 1e-4 (graph metadata "dt"), the convention snntorch 1.0 hard-codes
  in its NIR import and export. LIF: tau = tau_model * dt, r = 1, v_leak = v_reset: forward Euler
  `v + (dt/tau) ((v_leak - v) + r I)` is SpikingJelly's `V + (X - (V - V_reset)) / tau_model`. I: r = 1/dt
  (v += I per step). Delay: steps * dt.
- Thresholds: NIR fires on v > threshold, the model on v >= threshold. Every LIF and Threshold stores the largest
  float32 below the model's threshold (`strict_threshold`): no float32 lies between the two, so for every float32
  value `v > stored` holds exactly when `v >= threshold` (proved over the values each layer can receive in
  tests/test_nir_io.py; the file runs spike for spike under a literal NIR executor in tests/test_nir_spec.py).
- Layout: token tensors (C, N) are stored as (C, Ht, Wt) on the patch grid they were flattened from (no Flatten
  node), so that the SSA's structured synapses need no grouped convolutions, which nir 1.0.8's type inference
  cannot type (`structured.py`). IR Conv1d layers over tokens become Conv2d (1x1, or the whole grid for the
  head's readout synapses).
- Input: x = pixel / 255 in [0, 1]. A model that normalises its input has the node 'input_norm' (a diagonal 1x1
  Conv2d, `_input_norm`) after the Input, and the graph metadata's "input_convention" says so.
Node names are the IR names (PyTorch module paths); each NIR node's metadata holds `source` and `ir_type`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

import nir

from convert import ir
from ground import hdf5_read
from ground.atomic import atomic_path
from ground.errors import UserError

from . import h5_writer
from .structured import StructureCache, StructureTooLarge, synapse_parts

FORMAT = "spikformer-nir"
FORMAT_VERSION = 2
DT = 1e-4
TIME_CONVENTION = (
    "dt = 1e-4: one logical time step of the model is 1e-4 time units (snntorch's NIR convention); every edge "
    "delivers within the step (no per-hop latency); inputs are the analog image repeated at each of T steps "
    "(direct encoding); all state starts at zero for each sample; the readout is the I node 'head' after T steps")
LIF_MAPPING = (
    "NIR LIF tau*dv/dt = (v_leak - v) + r*I, forward Euler with step dt: v += (dt/tau)*((v_leak - v) + r*I), equals "
    "SpikingJelly's LIF (decay_input=True, hard reset) H = V + (X - (V - V_reset))/tau_model with "
    "tau = tau_model*dt, r = 1, v_leak = v_reset; reset to v_reset after a spike. I: r = 1/dt (v += I per step)")
THRESHOLD_CONVENTION = (
    "the model fires on v >= threshold, NIR on v > threshold: every LIF v_threshold and Threshold threshold is "
    "stored as the largest float32 below the model's value (no float32 lies between them), so NIR's strict "
    "comparison reproduces the model's ties; Threshold nodes are stateless per step")
LAYOUT_CONVENTION = (
    "token tensors (C, N) are stored as (C, Ht, Wt) on the patch grid (token n = h*Wt + w); the SSA's "
    "structured synapses are 1x1 Conv2d with 0/1 weights (no groups), whole-grid SumPool2d (token sums, and "
    "broadcasts with padding grid-1) and Scale nodes")
EVENT_INPUT_CONVENTION = (
    "event input: the Input node receives one frame per time step (spike counts per polarity and pixel, "
    "integrated from the event stream), not a repeated image; a count of k is k input spikes")

NORMALIZED_INPUT_CONVENTION = (
    "x = pixel / 255 in [0, 1] (raw, not normalised); the model's per-channel normalisation "
    "(x * 255 - mean255) / std255 is the node '{name}': a 1x1 Conv2d with weight 255 / std255 on the diagonal and "
    "bias -mean255 / std255 (mean255, std255: the model's float32 constants, in that node's metadata)")

_EXPORTABLE = (ir.Input, ir.InputNorm, ir.Output, ir.Conv2d, ir.Conv1d, ir.SumPool2d, ir.Flatten, ir.LIF, ir.Threshold,
               ir.Integrator, ir.Delay, ir.AxisSynapse)
_KINDS = {cls.__name__: cls for cls in _EXPORTABLE}
_TYPE_FIELDS = ("input_type", "output_type")


class NIRExportError(UserError, ValueError):
    """The graph cannot be written as standard NIR (names the node)."""


class NIRReadError(UserError, ValueError):
    """A NIR file or graph that cannot be read back into the IR (one line)."""


def strict_threshold(value: float) -> np.float32:
    """The largest float32 below `value`: for every float32 x, `x > strict_threshold(v)` iff `x >= v`."""
    v32 = np.float32(value)
    if float(v32) != float(value):
        raise ValueError(f"threshold {value!r} is not a float32 number")
    return np.nextafter(v32, np.float32(-np.inf))


def model_threshold(stored) -> float:
    """Inverse of strict_threshold."""
    return float(np.nextafter(np.float32(stored), np.float32(np.inf)))


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


def _short(e, n: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + " ..."


# ------------------------------------------------------------------------------------ IR -> NIR
def check_exportable(graph: ir.Graph) -> dict:
    """Raises NIRExportError for a graph standard NIR cannot hold; returns the IR shapes."""
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
        if not isinstance(node, _EXPORTABLE):
            hint = ("; lower with ssa_form='binary' (graded spikes and product neurons are Loihi 2 only)"
                    if node.kind in ("GradedNeuron", "ProductNeuron") else "")
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
    if isinstance(node, (ir.Conv1d, ir.Conv2d)):
        params.pop("bias", None)
        params["has_bias"] = node.bias is not None
        params["weight_shape"] = list(node.weight.shape)
    return {"name": node.name, "kind": node.kind, "source": node.source, "params": params}


def to_nir(graph: ir.Graph, model_info: dict | None = None, cache: StructureCache | None = None) -> nir.NIRGraph:
    """The lowered IR graph as a NIRGraph built with NIR's own type check (raises NIRExportError naming the node
    it cannot map). Weight arrays of IR nodes are shared, not copied; neuron parameters are broadcast views."""
    shapes = check_exportable(graph)
    grid = token_grid(graph, shapes)
    cache = cache or StructureCache()
    const = _Constants()
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    first_part: dict[str, str] = {}  # IR AxisSynapse -> NIR node its in-edges enter
    through: dict[str, str] = {}  # IR Flatten -> the node whose output it passes on
    for name in graph.topo_order():
        node = graph.nodes[name]
        srcs = [e.src for e in graph.in_edges(name)]
        in_shape = _nir_shape(shapes[srcs[0]], grid, srcs[0]) if srcs else None
        out_shape = _nir_shape(shapes[name], grid, name)
        if isinstance(node, ir.Input):
            nodes[name] = nir.Input(input_type=np.array(out_shape), metadata=_meta(node))
        elif isinstance(node, ir.Output):
            nodes[name] = nir.Output(output_type=np.array(in_shape), metadata=_meta(node))
        elif isinstance(node, ir.InputNorm):
            nodes[name] = _input_norm(node, in_shape)
        elif isinstance(node, ir.Flatten):
            through[name] = through.get(srcs[0], srcs[0])
        elif isinstance(node, (ir.Conv2d, ir.Conv1d)):
            if _sums_tokens(node, in_shape, grid):  # the head: sum the grid per channel, then a 1x1 Conv2d
                first_part[name] = pool = f"{name}.pool_sum"
                nodes[pool] = _grid_pool(grid, _meta(node, ir_name=name, part=0, role="pool_sum"))
                nodes[name] = _conv(node, (in_shape[0], 1, 1), out_shape, None, const)
                edges.append((pool, name))
            else:
                nodes[name] = _conv(node, in_shape, out_shape, grid, const)
        elif isinstance(node, ir.SumPool2d):
            nodes[name] = nir.SumPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                                        padding=np.array(node.padding), metadata=_meta(node))
        elif isinstance(node, ir.LIF):
            thr = strict_threshold(node.v_threshold)
            nodes[name] = nir.LIF(tau=const(node.tau * DT, out_shape, np.float64), r=const(1.0, out_shape),
                                  v_leak=const(node.v_reset, out_shape), v_threshold=const(thr, out_shape, np.float32),
                                  v_reset=const(node.v_reset, out_shape), metadata=_meta(node))
        elif isinstance(node, ir.Threshold):
            nodes[name] = nir.Threshold(threshold=const(strict_threshold(node.threshold), out_shape, np.float32),
                                        metadata=_meta(node))
        elif isinstance(node, ir.Integrator):
            nodes[name] = nir.I(r=const(1.0 / DT, out_shape, np.float32), metadata=_meta(node))
        elif isinstance(node, ir.Delay):
            nodes[name] = nir.Delay(delay=const(float(node.steps) * DT, out_shape, np.float64), metadata=_meta(node))
        elif isinstance(node, ir.AxisSynapse):
            first_part[name] = _axis_synapse(node, in_shape, grid, cache, const, nodes, edges, graph)
        else:
            raise NIRExportError(f"node {name!r} ({node.kind}, from {node.source or '?'}) has no NIR mapping")
    for e in graph.edges:
        if e.dst in through:
            continue
        edge = (through.get(e.src, e.src), first_part.get(e.dst, e.dst))
        if edge in edges:
            raise NIRExportError(f"edges {e.src} -> {e.dst} and {edge[0]} -> {edge[1]} become one NIR edge")
        edges.append(edge)
    meta = graph_metadata(graph, model_info, grid)
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError) as e:
        raise NIRExportError(f"NIR rejected the exported graph: {_short(e)}") from None


def _grid_pool(grid, meta: dict, broadcast: bool = False) -> nir.SumPool2d:
    """SumPool2d whose window is the token grid: a (C, Ht, Wt) input summed to (C, 1, 1), or (broadcast, padding
    grid - 1) a (C, 1, 1) input copied to every token."""
    pad = [grid[0] - 1, grid[1] - 1] if broadcast else [0, 0]
    return nir.SumPool2d(kernel_size=np.array(grid), stride=np.array([1, 1]), padding=np.array(pad), metadata=meta)


def _sums_tokens(node, in_shape, grid) -> bool:
    """An IR Conv1d whose kernel spans all N tokens with the same weights at every token (the head's readout
    synapses, W / (N T) per token): in NIR a whole-grid SumPool2d then a 1x1 Conv2d (N times fewer weights)."""
    if not isinstance(node, ir.Conv1d) or grid is None or int(node.padding) != 0 or len(in_shape) != 3:
        return False
    w = node.weight
    return w.shape[2] == grid[0] * grid[1] > 1 and tuple(in_shape[1:]) == tuple(grid) and \
        bool(np.all(w == w[:, :, :1]))


def _conv(node, in_shape, out_shape, grid, const) -> nir.Conv2d:
    """IR Conv2d as is; IR Conv1d over tokens as a Conv2d on the token grid: kernel 1 -> 1x1, a kernel spanning
    all N tokens without padding -> a kernel spanning the grid; after a token sum (`_sums_tokens`, grid None)
    the kernel's first tap as a 1x1 Conv2d."""
    w = node.weight
    if isinstance(node, ir.Conv2d):
        stride, padding = tuple(int(x) for x in node.stride), tuple(int(x) for x in node.padding)
        kh, kw = w.shape[2:]
        if kh != kw:
            raise NIRExportError(f"{node.name} (Conv2d from {node.source}): kernel {kh}x{kw}; nir 1.0.8 infers "
                                 f"Conv2d shapes with weight.shape[2] for both axes, so only square kernels are "
                                 f"exported")
    else:
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
        stride, padding = (1, 1), (0, 0)
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


# ------------------------------------------------------------------------------------ NIR -> IR
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
        raise NIRReadError(f"malformed NIR graph ({type(e).__name__}: {_short(e)})") from None


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
        raise NIRReadError(f"NIR graph metadata 'ir_metadata'/'ir_graph' is missing or not JSON ({_short(e)})") \
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
        raise NIRReadError(f"the NIR graph does not form valid IR: {_short(e)}") from None
    try:
        expected = to_nir(g)
    except NIRExportError as e:
        raise NIRReadError(f"the IR described by the file cannot be exported: {_short(e)}") from None
    _same_graph(expected, ng)
    return g


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _ir_node(s: dict, ng: nir.NIRGraph) -> ir.Node:
    kind, name = s["kind"], str(s["name"])
    if kind not in _KINDS:
        raise NIRReadError(f"ir_graph node {name!r} has kind {kind!r}, which the NIR export does not write")
    params = {k: (v if k == "sizes" else _tuples(v)) for k, v in dict(s["params"]).items()}
    if kind in ("Conv1d", "Conv2d"):
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
        return _KINDS[kind](name, str(s.get("source") or ""), **params)
    except TypeError as e:
        raise NIRReadError(f"ir_graph node {name!r} ({kind}): {_short(e)}") from None


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


# ------------------------------------------------------------------------------------ files
def write_nir(path, graph: ir.Graph, model_info: dict | None = None, compression: str | None = "gzip",
              compression_opts=1) -> dict:
    """Writes `graph` as a NIR file atomically (into a temporary sibling, fsync, rename; nothing is left at `path`
    on failure and an existing file stays as it was), in nir.write's layout (`h5_writer`). Returns a summary
    (path, bytes, node counts by NIR type, shared structure arrays, constant / hard-linked / stored arrays).
    gzip level 1 with HDF5's shuffle filter: float64 weights shrink to ~91 % either way, level 1 at ~3/4 of the
    time of nir.write's default level (bench/bench_convert.py)."""
    path = Path(path)
    cache = StructureCache()
    ng = to_nir(graph, model_info, cache)
    with atomic_path(path) as tmp:
        stats = h5_writer.write_graph(tmp, ng, compression=compression, compression_opts=compression_opts)
    counts: dict[str, int] = {}
    for n in ng.nodes.values():
        counts[type(n).__name__] = counts.get(type(n).__name__, 0) + 1
    return {"path": str(path), "bytes": path.stat().st_size, "nir_nodes": counts, "nir_edges": len(ng.edges),
            "shared_structure_arrays": cache.hits, **stats}


def read_nir(path) -> ir.Graph:
    """Reads a NIR file written by write_nir (NIR's reader with its type check) back into the IR."""
    return from_nir(read_nir_graph(path))


def read_nir_graph(path) -> nir.NIRGraph:
    """nir.read(path, type_check=True), with the HDF5 parsing in a child process (ground.sandbox: a deadline
    and an address-space limit, plain arrays and strings sent back): a crafted file that makes the HDF5 library
    hang or crash is refused with NIRReadError like any other malformed file. The NIR nodes are then built
    here from those values exactly as nir.read builds them (nir.serialization.hdf2dict + dict2NIRNode)."""
    path = Path(path)
    if not path.exists():
        raise NIRReadError(f"NIR file {path} does not exist")
    if path.is_dir():
        raise NIRReadError(f"NIR file {path} is a directory")
    try:
        is_hdf5 = hdf5_read.has_hdf5_signature(path)
    except OSError as e:
        raise NIRReadError(f"cannot read {path}: {e}") from None
    if not is_hdf5:
        raise NIRReadError(f"{path} is not a NIR file (not HDF5{', it is empty' if path.stat().st_size == 0 else ''})")
    root = hdf5_read.read_hdf5_or_raise(path, ["node"], NIRReadError, f"{path} is not a valid NIR graph")
    try:
        data = _hdf2dict(root["node"])
        if "type_check" in data:  # as nir.read
            raise ValueError("the NIR graph has a 'type_check' key")
        data["type_check"] = True
        return nir.dict2NIRNode(data)
    except (KeyError, ValueError, TypeError, AssertionError, OSError, AttributeError, IndexError, RuntimeError,
            RecursionError) as e:
        raise NIRReadError(f"{path} is not a valid NIR graph ({type(e).__name__}: {_short(e)})") from None


def _hdf2dict(group) -> dict:
    """nir.serialization.hdf2dict on a hdf5_read.H5Group: groups become dicts, datasets their values (bytes
    decoded as UTF-8)."""
    if not isinstance(group, hdf5_read.H5Group):
        raise TypeError("'node' is not an HDF5 group")
    out = {}
    for key, item in group.items():
        if isinstance(item, hdf5_read.H5Group):
            out[key] = _hdf2dict(item)
        else:
            v = item[()]
            out[key] = v.decode("utf8") if isinstance(v, bytes) else v
    return out
