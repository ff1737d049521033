"""Untrusted HDF5 is parsed in a child process (ground.sandbox): a parser that crashes or hangs ends in the
reader's typed one-line error within its deadline, the caller survives, and what the child sends back is data
(JSON and .npy read without pickle), never objects. Includes two forged network.h5 files (tests/data, found by
bench/fuzzing/fuzz_readers.py: network_forged cases 977 and 710 of seed 0) that make HDF5 2.0 segfault and loop forever
when parsed in process."""
from __future__ import annotations

import gzip
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hw_backends.nir import nir_io
from hw_backends.loihi import network_file
from ground import hdf5_read, sandbox, sandbox_codec

DATA = Path(__file__).resolve().parent / "data"
T = "tests.sandbox_targets"


def _one_line(e: Exception) -> str:
    msg = str(e)
    assert msg.strip() and "\n" not in msg, repr(msg)
    return msg


# ---------------------------------------------------------------------------------------------- the mechanism
def test_values_come_back_as_they_were():
    v = sandbox.run(f"{T}:values")
    assert v["s"] == "text" and v["b"] == b"\x00\xffbytes" and v["i"] == 2 ** 70 and v["f"] == 1.5
    assert np.isnan(v["nan"]) and v["none"] is None and v["t"] is True
    assert v["list"] == [1, "a", [2.5]] and v["tuple"] == (1, 2) and v["nested"]["deeper"]["x"] == 2.0
    for k, want in (("i64", np.int64(-3)), ("f32", np.float32(0.1)), ("u8", np.uint8(255)),
                    ("bool_", np.bool_(True)), ("c128", np.complex128(1 + 2j))):
        assert type(v[k]) is type(want) and v[k] == want, k
    assert v["bytes_"] == b"xy"
    assert v["small"].dtype == np.int16 and v["small"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert v["empty"].shape == (0, 4)
    assert v["big"].dtype == np.float32 and v["big"].shape == (100, 100)
    assert np.array_equal(v["big"].ravel(), np.linspace(0, 1, 10_000, dtype=np.float32))
    assert np.array_equal(v["kept"], np.arange(20_000))
    assert v["fixed_str"].tolist() == [b"ab", b"c"]
    assert v["objs"].dtype == object and v["objs"].tolist() == [[b"x", b"y"], [b"z", "w"]]


def test_a_crash_is_a_typed_error_and_the_caller_goes_on():
    sandbox.run(f"{T}:echo", 1)
    helper = sandbox._helper.proc.pid
    t0 = time.monotonic()
    with pytest.raises(sandbox.SandboxError) as ei:
        sandbox.run(f"{T}:crash", timeout=30)
    assert ei.value.kind == "crash" and "SIGSEGV" in _one_line(ei.value)
    assert time.monotonic() - t0 < 10
    assert sandbox.run(f"{T}:echo", [2]) == [2]
    assert sandbox._helper.proc.pid == helper  # the helper never parses: a crash does not touch it


def test_a_hang_ends_at_the_deadline():
    t0 = time.monotonic()
    with pytest.raises(sandbox.SandboxError) as ei:
        sandbox.run(f"{T}:hang", timeout=1.0)
    took = time.monotonic() - t0
    assert ei.value.kind == "timeout" and "did not finish within 1 s" in _one_line(ei.value)
    assert 0.9 < took < 10
    assert sandbox.run(f"{T}:echo", "ok") == "ok"


def test_exceptions_and_exits_are_reported_in_one_line():
    with pytest.raises(sandbox.SandboxError) as ei:
        sandbox.run(f"{T}:fail")
    assert ei.value.kind == "error" and ei.value.error_type == "KeyError"
    assert _one_line(ei.value).startswith("KeyError: ")
    with pytest.raises(sandbox.SandboxError) as ei:
        sandbox.run(f"{T}:exit_quietly")
    assert ei.value.kind == "crash" and "exit code 7" in _one_line(ei.value)


def test_the_address_space_limit_holds():
    with pytest.raises(sandbox.SandboxError) as ei:
        sandbox.run(f"{T}:allocate", 4.0, memory=1 << 30)
    assert ei.value.kind == "error" and ei.value.error_type == "MemoryError"
    assert sandbox.run(f"{T}:allocate", 0.01, memory=1 << 30) == int(0.01 * 2 ** 30)


def test_a_full_temporary_directory_is_an_oserror_not_a_bad_file():
    import errno
    with pytest.raises(OSError) as ei:
        sandbox.run(f"{T}:disk_full")
    assert not isinstance(ei.value, sandbox.SandboxError) and ei.value.errno == errno.ENOSPC
    assert "temporary files" in ei.value.destination


def test_the_parent_never_unpickles_what_the_child_wrote(tmp_path):
    marker = tmp_path / "payload-ran"
    with pytest.raises(sandbox.SandboxError) as ei:
        sandbox.run(f"{T}:pickled_array", str(marker))
    assert ei.value.kind == "crash" and "malformed result" in str(ei.value)
    assert not marker.exists()
    # hand-made documents: no object or structured dtype, no reference outside the arrays file
    (tmp_path / "arrays.bin").write_bytes(bytes(64))
    arrays = sandbox_codec.Arrays(str(tmp_path))
    assert sandbox_codec.decode(["n", "<f8", [2, 4], 0, 64], arrays).shape == (2, 4)
    for doc in (["n", "|O", [1], 0, 8], ["n", "|V8", [1], 0, 8], ["n", [["a", "<f8"]], [1], 0, 8],
                ["n", "<f8", [9], 0, 72], ["n", "<f8", [1], -8, 8], ["n", "<f8", [2], 0, 8], ["n", "<f8", [-1], 0, -8],
                ["x", "O", 1], ["a", "|O", [1], [1]], ["q", 1], "n", ["d", [[["l", []], ["v", None]]]]):
        with pytest.raises((ValueError, TypeError, IndexError)):
            sandbox_codec.decode(doc, arrays)


def test_an_interrupted_wait_leaves_a_working_sandbox():
    """A caller's alarm (the fuzz harness' time bound) or Ctrl-C while the child runs: the exception reaches the
    caller at once, the busy helper is replaced, the next call works."""
    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(Alarm):
            sandbox.run(f"{T}:hang", timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - t0 < 10
    assert sandbox.run(f"{T}:echo", 3) == 3


def test_links_to_other_files_are_not_followed(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.arange(3)
    for kind in ("external", "soft"):
        p = tmp_path / f"{kind}.h5"
        with h5py.File(p, "w") as f:
            f["node/x"] = np.arange(2)
            f["node/link"] = h5py.ExternalLink(str(other), "/secret") if kind == "external" else \
                h5py.SoftLink("/node/x")
        with pytest.raises(sandbox.SandboxError) as ei:
            hdf5_read.read_hdf5(p, roots=["node"])
        assert ei.value.kind == "error" and "refused" in _one_line(ei.value)


def test_read_hdf5_matches_h5py(tmp_path):
    p = tmp_path / "f.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "x"
        f.attrs["version"] = 3
        f["a/b/w"] = np.arange(12, dtype=np.int32).reshape(3, 4)
        f["a/s"] = "text"
        f["a/b"].attrs["name"] = "b"
        f["skipped"] = np.zeros(3)
    g = hdf5_read.read_hdf5(p, roots=["a"])
    with h5py.File(p, "r") as f:
        assert g.attrs == dict(f.attrs) and type(g.attrs["version"]) is type(f.attrs["version"])
        assert list(g) == ["a"] and sorted(g["a"]) == sorted(f["a"]) and g["a"]["b"].attrs == {"name": "b"}
        assert np.array_equal(g["a"]["b"]["w"][()], f["a/b/w"][()]) and g["a"]["b"]["w"][()].dtype == np.int32
        assert g["a"]["s"][()] == f["a/s"][()] == b"text"


def test_the_signature_check_reads_no_hdf5(tmp_path):
    (tmp_path / "t").write_bytes(b"hello")
    assert not hdf5_read.has_hdf5_signature(tmp_path / "t")
    (tmp_path / "e").write_bytes(b"")
    assert not hdf5_read.has_hdf5_signature(tmp_path / "e")
    with h5py.File(tmp_path / "u.h5", "w", userblock_size=1024) as f:
        f["x"] = 1
    assert hdf5_read.has_hdf5_signature(tmp_path / "u.h5")


# ---------------------------------------------------------------------------------------------- the readers
def _network_file(path: Path) -> Path:
    """An HDF5 file with a valid spikformer checksum header (what a forger can make)."""
    with h5py.File(path, "w", userblock_size=network_file.USERBLOCK) as f:
        f.attrs["format"] = network_file.FORMAT
    with open(path, "r+b") as fh:
        header = network_file.HEADER_MAGIC + network_file._body_sha256(fh).encode() + b"\n"
        fh.seek(0)
        fh.write(header.ljust(network_file.USERBLOCK, b"\0"))
    return path


@pytest.mark.parametrize("behaviour,words", [("crash", "crashed (SIGSEGV)"), ("hang", "did not finish within 2 s")])
def test_readers_turn_a_crashing_or_hanging_parser_into_their_error(tmp_path, monkeypatch, behaviour, words):
    net = _network_file(tmp_path / "network.h5")
    with h5py.File(tmp_path / "model.nir", "w") as f:
        f["node/type"] = "NIRGraph"
    monkeypatch.setattr(hdf5_read, "HDF5_DUMP", f"{T}:{behaviour}")
    monkeypatch.setenv(hdf5_read.TIMEOUT_ENV, "2")
    for read, path, err in ((network_file.read_network, net, network_file.NetworkFileError),
                            (nir_io.read_nir, tmp_path / "model.nir", nir_io.NIRReadError)):
        t0 = time.monotonic()
        with pytest.raises(err) as ei:
            read(path)
        msg = _one_line(ei.value)
        assert words in msg and "HDF5 parser" in msg and "malformed or forged" in msg and str(path) in msg
        assert time.monotonic() - t0 < 15


@pytest.mark.parametrize("name", ["forged_network_segv.h5.gz", "forged_network_hang.h5.gz"])
def test_forged_network_files_that_break_hdf5_are_refused(tmp_path, monkeypatch, name):
    """Real files: in process, HDF5 2.0 segfaults on the first and loops forever on the second (their checksum
    header is valid, so they reach the library)."""
    path = tmp_path / "network.h5"
    path.write_bytes(gzip.decompress((DATA / name).read_bytes()))
    network_file.check_integrity(path)  # a forger's file: the checksum matches
    monkeypatch.setenv(hdf5_read.TIMEOUT_ENV, "3")
    t0 = time.monotonic()
    with pytest.raises(network_file.NetworkFileError) as ei:
        network_file.read_network(path)
    _one_line(ei.value)
    assert time.monotonic() - t0 < 20

