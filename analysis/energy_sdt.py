"""The Spike-driven Transformer's energy conventions (docs/energy.md, "The Spike-driven Transformer"), beside the
counted activity, in the row format of analysis.energy.conventions so one report renders both models.

Dense FLOPs of one pass (one sample, one step) follow the paper's supplement (Yao et al., NeurIPS 2023, "Energy
Consumption Analysis Details", eqs. S1, S2): a convolution k^2 h_out w_out c_in c_out, an MLP (here 1x1
convolutions over N tokens) N c_in c_out; the ANN counterpart's self-attention 2 N^2 D (Q K^T and attn V).

- **paper**: the first convolution E_MAC * FLOPs once (the image; an event frame is spikes: E_AC * rate * T *
  FLOPs), every other convolution and the head E_AC * rate(input) * T * FLOPs (their inputs are spikes: the
  membrane shortcut puts a LIF before every convolution and the head). The spike-driven self-attention has no
  FLOPs of its own in that rule (masks and a column sum of spikes); it is charged here with the accumulates the
  lowered network counts for it (its AND synapses, the token sum, the Erode sum pools), at E_AC. The paper's own
  per-operator table is not reproduced.
- **spikingformer**: as paper, but a layer whose input is not strictly 0/1 costs E_MAC * T * FLOPs (the first
  convolution, T times).
- **ann**: every layer dense MACs once, the attention 2 N^2 D, the head D * classes.
"""
from __future__ import annotations

from spikformer.sdt_presets import ALL_SDT_PRESETS, SDTConfig

from .activity import Activity
from .energy import FlopEntry, _binary, flops_by_group
from .energy_models import EnergyModel

# The official README (BICLab/Spike-Driven-Transformer, "Results on Imagenet-1K"): Power (mJ) per ImageNet model,
# T = 4, by this project's preset name (sdt-imagenet-10-384 is the 10-layer, 512-channel model of that table)
PUBLISHED_POWER_MJ = {"sdt-imagenet-8-384": 3.90, "sdt-imagenet-6-512": 3.56, "sdt-imagenet-8-512": 4.50,
                      "sdt-imagenet-10-384": 5.53, "sdt-imagenet-8-768": 6.09}
PUBLISHED_SOURCE = "BICLab/Spike-Driven-Transformer README, 'Results on Imagenet-1K' (Power, mJ)"


