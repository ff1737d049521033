"""The fixed-point weights of one dense synapse (conv, linear, head) as numbers alone: 8-bit mantissas with an
exponent per output channel, and for 16-bit weights the low part holding the rounding residue (quantize.py
states the rules and applies the result to the graph and its report). WeightMemo lets the quantisations of one
conversion (its SSA forms, which share every layer outside the attention) share the result of a synapse whose
weights are equal.

The arithmetic is elementwise float64 in the order the rules state, done over blocks of output channels so that
the head's temporaries (imagenet-8-768: 150 M weights) stay small; what must be known over the whole array (sign
modes, the largest weight) is settled by a pass before the one that uses it, and the mean error is taken over
the whole error array, so every number is the one the whole-array arithmetic gives."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hardware.loihi import limits as L

LOW_PART_SHIFT = 7  # the low part's exponent is e - 7: a mixed-sign high part (even mantissas) errs by <= 2**e


def fit_exp(max_abs: float, mant_max: int) -> int:
    """Smallest exponent e with max_abs / 2**e <= mant_max."""
    if max_abs == 0:
        return 0
    return max(L.WEIGHT_EXP_MIN, math.ceil(math.log2(max_abs / mant_max)))


def lava_mode(negative: bool, positive: bool) -> str:
    """lava-nc's sign mode of a weight matrix with (any) negative and positive mantissas."""
    return "excitatory" if not negative else "inhibitory" if not positive else "mixed"


def apply_lava_mode(w: np.ndarray, mode: str) -> np.ndarray:
    """lava-nc's Sparse bit-accurate model on 8-bit weights (clip_weights + truncate_weights), elementwise."""
    if mode == "excitatory":
        return np.clip(w, 0, 255)
    if mode == "inhibitory":
        return np.clip(w, -255, 0)
    m = np.clip(w, -256, 255).astype(np.int64, copy=False)  # a new array: shifted in place
    m >>= 1
    m <<= 1
    return m


def lava_weight_rules(w: np.ndarray) -> tuple[np.ndarray, str]:
    """What lava-nc's Sparse bit-accurate model does to 8-bit weights (clip_weights + truncate_weights)."""
    mode = lava_mode(bool(np.any(w < 0)), bool(np.any(w > 0)))
    return apply_lava_mode(w, mode), mode


@dataclass
class LowPart:
    mantissas: np.ndarray   # float64
    weight_exp: object      # int, or an array of one exponent per output channel
    sign_mode: str
    max_abs_mantissa: int


@dataclass
class DenseWeights:
    mantissas: np.ndarray   # float64, the high part
    weight_exp: object      # int, or an array of one exponent per output channel
    record: dict            # quantization.json's record, less the names (low_part, _scale)
    warnings: list          # (what, detail) in the order they arise
    low: LowPart | None


BLOCK = 1 << 20  # weights per block of output channels: the temporaries of one block stay in cache


def _round_mantissas(x: np.ndarray, e_b, mixed: bool) -> np.ndarray:
    """rint(x / 2**e) as int64; mixed signs: 2 rint(x / 2**(e + 1)) (lava drops a mixed mantissa's lowest bit)."""
    t = x / 2.0 ** (e_b + 1) if mixed else x / 2.0 ** e_b
    np.rint(t, out=t)
    if mixed:
        t *= 2
    return t.astype(np.int64)


