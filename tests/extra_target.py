"""A target defined outside hw_backends/, to show that a target is one module: the lowered graph (as the nir target
lowers it: binary SSA, float semantics) written as a JSON file of its node names and kinds. Importing this module
registers it (hw_backends.base.register); no other module names it."""
from __future__ import annotations

import json

from convert import ir
from convert.options import ConversionOptions
from convert.passes import lower
from ground.atomic import write_text
from hw_backends.base import Backend, CompiledNetwork, register


@register
class NodeNamesBackend(Backend):
    name = "node-names"
    description = "the lowered graph's node names and kinds as one JSON file (a test target)"
    output_kind = "file"
    default_suffix = ".names.json"
    report_description = "the lowered graph (binary SSA), as the node-names target lowers it"

    def compile(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> CompiledNetwork:
        form = self.resolve_ssa(options.ssa)
        g = lower(frontend, ssa_order=options.ssa_order, ssa_form=form)
        return CompiledNetwork(lowered=g, graph=g, numeric="float", ssa_form=form)

    def export(self, build, out_path, model_info: dict) -> dict:
        nodes = {name: type(node).__name__ for name, node in build.graph.nodes.items()}
        write_text(out_path, json.dumps({"model_info": model_info, "nodes": nodes}, indent=1, sort_keys=True))
        return {"nodes": len(nodes), "artifacts": [str(out_path)]}

    def describe_artifacts(self, summary: dict) -> list[str]:
        return [f"node names: {summary['nodes']} nodes"]
