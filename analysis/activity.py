"""Activity counts of a lowered IR graph: synaptic events, AC/MAC operations, neuron updates and spikes.

Input is a record of per-node outputs over S time steps and B samples (`records[name]` = tensor [S, B, *shape]),
from the float simulator (`Engine.run(..., record="all")`), from the PyTorch reference
(`reference_records`), or from any other engine that produces the same dict (the Loihi fixed-point engine plugs
in here: `count_activity(graph, records)` is the whole interface). Records that are missing for stateless nodes
(synapses, Flatten, memoryless Threshold neurons) are recomputed from their inputs with the float kernels, so a
record of the stateful neurons alone (LIF spikes, as the reference gives) is enough.

Counting rules (per sample, over all recorded steps):

- A synapse node can read several streams (edges into its port are summed; residual sums arrive as separate spike
  streams after the residual pass). Every stream is counted on its own: each non-zero value of a stream at an
  input position is one *input event* there.
- *Fan-out* of an input position = number of output neurons it connects to, exact at borders and with stride:
  for Conv2d/Conv1d/SumPool2d the transposed convolution of a ones tensor (the connection count per input
  position); for AxisSynapse its `fan_out` (uniform). *Structural* fan-out counts every connection of the layer
  geometry; *effective* fan-out only connections with a non-zero weight (as NeuroBench's effective ops).
  A synapse node whose output feeds k nodes is k physical synapse groups (multiplicity k), as in
  `ssa_binary.count_resources`. Biases are not synaptic operations (a neuron parameter, as in NeuroBench).
- *Synaptic events* = sum over input events of the structural fan-out (x multiplicity);
  *effective ops* = the same with the effective fan-out. Energy uses effective ops.
- AC or MAC is decided per stream: a stream whose values all lie in {-1, 0, 1} (spikes) costs one AC per
  effective op; any other stream (the analog image into the first conv; integer-valued streams) costs one MAC
  per effective op (one multiply by the graded value per connection, as a graded spike on Loihi 2).
  `value_ops` = sum over events of |value| x effective fan-out is also kept: it is the AC count if an integer k
  were sent as k unit spikes.
- The *combined* input (the sum of all streams, what the PyTorch layer sees) is counted too: its non-zero
  positions x effective fan-out is exactly NeuroBench's rule (`combined_ops`), and its kind (spikes / integer /
  analog) decides the Spikingformer convention.
- Neurons (LIF, Threshold, Integrator; Loihi LIF, graded and product neurons): one *update* per neuron per step;
  an update is *active* if the neuron's total input at that step (synaptic current including bias, on any port)
  is non-zero or it spikes, otherwise *inactive*. Spikes = non-zero outputs (1s of spiking neurons, graded
  spikes of graded/product neurons). Firing rate = spikes / updates.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from convert import ir, kernels
from sim.engine import Engine

from .reference import record_reference
from .shards import ExactSum, exact_sum

KIND_ORDER = ("none", "spikes", "integer", "analog")  # "none": no non-zero value seen yet

# categories: what a layer is in the original model; used to group energy "by layer kind"
CATEGORY_LABELS = {
    "first_conv": "first conv + LIF (analog input)",
    "sps_conv": "SPS convs + LIF",
    "maxpool": "max-pool (OR neurons)",
    "linear": "linear layers + LIF (q/k/v/proj/fc1/fc2)",
    "ssa_lif": "attn_lif",
    "ssa_decomposition": "SSA decomposition (AND/bit/product neurons)",
    "head": "head readout",
    "other": "other",
}
# the category of a synapse that is neither the first conv, the head's nor in an SSA; any other kind is "other"
SYNAPSE_CATEGORY = {ir.SumPool2d: "maxpool", ir.Conv2d: "sps_conv", ir.Conv1d: "linear"}


def _worse(a: str, b: str) -> str:
    return a if KIND_ORDER.index(a) >= KIND_ORDER.index(b) else b


def value_kind(x: torch.Tensor) -> str:
    """'none' (all zero), 'spikes' (values in {-1, 0, 1}), 'integer' or 'analog'."""
    nz = x[x != 0]
    if nz.numel() == 0:
        return "none"
    if bool(((nz == 1) | (nz == -1)).all()):
        return "spikes"
    if bool((nz == torch.round(nz)).all()):
        return "integer"
    return "analog"


# ------------------------------------------------------------------------------------------------ fan-out maps

def _conv_fanout(weight: torch.Tensor, in_shape: tuple, out_shape: tuple, stride, padding, groups: int
                 ) -> torch.Tensor:
    """Connections per input position of a conv (1-D or 2-D): transposed conv of a ones tensor over the outputs
    with the 0/1 weight mask (zero-padding taps do not connect to anything)."""
    nd = weight.dim() - 2
    ones = torch.ones((1, weight.shape[0], *out_shape[1:]), dtype=weight.dtype, device=weight.device)
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    padding = (padding,) * nd if isinstance(padding, int) else tuple(padding)
    k = weight.shape[2:]
    base = [(o - 1) * s - 2 * p + kk for o, s, p, kk in zip(out_shape[1:], stride, padding, k)]
    out_pad = tuple(n - b for n, b in zip(in_shape[1:], base))
    fn = F.conv_transpose2d if nd == 2 else F.conv_transpose1d
    fan = fn(ones, weight, None, stride, padding, out_pad, groups)
    return torch.round(fan[0])


def _conv_maps(node, in_shape, out_shape, device):
    w = torch.as_tensor(node.weight, dtype=torch.float64, device=device)
    args = (in_shape, out_shape, node.stride, node.padding, node.groups)
    return (_conv_fanout(torch.ones_like(w), *args), _conv_fanout((w != 0).to(torch.float64), *args))


def _sum_pool_maps(node, in_shape, out_shape, device):
    c = in_shape[0]
    w = torch.ones((c, 1, *node.kernel), dtype=torch.float64, device=device)
    s = _conv_fanout(w, in_shape, out_shape, node.stride, node.padding, c)
    return s, s.clone()


def _axis_synapse_maps(node, in_shape, out_shape, device):
    s = torch.full(in_shape, float(node.fan_out), dtype=torch.float64, device=device)
    return s, (s if node.weight != 0 else torch.zeros_like(s))


FANOUT_RULES = {ir.Conv2d: _conv_maps, ir.Conv1d: _conv_maps, ir.SumPool2d: _sum_pool_maps,
                ir.AxisSynapse: _axis_synapse_maps}


def fanout_maps(node: ir.Node, in_shape: tuple, out_shape: tuple, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(structural, effective) fan-out per input position, float64 tensors of shape `in_shape`."""
    rule = FANOUT_RULES.get(type(node))
    if rule is None:
        raise NotImplementedError(f"no fan-out rule for synapse type {node.kind} ({node.name})")
    return rule(node, in_shape, out_shape, device)


