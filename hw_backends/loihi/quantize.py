"""Loihi 2 fixed-point quantisation of a lowered IR graph.

Every LIF becomes a `LoihiLIF` with integer du, dv, vth, bias; every synapse gets 8-bit integer weights and a
weight exponent; threshold neurons (max-pool OR, SSA AND and bit neurons) become memoryless LoihiLIFs; the head
integrator becomes a non-spiking readout neuron; the analog image becomes 8-bit graded spikes. Every choice is
written to the `report` (quantization.json): scales, exponents, thresholds, rounding and clipping counts.

Scale of a LIF layer (tau, threshold theta). Loihi's v is lambda * H of the reference (H = membrane before
reset). With du = 4095, u = a << 6 each step and v = v (4096 - dv) / 4096 + u + bias, so the synaptic weight
scale is sigma = lambda / (64 tau) and dv = 4096 / tau. The reference fires on H >= theta, Loihi on
v > vth << 6: with lambda theta = 64 vth + 1 the integer test v > 64 vth is exactly v >= lambda theta.
A layer whose inputs are exact dyadic values without bias (the attention LIF: 0.125 * integer) is scaled by a
power of two instead, so that its arithmetic is exact and ties fire as in the reference.

Weight precision. With `weight_bits=16` every dense synapse layer (conv, linear, head) is carried by two 8-bit
synapse groups from the same source to the same neurons: a high part (mantissa m_hi, exponent e) and a low part
holding the rounding residue (mantissa m_lo, exponent max(e - 7, WEIGHT_EXP_MIN)); the neuron sums both. It
costs the synapses of a second group and removes most of the 8-bit rounding error, which dominates the
fixed-point error (per-layer records give both parts and the combined error). `weight_bits=8` is one group.

Threshold neurons get weights x2 (v = 128 x), dv = du = 4095 and vth = 2 ceil(theta) - 1: the residue
trunc(v / 4096) left after a non-firing step stays below 64 while x < 2048 (checked), so the neuron fires
exactly when x >= ceil(theta) and carries nothing over in effect.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from convert import ir
from convert.options import DEFAULT_INPUT_SCALE, DEFAULT_VTH_MANT, WEIGHT_BITS_CHOICES
from convert.passes import fold_input_norm
from ground.errors import UserError

from hardware.loihi import limits as L
from .dense_weights import WeightMemo, fit_exp, lava_weight_rules


PIXEL_MAX = 255  # a normalising model's input: x = pixel / 255, exact as the payload at input scale 255
RAW_PIXEL_CONVENTION = "raw pixel / 255, payload = pixel value (input scale 255); the normalisation is folded"
NORMALIZATION_FOLD_RULE = ("W' = W * 255 / std255 per input channel; per-neuron bias b'[o, i, j] = b[o] - sum of "
                           "W * mean255 / std255 over the taps of (i, j) inside the image (zero padding of the "
                           "normalised input = the mean in raw space)")

READOUT_LOGIT_RANGE = 64  # |logits| the readout represents without saturating (v saturates at 2**23)


class NotQuantisableError(UserError, ValueError):
    """A lowered graph the Loihi quantiser has no fixed-point form for (one line naming the model and node)."""


class Quantizer:
    def __init__(self, g: ir.Graph, vth_mant: int = DEFAULT_VTH_MANT, input_scale: int = DEFAULT_INPUT_SCALE,
                 per_channel_exp: bool = True, weight_bits: int = 16, memo: WeightMemo | None = None):
        if weight_bits not in WEIGHT_BITS_CHOICES:
            raise ValueError(f"weight_bits must be one of {WEIGHT_BITS_CHOICES}, got {weight_bits!r}")
        for what, v in (("input scale", input_scale), ("vth mantissa", vth_mant)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"the {what} must be a positive integer, got {v!r}")
        if input_scale >= 2 ** L.GRADED_PAYLOAD_BITS:
            raise L.LoihiLimitError("input", f"graded input payload ({L.GRADED_PAYLOAD_BITS} bit)", input_scale,
                                    2 ** L.GRADED_PAYLOAD_BITS - 1)
        if vth_mant > L.VTH_MAX:
            raise L.LoihiLimitError("all LIF layers", "vth (unsigned 17 bit)", vth_mant, L.VTH_MAX)
        self.per_channel_exp = per_channel_exp
        self.memo = memo or WeightMemo()
        self.weight_bits = weight_bits
        self.src = g
        self.g = g.copy()
        self.vth_mant = vth_mant
        self.input_scale = input_scale
        self.report = {"vth_mant_target": vth_mant, "weight_bits": weight_bits, "input": {}, "layers": {},
                       "synapses": {},
                       "warnings": [dict(w) for w in g.metadata.get("warnings", [])]}  # the frontend's first
        self.shapes = g.shapes()
        self.payload_scale = graded_payload_scales(self.g, self.report)

    def warn(self, node, what, detail):
        self.report["warnings"].append(L.LimitWarning(node, what, detail).to_dict())

    # -------------------------------------------------------------- synapses
    def _set_weights(self, syn: ir.Node, scale: float, exact: bool = False) -> dict:
        """Weights * scale -> integer mantissa (lava rules) and exponent; returns the record. A synapse node
        that feeds several neuron populations is quantised once; they must agree on its scale."""
        done = self.report["synapses"].get(syn.name)
        if done is not None:
            if done["_scale"] != scale:
                raise ValueError(f"{syn.name}: feeds populations that need different weight scales "
                                 f"({done['_scale']} vs {scale})")
            return done
        if isinstance(syn, ir.AxisSynapse) or isinstance(syn, ir.SumPool2d):
            target = float(syn.weight) * scale
            mant_max = 255
            e = fit_exp(abs(target), mant_max)
            if exact and target != 0:  # dyadic value: odd mantissa times a power of two, represented exactly
                m, e2 = abs(target), 0
                while not float(m).is_integer() and e2 > L.WEIGHT_EXP_MIN:
                    m, e2 = m * 2, e2 - 1
                while float(m).is_integer() and m % 2 == 0:
                    m, e2 = m / 2, e2 + 1
                if float(m).is_integer() and m <= mant_max and e2 <= L.WEIGHT_EXP_MAX:
                    e = e2
            m = round(target / 2 ** e)
            m_l, mode = lava_weight_rules(np.array([m]))
            rec = {"kind": syn.kind, "target": target, "mantissa": int(m_l[0]), "weight_exp": e, "sign_mode": mode,
                   "abs_error": abs(int(m_l[0]) * 2 ** e - target)}
            syn.weight, syn.weight_exp = float(m_l[0]), e
        else:
            d = self.memo.quantise(syn.name, syn.weight, scale, self.per_channel_exp,
                                   self.weight_bits == 16 and not exact)
            rec = {"kind": syn.kind, **d.record}
            for what, detail in d.warnings:
                self.warn(syn.name, what, detail)
            syn.weight, syn.weight_exp = d.mantissas, d.weight_exp
            if d.low is not None:
                rec["low_part"] = self._add_low_part(syn, d.low, scale)
        rec["_scale"] = scale
        self.report["synapses"][syn.name] = rec
        return rec

    def _add_low_part(self, syn: ir.Node, low, scale: float) -> str:
        """The second 8-bit synapse group of a 16-bit weight (dense_weights.LowPart), wired from the same source
        to the same neurons; returns its name."""
        name = self.g.unique_name(f"{syn.name}.low")
        node = copy.copy(syn)
        node.name = name
        node.weight, node.weight_exp = low.mantissas, low.weight_exp
        if hasattr(node, "bias"):
            node.bias = None
        self.g.nodes[name] = node
        self.g.metadata.setdefault("weight_low_parts", {})[name] = syn.name
        for edge in self.g.in_edges(syn.name):
            self.g.connect(edge.src, name, edge.port)
        for edge in self.g.out_edges(syn.name):
            self.g.connect(name, edge.dst, edge.port)
        self.report["synapses"][name] = {
            "kind": syn.kind, "part": "low", "high_part": syn.name, "scale": scale,
            "weight_exp": np.asarray(low.weight_exp).tolist(), "sign_mode": low.sign_mode,
            "max_abs_mantissa": low.max_abs_mantissa, "_scale": scale}
        return name

    def _pop_bias(self, syns) -> np.ndarray | None:
        biases = [s.bias for s in syns if getattr(s, "bias", None) is not None]
        for s in syns:
            if getattr(s, "bias", None) is not None:
                s.bias = None
        return sum(biases) if biases else None

    # -------------------------------------------------------------- neurons
    def lif(self, node: ir.LIF) -> ir.LoihiLIF:
        syns = [self.g.nodes[e.src] for e in self.g.in_edges(node.name)]
        tau, theta = node.tau, node.v_threshold
        dv = round(4096 / tau)
        if abs(4096 / tau - dv) > 1e-9 or node.v_reset != 0:
            self.warn(node.name, "decay", f"tau={tau} gives dv={4096 / tau:.3f}, rounded to {dv}")
        bias = self._pop_bias(syns)
        T = int(self.g.metadata.get("T", 4))
        exact = bias is None and all(isinstance(s, ir.AxisSynapse) and s.weight != 0 for s in syns)
        if exact:
            unit = min(abs(s.weight) for s in syns)
            sigma = 2.0 ** math.ceil(math.log2(2 ** (T + 1) / unit))
            lam = 64 * tau * sigma
            vth = lam * theta / 64 - 1
            exact = float(vth).is_integer() and 0 < vth <= L.VTH_MAX
        if not exact:
            vth = self.vth_mant
            if bias is not None and np.max(np.abs(bias)) > 0:
                # the largest bias must fit bias_mant << bias_exp: lambda <= BIAS_MAX * tau / max|bias|
                lam_max = L.BIAS_MANT_MAX * 2 ** L.BIAS_EXP_MAX * tau / float(np.max(np.abs(bias)))
                vth_fit = math.floor((lam_max * theta - 1) / 64)
                if vth_fit < vth:
                    if vth_fit < 1:  # even vth = 1 (lambda theta = 65) cannot hold it
                        top = L.BIAS_MANT_MAX * 2 ** L.BIAS_EXP_MAX * tau / 65
                        raise L.LoihiLimitError(node.name, "bias range in thresholds per step (13-bit mantissa "
                                                "<< 3-bit exponent)", float(np.max(np.abs(bias))) / theta, top)
                    self.warn(node.name, "fixed-point scale reduced", f"vth {vth} -> {vth_fit} so that the "
                              f"largest bias ({float(np.max(np.abs(bias))) / theta:.3g} thresholds) fits the "
                              f"bias range; resolution theta/{64 * vth_fit + 1}")
                    vth = vth_fit
            lam = (64 * vth + 1) / theta
            sigma = lam / (64 * tau)
        recs = [self._set_weights(s, sigma / self._payload_in(s), exact) for s in syns]
        bias_mant, bias_exp, bias_err = None, 0, 0.0
        if bias is not None:
            b = bias * lam / tau  # in v units per step
            bias_exp = max(0, math.ceil(math.log2(max(np.max(np.abs(b)), 1e-30) / L.BIAS_MANT_MAX)))
            if bias_exp > L.BIAS_EXP_MAX:
                raise L.LoihiLimitError(node.name, "bias exponent (3 bit)", bias_exp, L.BIAS_EXP_MAX)
            bias_mant = np.clip(np.rint(b / 2 ** bias_exp), L.BIAS_MANT_MIN, L.BIAS_MANT_MAX).astype(np.int64)
            bias_err = float(np.max(np.abs(bias_mant * 2.0 ** bias_exp - b)))
        self.report["layers"][node.name] = {
            "kind": "LIF", "source": node.source, "tau": tau, "v_threshold": theta, "exact_dyadic": bool(exact),
            "lambda": lam, "weight_scale_sigma": sigma, "du": 4095, "dv": dv, "vth": int(vth),
            "threshold_rule": "v > vth<<6  <=>  v >= lambda*theta", "bias_exp": bias_exp,
            "bias_max_abs_error_v_units": bias_err,
            "bias_per_neuron": bias is not None and np.ndim(bias) > 1,
            "synapses": [s.name for s in syns] + [r["low_part"] for r in recs if "low_part" in r],
            "weight_exps": [r["weight_exp"] for r in recs]}
        return ir.LoihiLIF(node.name, node.source, du=4095, dv=dv, vth=int(vth),
                           bias_mant=None if bias_mant is None else bias_mant.astype(np.float64),
                           bias_exp=bias_exp)

    def threshold(self, node: ir.Threshold) -> ir.LoihiLIF:
        syns = [self.g.nodes[e.src] for e in self.g.in_edges(node.name)]
        x_max = 0.0
        for s in syns:
            s = self.src.nodes[s.name]
            w = s.weight
            fan = self._fan_in(s)
            x_max += max(float(np.max(w)) if isinstance(w, np.ndarray) else float(w), 0.0) * fan
        if 128 * x_max / 4096 >= 64:
            raise L.LoihiLimitError(node.name, "threshold-neuron input range (residue must stay < 64)",
                                    x_max, 2047)
        for s in syns:
            self._set_weights(s, 2.0, exact=True)
        c = math.ceil(node.threshold)
        vth = 2 * c - 1
        self.report["layers"][node.name] = {"kind": "Threshold", "source": node.source, "threshold": node.threshold,
                                            "integer_threshold": c, "du": 4095, "dv": 4095, "vth": vth,
                                            "max_input": x_max, "rule": "weights x2, v=128x, fires iff x >= ceil(theta)"}
        return ir.LoihiLIF(node.name, node.source, du=4095, dv=4095, vth=vth)

    def _payload_in(self, syn) -> float:
        """The payload scale of what synapse `syn` reads: a graded population's (its real values are sent as
        round(value x P)), the bias source's payload, else 1 (spikes; Spikformer's relays of integer counts)."""
        srcs = set()
        for e in self.g.in_edges(syn.name):
            srcs.add(self.payload_scale.get(self.g.view_origin(e.src), 1.0))
        if len(srcs) != 1:
            raise ValueError(f"{syn.name}: reads sources of different payload scales {sorted(srcs)}")
        return srcs.pop()

    def graded(self, node):
        """Graded and product neurons carry integers: payloads round(value x P) with P its payload scale (1 for
        Spikformer's relays of integer counts, whose synapses keep weight 1 exactly); a synapse from a source of
        scale P_src gets weights x P / P_src, exact where that is a small integer (the stream's identities, the
        max-pool's taps), 16-bit dense otherwise (the terms' convolutions, at scale P)."""
        syns = [self.g.nodes[e.src] for e in self.g.in_edges(node.name)]
        P = self.payload_scale.get(node.name, 1.0)
        for s in syns:
            scale = P / self._payload_in(s)
            w = np.asarray(self.src.nodes[s.name].weight, dtype=np.float64) * scale
            self._set_weights(s, scale, exact=bool(np.all(w == np.round(w)) and np.max(np.abs(w)) <= 255))
        rec = {"kind": node.kind, "source": node.source, "vth": node.vth, "exp": getattr(node, "exp", 0),
               "rule": "integer payloads, weights 1, exact"}
        if node.name in self.payload_scale:  # real values as payloads (the Spike-driven Transformer)
            rec.update(payload_scale=P, rule="integer payloads round(value x payload_scale)")
        self.report["layers"][node.name] = rec
        return node

    def _fan_in(self, s) -> float:
        if isinstance(s, ir.AxisSynapse):
            return s.fan_in
        if isinstance(s, ir.SumPool2d):
            return s.kernel[0] * s.kernel[1]
        return float(np.prod(s.weight.shape[1:]))

    def readout(self, node: ir.Integrator) -> ir.LoihiLIF:
        syns = [self.g.nodes[e.src] for e in self.g.in_edges(node.name)]
        bias = self._pop_bias(syns)
        # v = lambda * logit must stay inside the 24-bit state for |logit| up to READOUT_LOGIT_RANGE; the
        # weights then take whatever exponent (negative: a right shift of the sum) gives them full mantissas
        lam = 2.0 ** (L.STATE_BITS - 2) / READOUT_LOGIT_RANGE
        sigma = lam / 64
        for s in syns:
            self._set_weights(s, sigma)
        b = bias * lam
        bias_exp = max(0, math.ceil(math.log2(max(np.max(np.abs(b)), 1e-30) / L.BIAS_MANT_MAX)))
        if bias_exp > L.BIAS_EXP_MAX:  # |bias per step| > BIAS_MANT_MAX * 2**BIAS_EXP_MAX / lam (8 logits)
            raise L.LoihiLimitError(node.name, "readout bias exponent (3 bit): |head bias per step| up to "
                                    f"{L.BIAS_MANT_MAX * 2 ** L.BIAS_EXP_MAX / lam:g} logits", bias_exp,
                                    L.BIAS_EXP_MAX)
        bias_mant = np.rint(b / 2 ** bias_exp)
        self.report["layers"][node.name] = {"kind": "Readout", "source": node.source, "du": 4095, "dv": 0,
                                            "vth": L.VTH_MAX, "logit_scale": lam, "bias_exp": bias_exp,
                                            "bias_max_abs_error_v_units":
                                                float(np.max(np.abs(bias_mant * 2.0 ** bias_exp - b))),
                                            "logit_range": READOUT_LOGIT_RANGE,
                                            "rule": "logits = v / logit_scale at the last step; never fires"}
        self.g.metadata["readout_scale"] = lam
        return ir.LoihiLIF(node.name, node.source, du=4095, dv=0, vth=L.VTH_MAX, bias_mant=bias_mant,
                           bias_exp=bias_exp, readout=True)

    def run(self) -> tuple[ir.Graph, dict]:
        g = self.g
        for node in g.of_type(ir.Conv2d):  # the first conv: analog image as graded 8-bit spikes
            if any(isinstance(g.nodes[e.src], ir.Input) for e in g.in_edges(node.name)):
                node.weight = node.weight / self.input_scale
        if g.metadata.get("input_binary"):
            encoding = "event frames as binary spikes, one per polarity, pixel and step (the data's counts are 0/1)"
        elif g.metadata.get("input_per_step"):
            encoding = (f"event frames as graded spikes, payload round(count * {self.input_scale}) per polarity, "
                        f"pixel and step (clipped at {2 ** L.GRADED_PAYLOAD_BITS - 1})")
        else:
            encoding = f"graded spikes, payload round(clip(x, 0, 1) * {self.input_scale})"
        self.report["input"] = {"encoding": encoding,
                                "payload_scale": self.input_scale,
                                "payload_bits": int(self.input_scale).bit_length()}
        norm = g.metadata.get("folded_input_norm")
        if norm:
            self.report["input"]["normalization"] = {"nodes": norm, "convention": RAW_PIXEL_CONVENTION,
                                                     "rule": NORMALIZATION_FOLD_RULE}
            if self.input_scale != PIXEL_MAX:
                self.warn("input", "input encoding rounds", f"the model normalises 8-bit pixels (x = pixel / 255) "
                          f"but the input scale is {self.input_scale}: payloads round(x * {self.input_scale}) are "
                          f"not the pixel values")
        g.metadata["input_payload_scale"] = self.input_scale
        for name in g.topo_order():
            method = NEURON_QUANTISERS.get(type(g.nodes[name]))
            if method is not None:  # synapses are quantised with the neuron they feed; other kinds have no numbers
                g.nodes[name] = getattr(self, method)(g.nodes[name])
        g.metadata["numeric"] = "loihi_fixed"
        g.metadata["quantization"] = {k: v for k, v in self.report.items() if k in ("input", "vth_mant_target")}
        return g, self.report


# each neuron kind -> the Quantizer method that returns its Loihi node (graded neurons keep theirs)
NEURON_QUANTISERS = {ir.LIF: "lif", ir.Threshold: "threshold", ir.Integrator: "readout", ir.GradedNeuron: "graded",
                     ir.GradedRelu: "graded", ir.ProductNeuron: "graded"}

BIAS_SOURCE_PAYLOAD = 2 ** 15  # the bias source's graded payload: weights below 2**8 then reach biases up to 2**23


def graded_payload_scales(g: ir.Graph, report: dict) -> dict:
    """The payload scale P of every graded population that carries real values (the Spike-driven Transformer's
    stream relays and graded max-pool; docs/sdt_lowering.md, step 4): one power of two for all of them, the largest
    with (4 B + 1) P <= 2**23, B a bound of |value| over the relays (each relay: the sum of its terms' bounds, a
    term's bound |bias| + L1 norm of its weights for 0/1 inputs); the bias source gets BIAS_SOURCE_PAYLOAD.
    Spikformer's graded relays (integer counts) keep scale 1 (not listed)."""
    if g.metadata.get("architecture") != ir.ARCHITECTURE_SDT:
        return {}
    bound: dict[str, float] = {}
    for name in g.topo_order():
        node = g.nodes[name]
        ins = sum(bound.get(e.src, 0.0) for e in g.in_edges(name))
        if node.spiking or isinstance(node, ir.Input):
            bound[name] = 1.0
        elif node.is_synapse and isinstance(getattr(node, "weight", None), np.ndarray) and not isinstance(
                g.nodes[g.in_edges(name)[0].src], ir.BiasSource):
            w = np.abs(node.weight).reshape(node.weight.shape[0], -1).sum(1).max()
            b = 0.0 if getattr(node, "bias", None) is None else float(np.max(np.abs(node.bias)))
            bound[name] = float(w) * ins + b
        elif node.is_synapse:
            # the bias source's synapse (the max-pool padding, not a relay's value) or one without a weight array
            # (AxisSynapse, SumPool2d: they feed spiking neurons, never a relay)
            bound[name] = 0.0
        else:
            bound[name] = ins
    relays = [n for n, node in g.nodes.items() if isinstance(node, ir.GradedNeuron)]
    if not relays:
        return {}
    B = max(bound[n] for n in relays)
    P = 2.0 ** math.floor(math.log2((2 ** 23 - 1) / (4 * B + 1)))
    scales = {n: P for n, node in g.nodes.items() if isinstance(node, (ir.GradedNeuron, ir.GradedRelu))}
    for n in g.nodes:
        if isinstance(g.nodes[n], ir.BiasSource):
            scales[n] = float(BIAS_SOURCE_PAYLOAD)
            g.nodes[n].payload = float(BIAS_SOURCE_PAYLOAD)
    report["graded_payload"] = {"scale": P, "value_bound": B, "rule": "(4 B + 1) P <= 2**23, P a power of two",
                                "bias_source_payload": BIAS_SOURCE_PAYLOAD}
    return scales


def quantize(g: ir.Graph, vth_mant: int = DEFAULT_VTH_MANT, per_channel_exp: bool = True, weight_bits: int = 16,
             input_scale: int | None = None, memo: WeightMemo | None = None) -> tuple[ir.Graph, dict]:
    """`input_scale` None: the graph's `input_value_grid` (the training data's exact grid, from the checkpoint)
    when it fits the payload, else DEFAULT_INPUT_SCALE (with a warning when a grid was there but too fine).
    `memo`: dense weights already quantised in this conversion (another SSA form of the same model)."""
    leftover = g.of_type(*ir.HIGH_LEVEL_TYPES)
    if leftover:
        raise ir.IRValidationError(f"quantize needs a lowered graph; {leftover[0].name} is {leftover[0].kind}")
    if g.metadata.get("architecture") == ir.ARCHITECTURE_SDT and "stream_relays" not in g.metadata:
        raise NotQuantisableError("the Spike-driven Transformer's binary form is float semantics only (its LIFs read "
                                  "the stream's convolutions directly); lower it with ssa_form='graded', the chip "
                                  "form (docs/sdt_lowering.md)")
    normalized = bool(g.of_type(ir.InputNorm))
    if normalized:  # raw 8-bit pixels go in: the normalisation moves into the first convolution
        g = fold_input_norm.run(g.copy())
    grid, too_fine = g.metadata.get("input_value_grid"), False
    if input_scale is None and normalized:  # normalised 8-bit pixels: the payload is the pixel value
        input_scale = PIXEL_MAX
    if input_scale is None:
        too_fine = isinstance(grid, int) and grid >= 2 ** L.GRADED_PAYLOAD_BITS
        input_scale = grid if isinstance(grid, int) and 1 <= grid < 2 ** L.GRADED_PAYLOAD_BITS \
            else DEFAULT_INPUT_SCALE
    q = Quantizer(g, vth_mant, input_scale, per_channel_exp=per_channel_exp, weight_bits=weight_bits, memo=memo)
    if too_fine:
        q.warn("input", "input encoding rounds", f"the training data's value grid 1/{grid} needs more than the "
               f"{L.GRADED_PAYLOAD_BITS}-bit graded payload; inputs are rounded to multiples of 1/{input_scale}")
    return q.run()
