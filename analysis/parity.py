"""Parity of the converted network against the PyTorch reference, layer by layer.

The reference runs on `device` (cuda when present) with TF32 off, so a GPU reference is not perturbed by
reduced-precision convolutions (docs/timing.md, section 6); the run facts say so. Mode "float" compares the lowered
graph in float64 with the reference in float64: every spike must agree (integer spikes against integer spikes,
exact). Mode "fixed" compares the Loihi fixed-point simulation with the float32 reference: spikes are compared
for exact equality, logits with a stated tolerance, and the summary reports agreement per layer."""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field

import torch

from convert import ir
from ground.hashing import array_sha256
from sim.engine import Engine, check_images
from spikformer.model import lif_modules

from .reference import record_reference
from .samples import TensorSamples, as_samples, samples_sha256
from .shards import ExactSum, ShardExecutor, exact_sum, nan_max, run_sharded


@dataclass
class LayerStats:
    name: str
    elements: int = 0
    mismatches: int = 0
    ref_spikes: int = 0
    sim_spikes: int = 0

    def add(self, ref: torch.Tensor, sim: torch.Tensor) -> None:
        self.elements += ref.numel()
        self.mismatches += int((ref != sim).sum())
        self.ref_spikes += int(ref.sum())
        self.sim_spikes += int(sim.sum())

    def to_dict(self) -> dict:
        n = max(self.elements, 1)
        return {"layer": self.name, "elements": self.elements, "mismatches": self.mismatches,
                "agreement": 1 - self.mismatches / n, "rate_reference": self.ref_spikes / n,
                "rate_simulator": self.sim_spikes / n}


