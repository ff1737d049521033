"""Malformed files never crash a reader: a small seeded sample of the cases bench/fuzzing/fuzz_readers.py runs by the
thousand (bit flips, byte overwrites, truncations, insertions, deletions, JSON value swaps, structural NIR graph
mutations), each of which must end in a correct result or the reader's documented one-line error within the time
bound. The definition of 'handled' lives in bench/fuzzing/fuzz_readers.py (classify)."""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.fuzzing import fuzz_readers as F  # noqa: E402

CASES = 30  # per reader
TIMEOUT = 60.0  # seconds per case (generous: the machine is shared)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return F.make_samples(tmp_path_factory.mktemp("fuzz") / "samples")


@pytest.fixture(scope="module")
def runner(samples):
    """One worker process for all cases: a reader that crashes or hangs in C code fails the test instead of
    taking pytest down with it."""
    r = F.IsolatedRunner(samples, seed=0, timeout=TIMEOUT, mem_gb=8.0, grace=30.0)
    yield r
    r.close()


@pytest.mark.parametrize("reader", sorted(F.READERS))
def test_reader_handles_malformed_input(runner, reader):
    recs = [runner.run(reader, i) for i in range(CASES)]
    bad = [r for r in recs if not F.handled(r)]
    assert not bad, "unhandled cases:\n" + "\n".join(
        f"  case {r['index']} {r['case']}: {r['outcome']} {r.get('error')}: {r.get('message')} {r.get('where', '')}"
        for r in bad)
    assert sum(r["outcome"] == "refused" for r in recs) > 0  # the sample does reach the error paths


def test_unmutated_samples_read_correctly(samples):
    """Every sample file is valid: the readers return a correct result for it."""
    for name, reader in F.READERS.items():
        arg = {"checkpoint": samples / "model.pt", "nir": samples / "model.nir",
               "nir_graph": F._nir_graph(samples), "network": samples / "export" / "network.h5",
               "network_forged": samples / "export" / "network.h5",
               "export": samples / "export", "npz": samples / "data.npz", "cifar": samples / "data_batch",
               "events": f"events:{samples / 'events'}", "npz_stream": samples / "data.npz",
               "cifar100": samples / "cifar100", "imagenet": samples / "imagenet",
               "events_stream": f"events:{samples / 'events'}"}[name]
        assert F.classify(reader, lambda: reader.call(arg)) == {"outcome": "ok"}, name


def test_mutations_are_seeded_and_change_the_bytes():
    data = bytes(range(256)) * 64
    for kind in F.BYTE_MUTATIONS:
        a, da = F.mutate_bytes(data, random.Random(f"x:{kind}"), kind)
        b, db = F.mutate_bytes(data, random.Random(f"x:{kind}"), kind)
        assert a == b and da == db and da["mutation"] == kind
        assert a != data
    doc = b'{"a": {"b": [1, 2, 3]}, "c": "d"}'
    m1, d1 = F.mutate_json(doc, random.Random(1))
    assert (m1, d1) == F.mutate_json(doc, random.Random(1)) and m1 != doc and d1["mutation"] == "json-value"


class _Err(ValueError):
    pass


def _reader(fn):
    return F.Reader("t", "t", lambda: (_Err,), None, fn)


def test_classify_definitions():
    def raise_(e):
        def f():
            raise e
        return f
    assert F.classify(_reader(lambda: 1), lambda: 1)["outcome"] == "ok"
    assert F.classify(_reader(None), raise_(_Err("one line")))["outcome"] == "refused"
    assert F.classify(_reader(None), raise_(_Err("two\nlines")))["outcome"] == "message"
    assert F.classify(_reader(None), raise_(_Err("")))["outcome"] == "message"
    r = F.classify(_reader(None), raise_(KeyError("x")))
    assert r["outcome"] == "exception" and r["error"] == "KeyError"
    assert F.classify(_reader(None), raise_(MemoryError()))["outcome"] == "exception"

    def bad_check(_):
        raise AssertionError("wrong type")
    rd = F.Reader("t", "t", lambda: (_Err,), None, None, bad_check)
    assert F.classify(rd, lambda: 1)["outcome"] == "bad-result"


def test_time_bound_stops_a_hanging_reader_even_through_except_exception():
    def hang():
        try:
            while True:
                time.sleep(0.01)
        except Exception:  # a reader's catch-all must not swallow the bound
            return "swallowed"
    t0 = time.perf_counter()

    def go():
        with F.time_bound(0.3):
            return hang()
    r = F.classify(_reader(None), go)
    assert r["outcome"] == "timeout" and time.perf_counter() - t0 < 5


def test_isolated_runner_reports_crashes_and_hangs_and_carries_on(tmp_path, monkeypatch):
    """The worker process: a case that kills it is a 'crash', one that never answers (SIGALRM blocked) a
    'timeout' from the watchdog; the worker is restarted and the next case runs."""
    monkeypatch.setenv("FUZZ_READERS_SELFTEST", "1")
    runner = F.IsolatedRunner(tmp_path, seed=0, timeout=1.0, mem_gb=0, grace=2.0, startup=60.0)
    try:
        outcomes = [runner.run(name, 0)["outcome"] for name in
                    ("selftest-ok", "selftest-crash", "selftest-ok", "selftest-hang", "selftest-ok")]
    finally:
        runner.close()
    assert outcomes == ["ok", "crash", "ok", "timeout", "ok"]
