"""The one conversion route: `convert(checkpoint or ModelSource, ConversionOptions) -> Build`. spk-convert,
spk-parity, spk-report and Python users all take it, so the same options give the same network everywhere.

    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    build = convert("model.pt", ConversionOptions(target="loihi"))
    build.graph, build.numeric     # what the target runs, and in which arithmetic
    build.export("model_loihi")    # the target's artifacts, written atomically
"""
from __future__ import annotations

from dataclasses import dataclass

from convert import ir
from convert.frontend import spikformer_to_ir
from convert.options import ConversionOptions
from convert.source import ModelSource, load_source

from .base import Backend, CompiledNetwork, get_backend


@dataclass
class Build:
    options: ConversionOptions
    source: ModelSource
    backend: Backend
    frontend: ir.Graph        # the model as IR, before any pass
    target: CompiledNetwork

    # the target build's fields, read through
    @property
    def lowered(self) -> ir.Graph:
        return self.target.lowered

    @property
    def graph(self) -> ir.Graph:
        return self.target.graph

    @property
    def numeric(self) -> str:
        return self.target.numeric

    @property
    def ssa_form(self) -> str:
        return self.target.ssa_form

    @property
    def schedule(self) -> dict | None:
        return self.target.schedule

    @property
    def quantization(self) -> dict | None:
        return self.target.quantization

    @property
    def resources(self) -> dict | None:
        return self.target.resources

    @property
    def warnings(self) -> list:
        return self.target.warnings

    def runnable(self, mode: str) -> tuple[ir.Graph, str]:
        """(graph, numeric) a simulator runs for `mode`: "fixed" the target's own arithmetic (Loihi fixed point),
        "float" the lowered graph in reference semantics."""
        if mode == "float":
            return self.lowered, "float"
        if mode == "fixed":
            if self.numeric == "float":
                raise ValueError(f"target {self.backend.name!r} has float semantics; use mode float")
            return self.graph, self.numeric
        raise ValueError(f"unknown mode {mode!r}; use float or fixed")

    def quantization_facts(self) -> dict | None:
        """The quantisation choices parity and energy reports record (None for a float target)."""
        q = self.quantization
        return None if q is None else {"weight_bits": q["weight_bits"], "vth_mant": q["vth_mant_target"],
                                       "input_payload_scale": q["input"]["payload_scale"]}

    def model_info(self, **extra) -> dict:
        """What the artifacts record about the model and the conversion."""
        return {**self.source.facts(), **extra, "options": self.options.recorded()}

    def export(self, out_path, **info) -> dict:
        return self.backend.export(self, out_path, self.model_info(**info))


def convert(source, options: ConversionOptions | None = None, progress: bool = False) -> Build:
    """`source`: a checkpoint path (loaded safely, torch.load weights_only) or a ModelSource. `progress`: a
    progress bar over the target's long steps where stderr is a terminal."""
    options = options or ConversionOptions()
    backend = get_backend(options.target)  # an unknown target fails before any work
    if not isinstance(source, ModelSource):  # a missing or unsafe file: CheckpointError from spikformer.checkpoint
        source = load_source(source, preset=options.preset, device=options.device, weights=options.weights,
                             heads=options.heads, time_steps=options.time_steps, img_size=options.img_size,
                             normalize=options.normalize)
    frontend = spikformer_to_ir(source.model)
    if source.input_grid is not None:  # a fixed-point target encodes the input on the training data's grid
        frontend.metadata["input_value_grid"] = source.input_grid
    if frontend.metadata.get("input_per_step") and source.binary_events:
        frontend.metadata["input_binary"] = True  # event frames of 0/1: binary spikes on chip, not graded
    target = backend.compile(frontend, options, progress=progress)
    target.graph.validate()
    return Build(options, source, backend, frontend, target)
