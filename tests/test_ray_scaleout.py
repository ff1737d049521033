"""spk-parity and spk-report with --ray: the samples run in contiguous shards as Ray tasks on a local cluster
(2 CPUs, started once for this module) and the merged outputs equal a one-process run's byte for byte, apart
from run.scale_out of the JSON; a worker killed mid-run is retried by Ray with the same result; a shard whose
every attempt dies ends in one line on stderr and no output. Worker deaths are injected from outside the
production code: tests/ray_faults.py, a worker setup hook of this module's cluster (its runtime environment)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from analysis.shards import ExactSum, exact_sum, shard_ranges
from commands import parity as parity_cmd
from commands import report as report_cmd
from .conftest import assert_one_line_error
from .ray_faults import FAULTS_DIR_ENV
from .helpers_models import tiny_checkpoint

import ray  # noqa: E402  (a pinned dependency: required, not skipped)

SAMPLES, BATCH, SHARDS = 20, 4, 3  # 5 batches in 3 shards of 1, 2 and 2 batches (more shards than CPUs)


def fault_runtime_env(d) -> dict:
    """The test cluster's runtime environment: tests/ray_faults.install in every worker (the repository root on
    the workers' path, so that `tests` imports there too), reading `d`."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"worker_process_setup_hook": "tests.ray_faults.install",
            "env_vars": {FAULTS_DIR_ENV: str(d), "PYTHONPATH": path}}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env=fault_runtime_env(d))
    yield d
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ray") / "tiny.pt")


@pytest.fixture(scope="module")
def analog(tmp_path_factory):
    """150 random 8x8 images with values off any grid: in float mode their sums are inexact in float64, so the
    order of summation would show (the merge keeps them exact)."""
    import numpy as np
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("data") / "analog.npz"
    np.savez(path, x=rng.random((150, 8, 8)).astype(np.float32), y=np.arange(150) % 10)
    return f"npz:{path}"


PARITY = {"fixed": ["--target", "loihi"], "float": ["--target", "nir", "--mode", "float", "--data", "ANALOG"]}
REPORT = {"float": ["--target", "nir", "--attention-samples", "2", "--data", "ANALOG"],
          "fixed": ["--target", "loihi", "--attention-samples", "0"]}


def _args(extra, analog):
    return [analog if a == "ANALOG" else a for a in extra]


def _run(cli, cmd, ckpt, extra, out, ray_args=(), analog=None):
    argv = [ckpt, *_args(extra, analog), "--samples", SAMPLES, "--batch-size", BATCH, "--no-progress", "-o", out,
            *ray_args]
    if cmd is parity_cmd:
        argv += ["--min-agreement", "0"]
    if not ray_args:
        argv += ["--device", "cpu"]
    return cli(cmd.main, argv)


def _assert_same_outputs(one, sharded, json_name, shards=SHARDS):
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in sharded.iterdir())
    assert any(n.endswith(".png") for n in names)
    for name in names:
        a, b = (one / name).read_bytes(), (sharded / name).read_bytes()
        if name != json_name:
            assert a == b, f"{name} differs between the one-process and the Ray run"
            continue
        ja, jb = json.loads(a), json.loads(b)
        assert ja["run"].pop("scale_out") is None
        desc = jb["run"].pop("scale_out")
        assert desc["backend"] == "ray" and desc["shards"] == shards and desc["cluster_cpus"] == 2
        assert ja == jb, f"{name}: the merged counts differ from the one-process run's"


@pytest.fixture(scope="module")
def one_process(ckpt, analog, tmp_path_factory):
    """The one-process outputs of every run compared here (computed once)."""
    import contextlib
    import io
    root = tmp_path_factory.mktemp("one")
    outs = {}
    for kind, cmd, table in (("parity", parity_cmd, PARITY), ("report", report_cmd, REPORT)):
        for mode, extra in table.items():
            out = root / f"{kind}_{mode}"
            argv = [str(a) for a in (ckpt, *_args(extra, analog), "--samples", SAMPLES, "--batch-size", BATCH,
                                     "--no-progress", "--device", "cpu", "-o", out)]
            if cmd is parity_cmd:
                argv += ["--min-agreement", "0"]
            with contextlib.redirect_stdout(io.StringIO()):
                assert cmd.main(argv) == 0
            outs[kind, mode] = out
    return outs