@dataclass
class ParityCounts:
    """What a parity run counts, batch by batch: integers (per-layer spike and mismatch counts, correct and
    agreeing predictions, samples within the logit tolerance, fixed-point state events), maxima and exact sums
    (analysis.shards.ExactSum), so `merge` gives the same result in any grouping of batches: the counts of a
    sharded run (spk-parity --ray) equal those of a one-process run on the same batches."""
    layers: dict[str, LayerStats] = field(default_factory=dict)
    logit_atol: float = 0.0
    samples: int = 0
    correct_reference: int = 0
    correct_simulator: int = 0
    agreeing: int = 0  # samples whose predicted classes are the same
    within_tolerance: int = 0  # samples whose every logit is within logit_atol
    logit_elements: int = 0
    logit_abs_diff_sum: ExactSum = field(default_factory=ExactSum)
    logit_abs_diff_max: float = 0.0
    state_events: dict = field(default_factory=dict)  # node -> {event: count} (fixed point, STATE_EVENTS)
    batch_sha256: list = field(default_factory=list)  # of each batch's raw input, in order (samples_sha256)

    def merge(self, o: "ParityCounts") -> "ParityCounts":
        """self + o, exactly (self is updated and returned)."""
        if list(o.layers) != list(self.layers) or o.logit_atol != self.logit_atol:
            raise ValueError("parity counts of different layers or logit tolerances do not merge")
        for n, st in o.layers.items():
            mine = self.layers[n]
            for k in ("elements", "mismatches", "ref_spikes", "sim_spikes"):
                setattr(mine, k, getattr(mine, k) + getattr(st, k))
        if o.logit_elements:  # the max of no logits (0.0) takes no part
            self.logit_abs_diff_max = (nan_max(self.logit_abs_diff_max, o.logit_abs_diff_max)
                                       if self.logit_elements else o.logit_abs_diff_max)
        for k in ("samples", "correct_reference", "correct_simulator", "agreeing", "within_tolerance",
                  "logit_elements"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.logit_abs_diff_sum = self.logit_abs_diff_sum + o.logit_abs_diff_sum
        self.batch_sha256 = self.batch_sha256 + o.batch_sha256
        for node, ev in o.state_events.items():
            mine = self.state_events.setdefault(node, {})
            for k, v in ev.items():
                mine[k] = max(mine.get(k, 0), v) if k == "a_in_max" else mine.get(k, 0) + v
        return self


# v clipped at 24 bit and u wrapped at 24 bit (neuron-steps); steps whose synaptic input exceeded 16 bits
STATE_EVENTS = ("saturated", "u_wrapped", "a_in_over_16bit")


def set_reference_determinism(device: str) -> dict:
    """TF32 off for the reference; returns what was set, for the report."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"tf32": False, "cudnn_deterministic": True if device.startswith("cuda") else None}


def layer_names(model: torch.nn.Module, graph: ir.Graph) -> list[str]:
    """Layers compared: every LIF / max-pool module whose name is a node of the graph (sources match)."""
    names = list(lif_modules(model)) + [n for n, m in model.named_modules() if isinstance(m, torch.nn.MaxPool2d)]
    return [n for n in names if n in graph.nodes]


def default_logit_atol(mode: str) -> float:
    """|logit_ref - logit_sim| tolerance: 1e-9 in float mode (exact up to rounding), 0.5 in fixed point."""
    return 1e-9 if mode == "float" else 0.5


@dataclass
class ParityJob:
    """Everything a shard of a parity run needs (Ray ships it to the workers as one object): the reference
    model (already on `device` in `ref_dtype`), the graph and how to run it."""
    model: torch.nn.Module
    graph: ir.Graph
    mode: str
    numeric: str
    names: list
    batch_size: int
    device: str
    sim_device: str
    logit_atol: float
    readout_scale: float
    ref_dtype: torch.dtype

    def empty(self) -> ParityCounts:
        return ParityCounts(layers={n: LayerStats(n) for n in self.names}, logit_atol=self.logit_atol)


def count_batch(job: ParityJob, x: torch.Tensor, y: torch.Tensor, engine: Engine | None,
                sim_runner=None) -> ParityCounts:
    """The parity counts of one batch: reference and simulator on `x`, compared layer by layer and by logits."""
    c = job.empty()
    ref_logits, ref_recs = record_reference(job.model, x.to(device=job.device, dtype=job.ref_dtype))
    if sim_runner is None:
        out = engine.run(x, record=job.names)
        sim_logits, sim_recs = out.outputs["output"] / job.readout_scale, out.records
        for node, st in engine.last_state.items():
            for k in STATE_EVENTS:
                if st.get(k):
                    ev = c.state_events.setdefault(node, {})
                    ev[k] = ev.get(k, 0) + int(st[k])
            if st.get("a_in_max"):
                ev = c.state_events.setdefault(node, {})
                ev["a_in_max"] = max(ev.get("a_in_max", 0), int(st["a_in_max"]))
    else:
        sim_logits, sim_recs = sim_runner(x, job.names)
        sim_logits = sim_logits / job.readout_scale
    for n in job.names:
        c.layers[n].add(ref_recs[n].to("cpu", torch.float64), sim_recs[n].to("cpu", torch.float64))
    ref = ref_logits.to("cpu", torch.float64)
    sim = sim_logits.to("cpu", torch.float64)
    y = y.to("cpu")
    pr, ps = ref.argmax(1), sim.argmax(1)
    diff = (ref - sim).abs()
    c.samples = int(len(x))
    c.correct_reference = int((pr == y).sum())
    c.correct_simulator = int((ps == y).sum())
    c.agreeing = int((pr == ps).sum())
    c.logit_elements = int(diff.numel())
    if diff.numel():
        c.within_tolerance = int((diff <= job.logit_atol).all(1).sum())
        c.logit_abs_diff_sum = exact_sum(diff)
        c.logit_abs_diff_max = float(diff.max())
    return c


def parity_shard(job: ParityJob, samples, progress=None, sim_runner=None) -> ParityCounts:
    """The merged counts of `samples` (analysis.samples) in batches of job.batch_size (one shard of a run, or all
    of it); `progress(n)` after each batch of n samples. Streamed batches are checked as they come, before the
    reference sees them (the engine's own check would come after the reference's failure)."""
    engine = None
    if sim_runner is None:
        engine = Engine(job.graph, job.numeric, dtype=torch.float64, device=job.sim_device, fuse_ssa=True)
    total = job.empty()
    streamed = not isinstance(samples, TensorSamples)
    for x, y in samples.batches(job.batch_size):
        if streamed:
            check_images(job.graph, x, fixed=job.mode == "fixed", warn=False)
        c = count_batch(job, x, y, engine, sim_runner)
        c.batch_sha256 = [array_sha256(x)]
        total.merge(c)
        if progress is not None:
            progress(len(x))
    return total


def run_parity(model: torch.nn.Module, graph: ir.Graph, images, labels: torch.Tensor | None,
               mode: str, batch_size: int = 32, device: str = "cpu", sim_device: str = "cpu",
               progress: bool = True, sim_runner=None, numeric: str | None = None, logit_atol: float | None = None,
               executor: ShardExecutor | None = None) -> ParityCounts:
    """`images`: a tensor (with `labels`) or analysis.samples (labels None: they come with the samples, e.g. a
    data set streamed from disk). `mode` "float" (reference semantics; the graph runs in float64) or "fixed" (Loihi
    fixed point; the reference runs in float32); `numeric`: the graph's arithmetic for the engine (default:
    "float" for mode float, "loihi_fixed" for mode fixed; a Build says which: Build.runnable).
    `sim_runner(images, layer_names) -> (logits, records)` replaces the built-in engine (a target's engine, analysis.engine_crosscheck). `logit_atol`:
    see default_logit_atol. `executor` (analysis.shards): the batches run in shards elsewhere (spk-parity --ray);
    the merged counts are the same as in this process."""
    numeric = numeric or ("loihi_fixed" if mode == "fixed" else "float")
    samples = as_samples(images, labels)
    if isinstance(samples, TensorSamples):
        # the engine warns itself, but a sharded run's workers keep their warnings in their logs
        check_images(graph, samples.images, fixed=mode == "fixed",
                     warn=sim_runner is not None or executor is not None)
    ref_dtype = torch.float64 if mode == "float" else torch.float32
    model = model.to(device=device, dtype=ref_dtype).eval()
    readout_scale = float(graph.metadata.get("readout_scale", 1.0)) if mode == "fixed" else 1.0
    job = ParityJob(model, graph, mode, numeric, layer_names(model, graph), batch_size, device, sim_device,
                    default_logit_atol(mode) if logit_atol is None else float(logit_atol), readout_scale, ref_dtype)
    if sim_runner is not None:
        if executor is not None:
            raise ValueError("a custom simulator runner (a target's engine) runs in this process only")

        def fn(job, samples, progress):
            return parity_shard(job, samples, progress, sim_runner)
    else:
        fn = parity_shard
    return run_sharded(fn, job, samples, batch_size, ParityCounts.merge, executor, progress,
                       desc=f"parity ({mode})")


def _ratio(a: int, n: int) -> float:
    return a / n if n else math.nan


def summarize(res: ParityCounts, facts: dict, logit_atol: float | None = None) -> dict:
    """The parity summary (parity.json) from the merged counts; `logit_atol`, when given, must be the one
    the counts were made with."""
    if logit_atol is not None and logit_atol != res.logit_atol:
        raise ValueError(f"the counts were made with logit tolerance {res.logit_atol}, not {logit_atol}")
    order = list(res.layers)
    layers = sorted((s.to_dict() for s in res.layers.values()), key=lambda d: (d["agreement"], order.index(d["layer"])))
    events = {node: {k: ev[k] for k in (*STATE_EVENTS, "a_in_max") if k in ev}
              for node, ev in res.state_events.items()}
    n, m = res.samples, res.logit_elements
    return {
        "run": dict(facts, python=platform.python_version(), torch=torch.__version__),
        "overall": {
            "samples": n, "accuracy_reference": _ratio(res.correct_reference, n),
            "accuracy_simulator": _ratio(res.correct_simulator, n),
            "prediction_agreement": _ratio(res.agreeing, n),
            "logits_max_abs_diff": float(res.logit_abs_diff_max) if m else 0.0,
            "logits_mean_abs_diff": res.logit_abs_diff_sum.mean(m) if m else 0.0,
            "logits_within_tolerance": _ratio(res.within_tolerance, n) if m else 1.0,
            "logit_tolerance_abs": res.logit_atol,
            "total_spike_mismatches": int(sum(d["mismatches"] for d in layers)),
            "min_layer_agreement": min((d["agreement"] for d in layers), default=1.0),
            "samples_sha256": samples_sha256(res.batch_sha256),
            "state_events": events,
        },
        "layers": layers,
        "layer_order": order,
    }


def parity_markdown(s: dict) -> str:
    o, r = s["overall"], s["run"]
    lines = ["# Parity: simulator vs PyTorch reference", "",
             f"- model: {r.get('model')} (sha256 {str(r.get('checkpoint_sha256'))[:16]}...), preset/config "
             f"{r.get('preset')}", f"- target {r.get('target')}, mode {r.get('mode')}, engine {r.get('engine')}, "
             f"SSA {r.get('ssa_form')}/{r.get('ssa_order')}",
             f"- data {r.get('data')}, samples {o['samples']}, seed {r.get('seed')}, reference and simulator device "
             f"{r.get('device')} (TF32 off), reference dtype {r.get('reference_dtype')}", "",
             "| | value |", "|---|---|",
             f"| accuracy, reference | {o['accuracy_reference']:.4f} |",
             f"| accuracy, simulator | {o['accuracy_simulator']:.4f} |",
             f"| prediction agreement | {o['prediction_agreement']:.4f} |",
             f"| spike mismatches (all layers) | {o['total_spike_mismatches']:,} |",
             f"| logits max abs diff | {o['logits_max_abs_diff']:.3g} (tolerance {o['logit_tolerance_abs']}) |",
             ]
    if r.get("quantization"):
        lines.insert(5, f"- Loihi quantisation: {r['quantization']}")
    if r.get("mode") == "fixed":
        ev = o.get("state_events") or {}
        lines += ["", "## Fixed-point state range", ""]
        what = {"saturated": "v saturated (neuron-steps)", "u_wrapped": "u wrapped (neuron-steps)",
                "a_in_over_16bit": "synaptic input beyond 16 bits (batch-steps)", "a_in_max": "largest |a_in|"}
        lines += [f"- {n}: " + ", ".join(f"{what.get(k, k)} {v:,}" for k, v in e.items())
                  for n, e in sorted(ev.items())] or ["- no neuron saturated its 24-bit v or wrapped its 24-bit u, and no synaptic input exceeded 16 bits"]
    xc = s.get("engine_crosscheck")
    if xc:
        lines += ["", f"## {xc['engine']} against the {xc['simulator']} simulator (exact)", "",
                  f"- {xc['samples']} samples, {xc['populations']} populations (every population of the export, "
                  f"the readout included): {xc['spike_mismatches']:,} of {xc['spikes_compared']:,} spikes/payloads "
                  f"differ; readout v at every logical step: {xc['readout_step_mismatches']:,} differ; "
                  f"predictions: {xc['prediction_differences']} differ"]
        lines += [f"- {n}: {k:,} differ" for n, k in xc["spike_mismatches_by_population"].items()]
    lines += ["", "## Layers, worst first", "",
             "| layer | agreement | mismatches | rate ref | rate sim |", "|---|---|---|---|---|"]
    for d in s["layers"]:
        lines.append(f"| {d['layer']} | {d['agreement']:.6f} | {d['mismatches']:,} | {d['rate_reference']:.4f} | "
                     f"{d['rate_simulator']:.4f} |")
    return "\n".join(lines) + "\n"


def firing_rate_plot(s: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    layers = sorted(s["layers"], key=lambda d: s["layer_order"].index(d["layer"]))
    names = [d["layer"] for d in layers]
    y = range(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.5))
    ax.barh([i + 0.2 for i in y], [d["rate_reference"] for d in layers], height=0.4, label="PyTorch reference")
    ax.barh([i - 0.2 for i in y], [d["rate_simulator"] for d in layers], height=0.4,
            label=f"simulator ({s['run'].get('mode')})")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (spikes per neuron per step)")
    ax.set_title(f"Firing rates: {s['run'].get('model')} ({s['overall']['samples']} samples)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version text: same bytes for the same data
    plt.close(fig)

