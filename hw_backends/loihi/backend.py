"""The Loihi 2 target: lower (SSA in the form that needs fewer cores unless asked), quantise, schedule, map,
and write the artifact directory atomically. Reports the cost of both SSA forms."""
from __future__ import annotations

from pathlib import Path

from convert import ir
from convert.passes import SSA_FORMS, lower
from spikformer.atomic import atomic_dir

from .export import build, write_artifacts

DESCRIPTION = ("Intel Loihi 2 via lava-nc: 8-bit fixed point, hardware timing (delays, relays, resets), "
               "network.h5 + quantization.json + resources.json; runnable with Loihi2SimCfg(select_tag='fixed_pt')")


def choose_and_build(frontend_graph: ir.Graph, ssa: str = "auto", ssa_order: str = "auto",
                     **quant) -> tuple[dict, dict]:
    """-> (the chosen build, {form: resource totals} for both forms). `quant`: build()'s quantisation options
    (vth_mant, weight_bits, input_scale)."""
    builds, totals = {}, {}
    for form in SSA_FORMS:
        lowered = lower(frontend_graph, ssa_order=ssa_order, ssa_form=form)
        b = build(lowered, **quant)
        b["lowered"] = lowered
        totals[form] = dict(b["resources"]["total"], pipeline_depth=b["schedule"]["max_depth"])
        builds[form] = b
    chosen = min(SSA_FORMS, key=lambda f: totals[f]["cores"]) if ssa == "auto" else ssa
    if chosen not in SSA_FORMS:
        raise ValueError(f"unknown --ssa {ssa!r}; choose auto or one of {SSA_FORMS}")
    return builds[chosen], {"chosen": chosen, "requested": ssa, "by_form": totals}


def export_loihi(frontend_graph: ir.Graph, out_dir, info: dict, ssa: str = "auto", ssa_order: str = "auto",
                 built: tuple | None = None, **quant) -> dict:
    built, forms = built or choose_and_build(frontend_graph, ssa, ssa_order, **quant)
    q = built["quantization"]
    options = {"target": "loihi", "ssa": forms["chosen"], "ssa_requested": forms.get("requested", ssa), "ssa_order": ssa_order,
               "vth_mant": q["vth_mant_target"], "weight_bits": q["weight_bits"],
               "input_scale": q["input"]["payload_scale"]}
    built["resources"]["ssa_forms"] = forms
    with atomic_dir(Path(out_dir)) as stage:
        manifest = write_artifacts(stage, built, info, options)
    return {"manifest": manifest, "ssa": forms, "resources": built["resources"]["total"],
            "warnings": len(built["quantization"]["warnings"]) + len(built["resources"]["warnings"]),
            "artifacts": [str(Path(out_dir) / f) for f in ["manifest.json", *manifest["files"]]]}
