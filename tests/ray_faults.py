"""Worker deaths for the Ray tests, injected from outside the production code: `install` is a Ray worker setup
hook (ray.init(runtime_env={"worker_process_setup_hook": "tests.ray_faults.install", ...})) that runs in every
worker process the test cluster starts and wraps commands.ray_scaleout._run_shard there, the function each shard
task runs (Ray resolves it by its module path in the worker, after this hook). The wrapper reads the directory
named by FAULTS_DIR_ENV (set in the test cluster's runtime environment only): a file shard-K.kill-once makes shard
K's worker exit as a crash would (the file is removed first, so the retry runs), a file shard-K.kill-always makes
every attempt exit, and a file `hold` makes every shard write its node's id to shard-K.running and then wait (up
to 120 s) until `hold` is removed (so a test can remove a node while a shard runs there)."""
from __future__ import annotations

import os
import time
from pathlib import Path

FAULTS_DIR_ENV = "SPK_TESTS_RAY_FAULTS_DIR"


def _faults(shard: int) -> None:
    d = os.environ.get(FAULTS_DIR_ENV)
    if not d:
        return
    once = Path(d, f"shard-{shard}.kill-once")
    try:
        once.unlink()
        os._exit(1)
    except FileNotFoundError:
        pass
    if Path(d, f"shard-{shard}.kill-always").exists():
        os._exit(1)
    hold = Path(d, "hold")
    if hold.exists():
        import ray
        Path(d, f"shard-{shard}.running").write_text(ray.get_runtime_context().get_node_id())
        t0 = time.time()
        while hold.exists() and time.time() - t0 < 120:
            time.sleep(0.05)


def install() -> None:
    import commands.ray_scaleout as scaleout
    real = scaleout._run_shard
    if getattr(real, "__wrapped_by_faults__", False):
        return

    def run_shard(fn, job, samples, shard: int):
        _faults(shard)
        return real(fn, job, samples, shard)

    run_shard.__wrapped_by_faults__ = True
    scaleout._run_shard = run_shard
