"""Run a Loihi export on lava-nc's bit-accurate CPU models and read it back in logical time.

`run_lava(network, images, record=[...], timeout_s=...)` (network: runnable.open_network's RunnableNetwork, or what
it opens) builds the process graph of `lava_graph.build_lava_network` (one LIFReset per LoihiLIF, GradedVec per
GradedNeuron, ProdNeuron per ProductNeuron, one Sparse/DelaySparse per projection, a graded source RingBuffer, an
NpySink per recorded population) and runs it with `Loihi2SimCfg(select_tag='fixed_pt')` (the NpySink's model given
in exception_proc_model_map). The comparison with the fixed-point simulator lives with the analysis
(analysis/engine_crosscheck.py, through lava_engine.LavaEngine), not here: this side never imports the simulator.

How samples are run: all samples in one network and one runtime, back to back, one sample period
P = T + max_depth + 1 each; the LIFReset of every population clears its state at the step its first logical
input of each sample arrives (see lava_graph's docstring), so no state or in-flight spike of one sample reaches
the next one's logical time. The run is split into one `net.run(RunSteps)` per sample, ending at the step in
which the readout population computes the sample's last logical step, so that `readout.v.get()` returns the
readout's v at the last logical step (after that step the readout keeps integrating its bias during the
drain); with `readout_steps=True` the run is split at every logical step of the readout instead, so that its v
is read at each of the T steps (the readout's record in the simulator). Spikes (graded populations: payloads)
of recorded populations go to sinks and are re-aligned by each population's depth: logical step t of sample n
of a population of depth D is lava time_step n P + t + D + 1. GradedVec and ProdNeuron are memoryless and
emit in the step their input arrives, so the same alignment holds for them (lava_graph's docstring).

Isolation: Lava forks one OS process per process of the graph and can hang (e.g. on `Too many open files` while
forking). The run therefore happens in a child Python process in its own session (ground.isolated.run_to_end);
after `timeout_s` the child's process group (the child and every Lava process it forked) is killed and
`LavaTimeoutError` raised.
Inside the child the open-file soft limit is raised to the hard limit before building, and `stop()` is always
called (try/finally). `isolate=False` runs in this process, without the timeout guard (debugging only).
The weight matrices are built in the parent (lava_matrices: they need torch and the IR kernels) and the child
is started without importing torch (`python -m hw_backends.loihi.lava_worker`, the Lava side: this module
imports no lava); after a normal exit the parent does not wait for init to reap the group's zombies (about
1.7 s).

Measured on the 2-core development machine (shared, load average 11-13) for the cross-check model (8x8 digits,
D = 16, 1 block, T = 2, 3 images, every population recorded): 64 Lava processes for the graded SSA form, 83
(binary kv_first) / 94 (binary qk_first); about 8 s per run_lava for the graded form (0.2 s matrices, 0.4 s
child start, 0.2 s building processes, 3-5 s compiling and forking in the first net.run, 35-50 ms per time step
after that, 0.3 s stop) against about 13 ms (warm, one torch thread) for sim.engine on the same images.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convert import ir
from ground.isolated import IsolatedTimeout, run_to_end

from hardware.loihi.numerics import encode_input

from .lava_conventions import LavaRunError, LavaTimeoutError
from .lava_matrices import prepare_matrices
from .runnable import open_network

ROOT = Path(__file__).resolve().parents[2]
KILL_GRACE_S = 5.0  # SIGTERM to SIGKILL of a timed-out worker's process group


@dataclass
class LavaResult:
    spikes: dict            # population -> [T, B, *shape] in logical time: uint8 spikes of a LIF population,
                            # int32 payloads of a graded one (GradedVec, ProdNeuron)
    readout_v: np.ndarray   # [B, n_out] int64: the readout population's v at the last logical step
    logits: np.ndarray      # readout_v / readout_scale
    readout: str
    readout_scale: float
    timing: dict = field(default_factory=dict)   # seconds: build_s, run_s (compile + run + stop), total_s
    network: dict = field(default_factory=dict)  # LavaNetwork.summary(): process counts, steps
    readout_v_steps: np.ndarray | None = None    # [T, B, n_out] int64 with readout_steps=True, else None


def encode_images(g: ir.Graph, images) -> np.ndarray:
    """Graded input payload round(x * input_payload_scale), the same encoding (and code) as the fixed-point simulator."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    counts = bool(g.metadata.get("input_per_step", False))  # event frames
    return encode_input(x, int(g.metadata.get("input_payload_scale", 255)), counts).numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------- public
def run_lava(network, images, record=None, timeout_s: float = 600.0, progress: bool = True,
             isolate: bool = True, pin_models: bool = False, readout_steps: bool = False) -> LavaResult:
    """Runs `images` ([B, C, H, W] floats in [0, 1]) through the Lava network `network`: a RunnableNetwork, or
    anything runnable.open_network opens (an export directory, a Loihi build, a (graph, schedule) pair).
    `record`: population names, "all" or None.
    Returns spikes (payloads for graded populations) in logical time [T, B, *shape] and the readout's v at the
    last logical step (with `readout_steps`, also at every logical step: readout_v_steps [T, B, n_out])."""
    net = open_network(network)  # sizes checked there, before any matrix is built or Lava started
    g, sched = net.graph, net.schedule
    rec = net.record_list(record)
    payload = encode_images(g, images)
    t0 = time.perf_counter()
    matrices = prepare_matrices(g, sched)  # here, with torch; the worker only builds Lava processes
    matrices_s = time.perf_counter() - t0
    if not isolate:  # debugging only: lava in this process, no timeout guard
        from .lava_worker import run_network_inprocess
        res = run_network_inprocess(g, sched, payload, matrices, rec, progress, pin_models, readout_steps)
    else:
        with tempfile.TemporaryDirectory(prefix="lava_run_") as tmp:
            job, out = os.path.join(tmp, "job.pkl"), os.path.join(tmp, "result.pkl")
            with open(job, "wb") as f:
                pickle.dump({"graph": g, "schedule": sched, "payload": payload, "record": rec,
                             "progress": progress, "pin_models": pin_models, "readout_steps": readout_steps,
                             "matrices": matrices}, f)
            env = dict(os.environ)
            env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            try:
                # SIGTERM first, with a grace period: the worker's multiprocessing resource tracker (which
                # ignores SIGTERM) can then still unlink Lava's shared memory once the others are gone
                cmd = [sys.executable, "-m", "hw_backends.loihi.lava_worker", job, out]
                returncode = run_to_end(cmd, timeout_s, cwd=str(ROOT), env=env, grace_s=KILL_GRACE_S,
                                        what="the Lava run")
            except IsolatedTimeout as e:
                raise LavaTimeoutError(str(e), pgid=e.pgid) from None
            if not os.path.exists(out):
                raise LavaRunError(f"the Lava worker exited with status {returncode} without a result")
            with open(out, "rb") as f:
                res = pickle.load(f)
            if not res.pop("ok"):
                raise LavaRunError(f"the Lava run failed: {res['error']}\n{res['traceback']}")
    res["timing"]["matrices_s"] = matrices_s
    scale = float(g.metadata.get("readout_scale", 1.0))
    timing = dict(res["timing"], total_s=time.perf_counter() - t0)
    return LavaResult(spikes=res["spikes"], readout_v=res["readout_v"], logits=res["readout_v"] / scale,
                      readout=res["readout"], readout_scale=scale, timing=timing, network=res["network"],
                      readout_v_steps=res.get("readout_v_steps"))
