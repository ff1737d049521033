"""The lowered IR as a standard NIR 1.0.8 graph, and back.

`to_nir(graph)` / `from_nir(nirgraph)` convert in memory; `write_nir(path, graph)` writes a gzip-compressed
NIR (HDF5) file atomically and `read_nir(path)` reads one back into the IR, so the file itself can be simulated by
`sim.engine.Engine` (spike for spike and logit for logit the same as the in-memory lowered graph).

Only standard NIR node types are written. Node names are the IR node names (PyTorch module paths such as
`block.0.attn.q_lif`); each NIR node's metadata holds `source` (the module it came from) and `ir_type`.

Mapping (IR -> NIR):
    Input -> Input, Output -> Output, Conv2d -> Conv2d, Conv1d -> Conv1d, SumPool2d -> SumPool2d,
    Flatten (C,H,W)->(C,H*W) -> Flatten(start_dim=1, end_dim=2), Threshold -> Threshold, Integrator -> I (r=1),
    Delay -> Delay (in steps, dt=1), LIF -> LIF (see the time convention below),
    AxisSynapse -> one or two Conv1d with structured (grouped, one-hot, shared) weights, never a dense
    (neurons x inputs) matrix; see `axis_synapse_parts`.

Time convention (also written into the graph metadata): one logical time step is dt = 1. NIR's LIF
`tau dv/dt = (v_leak - v) + r I`, integrated by forward Euler with dt = 1, is
`v' = v + ((v_leak - v) + r I) / tau`; with tau_nir = tau, r = 1 and v_leak = v_reset this is exactly
SpikingJelly's decay_input update `H = V + (X - (V - V_reset)) / tau` (v_reset = 0 in every Spikformer LIF, so
v_leak = 0). v_threshold and v_reset are copied. The reference fires on `H >= v_threshold` (ties fire) while NIR
writes `v > v_threshold`; thresholds are stored unchanged and the tie rule is stated in the metadata. Threshold
nodes are stateless and fire on `x >= threshold` in the reference (every SSA threshold is a half-integer over
integer inputs, so the two rules agree there). I (r = 1) accumulates `v += x` per step; Delay holds `steps` steps.

NIR 1.0.8 type inference ignores `groups`: Conv1d/Conv2d set their input type to `weight.shape[1]` channels,
which is C_in / groups, so a grouped convolution never passes `type_check=True` (upstream code, unchanged on
NIR's main branch when this was written). The structured synapses need groups, so `grouped_conv_types()` corrects
that one rule (input channels = weight.shape[1] * groups) while this module builds or reads a graph, and restores
NIR afterwards. With stock NIR, such a file reads with `nir.read(path, type_check=False)`.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import nir

from convert import ir
from ground import sandbox
from ground.atomic import atomic_path
from ground.errors import UserError

FORMAT = "spikformer-nir"
FORMAT_VERSION = 1
DT = 1.0
TIME_CONVENTION = (
    "dt = 1: one NIR time unit is one logical time step of the reference model; every edge delivers within "
    "the step (logical time, no per-hop latency); inputs are the analog image repeated at each of T steps "
    "(direct encoding); all state starts at zero for each sample; the readout is the I node 'head' at step T")
LIF_MAPPING = (
    "NIR LIF tau*dv/dt = (v_leak - v) + r*I with forward Euler at dt = 1 equals SpikingJelly LIF "
    "(decay_input=True, hard reset) H = V + (X - (V - V_reset))/tau: tau_nir = tau, r = 1, v_leak = v_reset, "
    "v_threshold and v_reset copied; reset to v_reset after a spike")
THRESHOLD_CONVENTION = (
    "the reference fires on >= (LIF: H >= v_threshold; Threshold: x >= threshold; ties fire) while NIR writes "
    ">; thresholds are stored unchanged. Threshold nodes are stateless per step")
EVENT_INPUT_CONVENTION = (
    "event input: the Input node receives one frame per time step (spike counts per polarity and pixel, "
    "integrated from the event stream), not a repeated image; a count of k is k input spikes")
GROUPS_NOTE = (
    "Conv1d/Conv2d use groups; NIR 1.0.8 type inference takes weight.shape[1] (= C_in/groups) as the input "
    "channel count, so read with type_check=False on stock NIR or with hw_backends.nir.nir_io.grouped_conv_types()")

_EXPORTABLE = (ir.Input, ir.Output, ir.Conv2d, ir.Conv1d, ir.SumPool2d, ir.Flatten, ir.LIF, ir.Threshold,
               ir.Integrator, ir.Delay, ir.AxisSynapse)


class NIRExportError(UserError, ValueError):
    """The graph cannot be written as standard NIR (names the node)."""


class NIRReadError(UserError, ValueError):
    """A NIR file or graph that cannot be read back into the IR (one line)."""


# ------------------------------------------------------------------------------------ NIR 1.0.8 grouped convs
def _nir_ignores_groups() -> bool:
    c = nir.Conv1d(input_shape=3, weight=np.zeros((2, 1, 1)), stride=1, padding=0, dilation=1, groups=2,
                   bias=np.zeros(2))
    return int(c.input_type["input"][0]) != 2


def _fixed_post_init(orig):
    def post_init(self):
        orig(self)
        it = self.input_type.get("input") if isinstance(self.input_type, dict) else None
        if it is not None and int(self.groups) != 1:
            it = np.array(it).copy()
            it[0] = self.weight.shape[1] * int(self.groups)
            self.input_type = {"input": it}
    return post_init


@contextlib.contextmanager
def grouped_conv_types():
    """While active, NIR's Conv1d/Conv2d input types count weight.shape[1] * groups channels (a no-op where NIR
    already does so)."""
    if not _nir_ignores_groups():
        yield
        return
    saved = {cls: cls.__dict__["__post_init__"] for cls in (nir.Conv1d, nir.Conv2d)}
    try:
        for cls, orig in saved.items():
            cls.__post_init__ = _fixed_post_init(orig)
        yield
    finally:
        for cls, orig in saved.items():
            cls.__post_init__ = orig


# ------------------------------------------------------------------------------------ structured synapses
@dataclass
class ConvPart:
    """One standard Conv1d that implements (part of) an AxisSynapse."""
    name: str
    in_axes: tuple
    out_axes: tuple
    weight: np.ndarray  # [C_out, C_in / groups, kernel]
    padding: int
    groups: int
    role: str  # "main", "gather" or "sum"


class WeightCache:
    """Identical structured weights (and constant parameter arrays) are built once and shared (same object)."""

    def __init__(self):
        self._c: dict = {}
        self.hits = 0

    def get(self, key, build):
        if key in self._c:
            self.hits += 1
            return self._c[key]
        v = self._c[key] = build()
        return v


def _dtype_for(*values) -> np.dtype:
    """float32 where every value is exact in float32 (0/1, powers of two, half-integers), else float64."""
    return np.dtype(np.float32) if all(float(np.float32(v)) == float(v) for v in values) else np.dtype(np.float64)


def _prefix_len(a: tuple, b: tuple) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _structured_weight(in_axes, out_axes, sizes, w, kernel, gather_axis=None) -> tuple[np.ndarray, int]:
    """Weight [groups * out_g, in_g, kernel] of a grouped Conv1d between channel axes in_axes[:-1] and
    out_axes[:-1]: groups = the common leading channel axes; inside a group the weight is w where every channel
    axis present on both sides has equal indices (axes only in the input are summed, axes only in the output
    broadcast), constant along the kernel, or one-hot `kernel index == index of gather_axis` when the input's
    token axis becomes the output channel axis `gather_axis`."""
    ch_in, ch_out = tuple(in_axes[:-1]), tuple(out_axes[:-1])
    p = _prefix_len(ch_in, ch_out)
    groups = math.prod(sizes[a] for a in ch_in[:p])
    gi, go = ch_in[p:], ch_out[p:]
    dims = [sizes[a] for a in go] + [sizes[a] for a in gi] + [kernel]
    nd = len(dims)
    arr = np.ones(dims, dtype=_dtype_for(w))

    def eye(i, j, n):
        shape = [1] * nd
        shape[i] = shape[j] = n
        return np.eye(n, dtype=arr.dtype).reshape(shape)

    for a in go:
        if a in gi:
            arr = arr * eye(go.index(a), len(go) + gi.index(a), sizes[a])
    if gather_axis is not None:
        arr = arr * eye(go.index(gather_axis), nd - 1, sizes[gather_axis])
    if w != 1.0:
        arr = arr * arr.dtype.type(w)
    out_g, in_g = math.prod(dims[:len(go)]), math.prod(dims[len(go):-1])
    arr = arr.reshape(out_g, in_g, kernel)
    if groups > 1:
        arr = np.tile(arr, (groups, 1, 1))
    return np.ascontiguousarray(arr), groups


def axis_synapse_parts(node: ir.AxisSynapse, cache: WeightCache | None = None) -> list[ConvPart]:
    """The standard Conv1d layers that compute an AxisSynapse (token axis = the last axis of each view):
    - token axis kept (incl. 'one' -> 'one'): kernel 1, groups = common leading channel axes, one-hot in a group;
    - input token axis summed away (output token axis 'one'): kernel L, no padding, constant weight;
    - input without token axis ('one', L=1), output with one: kernel L, padding L-1 (broadcast);
    - input token axis becoming an output channel axis (qk_first): `<name>.gather` (kernel L, one-hot in the
      kernel, output token 'one') followed by `<name>` (broadcast or kernel 1);
    - one token axis summed and another broadcast: `<name>.sum` then `<name>`.
    The synapse weight sits on the last part; earlier parts have weight 1."""
    cache = cache or WeightCache()
    s, name = dict(node.sizes), node.name
    if s.setdefault("one", 1) != 1:
        raise NIRExportError(f"{name}: axis 'one' must have size 1, not {s['one']}")
    ins, outs = tuple(node.in_axes), tuple(node.out_axes)
    t_in, t_out = ins[-1], outs[-1]
    if t_in != t_out and t_in != "one" and t_in in outs[:-1]:
        mid = ins[:-1] + (t_in, "one")
        if mid == outs:
            return [_part(name, ins, outs, s, node.weight, "gather", cache, node)]
        first = _part(f"{name}.gather", ins, mid, s, 1.0, "gather", cache, node)
        return [first, _part(name, mid, outs, s, node.weight, "main", cache, node)]
    if t_in != t_out and t_in != "one" and t_out != "one" and t_in not in outs and t_out not in ins:
        mid = ins[:-1] + ("one",)
        first = _part(f"{name}.sum", ins, mid, s, 1.0, "sum", cache, node)
        return [first, _part(name, mid, outs, s, node.weight, "main", cache, node)]
    return [_part(name, ins, outs, s, node.weight, "main", cache, node)]


def _part(name, ins, outs, sizes, w, role, cache, node) -> ConvPart:
    t_in, t_out = ins[-1], outs[-1]
    gather = None
    if role == "gather":
        kernel, pad, gather = sizes[t_in], 0, t_in
    elif t_in == t_out:
        kernel, pad = 1, 0
    elif t_out == "one" and t_in not in outs:
        kernel, pad = sizes[t_in], 0
    elif t_in == "one" and t_out not in ins:
        kernel, pad = sizes[t_out], sizes[t_out] - 1
    else:
        raise NIRExportError(f"{node.name} (AxisSynapse from {node.source or '?'}): axes {ins} -> {outs} (a "
                             f"channel axis becoming the token axis) have no Conv1d form here")
    used = sorted(set(ins) | set(outs))
    key = (ins, outs, tuple((a, sizes[a]) for a in used), float(w), role)
    weight, groups = cache.get(key, lambda: _structured_weight(ins, outs, sizes, float(w), kernel, gather))
    return ConvPart(name, ins, outs, weight, pad, groups, role)


# ------------------------------------------------------------------------------------ IR -> NIR
def _const(cache: WeightCache, value: float, shape: tuple) -> np.ndarray:
    """A read-only constant array (a broadcast view: no memory per neuron until written)."""
    value = float(value)
    dt = _dtype_for(value)
    return cache.get(("const", dt.str, value, tuple(shape)),
                     lambda: np.broadcast_to(np.array(value, dtype=dt), tuple(int(x) for x in shape)))


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


def _meta(node: ir.Node, **extra) -> dict:
    m = {"source": node.source or node.name, "ir_type": node.kind}
    m.update(extra)
    return m


def to_nir(graph: ir.Graph, model_info: dict | None = None, cache: WeightCache | None = None) -> nir.NIRGraph:
    """The lowered IR graph as a type-checked NIRGraph (raises NIRExportError naming the node it cannot map).
    Weight arrays of IR nodes are shared, not copied; constant neuron parameters are broadcast views."""
    with grouped_conv_types():  # nodes get their types when they are built, so build them inside
        return _to_nir(graph, model_info, cache)


def _to_nir(graph: ir.Graph, model_info: dict | None, cache: WeightCache | None) -> nir.NIRGraph:
    shapes = check_exportable(graph)
    cache = cache or WeightCache()
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    renamed_out: dict[str, str] = {}  # IR node -> NIR node its out-edges leave from
    renamed_in: dict[str, str] = {}   # IR node -> NIR node its in-edges enter
    for name in graph.topo_order():
        node = graph.nodes[name]
        srcs = [e.src for e in graph.in_edges(name)]
        in_shape = shapes[srcs[0]] if srcs else None
        out_shape = shapes[name]
        if isinstance(node, ir.Input):
            nodes[name] = nir.Input(input_type=np.array(out_shape), metadata=_meta(node))
        elif isinstance(node, ir.Output):
            nodes[name] = nir.Output(output_type=np.array(in_shape), metadata=_meta(node))
        elif isinstance(node, ir.Conv2d):
            kh, kw = node.weight.shape[2:]
            if kh != kw:
                raise NIRExportError(f"{name} (Conv2d from {node.source}): kernel {kh}x{kw}; NIR 1.0.8 infers "
                                     f"Conv2d shapes with weight.shape[2] for both axes, so only square kernels "
                                     f"are exported")
            bias = node.bias if node.bias is not None else _const(cache, 0.0, (node.weight.shape[0],))
            nodes[name] = nir.Conv2d(input_shape=tuple(int(x) for x in in_shape[1:]), weight=node.weight,
                                     stride=tuple(int(x) for x in node.stride),
                                     padding=tuple(int(x) for x in node.padding), dilation=(1, 1),
                                     groups=int(node.groups), bias=bias,
                                     metadata=_meta(node, ir_bias=int(node.bias is not None)))
        elif isinstance(node, ir.Conv1d):
            bias = node.bias if node.bias is not None else _const(cache, 0.0, (node.weight.shape[0],))
            nodes[name] = nir.Conv1d(input_shape=int(in_shape[1]), weight=node.weight, stride=int(node.stride),
                                     padding=int(node.padding), dilation=1, groups=int(node.groups), bias=bias,
                                     metadata=_meta(node, ir_bias=int(node.bias is not None)))
        elif isinstance(node, ir.SumPool2d):
            nodes[name] = nir.SumPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                                        padding=np.array(node.padding), metadata=_meta(node))
        elif isinstance(node, ir.Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=1, end_dim=2,
                                      metadata=_meta(node))
        elif isinstance(node, ir.LIF):
            c = lambda v: _const(cache, v, out_shape)  # noqa: E731
            nodes[name] = nir.LIF(tau=c(node.tau), r=c(1.0), v_leak=c(node.v_reset),
                                  v_threshold=c(node.v_threshold), v_reset=c(node.v_reset), metadata=_meta(node))
        elif isinstance(node, ir.Threshold):
            nodes[name] = nir.Threshold(threshold=_const(cache, node.threshold, out_shape), metadata=_meta(node))
        elif isinstance(node, ir.Integrator):
            nodes[name] = nir.I(r=_const(cache, 1.0, out_shape), metadata=_meta(node))
        elif isinstance(node, ir.Delay):
            nodes[name] = nir.Delay(delay=_const(cache, float(node.steps) * DT, out_shape),
                                    metadata=_meta(node, ir_steps=int(node.steps)))
        elif isinstance(node, ir.AxisSynapse):
            parts = axis_synapse_parts(node, cache)
            spec = {"in_axes": list(node.in_axes), "out_axes": list(node.out_axes),
                    "sizes": {a: int(node.sizes[a]) for a in set(node.in_axes) | set(node.out_axes) | {"one"}
                              if a in node.sizes},
                    "weight": float(node.weight), "parts": [p.name for p in parts]}
            length = int(in_shape[1])
            prev = None
            for i, part in enumerate(parts):
                if part.name != name and part.name in graph.nodes:
                    raise NIRExportError(f"{name}: its Conv1d part name {part.name!r} is taken by another node")
                nodes[part.name] = nir.Conv1d(
                    input_shape=length, weight=part.weight, stride=1, padding=int(part.padding), dilation=1,
                    groups=int(part.groups), bias=_const(cache, 0.0, (part.weight.shape[0],)),
                    metadata=_meta(node, ir_name=name, part=i, role=part.role, axis_synapse=_dumps(spec)))
                if prev is not None:
                    edges.append((prev, part.name))
                length = length + 2 * part.padding - int(part.weight.shape[2]) + 1
                prev = part.name
            renamed_in[name], renamed_out[name] = parts[0].name, parts[-1].name
        else:
            raise NIRExportError(f"node {name!r} ({node.kind}, from {node.source or '?'}) has no NIR mapping")
    for e in graph.edges:
        edges.append((renamed_out.get(e.src, e.src), renamed_in.get(e.dst, e.dst)))
    meta = graph_metadata(graph, model_info)
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=True)
    except (ValueError, AssertionError) as e:
        raise NIRExportError(f"NIR rejected the exported graph: {_short(e)}") from None


def graph_metadata(graph: ir.Graph, model_info: dict | None = None) -> dict:
    """h5py-writable graph metadata: scalars and strings; nested dicts as JSON strings."""
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
        "groups_note": GROUPS_NOTE,
        "ssa_orders": _dumps({k: v.get("order") for k, v in ssa.items()}),
        "passes": _dumps(md.get("passes", [])),
        "ir_metadata": _dumps(md),
        "model_info": _dumps(model_info or {}),
    }
    if md.get("input_per_step"):
        out["input_convention"] = EVENT_INPUT_CONVENTION
    return out


# ------------------------------------------------------------------------------------ NIR -> IR
def _short(e, n: int = 300) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + " ..."


def _scalar(arr, what: str, name: str) -> float:
    a = np.asarray(arr)
    if a.size == 0:
        raise NIRReadError(f"NIR node {name!r}: {what} is empty")
    v = a.reshape(-1)[0]
    if not np.all(a == v):
        raise NIRReadError(f"NIR node {name!r}: {what} differs between neurons; the IR holds one value per layer")
    return float(v)


def _src(node, name) -> str:
    m = node.metadata if isinstance(node.metadata, dict) else {}
    s = m.get("source", name)
    return s.decode() if isinstance(s, bytes) else str(s)


def _m(node, key, default=None):
    m = node.metadata if isinstance(node.metadata, dict) else {}
    v = m.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).copy() if np.asarray(a).dtype != np.float64 else np.asarray(a)


def _pair(v) -> tuple:
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else tuple(a)


def _bias(node):
    if int(_m(node, "ir_bias", 1)) == 0 and not np.any(np.asarray(node.bias)):
        return None
    return _f64(node.bias)


def from_nir(ng: nir.NIRGraph, structured: str = "axis") -> ir.Graph:
    """NIR graph (as written by `to_nir`) -> IR. structured='axis' rebuilds each AxisSynapse from its metadata
    after checking that the stored Conv1d weights equal its materialised weights exactly (fast to simulate);
    structured='conv' keeps every Conv1d as read (simulates the file's weights themselves). A graph that cannot
    be read (wrong types or values anywhere in it) raises NIRReadError."""
    if structured not in ("axis", "conv"):
        raise ValueError(f"structured must be 'axis' or 'conv', got {structured!r}")
    try:
        return _from_nir(ng, structured)
    except NIRReadError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, AssertionError, OverflowError,
            RecursionError) as e:  # malformed metadata or parameters the checks below do not name
        raise NIRReadError(f"malformed NIR graph ({type(e).__name__}: {_short(e)})") from None


def _from_nir(ng: nir.NIRGraph, structured: str) -> ir.Graph:
    md = ng.metadata if isinstance(ng.metadata, dict) else {}
    md = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in md.items()}
    if md.get("format") != FORMAT:
        raise NIRReadError(f"this NIR graph was not written by spk-convert (metadata format is "
                           f"{md.get('format')!r}, expected {FORMAT!r}); its time convention is unknown")
    if int(md.get("format_version", -1)) != FORMAT_VERSION:
        raise NIRReadError(f"NIR graph format version {md.get('format_version')!r}; this reader takes "
                           f"{FORMAT_VERSION}")
    if float(md.get("dt", -1)) != DT:
        raise NIRReadError(f"NIR graph dt is {md.get('dt')!r}; this reader takes dt = {DT}")
    try:
        metadata = json.loads(md.get("ir_metadata", "{}"))
    except json.JSONDecodeError as e:
        raise NIRReadError(f"NIR graph metadata 'ir_metadata' is not JSON: {e}") from None
    metadata.setdefault("T", int(md.get("T", 1)))
    g = ir.Graph(metadata=metadata)

    groups: dict[str, list[str]] = {}  # IR AxisSynapse name -> its NIR parts (structured='axis')
    part_of: dict[str, str] = {}
    for name, node in ng.nodes.items():
        src = _src(node, name)
        if isinstance(node, nir.NIRGraph):
            raise NIRReadError(f"NIR node {name!r} is a nested NIRGraph; this reader takes flat graphs")
        if isinstance(node, nir.Input):
            g.add(ir.Input(name, src, shape=tuple(int(x) for x in node.input_type["input"])))
        elif isinstance(node, nir.Output):
            g.add(ir.Output(name, src))
        elif isinstance(node, nir.Conv2d):
            if _pair(node.dilation) != (1, 1) or isinstance(node.padding, str):
                raise NIRReadError(f"NIR node {name!r}: Conv2d with dilation {node.dilation} / padding "
                                   f"{node.padding!r} is not supported")
            g.add(ir.Conv2d(name, src, weight=_f64(node.weight), bias=_bias(node), stride=_pair(node.stride),
                            padding=_pair(node.padding), groups=int(node.groups)))
        elif isinstance(node, nir.Conv1d):
            if int(np.asarray(node.dilation).reshape(-1)[0]) != 1 or isinstance(node.padding, str):
                raise NIRReadError(f"NIR node {name!r}: Conv1d with dilation {node.dilation} / padding "
                                   f"{node.padding!r} is not supported")
            spec = _m(node, "axis_synapse")
            if structured == "axis" and spec is not None:
                ir_name = _m(node, "ir_name", name)
                part_of[name] = ir_name
                if ir_name not in groups:  # the first part seen stands for the synapse (keeps the node order)
                    try:
                        spec = json.loads(spec)
                        g.add(ir.AxisSynapse(ir_name, src, in_axes=tuple(spec["in_axes"]),
                                             out_axes=tuple(spec["out_axes"]),
                                             sizes={k: int(v) for k, v in spec["sizes"].items()},
                                             weight=float(spec["weight"])))
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                        raise NIRReadError(f"NIR node {name!r}: invalid axis_synapse metadata ({_short(e)})") \
                            from None
                groups.setdefault(ir_name, []).append(name)
                continue
            g.add(ir.Conv1d(name, src, weight=_f64(node.weight), bias=_bias(node),
                            stride=int(np.asarray(node.stride).reshape(-1)[0]),
                            padding=int(np.asarray(node.padding).reshape(-1)[0]), groups=int(node.groups)))
        elif isinstance(node, nir.SumPool2d):
            g.add(ir.SumPool2d(name, src, kernel=_pair(node.kernel_size), stride=_pair(node.stride),
                               padding=_pair(node.padding)))
        elif isinstance(node, nir.Flatten):
            shape = node.input_type["input"]
            if shape is None or len(shape) != 3 or int(node.start_dim) != 1 or int(node.end_dim) not in (2, -1):
                raise NIRReadError(f"NIR node {name!r}: only Flatten (C,H,W) -> (C,H*W) (start_dim=1, end_dim=2) "
                                   f"is supported")
            g.add(ir.Flatten(name, src))
        elif isinstance(node, nir.LIF):
            tau = _scalar(node.tau, "tau", name)
            r = _scalar(node.r, "r", name)
            v_leak = _scalar(node.v_leak, "v_leak", name)
            v_reset = _scalar(node.v_reset, "v_reset", name)
            if r != 1.0 or v_leak != v_reset:
                raise NIRReadError(f"NIR node {name!r}: LIF with r={r}, v_leak={v_leak}, v_reset={v_reset} has no "
                                   f"SpikingJelly form (needs r = 1 and v_leak = v_reset at dt = 1)")
            g.add(ir.LIF(name, src, tau=tau, v_threshold=_scalar(node.v_threshold, "v_threshold", name),
                         v_reset=v_reset))
        elif isinstance(node, nir.Threshold):
            g.add(ir.Threshold(name, src, threshold=_scalar(node.threshold, "threshold", name)))
        elif isinstance(node, nir.I):
            if _scalar(node.r, "r", name) != 1.0:
                raise NIRReadError(f"NIR node {name!r}: I with r != 1 is not supported")
            g.add(ir.Integrator(name, src))
        elif isinstance(node, nir.Delay):
            d = _scalar(node.delay, "delay", name) / DT
            if d != int(d) or d < 0:
                raise NIRReadError(f"NIR node {name!r}: delay {d} is not a whole number of steps")
            g.add(ir.Delay(name, src, steps=int(d)))
        else:
            raise NIRReadError(f"NIR node {name!r} has type {type(node).__name__}, which the IR does not take "
                               f"(supported: Input, Output, Conv1d, Conv2d, SumPool2d, Flatten, LIF, Threshold, I, "
                               f"Delay)")

    # rebuild AxisSynapses, checking the stored weights
    cache = WeightCache()
    for ir_name, part_names in groups.items():
        try:
            parts = axis_synapse_parts(g.nodes[ir_name], cache)
        except (KeyError, TypeError, NIRExportError) as e:
            raise NIRReadError(f"NIR node {ir_name!r}: invalid axis_synapse metadata ({_short(e)})") from None
        if sorted(p.name for p in parts) != sorted(part_names):
            raise NIRReadError(f"AxisSynapse {ir_name!r}: NIR parts {sorted(part_names)} do not match its axes "
                               f"(expected {[p.name for p in parts]})")
        for p in parts:
            stored = ng.nodes[p.name]
            ok = (np.asarray(stored.weight).shape == p.weight.shape and np.array_equal(stored.weight, p.weight)
                  and int(stored.groups) == p.groups and int(np.asarray(stored.padding).reshape(-1)[0]) == p.padding
                  and not np.any(np.asarray(stored.bias)))
            if not ok:
                raise NIRReadError(f"NIR node {p.name!r}: stored Conv1d weights differ from the AxisSynapse they "
                                   f"claim to be; read with structured='conv' to simulate them as stored")

    for ir_name in groups:  # parts in data-flow order
        groups[ir_name] = [p.name for p in axis_synapse_parts(g.nodes[ir_name], cache)]
    internal = {(a, b) for order in groups.values() for a, b in zip(order, order[1:])}
    first = {order[0] for order in groups.values()}
    last = {order[-1] for order in groups.values()}
    for a, b in ng.edges:
        if (a, b) in internal:
            continue
        if a in part_of and a not in last:
            raise NIRReadError(f"NIR edge {a} -> {b} leaves an inner part of AxisSynapse {part_of[a]!r}")
        if b in part_of and b not in first:
            raise NIRReadError(f"NIR edge {a} -> {b} enters an inner part of AxisSynapse {part_of[b]!r}")
        src, dst = part_of.get(a, a), part_of.get(b, b)
        if src not in g.nodes or dst not in g.nodes:
            raise NIRReadError(f"NIR edge {a} -> {b} names an unknown node")
        g.connect(src, dst)
    try:
        shapes = g.validate()
    except ir.IRValidationError as e:
        raise NIRReadError(f"the NIR graph does not form valid IR: {_short(e)}") from None
    for name, node in ng.nodes.items():  # the IR's shapes agree with NIR's types
        if name in part_of or isinstance(node, nir.Output):
            continue
        ot = node.output_type.get("output") if isinstance(node.output_type, dict) else None
        if ot is not None and tuple(int(x) for x in ot) != tuple(shapes[name]):
            raise NIRReadError(f"NIR node {name!r}: output type {tuple(int(x) for x in ot)} but the IR computes "
                               f"{shapes[name]}")
    return g


# ------------------------------------------------------------------------------------ files
class _NodesOneByOne(dict):
    """The graph's nodes for nir.write, each serialised (`to_dict`, which copies its arrays) only when the writer
    reaches it and dropped once written."""

    def __init__(self, nodes: dict):
        super().__init__()
        self._nodes = nodes

    def items(self):
        return ((name, node.to_dict()) for name, node in self._nodes.items())

    def __len__(self):
        return len(self._nodes)


class StreamingGraph:
    """What nir.write needs from a graph (`to_dict()`), with the nodes serialised one at a time.

    NIRGraph.to_dict() copies every array of the graph twice at once (dataclasses.asdict of the whole graph,
    then each node's to_dict), which materialises every constant neuron parameter: about 2 x 8 GiB for
    imagenet-8-768. Given this object, nir.write writes the same groups and datasets (same names, dtypes and
    compression) while holding one node's arrays at a time."""

    def __init__(self, ng: nir.NIRGraph):
        self.ng = ng

    def to_dict(self) -> dict:
        return {"metadata": dict(self.ng.metadata), "nodes": _NodesOneByOne(self.ng.nodes),
                "edges": [tuple(e) for e in self.ng.edges], "type": "NIRGraph"}


def write_nir(path, graph: ir.Graph, model_info: dict | None = None, compression: str = "gzip") -> dict:
    """Writes `graph` as a NIR file atomically (nir.write into a temporary sibling, fsync, rename; nothing is
    left at `path` on failure and an existing file stays as it was). Returns a summary (path, bytes, node counts
    by NIR type, reused weight arrays)."""
    path = Path(path)
    cache = WeightCache()
    ng = to_nir(graph, model_info, cache)
    with atomic_path(path) as tmp:
        nir.write(tmp, StreamingGraph(ng), compression=compression)
    counts: dict[str, int] = {}
    for n in ng.nodes.values():
        counts[type(n).__name__] = counts.get(type(n).__name__, 0) + 1
    return {"path": str(path), "bytes": path.stat().st_size, "nir_nodes": counts, "nir_edges": len(ng.edges),
            "shared_weight_arrays": cache.hits}


def read_nir(path, structured: str = "axis") -> ir.Graph:
    """Reads a NIR file written by write_nir (nir.read with type_check=True) back into the IR."""
    return from_nir(read_nir_graph(path), structured)


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
        is_hdf5 = sandbox.has_hdf5_signature(path)
    except OSError as e:
        raise NIRReadError(f"cannot read {path}: {e}") from None
    if not is_hdf5:
        raise NIRReadError(f"{path} is not a NIR file (not HDF5{', it is empty' if path.stat().st_size == 0 else ''})")
    root = sandbox.read_hdf5_or_raise(path, ["node"], NIRReadError, f"{path} is not a valid NIR graph")
    try:
        data = _hdf2dict(root["node"])
        if "type_check" in data:  # as nir.read
            raise ValueError("the NIR graph has a 'type_check' key")
        data["type_check"] = True
        with grouped_conv_types():
            return nir.dict2NIRNode(data)
    except (KeyError, ValueError, TypeError, AssertionError, OSError, AttributeError, IndexError, RuntimeError,
            RecursionError) as e:
        raise NIRReadError(f"{path} is not a valid NIR graph ({type(e).__name__}: {_short(e)})") from None


def _hdf2dict(group) -> dict:
    """nir.serialization.hdf2dict on a sandbox.H5Group: groups become dicts, datasets their values (bytes
    decoded as UTF-8)."""
    if not isinstance(group, sandbox.H5Group):
        raise TypeError("'node' is not an HDF5 group")
    out = {}
    for key, item in group.items():
        if isinstance(item, sandbox.H5Group):
            out[key] = _hdf2dict(item)
        else:
            v = item[()]
            out[key] = v.decode("utf8") if isinstance(v, bytes) else v
    return out
