"""Energy per layer and in total, from counted activity (`analysis.activity`) under an energy model
(`analysis.energy_models`), beside the conventions of the SNN literature and an ANN baseline.

Four numbers per inference (per sample), all from the same counted activity:

- **event-based** (this toolchain): every effective synaptic op of the lowered graph at AC or MAC cost (AC for
  spike streams, MAC for graded/analog ones), plus neuron updates and spikes at the model's cost (0 under
  cmos45). The SSA decomposition's own cost (AND / bit / product neurons, their synapses and spikes) is reported
  separately from the rest.
- **paper** (Spikformer, Zhou et al. ICLR 2023): E = E_MAC * FLOPs(first conv) + E_AC * sum SOP,
  SOP(l) = fr(input of l) * T * FLOPs(l). fr is the mean input value per position and step (for a residual sum
  of spikes a value k counts as k spikes, as the SOP counters of that line of papers do); the SSA term uses the
  Spikingformer formula (below). The first conv is charged once (its input is the same image at every step).
- **spikingformer**: as paper, but every conv/linear layer whose input is not strictly 0/1 is charged as dense
  MACs at every step, E_MAC * T * FLOPs(l): the rule of the Spikingformer authors' SOP counter (syops-counter
  with Nspks_max = 1: a non-binary input gets rate 1). In Spikformer these are the first conv (the image, T
  times) and the linears that read residual sums of spikes (q/k/v of every block after the first, fc1).
  SSA term (both conventions), per block, for the model's product order:
  K^T V first: T * heads * N * d^2 * (min(fr_K, fr_V) + fr_Q); Q K^T first: T * heads * N^2 * d *
  (min(fr_Q, fr_K) + fr_V), charged at E_AC.
- **ann**: the same architecture as an ANN: every layer dense MACs once (no T), SSA matmuls q@k^T and attn@v
  counted as h*N^2*d MACs each (as in papers), head D*classes MACs; activations, BatchNorm (folded) and
  memory access free.

In every convention the head (a Linear on the token- and time-averaged features) is charged E_MAC * D * classes
once, because its input in the PyTorch model is a real-valued mean. "FLOPs" here are MACs (as in the papers).
"""
from __future__ import annotations

from dataclasses import dataclass

from spikformer.model import stage_suffix, synapse_suffix
from spikformer.presets import PRESETS, SpikformerConfig

from .activity import CATEGORY_LABELS, Activity
from .energy_models import EnergyModel

PJ_PER_UJ = 1e6
PJ_PER_MJ = 1e9

# Zhou et al., ICLR 2023 (arXiv 2209.15425), ImageNet table: params (M), OPs (G), energy (mJ), top-1 (%), T=4.
PUBLISHED = {
    "imagenet-8-384": {"params_m": 16.81, "ops_g": 6.82, "energy_mj": 7.734, "top1": 70.24},
    "imagenet-8-512": {"params_m": 29.68, "ops_g": 11.09, "energy_mj": 11.577, "top1": 73.38},
    "imagenet-8-768": {"params_m": 66.34, "ops_g": 22.09, "energy_mj": 21.477, "top1": 74.81},
}
PUBLISHED_SOURCE = "Zhou et al., 'Spikformer: When Spiking Neural Network Meets Transformer', ICLR 2023, ImageNet table"
SPIKINGFORMER_768_MJ = 32.07  # Spikingformer paper's re-rating of Spikformer-8-768 with its rule


# ------------------------------------------------------------------------------------------------ dense FLOPs

@dataclass(frozen=True)
class FlopEntry:
    layer: str  # module path (SSA matmuls: block.i.attn.q@k^T / block.i.attn.attn@v)
    kind: str  # first_conv | conv | linear | ssa_matmul | head
    flops: int  # MACs of one forward pass of one sample at one time step


