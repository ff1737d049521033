"""Exact integer synapse sums on oneDNN's int8 kernels (CPU), for the fixed-point engine.

A fixed-point synapse computes sum_i m_i x_i with 8-bit weight mantissas m (Loihi: even values in [-256, 254]
for mixed signs, [0, 255] for excitatory-only groups; hardware/loihi/limits.py) and, into most synapses,
inputs that are spikes (0/1) or small non-negative graded payloads. oneDNN's u8 x s8 convolution and matmul
(torch.ops.onednn.qconv2d_pointwise / qlinear_pointwise, the kernels behind PyTorch's x86 int8 inference)
multiply such operands exactly and accumulate the products in int32; with unit scales and zero points their
float32 result is the integer sum itself, exact while |sum| < 2**24. On CPUs with AMX or VNNI this is many
times faster than a float32 (let alone float64) convolution.

`Int8Synapse(node)` holds a Conv2d's or a pointwise Conv1d's mantissas as one or two int8 pieces
(m = mult * p, or m = 2 * floor(m / 2) + (m mod 2) for odd values beyond 127) and returns the exact integer sum
(float32) of an input batch, or None where it cannot prove exactness: an input outside [0, 255] (it checks the
input's range, unless the caller states a bound) or a sum that could reach 2**24. The caller then runs its float
kernels as before. `available()` runs the kernels once on extreme operands (the largest products, and enough of
them to overflow 16-bit partial sums) against float64 and enables them only where they are exact."""
from __future__ import annotations

import functools

import numpy as np
import torch

from convert import ir

F32_EXACT = 2 ** 24


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x with its dims in memory order (contiguous where x is dense in some order): fast full reductions."""
    if x.is_contiguous():
        return x
    y = x.permute(sorted(range(x.dim()), key=lambda d: -x.stride(d)))
    return y if y.is_contiguous() else x


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True where the oneDNN int8 kernels exist and are exact on extreme operands (checked once per process)."""
    try:
        ops = torch.ops.onednn
        ops.qconv2d_pointwise, ops.qlinear_pointwise, ops.qconv_prepack, ops.qlinear_prepack  # noqa: B018
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (5, 40, 9, 7), generator=g).float()
        x[0] = 255
        w = torch.randint(-128, 128, (6, 40, 3, 3), generator=g).float()
        w[0] = -128
        w[1] = 127
        e = np.array([-3, 2, 0, -8, 5, -1])  # power-of-two scales, shifts with a floor
        conv = Int8Synapse(ir.Conv2d("probe", weight=w.numpy(), stride=(2, 1), padding=(1, 1), weight_exp=e))
        got = conv(x, hi=255)
        want = torch.floor(torch.nn.functional.conv2d(x.double(), w.double(), stride=(2, 1), padding=(1, 1))
                           * torch.as_tensor(np.exp2(e)).view(1, -1, 1, 1))
        xl = torch.randint(0, 256, (3, 200, 11), generator=g).float()
        xl[0] = 255
        wl = torch.randint(-128, 128, (4, 200, 1), generator=g).float()
        wl[0], wl[1] = -128, 127
        wl[2] = 254  # two pieces (odd values beyond 127)
        wl[2, 0] = 255
        lin = Int8Synapse(ir.Conv1d("probe", weight=wl.numpy(), weight_exp=-2))
        got_l = lin(xl, hi=255)
        want_l = torch.floor(torch.matmul(wl[:, :, 0].double(), xl.double()) / 4)
        return bool(got is not None and got_l is not None and torch.equal(got.double(), want)
                    and torch.equal(got_l.double(), want_l))
    except Exception:  # no oneDNN int8 kernels in this build, or an interface that differs
        return False


def pieces(w: np.ndarray) -> list[tuple[np.ndarray, int]] | None:
    """Integer weights as int8 pieces: w = sum of mult * piece; None where it takes more than two."""
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)) or not np.all(w == np.round(w)):
        return None
    lo, hi = (float(w.min()), float(w.max())) if w.size else (0.0, 0.0)
    if lo >= -128 and hi <= 127:
        return [(w, 1)]
    if lo >= -256 and hi <= 254 and not np.any(w % 2):
        return [(w / 2, 2)]
    if lo >= -256 and hi <= 255:
        q = np.floor(w / 2)
        return [(q, 2), (w - 2 * q, 1)]
    return None


def supports(node: ir.Node) -> bool:
    if getattr(node, "bias", None) is not None or not isinstance(getattr(node, "weight", None), np.ndarray):
        return False
    if isinstance(node, ir.Conv2d):
        return True
    # Conv1d: pointwise (a Linear over tokens), or over the whole token axis (kernel = length; a Linear over
    # channels x tokens, as the readout's token sum): the latter is taken only where the input length fits
    return isinstance(node, ir.Conv1d) and node.groups == 1 and node.stride == 1 and node.padding == 0


