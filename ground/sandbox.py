"""Parsing untrusted files in a disposable child process, so that a hang or a crash of a C parser (the HDF5
library, which is not hardened against crafted files: bench/fuzzing/fuzz_readers.py found forged network.h5 files that
make it loop forever or segfault) becomes a typed error instead of taking the caller down.

`run(target, *args)` calls the function `target` ("package.module:function") in a child process under a
deadline (SIGKILL when it runs past it) and an address-space limit (RLIMIT_AS), and returns its result. The
result comes back as data, never as a pickle: the child writes its arrays' raw bytes into one file and
everything else (with each array's dtype, shape and offset) as tagged JSON (`_encode` / `_decode`: dicts,
lists, str, bytes, numbers, numpy scalars, arrays of numbers or fixed-width strings, object arrays of those);
the parent checks every dtype (no objects, no structures) and builds the arrays with np.frombuffer, so nothing
the child sends can make the parent run code. `read_hdf5(path)` uses it to dump an HDF5 file (groups,
attributes, datasets; hard links only) into `H5Group` / `H5Dataset` objects that answer the few h5py calls the
readers make (`f.attrs`, `f[name]`, `keys()`, `items()`, `dataset[()]`); hw_backends.nir.nir_io.read_nir and
hw_backends.loihi.network_file.read_network parse every user-supplied HDF5 file through it. A failure is
`SandboxError` with `kind` "crash" (a signal or an unexpected exit), "timeout" or "error" (the function raised;
the message names the exception) and a one-line message.

How, and why not plain fork or spawn: the first call starts one helper process per parent (a fresh interpreter,
`subprocess`, that imports only numpy and h5py, not torch, and then waits for requests on a pipe) and each call
forks a child from that helper. Forking the helper is safe: it is single-threaded (OpenBLAS/OpenMP limited to
one thread) and holds no locks, unlike the caller, which has usually imported torch and may run thread pools
(forking such a process can deadlock the child on a lock another thread held). Spawning a fresh interpreter per
call would be as safe but costs about 0.2 s per read (python + numpy + h5py imports) on the 2-core test
machine; the helper costs that once per process, then an empty call (fork, wait, JSON) takes about 9 ms, and
read_network / read_nir on digits-2-64 files take about 20 ms / 45-70 ms longer than parsing in process
(58 ms instead of 39 ms; 0.32 s instead of 0.28 s). The helper never parses anything itself, so a crashing
file cannot take it down; it exits when the parent closes the pipe (also when the parent dies). A parent that
forks gets its own helper on its first call.

The child's output goes to a private temporary directory (`tempfile`, honouring TMPDIR) that is removed after
each call; large files therefore need free space there about the size of their uncompressed arrays (a full
disk there is an OSError, not a verdict on the file).
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

TIMEOUT_S = 10.0            # deadline of one call, plus TIMEOUT_S_PER_MB per MB of the file read
TIMEOUT_S_PER_MB = 0.25
TIMEOUT_ENV = "SPIKFORMER_PARSE_TIMEOUT_S"   # overrides the base deadline (slow machines, huge files)
MEMORY_MIN = 8 << 30        # address-space limit of the child: at least 8 GiB,
MEMORY_PER_FILE_BYTE = 32   # or 32 x the file size for large (compressed) files
HELPER_GRACE_S = 30.0       # how long past the deadline the parent waits for the helper to answer
MAX_DEPTH = 32              # HDF5 groups nested deeper than this are refused (link cycles end here)
MAX_OBJECTS = 1_000_000     # and so are files with more groups, datasets and attributes than this
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
EXIT_NO_OUTPUT = 4          # the child's exit code when it could not write its result


class SandboxError(Exception):
    """The isolated call returned no result. kind: "crash", "timeout" or "error"; error_type: the exception
    the function raised (kind "error"). The message is one line."""

    def __init__(self, kind: str, message: str, error_type: str | None = None):
        super().__init__(message)
        self.kind, self.error_type = kind, error_type


def _one_line(s: str, n: int = 300) -> str:
    return " ".join(str(s).split())[:n]


def deadline_for(path, base: float | None = None) -> float:
    """The default deadline for parsing `path`: TIMEOUT_S (or $SPIKFORMER_PARSE_TIMEOUT_S) plus
    TIMEOUT_S_PER_MB per MB of file."""
    if base is None:
        try:
            base = float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S))
        except ValueError:
            base = TIMEOUT_S
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return base + TIMEOUT_S_PER_MB * size / 1e6


def memory_for(path) -> int:
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return max(MEMORY_MIN, MEMORY_PER_FILE_BYTE * size)


# ------------------------------------------------------------------------------------------------ the codec
class ArrayRef:
    """An array the child has already written to the output (see Out.array)."""
    __slots__ = ("dtype", "shape", "offset", "nbytes")

    def __init__(self, dtype: str, shape: list, offset: int, nbytes: int):
        self.dtype, self.shape, self.offset, self.nbytes = dtype, shape, offset, nbytes


ARRAYS = "arrays.bin"   # the child's arrays, raw bytes one after the other (64-byte aligned)
INLINE_MAX = 16         # numeric arrays up to this many elements travel inside the JSON document
ARRAY_KINDS = "biufcSU"  # numbers, fixed-width byte and unicode strings: no objects, no structures


class Out:
    """Given to the child's function as its first argument: `out.keep(a)` writes a large array to the output
    now (so that the child holds one array at a time) and returns a reference to put into the result; a small
    one is returned as it is (it travels inline in the JSON)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.file = None
        self.size = 0

    def keep(self, a):
        if isinstance(a, np.ndarray) and a.dtype.kind != "O" and not _inline(a):
            return self.array(a)
        return a

    def array(self, a: np.ndarray) -> ArrayRef:
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
        if a.dtype.kind not in ARRAY_KINDS or a.dtype.fields is not None or a.dtype.subdtype is not None:
            raise TypeError(f"unsupported array dtype {a.dtype}")
        try:
            if self.file is None:
                self.file = open(os.path.join(self.dir, ARRAYS), "wb")
            pad = -self.size % 64
            self.file.write(b"\0" * pad)
            self.size += pad
            ref = ArrayRef(a.dtype.str, list(a.shape), self.size, a.nbytes)
            if a.nbytes:
                self.file.write(a.reshape(-1).view(np.uint8).data)
            self.size += a.nbytes
        except OSError as e:
            raise OutputError(e.errno, e.strerror) from None
        return ref

    def close(self):
        if self.file is not None:
            try:
                self.file.close()
            except OSError as e:
                raise OutputError(e.errno, e.strerror) from None


