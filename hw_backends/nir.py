"""The NIR target: the lowered graph (binary SSA, standard node types only) as one gzip-compressed NIR 1.0.8
file, written atomically. See convert/nir_io.py for the mapping and the time convention."""
from __future__ import annotations

from convert import nir_io

from .base import Backend, register


@register
class NIRBackend(Backend):
    name = "nir"
    description = ("NIR 1.0.8 graph file (HDF5, gzip): standard nodes only, dt = 1 time convention, SSA as "
                   "threshold neurons and structured Conv1d synapses")
    output_kind = "file"
    default_suffix = ".nir"

    def export(self, graph, model_info: dict, out_path, options: dict) -> dict:
        summary = nir_io.write_nir(out_path, graph, model_info=model_info)
        summary["artifacts"] = [summary["path"]]
        return summary
