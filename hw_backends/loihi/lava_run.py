"""Run a Loihi export on lava-nc's bit-accurate CPU models and read it back in logical time.

`run_lava(export_dir_or_built, images, record=[...], timeout_s=...)` builds the process graph of
`lava_graph.build_lava_network` (one LIFReset per LoihiLIF, GradedVec per GradedNeuron, ProdNeuron per
ProductNeuron, one Sparse/DelaySparse per projection, a graded source RingBuffer, an NpySink per recorded
population) and runs it with `Loihi2SimCfg(select_tag='fixed_pt')` (the NpySink's model given in
exception_proc_model_map). `crosscheck(...)` runs the same images through the
fixed-point simulator as well and counts the differences (spikes, and the exact payloads of graded
populations); `make_sim_runner(built)` is the `sim_runner` of sim.parity (`spk-parity --engine lava`);
`python -m hw_backends.loihi.lava_run EXPORT_DIR` prints the cross-check report for the first scikit-learn
digits.

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
forking). The run therefore happens in a child Python process in its own session; after `timeout_s` the
child's process group (the child and every Lava process it forked) is killed and `LavaTimeoutError` raised.
Inside the child the open-file soft limit is raised to the hard limit before building, and `stop()` is always
called (try/finally). `isolate=False` runs in this process, without the timeout guard (debugging only).
The weight matrices are built in the parent (they need torch and the IR kernels) and the child is started
without importing torch or the back-end registry (_WORKER_BOOTSTRAP); after a normal exit the parent does not
wait for init to reap the group's zombies (about 1.7 s).

Measured on the 2-core development machine (shared, load average 11-13) for the cross-check model (8x8 digits,
D = 16, 1 block, T = 2, 3 images, every population recorded): 64 Lava processes for the graded SSA form, 83
(binary kv_first) / 94 (binary qk_first); about 8 s per run_lava for the graded form (0.2 s matrices, 0.4 s
child start, 0.2 s building processes, 3-5 s compiling and forking in the first net.run, 35-50 ms per time step
after that, 0.3 s stop) against about 13 ms (warm, one torch thread) for sim.engine on the same images.
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
    from .timing import POPULATION_TYPES
    return [n for n in g.topo_order() if isinstance(g.nodes[n], POPULATION_TYPES)]


def _is_readout(node) -> bool:
    return isinstance(node, ir.LoihiLIF) and node.readout


def _record_list(g: ir.Graph, record) -> list[str]:
    pops = _populations(g)
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

    from sim.fixed_point import encode_input
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    return encode_input(x, int(g.metadata.get("input_payload_scale", 255))).numpy().astype(np.int64)


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


# The isolated worker: `python -c _WORKER_BOOTSTRAP ROOT JOB RESULT`. The packages `hw_backends` and
# `hw_backends.loihi` are entered through bare module objects, so that their __init__ (the back-end registry,
# which imports torch, nir, spikformer, ...) does not run: the worker imports only numpy, scipy, convert.ir,
# lava and the Lava modules of this package. Measured under load on the 2-core development machine: with torch
# imported, the worker took 16 s longer to start and 19 s longer to exit (each forked Lava process inherits
# torch and finalises it); without it, about 0.4 s to start and nothing noticeable to exit.
_WORKER_BOOTSTRAP = (
    "import os, sys, types\n"
    "root = sys.argv[1]\n"
    "sys.path.insert(0, root)\n"
    "for name in ('hw_backends', 'hw_backends.loihi'):\n"
    "    pkg = types.ModuleType(name)\n"
    "    pkg.__path__ = [os.path.join(root, *name.split('.'))]\n"
    "    sys.modules.setdefault(name, pkg)\n"
    "from hw_backends.loihi.lava_run import _worker\n"
    "if 'torch' in sys.modules:\n"
    "    print('lava worker: torch was imported (slow start and exit)', file=sys.stderr)\n"
    "sys.exit(_worker(sys.argv[2], sys.argv[3]))\n")


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
    `build()`'s dict, or a (graph, schedule) pair). `record`: population names, "all" or None.
    Returns spikes (payloads for graded populations) in logical time [T, B, *shape] and the readout's v at the
    last logical step (with `readout_steps`, also at every logical step: readout_v_steps [T, B, n_out])."""
    from .lava_graph import check_matrix_sizes, prepare_matrices

    g, sched = _graph_and_schedule(export_dir_or_built)
    check_matrix_sizes(g, sched)  # refuse big networks here, before starting Lava
    rec = _record_list(g, record)
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
            proc = subprocess.Popen([sys.executable, "-c", _WORKER_BOOTSTRAP, str(ROOT), job, out],
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
            _kill_group(proc, ignore_zombies=True)  # any Lava process the child left behind
            if not os.path.exists(out):
                raise LavaRunError(f"the Lava worker exited with status {proc.returncode} without a result")
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


def _live_members(pgid: int) -> bool | None:
    """Whether a process of group `pgid` other than a zombie exists (/proc, Linux); None without /proc."""
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _group_alive(pgid: int, ignore_zombies: bool = False) -> bool:
    """Does process group `pgid` still exist? With `ignore_zombies`, a group left with zombies only (Lava
    processes whose parent, the worker, has exited, waiting for init to reap them: about 1.7 s on the
    development machine) counts as ended."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if ignore_zombies:
        live = _live_members(pgid)
        return True if live is None else live
    return True


def _kill_group(proc: subprocess.Popen, grace_s: float = 5.0, ignore_zombies: bool = False) -> None:
    """Ends the process group this module started (pgid == the worker's pid): SIGTERM first, so that the
    worker's multiprocessing resource tracker (which ignores SIGTERM) can still unlink Lava's shared memory
    once the others are gone, then SIGKILL for whatever is left after the grace period. `ignore_zombies`
    (after a normal exit of the worker): do not wait for init to reap zombies of the group."""
    pgid = proc.pid
    if proc.poll() is None or _group_alive(pgid, ignore_zombies):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    while _group_alive(pgid, ignore_zombies) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid, ignore_zombies):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def crosscheck(export_dir_or_built, images, record="all", sim_graph: ir.Graph | None = None,
               timeout_s: float = 600.0, progress: bool = True, pin_models: bool = False) -> dict:
    """Runs the same images through Lava and through the fixed-point simulator (sim.engine, logical time) and
    counts the differences: spikes (graded populations: integer payloads) of every recorded population and the
    readout's v at every logical step (readout_steps=True).
    `sim_graph`: the graph for the simulator (default: the one Lava runs); `pin_models`: see run_lava."""
    import torch

    from sim.engine import Engine

    g, sched = _graph_and_schedule(export_dir_or_built)
    sg = sim_graph if sim_graph is not None else g
    rec = _record_list(g, record)
    x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
    t0 = time.perf_counter()
    from .lava_graph import readout_population
    readout = readout_population(g)
    sim = Engine(sg).run(x, record=rec + [readout])
    sim_s = time.perf_counter() - t0
    lava = run_lava((g, sched), images, record=rec, timeout_s=timeout_s, progress=progress,
                    pin_models=pin_models, readout_steps=True)
    out = sg.outputs()[0]
    sim_v = sim.outputs[out].numpy()
    sim_v_steps = sim.records[readout].reshape(lava.readout_v_steps.shape).numpy()
    # exact comparison: 0/1 spikes of LIF populations, integer payloads of graded ones
    spikes = {n: int((lava.spikes[n] != sim.records[n].numpy()).sum()) for n in rec}
    graded = [n for n in rec if not isinstance(g.nodes[n], ir.LoihiLIF)]
    return {"readout": lava.readout, "readout_mismatches": int((lava.readout_v != sim_v).sum()),
            "readout_max_abs_diff": float(np.abs(lava.readout_v - sim_v).max()),
            "readout_step_mismatches": int((lava.readout_v_steps != sim_v_steps).sum()),
            "spike_mismatches": spikes, "total_spike_mismatches": int(sum(spikes.values())),
            "firing_rates": {n: float((sim.records[n] != 0).double().mean()) for n in rec},
            "graded_payload_max": {n: float(sim.records[n].abs().max()) for n in graded},
            "spikes_compared": int(sum(sim.records[n].numel() for n in rec)),
            "samples": int(x.shape[0]), "sim_s": sim_s, "lava": lava.timing, "network": lava.network,
            "lava_result": lava, "sim_result": sim}


def make_sim_runner(built, timeout_s: float = 600.0, progress: bool = False, pin_models: bool = True):
    """The `sim_runner` of sim.parity.run_parity for the Lava engine (`spk-parity --engine lava`).

    `built`: export.build()'s dict (or an export directory, or a (graph, schedule) pair). Returns
    `runner(images [B, C, H, W] float tensor, layer_names) -> (logits_v, records)`: `logits_v` is the readout's
    v at the last logical step, float64 [B, classes], *not* divided by graph.metadata['readout_scale'] (parity
    divides), and `records` maps every requested name to a float64 tensor [T, B, *shape] in the IR layout
    (images (C, H, W), tokens (C, N)): spikes of a LIF population, payloads of a graded one, and for the
    readout its v at every logical step (the simulator's record of it). Every requested population is recorded
    in this run, whatever the export's own record list; a name that is not a population raises ValueError.
    One isolated Lava run (run_lava, killed after `timeout_s`) per call; `runner.last_result` keeps the last
    LavaResult (timing, process counts)."""
    import torch

    from .lava_graph import check_matrix_sizes, readout_population

    g, sched = _graph_and_schedule(built)
    check_matrix_sizes(g, sched)  # refuse big networks before any Lava run
    pops = set(_populations(g))
    readout = readout_population(g)

    def runner(images, layer_names):
        names = list(dict.fromkeys(layer_names))
        bad = [n for n in names if n not in pops]
        if bad:
            raise ValueError(f"the Lava engine records populations only; not populations of the network: {bad}")
        rec = [n for n in names if n != readout]
        x = images.detach().to("cpu", torch.float64).numpy() if isinstance(images, torch.Tensor) \
            else np.asarray(images, dtype=np.float64)
        res = run_lava((g, sched), x, record=rec, timeout_s=timeout_s, progress=progress, pin_models=pin_models,
                       readout_steps=readout in names)
        runner.last_result = res
        records = {n: torch.from_numpy(res.spikes[n].astype(np.float64)) for n in rec}
        if readout in names:
            shape = tuple(g.shapes()[readout])
            v = res.readout_v_steps
            records[readout] = torch.from_numpy(v.astype(np.float64).reshape(v.shape[0], v.shape[1], *shape))
        logits_v = torch.from_numpy(res.readout_v.astype(np.float64)).reshape(res.readout_v.shape[0], -1)
        return logits_v, {n: records[n] for n in names}

    runner.last_result = None
    runner.graph, runner.schedule, runner.readout = g, sched, readout
    return runner


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
    ok = rep["readout_mismatches"] == rep["readout_step_mismatches"] == rep["total_spike_mismatches"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
