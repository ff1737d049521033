"""The typed spiking intermediate representation.

A graph of named nodes. Every node keeps `source`, the path of the PyTorch module it came from, so one layer has
one name from the model through NIR and Lava to every report. Edges carry no weights: several edges into the
same port of a node are summed (as in NIR). All shapes are per sample and per time step: images are (C, H, W),
token tensors are (C, L) with the token axis last (the layout of NIR's Conv1d).

Semantics are logical time: every edge delivers within the same step. Hardware timing (one step per synapse
hop) is made explicit by the `Delay` nodes that the Loihi timing pass inserts.

Every node kind says which groups it belongs to (class attributes of `Node`, read as `node.is_neuron` etc.), so
back ends and analyses ask the node instead of keeping their own lists of types:
- `is_synapse`: a constant-weight linear map (Conv2d, Conv1d, SumPool2d, AxisSynapse).
- `is_neuron`: a neuron layer, float or Loihi (LIF, Threshold, Integrator, LoihiLIF, GradedNeuron, GradedRelu,
  ProductNeuron).
- `is_population`: a Loihi 2 neuron population, what a core holds (LoihiLIF, GradedNeuron, GradedRelu,
  ProductNeuron).
- `is_graded`: emits graded spikes, a value per event (GradedNeuron, GradedRelu, ProductNeuron).
- `is_readout`: the head's accumulator, whose output is its state (membrane value), never events: the float
  graph's Integrator, or the LoihiLIF marked `readout` that replaces it in a quantised graph (the quantiser turns
  every Integrator into one). One meaning for every user: the activity count (its synapses are the head, it
  emits no events) and the Loihi runner (its v is read, its spikes never are).
- `emits_events`: its non-zero outputs are events sent to its targets: spikes of a spiking neuron that is not
  the readout, or graded spikes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


class IRValidationError(ValueError):
    pass


@dataclass(eq=False)
class Node:
    name: str
    source: str = ""
    ports: ClassVar[tuple[str, ...]] = ("in",)
    stateful: ClassVar[bool] = False
    spiking: ClassVar[bool] = False  # emits 0/1 only
    is_synapse: ClassVar[bool] = False  # a constant-weight linear map (no state, no threshold)
    is_neuron: ClassVar[bool] = False
    is_population: ClassVar[bool] = False  # a Loihi 2 neuron population
    is_graded: ClassVar[bool] = False  # emits graded spikes

    @property
    def kind(self) -> str:
        return type(self).__name__

    @property
    def is_readout(self) -> bool:
        """The head's accumulator: its output is its state, not events (see the module docstring)."""
        return False

    @property
    def emits_events(self) -> bool:
        return (self.spiking and not self.is_readout) or self.is_graded

    def out_shape(self, in_shapes: dict[str, tuple]) -> tuple:
        return in_shapes["in"]

    def params(self) -> dict:
        """Scalar parameters for reports and artifacts (no arrays)."""
        out = {}
        for k, v in vars(self).items():
            if k in ("name", "source") or isinstance(v, np.ndarray):
                continue
            out[k] = v
        return out


# ---------------------------------------------------------------- sources and sinks
@dataclass(eq=False)
class Input(Node):
    shape: tuple = ()
    ports: ClassVar[tuple[str, ...]] = ()

    def out_shape(self, in_shapes):
        return tuple(self.shape)


@dataclass(eq=False)
class BiasSource(Node):
    """One neuron that fires at every step (on chip a LIF whose bias reaches its threshold): a constant input, through
    synapses, for populations that have no bias of their own (lava's graded neurons). Output (1, 1, 1): `payload`
    (1 in a float graph; the quantiser sends a larger graded payload so that small weights reach large biases)."""
    payload: float = 1.0
    ports: ClassVar[tuple[str, ...]] = ()
    spiking: ClassVar[bool] = True  # (a source, as the Input: not placed on a core, sent from outside)

    def out_shape(self, in_shapes):
        return (1, 1, 1)


@dataclass(eq=False)
class Output(Node):
    """Reads its input, flattened, at the last time step (logits)."""

    def out_shape(self, in_shapes):
        return (math.prod(in_shapes["in"]),)


