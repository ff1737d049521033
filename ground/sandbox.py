"""Calling a function in a disposable child process, so that a hang or a crash of a C parser (the HDF5 library:
ground.hdf5_read) becomes a typed error instead of taking the caller down.

`run(target, *args)` calls the function `target` ("package.module:function") in a child process under a
deadline (SIGKILL when it runs past it) and an address-space limit (RLIMIT_AS), and returns its result. The
result comes back as data, never as a pickle (ground.sandbox_codec: the child writes its arrays' raw bytes into
one file and everything else as tagged JSON; the parent checks every dtype and builds the arrays with
np.frombuffer, so nothing the child sends can make the parent run code). A failure is `SandboxError` with `kind`
"crash" (a signal or an unexpected exit), "timeout" or "error" (the function raised; the message names the
exception) and a one-line message.

How, and why not plain fork or spawn: the first call starts one helper process per parent (a fresh interpreter in
its own session, ground.isolated, that imports only numpy and h5py, not torch, prepares itself (HELPER_PREPARE) and
then waits for requests on a pipe) and each call forks a child from that helper. Forking the helper is safe: it is
single-threaded (OpenBLAS/OpenMP limited to one thread) and holds no locks, unlike the caller, which has usually
imported torch and may run thread pools (forking such a process can deadlock the child on a lock another thread
held). Spawning a fresh interpreter per call would be as safe but costs about 0.2 s per read (python + numpy + h5py
imports) on the 2-core test machine; the helper costs that once per process, then an empty call (fork, wait, JSON)
takes about 9 ms, and read_network / read_nir on digits-2-64 files take about 20 ms / 45-70 ms longer than parsing
in process (58 ms instead of 39 ms; 0.32 s instead of 0.28 s). The helper never parses anything itself, so a
crashing file cannot take it down; it exits when the parent closes the pipe (also when the parent dies). A parent
that forks gets its own helper on its first call.

The child's output goes to a private temporary directory (`tempfile`, honouring TMPDIR) that is removed after
each call; large files therefore need free space there about the size of their uncompressed arrays (a full
disk there is an OSError, not a verdict on the file).
"""
from __future__ import annotations

import atexit
import errno
import gc
import importlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .isolated import LineChild, wait_pid
from .sandbox_codec import Arrays, Out, OutputError, decode, encode

ROOT = Path(__file__).resolve().parents[1]

TIMEOUT_S = 10.0            # deadline of one call (hdf5_read adds time per MB of the file read)
MEMORY_MIN = 8 << 30        # address-space limit of the child: at least 8 GiB (hdf5_read: more for large files)
HELPER_GRACE_S = 30.0       # how long past the deadline the parent waits for the helper to answer
EXIT_NO_OUTPUT = 4          # the child's exit code when it could not write its result
# what the helper runs once before serving (the one kind of call it serves: HDF5 parsing); named, not imported,
# because ground.hdf5_read is built on this module
HELPER_PREPARE = "ground.hdf5_read:prepare_helper"


class SandboxError(Exception):
    """The isolated call returned no result. kind: "crash", "timeout" or "error"; error_type: the exception
    the function raised (kind "error"). The message is one line."""

    def __init__(self, kind: str, message: str, error_type: str | None = None):
        super().__init__(message)
        self.kind, self.error_type = kind, error_type


def _one_line(s: str, n: int = 300) -> str:
    return " ".join(str(s).split())[:n]


# ------------------------------------------------------------------------------------------------ the child
def _resolve(target: str):
    mod, _, name = target.partition(":")
    return getattr(importlib.import_module(mod), name)


