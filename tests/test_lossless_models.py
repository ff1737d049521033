"""Whole Spikformers whose every number is exactly representable in Loihi's formats run spike-identical in
fixed point and in float: 0 mismatches in every population (LIF, threshold, graded and product neurons), equal
logits, in every layout at small size (cifar, imagenet, dvs), both SSA forms, image input raw or normalised and
event input (binary spikes and graded counts), each SSA in its model's product order (the ImageNet layout's
Q (K^T V), the others' (Q K^T) V).

Why the construction is lossless (docs/loihi_fixed_point.md, sections 1, 2 and 5):
- Every LIF fed by dense synapses (conv, linear) gets theta = (64 V + 1) / 2**16 with V = VTH_MANT passed to
  quantize: the quantiser keeps vth = V (the biases are small, no vth reduction) and takes
  lambda = (64 V + 1) / theta = 2**16, so the weight scale sigma = lambda / (64 tau) = 2**9 and the bias scale
  lambda / tau = 2**15 are powers of two. The attention LIF (theta 0.5, inputs scale * integer) keeps the
  quantiser's exact dyadic path; threshold neurons (max-pool OR, AND, bits) and graded neurons are exact anyway.
- Weights are multiples of 1/16 (the first convolution's of 1/8), biases of 1/8 (the head's of 1/64); BatchNorm
  has eps = 0, running_var 1 or 4, gamma = sqrt(var) * (1 or 2) and running_mean, beta multiples of 1/8: the fold
  (float64, passes/fold_bn.py) is exact and keeps every weight on its grid, every bias on 1/8. The input is on
  a grid the payload carries exactly: pixels k/4 with input_scale 4, event counts with input_scale 1, or 8-bit
  pixels p/255 under the normalisation mean 128/255, std 64/255 (mean255 128, std255 64, exact in float32: the
  folded first convolution takes the pixel payloads with weights W/64 and per-neuron biases b - 2 sum W).
- So every synaptic weight times sigma, over the payload's scale, is an integer: the 8-bit mantissa holds it (no
  16-bit low part) and a right shift of the sum never floors, so a = sigma X exactly and u = 64 a = lambda X / tau;
  every bias in v units is a multiple of 2**12 >= 2**(T-1), so the T-1 halvings v = trunc(v / 2) are exact: v is
  lambda H at every step (the 24-bit state never saturates), and v > vth << 6 is v >= lambda theta, the
  reference's H >= theta. The head's weights W / (N T) and bias b / T stay dyadic (N T a power of two), so the
  readout's v / 2**16 is the float logits exactly.

`_lossless_problems` checks every one of these conditions on the quantised graph and its report, so the test
fails loudly (naming the synapse or neuron) if the construction stops being lossless rather than silently
testing something else; `test_negative_controls` shows the check is not vacuous."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from analysis.reference import record_reference
from convert import ir
from convert.frontend import spikformer_to_ir
from convert.passes import lower
from hw_backends.loihi.quantize import quantize
from sim.engine import Engine
from spikformer.data_config import DataConfig
from spikformer.model import Spikformer, lif_modules
from spikformer.presets import PRESETS

VTH_MANT = 1023
LAMBDA = 2 ** 16
THETA = (64 * VTH_MANT + 1) / LAMBDA  # 0.99904, exact in float64
SMALL = dict(embed_dim=16, num_heads=2, depth=1, T=2)

# id -> (preset, config changes, input: "raw" pixels k/4 | "normalized" 8-bit pixels | "events" 0/1 | "counts"
# (event counts 0..3, graded payloads), weight seed (one whose predictions differ between the inputs))
CASES = {
    "digits-cifar-raw": ("digits-2-64", dict(img_size=8, **SMALL), "raw", 0),
    "cifar-normalized": ("cifar10-4-384", dict(img_size=8, **{**SMALL, "depth": 2}), "normalized", 0),
    "imagenet-normalized": ("imagenet-8-384", dict(img_size=32, num_classes=10, **SMALL), "normalized", 0),
    "event-digits-dvs": ("event-digits-2-64", dict(img_size=8, **{**SMALL, "T": 4}), "events", 3),
    "dvs-counts": ("cifar10dvs-2-256", dict(img_size=32, **SMALL), "counts", 4),
}
INPUT_SCALE = {"raw": 4, "normalized": 255, "events": 1, "counts": 1}
POPULATION_TYPES = (ir.LIF, ir.Threshold, ir.GradedNeuron, ir.ProductNeuron)
BATCH = 8


def _on_grid(gen: torch.Generator, shape, step: float, limit: float) -> torch.Tensor:
    n = max(1, int(limit / step))
    return torch.randint(-n, n + 1, tuple(shape), generator=gen).double() * step


def lossless_model(preset: str, changes: dict, normalized: bool, seed: int = 0, attn_drive: float = 2.0):
    """A float64 model of `preset` (with `changes`) whose numbers are all on the grids of the module docstring."""
    m = Spikformer(PRESETS[preset].with_(**changes)).eval().double()
    gen = torch.Generator().manual_seed(seed)
    first = True
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                step = 1 / 8 if first else 1 / 16
                limit = max(step, round(2.5 / mod.weight[0].numel() ** 0.5 / step) * step)
                mod.weight.copy_(_on_grid(gen, mod.weight.shape, step, limit))
                if mod.bias is not None:  # (the head's small: the predictions are to differ between inputs)
                    b_step = 1 / 64 if name == "head" else 1 / 8
                    mod.bias.copy_(_on_grid(gen, mod.bias.shape, b_step, 2 * b_step))
                first = False
            elif isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                c = mod.num_features
                mod.eps = 0.0
                mod.running_var.copy_(4.0 ** torch.randint(0, 2, (c,), generator=gen).double())
                mod.weight.copy_(mod.running_var.sqrt() * 2.0 ** torch.randint(0, 2, (c,), generator=gen).double())
                mod.running_mean.copy_(_on_grid(gen, (c,), 1 / 8, 0.5))
                drive = attn_drive if name.endswith(("q_bn", "k_bn", "v_bn")) else 0.25
                mod.bias.copy_(_on_grid(gen, (c,), 1 / 8, 0.5) + drive)
        for name, lif in lif_modules(m).items():
            if not name.endswith("attn_lif"):
                lif.v_threshold = THETA
    if normalized:
        c = m.config.in_channels
        m.set_input_normalization(DataConfig(mean=(128 / 255,) * c, std=(64 / 255,) * c))
        assert m.input_mean255.tolist() == [[[128.0]]] * c and m.input_std255.tolist() == [[[64.0]]] * c
    return m


def model_input(cfg, kind: str, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    frame = (cfg.in_channels, cfg.img_size, cfg.img_size)
    if kind == "raw":
        return torch.randint(0, 5, (BATCH, *frame), generator=gen).double() / 4
    if kind == "normalized":  # p / 255 * 255 == p in float64 for every 8-bit p: the reference sees the pixels
        return torch.randint(0, 256, (BATCH, *frame), generator=gen).double() / 255
    density = torch.linspace(0.1, 0.6, BATCH).view(-1, 1, 1, 1, 1)  # samples that differ (so do predictions)
    events = (torch.rand((BATCH, cfg.T, *frame), generator=gen) < density).double()
    return events if kind == "events" else events * torch.randint(1, 4, events.shape, generator=gen)


def _effective_weights(node) -> np.ndarray:
    w, e = np.asarray(node.weight, dtype=np.float64), np.asarray(node.weight_exp, dtype=np.float64)
    if e.ndim:
        e = e.reshape((-1,) + (1,) * (w.ndim - 1))
    return w * 2.0 ** e


def _lossless_problems(g: ir.Graph, q: ir.Graph, report: dict) -> list[str]:
    """Why quantising lowered graph `g` into `q` (with `report`) was not lossless; [] when it was."""
    T = int(g.metadata["T"])
    problems = [f"warning: {w}" for w in report["warnings"]]
    if T > 7:
        problems.append(f"T = {T}: u = 64 a survives only 6 exact halvings")
    for name, rec in report["synapses"].items():
        if rec.get("part") == "low":
            problems.append(f"{name}: a 16-bit low part (the 8-bit mantissas did not hold the weights)")
        for key in ("abs_error", "max_abs_error", "rounded_by_lava_rules", "clipped_weights"):
            if rec.get(key, 0) != 0:
                problems.append(f"{name}: {key} {rec[key]}")
    for name, node in q.nodes.items():
        if node.is_synapse:  # integer weights on integer payloads: the sum and its shift are exact
            w = _effective_weights(node)
            if not np.array_equal(w, np.round(w)):
                problems.append(f"{name}: effective weights not integers (e.g. {w[w != np.round(w)][0]})")
    for name, rec in report["layers"].items():
        node = q.nodes[name]
        if rec["kind"] == "LIF":
            lam, theta = rec["lambda"], rec["v_threshold"]
            if rec["bias_max_abs_error_v_units"] != 0:
                problems.append(f"{name}: bias error {rec['bias_max_abs_error_v_units']} (v units)")
            # v > vth << 6 is v >= lambda theta: v any integer (64 vth + 1), or a multiple of 64 (exact dyadic path)
            tie = 64 * (rec["vth"] + 1) if rec["exact_dyadic"] else 64 * rec["vth"] + 1
            if lam * theta != tie:
                problems.append(f"{name}: lambda theta {lam * theta} != {tie}")
            if lam != 2.0 ** round(math.log2(lam)):
                problems.append(f"{name}: lambda {lam} is not a power of two")
            if node.bias_mant is not None:  # v = trunc(v / 2) must be exact T - 1 times
                b = np.asarray(node.bias_mant) * 2.0 ** node.bias_exp
                if np.any(b % 2 ** (T - 1)):
                    problems.append(f"{name}: bias (v units) not a multiple of 2**(T-1)")
        elif rec["kind"] == "Readout":  # compared with the lowered head's bias, not the quantiser's own record
            want = np.asarray(g.nodes[g.in_edges(name)[0].src].bias) * rec["logit_scale"]
            if not np.array_equal(np.asarray(node.bias_mant) * 2.0 ** node.bias_exp, want):
                problems.append(f"{name}: readout bias rounded")
    return problems


@pytest.fixture(scope="module")
def built():
    """case id -> (model, frontend graph, input, reference logits and records), made once for both SSA forms."""
    cache = {}

    def get(case):
        if case not in cache:
            preset, changes, kind, seed = CASES[case]
            m = lossless_model(preset, changes, kind == "normalized", seed)
            x = model_input(m.config, kind)
            fg = spikformer_to_ir(m)
            if kind == "events":
                fg.metadata["input_binary"] = True  # as hw_backends.conversion does for 0/1 event data
            cache[case] = (m, fg, x, *record_reference(m, x))
        return cache[case]
    return get


@pytest.mark.parametrize("form", ["binary", "graded"])
@pytest.mark.parametrize("case", list(CASES))
def test_lossless_model_is_spike_identical(built, case, form):
    t0 = time.perf_counter()
    m, fg, x, logits, recs = built(case)
    kind = CASES[case][2]
    g = lower(fg, ssa_order=m.config.product_order, ssa_form=form)
    q, report = quantize(g, vth_mant=VTH_MANT, input_scale=INPUT_SCALE[kind])
    assert _lossless_problems(g, q, report) == []
    assert bool(g.of_type(ir.InputNorm)) == (kind == "normalized")

    pops = sorted(n for n, node in g.nodes.items() if isinstance(node, POPULATION_TYPES))
    assert pops == sorted(n for n, node in q.nodes.items()  # every population of both graphs, nothing left out
                          if isinstance(node, (ir.GradedNeuron, ir.ProductNeuron))
                          or isinstance(node, ir.LoihiLIF) and not node.readout)
    ref = Engine(g, "float").run(x, record=pops)
    eng = Engine(q, "loihi_fixed")
    got = eng.run(x, record=pops)
    events = {k: v for n, s in eng.last_state.items() for k, v in s.items()
              if k in ("u_wrapped", "saturated", "a_in_over_16bit") and n in pops}
    assert not events, events  # the 24-bit state and the 16-bit synaptic input never overflow

    mismatches = {n: int((got.records[n] != ref.records[n]).sum()) for n in pops}
    assert mismatches == {n: 0 for n in pops}
    out_fixed = got.outputs["output"] / q.metadata["readout_scale"]
    assert torch.equal(out_fixed, ref.outputs["output"])
    assert torch.equal(ref.outputs["output"], logits)  # the engine's float graph is the PyTorch model itself
    assert torch.equal(out_fixed.argmax(1), logits.argmax(1)) and len(set(logits.argmax(1).tolist())) > 1
    assert all(torch.equal(ref.records[n], r) for n, r in recs.items())

    # activity: a test where nothing fires would prove nothing
    spiking = [n for n in pops if g.nodes[n].spiking]
    spikes = {n: int(ref.records[n].sum()) for n in spiking}
    lifs = [n for n in spiking if isinstance(g.nodes[n], ir.LIF)]
    last = f"block.{m.config.depth - 1}"
    print(f"{case} {form}: {len(pops)} populations, {sum(r.numel() for r in ref.records.values())} values "
          f"compared, {sum(spikes.values())} spikes, {sum(1 for n in spiking if spikes[n])}/{len(spiking)} spiking "
          f"populations fire, {time.perf_counter() - t0:.1f} s")
    assert all(spikes[n] > 0 for n in lifs), {n: spikes[n] for n in lifs if not spikes[n]}
    assert sum(1 for n in spiking if spikes[n]) >= 0.6 * len(spiking)
    assert spikes[f"{last}.mlp.fc2_lif"] > 0 and spikes[f"{last}.attn.attn_lif"] > 0
    for n in lifs:  # and no population fires everywhere (a saturated layer would hide threshold errors too)
        assert spikes[n] < ref.records[n].numel(), n


def _perturbed(built, what: str):
    fg = built("digits-cifar-raw")[1].copy()
    if what == "weight off the grid":
        w = fg.nodes["block.0.mlp.fc1_linear"].weight.copy()
        w[0, 0] += 1e-3
        fg.nodes["block.0.mlp.fc1_linear"].weight = w
    elif what == "weight on a finer dyadic grid":  # exact in the 16-bit weights, but not an integer on chip
        w = fg.nodes["block.0.mlp.fc1_linear"].weight.copy()
        w[0, 0] += 2.0 ** -12
        fg.nodes["block.0.mlp.fc1_linear"].weight = w
    else:  # theta 1, not (64 V + 1) / 2**k: lambda = 64 V + 1 is no power of two
        fg.nodes["block.0.mlp.fc1_lif"].v_threshold = 1.0
    g = lower(fg)
    q, report = quantize(g, vth_mant=VTH_MANT, input_scale=INPUT_SCALE["raw"])
    return _lossless_problems(g, q, report), report


@pytest.mark.parametrize("what,expect", [
    ("weight off the grid", "block.0.mlp.fc1_linear: max_abs_error"),
    ("weight on a finer dyadic grid", "block.0.mlp.fc1_linear.low: effective weights not integers"),
    ("threshold not (64 V + 1) / 2**k", "block.0.mlp.fc1_lif: lambda"),
])
def test_negative_controls(built, what, expect):
    """The same network with one number moved off its grid: the check names it (it is not vacuous). The report
    itself shows the rounding error, except for the weight on a finer dyadic grid: the 16-bit low part holds it
    exactly (error 0), but its mantissa times 2**exp is a fraction, floored by the right shift of the sum on chip
    (docs/loihi_fixed_point.md, "Remaining error"), which the report does not count."""
    problems, report = _perturbed(built, what)
    assert any(p.startswith(expect) for p in problems), problems
    if what != "weight on a finer dyadic grid":
        assert report["synapses"]["block.0.mlp.fc1_linear"]["max_abs_error"] > 0


def test_default_thresholds_are_not_lossless(built):
    """The same network with the model's own thresholds (theta 1: lambda = 64 V + 1, no power of two) rounds its
    weights and biases, and H = 1 exactly (frequent on these grids) then fires or not by the sign of the
    rounding: the spike comparison above would see a construction that is not lossless."""
    _, fg, x, _, _ = built("digits-cifar-raw")
    fg = fg.copy()
    for node in fg.of_type(ir.LIF):
        if node.v_threshold == THETA:
            node.v_threshold = 1.0
    g = lower(fg)
    q, report = quantize(g, vth_mant=VTH_MANT, input_scale=INPUT_SCALE["raw"])
    assert any("not a power of two" in p for p in _lossless_problems(g, q, report))
    pops = [n for n, node in g.nodes.items() if isinstance(node, POPULATION_TYPES)]
    ref, got = Engine(g, "float").run(x, record=pops), Engine(q, "loihi_fixed").run(x, record=pops)
    assert sum(int((got.records[n] != ref.records[n]).sum()) for n in pops) > 0
