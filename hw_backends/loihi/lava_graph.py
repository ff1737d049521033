"""A real lava-nc process graph for a quantised, timed network (the Loihi export).

One `LIFReset` (fixed-point model `PyLifResetModelBitAcc`) per `LoihiLIF` population, one `GradedVec`
(`PyGradedVecModelFixed`) per `GradedNeuron`, one `ProdNeuron` (`PyProdNeuronModelFixed`) per `ProductNeuron`
(graded SSA form), one `Sparse` per `Projection` (or `DelaySparse` where the projection has a synaptic delay)
connected to the post population's port (`a_in`; `a_in1` / `a_in2` for ProdNeuron, from Projection.port), a
source `RingBuffer` for the graded image payload and a sink (`NpySink`, below) per recorded population.
This is the Lava side of the process boundary: it imports lava, and only the isolated worker (lava_worker)
imports it, so the parent never imports lava at the top of a module and the worker never imports torch. The
weight matrices come ready-made from the parent side (lava_matrices.prepare_matrices, with torch); each
population kind has one builder (POPULATION_BUILDERS).

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
  population is built with `num_message_bits = 24` (GRADED_MESSAGE_BITS); lava_matrices.check_graded_payloads
  checks that the payload bound (numerics.value_bounds) fits in 24 signed bits. With `num_message_bits = 0` a
  Sparse casts its input to bool (a payload of 5 counts as 1: measured), so graded senders need `num_message_bits > 0`.
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

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.graded.models import PyGradedVecModelFixed
from lava.proc.graded.process import GradedReluVec, GradedVec
from lava.proc.io.source import PySendModelFixed
from lava.proc.io.source import RingBuffer as Source
from lava.proc.lif.models import PyLifResetModelBitAcc
from lava.proc.lif.process import LIFReset
from lava.proc.prodneuron.models import PyProdNeuronModelFixed
from lava.proc.prodneuron.process import ProdNeuron
from lava.proc.sparse.models import PyDelaySparseModelBitAcc, PySparseModelBitAcc
from lava.proc.sparse.process import DelaySparse, Sparse

from convert import ir

from hardware.loihi import limits as L

from .lava_conventions import LavaGraphError, message_bits, readout_population

# the bit-accurate model Loihi2SimCfg(select_tag="fixed_pt") picks for each process class (pinned with
# LavaNetwork.model_map(pin_all=True))
FIXED_PT_MODELS = {Source: PySendModelFixed, LIFReset: PyLifResetModelBitAcc, GradedVec: PyGradedVecModelFixed,
                   ProdNeuron: PyProdNeuronModelFixed, Sparse: PySparseModelBitAcc,
                   DelaySparse: PyDelaySparseModelBitAcc}


# ------------------------------------------------------------------------------------------------ sink
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
            os.replace(path + ".tmp", path)


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
            out[NpySink] = PyNpySinkModel
            out.update({s: PyNpySinkModel for s in self.sinks.values()})
        if pin_all:
            out[self.source] = FIXED_PT_MODELS[type(self.source)]
            out.update({p: FIXED_PT_MODELS[type(p)] for p in self.populations.values()})
            out.update({c: FIXED_PT_MODELS[type(c)] for _, c in self.connections})
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


def input_schedule(payload: np.ndarray, T: int, period: int, per_step: bool = False) -> np.ndarray:
    """Source RingBuffer data (n_in, B * period): sample n's payload in columns n P .. n P + T - 1 (the same
    payload at every step, or with `per_step` payload[n, t] at step t: event frames)."""
    B = payload.shape[0]
    steps = payload.reshape(B, T, -1) if per_step else np.broadcast_to(payload.reshape(B, 1, -1), (B, T, payload[0].size))
    data = np.zeros((steps.shape[2], B * period), dtype=np.int32)
    for n in range(B):
        data[:, n * period:n * period + T] = steps[n].T.astype(np.int32)
    return data


def _lif_process(name: str, node: ir.LoihiLIF, n: int, shape: tuple, depth: int, period: int) -> LIFReset:
    """LIFReset, reset at its own depth every sample period."""
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


def _graded_threshold(name: str, node) -> int:
    vth = float(node.vth)
    if vth != int(vth) or vth < 0:
        raise LavaGraphError(f"{name}: {node.kind} threshold {node.vth} is not a non-negative integer")
    return int(vth)


def _graded_process(name: str, node: ir.GradedNeuron, n: int, shape: tuple, depth: int, period: int) -> GradedVec:
    """GradedVec: memoryless, no reset needed."""
    proc = GradedVec(shape=(n,), vth=_graded_threshold(name, node), exp=0)
    proc.name = name  # the constructor takes no name
    return proc


def _product_process(name: str, node: ir.ProductNeuron, n: int, shape: tuple, depth: int,
                     period: int) -> ProdNeuron:
    """ProdNeuron: memoryless, no reset needed."""
    vth, exp = _graded_threshold(name, node), int(getattr(node, "exp", 0))
    if exp < 0:
        raise LavaGraphError(f"{name}: {node.kind} exponent {exp} < 0 (ProdNeuron shifts right by exp)")
    proc = ProdNeuron(shape=(n,), vth=vth, exp=exp)
    proc.name = name  # the constructor takes no name
    return proc


# the Lava process of each population kind (the ir kinds with is_population)
def _graded_relu_process(name: str, node: ir.GradedRelu, n: int, shape: tuple, depth: int,
                         period: int) -> GradedReluVec:
    """GradedReluVec: memoryless, no reset needed."""
    proc = GradedReluVec(shape=(n,), vth=_graded_threshold(name, node), exp=0)
    proc.name = name
    return proc


POPULATION_BUILDERS = {ir.LoihiLIF: _lif_process, ir.GradedNeuron: _graded_process,
                       ir.GradedRelu: _graded_relu_process, ir.ProductNeuron: _product_process}


def _population_process(name: str, node, shape: tuple, depth: int, period: int):
    """The Lava process of one population (POPULATION_BUILDERS)."""
    builder = POPULATION_BUILDERS.get(type(node))
    if builder is None:
        raise LavaGraphError(f"{name}: no Lava process for {node.kind}")
    return builder(name, node, math.prod(shape), shape, depth, period)


def _in_port(proc, node, port: str):
    """The InPort of a population process for a projection's `port` ('in'; 'in1' / 'in2' of a product)."""
    if isinstance(node, ir.ProductNeuron):
        if port not in ("in1", "in2"):
            raise LavaGraphError(f"{node.name}: ProductNeuron has ports in1 and in2, not {port!r}")
        return proc.a_in1 if port == "in1" else proc.a_in2
    if port != "in":
        raise LavaGraphError(f"{node.name}: {node.kind} has one input port, not {port!r}")
    return proc.a_in


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


