"""Run a Loihi export on lava-nc's bit-accurate CPU models and read it back in logical time.

`run_lava(export_dir_or_built, images, record=[...], timeout_s=...)` builds the process graph of
`lava_graph.build_lava_network` (one LIFReset per population, one Sparse/DelaySparse per projection, a graded
source RingBuffer, an NpySink per recorded population) and runs it with `Loihi2SimCfg(select_tag='fixed_pt')`
(the NpySink's model given in exception_proc_model_map). `crosscheck(...)` runs the same images through the
fixed-point simulator as well and counts the differences; `python -m hw_backends.loihi.lava_run EXPORT_DIR`
prints that report for the first scikit-learn digits.

How samples are run: all samples in one network and one runtime, back to back, one sample period
P = T + max_depth + 1 each; the LIFReset of every population clears its state at the step its first logical
input of each sample arrives (see lava_graph's docstring), so no state or in-flight spike of one sample reaches
the next one's logical time. The run is split into one `net.run(RunSteps)` per sample, ending at the step in
which the readout population computes the sample's last logical step, so that `readout.v.get()` returns the
readout's v at the last logical step (after that step the readout keeps integrating its bias during the
drain). Spikes of recorded populations go to sinks and are re-aligned by each population's depth:
logical step t of sample n of a population of depth D is lava time_step n P + t + D + 1.

Isolation: Lava forks one OS process per process of the graph and can hang (e.g. on `Too many open files` while
forking). The run therefore happens in a child Python process in its own session; after `timeout_s` the
child's process group (the child and every Lava process it forked) is killed and `LavaTimeoutError` raised.
Inside the child the open-file soft limit is raised to the hard limit before building, and `stop()` is always
called (try/finally). `isolate=False` runs in this process, without the timeout guard (debugging only).

Measured on the 2-core development machine for the cross-check model (8x8 digits, D = 16, 1 block, T = 2,
3 images, every population recorded): 83 Lava processes (kv_first) / 94 (qk_first); about 15-17 s per run
(~4 s child start and imports, 1 s building matrices, ~6 s compiling and forking in the first net.run,
50-65 ms per time step after that, 0.5-0.9 s stop) against 0.06 s (warm) for sim.engine on the same images.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert import ir

ROOT = Path(__file__).resolve().parents[2]


class LavaRunError(RuntimeError):
    pass


class LavaTimeoutError(LavaRunError):
    def __init__(self, msg: str, pgid: int | None = None):
        super().__init__(msg)
        self.pgid = pgid  # the killed process group (the worker and every Lava process it forked)


@dataclass
class LavaResult:
    spikes: dict            # population -> uint8 [T, B, *shape] in logical time
    readout_v: np.ndarray   # [B, n_out] int64: the readout population's v at the last logical step
    logits: np.ndarray      # readout_v / readout_scale
    readout: str
    readout_scale: float
    timing: dict = field(default_factory=dict)   # seconds: build_s, run_s (compile + run + stop), total_s
    network: dict = field(default_factory=dict)  # LavaNetwork.summary(): process counts, steps


def raise_nofile_limit(want: int | None = None) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE (to `want`, or to the hard limit); returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else want
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target == resource.RLIM_INFINITY or target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _graph_and_schedule(src) -> tuple[ir.Graph, dict]:
    if isinstance(src, (str, Path)):
        from .lava_graph import load_export
        return load_export(src)
    if isinstance(src, dict) and "graph" in src and "schedule" in src:
        return src["graph"], src["schedule"]
    if isinstance(src, tuple) and len(src) == 2:
        return src
    raise TypeError("run_lava needs an export directory, build()'s dict or a (graph, schedule) pair")


def _populations(g: ir.Graph) -> list[str]:
    return [n for n in g.topo_order() if isinstance(g.nodes[n], ir.LoihiLIF)]


def _record_list(g: ir.Graph, record) -> list[str]:
    pops = _populations(g)
    if record is None:
        return []
    if record == "all":
        return [p for p in pops if not g.nodes[p].readout]
    bad = [r for r in record if r not in pops]
    if bad:
        raise ValueError(f"cannot record {bad}: not populations of the network")
    return list(record)


def encode_images(g: ir.Graph, images) -> np.ndarray:
    """Graded 8-bit payload, the same encoding (and code) as the fixed-point simulator."""
    import torch

    from sim.fixed_point import encode_input
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    return encode_input(x, int(g.metadata.get("input_payload_scale", 255))).numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------- in process
def run_network_inprocess(g: ir.Graph, sched: dict, payload: np.ndarray, record: list[str],
                          progress: bool = True, pin_models: bool = False) -> dict:
    """Builds and runs the Lava network in this process (no timeout guard: use run_lava).

    `pin_models`: hand the compiler the process models directly (exception_proc_model_map) instead of letting
    it search lava's directories for every process; the models are the ones select_tag='fixed_pt' selects
    (PyLifResetModelBitAcc, PySparseModelBitAcc, PyDelaySparseModelBitAcc, PySendModelFixed)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from tqdm import tqdm

    from .lava_graph import build_lava_network

    with tempfile.TemporaryDirectory(prefix="lava_sinks_") as sink_dir:
        t0 = time.perf_counter()
        net = build_lava_network(g, sched, payload, record, sink_dir=sink_dir)
        raise_nofile_limit(max(4096, 64 * len(net.processes())))
        t1 = time.perf_counter()
        readout = net.readout
        B, T = net.n_samples, net.T
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=net.model_map(pin_all=pin_models))
        vs, done, chunks = [], 0, []
        try:
            for n in tqdm(range(B), desc="lava samples", disable=not progress, file=sys.stderr):
                target = net.lava_step(n, T - 1, readout)
                ts = time.perf_counter()
                net.source.run(condition=RunSteps(num_steps=target - done), run_cfg=cfg)
                chunks.append((time.perf_counter() - ts, target - done))
                done = target
                v = np.asarray(net.populations[readout].v.get(), dtype=np.float64)
                vs.append(np.rint(v).astype(np.int64))
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
        out = np.zeros((T, B, math.prod(shape)), dtype=np.uint8)
        for n in range(B):
            for t in range(T):
                out[t, n] = data[:, net.lava_step(n, t, name) - 1]
        spikes[name] = out.reshape(T, B, *shape)
    # the first net.run includes compiling the process graph and forking every process
    steady = chunks[1:] if len(chunks) > 1 else chunks
    return {"spikes": spikes, "readout_v": np.stack(vs), "readout": readout,
            "timing": {"build_s": t1 - t0, "run_s": t2 - t1, "first_run_s": chunks[0][0] if chunks else 0.0,
                       "stop_s": stop_s, "steps": done,
                       "s_per_step_after_first": sum(s for s, _ in steady) / max(1, sum(k for _, k in steady))},
            "network": net.summary()}


