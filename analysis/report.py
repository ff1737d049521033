"""Energy report of a converted Spikformer: run the Build's graph on sample images, count its activity, price it
under an energy model and the literature's conventions. The result is a dict (JSON-able); analysis.render makes
the files (energy.json, energy.csv, energy.md, charts, report.html) from it.

The report never converts a model: it takes the Build of hw_backends.conversion.convert, so its numbers belong
to the network spk-convert exports with the same options. Modes (each target's Backend.run_modes): "float" runs
the lowered graph in float64 (reference semantics), "fixed" the target's quantised graph in its integer
arithmetic; the activity function `(graph, records) -> Activity` defaults to analysis.activity.ActivityCounter.
A target with a section of its own (Backend.report_section) fills it from the run.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

import torch

from convert import ir
from ground.hashing import array_sha256
from hw_backends import base as targets
from sim.engine import Engine, check_images
from spikformer.sdt_presets import SDTConfig

from . import activity as A
from . import energy, energy_sdt
from .energy import categories_table, event_energy
from .energy_models import EnergyModel
from .samples import TensorSamples, as_samples, samples_sha256
from .shards import ShardExecutor, run_sharded

REPORT_FORMAT = "spikformer-energy-report"
REPORT_VERSION = 1

# ------------------------------------------------------------------------------------------------ rules text

COUNTING_RULES = [
    "Activity is counted on the lowered graph (BatchNorm folded, max-pool as OR = sum-pool + threshold 0.5, "
    "residual sums as separate spike streams, SSA as AND + bit-cascade threshold neurons (binary form) or AND + "
    "graded count + product neurons (graded form)), over all T steps of every sample; all numbers are per "
    "inference (per sample).",
    "Input event: a non-zero value of one input stream at one input position and step. A layer that reads a "
    "residual sum reads each spike stream separately: a value k of the sum is k events.",
    "Fan-out of an input position: the number of output neurons it connects to, exact at borders and with stride "
    "(transposed convolution of a ones tensor for convs and sum-pools; the axis sizes for the SSA broadcast/sum "
    "synapses). Structural fan-out counts all connections of the geometry, effective fan-out only those with a "
    "non-zero weight. A synapse group feeding k neuron groups counts k times.",
    "Synaptic events = sum over input events of the structural fan-out; effective ops = the same with the "
    "effective fan-out (NeuroBench's definition). Energy uses effective ops. Biases are not synaptic operations.",
    "AC or MAC per stream: values only in {-1, 0, 1} (spikes) -> one AC per effective op; any other stream (the "
    "analog image into the first conv, the integer-encoded image in fixed mode, graded spikes of the graded SSA) "
    "-> one MAC per effective op. The first conv runs at every step (T times), as the graph does. Event input "
    "(event-camera frames) is spikes: a count of k at a pixel and step is k input events, each one AC per "
    "effective connection.",
    "NeuroBench rule (`combined_ops`): non-zero positions of the summed input x effective fan-out; it differs from "
    "ours where a residual sum holds values > 1 (NeuroBench: one MAC per non-zero position; ours: one AC per spike) "
    "and at the head (NeuroBench sees one averaged vector per sample; the graph feeds every spike of every step).",
    "Neuron update: one per neuron per step (LIF, threshold, integrator, Loihi LIF, graded, product); active if "
    "its total input in that step (synaptic current including bias, any port) is non-zero or it spikes, else "
    "inactive.",
    "Spikes: non-zero outputs (1s of spiking neurons, payload-carrying graded spikes); firing rate = spikes / "
    "(neurons x steps).",
    "SSA decomposition: the AND / bit / graded / product neurons and broadcast/sum synapses that replace the "
    "Q K^T V product; their synaptic ops, updates and spikes are reported separately. q/k/v_lif and attn_lif are "
    "part of the original model and are not in that share.",
]

NOT_MODELLED = [
    "memory access and data movement (weights, membrane state), static/leakage power, host I/O and input encoding",
    "routing beyond the energy model's spike cost: the placement and the spikes crossing chips are counted "
    "(loihi_placement, --target loihi --mode fixed), not priced",
    "per-hop synaptic delays and pipeline fill on hardware (both modes count activity in logical time; the fixed "
    "mode uses Loihi's integer arithmetic, the float mode the reference semantics)",
]


# ------------------------------------------------------------------------------------------------ building

@dataclass
class ReportResult:
    report: dict
    activity: A.Activity


@dataclass
class ActivityJob:
    """Everything a shard of a report run needs (Ray ships it to the workers as one object)."""
    graph: ir.Graph
    numeric: str
    device: str
    batch_size: int
    activity_fn: object = None  # (graph, records) -> Activity; None: analysis.activity.ActivityCounter
    per_neuron: bool = False    # also per-neuron spike counts (Activity.spike_counts), for the chip crossings


@dataclass
class ActivityCounts:
    """The activity of some batches and how many of their samples the graph classified correctly."""
    activity: A.Activity
    correct: int
    samples: int
    batch_sha256: list = field(default_factory=list)  # of each batch's raw input, in order (samples_sha256)

    def merge(self, o: "ActivityCounts") -> "ActivityCounts":
        """self + o, exactly (see Activity.add); self is updated and returned."""
        self.activity.add(o.activity)
        self.correct += o.correct
        self.samples += o.samples
        self.batch_sha256 = self.batch_sha256 + o.batch_sha256
        return self


def activity_shard(job: ActivityJob, samples, progress=None) -> ActivityCounts:
    """The merged activity of `samples` (analysis.samples) in batches of job.batch_size (one shard of a run, or all
    of it); `progress(n)` after each batch of n samples. Engine.run checks every batch as it comes."""
    graph = job.graph
    eng = Engine(graph, job.numeric, dtype=torch.float64, device=job.device)
    names = A.needed_records(graph)
    if job.activity_fn is not None:
        def count(recs):
            return job.activity_fn(graph, recs)
    else:
        count = A.ActivityCounter(graph, job.device, job.per_neuron)
    total = None
    for x, y in samples.batches(job.batch_size):
        res = eng.run(x, record=names)
        correct = 0
        if y is not None:
            correct = int((res.outputs[graph.outputs()[0]].argmax(-1).cpu() == y).sum())
        c = ActivityCounts(count(res.records), correct, len(x), [array_sha256(x)])
        total = c if total is None else total.merge(c)
        del res
        if progress is not None:
            progress(len(x))
    return total


def run_activity(graph: ir.Graph, numeric: str, images, device: str = "cpu", batch_size: int = 16,
                 progress: bool = False, activity_fn=None, labels: torch.Tensor | None = None,
                 executor: ShardExecutor | None = None, per_neuron: bool = False) -> tuple[A.Activity, dict]:
    """Counts activity over all images (a tensor, or analysis.samples with their labels), batch by batch, running
    `graph` in `numeric` arithmetic (sim.engine). Returns (activity, {"correct": n, "samples": n}). `executor`
    (analysis.shards): the batches run in shards elsewhere (spk-report --ray); the merged activity is the same as
    in this process."""
    samples = as_samples(images, labels)
    if executor is not None and isinstance(samples, TensorSamples):
        check_images(graph, samples.images, fixed=numeric != "float")  # the workers' warnings stay in their logs
    job = ActivityJob(graph, numeric, device, batch_size, activity_fn, per_neuron)
    res = run_sharded(activity_shard, job, samples, batch_size, ActivityCounts.merge, executor, progress,
                      desc="spk-report")
    return res.activity, {"correct": res.correct, "samples": res.samples,
                          "samples_sha256": samples_sha256(res.batch_sha256)}


def _samples_record(samples, acc: dict) -> dict:
    """The checksum of the samples' raw input (analysis.samples.samples_sha256) and, for a streamed data set, how
    many were skipped as undecodable."""
    rec = {"images_sha256": acc["samples_sha256"]}
    if not isinstance(samples, TensorSamples):
        rec["skipped"] = len(samples) - acc["samples"]
    return rec


def build_report(build, *, mode: str, images: torch.Tensor, labels: torch.Tensor | None,
                 energy_model: EnergyModel, checkpoint: dict, data: dict, seed: int = 0, device: str = "cpu",
                 batch_size: int = 16, progress: bool = False, activity_fn=None,
                 executor: ShardExecutor | None = None) -> ReportResult:
    """`build`: hw_backends.conversion.Build; `mode`: one of the target's run modes (Backend.run_modes).
    `executor`: run the batches in shards (analysis.shards; the counts are the same), described in
    run.scale_out."""
    check_mode(build, mode)
    graph, numeric = build.runnable(mode)
    backend = build.backend
    # the target's own section (Backend.report_section) is of the graph it runs in that mode, counted neuron by neuron
    sectioned = backend.report_section is not None and mode in backend.report_section_modes and activity_fn is None
    samples = as_samples(images, labels)
    act, acc = run_activity(graph, numeric, samples, device, batch_size, progress, activity_fn, None, executor,
                            per_neuron=sectioned)
    data = dict(data, **_samples_record(samples, acc))
    has_labels = not isinstance(samples, TensorSamples) or samples.labels is not None
    config = build.source.config
    ev = event_energy(act, energy_model)
    sdt = isinstance(config, SDTConfig)  # the Spike-driven Transformer's paper prices it (analysis/energy_sdt.py)
    rules = energy_sdt if sdt else energy
    conv = rules.conventions(act, config, energy_model)
    flops = rules.flops_summary(config)
    ssa_meta = graph.metadata.get("ssa", {})
    run = _run_record(build, mode, act, acc if has_labels else None, data, seed, batch_size, device, executor,
                      ssa_meta)
    report = {
        "format": REPORT_FORMAT, "format_version": REPORT_VERSION,
        "model": _model_record(checkpoint, build.source.model, config, flops),
        "run": run,
        "energy_model": energy_model.to_dict(),
        "counting_rules": COUNTING_RULES,
        **({"paper_convention": "Spike-driven Transformer"} if sdt else {}),
        "conventions_rules": rules.conventions_rules(energy_model),
        "not_modelled": NOT_MODELLED,
        **target_sections(build, graph, act if sectioned else None),
        "totals": _totals(ev, conv),
        "layers": _layer_rows(act, ev, conv),
        "categories": categories_table(ev),
        "conventions": conv["rows"],
        "ssa_decomposition": _ssa_blocks(ssa_meta, act, ev),
        "dense_flops": {"this_model": flops, "entries": [e.__dict__ for e in rules.dense_flops(config)],
                        **rules.preset_flops_table()},
        "nodes": {"energy": ev["nodes"], "activity": act.to_dict()},
    }
    return ReportResult(report, act)


def check_mode(build, mode: str) -> None:
    """`mode` must be one that the build's target runs (Backend.run_modes)."""
    modes = targets.run_modes()
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; available: {', '.join(modes)}")
    if mode not in build.backend.run_modes:
        raise ValueError(f"--mode {mode} is for target(s) {', '.join(targets.targets_running(mode))}, not "
                         f"{build.options.target}")


