"""Random-weight Spikformers with non-trivial BatchNorm statistics (a fresh model's BN is the identity, which
would hide folding errors): for benchmarks and tests where trained values do not matter (resources, timing,
exactness of the lowering, speed)."""
from __future__ import annotations

import torch

from .model import Spikformer
from .presets import PRESETS


def randomized_model(preset: str = "digits-2-64", seed: int = 0, attn_drive: float = 0.0, **changes) -> Spikformer:
    """`attn_drive` is added to the q/k/v BatchNorm biases so that Q, K, V fire often enough for the attention
    LIF to fire in a random model (a silent attention would test nothing)."""
    torch.manual_seed(seed)
    cfg = PRESETS[preset].with_(**changes) if changes else PRESETS[preset]
    m = Spikformer(cfg).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.2, 0.8)
            if isinstance(mod, torch.nn.Linear) or (isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d))
                                                     and mod.kernel_size in ((1,), (1, 1))):
                mod.weight.normal_(0, 0.25)  # the token-wise synapses of every layout (Linear or kernel-1 conv)
        for name, mod in m.named_modules():
            if name.endswith(("q_bn", "k_bn", "v_bn")):
                mod.bias += attn_drive
    return m
