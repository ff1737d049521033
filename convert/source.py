"""A model to convert: a checkpoint loaded safely (spikformer.checkpoint) or a model in memory, with the facts
every artifact and report records about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ground.hashing import file_sha256
from spikformer.checkpoint import describe_loaded, load_checkpoint
from spikformer.model import Spikformer
from spikformer.presets import SpikformerConfig


@dataclass
class ModelSource:
    model: Spikformer
    config: SpikformerConfig
    metadata: dict = field(default_factory=dict)  # the checkpoint's metadata (may hold anything)
    name: str = "model"
    sha256: str | None = None                      # of the checkpoint file
    preset: str | None = None                      # --preset as given (None: the checkpoint's own config)

    @property
    def input_grid(self) -> int | None:
        return input_grid_of(self.metadata)

    @property
    def binary_events(self) -> bool:
        """The training data's event frames held counts 0/1 only (dataset max_count 1)."""
        ds = self.metadata.get("dataset")
        return isinstance(ds, dict) and ds.get("max_count") == 1

    def facts(self) -> dict:
        """The model facts artifacts record (name, checksum, config, training data and accuracy)."""
        return {"name": self.name, "checkpoint_sha256": self.sha256,
                "preset": self.preset or self.metadata.get("preset"),
                "config": self.config.to_dict(), "architecture_origin": self.metadata.get("architecture_origin"),
                "data_config": self.metadata.get("data_config"), "dataset": self.metadata.get("dataset"),
                "test_accuracy": self.metadata.get("test_accuracy"), "checkpoint_source": self.metadata.get("source")}

    def describe(self) -> list[str]:
        """The architecture and the data config, each value with its origin (two lines)."""
        return describe_loaded(self.config, self.metadata)


def load_source(path, preset: str | None = None, device: str = "cpu", weights: str = "model",
                heads: int | None = None, time_steps: int | None = None, img_size: int | None = None,
                normalize: str | None = None) -> ModelSource:
    model, config, meta = load_checkpoint(path, preset=preset, device=device, weights=weights, heads=heads,
                                          time_steps=time_steps, img_size=img_size, normalize=normalize)
    return ModelSource(model, config, meta, Path(path).name, file_sha256(path), preset)


def input_grid_of(meta) -> int | None:
    """The training data's exact value grid from checkpoint metadata (dataset.value_grid, see
    spikformer.data.value_grid); None when absent or not a positive integer (metadata may hold anything)."""
    ds = meta.get("dataset") if isinstance(meta, dict) else None
    grid = ds.get("value_grid") if isinstance(ds, dict) else None
    return grid if isinstance(grid, int) and not isinstance(grid, bool) and grid > 0 else None
