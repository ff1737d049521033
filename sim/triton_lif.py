"""The common Loihi LIF layer (du = 4095, not a readout) over all its time steps as one GPU kernel (Triton): the
GPU counterpart of sim.lif_kernel's compiled CPU pass, with the same arguments and the same arithmetic
(PyLifModelBitAcc, sim.fixed_point.lif_step): u = a << 6 (lava's 24-bit wrap where `wrap`),
v = trunc0(v f / 4096) + u + bias (saturated at +-(2**23 - 1) where `sat`), a spike where v > vth << 6, then
v = 0. The kernel computes in int64, as the chip does in integers (the values the engine stores in floating point
are integers; the wrapper refuses any that is not), so the results equal the CPU pass's bit for bit; int64 also
sidesteps Triton 2.3's interpreter, which has no float64.

One program instance takes BLOCK neurons and walks their time steps in registers: the state never goes back to
memory between steps (the CPU engine's point too). Wrap and saturation counts are kept per neuron and summed by
the caller (no atomics: the sum of integers is exact in any order anyway).

Status: not yet called by sim.engine (its CUDA path still runs lif_step's tensor operations); tested against
the CPU pass with Triton's interpreter (TRITON_INTERPRET=1, which runs the kernel on the CPU with numpy:
tests/test_triton_lif.py). Wiring it in and timing it need a machine with a CUDA GPU (issue: the simulator keeps
up with the reference on a GPU)."""

import numpy as np
import torch

from hardware.loihi.numerics import STATE_RANGE

BLOCK = 256
_kernel = None
tl = None  # triton.language, bound on first use


def _compile():
    """Defines the kernel on first use: Triton reads TRITON_INTERPRET when a kernel is defined, and its
    interpreter looks `tl` up among the module's globals."""
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def lif_pass(a_ptr, v_ptr, bias_ptr, s_ptr, wrapped_ptr, saturated_ptr, T, N, L, f, th, R,
                 WRAP: tl.constexpr, SAT: tl.constexpr, FRESH: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < N
        b = tl.load(bias_ptr + offs % L, mask=m, other=0)
        v = tl.load(v_ptr + offs, mask=m, other=0)
        if FRESH:  # a first step from v = 0: its decay adds nothing
            v = v * 0
        nw = v * 0  # int64 counters (Triton 2.3's interpreter has no 32-bit integers)
        ns = v * 0
        for t in range(T):
            u = tl.load(a_ptr + t * N + offs, mask=m, other=0) * 64
            if WRAP:
                hi = u > R
                lo = u + R <= 0
                u = tl.where(hi, u - R - R, tl.where(lo, u + R + R, u))
                nw += (hi | lo).to(tl.int64)
            p = v * f  # exact: |v| < 2**24, f <= 4096
            d = tl.where(p >= 0, p // 4096, -((-p) // 4096))  # trunc toward zero (// of non-negatives only)
            x = u + b + d
            if SAT:
                over = (x >= R - 1) | (x + R - 1 <= 0)  # |x| >= R - 1
                ns += over.to(tl.int64)
                x = tl.where(x > R - 1, x * 0 + (R - 1), tl.where(x < 1 - R, x * 0 + (1 - R), x))
            fired = x > th
            tl.store(s_ptr + t * N + offs, fired.to(tl.float32), mask=m)
            v = tl.where(fired, x * 0, x)
        tl.store(v_ptr + offs, v, mask=m)
        tl.store(wrapped_ptr + offs, nw, mask=m)
        tl.store(saturated_ptr + offs, ns, mask=m)

    return lif_pass, triton.cdiv


def available() -> bool:
    """Whether Triton can be imported here (it comes with torch's CUDA wheels)."""
    global _kernel
    if _kernel is None:
        try:
            _kernel = _compile()
        except ImportError:
            _kernel = False
    return _kernel is not False


def run(a: torch.Tensor, v: torch.Tensor, bias: np.ndarray, f: int, th: float, spikes: torch.Tensor, wrap: bool,
        sat: bool, fresh: bool) -> tuple[int, int]:
    """sim.lif_kernel.run's contract on the tensors' own device: `a` [T, P, L] contiguous (float32 or float64),
    `v` [P, L] the state (updated in place; unread where `fresh`), `spikes` [T, P, L] written (v's dtype), `bias`
    [L] float64, decay factor f = 4096 - dv, threshold `th` = vth << 6. Returns the counts (u wrapped,
    v saturated)."""
    if not available():
        raise RuntimeError("the GPU LIF kernel needs triton")
    kernel, cdiv = _kernel
    T, P, L = a.shape
    n = P * L
    for name, t in (("a", a), ("v", v), ("spikes", spikes)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    a_i = a.to(torch.int64)
    b = np.asarray(bias, dtype=np.float64)
    if not (torch.equal(a_i.to(a.dtype), a) and np.array_equal(np.trunc(b), b)):
        raise ValueError("the GPU LIF kernel takes integer synaptic inputs and biases")
    bias_i = torch.as_tensor(b.astype(np.int64), device=a.device)
    v_i = v.to(torch.int64).reshape(n)
    s_i = torch.empty((T, n), dtype=torch.float32, device=a.device)
    wrapped = torch.zeros(n, dtype=torch.int64, device=a.device)
    saturated = torch.zeros(n, dtype=torch.int64, device=a.device)
    kernel[(cdiv(n, BLOCK),)](a_i, v_i, bias_i, s_i, wrapped, saturated, T, n, L, int(f), int(th), int(STATE_RANGE),
                              WRAP=bool(wrap), SAT=bool(sat), FRESH=bool(fresh), BLOCK=BLOCK)
    spikes.copy_(s_i.view(T, P, L))
    v.copy_(v_i.view(P, L))
    return int(wrapped.sum()), int(saturated.sum())
