"""Loihi fixed-point kernels, bit-exact to lava-nc 0.10.0's bit-accurate process models:
LIF = PyLifModelBitAcc (lava/proc/lif/models.py), synapses = PySparseModelBitAcc / PyDenseModelBitAcc
(weighted sum of the 8-bit mantissas, then << weight_exp or arithmetic >> -weight_exp).

Integer values are carried in float64 tensors (exact below 2**53; much faster than integer convolutions on
CPU); every operation below keeps them integers."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from convert import ir, kernels
from hardware.loihi.numerics import ACTIVATION_MAX, STATE_RANGE, value_bounds
from . import lif_kernel



def shift(node, a: torch.Tensor, pc=None, out_f32: bool = False) -> torch.Tensor:
    """a << weight_exp, or arithmetic a >> -weight_exp (floor): float64, or float32 with `out_f32` (the caller
    proved |result| < 2**24). weight_exp is one integer or one per output channel (axis 1 of a). Both are
    floor(a * 2**weight_exp) for an integer a: the product is exact (a power-of-two scale) and already an
    integer where weight_exp >= 0. `pc` caches the scale tensor."""
    if not out_f32:
        a = a if a.dtype == torch.float64 else a.double()
    e = node.weight_exp
    if np.ndim(e) == 0:
        e = int(e)
        if e == 0:
            return a
        y = a * (2.0 ** e)
        return y if e > 0 else y.floor_()
    def make():
        ev = np.asarray(e, dtype=np.float64)
        t = torch.as_tensor(np.exp2(ev), dtype=a.dtype, device=a.device)
        return t.view((1, -1) + (1,) * (a.dim() - 2)), bool(np.any(ev < 0))

    scale, floor = pc.memo((id(node), "shift_scale", a.dtype, a.device, a.dim()), make) if pc else make()
    y = a * scale
    return y.floor_() if floor else y


def _decay(x: torch.Tensor, factor: int) -> torch.Tensor:
    """trunc0(x * factor / 4096): Loihi's decay, rounding toward zero (exact in float64 below 2**53; a power-of-
    two factor is one exact multiplication)."""
    if factor == 0:
        return torch.zeros_like(x)
    if factor == 4096:
        return x.clone()  # callers add into the result in place
    if factor & (factor - 1) == 0:
        return torch.trunc(x * (factor / 4096))
    return torch.trunc(x * factor / 4096)


def dense(x: torch.Tensor) -> torch.Tensor:
    """x with its dims in memory order: contiguous where x is dense in some order (reductions over all of x
    then run at full speed instead of copying a permuted x first)."""
    if x.is_contiguous():
        return x
    p = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    y = x.permute(p)
    return y if y.is_contiguous() else x


def _absmax(x: torch.Tensor) -> float:
    if not x.numel():
        return 0.0
    lo, hi = torch.aminmax(dense(x))  # one pass, no temporary
    return max(-float(lo), float(hi))


def lif_safety(node: ir.LoihiLIF, a_bound: float) -> dict:
    """What cannot happen to this LIF given |a| <= a_bound (from value_bounds): u never wraps, v never
    saturates. lif_step then skips those checks (each is a pass over the state and a sync)."""
    u_max = 64.0 * a_bound
    if node.du != 4095:  # u keeps a fraction of itself: geometric bound
        u_max = u_max * 4096 / max(node.du + 1, 1)
    b = 0.0 if node.bias_mant is None else float(np.max(np.abs(node.bias_mant))) * 2.0 ** node.bias_exp
    v_max = (u_max + b) * (4096 / node.dv) if node.dv > 0 else float("inf")
    return {"no_wrap": u_max < STATE_RANGE, "no_saturation": v_max < STATE_RANGE - 1}


F32_A_MAX = 2 ** 17  # |a| below this: a << 6 and everything after it stay below 2**24 (exact in float32)
F32_WRAP_A_MAX = 2 ** 18  # |a| below this: a << 6 and its 24-bit wrap are exact in float32 (lif_layer)


def _float32_ok(node: ir.LoihiLIF) -> bool:
    """Can this LIF run in float32? u must not keep memory (du = 4095) and v's decay must be exact in float32:
    a multiplication by a power of two (tau = 2: 2048/4096) or none."""
    f = 4096 - node.dv
    return node.du == 4095 and not node.readout and (f == 0 or f & (f - 1) == 0)


def _wrap_u(uu: torch.Tensor, state: dict) -> torch.Tensor:
    """lava's 24-bit wrap of u: u - 2**24 where u > 2**23, u + 2**24 where u <= -2**23, each counted in
    state["u_wrapped"] (the compiled kernel, sim/lif_kernel.py, does the same in its loop)."""
    high, low = uu > STATE_RANGE, uu <= -STATE_RANGE
    state["u_wrapped"] = state.get("u_wrapped", 0) + int(high.sum()) + int(low.sum())
    return torch.where(high, uu - 2 * STATE_RANGE, torch.where(low, uu + 2 * STATE_RANGE, uu))


def lif_step(node: ir.LoihiLIF, a: torch.Tensor, state: dict, pc, safe: dict | None = None) -> torch.Tensor:
    """One step of PyLifModelBitAcc on integer-valued tensors: float32 where every value provably stays below
    2**24 (an input with |a| < F32_A_MAX, checked each step, into a LIF that _float32_ok; v is below 2**23 by
    saturation, and a sum that rounds above 2**24 saturates either way), float64 otherwise. `safe`: lif_safety's
    proof that some checks cannot trigger."""
    safe = safe or {}
    a_max = _absmax(a)
    if a_max > ACTIVATION_MAX:  # Loihi's synaptic input is 16 bit; lava's models take more, so this is only counted
        state["a_in_over_16bit"] = state.get("a_in_over_16bit", 0) + 1
        state["a_in_max"] = max(state.get("a_in_max", 0), int(a_max))
    if _float32_ok(node) and a_max < F32_A_MAX:
        a = a.float()  # exact: |a| < 2**17
    elif a.dtype != torch.float64:
        a = a.double()
    no_wrap = safe.get("no_wrap") or a.dtype == torch.float32
    u, v = state.get("u"), state.get("v")
    if v is not None and v.dtype != a.dtype:
        v = v.to(a.dtype)
    if u is None or node.du == 4095:  # du = 4095: u keeps nothing of its last value
        uu = a * 64
    else:
        uu = _decay(u.to(a.dtype), 4096 - (node.du + 1)).add_(a * 64)
    if not no_wrap and _absmax(uu) >= STATE_RANGE:
        uu = _wrap_u(uu, state)
    if node.du != 4095:
        state["u"] = uu
    vv = uu if v is None else _decay(v, 4096 - node.dv).add_(uu)
    if node.bias_mant is not None:
        b = pc.get(node, "bias_mant", a) * (2 ** node.bias_exp)
        vv = vv + b.view(_bias_shape(node, a.dim()))
    if not safe.get("no_saturation") and _absmax(vv) >= STATE_RANGE - 1:
        state["saturated"] = state.get("saturated", 0) + int((vv.abs() >= STATE_RANGE - 1).sum())
        vv = vv.clamp(-(STATE_RANGE - 1), STATE_RANGE - 1)
    s = vv > (node.vth * 64)
    if node.readout:
        state["v"] = vv
        state["fired"] = state.get("fired", 0) + int(s.sum())
        return vv
    if vv is uu:  # no decayed v, no bias: do not zero u (state["u"]) in place
        vv = vv.clone()
    state["v"] = vv.masked_fill_(s, 0.0)
    return s.to(a.dtype)


def per_neuron_bias(node: ir.LoihiLIF) -> bool:
    """A bias per neuron [*shape] (a folded input normalisation's border terms), not per channel [C]."""
    return node.bias_mant is not None and np.ndim(node.bias_mant) > 1


def _bias_shape(node: ir.LoihiLIF, dim: int) -> tuple:
    """The bias's view against a [B, *shape] tensor of `dim` dims."""
    return (1, *np.shape(node.bias_mant)) if per_neuron_bias(node) else (1, -1) + (1,) * (dim - 2)


def _pow2(f: int) -> bool:
    return f > 0 and f & (f - 1) == 0


def _decay_in_place(v: torch.Tensor, f: int) -> torch.Tensor:
    """_decay(v, f) for 0 < f <= 4096, in v itself where that is exact (v is the caller's own)."""
    if f == 4096:
        return v
    if _pow2(f):
        return v.div_(4096 // f, rounding_mode="trunc")  # trunc0(v f / 4096), exact
    return _decay(v, f)


def memory_order(x: torch.Tensor) -> list[int] | None:
    """The permutation of x's dims that lists them in memory order (x.permute(p) is contiguous), or None where
    x is not a dense tensor in some order (the batch dim first: steps are slices of it)."""
    p = [0] + sorted(range(1, x.dim()), key=lambda d: -x.stride(d))
    return p if x.permute(p).is_contiguous() else None


def lif_layer(node: ir.LoihiLIF, a: torch.Tensor, state: dict, pc, steps: int, safe: dict | None = None,
              empty=None, compiled: bool = True):
    """lif_step over `steps` time steps of a time-major [steps * B, ...] input: the same spikes, state and
    counters as calling lif_step once per step, with the per-step range checks done once for the layer where
    its largest input proves them unnecessary: |a| <= ACTIVATION_MAX (nothing to count), |a| < 2**17 (u cannot
    wrap, float32 is exact where _float32_ok) and no step can saturate v (|v| <= 2**23 - 1 before the decay, so
    |v'| <= (2**23 - 1) f / 4096 + 64 max|a| + max|bias|). Layers with u memory (du < 4095) and readouts run
    step by step through lif_step. Everything runs in x's memory order (elementwise; the bias, per channel or per
    neuron, follows it). Returns the spikes [steps * B, ...] (float, laid out as a), in `empty(shape, dtype, device)`
    (torch.empty by default). `compiled`: on CPU, the steps run in sim.lif_kernel's one pass where numba is
    present (the same results; off, or elsewhere, as tensor operations step by step)."""
    B = a.shape[0] // steps
    f = 4096 - node.dv
    fast = node.du == 4095 and not node.readout and a.numel() > 0
    if not fast:
        out = [lif_step(node, a[t * B:(t + 1) * B], state, pc, safe) for t in range(steps)]
        dt = functools.reduce(torch.promote_types, [o.dtype for o in out])
        return torch.cat([o.to(dt) for o in out])
    perm = memory_order(a)
    if perm is None:
        a, perm = a.contiguous(), list(range(a.dim()))
    inv = [perm.index(d) for d in range(a.dim())]
    a = a.permute(perm)  # contiguous: steps are its leading blocks
    if compiled and a.device.type == "cpu" and lif_kernel.available():
        return _lif_layer_compiled(node, a, perm, inv, state, pc, steps, safe or {}, empty)
    m_t, b_max, dt = _lif_layer_ranges(node, a, steps, state, pc)
    safe = safe or {}
    th = node.vth * 64
    v_decayed = max(STATE_RANGE - 1, th) * f / 4096  # |v| after the decay, at most
    b = None
    if node.bias_mant is not None:  # per channel or per neuron, in memory order
        b = (pc.get(node, "bias_mant", a.to(dt)) * (2 ** node.bias_exp)).view(_bias_shape(node, a.dim()))
        b = b.permute(perm)
    spikes = (empty or torch.empty)(a.shape, dtype=dt, device=a.device)
    v = state.get("v")
    if v is not None:
        v = v.permute(perm).to(dt, copy=True).contiguous()
    a = a.to(dt)
    for t in range(steps):  # step by step, in place: no temporaries (fresh pages cost more than the arithmetic)
        a_t = a[t * B:(t + 1) * B]
        if not safe.get("no_wrap") and 64 * m_t[t] >= STATE_RANGE:  # lava's 24-bit wrap of u = a << 6, as
            # lif_step (which checks |u| >= 2**23 where it runs in float64, i.e. where |a| >= 2**17): u - 2**24
            # where u > 2**23, u + 2**24 where u <= -2**23, both counted
            uu = _wrap_u(a_t * 64, state)
            v = uu if v is None or f == 0 else _decay_in_place(v, f).add_(uu)
        elif v is None or f == 0:
            v = a_t * 64
        else:
            v = _decay_in_place(v, f).add_(a_t, alpha=64)  # v' + (a << 6): one exact step, no temporary
        if b is not None:
            v.add_(b)
        if not safe.get("no_saturation") and v_decayed + 64 * m_t[t] + b_max >= STATE_RANGE - 1 \
                and _absmax(v) >= STATE_RANGE - 1:
            state["saturated"] = state.get("saturated", 0) + int((v.abs() >= STATE_RANGE - 1).sum())
            v = v.clamp_(-(STATE_RANGE - 1), STATE_RANGE - 1)
        s = spikes[t * B:(t + 1) * B]
        torch.gt(v, th, out=s)
        v.addcmul_(v, s, value=-1)  # v - v s: 0 where it fired (+0, as masked_fill, which is slower), else v
    state["v"] = v.permute(inv)
    return spikes.permute(inv)


def _lif_layer_ranges(node: ir.LoihiLIF, a: torch.Tensor, steps: int, state: dict, pc) \
        -> tuple[list, float, torch.dtype]:
    """lif_layer's bookkeeping from each step's largest |a| (`a` contiguous, time-major): the steps over Loihi's
    16-bit input counted as lif_step counts them; returns (each step's largest |a|, largest |bias|, the dtype
    that holds v and spikes exactly)."""
    r = a.reshape(steps, -1)  # (two passes, no temporary)
    m_t = [max(-lo, hi) for lo, hi in zip(r.amin(1).tolist(), r.amax(1).tolist())]
    for m in m_t:
        if m > ACTIVATION_MAX:
            state["a_in_over_16bit"] = state.get("a_in_over_16bit", 0) + 1
            state["a_in_max"] = max(state.get("a_in_max", 0), int(m))
    a_max = max(m_t)
    b_max = pc.memo((id(node), "lif_bias_max"), lambda: 0.0 if node.bias_mant is None
                    else float(np.max(np.abs(node.bias_mant))) * 2.0 ** node.bias_exp)
    # float32 where lif_step uses it, and also where 64 a may wrap (|a| < 2**18): |64 a| < 2**24 and its wrap
    # are exact, the wrapped |u| <= 2**23, so a sum can round only beyond 2**24, where v saturates either way
    # (lif_layer's saturation check then runs: 64 a_max >= 2**23)
    dt = torch.float32 if _float32_ok(node) and a_max < F32_WRAP_A_MAX else torch.float64
    return m_t, b_max, dt


def _lif_layer_compiled(node: ir.LoihiLIF, a: torch.Tensor, perm: list, inv: list, state: dict, pc, steps: int,
                        safe: dict, empty) -> torch.Tensor:
    """lif_layer on sim.lif_kernel: `a` (CPU) already in memory order (`perm`, undone by `inv`). Each sample's
    elements are (rows, channels, the rest) in memory: the kernel takes [steps, samples * rows, channels * rest]
    with each element's bias."""
    B = a.shape[0] // steps
    f = 4096 - node.dv
    k = inv[1]  # the channel dim's place in memory order
    rows, C, rest = math.prod(a.shape[1:k]), a.shape[k], math.prod(a.shape[k + 1:])
    if per_neuron_bias(node):  # each sample's neurons in one row, each with its own bias
        rows, C, rest = 1, 1, math.prod(a.shape[1:])
    shape = (steps, B * rows, C * rest)
    x = (a if a.dtype in (torch.float32, torch.float64) else a.double()).view(shape)
    m_t, b_max, dt = _lif_layer_ranges(node, x, steps, state, pc)
    a_max = max(m_t)
    th = node.vth * 64
    v_decayed = max(STATE_RANGE - 1, th) * f / 4096  # |v| after the decay, at most
    wrap = not safe.get("no_wrap") and 64 * a_max >= STATE_RANGE  # else no u can wrap
    sat = not safe.get("no_saturation") and v_decayed + 64 * a_max + b_max >= STATE_RANGE - 1  # nor v saturate
    spikes = (empty or torch.empty)(a.shape, dtype=dt, device=a.device)
    v = state.get("v")
    fresh = v is None
    v = torch.empty(a[:B].shape, dtype=dt) if fresh else v.permute(perm).to(dt, copy=True).contiguous()
    bias = pc.memo((id(node), "lif_bias_row", C, rest, tuple(perm)), lambda: _bias_row(node, C, rest, perm))
    wrapped, saturated = lif_kernel.run(x, v.view(shape[1:]), bias, f, th, spikes.view(shape), wrap, sat, fresh)
    if wrap:  # (lava's wrap could apply: counted, as the step-by-step version does)
        state["u_wrapped"] = state.get("u_wrapped", 0) + wrapped
    if saturated:
        state["saturated"] = state.get("saturated", 0) + saturated
    state["v"] = v.permute(inv)
    return spikes.permute(inv)


def _bias_row(node: ir.LoihiLIF, C: int, rest: int, perm: list) -> np.ndarray:
    """The bias of one row of lif_layer's compiled layout: each channel's repeated over `rest` elements, or (per
    neuron) every neuron's in memory order `perm`."""
    if node.bias_mant is None:
        return np.zeros(C * rest)
    b = np.asarray(node.bias_mant, dtype=np.float64) * 2.0 ** node.bias_exp
    if per_neuron_bias(node):
        return np.ascontiguousarray(np.transpose(b, [p - 1 for p in perm[1:]])).reshape(-1)
    return np.repeat(b, rest)


def channel_scale_identity(node) -> bool:
    """A one-weight-per-channel synapse whose weight times 2**weight_exp is 1 (a residual stream's copy): its
    output is its integer input."""
    if not _is_channel_scale(node):
        return False
    e = np.broadcast_to(np.asarray(node.weight_exp, float), (len(node.weight),))
    return bool(np.all(node.weight.reshape(-1) * np.exp2(e) == 1))


def _is_channel_scale(node) -> bool:
    return (isinstance(node, ir.Conv1d) and node.weight.shape[1:] == (1, 1) and node.groups == node.weight.shape[0]
            and node.stride == 1 and node.padding == 0 and node.bias is None)


def _is_pointwise_linear(node) -> bool:
    return (isinstance(node, ir.Conv1d) and node.weight.shape[2] == 1 and node.groups == 1 and node.stride == 1
            and node.padding == 0 and node.bias is None)


def int8_synapse(node, q, x: torch.Tensor, pc, out_f32: bool, hi: float | None = None):
    """The synapse's shifted output from its exact int8 sum (sim.int8.Int8Synapse `q`), or None where the int8
    kernels cannot give it (the caller then runs the float kernels). `hi`: see Int8Synapse.__call__."""
    a = q(x, hi)
    return a if a is None or out_f32 else a.double()


def step(node: ir.Node, inp: dict, state: dict, pc, t: int, input_scale: int, f32: bool = False,
         safe: dict | None = None, out_f32: bool = False, q=None, hi: float | None = None):
    """`f32`: this synapse's integer sums provably stay below 2**24 (see `precision_plan`), so they
    are computed in float32, exactly, and much faster than float64 on CPU; `out_f32`: so does its shifted
    output, which then stays float32. `safe`: see lif_safety. `q`: the synapse's int8 kernel (sim.int8), tried
    first; `hi`: a proven upper bound of its non-negative input, if any."""
    x = inp.get("in")
    if isinstance(node, ir.LoihiLIF):
        return lif_step(node, x, state, pc, safe)
    if node.is_synapse:
        if q is not None:
            a = int8_synapse(node, q, x, pc, out_f32, hi)
            if a is not None:
                return a
        if _is_channel_scale(node):  # one weight per channel: elementwise (a residual stream's identity)
            dt = torch.float32 if out_f32 else torch.float64
            if channel_scale_identity(node):  # floor(x w 2**e) = x for integers x
                return x.to(dt)
            xin = x.float() if f32 else x.double()
            return shift(node, xin * pc.get(node, "weight", xin).view(1, -1, 1), pc, out_f32)
        saved = node.weight_exp
        xin = x.float() if f32 else x
        if _is_pointwise_linear(node):  # a Linear over tokens: one matmul (about 2x faster than conv1d on CPU)
            w = pc.get(node, "weight", xin)
            y = torch.matmul(w.view(w.shape[0], w.shape[1]), xin)
            return shift(node, y, pc, out_f32)
        try:
            node.weight_exp = 0  # the float kernel computes the integer weighted sum; the shift is Loihi's
            y = kernels.step(node, {"in": xin}, state, pc, t)
        finally:
            node.weight_exp = saved
        return shift(node, y, pc, out_f32)
    if isinstance(node, ir.GradedNeuron) and node.vth < 1:  # integers: x where |x| > vth is x itself
        return x
    if isinstance(node, (ir.LIF, ir.Threshold, ir.Integrator)):
        raise TypeError(f"{node.name}: {node.kind} in a fixed-point graph; quantize the graph first")
    return kernels.step(node, inp, state, pc, t)


@dataclass(frozen=True)
class PrecisionPlan:
    """What value_bounds proves for one graph: synapses whose integer sum (before the weight exponent) stays
    below 2**24 (`f32_sums`, computed in float32), those whose shifted output does too (`f32_outputs`, kept
    float32), and per LIF which range checks cannot trigger (`lif_safe`, see lif_safety)."""
    f32_sums: frozenset
    f32_outputs: frozenset
    lif_safe: dict
    bounds: dict  # value_bounds: node -> upper bound of |output|


def precision_plan(g: ir.Graph, input_scale: int) -> PrecisionPlan:
    b = value_bounds(g, input_scale)
    sums, outputs = set(), set()
    for n, node in g.nodes.items():
        if node.is_synapse and b[n] / 2.0 ** max(float(np.max(node.weight_exp)), 0.0) < 2 ** 24:
            sums.add(n)
            if b[n] < 2 ** 24:
                outputs.add(n)
    safe = {n: lif_safety(node, sum(b[e.src] for e in g.in_edges(n)))
            for n, node in g.nodes.items() if isinstance(node, ir.LoihiLIF)}
    return PrecisionPlan(frozenset(sums), frozenset(outputs), safe, b)
