"""PyTorch Spikformer -> IR, by reading the model's forward: it is traced (convert/tracing.py: torch.fx, the
SpikingJelly neurons, the torch.nn layers and the model's SSA product and input normalisation as single
operations) and every traced operation is read into the IR in order (convert/trace_to_ir.py), so the graph is what
the model's own code computes. It mirrors the model one to one (BatchNorm, max-pool, residual adds, the SSA
product and the head stay high-level nodes); the passes lower them to spike-only synaptic operations.

Every layout of spikformer.model gives the same graph shape: the token-wise synapses (nn.Linear of the CIFAR
layout, kernel-1 nn.Conv1d of the ImageNet/DVS layouts, the ImageNet MLP's 1x1 nn.Conv2d) all become IR Conv1d
nodes over token tensors (C, N), bias None where the module has none (the ImageNet/DVS q/k/v). For event input
(frames [B, T, C, H, W], the DVS layout) the Input node is one frame (C, H, W) and `metadata["input_per_step"]` is
True: the engine feeds images[:, t] at step t instead of repeating one image. A model that normalises its input
(Spikformer.set_input_normalization) gets an InputNorm node "input_norm" between the Input (raw x = pixel / 255)
and the first convolution. What the IR cannot express is refused in one line naming the module and the
operation (UnsupportedModuleError)."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ground.errors import UserError
from spikformer.model import Spikformer, normalize_pixels, ssa_product
from spikformer.sdt_model import SpikeDrivenTransformer

from . import ir
from .trace_to_ir import Translator, UntranslatableError
from .tracing import TraceError, trace

# the model's own functions read as one operation each (the SSA product, the input normalisation)
LEAF_FUNCTIONS = (ssa_product, normalize_pixels)
MODEL_TYPES = (Spikformer, SpikeDrivenTransformer)


class UnsupportedModuleError(ValueError):
    """A module the converter does not know; names its path and type and lists what is supported."""


class NonFiniteParameterError(UserError, ValueError):
    """A parameter or buffer holds NaN or infinite values (names it)."""


class ConversionWarning(UserWarning):
    """A model the converter takes but whose numbers deserve a look (names the layer); also recorded in the
    graph's metadata["warnings"] (and so in quantization.json / summary.md of a Loihi export)."""


def check_numerics(model: nn.Module) -> list[dict]:
    """Raises NonFiniteParameterError naming the first parameter/buffer with NaN or Inf values; returns (and
    warns about) the layers whose weights are all zero: their output is constant, which converts exactly but
    is most likely a broken checkpoint."""
    for name, t in model.state_dict().items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteParameterError(f"parameter {name} has {bad} NaN/infinite value(s) of {t.numel()}; "
                                          f"refusing to convert")
    found = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)) and not bool(torch.any(m.weight != 0)):
            found.append({"node": path, "what": "all-zero weights",
                          "detail": f"{type(m).__name__} {path}.weight is all zero: the layer passes only its bias "
                                    f"(a constant input to the next neuron)"})
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.weight is not None and \
                not bool(torch.any(m.weight != 0)):
            found.append({"node": path, "what": "all-zero weights",
                          "detail": f"BatchNorm {path}.weight is all zero: its output is the constant bias"})
    for w in found:
        warnings.warn(ConversionWarning(f"{w['node']}: {w['detail']}"), stacklevel=3)
    return found


SUPPORTED_MODULES = ("Spikformer", "SPS", "Block", "SSA", "MLP", "SpikeDrivenTransformer", "MS_SPS", "MS_Block_Conv",
                     "MS_SSA_Conv", "MS_MLP_Conv", "Erode", "Conv2d (SPS 3x3 bias=False; 1x1 MLP)",
                     "Conv1d (kernel 1)", "Linear", "BatchNorm1d/2d (eval statistics)", "MaxPool2d",
                     "MaxPool3d (Erode's)", "spikingjelly LIFNode / ParametricLIFNode (hard reset, decay_input=True)",
                     "LayerNorm (unused, as upstream)")
def example_input(model: nn.Module) -> torch.Tensor:
    """An input the model's forward takes (two samples of config.input_shape; only its shape is used)."""
    return torch.zeros((2, *model.config.input_shape))


def spikformer_to_ir(model: nn.Module) -> ir.Graph:
    """The model's forward, traced (convert/tracing.py) and read into the IR (convert/trace_to_ir.py). A model
    of this project's zoo (spikformer.model.Spikformer, spikformer.sdt_model.SpikeDrivenTransformer): its
    `config` gives the input shape and the metadata."""
    if not isinstance(model, MODEL_TYPES):
        raise UnsupportedModuleError(f"<root> is {type(model).__name__}; the converter takes a "
                                     f"spikformer.model.Spikformer or a spikformer.sdt_model.SpikeDrivenTransformer")
    numeric_warnings = check_numerics(model)
    cfg = model.config
    g = ir.Graph(metadata={"config": cfg.to_dict(), "T": cfg.T})
    try:
        Translator(trace(model, example_input(model), LEAF_FUNCTIONS), g).run()
    except (TraceError, UntranslatableError) as e:
        raise UnsupportedModuleError(f"{e}; supported: {', '.join(SUPPORTED_MODULES)}") from None
    if isinstance(model, SpikeDrivenTransformer):
        g.metadata["architecture"] = ir.ARCHITECTURE_SDT
    if numeric_warnings:
        g.metadata["warnings"] = numeric_warnings
    g.validate()
    return g