# ------------------------------------------------------------------------------------------------ count records

@dataclass
class StreamCount:
    src: str  # the node on the edge (a Flatten is resolved to `origin`)
    origin: str  # the neuron or input that emits the values
    kind: str = "none"
    positions: int = 0  # input positions per step per sample
    events: int = 0  # non-zero values, all steps, all samples
    value_sum: float = field(default_factory=ExactSum)  # sum of |values| (exact: merges in any order)
    synaptic_events: int = 0
    effective_ops: int = 0
    value_ops: float = field(default_factory=ExactSum)  # sum of |value| x effective fan-out (exact)

    def add(self, o: "StreamCount"):
        self.kind = _worse(self.kind, o.kind)
        self.events += o.events
        self.value_sum += o.value_sum
        self.synaptic_events += o.synaptic_events
        self.effective_ops += o.effective_ops
        self.value_ops += o.value_ops

    @property
    def op_type(self) -> str:
        return "AC" if self.kind in ("none", "spikes") else "MAC"


@dataclass
class SynapseCount:
    name: str
    source: str
    node_type: str
    category: str
    in_shape: tuple
    out_shape: tuple
    multiplicity: int
    connections: int  # structural connections of one copy (sum of the fan-out map): dense ops per step
    effective_connections: int  # connections with a non-zero weight
    streams: list = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    combined_kind: str = "none"
    combined_events: int = 0  # non-zero positions of the summed input
    combined_value_sum: float = field(default_factory=ExactSum)
    combined_ops: int = 0  # NeuroBench rule: non-zero summed input x effective fan-out (x multiplicity)

    @property
    def positions(self) -> int:
        return math.prod(self.in_shape)

    @property
    def neurons_out(self) -> int:
        return math.prod(self.out_shape)

    @property
    def events(self) -> int:
        return sum(s.events for s in self.streams)

    @property
    def synaptic_events(self) -> int:
        return sum(s.synaptic_events for s in self.streams)

    @property
    def effective_ops(self) -> int:
        return sum(s.effective_ops for s in self.streams)

    @property
    def ac_ops(self) -> int:
        return sum(s.effective_ops for s in self.streams if s.op_type == "AC")

    @property
    def mac_ops(self) -> int:
        return sum(s.effective_ops for s in self.streams if s.op_type == "MAC")

    @property
    def dense_ops(self) -> int:
        """Every structural connection at every step, all samples (NeuroBench's 'Dense')."""
        return self.connections * self.multiplicity * self.steps * self.samples

    @property
    def input_rate(self) -> float:
        """Mean input value per position and step (sum over streams): for spike streams the firing rate; for a
        sum of k spike streams it counts a value k as k spikes (the Spikformer SOP convention)."""
        d = self.positions * self.steps * self.samples
        return sum(s.value_sum for s in self.streams) / d if d else 0.0

    @property
    def input_nonzero_fraction(self) -> float:
        d = self.positions * self.steps * self.samples
        return self.combined_events / d if d else 0.0

    def add(self, o: "SynapseCount"):
        for a, b in zip(self.streams, o.streams):
            a.add(b)
        self.steps = max(self.steps, o.steps)
        self.samples += o.samples
        self.combined_kind = _worse(self.combined_kind, o.combined_kind)
        self.combined_events += o.combined_events
        self.combined_value_sum += o.combined_value_sum
        self.combined_ops += o.combined_ops

    def to_dict(self) -> dict:
        d = asdict(self)
        d["in_shape"], d["out_shape"] = list(self.in_shape), list(self.out_shape)
        for k in ("events", "synaptic_events", "effective_ops", "ac_ops", "mac_ops", "dense_ops", "input_rate",
                  "input_nonzero_fraction"):
            d[k] = getattr(self, k)
        for s, so in zip(d["streams"], self.streams):
            s["op_type"] = so.op_type
        return d


