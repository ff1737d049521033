"""The Lava cross-check: the same images through lava-nc's bit-accurate runtime (hw_backends.loihi.lava_run, an
isolated process) and through the fixed-point simulator (sim.engine), compared exactly: spikes (graded
populations: integer payloads) of every recorded population and the readout's v at every logical step.
`make_sim_runner(build)` is the `sim_runner` of analysis.parity (`spk-parity --engine lava`)."""
from __future__ import annotations

import time

import numpy as np
import torch

from convert import ir
from hw_backends.loihi.lava_conventions import populations
from hw_backends.loihi.lava_run import LavaResult, LavaTimeoutError, run_lava
from hw_backends.loihi.runnable import open_network
from sim.engine import Engine

from .engine_records import RunRecords, compare


def crosscheck(export_dir_or_compiled, images, record="all", sim_graph: ir.Graph | None = None,
               timeout_s: float = 600.0, progress: bool = True, pin_models: bool = False) -> dict:
    """Runs the same images through Lava and through the fixed-point simulator (sim.engine, logical time) and
    counts the differences: spikes (graded populations: integer payloads) of every recorded population and the
    readout's v at every logical step (readout_steps=True). `export_dir_or_compiled`: what runnable.open_network
    opens. `sim_graph`: the graph for the simulator (default: the one Lava runs); `pin_models`: see run_lava."""
    net = open_network(export_dir_or_compiled)
    g = net.graph
    sg = sim_graph if sim_graph is not None else g
    rec = net.record_list(record)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    t0 = time.perf_counter()
    sim = Engine(sg, numeric="loihi_fixed").run(x, record=rec + [net.readout])
    sim_s = time.perf_counter() - t0
    lava = run_lava(net, images, record=rec, timeout_s=timeout_s, progress=progress, pin_models=pin_models,
                    readout_steps=True)
    sim_rec = RunRecords.of_simulator(sim, sg, net.readout, rec)
    d = compare(RunRecords.of_lava(lava), sim_rec)  # exact: 0/1 spikes of LIF populations, payloads of graded ones
    graded = [n for n in rec if g.nodes[n].is_graded]
    return {"readout": lava.readout, "readout_mismatches": d.readout_mismatches,
            "readout_max_abs_diff": d.readout_max_abs_diff,
            "readout_step_mismatches": d.readout_step_mismatches,
            "spike_mismatches": d.spike_mismatches, "total_spike_mismatches": int(sum(d.spike_mismatches.values())),
            "firing_rates": {n: float((sim.records[n] != 0).double().mean()) for n in rec},
            "graded_payload_max": {n: float(sim.records[n].abs().max()) for n in graded},
            "spikes_compared": d.spikes_compared,
            "samples": int(x.shape[0]), "sim_s": sim_s, "lava": lava.timing, "network": lava.network,
            "lava_result": lava, "sim_result": sim}


class EngineCrosscheck:
    """Lava against the fixed-point simulator on the same batches, exactly (integer against integer): every
    population's spikes (graded ones: payloads), the readout's v at every logical step, the predictions.
    Counts are integers summed over batches."""

    def __init__(self, graph: ir.Graph, readout: str, all_populations=None):
        """`all_populations`: the graph's populations when already found (runnable.RunnableNetwork.populations)."""
        self.graph, self.readout = graph, readout
        pops = populations(graph) if all_populations is None else all_populations
        self.populations = [n for n in pops if n != readout]
        self.samples = 0
        self.spikes_compared = 0
        self.spike_mismatches = {n: 0 for n in self.populations}
        self.readout_step_mismatches = 0
        self.readout_mismatches = 0
        self.prediction_differences = 0
        self.sim_s = 0.0

    def add(self, images: torch.Tensor, lava: LavaResult) -> None:
        t0 = time.perf_counter()
        # node by node (no fused SSA): every population of the export, the SSA's inner ones included
        sim = Engine(self.graph, numeric="loihi_fixed").run(images, record=self.populations + [self.readout])
        self.sim_s += time.perf_counter() - t0
        d = compare(RunRecords.of_lava(lava), RunRecords.of_simulator(sim, self.graph, self.readout, self.populations))
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
        return {"against": "fixed-point simulator (sim.engine, node by node), same images",
                "samples": self.samples, "populations": len(self.populations) + 1,
                "spikes_compared": self.spikes_compared,
                "spike_mismatches": sum(self.spike_mismatches.values()),
                "spike_mismatches_by_population": {n: k for n, k in self.spike_mismatches.items() if k},
                "readout_step_mismatches": self.readout_step_mismatches,
                "readout_mismatches": self.readout_mismatches,
                "prediction_differences": self.prediction_differences,
                "differences": self.differences, "simulator_s": self.sim_s}


