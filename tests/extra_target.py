"""A target defined outside hw_backends/, to show that a target is one module: the lowered graph (as the nir target
lowers it: binary SSA, float semantics) written as a JSON file of its node names and kinds, with one engine of its
own (`spk-parity --engine replay`: the simulator again, with `--replay-flips K` spikes flipped on purpose, so the
engine cross-check's count can be checked against a known answer). Importing this module registers it
(hw_backends.base.register); no other module names it."""
from __future__ import annotations

import json

import numpy as np
import torch

from analysis.engine_records import simulator_records
from convert import ir
from convert.options import ConversionOptions
from convert.passes import lower
from ground.atomic import write_text
from hw_backends.base import Backend, CompiledNetwork, ModeError, register
from hw_backends.engines import HardwareEngine, RunRecords
from sim.engine import Engine


class ReplayEngine(HardwareEngine):
    """The float simulator as an engine, the first `flips` recorded spikes of the first recorded neuron layer
    flipped (0 <-> 1) in each run."""
    name = "replay"
    label = "Replay"
    numeric = "float"

    def __init__(self, graph: ir.Graph, flips: int):
        neurons = [n for n in graph.topo_order() if graph.nodes[n].is_neuron]
        super().__init__(graph, next(n for n in neurons if graph.nodes[n].is_readout), neurons)
        self.flips = flips

    def run(self, images, record, readout_steps: bool = True, progress: bool = False) -> RunRecords:
        sim = Engine(self.graph, numeric="float").run(torch.as_tensor(np.asarray(images)),
                                                       record=list(record) + [self.readout])
        out = simulator_records(sim, self.graph, self.readout, list(record))
        if record and self.flips:
            first = out.spikes[record[0]].reshape(-1)
            first[:self.flips] = 1 - first[:self.flips]
        self.last_facts = {"flipped": self.flips if record else 0}
        return out


@register
class NodeNamesBackend(Backend):
    name = "node-names"
    description = "the lowered graph's node names and kinds as one JSON file (a test target)"
    output_kind = "file"
    default_suffix = ".names.json"
    report_description = "the lowered graph (binary SSA), as the node-names target lowers it"
    engines = {"replay": "the float simulator again, --replay-flips K spikes flipped on purpose (a test engine)"}

    def compile(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> CompiledNetwork:
        form = self.resolve_ssa(options.ssa)
        g = lower(frontend, ssa_order=options.ssa_order, ssa_form=form)
        return CompiledNetwork(lowered=g, graph=g, numeric="float", ssa_form=form)

    def export(self, build, out_path, model_info: dict) -> dict:
        nodes = {name: type(node).__name__ for name, node in build.graph.nodes.items()}
        write_text(out_path, json.dumps({"model_info": model_info, "nodes": nodes}, indent=1, sort_keys=True))
        return {"nodes": len(nodes), "artifacts": [str(out_path)]}

    def add_engine_arguments(self, group) -> None:
        group.add_argument("--replay-flips", type=int, default=0, help="spikes the replay engine flips per run")

    def check_engine(self, engine: str, mode: str, args) -> None:
        super().check_engine(engine, mode, args)
        if args.replay_flips < 0:
            raise ModeError("--replay-flips must be >= 0")

    def open_engine(self, engine: str, network: CompiledNetwork, args) -> HardwareEngine:
        return ReplayEngine(network.graph, args.replay_flips)

    def describe_artifacts(self, summary: dict) -> list[str]:
        return [f"node names: {summary['nodes']} nodes"]
