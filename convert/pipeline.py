"""The steps every command shares: load a checkpoint safely, build the IR, lower it."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from spikformer.checkpoint import load_checkpoint
from spikformer.presets import SpikformerConfig

from . import ir
from .frontend import spikformer_to_ir
from .passes import lower


@dataclass
class Converted:
    model: object
    config: SpikformerConfig
    metadata: dict
    graph: ir.Graph
    info: dict  # model facts for every artifact and report


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_grid_of(meta) -> int | None:
    """The training data's exact value grid from checkpoint metadata (dataset.value_grid, see
    spikformer.data.value_grid); None when absent or not a positive integer (metadata may hold anything)."""
    ds = meta.get("dataset") if isinstance(meta, dict) else None
    grid = ds.get("value_grid") if isinstance(ds, dict) else None
    return grid if isinstance(grid, int) and not isinstance(grid, bool) and grid > 0 else None


def tag_input_grid(graph: ir.Graph, meta: dict) -> None:
    """Copies the input grid into the graph, where a fixed-point target uses it to encode inputs exactly."""
    grid = input_grid_of(meta)
    if grid is not None:
        graph.metadata["input_value_grid"] = grid


def load_and_lower(path, preset: str | None = None, device: str = "cpu", ssa_form: str = "binary",
                   ssa_order: str = "auto") -> Converted:
    model, cfg, meta = load_checkpoint(path, preset=preset, device=device)
    graph = lower(spikformer_to_ir(model), ssa_order=ssa_order, ssa_form=ssa_form)
    graph.metadata["source_checkpoint"] = Path(path).name
    tag_input_grid(graph, meta)
    info = {"name": Path(path).name, "checkpoint_sha256": file_sha256(path), "preset": preset,
            "config": cfg.to_dict(), "dataset": meta.get("dataset"), "test_accuracy": meta.get("test_accuracy")}
    return Converted(model, cfg, meta, graph, info)
