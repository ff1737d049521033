"""Compiling for Loihi (no files; export.py writes them): a lowered graph through the named passes in order,
quantise -> relays -> schedule -> place, into a CompiledNetwork; and the target's whole compilation, every SSA form
on the requested hardware profile and the chosen form on the other profiles, with the work that is provably the
same shared between those compilations (SharedWork: the quantised weights of a synapse whose weights, scale and
precision are equal; the cut of a population whose every input to the placement is equal)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from convert import ir
from convert.options import DEFAULT_VTH_MANT, SSA_FORMS, ConversionOptions
from convert.passes import lower

from ..base import CompiledNetwork
from hardware.loihi.limits import LoihiLimitError
from hardware.loihi.profiles import PROFILES, HardwareProfile, get_profile
from .placement_memo import PlacementMemo
from .quantize import NotQuantisableError, WeightMemo, quantize
from .resources import map_resources
from .timing import insert_delay_relays, schedule

PASSES = ("quantise", "relays", "schedule", "place")


@dataclass
class SharedWork:
    """What one conversion's compilations (SSA forms, hardware profiles) share; `seconds`: time per step, summed
    over the compilations ("lower", each pass, "place_other_profiles")."""
    weights: WeightMemo = field(default_factory=WeightMemo)
    placements: PlacementMemo = field(default_factory=PlacementMemo)
    lowering: dict = field(default_factory=dict)  # convert.passes.lower's memo over the SSA forms
    seconds: dict = field(default_factory=dict)

    def timed(self, step: str, t0: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t0


def compile_graph(graph: ir.Graph, vth_mant: int = DEFAULT_VTH_MANT, weight_bits: int = 16,
          input_scale: int | None = None, profile: HardwareProfile | str | None = None,
          shared: SharedWork | None = None) -> CompiledNetwork:
    """The lowered `graph` quantised, with its report, the schedule and the placement on the hardware `profile`
    (profiles.py; default loihi2): the PASSES in order."""
    shared = shared or SharedWork()
    profile = get_profile(profile)
    state: dict = {}

    def quantise():
        state["graph"], state["report"] = quantize(graph, vth_mant=vth_mant, weight_bits=weight_bits,
                                                   input_scale=input_scale, memo=shared.weights)

    def relays():
        state["report"]["delay_relays"] = insert_delay_relays(state["graph"])

    def schedule_():
        state["schedule"] = schedule(state["graph"])

    def place():
        s = state["schedule"]
        state["resources"] = map_resources(state["graph"], s["projections"], profile, s["max_depth"],
                                           memo=shared.placements)

    steps = {"quantise": quantise, "relays": relays, "schedule": schedule_, "place": place}
    for name in PASSES:
        t0 = time.perf_counter()
        steps[name]()
        shared.timed(name, t0)
    q, qrep, res = state["graph"], state["report"], state["resources"]
    forms = {s.get("form") for s in graph.metadata.get("ssa", {}).values()}
    return CompiledNetwork(lowered=graph, graph=q, numeric="loihi_fixed", ssa_form=forms.pop() if len(forms) == 1
                       else "binary", schedule=state["schedule"], quantization=qrep, resources=res,
                       warnings=qrep["warnings"] + res["warnings"])


def placement_hint(e: LoihiLimitError, options: ConversionOptions, profile) -> str:
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


def _totals_or_error(b: CompiledNetwork, profile, shared: SharedWork) -> dict:
    try:
        return map_resources(b.graph, b.schedule["projections"], profile, b.schedule["max_depth"],
                             memo=shared.placements)["total"]
    except LoihiLimitError as e:
        return {"unplaceable": str(e)}


def compile_target(frontend: ir.Graph, options: ConversionOptions, progress: bool = False,
                   shared: SharedWork | None = None) -> CompiledNetwork:
    """Builds every SSA form (the export reports the cost of each) and keeps the requested one, or for
    "auto" the one that needs fewer cores, on the hardware profile `options.hw`; the other profiles' cores and
    chips of the kept form are reported beside it. `progress`: a bar over those builds and placements (a
    minute each on the ImageNet presets) where stderr is a terminal. `shared`: pass one to read the time per
    step afterwards."""
    shared = shared or SharedWork()
    profile = get_profile(options.hw)
    builds, totals, errors = {}, {}, {}
    others = [name for name in PROFILES if name != profile.name]
    with tqdm(total=len(SSA_FORMS) + len(others), desc="loihi build", unit="placement", leave=False,
              disable=None if progress else True, file=sys.stderr) as bar:
        for form in SSA_FORMS:
            bar.set_postfix_str(f"SSA {form} on {profile.name}")
            try:
                t0 = time.perf_counter()
                lowered = lower(frontend, ssa_order=options.ssa_order, ssa_form=form, memo=shared.lowering)
                shared.timed("lower", t0)
                b = compile_graph(lowered, vth_mant=options.vth_mant, weight_bits=options.weight_bits,
                          input_scale=options.input_scale, profile=profile, shared=shared)
                totals[form] = dict(b.resources["total"], pipeline_depth=b.schedule["max_depth"])
                builds[form] = b
            except LoihiLimitError as e:  # this form cannot be built or placed; "auto" may take the other
                errors[form], totals[form] = e, {"unplaceable": str(e)}
            except NotQuantisableError as e:  # a form of float semantics only (the Spike-driven Transformer's binary)
                if options.ssa == form:
                    raise
                totals[form] = {"not_chip_shaped": str(e)}
            bar.update()
        if options.ssa != "auto" and options.ssa in errors:
            e = errors[options.ssa]
            raise LoihiLimitError(e.node, e.limit, e.used, e.allowed, placement_hint(e, options, profile))
        if not builds:  # the last form's error, the others' named in it
            *failed, last = errors.items()
            e = last[1]
            raise LoihiLimitError(e.node, e.limit + "".join(f" (the {f} form fails too: {o})" for f, o in failed),
                                  e.used, e.allowed, placement_hint(e, options, profile))
        chosen = min(builds, key=lambda f: totals[f]["cores"]) if options.ssa == "auto" else options.ssa
        b = builds[chosen]
        b.ssa_forms = {"chosen": chosen, "requested": options.ssa, "by_form": totals}
        b.resources["ssa_forms"] = b.ssa_forms
        b.resources["other_profiles"] = {}
        for name in others:
            bar.set_postfix_str(f"SSA {chosen} on {name}, for comparison")
            t0 = time.perf_counter()
            b.resources["other_profiles"][name] = _totals_or_error(b, get_profile(name), shared)
            shared.timed("place_other_profiles", t0)
            bar.update()
    return b
