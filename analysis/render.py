"""Rendering of an energy report (analysis.report builds it): energy.json, energy.csv, energy.md, PNG charts and
one self-contained report.html, all from the report dict alone. Same report, byte-identical files (no
timestamps; PNGs without software metadata)."""
from __future__ import annotations

import base64
import csv
import html
import io
import json

from hw_backends import base as targets

from .activity import CATEGORY_LABELS
from .energy import PJ_PER_UJ

FILES = ("energy.json", "energy.csv", "energy.md", "firing_rates.png", "energy_by_kind.png", "snn_vs_ann.png",
         "report.html")


def _uj(pj) -> str:
    if pj is None:
        return ""
    return f"{pj / PJ_PER_UJ:.4g}"


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    return str(v)


def _json_bytes(report: dict) -> bytes:
    return (json.dumps(report, indent=1, sort_keys=False, allow_nan=False, default=str) + "\n").encode()


CSV_COLUMNS = ("layer", "kind", "input_rate", "input_events", "synaptic_events", "effective_ac", "effective_mac",
               "neurobench_rule_ops", "dense_ops", "neurons", "firing_rate", "spikes", "neuron_updates",
               "active_updates", "synaptic_pj", "neuron_pj", "spike_pj", "event_pj", "paper_pj", "spikingformer_pj",
               "ann_pj")


