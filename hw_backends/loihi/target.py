"""The Loihi 2 target (lava-nc): lower (SSA in the form that needs fewer cores unless one is asked for),
quantise, schedule, map, and write the artifact directory atomically. Registers `loihi`."""
from __future__ import annotations

from pathlib import Path

from convert import ir
from convert.options import SSA_FORMS, ConversionOptions
from ground.atomic import atomic_dir

from ground.errors import UserError

from ..base import FLOAT_MODE, Backend, CompiledNetwork, ModeError, register
from .compile import compile_target
from .console import build_lines
from .export import write_artifacts
from .flags import OPTION_FIELDS, add_engine_arguments, add_loihi_arguments
from .report_section import placement_doc, placement_section


@register
class LoihiBackend(Backend):
    name = "loihi"
    description = ("Intel Loihi 2 via lava-nc (placed on --hw loihi2 or loihi1): 8-bit fixed point, hardware timing "
                   "(delays, relays, resets), "
                   "network.h5 + quantization.json + resources.json; runnable with "
                   "Loihi2SimCfg(select_tag='fixed_pt')")
    output_kind = "dir"
    default_suffix = "_loihi"
    ssa_forms = SSA_FORMS
    run_modes = {"float": FLOAT_MODE,
                 "fixed": "Loihi fixed point: the lowered graph quantised (hw_backends.loihi.export.build) and run "
                          "with integer kernels (sim.engine); logical time, per-hop delays not simulated"}
    default_mode = "fixed"  # the network spk-convert exports
    report_description = ("the lowered graph for Loihi (in float mode the counts equal the nir target's; use --mode "
                          "fixed for the quantised network)")
    default_energy_model = "loihi"
    report_section = "loihi_placement"
    report_section_modes = ("fixed",)  # the graph the placement is of
    option_fields = OPTION_FIELDS
    engines = {"lava": "the export on lava-nc's bit-accurate CPU models (Loihi fixed point), an isolated process per "
                       "run, compared exactly with the fixed-point simulator"}
    default_for = ("spk-parity",)

    def compile(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> CompiledNetwork:
        """Every SSA form compiled (compile.py), the requested one kept, or for "auto" the one that needs fewer
        cores, on the hardware profile `options.hw`; the other profiles' cores and chips of the kept form are
        reported beside it. `progress`: a bar over those builds and placements where stderr is a terminal."""
        self.resolve_ssa(options.ssa)
        return compile_target(frontend, options, progress)

    def export(self, build, out_path, model_info: dict) -> dict:
        t = build.target
        q = t.quantization
        options = {"target": "loihi", "ssa": t.ssa_form, "ssa_requested": build.options.ssa,
                   "ssa_order": build.options.ssa_order, "vth_mant": q["vth_mant_target"],
                   "weight_bits": q["weight_bits"], "input_scale": q["input"]["payload_scale"],
                   "hw": t.resources["profile"]["name"]}
        with atomic_dir(Path(out_path)) as stage:
            manifest = write_artifacts(stage, t, model_info, options)
        return {"manifest": manifest, "ssa": t.ssa_forms, "resources": t.resources["total"],
                "hw": t.resources["profile"]["name"], "other_profiles": t.resources.get("other_profiles", {}),
                "warnings": len(t.warnings),
                "artifacts": [str(Path(out_path) / f) for f in ["manifest.json", *manifest["files"]]]}

    def add_arguments(self, group) -> None:
        add_loihi_arguments(group)

    def add_engine_arguments(self, group) -> None:
        add_engine_arguments(group)

    def check_engine(self, engine: str, mode: str, args) -> None:
        super().check_engine(engine, mode, args)
        if mode != "fixed":
            raise ModeError(f"--engine {engine} runs Loihi fixed point; use --mode fixed")
        if args.lava_timeout <= 0 or args.lava_retries < 0:
            raise UserError("--lava-timeout must be > 0 and --lava-retries >= 0")

    def open_engine(self, engine: str, network, args):
        from .lava_engine import LavaEngine  # the Lava runtime's parent side, only when asked for
        return LavaEngine(network, timeout_s=args.lava_timeout, retries=args.lava_retries)

    def describe_build(self, summary: dict, out_path) -> list[str]:
        return build_lines(summary, out_path)

    def report_section_content(self, target: CompiledNetwork, graph: ir.Graph, spike_counts: dict, samples: int,
                               steps: int) -> dict:
        return placement_section(target, graph, spike_counts, samples, steps)

    def report_section_doc(self, section: dict, num) -> list[tuple]:
        return placement_doc(section, num)