class Int8Synapse:
    """One synapse's shifted output floor(sum * 2**weight_exp) on the int8 kernels (see the module docstring).
    The power-of-two factors (the piece's multiplier, 2**weight_exp per output channel) are the kernel's weight
    scales: applied to the exact float32 sum they are exact, and only the floor is left."""

    def __init__(self, node: ir.Node):
        if not supports(node):
            raise ValueError(f"{node.name}: no int8 kernel for {node.kind}")
        ps = pieces(node.weight)
        if ps is None:
            raise ValueError(f"{node.name}: weights do not fit two int8 pieces")
        self.node = node
        self.out = int(node.weight.shape[0])
        self.two = len(ps) == 2
        w = np.concatenate([p for p, _ in ps]).astype(np.int8)
        # the largest |sum| per unit input: every piece's sum stays below 2**24 and so does the combination
        rows = [np.abs(p).reshape(p.shape[0], -1).sum(1) for p, _ in ps]
        self.piece_row_max = max(float(r.max()) for r in rows) if w.size else 0.0
        self.row_max = float(sum(m * r for r, m in zip(rows, [m for _, m in ps])).max()) if w.size else 0.0
        e = np.broadcast_to(np.asarray(node.weight_exp, dtype=np.float64), (self.out,))
        scales = np.concatenate([m * np.exp2(e) for _, m in ps])
        self.floor = bool(np.any(np.exp2(e) < 1))  # a right shift somewhere: floor after the (exact) scaling
        self._scale = torch.as_tensor(scales, dtype=torch.float32)
        self._zp = torch.zeros(w.shape[0], dtype=torch.long)
        wt = torch.from_numpy(w)
        if isinstance(node, ir.Conv2d):
            self.conv = dict(stride=[int(s) for s in node.stride], padding=[int(p) for p in node.padding],
                             dilation=[1, 1], groups=int(node.groups))
            c = self.conv
            self.packed = torch.ops.onednn.qconv_prepack(wt, self._scale, 1.0, 0, c["stride"], c["padding"],
                                                         c["dilation"], c["groups"], None)
        else:
            self.conv = None
            self.kernel = int(w.shape[2])
            self._w = wt
            self._packed = {}  # by the input's layout: channels then tokens ("cl"), or tokens then channels

    def _linear(self, layout: str):
        if layout not in self._packed:
            w = self._w if layout == "cl" else self._w.permute(0, 2, 1)
            self._packed[layout] = torch.ops.onednn.qlinear_prepack(w.reshape(w.shape[0], -1).contiguous(), None)
        return self._packed[layout]

    def exact_for(self, hi: float) -> bool:
        return self.piece_row_max * hi < F32_EXACT and self.row_max * hi < F32_EXACT

    def takes(self, x: torch.Tensor) -> bool:
        """Whether __call__(x) gives the sum (x in [0, 255], the sum below 2**24), checked on x's range."""
        if x.device.type != "cpu" or not x.numel():
            return False
        lo, hi = (float(v) for v in torch.aminmax(_dense(x)))
        return lo >= 0 and hi <= 255 and self.exact_for(hi)

    def __call__(self, x: torch.Tensor, hi: float | None = None) -> torch.Tensor | None:
        """The synapse's output floor(sum * 2**weight_exp), float32 (exact: an integer below 2**24 times a
        power of two) in the float kernel's shape (possibly a strided view), for an integer-valued input batch
        x; None where the int8 kernels cannot give it exactly. `hi`: a proven upper bound of x, x >= 0 (else the
        range is checked here)."""
        if x.device.type != "cpu" or x.is_complex():
            return None
        if x.dtype == torch.uint8:
            hi = 255.0 if hi is None else hi
        elif hi is None:
            if not x.numel():
                return None
            lo, top = torch.aminmax(_dense(x))
            lo, hi = float(lo), float(top)
            if lo < 0 or hi > 255:
                return None
        if hi > 255 or not self.exact_for(hi):
            return None
        xq = x if x.dtype == torch.uint8 else x.to(torch.uint8)
        if self.conv is not None:
            c = self.conv
            y = torch.ops.onednn.qconv2d_pointwise(xq, 1.0, 0, self.packed, self._scale, self._zp, None,
                                                   c["stride"], c["padding"], c["dilation"], c["groups"], 1.0, 0,
                                                   torch.float32, "none", [], "")
        elif self.kernel == 1:  # tokens [M, C, L] -> rows [M * L, C] (a view where x is token-major in memory,
            M, C, L = xq.shape  # as our outputs are)
            rows = xq.transpose(1, 2).reshape(M * L, C)
            y = torch.ops.onednn.qlinear_pointwise(rows, 1.0, 0, self._linear("cl"), self._scale, self._zp, None,
                                                   1.0, 0, torch.float32, "none", [], "")
            y = y.view(M, L, -1).transpose(1, 2)
        else:  # the kernel spans the whole token axis: rows [M, C * L] in x's memory order, one output token
            M, C, L = xq.shape
            if L != self.kernel:
                return None
            if xq.is_contiguous():
                rows, layout = xq.reshape(M, C * L), "cl"
            else:
                rows, layout = xq.transpose(1, 2).reshape(M, L * C), "lc"  # (a copy unless token-major)
            y = torch.ops.onednn.qlinear_pointwise(rows, 1.0, 0, self._linear(layout), self._scale, self._zp,
                                                   None, 1.0, 0, torch.float32, "none", [], "")
            y = y.view(M, -1, 1)
        if self.two:  # m = 2 q + r: both scaled parts are exact and so is their sum (row_max * hi < 2**24)
            y = y[:, :self.out] + y[:, self.out:]
        return y.floor_() if self.floor else y