def _csv_bytes(report: dict) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in report["layers"]:
        w.writerow(["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in CSV_COLUMNS])
    t = report["totals"]
    w.writerow(["TOTAL", "", "", "", "", t["event_ops"]["effective_ac"], t["event_ops"]["effective_mac"], "", "",
                "", "", "", "", "", t["event_breakdown_pj"]["synaptic_pj"], t["event_breakdown_pj"]["neuron_pj"],
                t["event_breakdown_pj"]["spike_pj"], t["event_pj"], t["paper_pj"], t["spikingformer_pj"],
                t["ann_pj"]])
    return buf.getvalue().encode()


# A tiny document model rendered to Markdown and HTML alike.
def _doc(report: dict) -> list[tuple]:
    m, run, em, t = report["model"], report["run"], report["energy_model"], report["totals"]
    cfg = m["config"]
    doc: list[tuple] = [("h1", "Spikformer energy report")]
    acc = run["accuracy_on_samples"]
    doc.append(("table", ["item", "value"], [
        ["checkpoint", m.get("checkpoint", "")], ["sha256", m.get("sha256", "")],
        ["preset", m.get("preset") or "(config stored in the checkpoint)"],
        ["config", ", ".join(f"{k}={v}" for k, v in cfg.items())],
        ["parameters", f"{m['parameters']:,}"],
        ["mode / target", f"{run['mode']} ({run['mode_description']}) / {run['target']} ({run['target_description']})"],
        ["seed / samples / steps", f"{run['seed']} / {run['samples']} / {run['steps']}"],
        ["data", f"{run['data'].get('spec')} ({run['data'].get('selection', '')}; images sha256 "
                 f"{run['data'].get('images_sha256', '')[:16]}...)"],
        ["SSA lowering", f"{run['ssa_form']} form, order requested {run['ssa_order']}, used "
                         f"{', '.join(run['ssa_order_used'])}"],
        ["accuracy of the simulated graph on these samples", "" if acc is None else f"{100 * acc:.2f} %"],
        ["device", run["device"]],
    ]))
    doc.append(("h2", f"Energy model: {em['name']}"))
    doc.append(("p", em["description"]))
    doc.append(("table", ["constant", "pJ"], [
        ["E_MAC (multiply-accumulate)", em["mac_pj"]], ["E_AC (accumulate)", em["ac_pj"]],
        ["neuron update, inactive", em["neuron_update_inactive_pj"]],
        ["neuron update, active", em["neuron_update_active_pj"]], ["spike", em["spike_pj"]]]))
    doc.append(("p", f"Source: {em['source']}"))
    if em["notes"]:
        doc.append(("ul", em["notes"]))

    doc.append(("h2", "Energy per inference"))
    ann = t["ann_pj"] or float("nan")
    paper = report.get("paper_convention", "Spikformer")  # a Spike-driven Transformer's report names its paper
    ssa = paper == "Spikformer"  # only Spikformer's products are decomposed into SSA neurons
    rows = [
        ["event-based (this toolchain), total", _uj(t["event_pj"]), f"{t['event_pj'] / ann:.3f}"],
        *([["  of which SSA decomposition", _uj(t["event_ssa_decomposition_pj"]),
            f"{t['event_ssa_decomposition_pj'] / ann:.3f}"],
           ["  excluding SSA decomposition", _uj(t["event_excluding_ssa_decomposition_pj"]),
            f"{t['event_excluding_ssa_decomposition_pj'] / ann:.3f}"]] if ssa else []),
        [f"paper convention ({paper})", _uj(t["paper_pj"]), f"{t['paper_pj'] / ann:.3f}"],
        ["Spikingformer convention", _uj(t["spikingformer_pj"]), f"{t['spikingformer_pj'] / ann:.3f}"],
        ["ANN baseline (same architecture, dense MACs, one pass)", _uj(t["ann_pj"]), "1.000"],
    ]
    doc.append(("table", ["convention", "energy (uJ)", "vs ANN"], rows))
    b = t["event_breakdown_pj"]
    doc.append(("p", f"Event-based breakdown: synaptic ops {_uj(b['synaptic_pj'])} uJ "
                     f"({_num(t['event_ops']['effective_ac'])} ACs, {_num(t['event_ops']['effective_mac'])} MACs), "
                     f"neuron updates {_uj(b['neuron_pj'])} uJ, spikes {_uj(b['spike_pj'])} uJ."))
    doc.append(("ul", [f"{k}: {v}" for k, v in report["conventions_rules"].items()]))
    doc.append(("img", "snn_vs_ann.png", "SNN vs ANN under each convention"))

    doc.append(("h2", "Energy by layer kind (event-based)"))
    doc.append(("table", ["layer kind", "synaptic (uJ)", "neurons (uJ)", "spikes (uJ)", "total (uJ)", "ACs", "MACs"],
                [[c["label"], _uj(c["synaptic_pj"]), _uj(c["neuron_pj"]), _uj(c["spike_pj"]), _uj(c["total_pj"]),
                  _num(c["ac_ops"]), _num(c["mac_ops"])] for c in report["categories"]]))
    doc.append(("img", "energy_by_kind.png", "energy by layer kind"))

    doc.append(("h2", "Per layer (module path)"))
    doc.append(("table", ["layer", "input rate", "input events", "synaptic events", "eff. ACs", "eff. MACs",
                          "NeuroBench-rule ops", "neurons", "firing rate", "event (uJ)", "paper (uJ)",
                          "Spikingformer (uJ)", "ANN (uJ)"],
                [[r["layer"], _num(r["input_rate"]), _num(r["input_events"]), _num(r["synaptic_events"]),
                  _num(r["effective_ac"]), _num(r["effective_mac"]), _num(r["neurobench_rule_ops"]),
                  _num(r["neurons"]), _num(r["firing_rate"]), _uj(r["event_pj"]),
                  _uj(r["paper_pj"]), _uj(r["spikingformer_pj"]), _uj(r["ann_pj"])] for r in report["layers"]]))
    doc.append(("img", "firing_rates.png", "firing rates per layer"))

    doc.append(("h2", "Conventions per layer"))
    doc.append(("table", ["layer", "FLOPs (1 pass)", "input", "paper op", "paper ops", "Spikingformer op",
                          "Spikingformer ops", "paper (uJ)", "Spikingformer (uJ)", "ANN (uJ)"],
                [[r["layer"], _num(r["flops"]), r["input"], r["paper_op"], _num(float(r["paper_ops"])),
                  r["spikingformer_op"], _num(float(r["spikingformer_ops"])), _uj(r["paper_pj"]),
                  _uj(r["spikingformer_pj"]), _uj(r["ann_pj"])] for r in report["conventions"]]))

    if ssa:
        _ssa_section(doc, report, t)
    _dense_flops_section(doc, report)

    doc += _target_section_docs(report)

    doc.append(("h2", "Counting rules"))
    doc.append(("ul", report["counting_rules"]))
    doc.append(("h2", "Not modelled"))
    doc.append(("ul", report["not_modelled"]))
    return doc


def _ssa_section(doc: list, report: dict, t: dict) -> None:
    doc.append(("h2", "SSA decomposition (reported separately)"))
    doc.append(("table", ["product", "form", "order", "bits", "neurons", "eff. ACs", "eff. MACs", "updates",
                          "active updates", "spikes", "energy (uJ)"],
                [[s["product"], report["run"]["ssa_form"], s["order"], _num(s["bits"]), _num(s["neurons"]),
                  _num(s["effective_ac"]), _num(s["effective_mac"]),
                  _num(s["neuron_updates"]), _num(s["active_updates"]), _num(s["spikes"]), _uj(s["energy_pj"])]
                 for s in report["ssa_decomposition"]]))
    doc.append(("p", "Neurons and synapse groups that replace Q K^T V (AND neurons, then a bit cascade of "
                     "threshold neurons in the binary form or graded count and product neurons in the graded form); "
                     "the conventions instead charge the product with the Spikingformer SSA formula. Shares: "
                     f"{_uj(t['event_ssa_decomposition_pj'])} uJ of {_uj(t['event_pj'])} uJ event-based."))


def _dense_flops_section(doc: list, report: dict) -> None:
    """Dense FLOPs of every preset of the model's kind, with the published figures where there are some (Spikformer:
    OPs and energy of its paper; the Spike-driven Transformer: the power of its official README)."""
    doc.append(("h2", "Dense FLOPs per preset (original architecture, one pass, MACs)"))
    rows = []
    for name, r in report["dense_flops"]["presets"].items():
        p = r.get("published") or {}
        mj = p.get("energy_mj", r.get("published_power_mj"))
        rows.append([name, f"{r['img_size']}", f"{r['depth']}x{r['embed_dim']}", f"{r['tokens']}",
                     f"{r['total'] / 1e9:.4g} G", f"{r['total_times_T'] / 1e9:.4g} G",
                     f"{p['ops_g']} G" if p else "", f"{mj}" if mj is not None else "",
                     f"{r['published_over_dense']:.3f}" if p else "",
                     f"{r['implied_mean_input_rate']:.3f}" if p else "",
                     f"{r['published_energy_minus_0.9pJ_x_ops_mj']:.3f}" if p else ""])
    doc.append(("table", ["preset", "image", "blocks x dim", "tokens", "dense (1 pass)", "dense x T",
                          "published OPs", "published mJ", "published / dense", "implied mean input rate",
                          "E_pub - 0.9 pJ x OPs (mJ)"], rows))
    doc.append(("p", report["dense_flops"]["explanation"]))
    doc.append(("p", f"Published figures: {report['dense_flops']['published_source']}."))


def _target_section_docs(report: dict) -> list[tuple]:
    """The filled section of a target (Backend.report_section), as that target renders it."""
    doc = []
    for backend in targets.backends():
        if backend.report_section is not None and report.get(backend.report_section):
            doc += backend.report_section_doc(report[backend.report_section], _num)
    return doc


def _md(doc) -> str:
    out = []
    for item in doc:
        k = item[0]
        if k == "h1":
            out.append(f"# {item[1]}\n")
        elif k == "h2":
            out.append(f"## {item[1]}\n")
        elif k == "p":
            out.append(f"{item[1]}\n")
        elif k == "ul":
            out.append("\n".join(f"- {x}" for x in item[1]) + "\n")
        elif k == "img":
            out.append(f"![{item[2]}]({item[1]})\n")
        elif k == "table":
            head, rows = item[1], item[2]
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in rows:
                lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}"
        "img{max-width:100%;border:1px solid #ddd;margin:1em 0}code{background:#f4f4f4}")


