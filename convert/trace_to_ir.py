"""A traced model (convert/tracing.py) -> the typed IR: every operation of the model's forward is read, in order.

Layers become IR nodes named by their module path (conv, BatchNorm, max-pool, neuron); the model's SSA product
(a leaf function) becomes SSAProduct; a residual add becomes Add; the means over tokens and time that feed the
classifier become the head; the input normalisation (a leaf function) becomes InputNorm. The Spike-driven
Transformer's operations are read too (docs/sdt_lowering.md): a product of two spike tensors becomes an AND
neuron, a sum over the tokens of heads an AxisSynapse, a neuron over the token mean an AxisSynapse (1/N) into a
neuron over one token, a per-step classifier averaged over time the head, Erode (nn.MaxPool3d) an OR over a
Reshape view. Everything else in a
forward moves data without computing (reshape, view, flatten, permute, transpose, contiguous, unsqueeze and the
repeat over time of direct encoding): it is followed, not translated, by tracking what each tensor dimension
holds. A dimension is a tuple of *atoms*, (label, size): T (time), B (batch), C (channels), H, W (positions;
tokens are H then W), and the parts of a split atom ("C/0", "C/1": a reshape that splits channels into heads, h
outer and d inner). So every layer can check that its input is laid out as the IR node it becomes reads it (a
conv over [T*B, C, H, W], a token-wise synapse over channels, a neuron over [T, B, ...]), and anything the IR
cannot express is refused in one line naming the module and the operation (UntranslatableError)."""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from . import ir
from .tracing import Trace, is_neuron_module


class UntranslatableError(ValueError):
    """An operation of the traced model that the IR cannot express (names the module and the operation)."""


@dataclass
class Val:
    """What a traced tensor is: the IR node whose output it holds (None: the raw input before it has one), its
    dimensions as atoms, the IR form of that node's output ("spatial" (C, H, W) or "tokens" (C, N)) and the
    means already taken over it (the classifier's input: "tokens", "time")."""
    ir: str | None
    dims: list
    form: str
    reduced: tuple = ()

    def labels(self) -> list[tuple]:
        return [tuple(a[0] for a in d) for d in self.dims]


def _size(d: tuple) -> int:
    return math.prod(a[1] for a in d)


def _merge(atoms: list) -> tuple:
    """Consecutive parts X/0, X/1 of one split atom, in that order, become X again."""
    out = list(atoms)
    changed = True
    while changed:
        changed = False
        for i in range(len(out) - 1):
            (a, na), (b, nb) = out[i], out[i + 1]
            if a.endswith("/0") and b == a[:-2] + "/1":
                out[i:i + 2] = [(a[:-2], na * nb)]
                changed = True
                break
    return tuple(out)