def dense_flops(cfg: SDTConfig) -> list[FlopEntry]:
    """MACs of one pass of the architecture (one sample, one time step), in module order."""
    chans = [cfg.in_channels, cfg.embed_dim // 8, cfg.embed_dim // 4, cfg.embed_dim // 2, cfg.embed_dim]
    out, size = [], cfg.img_size
    for i in range(4):
        name = "patch_embed.proj_conv" + ("" if i == 0 else str(i))
        out.append(FlopEntry(name, "first_conv" if i == 0 else "conv", 9 * size * size * chans[i] * chans[i + 1]))
        if cfg.pooling_stat[i] == "1":
            size = (size + 2 - 3) // 2 + 1
    D, N, H = cfg.embed_dim, size * size, cfg.hidden_dim
    out.append(FlopEntry("patch_embed.rpe_conv", "conv", 9 * N * D * D))
    for b in range(cfg.depth):
        p = f"block.{b}"
        out += [FlopEntry(f"{p}.attn.{t}_conv", "linear", N * D * D) for t in ("q", "k", "v")]
        out.append(FlopEntry(f"{p}.attn", "sdsa", 2 * N * N * D))
        out.append(FlopEntry(f"{p}.attn.proj_conv", "linear", N * D * D))
        out.append(FlopEntry(f"{p}.mlp.fc1_conv", "linear", N * D * H))
        out.append(FlopEntry(f"{p}.mlp.fc2_conv", "linear", N * H * D))
    out.append(FlopEntry("head", "head", D * cfg.num_classes))
    return out


def flops_summary(cfg: SDTConfig) -> dict:
    entries = dense_flops(cfg)
    by = flops_by_group(entries, {"first_conv": "sps_convs", "conv": "sps_convs", "linear": "block_linears",
                                  "sdsa": "attention"})
    total = sum(by.values())
    return {"sps_convs": by.get("sps_convs", 0), "block_linears": by.get("block_linears", 0),
            "attention": by.get("attention", 0), "head": by.get("head", 0), "total": total,
            "total_times_T": total * cfg.T, "first_conv": entries[0].flops}


def preset_flops_table() -> dict:
    """Dense FLOPs of every Spike-driven Transformer preset, the published ImageNet power beside them."""
    rows = {}
    for name, cfg in ALL_SDT_PRESETS.items():
        s = flops_summary(cfg)
        rows[name] = {"img_size": cfg.img_size, "embed_dim": cfg.embed_dim, "depth": cfg.depth,
                      "heads": cfg.num_heads, "tokens": cfg.grid ** 2, "T": cfg.T, **s}
        if name in PUBLISHED_POWER_MJ:
            rows[name]["published_power_mj"] = PUBLISHED_POWER_MJ[name]
    return {"presets": rows, "published_source": PUBLISHED_SOURCE,
            "explanation": "Dense MACs of one pass (paper supplement eqs. S1, S2). The published power needs the "
                           "trained models' firing rates; a report of such a checkpoint prices its own rates."}


def conventions(act: Activity, cfg: SDTConfig, model: EnergyModel) -> dict:
    """Per-layer and total energy (pJ per sample) under the paper, Spikingformer and ANN conventions, with the
    firing rates and the attention's accumulates taken from `act` (see the module docstring)."""
    T, n = cfg.T, max(act.samples, 1)
    src = act.by_source()
    kinds: dict[str, list] = {}
    for s in act.synapses.values():
        kinds.setdefault(s.source, []).append(s)

    def rate(layer):
        r = src.get(layer)
        return (r["input_rate"] or 0.0) if r else 0.0

    def attention_acs(attn: str) -> float:
        """Accumulates of the attention's own synapses (ANDs, token sum, Erode): source `attn`, not a relay's."""
        return sum(s.ac_ops + s.mac_ops for s in kinds.get(attn, []) if ".relay" not in s.name) / n

    rows = []
    for e in dense_flops(cfg):
        row = {"layer": e.layer, "kind": e.kind, "flops": e.flops, "ann_pj": e.flops * model.mac_pj}
        if e.kind == "first_conv" and not cfg.event_input:
            row.update(input_rate=rate(e.layer), input="analog", paper_op="MAC", paper_ops=e.flops,
                       paper_pj=e.flops * model.mac_pj, spikingformer_op="MAC", spikingformer_ops=e.flops * T,
                       spikingformer_pj=e.flops * T * model.mac_pj)
        elif e.kind == "sdsa":
            ops = attention_acs(e.layer)
            row.update(layer=f"{e.layer} (SDSA)", input_rate=None, input="spikes q, k, v (masks, token sum)",
                       paper_op="AC", paper_ops=ops, paper_pj=ops * model.ac_pj, spikingformer_op="AC",
                       spikingformer_ops=ops, spikingformer_pj=ops * model.ac_pj,
                       formula="accumulates counted on the lowered attention (AND inputs, token sum, Erode)")
        else:
            r = rate(e.layer)
            sop = r * T * e.flops
            binary = all(_binary(s.combined_kind) for s in kinds.get(e.layer, []))
            what = "spikes (event frames)" if e.kind == "first_conv" else "spikes" if binary else "graded"
            row.update(input_rate=r, input=what, paper_op="AC", paper_ops=sop, paper_pj=sop * model.ac_pj)
            if binary:
                row.update(spikingformer_op="AC", spikingformer_ops=sop, spikingformer_pj=sop * model.ac_pj)
            else:
                row.update(spikingformer_op="MAC", spikingformer_ops=e.flops * T,
                           spikingformer_pj=e.flops * T * model.mac_pj)
        rows.append(row)
    totals = {k: sum(r[f"{k}_pj"] for r in rows) for k in ("paper", "spikingformer", "ann")}
    return {"rows": rows, "total_pj": totals, "T": T}


def conventions_rules(energy_model: EnergyModel) -> dict:
    """How each convention prices a Spike-driven Transformer run, with the energy model's constants."""
    return {
        "event": "this toolchain: effective synaptic ops of the lowered graph (AC for spikes, MAC for graded "
                 "values: the membrane-shortcut stream's relays, the graded max-pool), plus neuron updates and "
                 "spikes at the energy model's cost",
        "paper": "Spike-driven Transformer: E_MAC*FLOPs(first conv, once) + E_AC*sum_l fr(input of l)*T*FLOPs(l) "
                 "over every other conv and the head (inputs are spikes); the attention at E_AC per accumulate "
                 "counted on its lowered synapses",
        "spikingformer": "as paper, but layers whose input is not strictly 0/1 cost E_MAC*T*FLOPs (the first conv, "
                         "T times)",
        "ann": "same architecture as an ANN: E_MAC * dense FLOPs of one pass (no T), self-attention 2*N^2*D",
        "constants": f"E_MAC = {energy_model.mac_pj} pJ, E_AC = {energy_model.ac_pj} pJ "
                     f"(from the '{energy_model.name}' model)",
    }