def build_lava_network(graph: ir.Graph, schedule: dict, payload: np.ndarray, matrices: list, record=(),
                       sink_dir=None) -> LavaNetwork:
    """The Lava processes for `payload` ([B, *input shape], integer graded values 0..255), samples back to
    back (one sample period each); `matrices`: lava_matrices.prepare_matrices()'s result for this
    graph and schedule; `record`: population names whose output (spikes, or payloads of graded populations) goes
    to an NpySink that writes `sink_dir/<index>.npy` at the last step."""
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
    if len(matrices) != len(schedule["projections"]):
        raise LavaGraphError(f"{len(matrices)} matrices for {len(schedule['projections'])} projections")
    B = payload.shape[0]
    # the last step of the run: the last logical step of the last sample in the deepest population
    n_steps = (B - 1) * P + T + int(schedule["max_depth"])
    source = Source(data=input_schedule(payload, T, P, per_step))

    pops = {}
    for name in graph.topo_order():
        node = graph.nodes[name]
        if node.is_population:
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
            if isinstance(pre_node, ir.BiasSource) and proj.pre not in pops:  # its payload at every step
                pops[proj.pre] = Source(data=np.full((1, 1), int(pre_node.payload), dtype=np.int32))
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
        paths[name] = str(Path(sink_dir) / f"{i:04d}.npy")
        sinks[name] = NpySink(shape=(math.prod(shapes[name]),), n_steps=n_steps, flush_step=n_steps,
                           path=paths[name], dtype="int32" if graph.nodes[name].is_graded else "int8",
                           name=f"sink:{name}")
        pops[name].s_out.connect(sinks[name].a_in)
    return LavaNetwork(graph, schedule, source, pops, conns, sinks, B, n_steps, shapes, paths)
