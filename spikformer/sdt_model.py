"""The Spike-driven Transformer (Yao et al., NeurIPS 2023) as BICLab/Spike-Driven-Transformer builds it
(model/spikeformer.py, module/sps.py, module/ms_conv.py): the same module names, types, shapes and registration
order, so official state dicts load strictly, and the same order of operations in every forward.

What differs from Spikformer (spikformer/model.py):
- Membrane shortcut: the residual stream is the float output of BatchNorm; every branch starts with a LIF
  (`shortcut_lif`, `fc1_lif`, `fc2_lif`), so every convolution is driven by spikes.
- SDSA: k * v (AND of two spike tensors), summed over tokens, `talking_heads_lif` (threshold 0.5), then q * kv
  (AND again); proj conv + BN added to the stream. With `dvs_mode`, `Erode` (a 3x3 max-pool) on k, v, k * v and
  the result. `attn_lif` and the `talking_heads` Conv1d are built (they are in the state dict) but never called,
  as upstream.
- MS_SPS: conv + BN + LIF stages with a max-pool after the LIF where `pooling_stat` says so, except the last
  stage, whose max-pool acts on the BatchNorm output; that pooled BN output (`x_feat`) is added to rpe_bn's
  output, a float residual (`rpe_lif` is built but never called, as upstream).
- Head: the float stream averaged over tokens, then `head_lif`, then the classifier, averaged over time steps.
- spike_mode "plif": MultiStepParametricLIFNode (a learned tau per layer, parameter `w`).
The official neurons are spikingjelly.clock_driven's MultiStep(Parametric)LIFNode(tau 2, detach_reset,
backend cupy); here spikingjelly.activation_based's (Parametric)LIFNode in multi-step mode on the torch backend:
the same arithmetic and the same state-dict keys."""
from __future__ import annotations

import torch
import torch.nn as nn

from .model import TAU, InputNormalization, functional, neuron, surrogate
from .sdt_presets import SDTConfig


def make_neuron(spike_mode: str, v_threshold: float = 1.0) -> nn.Module:
    if spike_mode == "plif":
        return neuron.ParametricLIFNode(init_tau=TAU, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                                        surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m",
                                        backend="torch")
    return neuron.LIFNode(tau=TAU, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                          surrogate_function=surrogate.Sigmoid(), detach_reset=True, step_mode="m", backend="torch")


class Erode(nn.Module):
    """A 3x3 max-pool over the last two dimensions, stride 1 (nn.MaxPool3d((1, 3, 3), 1, (0, 1, 1)))."""

    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 1, 1), padding=(0, 1, 1))

    def forward(self, x):
        return self.pool(x)


class MS_SPS(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, pooling_stat: str, spike_mode: str):
        super().__init__()
        self.pooling_stat = pooling_stat
        chans = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        for i in range(4):
            s = "" if i == 0 else str(i)
            setattr(self, f"proj_conv{s}", nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{s}", nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"proj_lif{s}", make_neuron(spike_mode))
            setattr(self, f"maxpool{s}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1,
                                                     ceil_mode=False))
        self.rpe_conv = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dim)
        self.rpe_lif = make_neuron(spike_mode)  # never called, as upstream

    def forward(self, x):  # [T, B, C, H, W] -> the float stream [T, B, D, H', W']
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        for i in range(3):
            s = "" if i == 0 else str(i)
            x = getattr(self, f"proj_bn{s}")(getattr(self, f"proj_conv{s}")(x))
            x = getattr(self, f"proj_lif{s}")(x.reshape(T, B, *x.shape[1:]).contiguous()).flatten(0, 1)
            if self.pooling_stat[i] == "1":
                x = getattr(self, f"maxpool{s}")(x)
        x = self.proj_bn3(self.proj_conv3(x))
        if self.pooling_stat[3] == "1":
            x = self.maxpool3(x)  # on the BatchNorm output, as upstream
        x_feat = x
        x = self.proj_lif3(x.reshape(T, B, *x.shape[1:]).contiguous()).flatten(0, 1)
        x = self.rpe_bn(self.rpe_conv(x))
        return (x + x_feat).reshape(T, B, *x.shape[1:]).contiguous()


def sdsa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_lif: nn.Module, erode: nn.Module | None):
    """Spike-driven self-attention on heads [T, B, h, N, d]: q AND LIF(sum over tokens of (k AND v))."""
    kv = k.mul(v)
    if erode is not None:
        kv = erode(kv)
    kv = kv_lif(kv.sum(dim=-2, keepdim=True))
    x = q.mul(kv)
    return erode(x) if erode is not None else x