class OutputError(OSError):
    """The child could not write its output (a full temporary directory): reported to the caller as an OSError,
    not as a problem of the file."""


def _inline(a: np.ndarray) -> bool:
    return a.dtype.kind in "biuf" and a.dtype.fields is None and a.size <= INLINE_MAX


def _encode(v, out: Out):
    """Tagged JSON for the values a parser returns; anything else is a TypeError (in the child)."""
    if isinstance(v, ArrayRef):
        return ["n", v.dtype, v.shape, v.offset, v.nbytes]
    if v is None or isinstance(v, bool):
        return ["v", v]
    if isinstance(v, str):  # np.str_ too
        return ["s", str(v)]
    if isinstance(v, bytes):  # np.bytes_ too
        return ["b", bytes(v).decode("latin-1")]
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        return ["f", repr(v)]
    if isinstance(v, dict):
        return ["d", [[_encode(k, out), _encode(x, out)] for k, x in v.items()]]
    if isinstance(v, (list, tuple)):
        return ["l" if isinstance(v, list) else "t", [_encode(x, out) for x in v]]
    if isinstance(v, np.generic) and v.dtype.kind in "biuf":
        return ["x", v.dtype.str, v.item()]
    if isinstance(v, np.generic) and v.dtype.kind in ARRAY_KINDS:
        return ["y"] + _encode(out.array(np.asarray(v)), out)[1:]
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "O":  # e.g. HDF5 variable-length strings: each element encoded on its own
            return ["o", list(v.shape), [_encode(x, out) for x in v.reshape(-1).tolist()]]
        if _inline(v):
            return ["a", v.dtype.str, list(v.shape), v.reshape(-1).tolist()]
        return _encode(out.array(v), out)
    raise TypeError(f"unsupported value of type {type(v).__name__}")


