"""Parity of the converted network against the PyTorch reference, layer by layer.

The reference runs on `device` (cuda when present) with TF32 off, so a GPU reference is not perturbed by
reduced-precision convolutions (docs/timing.md, section 6); the run facts say so. Mode "float" compares the lowered
graph in float64 with the reference in float64: every spike must agree (integer spikes against integer spikes,
exact). Mode "fixed" compares the Loihi fixed-point simulation with the float32 reference: spikes are compared
for exact equality, logits with a stated tolerance, and the summary reports agreement per layer."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from convert import ir
from sim.engine import Engine, check_images
from spikformer.model import lif_modules

from .reference import record_reference


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
class ParityResult:
    layers: dict[str, LayerStats] = field(default_factory=dict)
    ref_logits: list = field(default_factory=list)
    sim_logits: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    state_events: dict = field(default_factory=dict)  # node -> {event: count} (fixed point, STATE_EVENTS)


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


def run_parity(model: torch.nn.Module, graph: ir.Graph, images: torch.Tensor, labels: torch.Tensor,
               mode: str, batch_size: int = 32, device: str = "cpu", sim_device: str = "cpu",
               progress: bool = True, sim_runner=None, numeric: str | None = None) -> ParityResult:
    """`mode` "float" (reference semantics; the graph runs in float64) or "fixed" (Loihi fixed point; the
    reference runs in float32); `numeric`: the graph's arithmetic for the engine (default: "float" for mode
    float, "loihi_fixed" for mode fixed; a Build says which: Build.runnable). `sim_runner(images, layer_names)
    -> (logits, records)` replaces the built-in engine (e.g. Lava)."""
    numeric = numeric or ("loihi_fixed" if mode == "fixed" else "float")
    check_images(graph, images, fixed=mode == "fixed", warn=sim_runner is not None)  # the engine warns itself
    ref_dtype = torch.float64 if mode == "float" else torch.float32
    model = model.to(device=device, dtype=ref_dtype).eval()
    names = layer_names(model, graph)
    engine = None
    if sim_runner is None:
        engine = Engine(graph, numeric, dtype=torch.float64, device=sim_device, fuse_ssa=True)
    readout_scale = float(graph.metadata.get("readout_scale", 1.0)) if mode == "fixed" else 1.0
    res = ParityResult(layers={n: LayerStats(n) for n in names})
    batches = range(0, len(images), batch_size)
    for i in tqdm(batches, desc=f"parity ({mode})", unit="batch", disable=not progress):
        x = images[i:i + batch_size]
        ref_logits, ref_recs = record_reference(model, x.to(device=device, dtype=ref_dtype))
        if sim_runner is None:
            out = engine.run(x, record=names)
            sim_logits, sim_recs = out.outputs["output"] / readout_scale, out.records
            for node, st in engine.last_state.items():
                for k in STATE_EVENTS:
                    if st.get(k):
                        ev = res.state_events.setdefault(node, {})
                        ev[k] = ev.get(k, 0) + int(st[k])
                if st.get("a_in_max"):
                    ev = res.state_events[node]
                    ev["a_in_max"] = max(ev.get("a_in_max", 0), int(st["a_in_max"]))
        else:
            sim_logits, sim_recs = sim_runner(x, names)
            sim_logits = sim_logits / readout_scale
        for n in names:
            res.layers[n].add(ref_recs[n].to("cpu", torch.float64), sim_recs[n].to("cpu", torch.float64))
        res.ref_logits.append(ref_logits.to("cpu", torch.float64))
        res.sim_logits.append(sim_logits.to("cpu", torch.float64))
        res.labels.append(labels[i:i + batch_size])
    return res


def summarize(res: ParityResult, facts: dict, logit_atol: float) -> dict:
    ref = torch.cat(res.ref_logits)
    sim = torch.cat(res.sim_logits)
    y = torch.cat(res.labels)
    pr, ps = ref.argmax(1), sim.argmax(1)
    order = list(res.layers)
    layers = sorted((s.to_dict() for s in res.layers.values()), key=lambda d: (d["agreement"], order.index(d["layer"])))
    diff = (ref - sim).abs()
    return {
        "run": dict(facts, python=platform.python_version(), torch=torch.__version__),
        "overall": {
            "samples": int(len(y)), "accuracy_reference": float((pr == y).float().mean()),
            "accuracy_simulator": float((ps == y).float().mean()),
            "prediction_agreement": float((pr == ps).float().mean()),
            "logits_max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
            "logits_mean_abs_diff": float(diff.mean()) if diff.numel() else 0.0,
            "logits_within_tolerance": float((diff <= logit_atol).all(1).float().mean()) if diff.numel() else 1.0,
            "logit_tolerance_abs": logit_atol,
            "total_spike_mismatches": int(sum(d["mismatches"] for d in layers)),
            "min_layer_agreement": min((d["agreement"] for d in layers), default=1.0),
            "state_events": res.state_events,
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
             f"- data {r.get('data')}, samples {o['samples']}, seed {r.get('seed')}, reference device "
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

