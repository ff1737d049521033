"""The NIR target: the lowered graph (binary SSA, standard node types only) as one gzip-compressed NIR 1.0.8
file, written atomically. See nir_io.py for the mapping and the time convention."""
from __future__ import annotations

from convert import ir
from convert.options import ConversionOptions
from convert.passes import lower
from ground.cli import count_text

from ..base import Backend, CompiledNetwork, register
from . import nir_io


@register
class NIRBackend(Backend):
    name = "nir"
    description = ("NIR 1.0.8 graph file (HDF5): standard nodes only, type-checked by stock nir.read, dt = 1e-4, "
                   "thresholds that reproduce the model's >= under NIR's >, SSA as threshold neurons and 1x1 "
                   "Conv2d / SumPool2d / Scale synapses on the token grid")
    output_kind = "file"
    default_suffix = ".nir"
    ssa_forms = ("binary",)  # graded spikes and product neurons have no NIR node type
    default_for = ("spk-convert", "spk-report")  # their --target default: the standard graph, any chip
    report_description = "the lowered graph (spike-only synapses, as exported to NIR)"

    def compile(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> CompiledNetwork:
        form = self.resolve_ssa(options.ssa)
        g = lower(frontend, ssa_order=options.ssa_order, ssa_form=form)
        return CompiledNetwork(lowered=g, graph=g, numeric="float", ssa_form=form)

    def export(self, build, out_path, model_info: dict) -> dict:
        summary = nir_io.write_nir(out_path, build.graph, model_info=model_info)
        summary["artifacts"] = [summary["path"]]
        return summary

    def describe_artifacts(self, summary: dict) -> list[str]:
        counts = summary["nir_nodes"]
        return [f"NIR: {sum(counts.values())} nodes ({count_text(counts)}), {summary['nir_edges']} edges"]
