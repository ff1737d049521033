"""Functions tests/test_sandbox.py runs in ground.sandbox's child process (imported there by name, so this
module imports nothing heavy: no torch)."""
from __future__ import annotations

import os
import signal
import time

import numpy as np


def echo(out, value):
    return value


def values(out):
    """One of every kind of value the codec carries."""
    return {
        "s": "text", "b": b"\x00\xffbytes", "i": 2 ** 70, "f": 1.5, "nan": float("nan"), "none": None, "t": True,
        "list": [1, "a", [2.5]], "tuple": (1, 2),
        "i64": np.int64(-3), "f32": np.float32(0.1), "u8": np.uint8(255), "bool_": np.bool_(True),
        "c128": np.complex128(1 + 2j), "bytes_": np.bytes_(b"xy"),
        "small": np.arange(6, dtype=np.int16).reshape(2, 3), "empty": np.zeros((0, 4)),
        "big": np.linspace(0, 1, 10_000, dtype=np.float32).reshape(100, 100),
        "kept": out.keep(np.arange(20_000, dtype=np.int64)),
        "fixed_str": np.array([b"ab", b"c"]), "objs": np.array([[b"x", b"y"], [b"z", "w"]], dtype=object),
        "nested": {"deeper": {"x": np.float64(2.0)}},
    }


def crash(out, *args):
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(out, *args):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])  # like a parser stuck in C code
    time.sleep(3600)


def fail(out, *args):
    raise KeyError("no such object\nsecond line")


def exit_quietly(out, *args):
    os._exit(7)


def allocate(out, gib):
    return np.ones(int(gib * 2 ** 30), dtype=np.uint8).sum()


def disk_full(out, *args):
    import errno

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass
    out.file = Full()
    return out.keep(np.zeros(100_000))


class _Payload:
    """Unpickling this would create the file named by MARKER."""
    MARKER = ""

    def __reduce__(self):
        return (open, (self.MARKER, "w"))


def pickled_array(out, marker):
    """A compromised child: its arrays file holds a pickle, and the reference to it claims an object array."""
    import pickle
    import sys
    _Payload.MARKER = marker
    data = pickle.dumps(np.array([_Payload()], dtype=object))
    with open(os.path.join(out.dir, "arrays.bin"), "wb") as f:
        f.write(data)
    return sys.modules[type(out).__module__].ArrayRef("|O", [1], 0, 8)
