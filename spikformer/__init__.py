"""Spikformer model, presets, data, training and checkpoints."""
from .model import Spikformer
from .presets import PRESETS, SpikformerConfig, get_preset

__all__ = ["Spikformer", "SpikformerConfig", "PRESETS", "get_preset"]