def dense_flops(cfg: SpikformerConfig) -> list[FlopEntry]:
    """MACs of one pass of the original architecture (one sample, one time step)."""
    out = []
    chans = [cfg.in_channels, cfg.embed_dim // 8, cfg.embed_dim // 4, cfg.embed_dim // 2, cfg.embed_dim]
    size = cfg.img_size
    pooled = [i >= 4 - cfg.pool_stages for i in range(4)]
    for i in range(4):
        out.append(FlopEntry(f"patch_embed.proj_conv{stage_suffix(i)}", "first_conv" if i == 0 else "conv",
                             size * size * chans[i + 1] * chans[i] * 9))
        if pooled[i]:
            size = (size + 2 - 3) // 2 + 1
    D, N, h = cfg.embed_dim, size * size, cfg.num_heads
    sfx = synapse_suffix(cfg.layout)  # q_linear (CIFAR code) or q_conv (ImageNet, DVS code): the same MACs
    out.append(FlopEntry("patch_embed.rpe_conv", "conv", N * D * D * 9))
    for b in range(cfg.depth):
        p = f"block.{b}"
        for t in ("q", "k", "v"):
            out.append(FlopEntry(f"{p}.attn.{t}_{sfx}", "linear", N * D * D))
        out.append(FlopEntry(f"{p}.attn.q@k^T", "ssa_matmul", h * N * N * (D // h)))
        out.append(FlopEntry(f"{p}.attn.attn@v", "ssa_matmul", h * N * N * (D // h)))
        out.append(FlopEntry(f"{p}.attn.proj_{sfx}", "linear", N * D * D))
        out.append(FlopEntry(f"{p}.mlp.fc1_{sfx}", "linear", N * D * cfg.hidden_dim))
        out.append(FlopEntry(f"{p}.mlp.fc2_{sfx}", "linear", N * cfg.hidden_dim * D))
    out.append(FlopEntry("head", "head", D * cfg.num_classes))
    return out


def flops_by_group(entries: list[FlopEntry], groups: dict) -> dict:
    """Summed FLOPs per group, `groups` mapping an entry's kind to its group (a kind not in it is its own group)."""
    by: dict[str, int] = {}
    for e in entries:
        k = groups.get(e.kind, e.kind)
        by[k] = by.get(k, 0) + e.flops
    return by


def flops_summary(cfg: SpikformerConfig) -> dict:
    entries = dense_flops(cfg)
    by = flops_by_group(entries, {"first_conv": "sps_convs", "conv": "sps_convs", "linear": "block_linears"})
    total = sum(e.flops for e in entries)
    N, D, h = cfg.num_tokens, cfg.embed_dim, cfg.num_heads
    return {"sps_convs": by.get("sps_convs", 0), "block_linears": by.get("block_linears", 0),
            "ssa_matmuls": by.get("ssa_matmul", 0), "head": by.get("head", 0), "total": total,
            "total_times_T": total * cfg.T, "first_conv": entries[0].flops,
            "ssa_matmuls_kv_first": cfg.depth * 2 * h * N * (D // h) ** 2}


def preset_flops_table() -> dict:
    """Dense FLOPs of every preset and the comparison with the published ImageNet numbers."""
    rows = {}
    for name, cfg in PRESETS.items():
        s = flops_summary(cfg)
        row = {"img_size": cfg.img_size, "embed_dim": cfg.embed_dim, "depth": cfg.depth, "heads": cfg.num_heads,
               "tokens": cfg.num_tokens, "T": cfg.T, **s}
        pub = PUBLISHED.get(name)
        if pub:
            ac_layers = s["total"] - s["first_conv"] - s["head"]
            mac_term_mj = pub["energy_mj"] - 0.9e-12 * pub["ops_g"] * 1e9 * 1e3
            row["published"] = dict(pub)
            row["published_over_dense"] = pub["ops_g"] * 1e9 / s["total"]
            row["implied_mean_input_rate"] = pub["ops_g"] * 1e9 / (cfg.T * ac_layers)
            row["published_energy_minus_0.9pJ_x_ops_mj"] = mac_term_mj
            row["that_as_gmac_at_4.6pJ"] = mac_term_mj * 1e-3 / 4.6e-12 / 1e9
            row["first_conv_times_T_gmac"] = s["first_conv"] * cfg.T / 1e9
        rows[name] = row
    return {"presets": rows, "published_source": PUBLISHED_SOURCE, "explanation": PUBLISHED_EXPLANATION}


PUBLISHED_EXPLANATION = (
    "The published Spikformer ImageNet 'OPs' (6.82G / 11.09G / 22.09G) are not dense FLOPs of one pass. Our dense "
    'count of the same architecture (224x224, max-pool after every SPS stage, N=196 tokens, MACs of convs, linears '
    "and the two SSA matmuls) is lower (the 'dense (1 pass)' column, `total` in JSON). For all three models the "
    'published energy satisfies E = 0.9 pJ x OPs + 1.596 mJ to the printed precision. That is what one gets if the '
    'OPs are the operations charged at E_AC, i.e. firing-rate-weighted synaptic operations summed over T = 4 steps '
    '(SOPs, which can exceed one dense pass), and 1.596 mJ = 4.6 pJ x 0.347 GMAC is the MAC term. 0.347 G equals a '
    '3->64-channel 3x3 conv at 224x224 over 4 steps (the first conv of Spikformer-8-512), while the first convs of '
    '8-384 / 8-768 have 48 / 96 output channels: the published MAC term appears to be the same for all three models'
    ' (an observation from the arithmetic, not a documented choice). Dividing the OPs by T x dense FLOPs of the AC-'
    'charged layers gives the implied mean input rate (`implied_mean_input_rate`, about 0.29-0.35): residual sums '
    'of spikes carry values above 1, which a firing-rate-weighted count charges as several spikes.')


# ------------------------------------------------------------------------------------------------ event-based

def event_energy(act: Activity, model: EnergyModel) -> dict:
    """Energy per sample of the counted activity: per node, per source (module path), per category, totals.
    pJ throughout."""
    n = max(act.samples, 1)
    nodes = []
    for s in act.synapses.values():
        syn = (s.ac_ops * model.ac_pj + s.mac_ops * model.mac_pj) / n
        nodes.append({"node": s.name, "source": s.source, "category": s.category, "type": s.node_type,
                      "ac_ops": s.ac_ops / n, "mac_ops": s.mac_ops / n, "synaptic_pj": syn, "neuron_pj": 0.0,
                      "spike_pj": 0.0, "ssa": act.is_ssa_decomposition(s.name)})
    for u in act.neurons.values():
        neu = (u.active_updates * model.neuron_update_active_pj +
               (u.updates - u.active_updates) * model.neuron_update_inactive_pj) / n
        nodes.append({"node": u.name, "source": u.source, "category": u.category, "type": u.node_type,
                      "ac_ops": 0.0, "mac_ops": 0.0, "synaptic_pj": 0.0, "neuron_pj": neu,
                      "spike_pj": u.spikes * model.spike_pj / n, "ssa": act.is_ssa_decomposition(u.name)})
    for r in nodes:
        r["total_pj"] = r["synaptic_pj"] + r["neuron_pj"] + r["spike_pj"]

    def group(key):
        out = {}
        for r in nodes:
            g = out.setdefault(r[key], {"synaptic_pj": 0.0, "neuron_pj": 0.0, "spike_pj": 0.0, "total_pj": 0.0,
                                        "ac_ops": 0.0, "mac_ops": 0.0})
            for k in g:
                g[k] += r[k]
        return out

    ssa = [r for r in nodes if r["ssa"]]
    rest = [r for r in nodes if not r["ssa"]]

    def tot(rows):
        return {k: sum(r[k] for r in rows) for k in ("synaptic_pj", "neuron_pj", "spike_pj", "total_pj",
                                                       "ac_ops", "mac_ops")}

    return {"nodes": nodes, "by_source": group("source"), "by_category": group("category"),
            "total": tot(nodes), "excluding_ssa_decomposition": tot(rest), "ssa_decomposition": tot(ssa)}


# ------------------------------------------------------------------------------------------------ conventions

def _binary(kind: str) -> bool:
    return kind in ("none", "spikes")


def conventions(act: Activity, cfg: SpikformerConfig, model: EnergyModel) -> dict:
    """Per-layer and total energy (pJ per sample) under the paper, Spikingformer and ANN conventions, with the
    firing rates taken from `act` (per PyTorch module; see the module docstring for the rules)."""
    T = cfg.T
    src = act.by_source()
    syn_by_src: dict[str, list] = {}
    for s in act.synapses.values():
        syn_by_src.setdefault(s.source, []).append(s)
    neu = act.neurons

    def rate(layer):
        r = src.get(layer)
        return (r["input_rate"] or 0.0) if r else 0.0

    def nonbinary(layer):
        return any(not _binary(s.combined_kind) for s in syn_by_src.get(layer, []))

    def fr(name):
        u = neu.get(name)
        return u.firing_rate if u is not None else 0.0

    rows = []
    for e in dense_flops(cfg):
        row = {"layer": e.layer, "kind": e.kind, "flops": e.flops, "ann_pj": e.flops * model.mac_pj}
        if e.kind == "first_conv" and cfg.event_input:  # event frames are spikes: AC per spike, every step
            sop = rate(e.layer) * T * e.flops
            row.update(input_rate=rate(e.layer), input="spikes (event frames)", paper_op="AC", paper_ops=sop,
                       paper_pj=sop * model.ac_pj, spikingformer_op="AC", spikingformer_ops=sop,
                       spikingformer_pj=sop * model.ac_pj)
        elif e.kind == "first_conv":
            row.update(input_rate=rate(e.layer), input="analog", paper_op="MAC", paper_ops=e.flops,
                       paper_pj=e.flops * model.mac_pj, spikingformer_op="MAC", spikingformer_ops=e.flops * T,
                       spikingformer_pj=e.flops * T * model.mac_pj)
        elif e.kind == "head":
            row.update(input_rate=None, input="analog (mean over tokens and time)", paper_op="MAC",
                       paper_ops=e.flops, paper_pj=e.flops * model.mac_pj, spikingformer_op="MAC",
                       spikingformer_ops=e.flops, spikingformer_pj=e.flops * model.mac_pj)
        elif e.kind == "ssa_matmul":
            continue  # charged per block below
        else:
            r = rate(e.layer)
            sop = r * T * e.flops
            nb = nonbinary(e.layer)
            row.update(input_rate=r, input="integer (sum of spike streams)" if nb else "spikes", paper_op="AC",
                       paper_ops=sop, paper_pj=sop * model.ac_pj)
            if nb:
                row.update(spikingformer_op="MAC", spikingformer_ops=e.flops * T,
                           spikingformer_pj=e.flops * T * model.mac_pj)
            else:
                row.update(spikingformer_op="AC", spikingformer_ops=sop, spikingformer_pj=sop * model.ac_pj)
        rows.append(row)
    # SSA product per block (after that block's v_linear row, in module order)
    D, N, h = cfg.embed_dim, cfg.num_tokens, cfg.num_heads
    d = D // h
    for b in range(cfg.depth):
        p = f"block.{b}.attn"
        fq, fk, fv = fr(f"{p}.q_lif"), fr(f"{p}.k_lif"), fr(f"{p}.v_lif")
        if cfg.product_order == "kv_first":
            sop = T * h * N * d * d * (min(fk, fv) + fq)
            formula = "T*h*N*d^2*(min(fr_K,fr_V)+fr_Q)"
        else:
            sop = T * h * N * N * d * (min(fq, fk) + fv)
            formula = "T*h*N^2*d*(min(fr_Q,fr_K)+fr_V)"
        flops = 2 * h * N * N * d
        row = {"layer": f"{p} (SSA product)", "kind": "ssa_matmul", "flops": flops, "ann_pj": flops * model.mac_pj,
               "input_rate": None, "input": f"spikes q/k/v (fr {fq:.4f}/{fk:.4f}/{fv:.4f})",
               "paper_op": "AC", "paper_ops": sop, "paper_pj": sop * model.ac_pj, "spikingformer_op": "AC",
               "spikingformer_ops": sop, "spikingformer_pj": sop * model.ac_pj, "formula": formula}
        at = next(i for i, r in enumerate(rows) if r["layer"] == f"{p}.v_{synapse_suffix(cfg.layout)}") + 1
        rows.insert(at, row)
    totals = {k: sum(r[f"{k}_pj"] for r in rows) for k in ("paper", "spikingformer", "ann")}
    return {"rows": rows, "total_pj": totals, "T": T, "product_order": cfg.product_order}


def categories_table(ev: dict) -> list[dict]:
    out = []
    for cat, label in CATEGORY_LABELS.items():
        g = ev["by_category"].get(cat)
        if g:
            out.append({"category": cat, "label": label, **g})
    return out


def conventions_rules(energy_model: EnergyModel) -> dict:
    """How each convention prices a run, with the energy model's constants."""
    return {
        "event": "this toolchain: effective synaptic ops of the lowered graph (AC for spikes, MAC for analog), "
                 "plus neuron updates and spikes at the energy model's cost",
        "paper": "Spikformer: E_MAC*FLOPs(first conv, once) + E_AC*sum_l fr(input of l)*T*FLOPs(l) + SSA term; "
                 "fr = mean input value per position and step; head E_MAC*D*classes",
        "spikingformer": "as paper, but layers whose input is not strictly 0/1 cost E_MAC*T*FLOPs (dense at "
                         "every step; the first conv too); head E_MAC*D*classes",
        "ann": "same architecture as an ANN: E_MAC * dense FLOPs of one pass (no T), SSA matmuls h*N^2*d "
               "each, activations/BN/memory free",
        "ssa_term": "per block, KV-first: T*h*N*d^2*(min(fr_K,fr_V)+fr_Q); QK-first: "
                    "T*h*N^2*d*(min(fr_Q,fr_K)+fr_V) at E_AC (Spikingformer formula; order of the model)",
        "constants": f"E_MAC = {energy_model.mac_pj} pJ, E_AC = {energy_model.ac_pj} pJ "
                     f"(from the '{energy_model.name}' model)",
    }
