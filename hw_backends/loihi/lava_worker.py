"""The isolated Lava worker, the Lava side of lava_run: `python -m hw_backends.loihi.lava_worker JOB RESULT` reads the
pickled job (graph, schedule, payload, the weight matrices built by the parent, the populations to record),
builds the process graph (lava_graph.build_lava_network), runs it (run_network_inprocess) and writes the
result, or the error, as a pickle for the parent (lava_run.run_lava, which starts it isolated and kills its
process group after the timeout). It imports lava and never torch; lava_run's docstring says how samples are run
and read back.
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

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from tqdm import tqdm

from convert import ir

from .lava_conventions import LavaRunError
from .lava_graph import build_lava_network


def raise_nofile_limit(want: int | None = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE (to `want`, or to the hard limit); returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else want
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target == resource.RLIM_INFINITY or target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run_network_inprocess(g: ir.Graph, sched: dict, payload: np.ndarray, matrices: list, record: list[str],
                          progress: bool = True, pin_models: bool = False, readout_steps: bool = False) -> dict:
    """Builds and runs the Lava network in this process (no timeout guard: use run_lava).

    `pin_models`: hand the compiler the process models directly (exception_proc_model_map) instead of letting
    it search lava's directories for every process; the models are the ones select_tag='fixed_pt' selects
    (PyLifResetModelBitAcc, PyGradedVecModelFixed, PyProdNeuronModelFixed, PySparseModelBitAcc,
    PyDelaySparseModelBitAcc, PySendModelFixed). `readout_steps`: read the readout's v at every logical step
    (one net.run per step of the readout) instead of only at the last one. `matrices`:
    lava_matrices.prepare_matrices()'s result, computed by the parent (with torch)."""
    with tempfile.TemporaryDirectory(prefix="lava_sinks_") as sink_dir:
        t0 = time.perf_counter()
        net = build_lava_network(g, sched, payload, matrices, record, sink_dir=sink_dir)
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
        graded = g.nodes[name].is_graded
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


# The isolated worker: `python -m hw_backends.loihi.lava_worker JOB RESULT`. The packages it passes through are
# light (hw_backends and hw_backends.loihi import nothing; the target registry loads on first use), so the worker
# imports only numpy, scipy, convert.ir, lava and the Lava modules of this package. Measured under load on the
# 2-core development machine: with torch imported, the worker took 16 s longer to start and 19 s longer to exit
# (each forked Lava process inherits torch and finalises it); without it, about 0.4 s to start.
def _worker(job_path: str, result_path: str) -> int:
    try:
        with open(job_path, "rb") as f:
            job = pickle.load(f)
        raise_nofile_limit()
        res = run_network_inprocess(job["graph"], job["schedule"], job["payload"], job["matrices"], job["record"],
                                    job["progress"], job["pin_models"], job["readout_steps"])
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


if __name__ == "__main__":  # the isolated worker: python -m hw_backends.loihi.lava_worker JOB RESULT
    if "torch" in sys.modules:
        print("lava worker: torch was imported (slow start and exit)", file=sys.stderr)
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
