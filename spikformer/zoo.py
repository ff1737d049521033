"""The models this project builds, by config type: a SpikformerConfig builds a Spikformer (spikformer.model), an
SDTConfig a Spike-driven Transformer (spikformer.sdt_model)."""
from __future__ import annotations

import torch

from .architecture import preset_named
from .model import Spikformer
from .presets import SpikformerConfig
from .sdt_architecture import sdt_preset_named
from .sdt_model import SpikeDrivenTransformer
from .sdt_presets import SDTConfig


def build_model(config: SpikformerConfig | SDTConfig) -> torch.nn.Module:
    """The model a config describes, freshly initialised."""
    return SpikeDrivenTransformer(config) if isinstance(config, SDTConfig) else Spikformer(config)


def named_preset(config: SpikformerConfig | SDTConfig) -> str | None:
    """The preset of either architecture equal to `config`, if any."""
    return sdt_preset_named(config) if isinstance(config, SDTConfig) else preset_named(config)