class _Rows:
    """`weight` x `scale` in blocks of output channels; a per-channel array (exponents, as [C, 1, ...]) read
    for the same rows. Every value is computed elementwise exactly as on the whole array."""

    def __init__(self, weight: np.ndarray, scale: float):
        self.weight, self.scale = weight, scale
        rows = max(1, BLOCK // max(1, weight[0].size)) if len(weight) else 1
        self.blocks = [slice(i, min(i + rows, len(weight))) for i in range(0, len(weight), rows)]

    def w(self, r: slice) -> np.ndarray:
        return self.weight[r] * self.scale

    @staticmethod
    def of(per_channel, r: slice):
        return per_channel[r] if np.ndim(per_channel) else per_channel


def _per_channel(e, ndim: int):
    return np.reshape(e, (-1,) + (1,) * (ndim - 1)) if np.ndim(e) else e


def repeats_along_last_axis(weight: np.ndarray) -> int:
    """n where every row of `weight` along its last axis (length n > 1) holds one value repeated (the head's
    weights, one copy per token: passes/head_readout.py), else 1. Compared block by block (exact equality)."""
    n = weight.shape[-1] if weight.ndim >= 2 else 1
    if n < 2 or weight.size == 0:
        return 1
    for r in _Rows(weight, 1.0).blocks:
        b = weight[r]
        if not np.array_equal(b, np.broadcast_to(b[..., :1], b.shape)):
            return 1
    return n


def quantise_dense(name: str, weight: np.ndarray, scale: float, per_channel_exp: bool,
                   two_parts: bool) -> DenseWeights:
    """Synapse `name`'s `weight` (model units) x `scale` -> mantissas and exponents; `two_parts`: add the low
    part (16-bit weights). In passes over blocks of output channels, each pass settling what the next needs
    over the whole array (the sign mode of the weights, of the mantissas, of the residue, of its mantissas).

    Every step is elementwise or a reduction that only sees which values occur (max, min, any) or how many (a
    count), so a weight array repeated along its last axis is quantised as one copy, the counts taken times the
    copies and the arrays repeated back; the mean error is taken over the repeated error array, as over the
    whole array."""
    copies = repeats_along_last_axis(weight)
    if copies == 1:
        out, err = _quantise(name, weight, scale, per_channel_exp, two_parts, 1)
    else:
        out, err = _quantise(name, np.ascontiguousarray(weight[..., :1]), scale, per_channel_exp, two_parts, copies)
        out.mantissas = np.repeat(out.mantissas, copies, axis=-1)
        if out.low is not None:
            out.low.mantissas = np.repeat(out.low.mantissas, copies, axis=-1)
        err = np.repeat(err, copies, axis=-1)
    out.record.update(max_abs_error=float(err.max()), mean_abs_error=float(err.mean()))
    return out


def _quantise(name: str, weight: np.ndarray, scale: float, per_channel_exp: bool, two_parts: bool,
              copies: int) -> tuple[DenseWeights, np.ndarray]:
    """quantise_dense of `weight` repeated `copies` times along its last axis, less the error statistics; the
    per-weight error |quantised - weight| of `weight`."""
    rows = _Rows(weight, scale)
    negative = positive = False
    ch_max = np.empty(len(weight), np.float64)
    for r in rows.blocks:  # from each channel's largest and smallest weight (|w| is exact; finite weights)
        w = rows.w(r).reshape(r.stop - r.start, -1)
        hi, lo = w.max(1), w.min(1)
        negative, positive = negative or bool(np.any(lo < 0)), positive or bool(np.any(hi > 0))
        ch_max[r] = np.maximum(np.abs(hi), np.abs(lo))
    mixed = negative and positive
    mant_max = L.WEIGHT_MIXED_MAX if mixed else 255
    max_abs = float(ch_max.max())
    e = fit_exp(max_abs, mant_max)
    e_needed = e
    e = min(e, L.WEIGHT_EXP_MAX)  # beyond the largest exponent the largest weights are clipped (below)
    if per_channel_exp:
        # one exponent per output channel (on chip: one synapse group per exponent): channels with small
        # weights keep their resolution instead of sharing the exponent of the largest weight
        e_ch = np.array([min(fit_exp(float(v), mant_max), e) if v > 0 else e for v in ch_max])
        e = e_ch if len(set(e_ch.tolist())) > 1 else int(e_ch[0])
    e_b = _per_channel(e, weight.ndim)
    step = 2.0 ** e_b
    e_top = int(np.max(e))
    top = mant_max * 2.0 ** e_top

    negative = positive = False  # of the mantissas: lava's sign mode (settled once both signs are seen)
    for r in rows.blocks:
        m = _round_mantissas(rows.w(r), rows.of(e_b, r), mixed)
        negative, positive = negative or bool(np.any(m < 0)), positive or bool(np.any(m > 0))
        if negative and positive:
            break
    mode = lava_mode(negative, positive)

    mant = np.empty(weight.shape, np.float64)
    changed = max_abs_m = nonzero = clipped = 0
    any_m = residue_neg = residue_pos = False
    for r in rows.blocks:
        w = rows.w(r)
        m = _round_mantissas(w, rows.of(e_b, r), mixed)
        m_l = apply_lava_mode(m, mode)
        changed += np.count_nonzero(m_l != m)
        max_abs_m = max(max_abs_m, int(m_l.max()), -int(m_l.min()))
        nonzero += np.count_nonzero(w)
        any_m = any_m or bool(np.any(m_l))
        if e_needed > e_top:
            clipped += np.count_nonzero(np.abs(w) > top)
        mant[r] = m_l
        if two_parts and not (residue_neg and residue_pos):  # the residue's signs, until both are seen
            res = _residue(w, mant[r], rows.of(step, r))
            residue_neg, residue_pos = residue_neg or bool(np.any(res < 0)), residue_pos or bool(np.any(res > 0))
    changed, nonzero, clipped, size = changed * copies, nonzero * copies, clipped * copies, weight.size * copies
    rec = {"scale": scale, "weight_exp": np.asarray(e).tolist(), "sign_mode": mode, "max_abs_mantissa": max_abs_m,
           "rounded_by_lava_rules": changed}
    warnings = []
    if e_needed > e_top:
        rec.update(weight_exp_needed=e_needed, clipped_weights=clipped, max_clip_model_units=(max_abs - top) / scale)
        warnings.append(("weights clipped",
                         f"{clipped} of {size} weights exceed the 8-bit range at the largest weight exponent "
                         f"{e_top} (exponent {e_needed} would be needed): |w| up to {max_abs / scale:.6g} clipped "
                         f"to {top / scale:.6g} in model units (after BatchNorm folding), i.e. by up to "
                         f"{(max_abs - top) / scale:.6g} ({100 * (max_abs / top - 1):.1f} %)"))
    elif changed:
        warnings.append(("weight", f"{changed} mantissas changed by lava's clip/truncate rules"))
    if nonzero and not any_m:
        warnings.append(("weights vanish", f"all {nonzero} nonzero weights round to 0 at the smallest weight "
                                           f"exponent {e}"))
    # the low part carries the rounding residue (|r| <= 2**e); what clipping removed stays removed (warned)
    low = _low_part(name, rows, mant, step, e, residue_neg and residue_pos) if two_parts else None
    err = np.empty(weight.shape, np.float64)
    e_lo_b = _per_channel(np.asarray(low.weight_exp), weight.ndim) if low is not None else None
    for r in rows.blocks:
        t = mant[r] * rows.of(step, r)  # the high part's value, plus the low part's, minus the weight
        if low is not None:
            t += low.mantissas[r] * 2.0 ** rows.of(e_lo_b, r)
        t -= rows.w(r)
        np.abs(t, out=err[r])
    return DenseWeights(mant, e, rec, warnings, low), err


def _residue(w: np.ndarray, mant: np.ndarray, step) -> np.ndarray:
    return np.clip(w - mant * step, -step, step)


def _low_part(name: str, rows: _Rows, mant: np.ndarray, step, e, mixed: bool) -> LowPart | None:
    """The residue of the high part at exponent max(e - 7, WEIGHT_EXP_MIN); None where it rounds to zero
    everywhere (weights already exact at 8 bits)."""
    e_lo = np.maximum(np.asarray(e) - LOW_PART_SHIFT, L.WEIGHT_EXP_MIN)
    e_lo_b = _per_channel(e_lo, mant.ndim)

    def mantissas(r):
        return _round_mantissas(_residue(rows.w(r), mant[r], rows.of(step, r)), rows.of(e_lo_b, r), mixed)

    negative = positive = False  # settled once both signs are seen
    for r in rows.blocks:
        m = mantissas(r)
        negative, positive = negative or bool(np.any(m < 0)), positive or bool(np.any(m > 0))
        if negative and positive:
            break
    if not (negative or positive):
        return None
    mode = lava_mode(negative, positive)
    low = np.empty(mant.shape, np.float64)
    max_abs_m = 0
    for r in rows.blocks:
        m = mantissas(r)
        m_l = apply_lava_mode(m, mode)
        if np.any(m_l != m):  # cannot happen with the shift of 7 (|residue| <= 2**e): a bug if it does
            raise AssertionError(f"{name}: low-part mantissas out of the 8-bit range")
        max_abs_m = max(max_abs_m, int(m_l.max()), -int(m_l.min()))
        low[r] = m_l
    exp = e_lo if e_lo.ndim and len(set(e_lo.tolist())) > 1 else int(np.max(e_lo))
    return LowPart(low, exp, mode, max_abs_m)


class WeightMemo:
    """Dense weights already quantised in this conversion, by synapse name and quantisation settings; a hit
    needs weights equal to those quantised (compared in full), so its result is the one quantise_dense gives."""

    def __init__(self):
        self._done: dict = {}
        self.hits = self.misses = 0

    def quantise(self, name: str, weight: np.ndarray, scale: float, per_channel_exp: bool,
                 two_parts: bool) -> DenseWeights:
        key = (name, scale, per_channel_exp, two_parts)
        hit = self._done.get(key)
        if hit is not None and hit[0].shape == weight.shape and hit[0].dtype == weight.dtype and (
                hit[0] is weight or np.array_equal(hit[0], weight)):
            self.hits += 1
            return hit[1]
        self.misses += 1
        out = quantise_dense(name, weight, scale, per_channel_exp, two_parts)
        self._done[key] = (weight, out)
        return out