@dataclass
class NeuronCount:
    name: str
    source: str
    node_type: str
    category: str
    shape: tuple
    spiking: bool
    steps: int = 0
    samples: int = 0
    updates: int = 0
    active_updates: int = 0
    spikes: int = 0

    @property
    def neurons(self) -> int:
        return math.prod(self.shape)

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.updates if self.updates else 0.0

    def add(self, o: "NeuronCount"):
        self.steps = max(self.steps, o.steps)
        self.samples += o.samples
        self.updates += o.updates
        self.active_updates += o.active_updates
        self.spikes += o.spikes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["neurons"] = self.neurons
        d["firing_rate"] = self.firing_rate
        return d


@dataclass
class Activity:
    synapses: dict  # name -> SynapseCount (graph topological order)
    neurons: dict  # name -> NeuronCount
    samples: int = 0
    steps: int = 0
    ssa_prefixes: tuple = ()
    order: tuple = ()  # synapse and neuron node names in topological order
    # per neuron (flat) spike counts of every event-emitting population and of the input (non-zero values), int64;
    # only when the counter is asked for them (ActivityCounter(per_neuron=True): the chip-crossing count)
    spike_counts: dict = field(default_factory=dict)

    def add(self, o: "Activity") -> "Activity":
        """self + o (self is updated and returned). Exact: integer counts, maxima, the worse value kind and
        ExactSums, so any grouping of batches merges to the same activity (a sharded run, analysis.shards)."""
        for k, v in o.synapses.items():
            self.synapses[k].add(v)
        for k, v in o.neurons.items():
            self.neurons[k].add(v)
        for k, v in o.spike_counts.items():
            self.spike_counts[k] = self.spike_counts[k] + v if k in self.spike_counts else v.copy()
        self.samples += o.samples
        self.steps = max(self.steps, o.steps)
        return self

    def is_ssa_decomposition(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.ssa_prefixes)

    def by_source(self) -> dict[str, dict]:
        """Per PyTorch module path: summed counts of its synapse and neuron nodes (first-seen order)."""
        out: dict[str, dict] = {}

        def row(src, category):
            return out.setdefault(src, {"source": src, "category": category, "nodes": [], "ac_ops": 0,
                                        "mac_ops": 0, "effective_ops": 0, "synaptic_events": 0, "events": 0,
                                        "combined_ops": 0, "dense_ops": 0, "neurons": 0, "updates": 0,
                                        "active_updates": 0, "spikes": 0, "input_value_sum": 0.0,
                                        "input_positions": 0, "spiking_neurons": 0, "spiking_updates": 0,
                                        "synapse_nodes": 0, "neuron_nodes": 0})

        order = self.order or (tuple(self.synapses) + tuple(self.neurons))
        for name in order:
            if name in self.synapses:
                s = self.synapses[name]
                r = row(s.source, s.category)
                r["nodes"].append(s.name)
                r["synapse_nodes"] += 1
                for k in ("ac_ops", "mac_ops", "effective_ops", "synaptic_events", "events", "combined_ops",
                          "dense_ops"):
                    r[k] += getattr(s, k)
                r["input_value_sum"] += sum(st.value_sum for st in s.streams)
                r["input_positions"] += s.positions * s.steps * s.samples
            elif name in self.neurons:
                n = self.neurons[name]
                r = row(n.source, n.category)
                r["nodes"].append(n.name)
                r["neuron_nodes"] += 1
                r["neurons"] += n.neurons
                r["updates"] += n.updates
                r["active_updates"] += n.active_updates
                r["spikes"] += n.spikes
                if n.spiking:
                    r["spiking_neurons"] += n.neurons
                    r["spiking_updates"] += n.updates
        for r in out.values():
            r["input_rate"] = r["input_value_sum"] / r["input_positions"] if r["input_positions"] else None
            r["firing_rate"] = r["spikes"] / r["spiking_updates"] if r["spiking_updates"] else None
        return out

    def to_dict(self) -> dict:
        return {"samples": self.samples, "steps": self.steps,
                "synapses": [s.to_dict() for s in self.synapses.values()],
                "neurons": [n.to_dict() for n in self.neurons.values()]}