def _dtype(s, kinds: str) -> np.dtype:
    dt = np.dtype(str(s))
    if dt.kind not in kinds or dt.fields is not None or dt.subdtype is not None or dt.hasobject:
        raise ValueError(f"unexpected dtype {dt}")
    return dt


class _Arrays:
    """The parent's view of the child's arrays.bin: read once, arrays are views into it (no pickle involved:
    np.frombuffer of a checked numeric or fixed-width string dtype)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, ARRAYS)
        self.buf = None

    def get(self, dtype, shape, offset, nbytes) -> np.ndarray:
        if self.buf is None:
            with open(self.path, "rb") as f:
                self.buf = bytearray(os.fstat(f.fileno()).st_size)
                f.readinto(self.buf)
        dt = _dtype(dtype, ARRAY_KINDS)
        shape = tuple(int(x) for x in shape)
        if any(x < 0 for x in shape) or type(offset) is not int or type(nbytes) is not int or offset < 0 \
                or nbytes != int(np.prod(shape, dtype=object)) * dt.itemsize or offset + nbytes > len(self.buf):
            raise ValueError("array reference out of bounds")
        return np.frombuffer(self.buf, dtype=dt, count=nbytes // dt.itemsize if dt.itemsize else 0,
                             offset=offset).reshape(shape)


def _decode(e, arrays: _Arrays):
    """The inverse of _encode, in the parent: builds only plain values, numpy arrays of numbers or strings and
    object arrays of decoded values that it fills itself."""
    if not isinstance(e, list) or not e or not isinstance(e[0], str):
        raise ValueError("malformed sandbox result")
    tag = e[0]
    if tag == "v" and (e[1] is None or isinstance(e[1], bool)):
        return e[1]
    if tag == "s" and isinstance(e[1], str):
        return e[1]
    if tag == "b" and isinstance(e[1], str):
        return e[1].encode("latin-1")
    if tag == "i" and isinstance(e[1], str):
        return int(e[1])
    if tag == "f" and isinstance(e[1], str):
        return float(e[1])
    if tag == "d" and isinstance(e[1], list):
        return {_decode(k, arrays): _decode(x, arrays) for k, x in e[1]}
    if tag in ("l", "t") and isinstance(e[1], list):
        items = [_decode(x, arrays) for x in e[1]]
        return items if tag == "l" else tuple(items)
    if tag in ("n", "y") and len(e) == 5 and isinstance(e[2], list):
        a = arrays.get(*e[1:])
        return a[()] if tag == "y" else a
    if tag == "x" and isinstance(e[2], (bool, int, float)):
        return _dtype(e[1], "biuf").type(e[2])
    if tag == "a" and isinstance(e[2], list) and isinstance(e[3], list):
        return np.array(e[3], dtype=_dtype(e[1], "biuf")).reshape([int(x) for x in e[2]])
    if tag == "o" and isinstance(e[1], list) and all(type(s) is int and s >= 0 for s in e[1]):
        items = [_decode(x, arrays) for x in e[2]]
        a = np.empty(len(items), dtype=object)
        a[:] = items
        return a.reshape(e[1])
    raise ValueError(f"malformed sandbox result (tag {tag!r})")


# ------------------------------------------------------------------------------------------------ the child
def _resolve(target: str):
    import importlib
    mod, _, name = target.partition(":")
    return getattr(importlib.import_module(mod), name)


def _child(fn, args: list, out_dir: str, timeout: float, mem: int) -> None:
    """In the forked child: limits, the call, the result files. Never returns."""
    code = 3
    try:
        import gc
        gc.disable()  # short-lived; what a parser allocates is freed at exit
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(timeout) + 5)  # a backstop should the helper itself be killed before its deadline
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # the helper's stdout is its pipe to the parent; HDF5 may print diagnostics
            os.dup2(devnull, fd)
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if mem:
            lim = mem if hard == resource.RLIM_INFINITY else min(mem, hard)
            resource.setrlimit(resource.RLIMIT_AS, (lim, hard))
        out = Out(out_dir)
        try:
            doc = _encode(fn(out, *args), out)
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


def _wait(pid: int, timeout: float) -> tuple[str, int]:
    """Waits for the child; ("exit", code), ("signal", number) or ("timeout", 0) after killing it."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        delay = 0.0005
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout", 0
            if pidfd is not None:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.WEXITSTATUS(status)