def make_sim_runner(compiled, timeout_s: float = 600.0, progress: bool = False, pin_models: bool = True,
                    crosscheck: bool = True, retries: int = 1):
    """The `sim_runner` of analysis.parity.run_parity for the Lava engine (`spk-parity --engine lava`).

    `compiled`: a Loihi build, or anything else runnable.open_network opens (opened, checked and its populations
    found once, here). Returns
    `runner(images [B, C, H, W] float tensor, layer_names) -> (logits_v, records)`: `logits_v` is the readout's
    v at the last logical step, float64 [B, classes], *not* divided by graph.metadata['readout_scale'] (parity
    divides), and `records` maps every requested name to a float64 tensor [T, B, *shape] in the IR layout
    (images (C, H, W), tokens (C, N)): spikes of a LIF population, payloads of a graded one, and for the
    readout its v at every logical step (the simulator's record of it). Every requested population is recorded
    in this run, whatever the export's own record list; a name that is not a population raises ValueError.
    One isolated Lava run (run_lava, killed after `timeout_s`) per call, started afresh up to `retries` times
    when it times out (lava-nc's runtime occasionally hangs, README "Parity"; every timeout is kept in
    `runner.timeouts` and reported, never hidden); `runner.last_result` keeps the last
    LavaResult (timing, process counts). With `crosscheck`, every population of the network is recorded and
    compared exactly with the fixed-point simulator on the same images (`runner.crosscheck`, an
    EngineCrosscheck accumulated over the calls)."""
    net = open_network(compiled)  # refuses big networks before any Lava run
    g, sched, readout = net.graph, net.schedule, net.readout
    pops = set(net.populations)
    check = EngineCrosscheck(g, readout, net.populations) if crosscheck else None

    def runner(images, layer_names):
        names = list(dict.fromkeys(layer_names))
        bad = [n for n in names if n not in pops]
        if bad:
            raise ValueError(f"the Lava engine records populations only; not populations of the network: {bad}")
        rec = check.populations if check else [n for n in names if n != readout]
        x = images.detach().to("cpu", torch.float64) if isinstance(images, torch.Tensor) \
            else torch.as_tensor(np.asarray(images), dtype=torch.float64)
        for attempt in range(retries + 1):
            try:
                res = run_lava(net, x.numpy(), record=rec, timeout_s=timeout_s, progress=progress,
                               pin_models=pin_models, readout_steps=check is not None or readout in names)
                break
            except LavaTimeoutError as e:
                runner.timeouts.append({"samples": int(x.shape[0]), "timeout_s": timeout_s, "error": str(e)})
                if attempt == retries:
                    raise
        runner.last_result = res
        if check is not None:
            check.add(x, res)
        records = {n: torch.from_numpy(res.spikes[n].astype(np.float64)) for n in names if n != readout}
        if readout in names:
            shape = tuple(g.shapes()[readout])
            v = res.readout_v_steps
            records[readout] = torch.from_numpy(v.astype(np.float64).reshape(v.shape[0], v.shape[1], *shape))
        logits_v = torch.from_numpy(res.readout_v.astype(np.float64)).reshape(res.readout_v.shape[0], -1)
        return logits_v, {n: records[n] for n in names}

    runner.last_result = None
    runner.timeouts = []
    runner.crosscheck = check
    runner.graph, runner.schedule, runner.readout = g, sched, readout
    return runner
