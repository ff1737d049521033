"""The engine cross-check: the same images through a target's engine (hw_backends.engines.HardwareEngine, e.g.
the Loihi target's lava-nc runtime) and through the fixed-point simulator (sim.engine), compared exactly: spikes
(graded populations: integer payloads) of every recorded population and the readout's v at every logical step.
`make_sim_runner(engine)` is the `sim_runner` of analysis.parity (`spk-parity --engine NAME`)."""
from __future__ import annotations

import time

import numpy as np
import torch

from convert import ir
from hw_backends.engines import HardwareEngine, RunRecords
from sim.engine import Engine

from .engine_records import compare, simulator_records


def crosscheck(engine: HardwareEngine, images, record="all", sim_graph: ir.Graph | None = None,
               progress: bool = True) -> dict:
    """Runs the same images through `engine` and through the fixed-point simulator (sim.engine, logical time)
    and counts the differences: spikes (graded populations: integer payloads) of every recorded population and
    the readout's v at every logical step. `sim_graph`: the graph for the simulator (default: the one the engine
    runs)."""
    g = engine.graph
    sg = sim_graph if sim_graph is not None else g
    rec = engine.record_list(record)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    t0 = time.perf_counter()
    sim = Engine(sg, numeric=engine.numeric).run(x, record=rec + [engine.readout])
    sim_s = time.perf_counter() - t0
    records = engine.run(x.numpy(), rec, readout_steps=True, progress=progress)
    d = compare(records, simulator_records(sim, sg, engine.readout, rec))  # exact: integer against integer
    graded = [n for n in rec if g.nodes[n].is_graded]
    return {"engine": engine.label, "readout": engine.readout, "readout_mismatches": d.readout_mismatches,
            "readout_max_abs_diff": d.readout_max_abs_diff,
            "readout_step_mismatches": d.readout_step_mismatches,
            "spike_mismatches": d.spike_mismatches, "total_spike_mismatches": int(sum(d.spike_mismatches.values())),
            "firing_rates": {n: float((sim.records[n] != 0).double().mean()) for n in rec},
            "graded_payload_max": {n: float(sim.records[n].abs().max()) for n in graded},
            "spikes_compared": d.spikes_compared, "samples": int(x.shape[0]), "sim_s": sim_s,
            "engine_facts": engine.last_facts, "engine_result": engine.last_result, "records": records,
            "sim_result": sim}


class EngineCrosscheck:
    """An engine against the simulator (fixed point, or the engine's own arithmetic) on the same batches, exactly (integer against integer): every
    population's spikes (graded ones: payloads), the readout's v at every logical step, the predictions.
    Counts are integers summed over batches."""

    def __init__(self, graph: ir.Graph, readout: str, populations, label: str = "engine",
                 numeric: str = "loihi_fixed"):
        """`populations`: the network's populations (HardwareEngine.populations), the readout among them;
        `numeric`: the arithmetic the simulator runs `graph` in (HardwareEngine.numeric)."""
        self.graph, self.readout, self.label, self.numeric = graph, readout, label, numeric
        self.populations = [n for n in populations if n != readout]
        self.samples = 0
        self.spikes_compared = 0
        self.spike_mismatches = {n: 0 for n in self.populations}
        self.readout_step_mismatches = 0
        self.readout_mismatches = 0
        self.prediction_differences = 0
        self.sim_s = 0.0

    def add(self, images: torch.Tensor, records: RunRecords) -> None:
        t0 = time.perf_counter()
        # node by node (no fused SSA): every population of the network, the SSA's inner ones included
        sim = Engine(self.graph, numeric=self.numeric).run(images, record=self.populations + [self.readout])
        self.sim_s += time.perf_counter() - t0
        d = compare(records, simulator_records(sim, self.graph, self.readout, self.populations))
        for n, k in d.spike_mismatches.items():
            self.spike_mismatches[n] += k
        self.spikes_compared += d.spikes_compared
        self.readout_step_mismatches += d.readout_step_mismatches
        self.readout_mismatches += d.readout_mismatches
        self.prediction_differences += d.prediction_differences
        self.samples += int(images.shape[0])

    @property
    def differences(self) -> int:
        return (sum(self.spike_mismatches.values()) + self.readout_step_mismatches + self.readout_mismatches
                + self.prediction_differences)

    def to_dict(self) -> dict:
        simulator = "fixed-point" if self.numeric == "loihi_fixed" else self.numeric
        return {"engine": self.label, "simulator": simulator,
                "against": f"{simulator} simulator (sim.engine, node by node), same images",
                "samples": self.samples, "populations": len(self.populations) + 1,
                "spikes_compared": self.spikes_compared,
                "spike_mismatches": sum(self.spike_mismatches.values()),
                "spike_mismatches_by_population": {n: k for n, k in self.spike_mismatches.items() if k},
                "readout_step_mismatches": self.readout_step_mismatches,
                "readout_mismatches": self.readout_mismatches,
                "prediction_differences": self.prediction_differences,
                "differences": self.differences, "simulator_s": self.sim_s}


def make_sim_runner(engine: HardwareEngine, progress: bool = False, crosscheck: bool = True):
    """The `sim_runner` of analysis.parity.run_parity for a target's engine (`spk-parity --engine NAME`).

    Returns `runner(images [B, ...] float tensor, layer_names) -> (logits_v, records)`: `logits_v` is the
    readout's v at the last logical step, float64 [B, classes], *not* divided by graph.metadata['readout_scale']
    (parity divides), and `records` maps every requested name to a float64 tensor [T, B, *shape] in the IR
    layout (images (C, H, W), tokens (C, N)): spikes of a LIF population, payloads of a graded one, and for the
    readout its v at every logical step (the simulator's record of it). Every requested population is recorded
    in this run; a name that is not a population raises ValueError. One engine run per call. With `crosscheck`,
    every population of the network is recorded and compared exactly with the fixed-point simulator on the same
    images (`runner.crosscheck`, an EngineCrosscheck accumulated over the calls); `runner.engine` is `engine`
    (its incidents, its last facts)."""
    g, readout = engine.graph, engine.readout
    pops = set(engine.populations)
    check = EngineCrosscheck(g, readout, engine.populations, engine.label, engine.numeric) if crosscheck else None

    def runner(images, layer_names):
        names = list(dict.fromkeys(layer_names))
        bad = [n for n in names if n not in pops]
        if bad:
            raise ValueError(f"the {engine.label} engine records populations only; not populations of the network: "
                             f"{bad}")
        rec = check.populations if check else [n for n in names if n != readout]
        x = images.detach().to("cpu", torch.float64) if isinstance(images, torch.Tensor) \
            else torch.as_tensor(np.asarray(images), dtype=torch.float64)
        res = engine.run(x.numpy(), rec, readout_steps=check is not None or readout in names, progress=progress)
        if check is not None:
            check.add(x, res)
        records = {n: torch.from_numpy(res.spikes[n].astype(np.float64)) for n in names if n != readout}
        if readout in names:
            shape = tuple(g.shapes()[readout])
            v = res.readout_v_steps
            records[readout] = torch.from_numpy(v.astype(np.float64).reshape(v.shape[0], v.shape[1], *shape))
        logits_v = torch.from_numpy(res.readout_v.astype(np.float64)).reshape(res.readout_v.shape[0], -1)
        return logits_v, {n: records[n] for n in names}

    runner.crosscheck = check
    runner.engine = engine
    return runner
