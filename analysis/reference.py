"""Recording the PyTorch reference: every LIF and max-pool module's output per time step, in the IR layout
(images (C, H, W), tokens (C, N)), keyed by module path. `images` is the model's input: [B, C, H, W], or
[B, T, C, H, W] for event input (config.event_input). A model whose neurons are laid out otherwise says how in
its own `ir_layout(name, output)` (the Spike-driven Transformer: neurons over heads and over the token mean)."""
from __future__ import annotations

import torch
import torch.nn as nn

from spikformer.model import neuron  # SpikingJelly's, through spikformer.model, which silences its banner

TOKEN_LAYOUT_PREFIXES = ("block.",)


def record_reference(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    T = model.T
    tokens_last = getattr(model, "tokens_last", True)  # CIFAR layout [T, B, N, C]; ImageNet/DVS channels first
    recs: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name):
        def f(mod, inp, out):
            y = out.detach()
            own = own_layout(name, y) if own_layout is not None else None
            if own is not None:
                y = own
            elif isinstance(mod, nn.MaxPool2d):
                y = y.reshape(T, -1, *y.shape[1:])
            elif name.startswith(TOKEN_LAYOUT_PREFIXES):
                if y.dim() == 5:  # ImageNet layout [T, B, C, H, W] -> [T, B, C, N]
                    y = y.flatten(-2)
                elif y.dim() == 4 and tokens_last:  # [T, B, N, C] -> [T, B, C, N]
                    y = y.transpose(-1, -2)
            recs[name] = y.clone()
        return f

    own_layout = getattr(model, "ir_layout", None)
    for name, m in model.named_modules():
        if isinstance(m, (neuron.LIFNode, neuron.ParametricLIFNode, nn.MaxPool2d)):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    return logits.detach(), recs