def _warm_up() -> None:
    """Everything a child would otherwise initialise on first use (lazy imports of h5py and numpy, HDF5's type
    and filter tables), done once in the helper: dumps a small file of our own with every kind of object."""
    import h5py
    d = tempfile.mkdtemp(prefix="spikformer-sandbox-warm-")
    try:
        path = os.path.join(d, "warm.h5")
        with h5py.File(path, "w") as f:
            f.attrs["s"], f.attrs["i"] = "x", 1
            g = f.create_group("g")
            g.create_dataset("big", data=np.zeros(1000, np.float32), compression="gzip")
            g.create_dataset("small", data=np.arange(3))
            g.create_dataset("str", data="x", dtype=h5py.string_dtype())
            g.create_dataset("strs", data=[["a", "b"]], dtype=h5py.string_dtype())
            g.create_dataset("num", data=1.5)
        out = Out(d)
        doc = json.dumps(_encode(hdf5_dump(out, path), out))
        out.close()
        _decode(json.loads(doc), _Arrays(d))
    except Exception:  # noqa: BLE001 - only an optimisation
        pass
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _serve() -> None:
    """The helper: one JSON request per line on stdin, one JSON answer per line on the original stdout."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints (of imported modules) must not reach the protocol pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches it, not us
    import h5py
    try:  # no HDF5 filter plugins: a file must not make the library load a shared object from disk
        from h5py import h5pl
        while h5pl.size():
            h5pl.remove(0)
    except Exception:  # noqa: BLE001
        pass
    _warm_up()
    import gc
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
            status, value = _wait(pid, float(req["timeout"]))
            ans = {"status": status, "value": value}
        except Exception as e:  # noqa: BLE001
            ans = {"status": "helper-error", "value": 0, "message": _one_line(f"{type(e).__name__}: {e}")}
        ans["seconds"] = round(time.perf_counter() - t0, 4)
        proto.write(json.dumps(ans) + "\n")


# The helper imports only this torch-free package (ground) with the repository root first on its path.
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from ground import sandbox; sandbox._serve()"


# ------------------------------------------------------------------------------------------------ the parent
class _Helper:
    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, str(ROOT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True, cwd=str(ROOT))
        self.pid = os.getpid()
        self.buf = b""

    def ask(self, req: dict, limit: float) -> dict | str:
        """Sends one request; its answer, "dead" if the helper went away, "silent" after `limit` seconds."""
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:  # BrokenPipeError: the helper is gone
            return "dead"
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + limit
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return "silent"
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return "dead"
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def close(self, wait: float = 2.0):
        """Closes the request pipe (the helper exits); kills the helper and its child after `wait` seconds."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=wait)
        except Exception:  # noqa: BLE001
            pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the helper and a running child
            except OSError:
                self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout,):
            try:
                f.close()
            except OSError:
                pass


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
                    return _decode(json.load(f), _Arrays(out_dir))
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


# ------------------------------------------------------------------------------------------------ HDF5
class H5Dataset:
    """A dataset read in the child: `ds[()]` is its value as h5py returns it (ndarray, numpy scalar, bytes)."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, key):
        if key != ():
            raise TypeError("only ds[()] is supported")
        return self.value


class H5Group(dict):
    """A group read in the child: a dict of its members (H5Group or H5Dataset) with `attrs` (a dict)."""

    def __init__(self, attrs: dict, members: dict):
        super().__init__(members)
        self.attrs = attrs


def has_hdf5_signature(path) -> bool:
    """Whether `path` carries the HDF5 signature where the library looks for it (offset 0, 512, 1024, ...);
    plain Python, so that nothing untrusted reaches the library in this process."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        off = 0
        while off + len(HDF5_SIGNATURE) <= size:
            f.seek(off)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            off = 512 if off == 0 else off * 2
    return False


