"""A real lava-nc process graph for a quantised, timed network (the Loihi export).

One `LIFReset` (fixed-point model `PyLifResetModelBitAcc`) per `LoihiLIF` population, one `GradedVec`
(`PyGradedVecModelFixed`) per `GradedNeuron`, one `ProdNeuron` (`PyProdNeuronModelFixed`) per `ProductNeuron`
(graded SSA form), one `Sparse` per `Projection` (or `DelaySparse` where the projection has a synaptic delay)
connected to the post population's port (`a_in`; `a_in1` / `a_in2` for ProdNeuron, from Projection.port), a
source `RingBuffer` for the graded image payload and a sink (`NpySink`, below) per recorded population.
Every weight matrix is materialised from the IR node (conv, sum pool, axis synapse, ...) by applying the node's
own kernel to unit inputs, chunk by chunk, keeping only the nonzero entries (a CSR matrix: lava's Sparse holds
only the synapses that exist), so building costs n_pre x n_post kernel outputs once but the memory is that of the
synapses; networks whose projections exceed `max_matrix_entries` (n_pre x n_post) are refused before building.

Timing, verified empirically on lava-nc 0.10.0 (tests/test_lava_crosscheck.py::test_lava_timing_facts runs a
bare Lava network; the full cross-check gives thousands of spike mismatches with reset_offset = D instead of
D + 1, or with every DelaySparse delay one larger):

- `time_step` starts at 1. The source RingBuffer sends `data[..., time_step - 1]`; a sink stores what it
  receives at `time_step` in column `time_step - 1` (no delay between a LIF and a sink).
- A `Sparse` sends the previous step's result: a spike sent at step k is integrated by the post population at
  step k + 1. A `DelaySparse` with delay d: at step k + 1 + d (lava/proc/sparse/models.py,
  PyDelaySparseModelBitAcc: `a_buff` column d is shifted out after d more steps).
- So a population of depth D (timing.schedule) sees logical step t of sample n at `time_step = n P + t + D + 1`
  (P = sample period), with input logical step t at `time_step = n P + t + 1`.
- `LIFReset` clears u and v when `time_step % reset_interval == reset_offset`, *before* integrating that
  step's input (lava/proc/lif/models.py, PyLifResetModelBitAcc.run_spk). Hence `reset_offset = (D + 1) % P`:
  the state is cleared in the step the population's first logical input arrives (timing.py counts steps
  from 0, lava from 1).

Recording: lava's own sink RingBuffer stores spikes in a Var, and `Var.get()` moves a Var to the host one
element per channel message (lava/magma/runtime/runtime.py, Runtime.get_var): about 50 us per element, 7 s for
the 21 populations of the tiny cross-check model. `NpySink` below is a one-port sink process of this module
whose model keeps the received vectors and writes them to a .npy file at a given step, so recording costs one
file per recorded population instead.

Graded neurons (verified on lava-nc 0.10.0 by tests/test_lava_crosscheck.py::test_lava_timing_facts):
- `GradedVec` (lava/proc/graded/models.py, AbstractGradedVecModel.run_spk): `v += a_in; s = v * (|v| > vth);
  v[:] = 0`, and `s` is sent in the same step. `ProdNeuron` (lava/proc/prodneuron/models.py):
  `v = (a_in1 * a_in2) >> exp; s = v * (|v| > vth)`, same step, and its `v` Var is never written. So both are
  memoryless neurons with the same one-hop timing as a LIF: input of step k - 1 (sent on by the Sparse) in,
  payload out at step k. The schedule's depth convention (a population emits in the step its input arrives)
  holds for them unchanged, they need no reset between samples (nothing is kept from one step to the next;
  GradedVec's v is cleared at the end of every step) and whatever they pass on during the pipeline fill
  reaches their consumers before the consumers' own reset step, like the fill spikes of a LIF.
- Their ports are int32 with precision 24 (signed 24-bit payloads), so the Sparse/DelaySparse out of a graded
  population is built with `num_message_bits = 24` (GRADED_MESSAGE_BITS); the builder checks that the payload
  bound (numerics.value_bounds) fits in 24 signed bits. With `num_message_bits = 0` a Sparse casts its
  input to bool (a payload of 5 counts as 1: measured), so graded senders need `num_message_bits > 0`.
- The Sparse bit-accurate model's `s_in` is declared `bool, precision=1`, but PyInPortVectorDense.recv sums the
  received arrays onto `np.zeros(shape, bool)`, which gives the sender's dtype (int32): payloads above 1 and
  negative payloads arrive intact and `W @ s` is exact (measured with payloads up to 101600 and -3584).

Graded input: the fixed-point source RingBuffer (`PySendModelFixed`) sends int32 values, and `Sparse` with
`num_message_bits > 0` computes `W @ s` on them (its `s_in` is declared bool but the channel carries the
sender's int32 dtype), so the RingBuffer is a graded spike source as it is.

Arithmetic (lava-nc 0.10.0 source, the semantics sim/fixed_point.py reproduces; docs/loihi_fixed_point.md): Sparse a_out is int32 and
lava's LIF a_in port, though typed int16, sums its inputs onto np.zeros(int16) + int32, i.e. in int32
(magma/core/model/py/ports.py, PyInPortVectorDense.recv): no 16-bit wrap of the synaptic input in simulation.
Weights: clip_weights/truncate_weights (utils/weightutils.py) with the sign mode of each projection's own
matrix; the builder asserts they change nothing. weight_exp: `<<` / arithmetic `>>` of the integer sum.
LIF: lif/models.py AbstractPyLifModelFixed.subthr_dynamics (u wraps at 24 bits, v saturates, bias_mant <<
bias_exp added every step, spike on v > vth << 6, v = 0 on spike).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from convert import ir

from .timing import POPULATION_TYPES, Projection
from hardware.loihi import limits as L

# torch (through convert.kernels) and network_file are imported where they are used: the isolated Lava worker
# (lava_run) gets the matrices ready-made and then needs neither (about 2 s of imports per run on the 2-core
# development machine)

# build-time bound per projection (build_size): a convolution's synapses, or the (post x pre) kernel outputs of
# the unit-vector build of any other synapse (the digits demo model's largest: 1024 x 1024 tokens; cifar10-4-384's
# token projections are 24,576 x 24,576 = 6e8, minutes each)
DEFAULT_MAX_MATRIX_ENTRIES = 2 ** 25
MATRIX_CHUNK_ENTRIES = 4_000_000  # dense kernel outputs held at once while building (32 MB of float64)
INPUT_MESSAGE_BITS = L.GRADED_PAYLOAD_BITS  # the image: graded payload round(x * input_payload_scale)
GRADED_MESSAGE_BITS = 24    # GradedVec / ProdNeuron s_out: int32 with precision 24 (signed 24-bit payloads)
GRADED_TYPES = (ir.GradedNeuron, ir.ProductNeuron)


def is_graded(node) -> bool:
    """Does the population send graded payloads (rather than binary spikes)?"""
    return isinstance(node, GRADED_TYPES)


def message_bits(node, graph: ir.Graph | None = None) -> int:
    """num_message_bits of a Sparse whose pre is `node`: 0 for binary spikes, > 0 for graded payloads (the input:
    graded, except binary event frames, metadata "input_binary")."""
    if isinstance(node, ir.Input):
        return 0 if graph is not None and graph.metadata.get("input_binary") else INPUT_MESSAGE_BITS
    return GRADED_MESSAGE_BITS if is_graded(node) else 0


class LavaGraphError(ValueError):
    pass


def load_export(export_dir) -> tuple[ir.Graph, dict]:
    """(quantised graph, timing schedule) from an export directory (network.h5), checked against its
    manifest.json (network_file.read_export: every listed file present with its sha256); NetworkFileError
    otherwise."""
    from .network_file import read_export
    return read_export(export_dir)


# ------------------------------------------------------------------------------------------------ weights
def synapse_matrix(g: ir.Graph, proj: Projection, shapes: dict | None = None,
                   max_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> sp.csr_matrix:
    """Integer weight mantissas of one projection as a CSR matrix (post_flat, pre_flat), without weight_exp.

    Built by running the synapse node's float kernel (convert.kernels) on the unit vectors of the pre population,
    reshaped through the layout nodes (Flatten = identity on row-major flat indices)."""
    import torch

    from convert import kernels  # the IR kernels (same code the simulators use)

    shapes = shapes or g.shapes()
    node = g.nodes[proj.synapse]
    if not node.is_synapse:
        raise LavaGraphError(f"{proj.synapse}: {node.kind} is not a synapse")
    if getattr(node, "bias", None) is not None:
        raise LavaGraphError(f"{proj.synapse}: synapse still has a bias (quantise the graph first)")
    in_edge_srcs = {e.src for e in g.in_edges(proj.synapse)}
    feed = proj.via[-1] if proj.via else proj.pre
    if feed not in in_edge_srcs:
        raise LavaGraphError(f"{proj.synapse}: projection input {feed} is not an input of the node")
    in_shape = shapes[feed]
    out_shape = shapes[proj.synapse]
    n_pre, n_post = math.prod(shapes[proj.pre]), math.prod(out_shape)
    if math.prod(in_shape) != n_pre:
        raise LavaGraphError(f"{proj.synapse}: layout {proj.via} changes the size of {proj.pre}")
    _check_build_size(proj, node, n_pre, n_post, max_entries)
    if isinstance(node, (ir.Conv2d, ir.Conv1d)):
        return conv_matrix(node, in_shape, out_shape)
    if isinstance(node, ir.SumPool2d):
        return conv_matrix(sum_pool_as_conv(node, in_shape[0]), in_shape, out_shape)
    parts = []
    chunk = max(1, MATRIX_CHUNK_ENTRIES // max(n_post, 1))
    saved = node.weight_exp
    try:
        node.weight_exp = 0  # the mantissas only; weight_exp goes to the Sparse process
        for start in range(0, n_pre, chunk):
            stop = min(n_pre, start + chunk)
            eye = torch.zeros(stop - start, n_pre, dtype=torch.float64)
            eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            y = kernels.step(node, {"in": eye.reshape(stop - start, *in_shape)}, {}, kernels.ParamCache(), 0)
            block = y.reshape(stop - start, n_post).numpy()
            if not np.all(block == np.rint(block)):
                raise LavaGraphError(f"{proj.synapse}: weights are not integer mantissas (quantise the graph first)")
            parts.append(sp.csr_matrix(block.astype(np.int32)))  # (pre chunk, post), zeros dropped
    finally:
        node.weight_exp = saved
    return sp.vstack(parts, format="csr").T.tocsr()  # (post, pre)


def conv_matrix(node, in_shape, out_shape) -> sp.csr_matrix:
    """The CSR matrix (post_flat, pre_flat) of a Conv2d / Conv1d straight from its weight, stride, padding and
    groups (row-major (C, H, W) / (C, L) flat indices): one entry per nonzero tap and output position whose input
    lies inside the image (zero padding contributes nothing). Same result as running the kernel on unit inputs
    (tests/test_lava_matrices.py), in time proportional to the synapses."""
    w = np.asarray(node.weight)
    if not np.all(w == np.rint(w)):
        raise LavaGraphError(f"{node.name}: weights are not integer mantissas (quantise the graph first)")
    if isinstance(node, ir.Conv1d):  # (C, L) as (C, 1, L)
        w = w[:, :, None, :]
        in_shape, out_shape = (in_shape[0], 1, in_shape[1]), (out_shape[0], 1, out_shape[1])
        stride, padding = (1, int(node.stride)), (0, int(node.padding))
    else:
        stride, padding = tuple(node.stride), tuple(node.padding)
    cin, hi, wi = in_shape
    cout, ho, wo = out_shape
    per_group_out = cout // node.groups
    o, ci, ky, kx = np.nonzero(w)
    vals = w[o, ci, ky, kx].astype(np.int32)
    c = ci + (o // per_group_out) * w.shape[1]           # the input channel of each tap
    oy, ox = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
    oy, ox = oy.reshape(-1, 1), ox.reshape(-1, 1)          # output positions x taps
    iy = oy * stride[0] - padding[0] + ky
    ix = ox * stride[1] - padding[1] + kx
    inside = (iy >= 0) & (iy < hi) & (ix >= 0) & (ix < wi)
    rows = (o * (ho * wo) + oy * wo + ox)[inside]
    cols = (c * (hi * wi) + iy * wi + ix)[inside]
    data = np.broadcast_to(vals, inside.shape)[inside]
    m = sp.csr_matrix((data, (rows, cols)), shape=(cout * ho * wo, cin * hi * wi), dtype=np.int32)
    m.sum_duplicates()
    return m


def sum_pool_as_conv(node: ir.SumPool2d, channels: int) -> ir.Conv2d:
    """A sum pool is a depthwise convolution whose taps all carry the pool's weight (zero padding)."""
    w = np.full((channels, 1, *node.kernel), float(node.weight))
    return ir.Conv2d(name=node.name, weight=w, stride=tuple(node.stride), padding=tuple(node.padding),
                     groups=channels)


