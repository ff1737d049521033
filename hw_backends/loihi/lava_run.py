"""Run a Loihi export on lava-nc's bit-accurate CPU models and read it back in logical time.

`run_lava(export_dir_or_built, images, record=[...], timeout_s=...)` builds the process graph of
`lava_graph.build_lava_network` (one LIFReset per LoihiLIF, GradedVec per GradedNeuron, ProdNeuron per
ProductNeuron, one Sparse/DelaySparse per projection, a graded source RingBuffer, an NpySink per recorded
population) and runs it with `Loihi2SimCfg(select_tag='fixed_pt')` (the NpySink's model given in
exception_proc_model_map). The comparison with the fixed-point simulator lives with the analysis
(analysis/lava_crosscheck.py), not here: this side never imports the simulator.

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
The weight matrices are built in the parent (they need torch and the IR kernels) and the child is started
without importing torch (`python -m hw_backends.loihi.lava_run`); after a normal exit the parent does not
wait for init to reap the group's zombies (about 1.7 s).

Measured on the 2-core development machine (shared, load average 11-13) for the cross-check model (8x8 digits,
D = 16, 1 block, T = 2, 3 images, every population recorded): 64 Lava processes for the graded SSA form, 83
(binary kv_first) / 94 (binary qk_first); about 8 s per run_lava for the graded form (0.2 s matrices, 0.4 s
child start, 0.2 s building processes, 3-5 s compiling and forking in the first net.run, 35-50 ms per time step
after that, 0.3 s stop) against about 13 ms (warm, one torch thread) for sim.engine on the same images.
"""
from __future__ import annotations

import math
import os
import pickle
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert import ir
from ground.isolated import IsolatedTimeout, run_to_end

ROOT = Path(__file__).resolve().parents[2]
KILL_GRACE_S = 5.0  # SIGTERM to SIGKILL of a timed-out worker's process group


class LavaRunError(RuntimeError):
    pass


class LavaTimeoutError(LavaRunError):
    def __init__(self, msg: str, pgid: int | None = None):
        super().__init__(msg)
        self.pgid = pgid  # the killed process group (the worker and every Lava process it forked)


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


