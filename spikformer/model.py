"""Spikformer (Zhou et al., ICLR 2023), module for module as in the official CIFAR code (ZK-Zhou/spikformer,
cifar10/model.py), so that official state dicts load with strict=True.

Tensors are time-major: [T, B, ...]. Every neuron is SpikingJelly's multi-step LIF (tau=2, hard reset to 0,
detach_reset, torch backend). The LayerNorms `norm1`/`norm2` are created but never called, as upstream.
"""
from __future__ import annotations

import contextlib
import io

import torch
import torch.nn as nn

# spikingjelly 0.0.0.0.14 prints a "Prophesee Dataset Toolbox could not be found" banner (stdout) and torch's
# cpp_extension a "No CUDA runtime" line (stderr) on import; neither concerns this project, so they are
# swallowed here instead of appearing in every command's output.
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    from spikingjelly.activation_based import functional, neuron, surrogate

from .presets import SpikformerConfig

ATTN_SCALE = 0.125
ATTN_LIF_THRESHOLD = 0.5
TAU = 2.0


def make_lif(v_threshold: float = 1.0) -> neuron.LIFNode:
    return neuron.LIFNode(tau=TAU, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                          surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m", backend="torch")


def _linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """[T, B, N, C] -> Linear -> BatchNorm1d over channels -> [T, B, N, C']."""
    T, B, N, _ = x.shape
    y = linear(x.flatten(0, 1))
    y = bn(y.transpose(-1, -2)).transpose(-1, -2)
    return y.reshape(T, B, N, -1).contiguous()


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1_linear = nn.Linear(dim, hidden)
        self.fc1_bn = nn.BatchNorm1d(hidden)
        self.fc1_lif = make_lif()
        self.fc2_linear = nn.Linear(hidden, dim)
        self.fc2_bn = nn.BatchNorm1d(dim)
        self.fc2_lif = make_lif()

    def forward(self, x):
        x = self.fc1_lif(_linear_bn(self.fc1_linear, self.fc1_bn, x))
        return self.fc2_lif(_linear_bn(self.fc2_linear, self.fc2_bn, x))


def ssa_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: str) -> torch.Tensor:
    """Q K^T V * 0.125 for binary [..., N, d] tensors. Both orders give the same integers (then an exact
    power-of-two scale), so the result is bit-identical in float."""
    if order == "qk_first":
        return ((q @ k.transpose(-2, -1)) * ATTN_SCALE) @ v
    return (q @ (k.transpose(-2, -1) @ v)) * ATTN_SCALE


class SSA(nn.Module):
    def __init__(self, dim: int, num_heads: int, product_order: str = "qk_first"):
        super().__init__()
        self.num_heads = num_heads
        self.scale = ATTN_SCALE
        self.product_order = product_order
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_linear", nn.Linear(dim, dim))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", make_lif())
        self.attn_lif = make_lif(ATTN_LIF_THRESHOLD)
        self.proj_linear = nn.Linear(dim, dim)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_lif()

    def heads(self, x):
        T, B, N, C = x.shape
        return x.reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, N, C = x.shape
        q = self.heads(self.q_lif(_linear_bn(self.q_linear, self.q_bn, x)))
        k = self.heads(self.k_lif(_linear_bn(self.k_linear, self.k_bn, x)))
        v = self.heads(self.v_lif(_linear_bn(self.v_linear, self.v_bn, x)))
        y = ssa_product(q, k, v, self.product_order)
        y = self.attn_lif(y.transpose(2, 3).reshape(T, B, N, C).contiguous())
        return self.proj_lif(_linear_bn(self.proj_linear, self.proj_bn, y))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, product_order: str = "qk_first"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)  # unused, kept for state-dict compatibility with the official code
        self.attn = SSA(dim, num_heads, product_order)
        self.norm2 = nn.LayerNorm(dim)  # unused, as upstream
        self.mlp = MLP(dim, mlp_hidden)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


def stage_suffix(i: int) -> str:
    return "" if i == 0 else str(i)


class SPS(nn.Module):
    """Spiking patch splitting: four conv+BN+LIF stages (C -> D/8 -> D/4 -> D/2 -> D), MaxPool2d(3, 2, 1) after
    the last `pool_stages` of them, then the relative position embedding conv with its residual."""

    def __init__(self, in_channels: int, embed_dim: int, pool_stages: int = 2):
        super().__init__()
        chans = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        self.pooled = [i >= 4 - pool_stages for i in range(4)]
        for i in range(4):
            s = stage_suffix(i)
            setattr(self, f"proj_conv{s}", nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{s}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{s}", make_lif())
            if self.pooled[i]:
                setattr(self, f"maxpool{s}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1,
                                                         ceil_mode=False))
        self.rpe_conv = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dim)
        self.rpe_lif = make_lif()

    @staticmethod
    def _conv_bn(conv, bn, x):
        T, B = x.shape[:2]
        y = bn(conv(x.flatten(0, 1)))
        return y.reshape(T, B, *y.shape[1:]).contiguous()

    def forward(self, x):  # [T, B, C, H, W] -> [T, B, N, D]
        for i in range(4):
            s = stage_suffix(i)
            x = getattr(self, f"proj_lif{s}")(self._conv_bn(getattr(self, f"proj_conv{s}"),
                                                            getattr(self, f"proj_bn{s}"), x))
            if self.pooled[i]:
                T, B = x.shape[:2]
                y = getattr(self, f"maxpool{s}")(x.flatten(0, 1))
                x = y.reshape(T, B, *y.shape[1:]).contiguous()
        x_feat = x
        x = self.rpe_lif(self._conv_bn(self.rpe_conv, self.rpe_bn, x)) + x_feat
        return x.flatten(-2).transpose(-1, -2).contiguous()


class Spikformer(nn.Module):
    def __init__(self, config: SpikformerConfig):
        super().__init__()
        self.config = config
        self.T = config.T
        self.patch_embed = SPS(config.in_channels, config.embed_dim, config.pool_stages)
        self.block = nn.ModuleList([Block(config.embed_dim, config.num_heads, config.hidden_dim,
                                          config.product_order) for _ in range(config.depth)])
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.mean(2)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, C, H, W] (direct encoding: repeated at every step) -> logits [B, classes]. Neuron states are
        reset before every call, as the official training loop does after every batch."""
        functional.reset_net(self)
        x = img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        return self.head(self.forward_features(x).mean(0))


def lif_modules(model: nn.Module) -> dict[str, neuron.LIFNode]:
    return {name: m for name, m in model.named_modules() if isinstance(m, neuron.LIFNode)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