def _worker(job_path: str, result_path: str) -> int:
    try:
        with open(job_path, "rb") as f:
            job = pickle.load(f)
        raise_nofile_limit()
        res = run_network_inprocess(job["graph"], job["schedule"], job["payload"], job["record"],
                                    job["progress"], job["pin_models"])
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
             isolate: bool = True, pin_models: bool = False) -> LavaResult:
    """Runs `images` ([B, C, H, W] floats in [0, 1]) through the Lava network of an export directory (or of
    `build()`'s dict, or a (graph, schedule) pair). `record`: population names, "all" or None.
    Returns spikes in logical time [T, B, *shape] and the readout's v at the last logical step."""
    from .lava_graph import check_matrix_sizes

    g, sched = _graph_and_schedule(export_dir_or_built)
    check_matrix_sizes(g, sched)  # refuse big networks here, before starting Lava
    rec = _record_list(g, record)
    payload = encode_images(g, images)
    t0 = time.perf_counter()
    if not isolate:
        res = run_network_inprocess(g, sched, payload, rec, progress, pin_models)
    else:
        with tempfile.TemporaryDirectory(prefix="lava_run_") as tmp:
            job, out = os.path.join(tmp, "job.pkl"), os.path.join(tmp, "result.pkl")
            with open(job, "wb") as f:
                pickle.dump({"graph": g, "schedule": sched, "payload": payload, "record": rec,
                             "progress": progress, "pin_models": pin_models}, f)
            env = dict(os.environ)
            env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            proc = subprocess.Popen([sys.executable, "-m", "hw_backends.loihi.lava_run", "--worker", job, out],
                                    cwd=str(ROOT), env=env, start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise LavaTimeoutError(f"the Lava run did not finish within {timeout_s:g} s; its processes "
                                       f"(group {proc.pid}) were killed", pgid=proc.pid) from None
            except BaseException:
                _kill_group(proc)
                raise
            _kill_group(proc)  # any Lava process the child left behind
            if not os.path.exists(out):
                raise LavaRunError(f"the Lava worker exited with status {proc.returncode} without a result")
            with open(out, "rb") as f:
                res = pickle.load(f)
            if not res.pop("ok"):
                raise LavaRunError(f"the Lava run failed: {res['error']}\n{res['traceback']}")
    scale = float(g.metadata.get("readout_scale", 1.0))
    timing = dict(res["timing"], total_s=time.perf_counter() - t0)
    return LavaResult(spikes=res["spikes"], readout_v=res["readout_v"], logits=res["readout_v"] / scale,
                      readout=res["readout"], readout_scale=scale, timing=timing, network=res["network"])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Ends the process group this module started (pgid == the worker's pid): SIGTERM first, so that the
    worker's multiprocessing resource tracker (which ignores SIGTERM) can still unlink Lava's shared memory
    once the others are gone, then SIGKILL for whatever is left after the grace period."""
    pgid = proc.pid
    if proc.poll() is None or _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def crosscheck(export_dir_or_built, images, record="all", sim_graph: ir.Graph | None = None,
               timeout_s: float = 600.0, progress: bool = True) -> dict:
    """Runs the same images through Lava and through the fixed-point simulator (sim.engine, logical time) and
    counts the differences: spikes of every recorded population and the readout's v at the last step.
    `sim_graph`: the graph for the simulator (default: the one Lava runs)."""
    import torch

    from sim.engine import Engine

    g, sched = _graph_and_schedule(export_dir_or_built)
    sg = sim_graph if sim_graph is not None else g
    rec = _record_list(g, record)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    t0 = time.perf_counter()
    sim = Engine(sg).run(x, record=rec)
    sim_s = time.perf_counter() - t0
    lava = run_lava((g, sched), images, record=rec, timeout_s=timeout_s, progress=progress)
    out = sg.outputs()[0]
    sim_v = sim.outputs[out].numpy()
    spikes = {n: int((lava.spikes[n] != sim.records[n].numpy()).sum()) for n in rec}
    return {"readout": lava.readout, "readout_mismatches": int((lava.readout_v != sim_v).sum()),
            "readout_max_abs_diff": float(np.abs(lava.readout_v - sim_v).max()),
            "spike_mismatches": spikes, "total_spike_mismatches": int(sum(spikes.values())),
            "firing_rates": {n: float(sim.records[n].mean()) for n in rec},
            "spikes_compared": int(sum(sim.records[n].numel() for n in rec)),
            "samples": int(x.shape[0]), "sim_s": sim_s, "lava": lava.timing, "network": lava.network,
            "lava_result": lava, "sim_result": sim}


def main(argv=None) -> int:
    """`python -m hw_backends.loihi.lava_run EXPORT_DIR [--images N]`: cross-check an export on the first N
    scikit-learn digits (resized to the network's input) and print the report as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export_dir", nargs="?")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--worker", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return _worker(*a.worker)
    if not a.export_dir:
        ap.error("EXPORT_DIR is required")
    import json

    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from .lava_graph import LavaGraphError, check_matrix_sizes, load_export
    g, sched = load_export(a.export_dir)
    try:
        check_matrix_sizes(g, sched)
    except LavaGraphError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shape = g.shapes()[g.inputs()[0]]
    x = torch.tensor(load_digits().images[:a.images] / 16.0, dtype=torch.float64).unsqueeze(1)
    if tuple(x.shape[-2:]) != tuple(shape[-2:]):
        x = F.interpolate(x, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)
    x = x.expand(-1, shape[0], -1, -1).clamp(0, 1).numpy()
    rep = crosscheck((g, sched), x, timeout_s=a.timeout)
    rep.pop("lava_result"), rep.pop("sim_result")
    print(json.dumps(rep, indent=1, sort_keys=True))
    return 0 if rep["readout_mismatches"] == 0 and rep["total_spike_mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
