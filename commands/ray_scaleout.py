"""`--ray [ADDRESS]` of spk-parity and spk-report: the samples run in contiguous shards as Ray tasks, one count
per shard, merged exactly on the driver (analysis.shards).

What a task gets: the run's job (the reference model and the graph, built once on the driver from the checkpoint
and the conversion options) as one Ray object, and its shard's samples (analysis.samples): the images and labels
as tensors, or, for a data set read from a path that the workers see too (`--ray-data shared`), the recipe that
opens it and the shard's indices, so each worker reads its own slice. The checkpoint needs to be readable on the
driver only; every node needs this project installed (the same
version, in the same environment), since a task imports its shard function from it. What it returns: integer
counts, maxima and exact sums (no float sums), so the merged result equals a one-process run's on the same
samples.

A task whose worker dies (killed, out of memory, node lost) is retried by Ray up to `retries` times; an
exception raised by the shard code itself is not (it would fail again the same way) and ends the run with the
usual one-line error. Nothing is written unless every shard finished. (The tests inject worker deaths and node
losses from outside this module: tests/ray_faults.py, a worker setup hook of their own cluster.)"""
from __future__ import annotations

import argparse
import logging
import socket
import sys

from ground.errors import UserError
from spikformer.train import default_device

LOCAL = "local"
DEFAULT_RETRIES = 3
RAY_DATA = ("auto", "shared", "ship")


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out on Ray")
    g.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                   help="run the samples in shards as Ray tasks: on a local Ray instance (no ADDRESS; one that "
                        "this process already joined, or a new one), or on the cluster at ADDRESS (HEAD:6379, "
                        "'auto'); the results equal a one-process run's")
    g.add_argument("--ray-shards", type=int, default=None, metavar="N",
                   help="number of shards (default: the cluster's CPUs); cut between batches only, so at most "
                        "the number of batches")
    g.add_argument("--ray-retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help=f"retries of a shard whose worker died (default {DEFAULT_RETRIES})")
    g.add_argument("--ray-data", choices=RAY_DATA, default="auto",
                   help="shared: every worker reads its shard's samples from the data set's path (a shared file "
                        "system); ship: the driver reads them and sends them to the workers; auto: shared on a "
                        "local Ray instance, ship on a cluster at an ADDRESS (default auto)")


def ray_reads_data(a: argparse.Namespace) -> bool:
    """True when the Ray workers read their shards' samples themselves (--ray-data, see add_ray_arguments)."""
    if a.ray is None:
        return False
    return a.ray_data == "shared" or (a.ray_data == "auto" and a.ray == LOCAL)


def ray_device(a: argparse.Namespace) -> str:
    """The run's device (--device; by default the CPU with --ray, else cuda when available) after refusing what
    --ray does not do; call before the run."""
    if a.ray is None:
        if a.ray_shards is not None:
            raise UserError("--ray-shards needs --ray")
        return a.device or default_device()
    if a.ray_shards is not None and a.ray_shards < 1:
        raise UserError(f"--ray-shards must be >= 1, got {a.ray_shards}")
    if a.ray_retries < 0:
        raise UserError(f"--ray-retries must be >= 0, got {a.ray_retries}")
    device = a.device or "cpu"
    if not device.startswith("cpu"):
        raise UserError(f"--ray runs on the workers' CPUs; --device {device} is not supported with --ray")
    return device


def ray_executor(a: argparse.Namespace, prog: str) -> "RayExecutor | None":
    """The executor of `--ray [ADDRESS]` (enter it around the run), or None without --ray."""
    return RayExecutor(prog, a.ray, a.ray_shards, a.ray_retries) if a.ray is not None else None


def _run_shard(fn, job, samples, shard: int):
    """The body of one Ray task: `fn` of analysis (imported by reference in the worker) on one shard's samples
    (tensors, or a data set's recipe and indices that the worker reads itself)."""
    return fn(job, samples, None)


def _reachable(address: str, timeout: float = 5.0) -> str | None:
    """None when HOST:PORT accepts a connection (or is not of that form), else why not. Ray's client retries an
    unreachable address for minutes and then ends the process (Ray 2.40), so addresses are probed first."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        return None
    except OSError as e:
        return str(e.strerror or e)


def _recorded_address(address: str | None) -> str | None:
    """Where ray.init(address) would go for None or 'auto': RAY_ADDRESS, or the cluster that `ray start` last
    recorded on this machine (/tmp/ray/ray_current_cluster); None: nowhere (a new local instance)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
        return canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - a private helper of the pinned Ray; without it, no probe
        return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class RayExecutor:
    """An analysis.shards.ShardExecutor on Ray. Use as a context manager: it joins the cluster on entry (a new
    local instance when there is none and no address was given) and leaves it on exit (shutting down only an
    instance it started)."""

    def __init__(self, prog: str, address: str = LOCAL, shards: int | None = None, retries: int = DEFAULT_RETRIES):
        self.prog = prog
        self.address = address or LOCAL
        self.requested_shards = shards
        self.retries = retries
        self.shards = 0
        self.cluster_cpus = 0
        self.used_shards = 0
        self._started = False

    def __enter__(self) -> "RayExecutor":
        try:
            import ray
        except ImportError as e:  # pragma: no cover - a dependency of this project
            raise UserError(f"--ray needs the ray package ({e}); reinstall this project (scripts/setup.sh)") from None
        if not ray.is_initialized():
            kwargs = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
            target = None if self.address == LOCAL else self.address
            if target in (None, "auto"):
                recorded = _recorded_address(target)
                if recorded is not None and _reachable(recorded) is not None:
                    if target == "auto":
                        raise UserError(f"--ray auto: the Ray cluster recorded at {recorded} (RAY_ADDRESS or "
                                        f"'ray start') does not answer: {_reachable(recorded)}")
                    print(f"{self.prog}: note: the Ray cluster recorded at {recorded} (RAY_ADDRESS or 'ray start') "
                          "does not answer; starting a local Ray instance", file=sys.stderr)
                    target = "local"  # a new instance, whatever was recorded
            else:
                why = _reachable(target)
                if why is not None:
                    raise UserError(f"--ray {target}: cannot reach a Ray cluster there ({why}); start one with "
                                    "'ray start --head' on that machine, or give its address")
            try:
                ray.init(address=target, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = "a local Ray instance" if self.address == LOCAL else f"the Ray cluster at {self.address}"
                raise UserError(f"--ray: cannot start or join {where}: {_one_line(e)}") from None
            self._started = True
        self.cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        self.shards = self.requested_shards or max(1, self.cluster_cpus)
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray
            ray.shutdown()
            self._started = False

    def describe(self) -> dict:
        """The run description (run.scale_out of parity.json and energy.json)."""
        return {"backend": "ray", "address": self.address, "shards": self.used_shards,
                "cluster_cpus": self.cluster_cpus, "max_retries": self.retries}

    def map(self, fn, job, parts, on_done) -> list:
        import ray

        task = ray.remote(_run_shard).options(num_cpus=1, max_retries=self.retries, retry_exceptions=False,
                                              name=f"{self.prog}-shard")
        job_ref = ray.put(job)
        refs = [task.remote(fn, job_ref, part, k) for k, part in enumerate(parts)]
        self.used_shards = len(refs)
        index = {ref: k for k, ref in enumerate(refs)}
        starts = [0]
        for part in parts:
            starts.append(starts[-1] + len(part))
        results: list = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    k = index[ref]
                    try:
                        results[k] = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the shard code raised: the usual error for it
                        cause = e.cause if isinstance(e.cause, Exception) else None
                        if cause is None:
                            raise RuntimeError(f"shard {k}: {_one_line(e)}") from None
                        raise cause from None
                    except ray.exceptions.RayError as e:
                        raise UserError(
                            f"--ray: shard {k} (samples {starts[k]}-{starts[k + 1] - 1}) failed after "
                            f"{self.retries + 1} attempt(s): {type(e).__name__}: {_one_line(e)}; nothing was "
                            "written") from None
                    on_done(len(parts[k]))
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort: the run fails anyway
                    pass
            raise
        return results