@dataclass(eq=False)
class InputNorm(Node):
    """The model's own input normalisation, per channel c: y = (x * 255 - mean255[c]) / std255[c], in this order
    and in the run's dtype (Spikformer.normalize_input: timm's PrefetchLoader arithmetic on x = pixel / 255).
    `mean255`, `std255`: the model's float32 constants (255 mean, 255 std), kept as plain floats so that every
    artifact records them exactly. It has no module; its source is INPUT_NORM_SOURCE."""
    mean255: tuple = ()
    std255: tuple = ()

    def out_shape(self, in_shapes):
        shape = in_shapes["in"]
        if len(self.mean255) != shape[0] or len(self.std255) != shape[0]:
            raise IRValidationError(f"{self.name}: {len(self.mean255)} means and {len(self.std255)} stds for an "
                                    f"input of {shape[0]} channels")
        if not all(math.isfinite(m) for m in self.mean255) or not all(math.isfinite(s) and s > 0
                                                                      for s in self.std255):
            raise IRValidationError(f"{self.name}: mean255 {list(self.mean255)} / std255 {list(self.std255)} "
                                    f"must be finite with std255 > 0")
        return shape


INPUT_NORM_SOURCE = "input_norm"  # the name (and source) of the InputNorm node: Spikformer.normalize_input
# Graph.metadata["architecture"] of a Spike-driven Transformer (set by the frontend; the passes and the quantiser
# treat its stream differently); absent for Spikformer
ARCHITECTURE_SDT = "spike-driven-transformer"


# ---------------------------------------------------------------- synapses (constant weights)
def _check_bias(name: str, what: str, bias, out_shape: tuple) -> None:
    """A bias is per output channel [C] or per neuron [*out_shape] (a folded input normalisation)."""
    if bias is not None and tuple(np.shape(bias)) not in ((out_shape[0],), tuple(out_shape)):
        raise IRValidationError(f"{name}: {what} of shape {tuple(np.shape(bias))} is neither per channel "
                                f"({out_shape[0]},) nor per neuron {tuple(out_shape)}")