def _value(v):
    if isinstance(v, np.ndarray) and v.dtype.kind == "O":
        for x in v.flat:
            if not isinstance(x, (bytes, str)):
                raise TypeError(f"unsupported HDF5 element type {type(x).__name__}")
    elif not isinstance(v, (np.ndarray, np.generic, bytes, str)):
        raise TypeError(f"unsupported HDF5 value type {type(v).__name__}")
    return v


def hdf5_dump(out: Out, path: str, roots: list | None = None):
    """In the child: the file's root attributes and the members named in `roots` (all when None), recursively;
    groups as {"attrs", "members"} dicts, datasets as {"value"}. Only hard links are followed; external and
    soft links, virtual datasets and datasets stored in external files are refused (they would make the library
    read other files)."""
    import h5py

    budget = [MAX_OBJECTS]

    def spend(n=1):
        budget[0] -= n
        if budget[0] < 0:
            raise ValueError(f"more than {MAX_OBJECTS} HDF5 objects")

    def attrs(obj):
        d = {}
        for k in obj.attrs.keys():
            spend()
            d[k] = _value(obj.attrs[k])
        return d

    def dataset(ds):
        dcpl = ds.id.get_create_plist()
        if dcpl.get_layout() == h5py.h5d.VIRTUAL or dcpl.get_external_count():
            raise ValueError(f"dataset {ds.name} refused: it refers to other files (virtual or external storage)")
        return {"value": out.keep(_value(ds[()]))}

    def group(g, depth, names=None):
        if depth > MAX_DEPTH:
            raise ValueError(f"HDF5 groups nested deeper than {MAX_DEPTH}")
        members = {}
        for k in g.keys():
            if names is not None and k not in names:
                continue
            spend()
            if g.id.links.get_info(k.encode()).type != h5py.h5l.TYPE_HARD:
                raise ValueError(f"link {g.name.rstrip('/')}/{k} refused: soft and external links are not followed")
            obj = g[k]
            if isinstance(obj, h5py.Group):
                members[k] = group(obj, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                members[k] = dataset(obj)
            else:
                raise ValueError(f"unsupported HDF5 object {g.name.rstrip('/')}/{k}")
        return {"attrs": attrs(g), "members": members}

    with h5py.File(path, "r") as f:
        return group(f, 0, None if roots is None else set(roots))


def _tree(d) -> H5Group | H5Dataset:
    if "members" in d:
        return H5Group(d["attrs"], {k: _tree(v) for k, v in d["members"].items()})
    return H5Dataset(d["value"])


HDF5_DUMP = "ground.sandbox:hdf5_dump"  # what read_hdf5 runs in the child (tests point it at a crash)


def read_hdf5(path, roots: list | None = None, timeout: float | None = None) -> H5Group:
    """The HDF5 file `path` parsed in a child process (hdf5_dump): its root group with its attributes and the
    top-level members named in `roots` (all when None). Raises SandboxError."""
    path = os.fspath(path)
    timeout = deadline_for(path) if timeout is None else timeout
    tree = run(HDF5_DUMP, str(Path(path).resolve()), None if roots is None else list(roots),
               timeout=timeout, memory=memory_for(path), what="HDF5 parser")
    return _tree(tree)


def read_hdf5_or_raise(path, roots: list | None, error_cls: type, unreadable: str) -> H5Group:
    """read_hdf5 for a reader of untrusted files: its failures become the reader's `error_cls` with one line,
    "`unreadable` (parser message)" when the parser raised, "PATH: crash/timeout; the file is malformed or
    forged" otherwise."""
    try:
        return read_hdf5(path, roots=roots)
    except SandboxError as e:
        if e.kind == "error":
            raise error_cls(f"{unreadable} ({e})") from None
        raise error_cls(f"{path}: {e}; the file is malformed or forged") from None