def test_shards_cut_between_batches_and_merge_exactly():
    assert shard_ranges(SAMPLES, BATCH, SHARDS) == [(0, 4), (4, 12), (12, 20)]
    assert shard_ranges(10, 3, 8) == [(0, 3), (3, 6), (6, 9), (9, 10)]  # never more shards than batches
    assert shard_ranges(7, 64, 4) == [(0, 7)]
    x = torch.rand(1000, dtype=torch.float64) * 10.0 ** torch.randint(-8, 8, (1000,))
    whole = exact_sum(x)
    halves = exact_sum(x[:333]) + exact_sum(x[333:])
    assert isinstance(halves, ExactSum) and halves.units == whole.units and float(halves) == float(whole)
    assert float(whole) == __import__("math").fsum(x.tolist())  # correctly rounded, whatever the order


class _InProcess:
    """An analysis.shards.ShardExecutor without Ray: the shards run here, one after another."""

    def __init__(self, shards):
        self.shards = shards

    def map(self, fn, job, parts, on_done):
        return [fn(job, part, None) for part in parts]

    def describe(self):
        return {"backend": "in-process", "shards": self.shards}


def test_many_shards_merge_to_the_one_process_counts(ckpt):
    """12 batches in 5 shards of analog values spread over twelve decades (their float64 sums round, so a float
    fold of the shards' sums would depend on the grouping): the merged counts equal the one-process counts."""
    import numpy as np

    from analysis.parity import run_parity, summarize
    from analysis.report import run_activity
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    rng = np.random.default_rng(3)
    x = torch.tensor((10.0 ** -rng.uniform(0, 12, (36, 1, 8, 8))).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, 36))
    graph, numeric = convert(ckpt, ConversionOptions(target="nir")).runnable("float")
    one, acc = run_activity(graph, numeric, x, batch_size=3, labels=y)
    sharded, acc_s = run_activity(graph, numeric, x, batch_size=3, labels=y, executor=_InProcess(5))
    assert json.dumps(sharded.to_dict()) == json.dumps(one.to_dict()) and acc_s == acc
    build = convert(ckpt, ConversionOptions(target="loihi"))
    graph, numeric = build.runnable("fixed")
    x = x.clamp(0, 1)
    one = run_parity(build.source.model, graph, x, y, "fixed", 3, progress=False, numeric=numeric)
    sharded = run_parity(build.source.model, graph, x, y, "fixed", 3, progress=False, numeric=numeric,
                         executor=_InProcess(5))
    assert json.dumps(summarize(sharded, {})) == json.dumps(summarize(one, {}))


@pytest.mark.parametrize("mode", sorted(PARITY))
def test_parity_on_ray_equals_one_process(faults, ckpt, analog, one_process, tmp_path, cli, mode):
    rc, _, err = _run(cli, parity_cmd, ckpt, PARITY[mode], tmp_path / "ray", ["--ray", "--ray-shards", SHARDS],
                      analog)
    assert rc == 0, err
    _assert_same_outputs(one_process["parity", mode], tmp_path / "ray", "parity.json")


@pytest.mark.parametrize("mode", sorted(REPORT))
def test_report_on_ray_equals_one_process(faults, ckpt, analog, one_process, tmp_path, cli, mode):
    rc, _, err = _run(cli, report_cmd, ckpt, REPORT[mode], tmp_path / "ray", ["--ray", "--ray-shards", SHARDS],
                      analog)
    assert rc == 0, err
    _assert_same_outputs(one_process["report", mode], tmp_path / "ray", "energy.json")


def test_default_shards_are_the_cluster_cpus(faults, ckpt, one_process, tmp_path, cli):
    rc, _, err = _run(cli, report_cmd, ckpt, REPORT["fixed"], tmp_path / "ray", ["--ray"])
    assert rc == 0, err
    _assert_same_outputs(one_process["report", "fixed"], tmp_path / "ray", "energy.json", shards=2)


