"""spk-convert's lines on a Loihi export: the cost of every SSA form on the chosen hardware profile, the kept
form on the other profiles, and the warnings count (the export's summary, LoihiBackend.export)."""
from __future__ import annotations


def build_lines(summary: dict, out) -> list[str]:
    forms = summary["ssa"]
    lines = []
    for form, tot in forms["by_form"].items():
        mark = f" (chosen, on {summary['hw']})" if form == forms["chosen"] else ""
        if "unplaceable" in tot:
            lines.append(f"loihi SSA {form}: cannot be placed on {summary['hw']}: {tot['unplaceable']}")
            continue
        if "not_chip_shaped" in tot:
            lines.append(f"loihi SSA {form}: not built ({tot['not_chip_shaped']})")
            continue
        lines.append(f"loihi SSA {form}{mark}: {tot['cores']:,} cores, {tot['chips']:,} chips, "
                     f"{tot['neurons']:,} neurons, {tot['synapses']:,} synapses, depth {tot['pipeline_depth']}")
    for name, tot in summary.get("other_profiles", {}).items():
        lines.append(f"on {name} (for comparison, SSA {forms['chosen']}): " + (
            f"cannot be placed: {tot['unplaceable']}" if "unplaceable" in tot else
            f"{tot['cores']:,} cores, {tot['chips']:,} chips"))
    if summary["warnings"]:
        lines.append(f"loihi: {summary['warnings']} warnings, see {out}/summary.md")
    return lines
