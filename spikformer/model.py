"""Spikformer (Zhou et al., ICLR 2023), module for module as in the official code (ZK-Zhou/spikformer), so that
official state dicts load with strict=True. One class builds the three official layouts (`config.layout`,
described in spikformer/presets.py):

- "cifar"    (cifar10/model.py): Linear layers over tokens [T, B, N, C].
- "imagenet" (imagenet/model.py): bias-free Conv1d q/k/v, Conv1d proj, 1x1 Conv2d MLP with BatchNorm2d; the
             block tensors are [T, B, C, H, W] as upstream.
- "dvs"      (cifar10dvs/model.py): bias-free Conv1d q/k/v, Conv1d proj and MLP; tokens [T, B, C, N]; attention
             scale 0.25; event input [B, T, C, H, W] fed one frame per step; unused `pos_embed` and `norm`.

Every neuron is SpikingJelly's multi-step LIF (tau=2, v_threshold 1 (attention LIF 0.5), hard reset to 0,
decay_input, detach_reset, torch backend), as the official MultiStepLIFNode(tau=2.0, detach_reset=True). The
LayerNorms `norm1`/`norm2` (and the DVS `norm`, `pos_embed`) are created but never called, as upstream. The
official DVS SSA also holds an `attn_drop` Dropout and a `res_lif` neuron that its forward never calls and that
have no state-dict entries; they are left out.
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

from .presets import ATTN_SCALES, SpikformerConfig

ATTN_SCALE = ATTN_SCALES["cifar"]
ATTN_LIF_THRESHOLD = 0.5
TAU = 2.0


def make_lif(v_threshold: float = 1.0) -> neuron.LIFNode:
    return neuron.LIFNode(tau=TAU, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                          surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m", backend="torch")


def synapse_suffix(layout: str) -> str:
    """Name suffix of the q/k/v/proj/fc1/fc2 synapse modules: `q_linear` (CIFAR code) or `q_conv` (ImageNet and
    DVS code)."""
    return "linear" if layout == "cifar" else "conv"


def _linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """[T, B, N, C] -> Linear -> BatchNorm1d over channels -> [T, B, N, C']."""
    T, B, N, _ = x.shape
    y = linear(x.flatten(0, 1))
    y = bn(y.transpose(-1, -2)).transpose(-1, -2)
    return y.reshape(T, B, N, -1).contiguous()


def _conv_bn(conv: nn.Module, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[T, B, C, ...] -> conv and BatchNorm over the flattened T*B batch -> [T, B, C', ...] (channels first, as
    the official ImageNet and DVS code)."""
    T, B = x.shape[:2]
    y = bn(conv(x.flatten(0, 1)))
    return y.reshape(T, B, *y.shape[1:]).contiguous()


def _mlp_synapse(layout: str, c_in: int, c_out: int) -> tuple[nn.Module, nn.Module]:
    """An MLP layer's synapse and BatchNorm as each official file builds them: Linear + BatchNorm1d (cifar), 1x1
    Conv2d + BatchNorm2d (imagenet), kernel-1 Conv1d + BatchNorm1d (dvs)."""
    if layout == "cifar":
        return nn.Linear(c_in, c_out), nn.BatchNorm1d(c_out)
    if layout == "imagenet":
        return nn.Conv2d(c_in, c_out, kernel_size=1, stride=1), nn.BatchNorm2d(c_out)
    return nn.Conv1d(c_in, c_out, kernel_size=1, stride=1), nn.BatchNorm1d(c_out)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, layout: str = "cifar"):
        super().__init__()
        self.layout = layout
        self.syn = synapse_suffix(layout)
        for name, c_in, c_out in (("fc1", dim, hidden), ("fc2", hidden, dim)):
            syn, bn = _mlp_synapse(layout, c_in, c_out)
            setattr(self, f"{name}_{self.syn}", syn)  # registration order as upstream: synapse, bn, lif
            setattr(self, f"{name}_bn", bn)
            setattr(self, f"{name}_lif", make_lif())

    def forward(self, x):
        if self.layout == "cifar":
            x = self.fc1_lif(_linear_bn(self.fc1_linear, self.fc1_bn, x))
            return self.fc2_lif(_linear_bn(self.fc2_linear, self.fc2_bn, x))
        # imagenet: [T, B, C, H, W] with 1x1 Conv2d; dvs: [T, B, C, N] with Conv1d
        x = self.fc1_lif(_conv_bn(self.fc1_conv, self.fc1_bn, x))
        return self.fc2_lif(_conv_bn(self.fc2_conv, self.fc2_bn, x))


def normalize_pixels(img: torch.Tensor, mean255: torch.Tensor, std255: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] (8-bit pixels / 255) -> (255 x - 255 mean) / (255 std), timm's PrefetchLoader arithmetic."""
    return (img * 255).sub_(mean255.to(img.dtype)).div_(std255.to(img.dtype))


def ssa_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, order: str,
                scale: float = ATTN_SCALE) -> torch.Tensor:
    """Q K^T V * scale for binary [..., N, d] tensors. Both orders give the same integers and the scale is a power
    of two, so the result is bit-identical in float whichever order or place of the scale (the DVS code scales
    after (Q K^T) V, the CIFAR code after Q K^T, the ImageNet code computes Q (K^T V))."""
    if order == "qk_first":
        return ((q @ k.transpose(-2, -1)) * scale) @ v
    return (q @ (k.transpose(-2, -1) @ v)) * scale


class SSA(nn.Module):
    def __init__(self, dim: int, num_heads: int, product_order: str = "qk_first", layout: str = "cifar"):
        super().__init__()
        self.num_heads = num_heads
        self.scale = ATTN_SCALES[layout]
        self.product_order = product_order
        self.layout = layout
        self.syn = synapse_suffix(layout)
        for name in ("q", "k", "v"):
            if layout == "cifar":
                setattr(self, f"{name}_linear", nn.Linear(dim, dim))
            else:
                setattr(self, f"{name}_conv", nn.Conv1d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm1d(dim))
            setattr(self, f"{name}_lif", make_lif())
        self.attn_lif = make_lif(ATTN_LIF_THRESHOLD)
        if layout == "cifar":
            self.proj_linear = nn.Linear(dim, dim)
        else:
            self.proj_conv = nn.Conv1d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm1d(dim)
        self.proj_lif = make_lif()

    def heads(self, x):
        T, B, N, C = x.shape
        return x.reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        if self.layout != "cifar":
            return self._forward_channels_first(x)
        T, B, N, C = x.shape
        q = self.heads(self.q_lif(_linear_bn(self.q_linear, self.q_bn, x)))
        k = self.heads(self.k_lif(_linear_bn(self.k_linear, self.k_bn, x)))
        v = self.heads(self.v_lif(_linear_bn(self.v_linear, self.v_bn, x)))
        y = ssa_product(q, k, v, self.product_order, self.scale)
        y = self.attn_lif(y.transpose(2, 3).reshape(T, B, N, C).contiguous())
        return self.proj_lif(_linear_bn(self.proj_linear, self.proj_bn, y))

    def _forward_channels_first(self, x):
        """x [T, B, C, N] (dvs) or [T, B, C, H, W] (imagenet; flattened to tokens n = h W + w and back)."""
        shape = x.shape
        x = x.flatten(3)
        T, B, C, N = x.shape
        qkv = []
        for name in ("q", "k", "v"):
            y = getattr(self, f"{name}_lif")(_conv_bn(getattr(self, f"{name}_conv"), getattr(self, f"{name}_bn"), x))
            qkv.append(self.heads(y.transpose(-1, -2)))
        y = ssa_product(*qkv, self.product_order, self.scale)
        y = self.attn_lif(y.transpose(3, 4).reshape(T, B, C, N).contiguous())
        y = self.proj_bn(self.proj_conv(y.flatten(0, 1)))
        return self.proj_lif(y.reshape(shape))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, product_order: str = "qk_first",
                 layout: str = "cifar"):
        super().__init__()
        ln = {} if layout == "cifar" else {"eps": 1e-6}  # norm_layer of the official ImageNet/DVS models
        self.norm1 = nn.LayerNorm(dim, **ln)  # unused, kept for state-dict compatibility with the official code
        self.attn = SSA(dim, num_heads, product_order, layout)
        self.norm2 = nn.LayerNorm(dim, **ln)  # unused, as upstream
        self.mlp = MLP(dim, mlp_hidden, layout)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