# ------------------------------------------------------------------------------------------------ record access

def _origin(graph: ir.Graph, name: str) -> str:
    """The node whose values reach `name` through layout nodes and the input normalisation (the first conv's
    origin is the Input, normalised or not)."""
    while isinstance(graph.nodes[name], (*ir.VIEW_TYPES, ir.InputNorm)):
        name = graph.in_edges(name)[0].src
    return name


def _recomputable(node: ir.Node) -> bool:
    """A stateless node of a lowered graph whose output its inputs give: synapses, layout, memoryless neurons."""
    return node.is_synapse or isinstance(node, (*ir.VIEW_TYPES, ir.InputNorm)) or (node.is_neuron and not node.stateful)


class Records:
    """A record dict completed on demand: stateless nodes missing from it are recomputed from their inputs."""

    def __init__(self, graph: ir.Graph, records: dict[str, torch.Tensor]):
        self.graph = graph
        self.rec = dict(records)
        self.pc = kernels.ParamCache()

    def has(self, name: str) -> bool:
        if name in self.rec:
            return True
        node = self.graph.nodes[name]
        return _recomputable(node) and all(
            self.has(e.src) for e in self.graph.in_edges(name))

    def port_sum(self, name: str, port: str = "in") -> torch.Tensor:
        srcs = [e.src for e in self.graph.in_edges(name, port)]
        acc = self.get(srcs[0])
        for s in srcs[1:]:
            acc = acc + self.get(s)
        return acc

    def get(self, name: str) -> torch.Tensor:
        if name in self.rec:
            return self.rec[name]
        node = self.graph.nodes[name]
        if not _recomputable(node):
            raise KeyError(f"no record of {name} ({node.kind}, from {node.source or '?'}); a stateful node "
                           f"must be recorded (run the engine with record='all')")
        inp = {p: self.port_sum(name, p) for p in node.ports}
        S, B = next(iter(inp.values())).shape[:2]
        flat = {p: v.reshape(S * B, *v.shape[2:]) for p, v in inp.items()}
        y = kernels.step(node, flat, {}, self.pc, 0)
        self.rec[name] = y = y.reshape(S, B, *y.shape[1:])
        return y


def reference_records(graph: ir.Graph, images: torch.Tensor, ref_spikes: dict[str, torch.Tensor],
                      T: int) -> dict[str, torch.Tensor]:
    """A record dict for `graph` from the PyTorch reference (`analysis.reference.record_reference`): the analog input
    repeated at every step (direct encoding) and the spikes of every LIF / max-pool module, whose IR nodes carry
    the module path as their name. Everything else is recomputed on demand by `Records`."""
    rec = {}
    for name in graph.inputs():
        rec[name] = images.unsqueeze(0).expand(T, *images.shape)
    for name, v in ref_spikes.items():
        if name in graph.nodes:
            rec[name] = v
    return rec


