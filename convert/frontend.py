"""PyTorch Spikformer -> IR. The graph mirrors the module tree one to one (BatchNorm, max-pool, residual adds,
the SSA product and the head stay high-level nodes); the passes lower them to spike-only synaptic operations.

Every layout of spikformer.model lowers to the same graph shape: the token-wise synapses (nn.Linear of the CIFAR
layout, kernel-1 nn.Conv1d of the ImageNet/DVS layouts, the ImageNet MLP's 1x1 nn.Conv2d) all become IR Conv1d
nodes over token tensors (C, N), bias None where the module has none (the ImageNet/DVS q/k/v). For event input
(config.event_input, the DVS layout) the Input node is one frame (C, H, W) and `metadata["input_per_step"]` is
True: the engine feeds images[:, t] at step t instead of repeating one image. A model that normalises its input
(Spikformer.set_input_normalization) gets an InputNorm node "input_norm" between the Input (raw x = pixel / 255)
and the first convolution."""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn

from ground.errors import UserError
from spikformer.model import MLP, SPS, SSA, Block, Spikformer, stage_suffix
from spikformer.model import neuron  # SpikingJelly's, through spikformer.model, which silences its banner

from . import ir


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


SUPPORTED_MODULES = ("Spikformer", "SPS", "Block", "SSA", "MLP", "Conv2d (SPS 3x3 bias=False; 1x1 MLP)",
                     "Conv1d (kernel 1)", "Linear",
                     "BatchNorm1d/2d (eval statistics)", "MaxPool2d", "spikingjelly LIFNode (hard reset, "
                     "decay_input=True)", "LayerNorm (unused, as upstream)")
_KNOWN = (Spikformer, SPS, Block, SSA, MLP, nn.ModuleList, nn.Conv2d, nn.Conv1d, nn.Linear, nn.BatchNorm1d,
          nn.BatchNorm2d, nn.MaxPool2d, nn.LayerNorm, neuron.LIFNode)


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


def check_supported(model: nn.Module) -> None:
    if not isinstance(model, Spikformer):
        raise UnsupportedModuleError(f"<root> is {type(model).__name__}; the converter takes a "
                                     f"spikformer.model.Spikformer")
    for path, m in model.named_modules():
        if isinstance(m, _KNOWN) or type(m).__module__.startswith("spikingjelly.activation_based.surrogate"):
            continue
        raise UnsupportedModuleError(f"module {path!r} of type {type(m).__name__} is not supported; "
                                     f"supported: {', '.join(SUPPORTED_MODULES)}")
    for path, m in model.named_modules():
        if isinstance(m, neuron.LIFNode):
            if not m.decay_input or m.v_reset is None:
                raise UnsupportedModuleError(f"module {path!r}: only hard-reset LIF with decay_input=True is "
                                             f"supported (got decay_input={m.decay_input}, v_reset={m.v_reset})")
        if isinstance(m, nn.Conv2d) and (m.dilation != (1, 1) or m.padding_mode != "zeros"):
            raise UnsupportedModuleError(f"module {path!r}: Conv2d with dilation/padding_mode "
                                         f"{m.dilation}/{m.padding_mode} is not supported")
        token_wise = isinstance(m, nn.Conv1d) or (isinstance(m, nn.Conv2d) and path.startswith("block."))
        if token_wise and (set(m.kernel_size) != {1} or set(m.stride) != {1} or set(m.padding) != {0}
                           or set(m.dilation) != {1} or m.groups != 1):
            raise UnsupportedModuleError(f"module {path!r}: only token-wise {type(m).__name__} (kernel 1, stride 1, "
                                         f"no padding, groups 1) is supported in blocks, got kernel "
                                         f"{m.kernel_size} stride {m.stride} padding {m.padding} groups {m.groups}")


def _lif(name: str, m: neuron.LIFNode) -> ir.LIF:
    return ir.LIF(name, name, tau=float(m.tau), v_threshold=float(m.v_threshold), v_reset=float(m.v_reset))


def _bn(name: str, m) -> ir.BatchNorm:
    if m.running_mean is None:
        raise UnsupportedModuleError(f"module {name!r}: BatchNorm without running statistics")
    return ir.BatchNorm(name, name, weight=_np(m.weight), bias=_np(m.bias), running_mean=_np(m.running_mean),
                        running_var=_np(m.running_var), eps=float(m.eps))


def _linear(name: str, m: nn.Module) -> ir.Conv1d:
    """A token-wise synapse (nn.Linear, kernel-1 nn.Conv1d, or 1x1 nn.Conv2d over the token grid) as an IR Conv1d
    with kernel 1 over (C, N)."""
    w = _np(m.weight)
    return ir.Conv1d(name, name, weight=w.reshape(w.shape[0], w.shape[1], 1),
                     bias=None if m.bias is None else _np(m.bias))