def target_sections(build, graph: ir.Graph, act: A.Activity | None) -> dict:
    """The section of every registered target that has one (Backend.report_section): this build's target's filled
    from `act`, its per-neuron run of `graph`; None where `act` is None and for the other targets."""
    sections = {b.report_section: None for b in targets.backends() if b.report_section is not None}
    if act is not None:
        sections[build.backend.report_section] = build.backend.report_section_content(
            build.target, graph, act.spike_counts, act.samples, act.steps)
    return sections


def _model_record(checkpoint: dict, model, config, flops: dict) -> dict:
    return {**checkpoint, "config": config.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
            "dense_flops_one_pass": flops["total"]}


def _run_record(build, mode: str, act: A.Activity, acc: dict | None, data: dict, seed: int, batch_size: int,
                device: str, executor: ShardExecutor | None, ssa_meta: dict) -> dict:
    """How the report ran: mode, target, samples, the conversion and quantisation, accuracy (`acc` None: the
    samples have no labels), data and library versions."""
    return {"mode": mode, "mode_description": build.backend.run_modes[mode], "target": build.options.target,
            "target_description": build.backend.report_description, "seed": seed, "samples": act.samples,
            "steps": act.steps, "batch_size": batch_size, "device": str(device),
            "scale_out": executor.describe() if executor is not None else None,
            "ssa_form": build.ssa_form,
            "ssa_order": build.options.ssa_order,
            "ssa_order_used": sorted({m.get("order") for m in ssa_meta.values()}),
            "conversion": build.options.recorded(),
            "quantization": None if mode != "fixed" else {
                **build.quantization_facts(), "input_encoding": build.quantization["input"]["encoding"]},
            "accuracy_on_samples": (acc["correct"] / acc["samples"]) if acc is not None and acc["samples"]
            else None,
            "data": data,
            "versions": _versions()}