def _html(doc, images: dict[str, bytes]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>Spikformer energy report</title>",
           f"<style>{_CSS}</style></head><body>"]
    for item in doc:
        k = item[0]
        if k in ("h1", "h2"):
            out.append(f"<{k}>{e(item[1])}</{k}>")
        elif k == "p":
            out.append(f"<p>{e(item[1])}</p>")
        elif k == "ul":
            out.append("<ul>" + "".join(f"<li>{e(str(x))}</li>" for x in item[1]) + "</ul>")
        elif k == "img":
            b64 = base64.b64encode(images[item[1]]).decode()
            out.append(f"<img alt=\"{e(item[2])}\" src=\"data:image/png;base64,{b64}\">")
        elif k == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in item[1]) + "</tr>")
            for r in item[2]:
                out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ charts

def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None}, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _energy_unit(max_pj: float) -> tuple[float, str]:
    for scale, unit in ((1e9, "mJ"), (1e6, "\u00b5J"), (1e3, "nJ")):
        if max_pj >= scale:
            return scale, unit
    return 1.0, "pJ"


def chart_firing_rates(report: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["layers"] if r["firing_rate"] is not None]
    labels = []
    for r in rows:
        lab = r["layer"]
        if r["category"] == "ssa_decomposition":
            lab += " (SSA decomposition neurons)"
        elif r["category"] == "maxpool":
            lab += " (OR)"
        labels.append(lab)
    rates = [r["firing_rate"] for r in rows]
    colors = {"first_conv": "#332288", "sps_conv": "#4477aa", "maxpool": "#66ccee", "linear": "#228833",
              "ssa_lif": "#ccbb44", "ssa_decomposition": "#ee6677", "head": "#aa3377"}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.4))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, rates, color=[colors.get(r["category"], "#bbbbbb") for r in rows])
    ax.set_yticks(y, labels, fontsize=8)
    top = max(rates + [1e-9])
    for yi, v in zip(y, rates):
        ax.text(v + top * 0.01, yi, f"{v:.3g}", va="center", fontsize=7)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("firing rate (spikes per neuron per step)")
    ax.set_title(f"Output firing rate per layer ({report['run']['samples']} samples, T={report['run']['steps']})",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch
    used = []
    for r in rows:
        if r["category"] not in used:
            used.append(r["category"])
    ax.legend(handles=[Patch(color=colors.get(c, "#bbbbbb"), label=CATEGORY_LABELS.get(c, c)) for c in used],
              fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(fig)


def chart_energy_by_kind(report: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = report["categories"]
    scale, unit = _energy_unit(max([c["total_pj"] for c in cats] + [1.0]))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cats) + 1.6))
    y = list(range(len(cats)))[::-1]
    left = [0.0] * len(cats)
    for key, lab, col in (("synaptic_pj", "synaptic ops", "#4477aa"), ("neuron_pj", "neuron updates", "#ee6677"),
                          ("spike_pj", "spikes", "#ccbb44")):
        vals = [c[key] / scale for c in cats]
        if any(vals):
            ax.barh(y, vals, left=left, color=col, label=lab)
            left = [a + b for a, b in zip(left, vals)]
    top = max(left + [1e-12])
    for yi, v in zip(y, left):
        ax.text(v + top * 0.01, yi, f"{v:.3g}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15)
    ax.set_yticks(y, [c["label"] for c in cats], fontsize=8)
    ax.set_xlabel(f"energy per inference ({unit})")
    ax.set_title(f"Event-based energy by layer kind ({report['energy_model']['name']} model)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def chart_snn_vs_ann(report: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = report["totals"]
    bars = [("ANN baseline\n(dense MACs, 1 pass)", t["ann_pj"], 0.0),
            ("SNN, paper\nconvention", t["paper_pj"], 0.0),
            ("SNN, Spikingformer\nconvention", t["spikingformer_pj"], 0.0),
            ("SNN, event-based\n(this toolchain)", t["event_excluding_ssa_decomposition_pj"],
             t["event_ssa_decomposition_pj"])]
    scale, unit = _energy_unit(max(a + b for _, a, b in bars))
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    x = list(range(len(bars)))
    base = [a / scale for _, a, _ in bars]
    extra = [b / scale for _, _, b in bars]
    ax.bar(x, base, color=["#bbbbbb", "#4477aa", "#66ccee", "#228833"])
    if any(extra):
        ax.bar(x, extra, bottom=base, color="#ee6677", label="SSA decomposition (AND/bit/product neurons)")
    top = max(a + b for a, b in zip(base, extra))
    ann = base[0] or 1.0
    for xi, a, b in zip(x, base, extra):
        ax.text(xi, a + b + top * 0.015, f"{a + b:.3g} {unit}\n({(a + b) / ann:.3g}x ANN)", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(x, [b[0] for b in bars], fontsize=8)
    ax.set_ylim(0, top * 1.22)
    ax.set_ylabel(f"energy per inference ({unit})")
    em = report["energy_model"]
    ax.set_title(f"SNN vs ANN, {em['name']} model (E_MAC {em['mac_pj']} pJ, E_AC {em['ac_pj']} pJ), "
                 f"{report['run']['samples']} samples", fontsize=10)
    if any(extra):
        ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def render_all(report: dict) -> dict[str, bytes]:
    pngs = {"firing_rates.png": chart_firing_rates(report), "energy_by_kind.png": chart_energy_by_kind(report),
            "snn_vs_ann.png": chart_snn_vs_ann(report)}
    doc = _doc(report)
    files = {"energy.json": _json_bytes(report), "energy.csv": _csv_bytes(report),
             "energy.md": _md(doc).encode(), **pngs, "report.html": _html(doc, pngs).encode()}
    return files


def _background(image) -> "object":
    """A 2-D picture of one input: the channel mean of an image [C, H, W], or the event counts of all steps and
    both polarities of event frames [T, 2, H, W]."""
    x = image.double()
    while x.dim() > 2:
        x = x.mean(0) if x.dim() == 3 else x.sum(0)
    return x.numpy()


def chart_attention(maps: dict, images) -> bytes:
    """Per sample two rows (PyTorch reference, simulated hardware network): the input, then one panel per head
    with the attention each token receives, on the token grid, drawn over the input."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    heads, (gh, gw) = maps["heads"], maps["grid"]
    n = maps["samples"]
    fig, axes = plt.subplots(2 * n, heads + 1, figsize=(1.6 * (heads + 1), 1.7 * 2 * n), squeeze=False)
    for i in range(n):
        bg = _background(images[i])
        h, w = bg.shape
        for r, (label, key) in enumerate((("reference", "reference"), ("hardware", "simulation"))):
            row = axes[2 * i + r]
            row[0].imshow(bg, cmap="gray")
            row[0].set_title(f"sample {i}: {label}", fontsize=7)
            for j in range(heads):
                m = maps[key][i, j].reshape(1, 1, gh, gw).float()
                up = F.interpolate(m, size=(h, w), mode="nearest")[0, 0].numpy()
                top = max(float(maps["reference"][i, j].max()), float(maps["simulation"][i, j].max()), 1.0)
                row[j + 1].imshow(bg, cmap="gray")
                row[j + 1].imshow(up, cmap="inferno", alpha=0.6, vmin=0.0, vmax=top)  # one scale per sample/head
                row[j + 1].set_title(f"head {j} (sum {int(maps[key][i, j].sum())})", fontsize=6)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(f"{maps.get('what', 'SSA attention received')} per token, block {maps['block']}, step {maps['step']} ({maps['mode']} "
                 f"mode): {maps['equal_entries']}/{maps['entries']} map entries equal", fontsize=8)
    fig.tight_layout()
    return _png(fig)