# ------------------------------------------------------------------------------------------------ counting

def categorize(graph: ir.Graph) -> dict[str, str]:
    """Layer kind of every synapse and neuron node (see CATEGORY_LABELS)."""
    ssa = tuple(f"{k}." for k in graph.metadata.get("ssa", {}))
    cat: dict[str, str] = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        if any(name.startswith(p) for p in ssa):
            cat[name] = "ssa_decomposition"
        elif node.is_synapse:
            origins = [_origin(graph, e.src) for e in graph.in_edges(name)]
            if any(isinstance(graph.nodes[o], ir.Input) for o in origins):
                cat[name] = "first_conv"
            elif any(graph.nodes[e.dst].is_readout for e in graph.out_edges(name)):
                cat[name] = "head"
            else:
                cat[name] = SYNAPSE_CATEGORY.get(type(node), "other")
        elif node.is_neuron:
            ups = {cat.get(e.src, "other") for e in graph.in_edges(name)}
            if node.stateful and "ssa_decomposition" in ups:  # attn_lif (float LIF or Loihi LIF)
                cat[name] = "ssa_lif"
            elif len(ups) == 1:
                cat[name] = ups.pop()
            else:
                cat[name] = "other"
    return cat


def _per_neuron(events: torch.Tensor):
    """Events [S, B, *shape] -> int64 counts per neuron (flat numpy)."""
    return events.reshape(-1, math.prod(events.shape[2:])).sum(0, dtype=torch.int64).cpu().numpy()


