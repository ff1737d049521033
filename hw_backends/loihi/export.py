"""`spk-convert --target loihi -o DIR`: the artifact directory of a compiled build (compile.py), written into a
staging directory that the target moves into place atomically: manifest.json, network.h5, quantization.json,
resources.json, summary.md."""
from __future__ import annotations

import json
from pathlib import Path

from ground.hashing import file_sha256
from ground.versions import package_versions

from ..base import CompiledNetwork
from .network_file import write_network
from .placement import LIMIT_LABELS
from .timing import timing_report


def _json_default(obj):
    """What json cannot write as is (tensors, arrays, numpy scalars in a checkpoint's metadata): their values as
    lists, anything else as text."""
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


def _recut(r: dict) -> str:
    caps = [f"{pre} (fan-out {c['used']:,}, cap {c['cap']:,})" for pre, c in r.get("fan_out_caps", {}).items()
            if c["used"] <= c["cap"]]
    return f"; re-cut for {', '.join(caps)}" if caps else ""


def _placement_lines(res: dict) -> list[str]:
    prof, lim = res["profile"], res["limits"]
    lines = ["", f"## Placement on {prof['name']}", "",
             f"Per core: {lim['compartments']:,} compartments, {lim['synapse_bits']:,} synapse bits, "
             f"{lim['input_axons']:,} input axons, {lim['output_axons']:,} output axons; {prof['cores_per_chip']} "
             "cores per chip (figures, sources and assumptions: resources.json `profile`, docs/limits.md). "
             "Binding: the limit closest to its figure on the population's fullest core (none: the population fits "
             "one core); \"re-cut for\": cut under a cap on a producer's fan-out (output axons per producer neuron "
             "toward it), so that producer fits a core (docs/limits.md, section 4).", "",
             "| population | neurons | tile | cores | binding limit | used / allowed on the fullest core |",
             "|---|---|---|---|---|---|"]
    for name, r in res["populations"].items():
        b = r["binding"]
        used = r["worst_core"][r["tightest"]]
        lines.append(f"| {name} | {r['neurons']:,} | {'x'.join(map(str, r['tile']))} | {r['cores']:,} | "
                     f"{LIMIT_LABELS.get(b, b)}{_recut(r)} | {used['used']:,} / {used['allowed']:,} "
                     f"({LIMIT_LABELS[r['tightest']].split(' per')[0]}) |")
    return lines


def _normalization_lines(norm: dict | None) -> list[str]:
    """The folded input normalisation (quantization.json input.normalization), for summary.md."""
    if not norm:
        return []
    lines = [f"- input convention: {norm['convention']}"]
    for name, rec in sorted(norm["nodes"].items()):
        for fold in rec["folds"]:
            lo, hi = fold["bias_range"]
            lines.append(f"- input normalisation {name}: mean {rec['mean']} std {rec['std']} (x 255 as float32: "
                         f"{rec['mean255']} / {rec['std255']}), folded into {fold['folded_into']} with a per-neuron "
                         f"bias in [{lo:.6g}, {hi:.6g}] (model units, border terms included)")
    return lines


def summary_md(info: dict, compiled: CompiledNetwork, options: dict) -> str:
    res, q, t = compiled.resources, compiled.quantization, timing_report(compiled.schedule)
    tot = res["total"]
    prof = res["profile"]
    others = "".join(f"; {n}: cannot be placed ({o['unplaceable']})" if "unplaceable" in o else
                     f"; {n}: {o['cores']:,} cores, {o['chips']:,} chips" for n, o in
                     res.get("other_profiles", {}).items())
    lines = [f"# Loihi export: {info.get('name', 'model')}", "",
             f"- options: {json.dumps(options, sort_keys=True, default=_json_default)}",
             f"- populations {tot['populations']}, neurons {tot['neurons']:,}, synapses {tot['synapses']:,}",
             f"- hardware profile {prof['name']}: cores {tot['cores']:,}, chips {tot['chips']:,} "
             f"({prof['cores_per_chip']} cores per chip){others}",
             f"- pipeline latency {t['max_depth']} steps (the deepest population's depth), T = {t['T']}, sample period "
             f"{t['sample_period']} steps, {t['delayed_projections']} delayed projections (max delay {t['max_delay']})",
             f"- input: {q['input']['encoding']}",
             *_normalization_lines(q["input"].get("normalization")),
             "- spikes crossing chip boundaries: from simulated activity, `spk-report --target loihi` (energy.json "
             "`loihi_placement.chip_crossings`)", "", "## Warnings", ""]
    warns = q["warnings"] + res["warnings"]
    lines += [f"- {w['node']}: {w['what']}: {w['detail']}" for w in warns] or ["- none"]
    lines += ["", "## Cores by layer", "", "| layer | populations | neurons | synapses | cores |",
              "|---|---|---|---|---|"]
    for src, r in sorted(res["by_source"].items(), key=lambda kv: -kv[1]["cores"]):
        lines.append(f"| {src} | {r['populations']} | {r['neurons']:,} | {r['synapses']:,} | {r['cores']:,} |")
    lines += _placement_lines(res)
    ssa = compiled.graph.metadata.get("ssa", {})
    if ssa:
        lines += ["", "## SSA lowering", ""]
        for name, s in ssa.items():
            lines.append(f"- {name}: {s.get('form')} {s.get('order')}, {s.get('bits')} bits; cost per step "
                         f"{json.dumps(s.get('cost_per_step', {}))}")
    return "\n".join(lines) + "\n"


def write_artifacts(stage: Path, compiled: CompiledNetwork, info: dict, options: dict) -> dict:
    """Writes the files into `stage` (a fresh directory); returns the manifest."""
    write_network(stage / "network.h5", compiled.graph, compiled.schedule)
    qrep = json.loads(json.dumps(compiled.quantization, default=float))
    for rec in qrep["synapses"].values():
        rec.pop("_scale", None)
    qrep["timing"] = timing_report(compiled.schedule)
    (stage / "quantization.json").write_text(json.dumps(qrep, indent=1, sort_keys=True))
    (stage / "resources.json").write_text(json.dumps(compiled.resources, indent=1, sort_keys=True))
    (stage / "summary.md").write_text(summary_md(info, compiled, options))
    files = {
        "network.h5": "quantised, timed network: nodes (kind, source module, integer parameters), edges, "
                      "schedule (population depths, projection delays)",
        "quantization.json": "every scale, shift, exponent, threshold and rounding/clipping choice, per layer",
        "resources.json": "placement on the hardware profile: per population its tiles, cores, binding limit and "
                          "fullest core; cores, chips and pipeline latency; the profile's figures and sources",
        "summary.md": "human-readable summary and warnings",
    }
    manifest = {"format": "spikformer-loihi-export", "format_version": 1, "model": info, "options": options,
                "versions": package_versions(("lava-nc", "lava-dl", "nir", "torch", "numpy", "h5py")),
                "files": {k: {"description": v, "sha256": file_sha256(stage / k)} for k, v in files.items()}}
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=_json_default))
    return manifest