def build_size(node, n_pre: int, n_post: int) -> tuple[int, str]:
    """What building a projection's matrix costs: the synapses of a convolution or sum pool (built from its
    structure, conv_matrix), else the n_post x n_pre kernel outputs of the unit-vector build; and how to say it."""
    if isinstance(node, (ir.Conv2d, ir.Conv1d)):
        n = int(np.count_nonzero(node.weight)) * (n_post // node.weight.shape[0])
        return n, f"{n:,} synapses"
    if isinstance(node, ir.SumPool2d):
        n = n_post * node.kernel[0] * node.kernel[1]
        return n, f"{n:,} synapses"
    return n_pre * n_post, f"weight matrix {n_post} x {n_pre} = {n_pre * n_post:,} entries"


def _check_build_size(proj: Projection, node, n_pre: int, n_post: int, max_entries: int) -> int:
    n, what = build_size(node, n_pre, n_post)
    if n > max_entries:
        raise LavaGraphError(
            f"{proj.synapse} ({node.kind}, from {node.source or '?'}): {what} exceeds the limit of {max_entries:,} "
            f"for building Lava matrices; the Lava cross-check is only for small networks")
    return n


def check_matrix_sizes(g: ir.Graph, schedule: dict, max_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> int:
    """Raises LavaGraphError naming the first projection whose matrix would exceed `max_entries` to build
    (build_size; before any matrix is built); returns the largest size."""
    shapes = g.shapes()
    largest = 0
    for proj in schedule["projections"]:
        node = g.nodes[proj.synapse]
        n = _check_build_size(proj, node, math.prod(shapes[proj.pre]), math.prod(shapes[proj.synapse]), max_entries)
        largest = max(largest, n)
    return largest


def lava_weight_rules_csr(w: sp.csr_matrix, num_weight_bits: int = 8) -> sp.csr_matrix:
    """What lava's bit-accurate Sparse does to the matrix on its first step (clip_weights, truncate_weights
    with the sign mode determined from the matrix itself; lava/proc/sparse/models.py)."""
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights
    mode = determine_sign_mode(w)
    out = clip_weights(w, mode, num_bits=8)
    return truncate_weights(out, mode, num_weight_bits)


# ------------------------------------------------------------------------------------------------ sink
def _npy_sink_classes():
    """NpySink process and its fixed-point model (created on first use, so importing this module does not
    import lava)."""
    global NpySink, PyNpySinkModel
    if "NpySink" in globals():
        return NpySink, PyNpySinkModel
    from lava.magma.core.decorator import implements, requires, tag
    from lava.magma.core.model.py.model import PyLoihiProcessModel
    from lava.magma.core.model.py.ports import PyInPort
    from lava.magma.core.model.py.type import LavaPyType
    from lava.magma.core.process.ports.ports import InPort
    from lava.magma.core.process.process import AbstractProcess
    from lava.magma.core.resources import CPU
    from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

    class NpySink(AbstractProcess):
        """Receives a vector every step; column time_step - 1 of a buffer (n, n_steps) of `dtype` (int8 for
        binary spikes, int32 for graded payloads), written to `path` (np.save, atomically) at
        time_step == flush_step."""

        def __init__(self, *, shape: tuple, n_steps: int, flush_step: int, path: str, dtype: str = "int8",
                     name=None) -> None:
            super().__init__(shape=shape, n_steps=n_steps, flush_step=flush_step, path=path, dtype=dtype,
                             name=name)
            self.a_in = InPort(shape=shape)

    @implements(proc=NpySink, protocol=LoihiProtocol)
    @requires(CPU)
    @tag("fixed_pt")
    class PyNpySinkModel(PyLoihiProcessModel):
        a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

        def __init__(self, proc_params):
            super().__init__(proc_params)
            self._buf = np.zeros(tuple(proc_params["shape"]) + (int(proc_params["n_steps"]),),
                                 dtype=np.dtype(proc_params.get("dtype", "int8")))

        def run_spk(self) -> None:
            x = self.a_in.recv()
            if self.time_step <= self._buf.shape[-1]:
                self._buf[..., self.time_step - 1] = x
            if self.time_step == int(self.proc_params["flush_step"]):
                path = str(self.proc_params["path"])
                with open(path + ".tmp", "wb") as f:
                    np.save(f, self._buf)
                import os
                os.replace(path + ".tmp", path)

    globals()["NpySink"], globals()["PyNpySinkModel"] = NpySink, PyNpySinkModel
    return NpySink, PyNpySinkModel


# ------------------------------------------------------------------------------------------------ graph
@dataclass
class LavaNetwork:
    graph: ir.Graph
    schedule: dict
    source: object                   # lava.proc.io.source.RingBuffer
    populations: dict                # population name -> LIFReset | GradedVec | ProdNeuron
    connections: list                # (Projection, Sparse | DelaySparse)
    sinks: dict                      # recorded population name -> NpySink
    n_samples: int
    n_steps: int                     # steps run: up to the last logical step of the last sample
    shapes: dict = field(default_factory=dict)
    sink_paths: dict = field(default_factory=dict)  # population -> .npy written at step n_steps

    def model_map(self, pin_all: bool = False) -> dict:
        """exception_proc_model_map for the run config: the sinks' model (keyed by instance, which spares the
        compiler its directory search, and by class, which run_cfg.select consults); with `pin_all`, every
        process pinned to the bit-accurate model that select_tag='fixed_pt' picks anyway."""
        out = {}
        if self.sinks:
            _, model = _npy_sink_classes()
            out[type(next(iter(self.sinks.values())))] = model
            out.update({s: model for s in self.sinks.values()})
        if pin_all:
            from lava.proc.graded.models import PyGradedVecModelFixed
            from lava.proc.graded.process import GradedVec
            from lava.proc.io.source import PySendModelFixed
            from lava.proc.lif.models import PyLifResetModelBitAcc
            from lava.proc.prodneuron.models import PyProdNeuronModelFixed
            from lava.proc.prodneuron.process import ProdNeuron
            from lava.proc.sparse.models import PyDelaySparseModelBitAcc, PySparseModelBitAcc
            from lava.proc.sparse.process import DelaySparse
            out[self.source] = PySendModelFixed
            models = {GradedVec: PyGradedVecModelFixed, ProdNeuron: PyProdNeuronModelFixed}
            out.update({p: models.get(type(p), PyLifResetModelBitAcc) for p in self.populations.values()})
            out.update({c: PyDelaySparseModelBitAcc if isinstance(c, DelaySparse) else PySparseModelBitAcc
                        for _, c in self.connections})
        return out

    @property
    def period(self) -> int:
        return int(self.schedule["sample_period"])

    @property
    def T(self) -> int:
        return int(self.schedule["T"])

    def depth(self, name: str) -> int:
        return int(self.schedule["depth"][name])

    def processes(self) -> list:
        return [self.source, *self.populations.values(), *(c for _, c in self.connections), *self.sinks.values()]

    @property
    def readout(self) -> str:
        return readout_population(self.graph)

    def lava_step(self, sample: int, t: int, name: str) -> int:
        """The lava time_step (1-based) at which population `name` computes logical step t of `sample`."""
        return sample * self.period + t + self.depth(name) + 1

    def summary(self) -> dict:
        delayed = sum(1 for p, _ in self.connections if p.delay)
        kinds = {}
        for p in self.populations.values():
            kinds[type(p).__name__] = kinds.get(type(p).__name__, 0) + 1
        return {"processes": len(self.processes()), "populations": len(self.populations), "population_kinds": kinds,
                "graded_connections": sum(1 for p, _ in self.connections
                                          if message_bits(self.graph.nodes[p.pre], self.graph)),
                "sparse": len(self.connections) - delayed, "delay_sparse": delayed, "sinks": len(self.sinks),
                "sources": 1, "n_steps": self.n_steps, "sample_period": self.period, "T": self.T,
                "max_depth": int(self.schedule["max_depth"]),
                "synapses": int(sum(c.weights.init.nnz for _, c in self.connections))}


def readout_population(graph: ir.Graph) -> str:
    """The readout population (a non-spiking LoihiLIF read by the one Output node)."""
    outs = graph.outputs()
    if len(outs) != 1:
        raise LavaGraphError(f"expected one Output node, found {outs}")
    src = graph.in_edges(outs[0])[0].src
    if not (isinstance(graph.nodes[src], ir.LoihiLIF) and graph.nodes[src].readout):
        raise LavaGraphError(f"output {outs[0]} does not read a readout population ({src})")
    return src


def input_schedule(payload: np.ndarray, T: int, period: int, per_step: bool = False) -> np.ndarray:
    """Source RingBuffer data (n_in, B * period): sample n's payload in columns n P .. n P + T - 1 (the same
    payload at every step, or with `per_step` payload[n, t] at step t: event frames)."""
    B = payload.shape[0]
    steps = payload.reshape(B, T, -1) if per_step else np.broadcast_to(payload.reshape(B, 1, -1), (B, T, payload[0].size))
    data = np.zeros((steps.shape[2], B * period), dtype=np.int32)
    for n in range(B):
        data[:, n * period:n * period + T] = steps[n].T.astype(np.int32)
    return data


def _population_process(name: str, node, shape: tuple, depth: int, period: int):
    """The Lava process of one population: LIFReset (reset at its own depth every sample period), GradedVec or
    ProdNeuron (memoryless: no reset needed)."""
    n = math.prod(shape)
    if isinstance(node, ir.LoihiLIF):
        from lava.proc.lif.process import LIFReset
        if node.bias_mant is None:
            bias = np.zeros(n, dtype=np.int32)
        else:
            b = np.asarray(node.bias_mant)
            if b.size == shape[0]:
                bias = np.repeat(b, n // shape[0])
            elif b.size == n:
                bias = b.reshape(-1)
            else:
                raise LavaGraphError(f"{name}: bias_mant of size {b.size} fits neither channels nor neurons")
            bias = bias.astype(np.int32)
        return LIFReset(shape=(n,), du=int(node.du), dv=int(node.dv), vth=int(node.vth), bias_mant=bias,
                        bias_exp=int(node.bias_exp), reset_interval=period, reset_offset=(depth + 1) % period,
                        name=name)
    if isinstance(node, GRADED_TYPES):
        vth, exp = float(node.vth), int(getattr(node, "exp", 0))
        if vth != int(vth) or vth < 0:
            raise LavaGraphError(f"{name}: {node.kind} threshold {node.vth} is not a non-negative integer")
        if exp < 0:
            raise LavaGraphError(f"{name}: {node.kind} exponent {exp} < 0 (ProdNeuron shifts right by exp)")
        if isinstance(node, ir.GradedNeuron):
            from lava.proc.graded.process import GradedVec
            proc = GradedVec(shape=(n,), vth=int(vth), exp=0)
        else:
            from lava.proc.prodneuron.process import ProdNeuron
            proc = ProdNeuron(shape=(n,), vth=int(vth), exp=exp)
        proc.name = name  # neither constructor takes a name
        return proc
    raise LavaGraphError(f"{name}: no Lava process for {node.kind}")


def _in_port(proc, node, port: str):
    """The InPort of a population process for a projection's `port` ('in'; 'in1' / 'in2' of a product)."""
    if isinstance(node, ir.ProductNeuron):
        if port not in ("in1", "in2"):
            raise LavaGraphError(f"{node.name}: ProductNeuron has ports in1 and in2, not {port!r}")
        return proc.a_in1 if port == "in1" else proc.a_in2
    if port != "in":
        raise LavaGraphError(f"{node.name}: {node.kind} has one input port, not {port!r}")
    return proc.a_in


def check_graded_payloads(graph: ir.Graph) -> dict:
    """Upper bounds of the graded payloads (numerics.value_bounds); raises LavaGraphError where one does
    not fit the 24-bit signed payload of GradedVec / ProdNeuron (the image's payload is bounded by input_payload_scale)."""
    from hardware.loihi.numerics import value_bounds
    bounds = value_bounds(graph, int(graph.metadata.get("input_payload_scale", 255)))
    out = {}
    for name, node in graph.nodes.items():
        if is_graded(node):
            out[name] = bounds[name]
            if bounds[name] > 2 ** (GRADED_MESSAGE_BITS - 1) - 1:
                raise LavaGraphError(f"{name}: graded payload bound {bounds[name]:g} does not fit "
                                     f"{GRADED_MESSAGE_BITS}-bit signed messages")
    return out


def prepare_matrices(graph: ir.Graph, schedule: dict,
                     max_matrix_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> list[sp.csr_matrix]:
    """The weight mantissas of every projection (schedule order), checked against lava's weight rules, after
    checking the graded payload bounds. Needs torch (the IR kernels); build_lava_network takes the result."""
    check_graded_payloads(graph)
    shapes = graph.shapes()
    out = []
    for proj in schedule["projections"]:
        w = synapse_matrix(graph, proj, shapes, max_matrix_entries)
        lw = lava_weight_rules_csr(w)
        if (lw != w).nnz:
            raise LavaGraphError(f"{proj.synapse}: lava's clip/truncate weight rules would change "
                                 f"{(lw != w).nnz} weights of the projection {proj.pre} -> {proj.post}")
        out.append(w)
    return out


def exponent_groups(node, w, post_shape) -> list[tuple[int, "sp.csr_matrix"]]:
    """A synapse with one weight exponent per output channel becomes one Sparse process per distinct exponent
    (lava's Sparse has one weight_exp), each holding the rows of its channels."""
    e = node.weight_exp
    if np.ndim(e) == 0:
        return [(int(e), w)]
    e = np.asarray(e, dtype=np.int64)
    per_row = np.repeat(e, math.prod(post_shape[1:]))
    groups = []
    for val in np.unique(e):
        keep = sp.diags((per_row == val).astype(np.int64))
        part = (keep @ w).tocsr()
        part.eliminate_zeros()
        groups.append((int(val), part))
    return groups


def build_lava_network(graph: ir.Graph, schedule: dict, payload: np.ndarray, record=(), sink_dir=None,
                       max_matrix_entries: int = DEFAULT_MAX_MATRIX_ENTRIES, matrices=None) -> LavaNetwork:
    """The Lava processes for `payload` ([B, *input shape], integer graded values 0..255), samples back to
    back (one sample period each); `record`: population names whose output (spikes, or payloads of graded
    populations) goes to an NpySink that writes `sink_dir/<index>.npy` at the last step. `matrices`:
    prepare_matrices()'s result for this graph and schedule (computed here when None)."""
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.sparse.process import DelaySparse, Sparse

    if graph.metadata.get("numeric") != "loihi_fixed":
        raise LavaGraphError("the graph is not quantised for Loihi (metadata numeric != 'loihi_fixed')")
    shapes = graph.shapes()
    inputs = graph.inputs()
    if len(inputs) != 1:
        raise LavaGraphError(f"expected one Input node, found {inputs}")
    T, P = int(schedule["T"]), int(schedule["sample_period"])
    payload = np.asarray(payload)
    per_step = bool(graph.metadata.get("input_per_step", False))  # event frames: one payload per step
    want = (T, *shapes[inputs[0]]) if per_step else tuple(shapes[inputs[0]])
    if payload.shape[1:] != tuple(want):
        raise LavaGraphError(f"payload shape {payload.shape[1:]} is not the input shape {want}")
    top = (1 if graph.metadata.get("input_binary") else L.GRADED_PAYLOAD_MAX) if per_step \
        else int(graph.metadata.get("input_payload_scale", 255))
    if not np.all(payload == np.rint(payload)) or payload.min() < 0 or payload.max() > top:
        raise LavaGraphError(f"payload must be integers 0..{top} (graded input spikes)")
    if matrices is None:
        matrices = prepare_matrices(graph, schedule, max_matrix_entries)
    if len(matrices) != len(schedule["projections"]):
        raise LavaGraphError(f"{len(matrices)} matrices for {len(schedule['projections'])} projections")
    B = payload.shape[0]
    # the last step of the run: the last logical step of the last sample in the deepest population
    n_steps = (B - 1) * P + T + int(schedule["max_depth"])
    source = Source(data=input_schedule(payload, T, P, per_step))

    pops = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        if isinstance(node, POPULATION_TYPES):
            pops[name] = _population_process(name, node, tuple(shapes[name]), int(schedule["depth"][name]), P)

    conns = []
    for proj, w_all in zip(schedule["projections"], matrices):
        node = graph.nodes[proj.synapse]
        pre_node = graph.nodes[proj.pre]
        for e, w in exponent_groups(node, w_all, shapes[proj.post]):
            kw = dict(weights=w, weight_exp=e, num_weight_bits=8, num_message_bits=message_bits(pre_node, graph),
                      name=f"{proj.synapse}:{proj.pre}->{proj.post}" + (f":exp{e}" if np.ndim(node.weight_exp)
                                                                         else ""))
            if proj.delay > 0:
                delays = w.copy()
                delays.data = np.full_like(delays.data, int(proj.delay), dtype=int)
                delays = delays.astype(int)
                conn = DelaySparse(delays=delays, max_delay=int(proj.delay), **kw)
            elif proj.delay == 0:
                conn = Sparse(**kw)
            else:
                raise LavaGraphError(f"{proj.synapse}: negative delay {proj.delay}")
            pre = source if isinstance(pre_node, ir.Input) else pops[proj.pre]
            pre.s_out.connect(conn.s_in)
            conn.a_out.connect(_in_port(pops[proj.post], graph.nodes[proj.post], getattr(proj, "port", "in")))
            conns.append((proj, conn))

    sinks, paths = {}, {}
    if record and sink_dir is None:
        raise LavaGraphError("recording needs a sink_dir")
    for i, name in enumerate(record):
        if name not in pops:
            raise LavaGraphError(f"cannot record {name!r}: not a population")
        Sink, _ = _npy_sink_classes()
        paths[name] = str(Path(sink_dir) / f"{i:04d}.npy")
        sinks[name] = Sink(shape=(math.prod(shapes[name]),), n_steps=n_steps, flush_step=n_steps,
                           path=paths[name], dtype="int32" if is_graded(graph.nodes[name]) else "int8",
                           name=f"sink:{name}")
        pops[name].s_out.connect(sinks[name].a_in)
    return LavaNetwork(graph, schedule, source, pops, conns, sinks, B, n_steps, shapes, paths)