def _conv_out(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@dataclass(eq=False)
class Conv2d(Node):
    weight: np.ndarray = None  # [out, in/groups, kh, kw]
    bias: np.ndarray | None = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    weight_exp: int = 0  # quantized graphs: result scaled by 2**weight_exp (Loihi weight exponent)
    is_synapse: ClassVar[bool] = True

    def out_shape(self, in_shapes):
        c, h, w = in_shapes["in"]
        if c != self.weight.shape[1] * self.groups:
            raise IRValidationError(f"{self.name}: input has {c} channels, weight expects "
                                    f"{self.weight.shape[1] * self.groups}")
        kh, kw = self.weight.shape[2:]
        out = (self.weight.shape[0], _conv_out(h, kh, self.stride[0], self.padding[0]),
               _conv_out(w, kw, self.stride[1], self.padding[1]))
        _check_bias(self.name, "bias", self.bias, out)
        return out


@dataclass(eq=False)
class Conv1d(Node):
    """Over token tensors (C, L). A Linear layer applied to every token is a Conv1d with kernel 1."""
    weight: np.ndarray = None  # [out, in/groups, k]
    bias: np.ndarray | None = None
    stride: int = 1
    padding: int = 0
    groups: int = 1
    weight_exp: int = 0  # quantized graphs: result scaled by 2**weight_exp (Loihi weight exponent)
    is_synapse: ClassVar[bool] = True

    def out_shape(self, in_shapes):
        c, n = in_shapes["in"]
        if c != self.weight.shape[1] * self.groups:
            raise IRValidationError(f"{self.name}: input has {c} channels, weight expects "
                                    f"{self.weight.shape[1] * self.groups}")
        return (self.weight.shape[0], _conv_out(n, self.weight.shape[2], self.stride, self.padding))


@dataclass(eq=False)
class SumPool2d(Node):
    kernel: tuple = (3, 3)
    stride: tuple = (2, 2)
    padding: tuple = (1, 1)
    weight: float = 1.0  # every tap has this weight
    weight_exp: int = 0
    is_synapse: ClassVar[bool] = True

    def out_shape(self, in_shapes):
        c, h, w = in_shapes["in"]
        return (c, _conv_out(h, self.kernel[0], self.stride[0], self.padding[0]),
                _conv_out(w, self.kernel[1], self.stride[1], self.padding[1]))


@dataclass(eq=False)
class AxisSynapse(Node):
    """A weight-sharing broadcast/sum synapse between named-axis views of token tensors.

    The input (C, L) is viewed with axes `in_axes` (row-major, the last axis is the token axis), the output
    with `out_axes`. out = weight * (sum over input axes absent from the output), broadcast over output axes
    absent from the input. Every synapse has the same weight, so the connectivity is stored as two short
    tuples instead of a (neurons x inputs) matrix. An axis of size 1 named "one" stands for "no token axis".
    """
    in_axes: tuple = ()
    out_axes: tuple = ()
    sizes: dict = field(default_factory=dict)
    weight: float = 1.0
    weight_exp: int = 0
    is_synapse: ClassVar[bool] = True

    def _flat(self, axes):
        return (math.prod(self.sizes[a] for a in axes[:-1]), self.sizes[axes[-1]])

    def out_shape(self, in_shapes):
        if tuple(in_shapes["in"]) != self._flat(self.in_axes):
            raise IRValidationError(f"{self.name}: input shape {in_shapes['in']} does not match axes "
                                    f"{self.in_axes} {self._flat(self.in_axes)}")
        return self._flat(self.out_axes)

    @property
    def fan_out(self) -> int:
        return math.prod(self.sizes[a] for a in self.out_axes if a not in self.in_axes)

    @property
    def fan_in(self) -> int:
        return math.prod(self.sizes[a] for a in self.in_axes if a not in self.out_axes)


@dataclass(eq=False)
class Flatten(Node):
    """(C, H, W) -> (C, H*W): image to tokens (token n = h*W + w, as `x.flatten(-2)` upstream)."""

    def out_shape(self, in_shapes):
        c, h, w = in_shapes["in"]
        return (c, h * w)


@dataclass(eq=False)
class Reshape(Node):
    """A row-major view of its input as `shape` (no computation): tokens (C, H*W) as the image (C, H, W), or the
    heads' channels (h*d, N) as (h, d, N) so that a 2-D window can slide over (d, N), and back."""
    shape: tuple = ()

    def out_shape(self, in_shapes):
        if math.prod(in_shapes["in"]) != math.prod(self.shape):
            raise IRValidationError(f"{self.name}: cannot view {in_shapes['in']} as {tuple(self.shape)}")
        return tuple(self.shape)


@dataclass(eq=False)
class Delay(Node):
    """Holds its input for `steps` time steps (zeros during pipeline fill)."""
    steps: int = 1
    stateful: ClassVar[bool] = True


# ---------------------------------------------------------------- neurons
@dataclass(eq=False)
class LIF(Node):
    """SpikingJelly LIF (decay_input=True, hard reset): H = V + (X - V)/tau; S = H >= v_threshold;
    V = v_reset where S else H."""
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float = 0.0
    stateful: ClassVar[bool] = True
    spiking: ClassVar[bool] = True
    is_neuron: ClassVar[bool] = True


@dataclass(eq=False)
class Threshold(Node):
    """Memoryless threshold neuron: S = X >= threshold (ties fire, as the reference). No state."""
    threshold: float = 0.5
    spiking: ClassVar[bool] = True
    is_neuron: ClassVar[bool] = True


@dataclass(eq=False)
class GradedNeuron(Node):
    """Memoryless graded-spike neuron (Loihi 2 graded spikes; lava GradedVec): emits its input x as the spike
    payload where |x| > vth, else nothing."""
    vth: float = 0.0
    is_neuron: ClassVar[bool] = True
    is_population: ClassVar[bool] = True
    is_graded: ClassVar[bool] = True


@dataclass(eq=False)
class GradedRelu(Node):
    """Memoryless graded ReLU (Loihi 2 graded spikes; lava GradedReluVec): emits its input x as the spike payload
    where x > vth, else nothing. The max of graded values is built from it: max(a, b) = b + relu(a - b)."""
    vth: float = 0.0
    is_neuron: ClassVar[bool] = True
    is_population: ClassVar[bool] = True
    is_graded: ClassVar[bool] = True


@dataclass(eq=False)
class ProductNeuron(Node):
    """Memoryless product of two graded inputs (lava ProdNeuron): v = (in1 * in2) >> exp; emits v where
    |v| > vth."""
    exp: int = 0
    vth: float = 0.0
    ports: ClassVar[tuple[str, ...]] = ("in1", "in2")
    is_neuron: ClassVar[bool] = True
    is_population: ClassVar[bool] = True
    is_graded: ClassVar[bool] = True

    def out_shape(self, in_shapes):
        if in_shapes["in1"] != in_shapes["in2"]:
            raise IRValidationError(f"{self.name}: in1 {in_shapes['in1']} and in2 {in_shapes['in2']} differ")
        return in_shapes["in1"]


@dataclass(eq=False)
class LoihiLIF(Node):
    """Loihi's fixed-point CUBA LIF (lava PyLifModelBitAcc), integers only:
    u = wrap24(trunc0(u (4096 - du - 1) / 4096) + (a << 6));
    v = clip24(trunc0(v (4096 - dv) / 4096) + u + (bias_mant << bias_exp)); s = v > (vth << 6); v = 0 where s.
    `readout` neurons are never expected to fire; their v is the output."""
    du: int = 4095
    dv: int = 0
    vth: int = 1
    bias_mant: np.ndarray | None = None  # per channel [C] (broadcast over positions), per neuron [*shape], or None
    bias_exp: int = 0
    readout: bool = False
    input_delay: int = 0  # hardware timing: its inputs are delayed this many steps beyond the hop (relays)
    stateful: ClassVar[bool] = True
    spiking: ClassVar[bool] = True
    is_neuron: ClassVar[bool] = True
    is_population: ClassVar[bool] = True

    @property
    def is_readout(self) -> bool:
        return bool(self.readout)

    def out_shape(self, in_shapes):
        _check_bias(self.name, "bias_mant", self.bias_mant, in_shapes["in"])
        return in_shapes["in"]


@dataclass(eq=False)
class Integrator(Node):
    """Non-leaky, non-spiking accumulator: V[t] = V[t-1] + X[t]; its output is V (the readout)."""
    stateful: ClassVar[bool] = True
    is_neuron: ClassVar[bool] = True

    @property
    def is_readout(self) -> bool:
        return True


# ---------------------------------------------------------------- high-level nodes (removed by passes)
@dataclass(eq=False)
class BatchNorm(Node):
    weight: np.ndarray = None
    bias: np.ndarray = None
    running_mean: np.ndarray = None
    running_var: np.ndarray = None
    eps: float = 1e-5


@dataclass(eq=False)
class MaxPool2d(Node):
    kernel: tuple = (3, 3)
    stride: tuple = (2, 2)
    padding: tuple = (1, 1)

    def out_shape(self, in_shapes):
        return SumPool2d.out_shape(self, in_shapes)  # same geometry


@dataclass(eq=False)
class Add(Node):
    """Sum of its inputs (residual connection). Several edges into `in` are summed anyway; this node only
    makes the residual visible until the residual pass wires the streams to their consumers."""


@dataclass(eq=False)
class SSAProduct(Node):
    """Per time step and head: (Q K^T V) * scale for binary q, k, v of shape (D, N); output (D, N)."""
    num_heads: int = 1
    scale: float = 0.125
    product_order: str = "qk_first"
    ports: ClassVar[tuple[str, ...]] = ("q", "k", "v")

    def out_shape(self, in_shapes):
        if not (in_shapes["q"] == in_shapes["k"] == in_shapes["v"]):
            raise IRValidationError(f"{self.name}: q, k, v shapes differ: {in_shapes}")
        return in_shapes["q"]


@dataclass(eq=False)
class TokenTimeMeanLinear(Node):
    """The classification head: logits = W mean_t(mean_n x) + b, read at the last step."""
    weight: np.ndarray = None  # [classes, D]
    bias: np.ndarray = None
    T: int = 1
    stateful: ClassVar[bool] = True

    def out_shape(self, in_shapes):
        return (self.weight.shape[0],)


NODE_TYPES = {cls.__name__: cls for cls in (
    Input, BiasSource, InputNorm, Output, Conv2d, Conv1d, SumPool2d, AxisSynapse, Flatten, Reshape, Delay, LIF, Threshold, Integrator,
    LoihiLIF, GradedNeuron, GradedRelu, ProductNeuron, BatchNorm, MaxPool2d, Add, SSAProduct, TokenTimeMeanLinear)}
VIEW_TYPES = (Flatten, Reshape)  # layout only: the same values in the same row-major order, another shape
HIGH_LEVEL_TYPES = (BatchNorm, MaxPool2d, Add, SSAProduct, TokenTimeMeanLinear)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    port: str = "in"


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    # ------------------------------------------------------------ building
    def add(self, node: Node, *inputs: str, port: str = "in") -> str:
        if node.name in self.nodes:
            raise IRValidationError(f"duplicate node name {node.name!r}")
        self.nodes[node.name] = node
        for src in inputs:
            self.connect(src, node.name, port)
        return node.name

    def connect(self, src: str, dst: str, port: str = "in") -> None:
        self.edges.append(Edge(src, dst, port))

    def remove(self, name: str) -> None:
        del self.nodes[name]
        self.edges = [e for e in self.edges if e.src != name and e.dst != name]

    def redirect_outputs(self, old: str, new: str) -> None:
        """Every edge leaving `old` leaves `new` instead."""
        self.edges = [Edge(new, e.dst, e.port) if e.src == old else e for e in self.edges]

    def unique_name(self, base: str) -> str:
        if base not in self.nodes:
            return base
        i = 1
        while f"{base}.{i}" in self.nodes:
            i += 1
        return f"{base}.{i}"

    # ------------------------------------------------------------ queries
    def in_edges(self, name: str, port: str | None = None) -> list[Edge]:
        return [e for e in self.edges if e.dst == name and (port is None or e.port == port)]

    def out_edges(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.src == name]

    def view_origin(self, name: str) -> str:
        """The node whose values `name` shows: itself, or, through layout views (Flatten, Reshape: row-major,
        the same flat indices), the node they view."""
        while isinstance(self.nodes[name], VIEW_TYPES):
            name = self.in_edges(name)[0].src
        return name

    def inputs(self) -> list[str]:
        return [n for n, node in self.nodes.items() if isinstance(node, Input)]

    def outputs(self) -> list[str]:
        return [n for n, node in self.nodes.items() if isinstance(node, Output)]

    def of_type(self, *types) -> list[Node]:
        return [n for n in self.nodes.values() if isinstance(n, types)]

    def topo_order(self) -> list[str]:
        indeg = {n: 0 for n in self.nodes}
        succ: dict[str, list[str]] = {n: [] for n in self.nodes}
        for e in self.edges:
            indeg[e.dst] += 1
            succ[e.src].append(e.dst)
        ready = [n for n in self.nodes if indeg[n] == 0]
        order = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for m in succ[n]:
                indeg[m] -= 1
                if indeg[m] == 0:
                    ready.append(m)
        if len(order) != len(self.nodes):
            cyc = sorted(n for n in self.nodes if indeg[n] > 0)
            raise IRValidationError(f"graph has a cycle through {cyc[:5]}")
        return order

    def shapes(self) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for name in self.topo_order():
            node = self.nodes[name]
            in_shapes = {}
            for port in node.ports:
                srcs = [out[e.src] for e in self.in_edges(name, port)]
                if not srcs:
                    raise IRValidationError(f"{name} ({node.kind}, from {node.source or '?'}): port "
                                            f"{port!r} has no input")
                if any(tuple(s) != tuple(srcs[0]) for s in srcs):
                    raise IRValidationError(f"{name}: inputs summed into port {port!r} have different "
                                            f"shapes {srcs}")
                in_shapes[port] = tuple(srcs[0])
            try:
                out[name] = tuple(node.out_shape(in_shapes))
            except IRValidationError:
                raise
            except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError, AttributeError,
                    OverflowError) as e:  # parameters of the wrong kind (e.g. read from a damaged file)
                raise IRValidationError(f"{name} ({node.kind}, from {node.source or '?'}): cannot compute its "
                                        f"output shape ({type(e).__name__}: {e})") from None
        return out

    def validate(self) -> dict[str, tuple]:
        for e in self.edges:
            if e.src not in self.nodes or e.dst not in self.nodes:
                raise IRValidationError(f"edge {e.src} -> {e.dst} names an unknown node")
            if e.port not in self.nodes[e.dst].ports:
                raise IRValidationError(f"edge {e.src} -> {e.dst} uses port {e.port!r}; "
                                        f"{self.nodes[e.dst].kind} has {self.nodes[e.dst].ports}")
        for name, node in self.nodes.items():
            for k, v in vars(node).items():
                if isinstance(v, np.ndarray) and not np.all(np.isfinite(v)):
                    raise IRValidationError(f"{name} (from {node.source or '?'}): {k} has "
                                            f"{int(np.sum(~np.isfinite(v)))} non-finite values")
        if not self.outputs():
            raise IRValidationError("graph has no Output node")
        return self.shapes()

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes.values():
            counts[n.kind] = counts.get(n.kind, 0) + 1
        return counts

    def copy(self) -> "Graph":
        import copy
        g = Graph(dict(self.nodes), list(self.edges), copy.deepcopy(self.metadata))
        g.nodes = {k: copy.copy(v) for k, v in self.nodes.items()}
        return g