def regroup(dims: list, sizes: list[int], where: str) -> list:
    """The dimensions of a reshape to `sizes` (one -1 allowed): the atoms, in order, grouped by the new sizes;
    an atom larger than what a dimension still needs is split (outer part first) when the size divides it. A
    size-1 atom goes to the first dimension that can take it, except a W of 1 after its H (tokens stay whole)."""
    flat = [a for d in dims for a in d]
    total = math.prod(a[1] for a in flat)
    sizes = list(sizes)
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = total // known
    if len(sizes) == len(flat) and all(a[1] == s for a, s in zip(flat, sizes)):
        return [(a,) for a in flat]  # one atom per dimension (the unambiguous reading where sizes are 1)
    out, i = [], 0
    for s in sizes:
        group, have = [], 1
        while have < s:
            if i >= len(flat):
                raise UntranslatableError(f"{where}: reshape to {sizes} does not regroup the dimensions {dims}")
            label, n = flat[i]
            need = s // have
            if n <= need and need % n == 0:
                group.append((label, n))
                have *= n
                i += 1
            elif n > need and n % need == 0:
                group.append((label + "/0", need))
                flat[i] = (label + "/1", n // need)
                have *= need
            else:
                raise UntranslatableError(f"{where}: reshape to {sizes} splits {label} ({n}) unevenly")
        if s == 1 and i < len(flat) and flat[i][1] == 1:
            group.append(flat[i])
            i += 1
        while group and group[-1][0] == "H" and i < len(flat) and flat[i] == ("W", 1):  # a one-wide grid's W
            group.append(flat[i])                                                        # stays with its H
            i += 1
        out.append(_merge(group))
    if any(a[1] != 1 for a in flat[i:]):
        raise UntranslatableError(f"{where}: reshape to {sizes} leaves atoms {flat[i:]}")
    return out


def _dim(dims: list, d: int) -> int:
    return d + len(dims) if d < 0 else d


# ------------------------------------------------------------------------------- the data-moving operations
def _flatten(v: Val, start: int = 0, end: int = -1) -> Val:
    s, e = _dim(v.dims, start), _dim(v.dims, end)
    merged = _merge([a for d in v.dims[s:e + 1] for a in d])
    return Val(v.ir, v.dims[:s] + [merged] + v.dims[e + 1:], v.form, v.reduced)


def _permute(v: Val, *order) -> Val:
    order = order[0] if len(order) == 1 and isinstance(order[0], (tuple, list)) else order
    return Val(v.ir, [v.dims[_dim(v.dims, o)] for o in order], v.form, v.reduced)


def _transpose(v: Val, a: int, b: int) -> Val:
    dims = list(v.dims)
    a, b = _dim(dims, a), _dim(dims, b)
    dims[a], dims[b] = dims[b], dims[a]
    return Val(v.ir, dims, v.form, v.reduced)


def _unsqueeze(v: Val, d: int) -> Val:
    d = d + len(v.dims) + 1 if d < 0 else d
    return Val(v.ir, v.dims[:d] + [()] + v.dims[d:], v.form, v.reduced)


def _same(v: Val, *args, **kwargs) -> Val:
    return v


MOVES = {"flatten": _flatten, "permute": _permute, "transpose": _transpose, "unsqueeze": _unsqueeze,
         "contiguous": _same, "clone": _same, "float": _same, "double": _same, "to": _same}


class Translator:
    def __init__(self, trace: Trace, g: ir.Graph):
        self.trace, self.g = trace, g
        self.vals: dict[fx.Node, object] = {}
        self.modules = dict(trace.root.named_modules())
        self.tensors = {**dict(trace.root.named_parameters()), **dict(trace.root.named_buffers())}

    # ------------------------------------------------------------------ helpers
    def where(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack") or {}
        return next(reversed(stack.values()))[0] if stack else ""

    def fail(self, node: fx.Node, what: str):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        raise UntranslatableError(f"module {self.where(node) or '<root>'!r}: {node.op} {name}: {what}")

    def arg(self, a):
        return fx.node.map_aggregate(a, lambda x: self.vals[x] if isinstance(x, fx.Node) else x)

    def expect(self, node: fx.Node, v, labels: list, what: str) -> Val:
        if not isinstance(v, Val) or v.reduced or v.labels() != labels:
            got = v.labels() if isinstance(v, Val) else type(v).__name__
            self.fail(node, f"{what} expects its input laid out as {labels}, got {got}")
        return v

    def out(self, node: fx.Node, v: Val, labels: list) -> Val:
        """`labels` with the sizes of the node's traced output."""
        shape = tuple(self.trace.values[node].shape)
        if len(shape) != len(labels):
            self.fail(node, f"output of rank {len(shape)}, expected {len(labels)}")
        dims = []
        for lab, n in zip(labels, shape):
            if len(lab) == 1:
                dims.append(((lab[0], n),))
            else:  # a merged dimension keeps its atoms' sizes (checked against the traced size)
                old = next(d for d in v.dims if tuple(a[0] for a in d) == lab)
                if _size(old) != n:
                    self.fail(node, f"dimension {lab} changed size")
                dims.append(old)
        return Val(node.target if node.op == "call_module" else v.ir, dims, v.form)

    # ------------------------------------------------------------------ the graph
    def run(self) -> fx.Node:
        for node in self.trace.graph.nodes:
            if node.op == "placeholder":
                self.vals[node] = self.placeholder(node)
            elif node.op == "get_attr":
                self.vals[node] = self.tensors.get(node.target, node.target)
            elif node.op == "call_module":
                self.vals[node] = self.layer(node, self.modules[node.target], *self.arg(node.args))
            elif node.op in ("call_function", "call_method"):
                self.vals[node] = self.function(node)
            elif node.op == "output":
                return self.output(node)
        raise UntranslatableError("the traced model has no output")

    def placeholder(self, node: fx.Node) -> Val:
        shape = tuple(self.trace.values[node].shape)
        if len(shape) == 4:
            labels = ("B", "C", "H", "W")
        elif len(shape) == 5:
            labels = ("B", "T", "C", "H", "W")
            self.g.metadata["input_per_step"] = True  # frames [B, T, C, H, W]: frame t drives step t
        else:
            self.fail(node, f"input of shape {list(shape)}; images [B, C, H, W] or frames [B, T, C, H, W]")
        c, h, w = shape[-3:]
        self.g.add(ir.Input("input", "input", shape=(c, h, w)))
        return Val("input", [((lab, n),) for lab, n in zip(labels, shape)], "spatial")

    def output(self, node: fx.Node) -> fx.Node:
        v = self.arg(node.args[0])
        if not isinstance(v, Val) or not isinstance(self.g.nodes.get(v.ir), ir.TokenTimeMeanLinear) \
                or v.form != "logits":
            self.fail(node, "the model's output must be its classifier over the mean of tokens and time")
        self.g.add(ir.Output("output", v.ir), v.ir)
        return node

    # ------------------------------------------------------------------ layers
    def layer(self, node: fx.Node, m: nn.Module, x, *rest) -> Val:
        path = node.target
        TB, C, H, W = ("T", "B"), ("C",), ("H",), ("W",)
        if path in self.g.nodes and not isinstance(m, nn.MaxPool3d):  # (Erode's nodes are named by their input)
            self.fail(node, "the module is called a second time; the IR has one node per module, named by its path")
        if is_neuron_module(m) and isinstance(x, Val) and x.reduced == ("tokens",):
            return self.token_mean_neuron(node, m, x)
        if is_neuron_module(m):
            v = self.expect(node, x, [("T",), ("B",), *x.labels()[2:]] if isinstance(x, Val) else [], "a neuron")
            self.g.add(neuron_node(path, m), v.ir)
            return Val(path, v.dims, v.form)
        if isinstance(m, nn.Conv2d) and isinstance(x, Val) and x.form == "tokens":
            self.expect(node, x, [TB, C, H, W], "a token-wise 1x1 Conv2d")
            self.g.add(token_synapse(path, m), x.ir)
            return self.out(node, x, [TB, C, H, W])
        if isinstance(m, nn.Conv2d):
            self.expect(node, x, [TB, C, H, W], "a Conv2d")
            if x.form != "spatial":
                self.fail(node, "a Conv2d over tokens")
            check_conv2d(path, m)
            self.g.add(ir.Conv2d(path, path, weight=_np(m.weight), bias=_np_or_none(m.bias), stride=m.stride,
                                 padding=m.padding, groups=m.groups), x.ir)
            return self.out(node, x, [TB, C, H, W])
        if isinstance(m, nn.Conv1d):
            self.expect(node, x, [TB, C, ("H", "W")], "a kernel-1 Conv1d over tokens")
            self.g.add(token_synapse(path, m), x.ir)
            return self.out(node, x, [TB, C, ("H", "W")])
        if isinstance(m, nn.Linear):
            if isinstance(x, Val) and x.reduced:
                return self.head(node, m, x)
            if isinstance(x, Val) and x.labels() == [("T",), ("B",), ("C",)]:
                return self.per_step_head(node, m, x)
            self.expect(node, x, [TB, ("H", "W"), C], "a token-wise Linear")
            self.g.add(token_synapse(path, m), x.ir)
            return self.out(node, x, [TB, ("H", "W"), C])
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not isinstance(x, Val) or x.reduced or len(x.dims) < 2 or x.labels()[:2] != [TB, C]:
                self.fail(node, f"a BatchNorm expects [T*B, C, ...], got {x.labels() if isinstance(x, Val) else x}")
            self.g.add(batch_norm(path, m), x.ir)
            return Val(path, x.dims, x.form)
        if isinstance(m, nn.MaxPool2d):
            self.expect(node, x, [TB, C, H, W], "a MaxPool2d")
            if _pair(m.dilation) != (1, 1) or m.ceil_mode:
                self.fail(node, f"a MaxPool2d with dilation {m.dilation} / ceil_mode {m.ceil_mode} (the IR's "
                                f"max-pool has dilation 1 and floor mode)")
            self.g.add(ir.MaxPool2d(path, path, kernel=_pair(m.kernel_size), stride=_pair(m.stride),
                                    padding=_pair(m.padding)), x.ir)
            return self.out(node, x, [TB, C, H, W])
        if isinstance(m, nn.MaxPool3d):
            return self.erode(node, m, x)
        self.fail(node, f"{type(m).__name__} has no IR form")

    def erode(self, node: fx.Node, m: nn.MaxPool3d, x) -> Val:
        """The Spike-driven Transformer's Erode (dvs_mode): nn.MaxPool3d((1, 3, 3), 1, (0, 1, 1)) over a 5-D tensor
        of spikes, a 3x3 window (stride 1) over its last two dimensions: the image (H, W) of [T, B, C, H, W], or the
        (token, channel-in-head) plane (N, d) of heads [T, B, h, N, d]. Max-pool over spikes is OR: the tokens
        viewed as that image (a Reshape), a SumPool2d 3x3 (stride 1, padding 1) and a threshold at 0.5, viewed
        back as tokens. The window is the same over (N, d) and over (d, N), so the heads view is (h, d, N), the
        IR's channel order (h outer)."""
        geometry = (_triple(m.kernel_size), _triple(m.stride), _triple(m.padding), _triple(m.dilation), m.ceil_mode)
        if geometry != ((1, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), False):
            self.fail(node, f"a MaxPool3d other than Erode's (kernel (1, 3, 3), stride 1, padding (0, 1, 1)): "
                            f"kernel {m.kernel_size}, stride {m.stride}, padding {m.padding}")
        if not isinstance(x, Val) or x.reduced or len(x.dims) != 5 or not self.spikes(x.ir):
            self.fail(node, "an Erode reads 5-D spikes of a neuron")
        labels = x.labels()
        if labels == [("T",), ("B",), ("C",), ("H",), ("W",)] and x.form == "tokens":
            c, h, w = (_size(d) for d in x.dims[2:])
            view = (c, h, w)
        elif labels[:3] == [("T",), ("B",), ("C/0",)] and labels[4] == ("C/1",):
            c, n, d = (_size(d) for d in x.dims[2:])
            view = (c, d, n)
        else:
            self.fail(node, f"an Erode over {labels}: the converter reads it over the image [T, B, C, H, W] of "
                            f"tokens or over heads [T, B, h, N, d]")
        base = x.ir
        tokens = self.g.shapes()[x.ir]
        img = self.g.add(ir.Reshape(f"{base}_eroded.view", node.target, shape=view), x.ir)
        pooled = self.g.add(ir.SumPool2d(f"{base}_eroded.sum", node.target, kernel=(3, 3), stride=(1, 1),
                                         padding=(1, 1)), img)
        spikes = self.g.add(ir.Threshold(f"{base}_eroded.or", node.target, threshold=0.5), pooled)
        self.g.add(ir.Reshape(f"{base}_eroded", node.target, shape=tokens), spikes)
        return Val(f"{base}_eroded", x.dims, "tokens")

    def head(self, node: fx.Node, m: nn.Linear, x: Val) -> Val:
        if sorted(x.reduced) != ["time", "tokens"] or x.labels() != [("B",), ("C",)]:
            self.fail(node, f"a classifier reads the mean over tokens and time [B, C], got means {x.reduced} of "
                            f"{x.labels()}")
        T = self.g.metadata["T"]
        self.g.add(ir.TokenTimeMeanLinear(node.target, node.target, weight=_np(m.weight), bias=_np(m.bias), T=T), x.ir)
        return Val(node.target, [x.dims[0], (("K", m.out_features),)], "logits")

    def per_step_head(self, node: fx.Node, m: nn.Linear, x: Val) -> Val:
        """A classifier applied at every step to a neuron over one token, [T, B, C] (the Spike-driven Transformer's
        head after head_lif); the model must then average the logits over time (W mean_t s + b = mean_t (W s + b))."""
        if self.g.shapes()[x.ir][-1] != 1 or not self.g.nodes[x.ir].spiking:
            self.fail(node, f"a per-step classifier reads the spikes of a neuron over one token, got {x.ir!r}")
        T = self.g.metadata["T"]
        self.g.add(ir.TokenTimeMeanLinear(node.target, node.target, weight=_np(m.weight), bias=_np(m.bias), T=T), x.ir)
        return Val(node.target, [x.dims[0], x.dims[1], (("K", m.out_features),)], "per_step_logits")

    def token_mean_neuron(self, node: fx.Node, m: nn.Module, x: Val) -> Val:
        """A neuron over the mean of the tokens [T, B, C] (the Spike-driven Transformer's head_lif): the mean is an
        AxisSynapse summing the tokens with weight 1/N into a neuron over one token (C, 1)."""
        if x.labels() != [("T",), ("B",), ("C",)]:
            self.fail(node, f"a neuron over a mean of tokens expects [T, B, C], got {x.labels()}")
        path = node.target
        c, n = self.g.shapes()[x.ir]
        syn = self.g.add(ir.AxisSynapse(f"{path}.token_mean", path, in_axes=("c", "n"), out_axes=("c", "one"),
                                        sizes={"c": c, "n": n, "one": 1}, weight=1.0 / n), x.ir)
        self.g.add(neuron_node(path, m), syn)
        return Val(path, x.dims, "tokens")

    # ------------------------------------------------------------------ functions and methods
    def function(self, node: fx.Node):
        args, kwargs = self.arg(node.args), self.arg(node.kwargs)
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if name in ("ssa_product",):
            return self.ssa(node, *args, **kwargs)
        if name == "normalize_pixels":
            return self.input_norm(node, *args)
        if node.target in (operator.add, torch.add) or name in ("add", "__add__"):
            return self.residual(node, *args)
        if (name in ("mul", "__mul__") or node.target in (operator.mul, torch.mul)) and len(args) == 2 \
                and all(isinstance(a, Val) for a in args):
            return self.spike_and(node, *args)
        if name == "sum" and node.op == "call_method":
            return self.token_sum(node, *args, **kwargs)
        if name in ("mean",):
            return self.mean(node, *args, **kwargs)
        if name in ("reshape", "view"):
            v, *sizes = args
            sizes = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
            return Val(v.ir, regroup(v.dims, list(sizes), f"module {self.where(node)!r}"), v.form, v.reduced)
        if name == "repeat":
            return self.repeat(node, *args)
        if name in MOVES and args and isinstance(args[0], Val):
            return MOVES[name](args[0], *args[1:], **kwargs)
        if name == "flatten" and node.op == "call_function":
            return _flatten(*args, **kwargs)
        self.fail(node, "not an operation the converter reads (it computes something the IR has no node for, "
                        "or moves data in a way it does not follow)")

    def repeat(self, node: fx.Node, v: Val, *reps) -> Val:
        """Direct encoding: a new leading dimension of size 1 repeated T times is the time axis."""
        reps = reps[0] if len(reps) == 1 and isinstance(reps[0], (tuple, list)) else reps
        if not (isinstance(v, Val) and v.dims and v.dims[0] == () and all(r == 1 for r in reps[1:])
                and "T" not in {a[0] for d in v.dims for a in d}):
            self.fail(node, "only the repeat of an image over a new leading time axis is read")
        self.g.metadata.setdefault("T", reps[0])
        return Val(v.ir, [(("T", reps[0]),)] + v.dims[1:], v.form)

    def mean(self, node: fx.Node, v: Val, dim=None, keepdim: bool = False) -> Val:
        if isinstance(v, Val) and v.form == "per_step_logits" and dim is not None and not keepdim \
                and v.labels()[_dim(v.dims, dim)] == ("T",):
            return Val(v.ir, [d for i, d in enumerate(v.dims) if i != _dim(v.dims, dim)], "logits")
        if not isinstance(v, Val) or dim is None or keepdim:
            self.fail(node, "only a mean over one axis (tokens or time) is read")
        d = _dim(v.dims, dim)
        labels = tuple(a[0] for a in v.dims[d])
        kind = {("H", "W"): "tokens", ("T",): "time"}.get(labels)
        if kind is None:
            self.fail(node, f"a mean over {labels} (the converter reads means over all tokens and over time)")
        return Val(v.ir, v.dims[:d] + v.dims[d + 1:], v.form, v.reduced + (kind,))

    def input_norm(self, node: fx.Node, img: Val, mean, std) -> Val:
        if not (isinstance(img, Val) and img.ir == "input"):
            self.fail(node, "the input normalisation must act on the model's input")
        m = [float(x) for x in torch.as_tensor(mean).detach().cpu().float().reshape(-1)]
        s = [float(x) for x in torch.as_tensor(std).detach().cpu().float().reshape(-1)]
        name = self.g.add(ir.InputNorm(ir.INPUT_NORM_SOURCE, ir.INPUT_NORM_SOURCE, mean255=tuple(m), std255=tuple(s)),
                          img.ir)
        return Val(name, img.dims, img.form)

    def ssa(self, node: fx.Node, q: Val, k: Val, v: Val, order: str, scale: float) -> Val:
        where = self.where(node)
        heads = [("T",), ("B",), ("C/0",), ("H", "W"), ("C/1",)]
        for port, x in (("q", q), ("k", k), ("v", v)):
            self.expect(node, x, heads, f"the SSA's {port} (heads split from channels: [T, B, h, N, d])")
            if not isinstance(self.g.nodes[x.ir], ir.LIF):
                self.fail(node, f"the SSA's {port} must be spikes of a LIF layer, got {type(self.g.nodes[x.ir]).__name__}")
        prod = ir.SSAProduct(f"{where}.product", where, num_heads=q.dims[2][0][1], scale=float(scale),
                             product_order=order)
        self.g.add(prod)
        for port, x in (("q", q), ("k", k), ("v", v)):
            self.g.connect(x.ir, prod.name, port)
        return Val(prod.name, q.dims, "tokens")

    def heads_operand(self, node: fx.Node, x, what: str) -> tuple[int, int, int]:
        """(h, N, d) of spikes laid out as heads [T, B, h, N, d] (N may be one token: a sum over tokens)."""
        if not isinstance(x, Val) or x.reduced or len(x.dims) != 5 or \
                [x.labels()[i] for i in (0, 1, 2, 4)] != [("T",), ("B",), ("C/0",), ("C/1",)]:
            self.fail(node, f"{what} expects spikes laid out as heads [T, B, h, N, d], got "
                            f"{x.labels() if isinstance(x, Val) else type(x).__name__}")
        if not self.spikes(x.ir):
            self.fail(node, f"{what} reads {x.ir!r} ({self.g.nodes[x.ir].kind}), not spikes")
        return _size(x.dims[2]), _size(x.dims[3]), _size(x.dims[4])

    def spike_and(self, node: fx.Node, a, b) -> Val:
        """The product of two spike tensors (0/1) is their AND: a threshold neuron at 1.5 over a + b, each operand
        through an identity AxisSynapse; an operand over one token (a sum over tokens) is broadcast over the
        tokens. Exact for 0/1 operands (docs/sdt_lowering.md)."""
        (h, na, d), (hb, nb, db) = (self.heads_operand(node, x, "a product of spike tensors") for x in (a, b))
        n = max(na, nb)
        if (h, d) != (hb, db) or min(na, nb) not in (1, n):
            self.fail(node, f"a product of spike tensors of shapes (h, N, d) {(h, na, d)} and {(hb, nb, db)}")
        where = self.where(node)
        parts = [x.ir.rsplit(".", 1)[-1].removesuffix("_eroded").removesuffix("_lif") for x in (a, b)]
        name = self.g.unique_name(f"{where}.{parts[0]}_and_{parts[1]}")
        sizes = {"h": h, "d": d, "n": n, "one": 1}
        syns = [self.g.add(ir.AxisSynapse(f"{name}.{p}", where, in_axes=("h", "d", "n" if nx == n else "one"),
                                          out_axes=("h", "d", "n"), sizes=sizes, weight=1.0), x.ir)
                for p, x, nx in ((parts[0], a, na), (parts[1], b, nb))]
        self.g.add(ir.Threshold(name, where, threshold=1.5), *syns)
        return Val(name, list((a if na == n else b).dims), "tokens")

    def token_sum(self, node: fx.Node, v, dim=None, keepdim: bool = False) -> Val:
        """The sum over the tokens of spikes laid out as heads, kept as one token: an AxisSynapse (weight 1)."""
        h, n, d = self.heads_operand(node, v, "a sum over tokens")
        if dim is None or _dim(v.dims, dim) != 3 or not keepdim:
            self.fail(node, "only a sum over the tokens of heads [T, B, h, N, d] with keepdim=True is read")
        name = self.g.add(ir.AxisSynapse(f"{v.ir}.token_sum", self.where(node), in_axes=("h", "d", "n"),
                                         out_axes=("h", "d", "one"), sizes={"h": h, "d": d, "n": n, "one": 1},
                                         weight=1.0), v.ir)
        return Val(name, v.dims[:3] + [(("one", 1),)] + v.dims[4:], "tokens")

    def residual(self, node: fx.Node, a, b) -> Val:
        """A residual add: the branch is the operand computed from the other (the skip); both are flattened to
        tokens first where they are images, so the add joins two streams of (C, N)."""
        if not (isinstance(a, Val) and isinstance(b, Val)) or a.reduced or b.reduced:
            self.fail(node, "only the sum of two streams of the network (a residual) is read")
        if a.labels() != b.labels() or [_size(d) for d in a.dims] != [_size(d) for d in b.dims]:
            self.fail(node, f"a residual of differently laid out streams {a.labels()} and {b.labels()}")
        if self.depends(b.ir, a.ir):
            skip, branch = a, b
        elif self.depends(a.ir, b.ir):
            skip, branch = b, a
        else:
            self.fail(node, "a sum of two streams neither of which is computed from the other (not a residual)")
        where = self.where(node)
        rel = branch.ir[len(where) + 1:] if where and branch.ir.startswith(where + ".") else branch.ir
        part = rel.split(".")[0]
        part = part[:-len("_lif")] if part.endswith("_lif") else part
        ins = []
        for x in (skip, branch):
            if x.form == "spatial":
                ins.append(self.g.add(ir.Flatten(f"{x.ir}.tokens", x.ir), x.ir))
            else:
                ins.append(x.ir)
        name = self.g.add(ir.Add(f"{where}.{part}_residual", where), *ins)
        return Val(name, skip.dims, "tokens")

    def spikes(self, name: str) -> bool:
        """Whether IR node `name` outputs spikes: a spiking neuron, or a view (Reshape, Flatten) of one."""
        while isinstance(self.g.nodes[name], (ir.Reshape, ir.Flatten)):
            name = self.g.in_edges(name)[0].src
        return self.g.nodes[name].spiking

    def depends(self, node: str, on: str) -> bool:
        """Whether IR node `node` is computed from `on`."""
        srcs: dict[str, list[str]] = {}
        for e in self.g.edges:
            srcs.setdefault(e.dst, []).append(e.src)
        seen, todo = set(), [node]
        while todo:
            n = todo.pop()
            if n == on:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(srcs.get(n, []))
        return False


# ------------------------------------------------------------------------------- IR nodes of layers
def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


def _np_or_none(t):
    return None if t is None else _np(t)


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def neuron_node(path: str, m: nn.Module) -> ir.LIF:
    """A SpikingJelly LIFNode, or a ParametricLIFNode (its decay sigmoid(w) is the LIF's 1 / tau: tau = 1 / sigmoid(w),
    the learned value, in float64)."""
    from spikformer.model import neuron
    if type(m) not in (neuron.LIFNode, neuron.ParametricLIFNode):
        raise UntranslatableError(f"module {path!r}: {type(m).__name__} has no IR form (supported neurons: "
                                  f"spikingjelly LIFNode, ParametricLIFNode)")
    if not m.decay_input or m.v_reset is None:
        raise UntranslatableError(f"module {path!r}: only hard-reset LIF with decay_input=True is supported (got "
                                  f"decay_input={m.decay_input}, v_reset={m.v_reset})")
    if type(m) is neuron.ParametricLIFNode:
        tau = 1.0 / float(torch.sigmoid(m.w.detach().double().cpu()))
    else:
        tau = float(m.tau)
    return ir.LIF(path, path, tau=tau, v_threshold=float(m.v_threshold), v_reset=float(m.v_reset))


def batch_norm(path: str, m: nn.Module) -> ir.BatchNorm:
    if m.running_mean is None:
        raise UntranslatableError(f"module {path!r}: BatchNorm without running statistics")
    return ir.BatchNorm(path, path, weight=_np(m.weight), bias=_np(m.bias), running_mean=_np(m.running_mean),
                        running_var=_np(m.running_var), eps=float(m.eps))


def check_conv2d(path: str, m: nn.Conv2d) -> None:
    if m.dilation != (1, 1) or m.padding_mode != "zeros":
        raise UntranslatableError(f"module {path!r}: Conv2d with dilation/padding_mode {m.dilation}/"
                                  f"{m.padding_mode} is not supported")


def token_synapse(path: str, m: nn.Module) -> ir.Conv1d:
    """A token-wise synapse (nn.Linear, kernel-1 nn.Conv1d, or 1x1 nn.Conv2d over the token grid) as an IR Conv1d
    with kernel 1 over (C, N)."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and (set(m.kernel_size) != {1} or set(m.stride) != {1}
                                                   or set(m.padding) != {0} or set(m.dilation) != {1}
                                                   or m.groups != 1):
        raise UntranslatableError(f"module {path!r}: only token-wise {type(m).__name__} (kernel 1, stride 1, no "
                                  f"padding, groups 1) is supported over tokens, got kernel {m.kernel_size} stride "
                                  f"{m.stride} padding {m.padding} groups {m.groups}")
    w = _np(m.weight)
    return ir.Conv1d(path, path, weight=w.reshape(w.shape[0], w.shape[1], 1), bias=_np_or_none(m.bias))