def _child(fn, args: list, out_dir: str, timeout: float, mem: int) -> None:
    """In the forked child: limits, the call, the result files. Never returns."""
    code = 3
    try:
        gc.disable()  # short-lived; what a parser allocates is freed at exit
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(timeout) + 5)  # a backstop should the helper itself be killed before its deadline
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the helper's stdout is its pipe to the parent; HDF5 may print diagnostics
            os.dup2(devnull, fd)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if mem:
            lim = mem if hard == resource.RLIM_INFINITY else min(mem, hard)
            resource.setrlimit(resource.RLIMIT_AS, (lim, hard))
        out = Out(out_dir)
        try:
            doc = encode(fn(out, *args), out)
            out.close()
            name, code = "result.json", 0
        except OutputError as e:
            doc, name, code = {"type": "OSError", "errno": e.errno, "message": e.strerror, "output": True}, \
                "error.json", 1
        except Exception as e:  # noqa: BLE001 - reported to the parent as kind "error"
            doc, name, code = {"type": type(e).__name__, "message": _one_line(e, 1000)}, "error.json", 1
        try:
            with open(os.path.join(out_dir, name + ".tmp"), "w") as f:
                f.write(json.dumps(doc))
            os.rename(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
        except OSError:
            code = EXIT_NO_OUTPUT
    except BaseException:  # noqa: BLE001 - even writing the error failed: exit code 3, a crash
        code = 3
    finally:
        os._exit(code)


def _serve() -> None:
    """The helper: one JSON request per line on stdin, one JSON answer per line on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints (of imported modules) must not reach the protocol pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches it, not us
    try:
        _resolve(HELPER_PREPARE)()
    except Exception:  # noqa: BLE001 - the calls still work unprepared (a first call imports what it needs)
        pass
    gc.freeze()  # the children inherit these objects: no copy-on-write page faults from the collector
    for line in sys.stdin:
        if not line.strip():
            continue
        t0 = time.perf_counter()
        try:
            req = json.loads(line)
            fn = _resolve(req["target"])  # our own module, imported here once
            pid = os.fork()
            if pid == 0:
                _child(fn, req["args"], req["out"], req["timeout"], req["mem"])
            status, value = wait_pid(pid, float(req["timeout"]))
            ans = {"status": status, "value": value}
        except Exception as e:  # noqa: BLE001
            ans = {"status": "helper-error", "value": 0, "message": _one_line(f"{type(e).__name__}: {e}")}
        ans["seconds"] = round(time.perf_counter() - t0, 4)
        proto.write(json.dumps(ans) + "\n")


# The helper imports only this torch-free package (ground) with the repository root first on its path.
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from ground import sandbox; sandbox._serve()"


# ------------------------------------------------------------------------------------------------ the parent
class _Helper:
    """The helper process (ground.isolated.LineChild: its own session, one JSON line per request and answer)."""

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.child = LineChild([sys.executable, "-c", _BOOT, str(ROOT)], cwd=str(ROOT), env=env)
        self.proc = self.child.proc
        self.pid = os.getpid()

    def ask(self, req: dict, limit: float) -> dict | str:
        """Sends one request; its answer, "dead" if the helper went away, "silent" after `limit` seconds."""
        if not self.child.send(json.dumps(req)):
            return "dead"
        line = self.child.receive(limit)
        if line is None:
            return "silent"
        if line is LineChild.GONE:
            return "dead"
        return json.loads(line)

    def close(self, wait: float = 2.0):
        """Closes the request pipe (the helper exits); kills the helper and its child after `wait` seconds."""
        self.child.close(wait)


_lock = threading.Lock()
_helper: _Helper | None = None


def _after_fork_in_child():
    global _helper, _lock
    _helper, _lock = None, threading.Lock()  # the parent's helper and pipes stay the parent's


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def shutdown() -> None:
    """Stops this process's helper (also run at exit); the next call starts a new one."""
    global _helper
    if _helper is not None and _helper.pid == os.getpid():
        _helper.close()
    _helper = None


def _ask(req: dict, limit: float) -> dict | str:
    global _helper
    with _lock:
        if _helper is None or _helper.proc.poll() is not None:
            _helper = _Helper()
        try:
            ans = _helper.ask(req, limit)
        except BaseException:  # KeyboardInterrupt, a caller's alarm: the helper's state is unknown
            _helper.close(wait=0.0)
            _helper = None
            raise
        if not isinstance(ans, dict):
            _helper.close(wait=0.0)
            _helper = None
        return ans


def _no_output(err, reason, what: str):
    e = OSError(err if isinstance(err, int) else errno.EIO,
                f"the {what} could not write its result: {reason or 'write failed'}")
    e.destination = f"temporary files in {tempfile.gettempdir()}"
    raise e


def run(target: str, *args, timeout: float = TIMEOUT_S, memory: int = MEMORY_MIN, what: str = "parser") -> Any:
    """target(out, *args) in a child process (see the module docstring); args: JSON values. Raises
    SandboxError (kind "crash", "timeout" or "error") with a one-line message about `what` ("the parser crashed
    (SIGSEGV)", "the parser did not finish within 10 s", "OSError: ..."), without the file's name."""
    out_dir = tempfile.mkdtemp(prefix="spikformer-sandbox-")
    try:
        req = {"target": target, "args": list(args), "out": out_dir, "timeout": float(timeout), "mem": int(memory)}
        ans = _ask(req, timeout + HELPER_GRACE_S)
        late = SandboxError("timeout", f"the {what} did not finish within {timeout:.0f} s")
        if ans == "silent":
            raise late
        if ans == "dead":
            raise SandboxError("crash", f"the {what}'s helper process died")
        status, value = ans.get("status"), ans.get("value")
        if status == "timeout":
            raise late
        if status == "signal":
            try:
                name = signal.Signals(value).name
            except ValueError:
                name = f"signal {value}"
            raise SandboxError("crash", f"the {what} crashed ({name})")
        err, res = os.path.join(out_dir, "error.json"), os.path.join(out_dir, "result.json")
        if status == "exit" and value == 1 and os.path.exists(err):
            with open(err) as f:
                doc = json.load(f)
            if doc.get("output"):
                _no_output(doc.get("errno"), doc.get("message"), what)
            etype, msg = _one_line(doc.get("type", "Error"), 60), _one_line(doc.get("message", ""))
            raise SandboxError("error", f"{etype}: {msg}" if msg else etype, etype)
        if status == "exit" and value == 0 and os.path.exists(res):
            try:
                with open(res) as f:
                    return decode(json.load(f), Arrays(out_dir))
            except (ValueError, TypeError, KeyError, IndexError, OSError, RecursionError) as e:
                raise SandboxError("crash", f"the {what} returned a malformed result ({type(e).__name__})") \
                    from None
        if status == "exit" and value == EXIT_NO_OUTPUT:
            _no_output(None, None, what)
        if status == "helper-error":
            raise SandboxError("crash", f"the {what} could not be started ({ans.get('message', '')})")
        raise SandboxError("crash", f"the {what} exited unexpectedly (exit code {value})")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