def stage_suffix(i: int) -> str:
    return "" if i == 0 else str(i)


class SPS(nn.Module):
    """Spiking patch splitting: four conv+BN+LIF stages (C -> D/8 -> D/4 -> D/2 -> D), MaxPool2d(3, 2, 1) after
    the last `pool_stages` of them (all four in the official ImageNet and DVS code), then the relative position
    embedding conv with its residual. Output: [T, B, N, D] (cifar), [T, B, D, H, W] (imagenet), [T, B, D, N]
    (dvs)."""

    def __init__(self, in_channels: int, embed_dim: int, pool_stages: int = 2, layout: str = "cifar"):
        super().__init__()
        self.layout = layout
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

    def forward(self, x):  # [T, B, C, H, W] -> tokens (see the class docstring)
        for i in range(4):
            s = stage_suffix(i)
            x = getattr(self, f"proj_lif{s}")(_conv_bn(getattr(self, f"proj_conv{s}"),
                                                       getattr(self, f"proj_bn{s}"), x))
            if self.pooled[i]:
                T, B = x.shape[:2]
                y = getattr(self, f"maxpool{s}")(x.flatten(0, 1))
                x = y.reshape(T, B, *y.shape[1:]).contiguous()
        x_feat = x
        x = self.rpe_lif(_conv_bn(self.rpe_conv, self.rpe_bn, x)) + x_feat
        if self.layout == "imagenet":
            return x
        if self.layout == "dvs":
            return x.flatten(-2).contiguous()
        return x.flatten(-2).transpose(-1, -2).contiguous()


