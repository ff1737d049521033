"""The Loihi 2 target (lava-nc): lower (SSA in the form that needs fewer cores unless one is asked for),
quantise, schedule, map, and write the artifact directory atomically. Registers `loihi`."""
from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from convert import ir
from convert.options import SSA_FORMS, ConversionOptions
from convert.passes import lower
from ground.atomic import atomic_dir

from ..base import FLOAT_MODE, Backend, TargetBuild, register
from .console import build_lines
from .export import build, write_artifacts
from .flags import OPTION_FIELDS, add_loihi_arguments
from hardware.loihi.limits import LoihiLimitError
from hardware.loihi.profiles import PROFILES, get_profile
from .report_section import placement_doc, placement_section
from .resources import map_resources


def _placement_hint(e: LoihiLimitError, options: ConversionOptions, profile) -> str:
    """What else a user can try when a population fits no core (fewer synapse bits per neuron, another profile);
    nothing for errors that are not about placement."""
    if "one neuron per core" not in e.limit:
        return ""
    tries = [f"--hw {name}" for name in PROFILES if name != profile.name]
    if options.weight_bits > 8:
        tries.insert(0, "--weight-bits 8")
    return ("a neuron's spikes must reach more cores than one core can address, even with its consumers re-cut "
            "(docs/limits.md section 4; Loihi would need fan-out relays, which this exporter does not build); try "
            + " or ".join(tries)) if tries else ""


def _totals_or_error(b: TargetBuild, profile) -> dict:
    try:
        return map_resources(b.graph, b.schedule["projections"], profile, b.schedule["max_depth"])["total"]
    except LoihiLimitError as e:
        return {"unplaceable": str(e)}


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

    def build(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> TargetBuild:
        """Builds every SSA form (the export reports the cost of each) and keeps the requested one, or for
        "auto" the one that needs fewer cores, on the hardware profile `options.hw`; the other profiles' cores and
        chips of the kept form are reported beside it. `progress`: a bar over those builds and placements (a
        minute each on the ImageNet presets) where stderr is a terminal."""
        self.resolve_ssa(options.ssa)
        profile = get_profile(options.hw)
        builds, totals, errors = {}, {}, {}
        others = [name for name in PROFILES if name != profile.name]
        with tqdm(total=len(SSA_FORMS) + len(others), desc="loihi build", unit="placement", leave=False,
                  disable=None if progress else True, file=sys.stderr) as bar:
            for form in SSA_FORMS:
                bar.set_postfix_str(f"SSA {form} on {profile.name}")
                try:
                    b = build(lower(frontend, ssa_order=options.ssa_order, ssa_form=form), vth_mant=options.vth_mant,
                              weight_bits=options.weight_bits, input_scale=options.input_scale, profile=profile)
                    totals[form] = dict(b.resources["total"], pipeline_depth=b.schedule["max_depth"])
                    builds[form] = b
                except LoihiLimitError as e:  # this form cannot be built or placed; "auto" may take the other
                    errors[form], totals[form] = e, {"unplaceable": str(e)}
                bar.update()
            if options.ssa != "auto" and options.ssa in errors:
                e = errors[options.ssa]
                raise LoihiLimitError(e.node, e.limit, e.used, e.allowed, _placement_hint(e, options, profile))
            if not builds:  # the last form's error, the others' named in it
                *failed, last = errors.items()
                e = last[1]
                raise LoihiLimitError(e.node, e.limit + "".join(f" (the {f} form fails too: {o})" for f, o in failed),
                                      e.used, e.allowed, _placement_hint(e, options, profile))
            chosen = min(builds, key=lambda f: totals[f]["cores"]) if options.ssa == "auto" else options.ssa
            b = builds[chosen]
            b.ssa_forms = {"chosen": chosen, "requested": options.ssa, "by_form": totals}
            b.resources["ssa_forms"] = b.ssa_forms
            b.resources["other_profiles"] = {}
            for name in others:
                bar.set_postfix_str(f"SSA {chosen} on {name}, for comparison")
                b.resources["other_profiles"][name] = _totals_or_error(b, get_profile(name))
                bar.update()
        return b

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

    def describe_build(self, summary: dict, out_path) -> list[str]:
        return build_lines(summary, out_path)

    def report_section_content(self, target: TargetBuild, graph: ir.Graph, spike_counts: dict, samples: int,
                               steps: int) -> dict:
        return placement_section(target, graph, spike_counts, samples, steps)

    def report_section_doc(self, section: dict, num) -> list[tuple]:
        return placement_doc(section, num)