class MS_SSA_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int, spike_mode: str, dvs: bool):
        super().__init__()
        self.dim, self.num_heads, self.dvs = dim, num_heads, dvs
        if dvs:
            self.pool = Erode()
        self.scale = 0.125  # never used in the forward, as upstream
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(dim))
            setattr(self, f"{name}_lif", make_neuron(spike_mode))
        self.attn_lif = make_neuron(spike_mode, 0.5)  # never called, as upstream
        self.talking_heads = nn.Conv1d(num_heads, num_heads, kernel_size=1, stride=1, bias=False)  # never called
        self.talking_heads_lif = make_neuron(spike_mode, 0.5)
        self.proj_conv = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm2d(dim)
        self.shortcut_lif = make_neuron(spike_mode)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        return x.flatten(3).transpose(-1, -2).reshape(T, B, H * W, self.num_heads, C // self.num_heads) \
            .permute(0, 1, 3, 2, 4).contiguous()

    def forward(self, x):
        T, B, C, H, W = x.shape
        identity = x
        x = self.shortcut_lif(x)
        x_for_qkv = x.flatten(0, 1)
        qkv = []
        for name in ("q", "k", "v"):
            y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x_for_qkv)).reshape(T, B, C, H, W)
            y = getattr(self, f"{name}_lif")(y.contiguous())
            if self.dvs and name != "q":
                y = self.pool(y)
            qkv.append(self.heads(y))
        x = sdsa(*qkv, self.talking_heads_lif, self.pool if self.dvs else None)
        x = x.transpose(3, 4).reshape(T, B, C, H, W).contiguous()
        x = self.proj_bn(self.proj_conv(x.flatten(0, 1))).reshape(T, B, C, H, W).contiguous()
        return x + identity


class MS_MLP_Conv(nn.Module):
    def __init__(self, dim: int, hidden: int, spike_mode: str):
        super().__init__()
        self.res = dim == hidden
        self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden)
        self.fc1_lif = make_neuron(spike_mode)
        self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = make_neuron(spike_mode)
        self.c_hidden, self.c_output = hidden, dim

    def forward(self, x):
        T, B, C, H, W = x.shape
        identity = x
        x = self.fc1_lif(x)
        x = self.fc1_bn(self.fc1_conv(x.flatten(0, 1))).reshape(T, B, self.c_hidden, H, W).contiguous()
        if self.res:
            x = identity + x
            identity = x
        x = self.fc2_lif(x)
        x = self.fc2_bn(self.fc2_conv(x.flatten(0, 1))).reshape(T, B, C, H, W).contiguous()
        return x + identity


class MS_Block_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, spike_mode: str, dvs: bool):
        super().__init__()
        self.attn = MS_SSA_Conv(dim, num_heads, spike_mode, dvs)
        self.drop_path = nn.Identity()  # drop_path 0 at inference
        self.mlp = MS_MLP_Conv(dim, int(dim * mlp_ratio), spike_mode)

    def forward(self, x):
        return self.mlp(self.attn(x))


class SpikeDrivenTransformer(InputNormalization, nn.Module):
    def __init__(self, config: SDTConfig):
        super().__init__()
        self.config = config
        self.T = config.T
        self.num_classes = config.num_classes
        self.patch_embed = MS_SPS(config.in_channels, config.embed_dim, config.pooling_stat, config.spike_mode)
        self.block = nn.ModuleList([MS_Block_Conv(config.embed_dim, config.num_heads, config.mlp_ratio,
                                                  config.spike_mode, config.dvs_mode) for _ in range(config.depth)])
        self.head_lif = make_neuron(config.spike_mode)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @staticmethod
    def ir_layout(name: str, y: torch.Tensor) -> torch.Tensor | None:
        """The output of neuron `name` in the IR's layout, where it differs from the images-and-tokens default
        (analysis/reference.py): talking_heads_lif [T, B, h, 1, d] -> [T, B, h*d, 1] (h outer, as the heads split
        the channels); head_lif [T, B, C] -> [T, B, C, 1] (a neuron over one token)."""
        if name.endswith(".talking_heads_lif"):
            return y.transpose(-1, -2).flatten(2, 3)
        if name == "head_lif":
            return y.unsqueeze(-1)
        return None

    def forward_features(self, x):
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.flatten(3).mean(3)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, C, H, W] (repeated at every step) or, with config.event_input, frames [B, T, C, H, W] ->
        logits [B, classes], averaged over the time steps (a TET model's per-step logits, averaged). Neuron
        states are reset before every call; images are normalised as the official loader did where the model has a
        data config (set_input_normalization)."""
        functional.reset_net(self)
        img = self.normalize_input(img)
        if img.dim() < 5:
            x = img.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        else:
            x = img.transpose(0, 1).contiguous()
        x = self.head(self.head_lif(self.forward_features(x)))
        return x.mean(0)
