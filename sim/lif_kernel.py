"""The common Loihi LIF layer (no u memory: du = 4095; not a readout) as one compiled pass over its input: every
neuron's time steps in a loop over memory (numba), instead of five tensor operations per step, each a pass of
its own (docs/architecture.md, "Simulator speed").

The arithmetic is PyLifModelBitAcc's (sim.fixed_point.lif_step) carried out in float64 whatever the storage
dtype, so every value is exact (integers below 2**53, the bias's power-of-two fractions) and the results equal
lif_step's float64 run: u = a << 6 (lava's 24-bit wrap where `wrap`), v = trunc0(v f / 4096) + u + bias
(saturated at +-(2**23 - 1) where `sat`), a spike where v > vth << 6, then v = 0. The caller decides `wrap`
and `sat` from the input's range as lif_layer does: off, no value could wrap or saturate. tests/test_schedule.py
compares both versions with lif_step.

One thread: split over this machine's two cores the kernel ran slower (torch's OpenMP workers keep spinning
on the other core after each tensor operation), and one thread needs no threading layer (numba's OpenMP one is
not fork-safe)."""
from __future__ import annotations

import numpy as np
import torch

from hardware.loihi.numerics import STATE_RANGE

_kernel = None


def _compile():
    import numba

    @numba.njit(nogil=True, cache=True)  # pragma: no cover (compiled)
    def lif_pass(a, v, bias, scale, th, spikes, wrap, sat, fresh):
        """a, spikes: [T, P, L]; v: [P, L] (read unless `fresh`, then written); bias: [L] float64 (each
        element's: its channel's, or its own). Returns the counts (u wrapped, v saturated)."""
        T, P, L = a.shape
        R = float(STATE_RANGE)
        wrapped = 0
        saturated = 0
        for p in range(P):
            for t in range(T):
                first = fresh and t == 0  # a fresh v is 0: its decay adds nothing (as v = u)
                for j in range(L):  # contiguous in a, v and spikes: the loop the compiler vectorises
                    u = a[t, p, j] * 64.0
                    if wrap:
                        if u > R:
                            u = u - 2 * R
                            wrapped += 1
                        elif u <= -R:
                            u = u + 2 * R
                            wrapped += 1
                    x = u + bias[j]
                    if not first:
                        x += np.trunc(v[p, j] * scale)
                    if sat and abs(x) >= R - 1:
                        saturated += 1
                        x = min(max(x, -(R - 1)), R - 1)
                    fired = x > th
                    spikes[t, p, j] = 1.0 if fired else 0.0
                    v[p, j] = 0.0 if fired else x
        return wrapped, saturated

    return lif_pass


def available() -> bool:
    """Whether the compiled kernel can run here (numba importable)."""
    global _kernel
    if _kernel is None:
        try:
            _kernel = _compile()
        except ImportError:
            _kernel = False
    return _kernel is not False


def run(a: torch.Tensor, v: torch.Tensor, bias: np.ndarray, f: int, th: float, spikes: torch.Tensor, wrap: bool,
        sat: bool, fresh: bool) -> tuple[int, int]:
    """One LIF layer over all steps: `a` [T, P, L] (contiguous CPU, float32 or float64), `v` [P, L] the state
    (updated in place; its values unread where `fresh`: a first step from v = 0), `spikes` [T, P, L] written
    (v's dtype), `bias` [L] float64 (each element's bias, its channel's or its own; zeros where none), decay factor
    f = 4096 - dv, threshold `th` = vth << 6. Returns the counts (u wrapped, v saturated)."""
    if not available():
        raise RuntimeError("the compiled LIF kernel needs numba")
    scale = f / 4096.0  # exact, and so is v * scale in float64: |v| < 2**24, f < 2**13
    return _kernel(a.numpy(), v.numpy(), bias, scale, float(th), spikes.numpy(), wrap, sat, fresh)
