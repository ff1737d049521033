"""A model read by tracing (torch.fx), so that its own forward code says what the network computes.

torch.fx's symbolic tracer records every operation of `forward` on proxies; SpikingJelly neurons and the
torch.nn layers are leaves (one node each), and the functions named in `leaf_functions` (the model's SSA product,
its input normalisation) are single nodes too. The tracer runs every recorded operation on meta tensors (shapes
only, no data, no cost) beside the proxies, so that shape-dependent Python in a forward (`T, B, N, C = x.shape`,
`x.shape[:2]`) sees real sizes: the traced graph is the model's computation for one input shape, every shape a
constant. Each node keeps the module path that made it (`nn_module_stack`), which names the IR nodes."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from spikformer.model import neuron  # SpikingJelly's, through spikformer.model, which silences its banner


class TraceError(ValueError):
    """The model's forward cannot be traced (one line naming the module and what failed)."""


class UnknownLayerError(TraceError):
    """A leaf module whose output the tracer cannot size (one line naming the module, its type and its parent)."""


# The output (a meta tensor) of each leaf layer the tracer knows, from its input and its weight (a meta tensor);
# the layer's own forward is not called, nor its attributes read through the module (the tracer has patched
# module calls and parameter reads while it traces).
LAYER_SHAPES = {
    nn.Conv1d: lambda m, w, x: F.conv1d(x, w, None, m.stride, m.padding, m.dilation, m.groups),
    nn.Conv2d: lambda m, w, x: F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups),
    nn.Linear: lambda m, w, x: F.linear(x, w),
    nn.BatchNorm1d: lambda m, w, x: torch.empty_like(x),
    nn.BatchNorm2d: lambda m, w, x: torch.empty_like(x),
    nn.LayerNorm: lambda m, w, x: torch.empty_like(x),
    nn.MaxPool2d: lambda m, w, x: F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation,
                                               ceil_mode=m.ceil_mode),
    nn.MaxPool3d: lambda m, w, x: F.max_pool3d(x, m.kernel_size, m.stride, m.padding, m.dilation,
                                               ceil_mode=m.ceil_mode),
}


def is_neuron_module(m: nn.Module) -> bool:
    return isinstance(m, neuron.BaseNode)


def _meta(x):
    return torch.empty_like(x, device="meta") if isinstance(x, torch.Tensor) else x


class _MetaProxy(fx.Proxy):
    """A proxy that knows its value's shape (a meta tensor), so Python in a forward may read sizes."""

    def __init__(self, node: fx.Node, tracer, value):
        super().__init__(node, tracer)
        self._value = value

    @property
    def shape(self):
        return self._value.shape

    def size(self, dim=None):
        return self._value.size() if dim is None else self._value.size(dim)

    def dim(self):
        return self._value.dim()

    @property
    def ndim(self):
        return self._value.dim()

    def __len__(self):
        return len(self._value)


class _Tracer(fx.Tracer):
    def __init__(self, root: nn.Module, example: torch.Tensor, leaf_functions: tuple):
        # fx wraps a leaf function where the root's forward looks it up; a model whose forward calls it through a
        # method defined elsewhere (a mixin) looks it up in the module defining it, so those modules are patched too
        homes = tuple(sys.modules[f.__module__] for f in leaf_functions if f.__module__ in sys.modules)
        super().__init__(autowrap_modules=(math, *dict.fromkeys(homes)), autowrap_functions=tuple(leaf_functions))
        self.root_module, self.example = root, example
        self.values: dict[fx.Node, object] = {}
        # every parameter and buffer as a meta tensor, by qualified name, read before module reads are patched
        self.tensors = {k: _meta(v) for k, v in [*root.named_parameters(), *root.named_buffers()]}
        self.modules = dict(root.named_modules())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_neuron_module(m) or super().is_leaf_module(m, qualname)

    def _value(self, a):
        return fx.node.map_aggregate(a, lambda v: self._of(v) if isinstance(v, fx.Node) else v)

    def _of(self, node: fx.Node):
        if node not in self.values and node.op == "get_attr":  # a constant fx made without a proxy
            self.values[node] = self._attr(node.target)
        return self.values[node]

    def _attr(self, target: str):
        """A parameter, buffer or constant of the root as a meta tensor (constants fx stores on the root while
        it traces are read from the module's __dict__, past the patched attribute read)."""
        if target in self.tensors:
            return self.tensors[target]
        owner, _, name = target.rpartition(".")
        return _meta(vars(self.modules[owner])[name])

    def proxy(self, node: fx.Node) -> fx.Proxy:
        args, kwargs = self._value(node.args), self._value(node.kwargs)
        where = node.meta.get("nn_module_stack") or {}
        path = next(reversed(where.values()))[0] if where else "<root>"
        try:
            if node.op == "placeholder":
                value = self.example
            elif node.op == "get_attr":
                value = self._attr(node.target)
            elif node.op == "call_function":
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "call_module":
                m = self.modules[node.target]
                path = node.target
                rule = next((r for t, r in LAYER_SHAPES.items() if type(m) is t), None)
                if is_neuron_module(m):
                    value = torch.empty_like(args[0])  # elementwise over [T, B, ...]
                elif rule is not None:
                    value = rule(m, self.tensors.get(f"{path}.weight"), *args, **kwargs)
                else:
                    parent = path.rsplit(".", 1)[0] if "." in path else ""
                    inside = f" (in {parent!r}, {type(self.modules[parent]).__name__})" if parent else ""
                    raise UnknownLayerError(f"module {path!r} of type {type(m).__name__}{inside} is not supported")
            else:
                value = None
        except TraceError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of an operation is the model's, named here
            raise TraceError(f"module {path!r}: {node.op} {getattr(node.target, '__name__', node.target)} "
                             f"cannot be traced ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        self.values[node] = value
        return _MetaProxy(node, self, value)


@dataclass
class Trace:
    graph: fx.Graph
    values: dict          # fx node -> its meta value (a meta tensor, or a plain Python value)
    root: nn.Module


def trace(model: nn.Module, example: torch.Tensor, leaf_functions: tuple = ()) -> Trace:
    """`model`'s forward on an input shaped like `example` (any device; only its shape and dtype are used),
    traced: leaves are the neurons, the torch.nn layers and `leaf_functions`."""
    tracer = _Tracer(model, torch.empty(example.shape, dtype=example.dtype, device="meta"), leaf_functions)
    try:
        graph = tracer.trace(model)
    except TraceError:
        raise
    except Exception as e:  # noqa: BLE001 - Python in a forward that symbolic tracing cannot follow
        raise TraceError(f"{type(model).__name__}.forward cannot be traced ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from None
    return Trace(graph, tracer.values, model)