def test_a_killed_worker_is_retried_and_the_result_is_the_same(faults, ckpt, one_process, tmp_path, cli):
    marker = faults / "shard-0.kill-once"
    marker.touch()
    rc, _, err = _run(cli, parity_cmd, ckpt, PARITY["fixed"], tmp_path / "ray", ["--ray", "--ray-shards", SHARDS])
    assert rc == 0, err
    assert not marker.exists()  # the first attempt of shard 0 consumed it and died
    _assert_same_outputs(one_process["parity", "fixed"], tmp_path / "ray", "parity.json")


@pytest.mark.parametrize("cmd", [parity_cmd, report_cmd], ids=["parity", "report"])
def test_a_shard_that_always_dies_fails_in_one_line_with_no_output(faults, ckpt, tmp_path, cli, cmd):
    marker = faults / "shard-1.kill-always"
    marker.touch()
    try:
        extra = PARITY["fixed"] if cmd is parity_cmd else REPORT["fixed"]
        rc, _, err = _run(cli, cmd, ckpt, extra, tmp_path / "out", ["--ray", "--ray-shards", SHARDS,
                                                                    "--ray-retries", "1"])
    finally:
        marker.unlink()
    assert_one_line_error(rc, err, "error: --ray: shard 1 (samples 4-11) failed after 2 attempt(s)",
                          "WorkerCrashedError", "nothing was written")
    assert rc == 2
    assert list(tmp_path.iterdir()) == []  # no output directory, no staging leftovers


def test_ray_options_are_checked(ckpt, tmp_path, cli):
    rc, _, err = cli(parity_cmd.main, [ckpt, "--ray-shards", "2", "-o", tmp_path / "a"])
    assert_one_line_error(rc, err, "--ray-shards needs --ray")
    rc, _, err = cli(report_cmd.main, [ckpt, "--ray", "--ray-shards", "0", "-o", tmp_path / "b"])
    assert_one_line_error(rc, err, "--ray-shards must be >= 1")
    rc, _, err = cli(parity_cmd.main, [ckpt, "--ray", "--engine", "lava", "-o", tmp_path / "c"])
    assert_one_line_error(rc, err, "--engine lava runs in this process only")
    assert list(tmp_path.iterdir()) == []


def test_a_node_lost_mid_run_is_retried_elsewhere_with_the_same_result(ckpt, one_process, tmp_path, cli):
    """A cluster of three Ray nodes started on this machine (ray.cluster_utils.Cluster: a head without CPUs and
    two workers of one CPU); the shards hold where they run until the test has removed a node that runs one (its
    raylet and workers killed, as a lost machine), never the node the driver is connected to (Ray refuses that:
    the driver would go with it). Ray runs the lost shard again on the other node; the outputs equal the
    one-process run's."""
    import threading
    import time

    from ray.cluster_utils import Cluster
    faults = tmp_path / "faults"
    faults.mkdir()
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    removed, hold = [], faults / "hold"

    def lose_a_node_running_a_shard(driver_node: str):
        try:
            t0 = time.time()
            while not removed and time.time() - t0 < 120:
                running = {f.read_text() for f in faults.glob("shard-*.running") if f.stat().st_size}
                victim = next((n for n in nodes if n.node_id in running and n.node_id != driver_node), None)
                if victim is not None:
                    cluster.remove_node(victim, allow_graceful=False)
                    removed.append(victim.node_id)
                time.sleep(0.05)
        finally:
            hold.unlink()

    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR",
                 runtime_env=fault_runtime_env(faults))
        hold.touch()
        killer = threading.Thread(target=lose_a_node_running_a_shard,
                                  args=(ray.get_runtime_context().get_node_id(),))
        killer.start()
        rc, _, err = _run(cli, parity_cmd, ckpt, PARITY["fixed"], tmp_path / "ray", ["--ray", "--ray-shards", SHARDS])
        killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed, "no shard ran on a worker node the test could remove"
    assert rc == 0, err
    _assert_same_outputs(one_process["parity", "fixed"], tmp_path / "ray", "parity.json")