class InputNormalization:
    """The official loader's per-channel normalisation as part of a model (Spikformer, SpikeDrivenTransformer: both
    official codes normalise in timm's loader); needs `self.config` (in_channels, event_input) and `self.head`."""

    def set_input_normalization(self, data_config) -> None:
        """Normalise every input as the official loader did (spikformer.data_config.DataConfig; None or an
        unnormalised config: none). The constants are non-persistent buffers: they follow .to()/.double() but
        are not in the state dict, so official state dicts still load strictly."""
        if data_config is None or not data_config.normalized:
            self.input_mean255 = self.input_std255 = None
            return
        if self.config.event_input:
            raise ValueError("event input is not normalised (the official DVS code feeds event counts)")
        data_config.check_channels(self.config.in_channels)
        mean255, std255 = data_config.pixel_mean_std()
        dev = self.head.weight.device
        for name in ("input_mean255", "input_std255"):  # a plain None left by an earlier call
            self.__dict__.pop(name, None)
        self.register_buffer("input_mean255", mean255.to(dev).view(-1, 1, 1), persistent=False)
        self.register_buffer("input_std255", std255.to(dev).view(-1, 1, 1), persistent=False)

    @property
    def input_normalized(self) -> bool:
        return getattr(self, "input_mean255", None) is not None

    def normalize_input(self, img: torch.Tensor) -> torch.Tensor:
        """x in [0, 1] (8-bit pixels / 255) -> (255 x - 255 mean) / (255 std): timm's PrefetchLoader arithmetic
        (255 x is the 8-bit value exactly in float32); unchanged when the model has no normalisation."""
        if not self.input_normalized:
            return img
        return normalize_pixels(img, self.input_mean255, self.input_std255)


class Spikformer(InputNormalization, nn.Module):
    def __init__(self, config: SpikformerConfig):
        super().__init__()
        self.config = config
        self.T = config.T
        self.layout = config.layout
        # reference recorders: block neurons emit [T, B, N, C] (cifar) or channels first [T, B, C, ...]
        self.tokens_last = config.layout == "cifar"
        D = config.embed_dim
        self.patch_embed = SPS(config.in_channels, D, config.pool_stages, config.layout)
        if config.layout == "dvs":  # unused, as upstream (num_patches tokens of the SPS grid)
            self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, D))
        self.block = nn.ModuleList([Block(D, config.num_heads, config.hidden_dim, config.product_order,
                                          config.layout) for _ in range(config.depth)])
        if config.layout == "dvs":
            self.norm = nn.LayerNorm(D, eps=1e-6)  # unused, as upstream
        self.head = nn.Linear(D, config.num_classes)
        if config.layout == "dvs":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
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
        if self.tokens_last:
            return x.mean(2)
        return x.flatten(3).mean(3)  # [T, B, C, N] or [T, B, C, H, W]: mean over tokens

    def time_major_input(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> [T, B, C, H, W]: event frames [B, T, C, H, W] are permuted (one frame per step, as the
        official DVS code); images [B, C, H, W] are repeated at every step (direct encoding)."""
        cfg = self.config
        want = (cfg.in_channels, cfg.img_size, cfg.img_size)
        if cfg.event_input:
            if x.dim() != 5 or tuple(x.shape[1:]) != (self.T, *want):
                raise ValueError(f"event input must be [B, {self.T}, {', '.join(map(str, want))}] (batch, time "
                                 f"steps, polarity channels, height, width), got {list(x.shape)}")
            return x.permute(1, 0, 2, 3, 4)
        return x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, C, H, W] (repeated at every step), or for event input (config.event_input) frames
        [B, T, C, H, W] -> logits [B, classes]. Neuron states are reset before every call, as the official
        training loop does after every batch."""
        functional.reset_net(self)
        x = self.time_major_input(self.normalize_input(img))
        return self.head(self.forward_features(x).mean(0))


def lif_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every LIF neuron layer of `model` by module path (LIFNode and the learned-tau ParametricLIFNode)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (neuron.LIFNode, neuron.ParametricLIFNode))}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