def raise_nofile_limit(want: int | None = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE (to `want`, or to the hard limit); returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else want
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target == resource.RLIM_INFINITY or target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def graph_and_schedule(src) -> tuple[ir.Graph, dict]:
    if isinstance(src, (str, Path)):
        from .lava_graph import load_export
        return load_export(src)
    if getattr(src, "schedule", None) is not None and getattr(src, "graph", None) is not None:
        return src.graph, src.schedule  # a Loihi TargetBuild, or a hw_backends.conversion.Build
    if isinstance(src, tuple) and len(src) == 2:
        return src
    raise TypeError("run_lava needs an export directory, a Loihi build or a (graph, schedule) pair")


def populations(g: ir.Graph) -> list[str]:
    from .timing import POPULATION_TYPES
    return [n for n in g.topo_order() if isinstance(g.nodes[n], POPULATION_TYPES)]


def _is_readout(node) -> bool:
    return isinstance(node, ir.LoihiLIF) and node.readout


def record_list(g: ir.Graph, record) -> list[str]:
    pops = populations(g)
    if record is None:
        return []
    if record == "all":
        return [p for p in pops if not _is_readout(g.nodes[p])]
    bad = [r for r in record if r not in pops]
    if bad:
        raise ValueError(f"cannot record {bad}: not populations of the network")
    return list(record)


def encode_images(g: ir.Graph, images) -> np.ndarray:
    """Graded input payload round(x * input_payload_scale), the same encoding (and code) as the fixed-point simulator."""
    import torch

    from hardware.loihi.numerics import encode_input
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    counts = bool(g.metadata.get("input_per_step", False))  # event frames
    return encode_input(x, int(g.metadata.get("input_payload_scale", 255)), counts).numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------- in process
def run_network_inprocess(g: ir.Graph, sched: dict, payload: np.ndarray, record: list[str],
                          progress: bool = True, pin_models: bool = False, readout_steps: bool = False,
                          matrices=None) -> dict:
    """Builds and runs the Lava network in this process (no timeout guard: use run_lava).

    `pin_models`: hand the compiler the process models directly (exception_proc_model_map) instead of letting
    it search lava's directories for every process; the models are the ones select_tag='fixed_pt' selects
    (PyLifResetModelBitAcc, PyGradedVecModelFixed, PyProdNeuronModelFixed, PySparseModelBitAcc,
    PyDelaySparseModelBitAcc, PySendModelFixed). `readout_steps`: read the readout's v at every logical step
    (one net.run per step of the readout) instead of only at the last one. `matrices`:
    lava_graph.prepare_matrices()'s result (computed here when None; the isolated worker gets them from the
    parent, so that it needs no torch)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from tqdm import tqdm

    from .lava_graph import build_lava_network, is_graded

    with tempfile.TemporaryDirectory(prefix="lava_sinks_") as sink_dir:
        t0 = time.perf_counter()
        net = build_lava_network(g, sched, payload, record, sink_dir=sink_dir, matrices=matrices)
        raise_nofile_limit(max(4096, 64 * len(net.processes())))
        t1 = time.perf_counter()
        readout = net.readout
        B, T = net.n_samples, net.T
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=net.model_map(pin_all=pin_models))
        vs, done, chunks = [], 0, []
        v_steps = np.zeros((T if readout_steps else 0, B, math.prod(net.shapes[readout])), dtype=np.int64)
        try:
            for n in tqdm(range(B), desc="lava samples", disable=not progress, file=sys.stderr):
                for t in (range(T) if readout_steps else [T - 1]):
                    target = net.lava_step(n, t, readout)
                    ts = time.perf_counter()
                    net.source.run(condition=RunSteps(num_steps=target - done), run_cfg=cfg)
                    chunks.append((time.perf_counter() - ts, target - done))
                    done = target
                    v = np.rint(np.asarray(net.populations[readout].v.get(), dtype=np.float64)).astype(np.int64)
                    if readout_steps:
                        v_steps[t, n] = v
                vs.append(v)
            if net.n_steps > done:
                net.source.run(condition=RunSteps(num_steps=net.n_steps - done), run_cfg=cfg)
                done = net.n_steps
        finally:
            ts = time.perf_counter()
            net.source.stop()
            stop_s = time.perf_counter() - ts
        t2 = time.perf_counter()
        raw = {}
        for name, path in net.sink_paths.items():
            if not os.path.exists(path):
                raise LavaRunError(f"the sink of {name} wrote no data (the run ended before step {net.n_steps})")
            raw[name] = np.load(path)
    spikes = {}
    for name, data in raw.items():
        shape = net.shapes[name]
        graded = is_graded(g.nodes[name])
        out = np.zeros((T, B, math.prod(shape)), dtype=np.int32 if graded else np.uint8)
        for n in range(B):
            for t in range(T):
                out[t, n] = data[:, net.lava_step(n, t, name) - 1]
        spikes[name] = out.reshape(T, B, *shape)
    # the first net.run includes compiling the process graph and forking every process
    steady = chunks[1:] if len(chunks) > 1 else chunks
    return {"spikes": spikes, "readout_v": np.stack(vs), "readout": readout,
            "readout_v_steps": v_steps if readout_steps else None,
            "timing": {"build_s": t1 - t0, "run_s": t2 - t1, "first_run_s": chunks[0][0] if chunks else 0.0,
                       "stop_s": stop_s, "steps": done,
                       "s_per_step_after_first": sum(s for s, _ in steady) / max(1, sum(k for _, k in steady))},
            "network": net.summary()}


# The isolated worker: `python -m hw_backends.loihi.lava_run JOB RESULT`. The packages it passes through are
# light (hw_backends and hw_backends.loihi import nothing; the target registry loads on first use), so the worker
# imports only numpy, scipy, convert.ir, lava and the Lava modules of this package. Measured under load on the
# 2-core development machine: with torch imported, the worker took 16 s longer to start and 19 s longer to exit
# (each forked Lava process inherits torch and finalises it); without it, about 0.4 s to start.
def _worker(job_path: str, result_path: str) -> int:
    try:
        with open(job_path, "rb") as f:
            job = pickle.load(f)
        raise_nofile_limit()
        res = run_network_inprocess(job["graph"], job["schedule"], job["payload"], job["record"],
                                    job["progress"], job["pin_models"], job.get("readout_steps", False),
                                    job.get("matrices"))
        with open(result_path + ".tmp", "wb") as f:
            pickle.dump({"ok": True, **res}, f)
    except BaseException as e:  # report everything to the parent
        with open(result_path + ".tmp", "wb") as f:
            pickle.dump({"ok": False, "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()}, f)
        os.replace(result_path + ".tmp", result_path)
        return 1
    os.replace(result_path + ".tmp", result_path)
    return 0


# ---------------------------------------------------------------------------------------------- public
def run_lava(export_dir_or_built, images, record=None, timeout_s: float = 600.0, progress: bool = True,
             isolate: bool = True, pin_models: bool = False, readout_steps: bool = False) -> LavaResult:
    """Runs `images` ([B, C, H, W] floats in [0, 1]) through the Lava network of an export directory (or of
    a Loihi build, or a (graph, schedule) pair). `record`: population names, "all" or None.
    Returns spikes (payloads for graded populations) in logical time [T, B, *shape] and the readout's v at the
    last logical step (with `readout_steps`, also at every logical step: readout_v_steps [T, B, n_out])."""
    from .lava_graph import check_matrix_sizes, prepare_matrices

    g, sched = graph_and_schedule(export_dir_or_built)
    check_matrix_sizes(g, sched)  # refuse big networks here, before starting Lava
    rec = record_list(g, record)
    payload = encode_images(g, images)
    t0 = time.perf_counter()
    if not isolate:
        res = run_network_inprocess(g, sched, payload, rec, progress, pin_models, readout_steps)
    else:
        matrices = prepare_matrices(g, sched)  # here, with torch; the worker only builds Lava processes
        matrices_s = time.perf_counter() - t0
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
                returncode = run_to_end([sys.executable, "-m", "hw_backends.loihi.lava_run", job, out], timeout_s,
                                        cwd=str(ROOT), env=env, grace_s=KILL_GRACE_S, what="the Lava run")
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


if __name__ == "__main__":  # the isolated worker: python -m hw_backends.loihi.lava_run JOB RESULT
    if "torch" in sys.modules:
        print("lava worker: torch was imported (slow start and exit)", file=sys.stderr)
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