def _versions() -> dict:
    import matplotlib
    import numpy

    return {"torch": torch.__version__, "numpy": numpy.__version__, "matplotlib": matplotlib.__version__,
            "python": platform.python_version()}


def _totals(ev: dict, conv: dict) -> dict:
    return {
        "event_pj": ev["total"]["total_pj"],
        "event_excluding_ssa_decomposition_pj": ev["excluding_ssa_decomposition"]["total_pj"],
        "event_ssa_decomposition_pj": ev["ssa_decomposition"]["total_pj"],
        "event_breakdown_pj": {k: ev["total"][k] for k in ("synaptic_pj", "neuron_pj", "spike_pj")},
        "event_ops": {"effective_ac": ev["total"]["ac_ops"], "effective_mac": ev["total"]["mac_ops"],
                      "ssa_decomposition_ac": ev["ssa_decomposition"]["ac_ops"]},
        "paper_pj": conv["total_pj"]["paper"], "spikingformer_pj": conv["total_pj"]["spikingformer"],
        "ann_pj": conv["total_pj"]["ann"],
    }


def _layer_rows(act: A.Activity, ev: dict, conv: dict) -> list[dict]:
    """Per-layer rows (by module path, graph order), per inference, with the conventions' numbers beside them."""
    n = max(act.samples, 1)
    conv_by_layer = {r["layer"].replace(" (SSA product)", ""): r for r in conv["rows"]}
    return [_layer_row(src, r, ev["by_source"][src], conv_by_layer.get(src, {}), n)
            for src, r in act.by_source().items()]