class ActivityCounter:
    """Counts one batch of records at a time; build once per graph (fan-out maps are computed once)."""

    def __init__(self, graph: ir.Graph, device="cpu", per_neuron: bool = False):
        self.graph = graph
        self.device = device
        self.per_neuron = per_neuron
        self.shapes = graph.shapes()
        self.order = graph.topo_order()
        self.category = categorize(graph)
        self.ssa_prefixes = tuple(f"{k}." for k in graph.metadata.get("ssa", {}))
        self.maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self.order:
            node = graph.nodes[name]
            if node.is_synapse:
                in_shape = self.shapes[graph.in_edges(name)[0].src]
                self.maps[name] = fanout_maps(node, in_shape, self.shapes[name], device)

    def empty(self) -> Activity:
        g = self.graph
        syn, neu = {}, {}
        for name in self.order:
            node = g.nodes[name]
            if node.is_synapse:
                edges = g.in_edges(name)
                in_shape = tuple(self.shapes[edges[0].src])
                struct, eff = self.maps[name]
                syn[name] = SynapseCount(
                    name, node.source, node.kind, self.category.get(name, "other"), in_shape,
                    tuple(self.shapes[name]), max(1, len(g.out_edges(name))), int(struct.sum().item()),
                    int(eff.sum().item()),
                    streams=[StreamCount(e.src, _origin(g, e.src), positions=math.prod(in_shape)) for e in edges])
            elif node.is_neuron:
                neu[name] = NeuronCount(name, node.source, node.kind, self.category.get(name, "other"),
                                        tuple(self.shapes[name]), node.emits_events)
        return Activity(syn, neu, 0, 0, self.ssa_prefixes,
                        tuple(n for n in self.order if n in syn or n in neu))

    def _stream_stats(self, rec: Records, src: str, cache: dict) -> dict:
        """Per input position: event counts and |value| sums over steps and samples; the value kind."""
        if src in cache:
            return cache[src]
        x = rec.get(src)
        S, B = int(x.shape[0]), int(x.shape[1])
        flat = x.reshape(S * B, -1)
        origin = self.graph.nodes[_origin(self.graph, src)]
        event_counts = (isinstance(origin, ir.Input) and self.graph.metadata.get("input_per_step")
                        and not bool((flat < 0).any()) and bool((flat == torch.round(flat)).all()))
        # 0/1 spikes, or event frames (a count of k at a pixel is k input spikes): the values are the events
        if event_counts or (origin.spiking and not bool((flat.ne(0) & flat.ne(1)).any())):
            counts = flat.sum(0).to(torch.float64).reshape(x.shape[2:])
            values = counts
            events = int(counts.sum().item())
            kind = "spikes" if events else "none"
        else:
            counts = flat.ne(0).sum(0).to(torch.float64).reshape(x.shape[2:])
            values = flat.abs().sum(0).to(torch.float64).reshape(x.shape[2:])
            events = int(counts.sum().item())
            kind = value_kind(x)
        cache[src] = st = {"x": x, "counts": counts, "values": values, "events": events, "kind": kind,
                           "S": S, "B": B}
        return st

    def __call__(self, records: dict[str, torch.Tensor]) -> Activity:
        rec = records if isinstance(records, Records) else Records(self.graph, records)
        act = self.empty()
        S = B = None
        cache: dict = {}
        for name in self.order:
            node = self.graph.nodes[name]
            if node.is_synapse:
                sc = act.synapses[name]
                struct, eff = self.maps[name]
                mult = sc.multiplicity
                for st in sc.streams:
                    d = self._stream_stats(rec, st.src, cache)
                    S, B = d["S"], d["B"]
                    c = d["counts"]
                    st.kind = d["kind"]
                    st.events = d["events"]
                    st.value_sum = exact_sum(d["values"])
                    st.synaptic_events = int(torch.round((c * struct).sum()).item()) * mult
                    st.effective_ops = int(torch.round((c * eff).sum()).item()) * mult
                    st.value_ops = exact_sum(d["values"] * eff).times(mult)
                sc.steps, sc.samples = int(S), int(B)
                if len(sc.streams) == 1:
                    d = cache[sc.streams[0].src]
                    sc.combined_kind, ccounts, cvalues = d["kind"], d["counts"], d["values"]
                else:
                    total = None
                    for st in sc.streams:
                        x = cache[st.src]["x"]
                        total = x if total is None else total + x
                    sc.combined_kind = value_kind(total)
                    tf = total.reshape(-1, *total.shape[2:])
                    ccounts = tf.ne(0).sum(0).to(torch.float64)
                    cvalues = tf.abs().sum(0).to(torch.float64)
                sc.combined_events = int(ccounts.sum().item())
                sc.combined_value_sum = exact_sum(cvalues)
                sc.combined_ops = int(torch.round((ccounts * eff).sum()).item()) * mult
            elif node.is_neuron:
                nc = act.neurons[name]
                active = None
                for port in node.ports:
                    a = rec.port_sum(name, port) != 0
                    active = a if active is None else active | a
                S, B = active.shape[:2]
                if node.emits_events:
                    s = rec.get(name) != 0
                    nc.spikes = int(torch.count_nonzero(s).item())
                    if self.per_neuron:
                        act.spike_counts[name] = _per_neuron(s)
                    active |= s
                nc.steps, nc.samples = int(S), int(B)
                nc.updates = nc.neurons * int(S) * int(B)
                nc.active_updates = int(torch.count_nonzero(active).item())
        if self.per_neuron:
            for name in self.graph.inputs():
                act.spike_counts[name] = _per_neuron(rec.get(name) != 0)
        act.samples = int(B or 0)
        act.steps = int(S or 0)
        return act


def count_activity(graph: ir.Graph, records: dict[str, torch.Tensor], device="cpu") -> Activity:
    """The activity of one record (one batch). For many batches build one ActivityCounter and `add` results."""
    return ActivityCounter(graph, device)(records)


def needed_records(graph: ir.Graph) -> list[str]:
    """Nodes an engine must record for counting: the inputs and every stateful node (LIF, Integrator, Delay);
    all stateless nodes can be recomputed, but recording them too saves that work."""
    return [n for n, node in graph.nodes.items() if not isinstance(node, ir.Output)]


def activity_from_simulator(graph: ir.Graph, images: torch.Tensor, device="cpu", numeric: str = "float") -> Activity:
    """Counts from the simulator's records (Engine(graph, numeric).run(images, record='all'))."""
    res = Engine(graph, numeric, device=device).run(images, record="all")
    return ActivityCounter(graph, device)(res.records)


def activity_from_reference(model, graph: ir.Graph, images: torch.Tensor) -> Activity:
    """Counts from the PyTorch reference's recorded spikes (analysis.reference.record_reference) for the same images;
    the synapse layers and stateless SSA neurons are recomputed from those spikes."""
    _, spikes = record_reference(model, images)
    return ActivityCounter(graph)(reference_records(graph, images, spikes, model.T))