class _Builder:
    def __init__(self, g: ir.Graph):
        self.g = g

    def chain(self, x: str, *nodes: ir.Node) -> str:
        for n in nodes:
            x = self.g.add(n, x)
        return x

    def linear_bn_lif(self, prefix: str, mod: nn.Module, tag: str, x: str) -> str:
        syn = f"{tag}_{mod.syn}"  # q_linear (CIFAR layout) or q_conv (ImageNet/DVS layouts)
        return self.chain(x, _linear(f"{prefix}.{syn}", getattr(mod, syn)),
                          _bn(f"{prefix}.{tag}_bn", getattr(mod, f"{tag}_bn")),
                          _lif(f"{prefix}.{tag}_lif", getattr(mod, f"{tag}_lif")))


def spikformer_to_ir(model: Spikformer) -> ir.Graph:
    check_supported(model)
    numeric_warnings = check_numerics(model)
    cfg = model.config
    g = ir.Graph(metadata={"config": cfg.to_dict(), "T": cfg.T})
    if cfg.event_input:
        g.metadata["input_per_step"] = True  # images [B, T, C, H, W]: frame t drives step t
    if numeric_warnings:
        g.metadata["warnings"] = numeric_warnings
    b = _Builder(g)
    x = g.add(ir.Input("input", "input", shape=(cfg.in_channels, cfg.img_size, cfg.img_size)))
    if model.input_normalized:  # the model normalises raw x = pixel / 255 itself (Spikformer.normalize_input)
        x = g.add(input_norm(model), x)

    sps, p = model.patch_embed, "patch_embed"
    for i in range(4):
        s = stage_suffix(i)
        conv = getattr(sps, f"proj_conv{s}")
        x = b.chain(x, ir.Conv2d(f"{p}.proj_conv{s}", f"{p}.proj_conv{s}", weight=_np(conv.weight),
                                 bias=None, stride=conv.stride, padding=conv.padding, groups=conv.groups),
                    _bn(f"{p}.proj_bn{s}", getattr(sps, f"proj_bn{s}")),
                    _lif(f"{p}.proj_lif{s}", getattr(sps, f"proj_lif{s}")))
        if sps.pooled[i]:
            mp = getattr(sps, f"maxpool{s}")
            x = g.add(ir.MaxPool2d(f"{p}.maxpool{s}", f"{p}.maxpool{s}", kernel=_pair(mp.kernel_size),
                                   stride=_pair(mp.stride), padding=_pair(mp.padding)), x)
    feat = x
    rpe = b.chain(x, ir.Conv2d(f"{p}.rpe_conv", f"{p}.rpe_conv", weight=_np(sps.rpe_conv.weight), bias=None,
                               stride=sps.rpe_conv.stride, padding=sps.rpe_conv.padding),
                  _bn(f"{p}.rpe_bn", sps.rpe_bn), _lif(f"{p}.rpe_lif", sps.rpe_lif))
    # each branch is flattened to tokens before the residual add, so the add joins two spike streams
    feat = g.add(ir.Flatten(f"{feat}.tokens", feat), feat)
    rpe = g.add(ir.Flatten(f"{p}.rpe_lif.tokens", f"{p}.rpe_lif"), rpe)
    x = g.add(ir.Add(f"{p}.rpe_residual", p), feat, rpe)

    for i, blk in enumerate(model.block):
        p = f"block.{i}"
        a, ap = blk.attn, f"{p}.attn"
        q = b.linear_bn_lif(ap, a, "q", x)
        k = b.linear_bn_lif(ap, a, "k", x)
        v = b.linear_bn_lif(ap, a, "v", x)
        prod = ir.SSAProduct(f"{ap}.product", ap, num_heads=a.num_heads, scale=float(a.scale),
                             product_order=a.product_order)
        g.add(prod)
        for port, src in (("q", q), ("k", k), ("v", v)):
            g.connect(src, prod.name, port)
        y = b.chain(prod.name, _lif(f"{ap}.attn_lif", a.attn_lif))
        y = b.linear_bn_lif(ap, a, "proj", y)
        x = g.add(ir.Add(f"{p}.attn_residual", p), x, y)
        y = b.linear_bn_lif(f"{p}.mlp", blk.mlp, "fc1", x)
        y = b.linear_bn_lif(f"{p}.mlp", blk.mlp, "fc2", y)
        x = g.add(ir.Add(f"{p}.mlp_residual", p), x, y)

    x = g.add(ir.TokenTimeMeanLinear("head", "head", weight=_np(model.head.weight), bias=_np(model.head.bias),
                                     T=cfg.T), x)
    g.add(ir.Output("output", "head"), x)
    g.validate()
    return g


def input_norm(model: Spikformer) -> ir.InputNorm:
    """The model's input normalisation as an IR node: its float32 constants 255 mean and 255 std, exactly."""
    mean = [float(v) for v in model.input_mean255.detach().cpu().float().reshape(-1)]
    std = [float(v) for v in model.input_std255.detach().cpu().float().reshape(-1)]
    return ir.InputNorm(ir.INPUT_NORM_SOURCE, ir.INPUT_NORM_SOURCE, mean255=tuple(mean), std255=tuple(std))


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