def _layer_row(src: str, r: dict, e: dict, c: dict, n: int) -> dict:
    """One layer's row: activity `r` over `n` samples, its event energy `e`, its conventions' row `c`; the synapse
    (neuron) columns are None for a layer with no synapse (neuron) node."""
    has_syn, has_neu = r["synapse_nodes"] > 0, r["neuron_nodes"] > 0

    def syn(v):
        return v if has_syn else None

    def neu(v):
        return v if has_neu else None

    return {
        "layer": src, "category": r["category"], "kind": A.CATEGORY_LABELS.get(r["category"], r["category"]),
        "synapse_nodes": r["synapse_nodes"], "neuron_nodes": r["neuron_nodes"],
        "input_rate": None if r["category"] == "ssa_decomposition" else r["input_rate"],
        "input_events": syn(r["events"] / n),
        "synaptic_events": syn(r["synaptic_events"] / n), "effective_ac": syn(r["ac_ops"] / n),
        "effective_mac": syn(r["mac_ops"] / n), "neurobench_rule_ops": syn(r["combined_ops"] / n),
        "dense_ops": syn(r["dense_ops"] / n), "neurons": neu(r["neurons"]), "firing_rate": r["firing_rate"],
        "spikes": neu(r["spikes"] / n), "neuron_updates": neu(r["updates"] / n),
        "active_updates": neu(r["active_updates"] / n),
        "synaptic_pj": e["synaptic_pj"], "neuron_pj": e["neuron_pj"], "spike_pj": e["spike_pj"],
        "event_pj": e["total_pj"], "paper_pj": c.get("paper_pj"), "spikingformer_pj": c.get("spikingformer_pj"),
        "ann_pj": c.get("ann_pj"),
    }


def _ssa_blocks(ssa_meta: dict, act: A.Activity, ev: dict) -> list[dict]:
    """Per SSA product: its lowering (graph metadata) and the activity and energy of its decomposition, per
    inference."""
    n = max(act.samples, 1)
    blocks = []
    for prod, meta in ssa_meta.items():
        pre = f"{prod}."
        syn = [s for s in act.synapses.values() if s.name.startswith(pre)]
        neu = [u for u in act.neurons.values() if u.name.startswith(pre)]
        en = [x for x in ev["nodes"] if x["node"].startswith(pre)]
        blocks.append({
            "product": prod, "order": meta.get("order"), "requested_order": meta.get("requested_order"),
            "model_product_order": meta.get("model_product_order"), "bits": meta.get("bits"),
            "heads": meta.get("heads"), "head_dim": meta.get("head_dim"), "tokens": meta.get("tokens"),
            "cost_per_step": meta.get("cost_per_step"),
            "neurons": sum(u.neurons for u in neu), "synapse_nodes": len(syn), "neuron_nodes": len(neu),
            "effective_ac": sum(s.ac_ops for s in syn) / n, "effective_mac": sum(s.mac_ops for s in syn) / n,
            "neuron_updates": sum(u.updates for u in neu) / n,
            "active_updates": sum(u.active_updates for u in neu) / n, "spikes": sum(u.spikes for u in neu) / n,
            "energy_pj": sum(x["total_pj"] for x in en),
        })
    return blocks
