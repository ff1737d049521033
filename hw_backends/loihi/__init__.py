"""The Loihi 2 target (lava-nc): registers `loihi` with the back-end registry."""
from __future__ import annotations

from ..base import Backend, register
from . import backend
from .quantize import add_quant_arguments


@register
class LoihiBackend(Backend):
    name = "loihi"
    description = backend.DESCRIPTION
    output_kind = "dir"
    default_suffix = "_loihi"

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--ssa", default="auto", choices=["auto", "binary", "graded"],
                            help="loihi: SSA as binary threshold cascades or Loihi 2 graded spikes x product "
                                 "neurons; auto takes the one that needs fewer cores (default)")
        add_quant_arguments(parser)

    def prepare(self, frontend_graph, options: dict):
        quant = {k: options[k] for k in ("vth_mant", "weight_bits", "input_scale") if k in options}
        self._built = backend.choose_and_build(frontend_graph, options.get("ssa", "auto"),
                                               options.get("ssa_order", "auto"), **quant)
        return self._built[0]["lowered"]

    def export(self, graph, model_info: dict, out_path, options: dict) -> dict:
        summary = backend.export_loihi(None, out_path, model_info, built=self._built)
        forms = summary["ssa"]
        for form, tot in forms["by_form"].items():
            mark = " (chosen)" if form == forms["chosen"] else ""
            print(f"  loihi SSA {form}{mark}: {tot['cores']:,} cores, {tot['chips']:,} chips, "
                  f"{tot['neurons']:,} neurons, {tot['synapses']:,} synapses, depth {tot['pipeline_depth']}")
        if summary["warnings"]:
            print(f"  loihi: {summary['warnings']} warnings, see {out_path}/summary.md")
        return summary
