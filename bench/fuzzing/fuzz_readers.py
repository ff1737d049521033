"""Fuzzing of every reader of untrusted files: seeded mutations of valid files, each fed to its reader.

usage: .venv/bin/python bench/fuzzing/fuzz_readers.py [--cases 2000] [--readers checkpoint,nir,...] [--seed 0]
                                              [--timeout 30] [--in-process] [--out bench/results]
       .venv/bin/python bench/fuzzing/fuzz_readers.py --only network_forged:710,network_forged:977 [--seed 0]
                                              (re-runs those cases, prints one JSON record each, writes nothing)

Writes bench/results/fuzz.json and fuzz.md: cases per reader, how many were handled and how, and every
unhandled case (up to --examples per reader) with what it takes to reproduce it (reader, seed, case index).
tests/test_fuzz.py imports this module and runs a small sample of the same cases.

Readers (READERS) and the valid files they are fed (make_samples, from a small randomized Spikformer):
    checkpoint  spikformer.checkpoint.load_checkpoint      model.pt (torch zip)           CheckpointError
    nir         hw_backends.nir.nir_io.read_nir (+ from_nir)        model.nir (gzip HDF5)         NIRReadError
    nir_graph   hw_backends.nir.nir_io.from_nir on NIRGraph objects with structural mutations   NIRReadError
    network     hw_backends.loihi.network_file.read_network network.h5 (HDF5 with a checksum header)
                                                                                          NetworkFileError
    network_forged  the same reader on network.h5 files whose body is mutated and whose checksum header is
                recomputed (what a forger could send): exercises the HDF5 parser and read_network's checks
                (read_network and read_nir run HDF5 in ground.sandbox's child process, so a parser that
                crashes or hangs there ends in the reader's error, a refusal)
                                                                                          NetworkFileError
    export      hw_backends.loihi.runnable.load_export      the export directory with one of network.h5,
                                                            manifest.json, quantization.json mutated
                                                                                          NetworkFileError
    npz         spikformer.data (npz:FILE data spec)        data.npz, stored and deflated DataError
    cifar       spikformer.data CIFAR-10 batch reader       a python-pickle batch         DataError
    events      spikformer.data (events:DIR data spec)      a SpikingJelly events_np folder (train/test, two
                classes, .npz files stored and deflated) with one file mutated (its bytes, or one array's
                bytes re-zipped with valid CRCs), read with the inferred sensor size or with
                events:DIR:16x16                                                          DataError
    npz_stream  spikformer.datasets.open_dataset('npz:FILE'), every sample of both splits read
                                                            data.npz, stored and deflated DataError
    cifar100    spikformer.datasets.open_dataset('cifar100:DIR'), every sample of both splits read
                                                            a cifar-100-python folder with train, test or meta
                                                            mutated                        DataError
    imagenet    spikformer.datasets.open_dataset('imagenet:DIR'), every sample of both splits read
                                                            an ImageNet-layout folder (JPEG, PNG, a text file)
                                                            with one file mutated          DataError
    events_stream  spikformer.datasets.open_dataset('events:DIR'), every sample of both splits read
                                                            the events sample above, mutated as for events
                                                                                          DataError

Mutations (seeded, `mutate`): bit flips (1-8 bits), byte overwrites (1-16 bytes, random or boundary values),
truncations, insertions (1-64 bytes), deletions (1-64 bytes); offsets are uniform over the file half the time
and within its first or last 4 KiB (headers, superblocks, zip directories) otherwise. JSON files also get
value mutations (a random value in the document replaced by a value of another type). nir_graph mutates the
graph object: nodes or edges dropped or added, metadata and parameters replaced by wrong types, NaN, wrong
shapes.

What counts as handled (`classify`), precisely:
    ok        the reader returned within the time bound and its result passed the reader's own check (the
              right type; graphs validate), e.g. a mutation in padding, in unchecked data or in a weight value.
    refused   the reader raised, within the time bound, an instance of one of its documented error types
              (`Reader.errors`: a UserError subclass or the module's error type) whose message is one
              non-empty line.
Everything else is unhandled:
    exception any other exception type (a raw KeyError, RuntimeError, MemoryError, ... escaping the reader);
    message   a documented error type whose message is empty or spans several lines;
    bad-result the reader returned something that fails the result check;
    timeout   the case ran past the time bound (a SIGALRM in the process, or the parent's watchdog);
    crash     the worker process died (a signal such as SIGSEGV, or an exit) while running the case.
By default the cases run in a worker subprocess (with an address-space limit, --mem-gb) that the parent
restarts after a crash or a hang, so one bad case cannot stop the run; --in-process runs them in this process
with only the SIGALRM bound (tests/test_fuzz.py uses the worker too).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
if sys.path[:1] != [str(ROOT)]:  # first, so that `tests` is this repository's (site-packages may hold another)
    sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"

from ground.isolated import LineChild  # noqa: E402 (needs ROOT on sys.path)

# the small model every sample file comes from (spikformer.synthetic.randomized_model)
SAMPLE_MODEL = dict(preset="digits-2-64", seed=3, attn_drive=1.0, img_size=8, embed_dim=16, num_heads=2, depth=1,
                    T=2)
EXPORT_MUTATED = ("network.h5", "manifest.json", "quantization.json")
EVENT_SAMPLE_FILES = (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b"))
EVENT_SAMPLE = dict(img_size=8, in_channels=2, seed=0, T=2)  # sensor 16x16 (inferred or given), binned to 8x8
BYTE_MUTATIONS = ("bitflip", "overwrite", "truncate", "insert", "delete")
EDGE_WINDOW = 4096
OUTCOMES_HANDLED = ("ok", "refused")
OUTCOMES_UNHANDLED = ("exception", "message", "bad-result", "timeout", "crash")


class CaseTimeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that a reader's `except Exception` cannot swallow it."""


# ------------------------------------------------------------------------------------------------ mutations
def _offset(n: int, rng: random.Random) -> int:
    """An offset in [0, n): uniform half the time, else within the first or last EDGE_WINDOW bytes."""
    if n <= 1:
        return 0
    r = rng.random()
    if r < 0.5:
        return rng.randrange(n)
    w = min(EDGE_WINDOW, n)
    return rng.randrange(w) if r < 0.75 else n - 1 - rng.randrange(w)


def mutate_bytes(data: bytes, rng: random.Random, kind: str | None = None) -> tuple[bytes, dict]:
    """One seeded byte-level mutation of `data`; returns (mutated bytes, description)."""
    kind = kind or rng.choice(BYTE_MUTATIONS)
    b = bytearray(data)
    n = len(b)
    if kind == "bitflip":
        bits = [(_offset(n, rng), rng.randrange(8)) for _ in range(rng.randint(1, 8))]
        for pos, bit in bits:
            b[pos] ^= 1 << bit
        return bytes(b), {"mutation": kind, "bits": bits}
    if kind == "overwrite":
        pos = _offset(n, rng)
        k = min(rng.randint(1, 16), n - pos)
        fill = rng.choice(["random", "zero", "ff", "7f", "80"])
        new = bytes(rng.randrange(256) for _ in range(k)) if fill == "random" else \
            bytes([{"zero": 0, "ff": 255, "7f": 127, "80": 128}[fill]]) * k
        b[pos:pos + k] = new
        return bytes(b), {"mutation": kind, "offset": pos, "length": k, "fill": fill}
    if kind == "truncate":
        keep = rng.randrange(n) if rng.random() < 0.5 else max(0, n - 1 - rng.randrange(min(EDGE_WINDOW, n)))
        return bytes(b[:keep]), {"mutation": kind, "keep": keep, "of": n}
    if kind == "insert":
        pos = _offset(n + 1, rng)
        new = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        b[pos:pos] = new
        return bytes(b), {"mutation": kind, "offset": pos, "length": len(new)}
    if kind == "delete":
        pos = _offset(n, rng)
        k = min(rng.randint(1, 64), n - pos)
        del b[pos:pos + k]
        return bytes(b), {"mutation": kind, "offset": pos, "length": k}
    raise ValueError(f"unknown mutation {kind!r}")


_JUNK = (None, -1, 0, 2 ** 63, 1e308, float("nan"), "", "x" * 3, [], {}, True, [1, 2], {"a": 1})


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate_json(data: bytes, rng: random.Random) -> tuple[bytes, dict]:
    """A random value of a JSON document replaced by a value of another type (or a key removed)."""
    doc = json.loads(data)
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return mutate_bytes(data, rng)
    path = paths[rng.randrange(len(paths))]
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and rng.random() < 0.25:
        del parent[path[-1]]
        what = "removed"
    else:
        junk = _JUNK[rng.randrange(len(_JUNK))]
        parent[path[-1]] = copy.deepcopy(junk)
        what = f"set to {junk!r}"
    return json.dumps(doc, indent=1, sort_keys=True).encode(), {"mutation": "json-value",
                                                                "path": [str(p) for p in path], "what": what}


def mutate_file(name: str, data: bytes, rng: random.Random) -> tuple[bytes, dict]:
    if name.endswith(".json") and rng.random() < 0.3:
        return mutate_json(data, rng)
    return mutate_bytes(data, rng)


# ------------------------------------------------------------------------------------------------ samples
def make_samples(dest) -> Path:
    """The valid files every reader is fuzzed from, written into `dest` (deterministic)."""
    import numpy as np

    from hw_backends.nir.nir_io import write_nir
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    from hw_backends.loihi.compile import compile_graph
    from hw_backends.loihi.export import write_artifacts
    from ground.atomic import atomic_dir
    from spikformer.checkpoint import save_checkpoint
    from spikformer.synthetic import randomized_model

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kw = dict(SAMPLE_MODEL)
    model = randomized_model(kw.pop("preset"), **kw)
    save_checkpoint(dest / "model.pt", model, {"dataset": {"spec": "digits"}, "test_accuracy": 0.5})
    conv = convert(dest / "model.pt", ConversionOptions(ssa="binary"))
    write_nir(dest / "model.nir", conv.lowered, conv.model_info())
    compiled = compile_graph(convert(dest / "model.pt", ConversionOptions(target="loihi", ssa="graded")).lowered)
    with atomic_dir(dest / "export") as stage:
        write_artifacts(stage, compiled, conv.model_info(), {"ssa_form": "graded"})
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(24, 8, 8), dtype=np.uint8)
    y = np.arange(24, dtype=np.int64) % 3
    np.savez(dest / "data.npz", x=x, y=y)
    np.savez_compressed(dest / "data_z.npz", x=x, y=y)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in y[:6]],
             b"data": rng.integers(0, 256, size=(6, 3072), dtype=np.uint8), b"filenames": [b"a.png"] * 6}
    (dest / "data_batch").write_bytes(pickle.dumps(batch, protocol=2))
    _cifar100_sample(dest / "cifar100", rng)
    _imagenet_sample(dest / "imagenet", rng)
    for i, (split, cls) in enumerate(EVENT_SAMPLE_FILES):  # SpikingJelly's events_np layout and dtypes
        n = 60 + 7 * i
        save = np.savez_compressed if i % 2 else np.savez
        d = dest / "events" / "events_np" / split / cls
        d.mkdir(parents=True, exist_ok=True)
        save(d / f"{cls}_0.npz", t=np.sort(rng.integers(0, 10 ** 6, n)).astype(">u4"),
             x=rng.integers(0, 16, n).astype(np.uint32), y=rng.integers(0, 16, n).astype(np.uint32),
             p=rng.integers(0, 2, n).astype(np.int64))
    return dest


def _cifar100_sample(d: Path, rng):
    """cifar-100-python as the original: protocol-2 pickles of dicts with bytes keys."""
    import numpy as np

    d.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 5), ("test", 3)):
        batch = {b"filenames": [b"a.png"] * n, b"batch_label": name.encode(),
                 b"fine_labels": [int(v) for v in rng.integers(0, 4, n)],
                 b"coarse_labels": [int(v) for v in rng.integers(0, 2, n)],
                 b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(4)], b"coarse_label_names": [b"a", b"b"]}
    (d / "meta").write_bytes(pickle.dumps(meta, protocol=2))


IMAGENET_SAMPLE_FILES = ("train/a/a0.JPEG", "train/b/b0.png", "val/a/a1.JPEG", "val/b/b1.jpg")


def _imagenet_sample(d: Path, rng):
    import numpy as np
    from PIL import Image

    for i, name in enumerate(IMAGENET_SAMPLE_FILES):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        w, h = (40, 30) if i % 2 else (27, 45)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(d / name)
    (d / "val" / "a" / "notes.txt").write_text("not an image")


# ------------------------------------------------------------------------------------------------ readers
@dataclass
class Reader:
    name: str
    function: str                       # what is called, for the report
    errors: tuple                       # documented error types (a refusal must be one of these)
    make_case: Callable                 # (samples dir, case dir, rng) -> (argument, description)
    call: Callable                      # argument -> result
    check: Callable = lambda r: None    # raises AssertionError if the result is not a correct result


def _file_case(*names):
    def make(samples: Path, case_dir: Path, rng: random.Random):
        name = names[rng.randrange(len(names))]
        data, desc = mutate_file(name, (samples / name).read_bytes(), rng)
        path = case_dir / Path(name).name
        path.write_bytes(data)
        return path, dict(desc, file=name)
    return make


def _forged_network_case(samples: Path, case_dir: Path, rng: random.Random):
    """network.h5 with its HDF5 body mutated and the checksum header recomputed, as a forger would: what
    reaches the HDF5 parser and read_network's own checks (a damaged file never gets past the checksum)."""
    import hashlib

    from hw_backends.loihi.network_file import HEADER_MAGIC, USERBLOCK
    data = (samples / "export" / "network.h5").read_bytes()
    body, desc = mutate_bytes(data[USERBLOCK:], rng)
    header = (HEADER_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n").ljust(USERBLOCK, b"\0")
    path = case_dir / "network.h5"
    path.write_bytes(header + body)
    return path, dict(desc, file="export/network.h5", checksum="recomputed")


def _events_case(samples: Path, case_dir: Path, rng: random.Random):
    """The sample events folder with one .npz mutated: half the time its bytes, half the time the bytes of one
    array (.npy header and data) inside it, re-zipped with valid CRCs (what reaches the .npy header checks and
    the event checks: dtypes, shapes, coordinates, polarity, timestamps). The spec gives the sensor size half the
    time."""
    import zipfile

    d = case_dir / "events"
    shutil.copytree(samples / "events", d)
    split, cls = EVENT_SAMPLE_FILES[rng.randrange(len(EVENT_SAMPLE_FILES))]
    name = f"events_np/{split}/{cls}/{cls}_0.npz"
    if rng.random() < 0.5:
        data, desc = mutate_bytes((d / name).read_bytes(), rng)
        (d / name).write_bytes(data)
    else:
        with zipfile.ZipFile(d / name) as zf:
            members = [(i, zf.read(i)) for i in zf.infolist()]
        k = rng.randrange(len(members))
        data, desc = mutate_bytes(members[k][1], rng)
        members[k] = (members[k][0], data)
        with zipfile.ZipFile(d / name, "w") as zf:
            for info, body in members:
                zf.writestr(info, body, compress_type=info.compress_type)
        desc = dict(desc, member=members[k][0].filename, rezipped=True)
    spec = f"events:{d}" + (":16x16" if rng.random() < 0.5 else "")
    return spec, dict(desc, file=name, spec=spec[len(f"events:{d}"):] or "inferred sensor")


def _folder_case(folder: str, names: tuple):
    """The sample folder `folder` with one of its files `names` mutated."""
    def make(samples: Path, case_dir: Path, rng: random.Random):
        d = case_dir / folder
        shutil.copytree(samples / folder, d)
        name = names[rng.randrange(len(names))]
        data, desc = mutate_bytes((d / name).read_bytes(), rng)
        (d / name).write_bytes(data)
        return d, dict(desc, file=f"{folder}/{name}")
    return make


def _export_case(samples: Path, case_dir: Path, rng: random.Random):
    d = case_dir / "export"
    shutil.copytree(samples / "export", d)
    name = EXPORT_MUTATED[rng.randrange(len(EXPORT_MUTATED))]
    data, desc = mutate_file(name, (d / name).read_bytes(), rng)
    (d / name).write_bytes(data)
    return d, dict(desc, file=name)


_NIR_CACHE: dict = {}


def _nir_graph(samples: Path):
    key = str(samples)
    if key not in _NIR_CACHE:
        from hw_backends.nir.nir_io import read_nir_graph
        _NIR_CACHE.clear()
        _NIR_CACHE[key] = read_nir_graph(samples / "model.nir")
    return _NIR_CACHE[key]


def _bad_array(rng, a):
    import numpy as np
    a = np.asarray(a)
    choice = rng.choice(["nan", "inf", "shape", "empty", "scalar", "string", "none", "huge"])
    if choice == "nan":
        out = np.array(a, dtype=np.float64, copy=True)
        if out.size:
            out.reshape(-1)[rng.randrange(out.size)] = np.nan
        return out, choice
    if choice == "inf":
        out = np.array(a, dtype=np.float64, copy=True)
        if out.size:
            out.reshape(-1)[rng.randrange(out.size)] = np.inf
        return out, choice
    if choice == "shape":
        return np.zeros(tuple(s + 1 for s in a.shape) or (3,)), choice
    if choice == "empty":
        return np.zeros((0,)), choice
    if choice == "scalar":
        return np.float64(rng.choice([0.0, -1.0, 1e300])), choice
    if choice == "string":
        return "abc", choice
    if choice == "none":
        return None, choice
    return np.full(a.shape, 1e300), choice


def _nir_graph_case(samples: Path, case_dir: Path, rng: random.Random):
    """A structural mutation of the NIRGraph read from the sample file (the file itself is not touched)."""
    import nir
    import numpy as np

    g = copy.deepcopy(_nir_graph(samples))
    names = sorted(g.nodes)
    kind = rng.choice(["drop-node", "drop-edge", "add-edge", "dup-edge", "graph-metadata", "node-param",
                       "node-metadata", "rename-node", "swap-type"])
    desc = {"mutation": kind}
    if kind == "drop-node":
        n = names[rng.randrange(len(names))]
        del g.nodes[n]
        desc["node"] = n
    elif kind == "drop-edge" and g.edges:
        i = rng.randrange(len(g.edges))
        desc["edge"] = list(g.edges[i])
        del g.edges[i]
    elif kind in ("add-edge", "dup-edge") and g.edges:
        e = (names[rng.randrange(len(names))], names[rng.randrange(len(names))]) if kind == "add-edge" else \
            g.edges[rng.randrange(len(g.edges))]
        g.edges.append(tuple(e))
        desc["edge"] = list(e)
    elif kind == "graph-metadata":
        keys = sorted(g.metadata)
        k = keys[rng.randrange(len(keys))]
        v = _JUNK[rng.randrange(len(_JUNK))] if rng.random() < 0.7 else "{not json"
        g.metadata[k] = copy.deepcopy(v)
        desc.update(key=k, value=repr(v))
    elif kind == "node-param":
        n = names[rng.randrange(len(names))]
        node = g.nodes[n]
        attrs = sorted(k for k, v in vars(node).items() if k not in ("metadata", "input_type", "output_type"))
        if attrs:
            k = attrs[rng.randrange(len(attrs))]
            v, how = _bad_array(rng, getattr(node, k))
            setattr(node, k, v)
            desc.update(node=n, param=k, value=how)
    elif kind == "node-metadata":
        n = names[rng.randrange(len(names))]
        node = g.nodes[n]
        md = dict(node.metadata or {})
        k = rng.choice(sorted(md) + ["ir_name", "role", "part"])
        md[k] = rng.choice(["{not json", '{"in_axes": 3}', "[]", '{"in_axes": ["a"], "out_axes": ["b"], '
                            '"sizes": {"a": 1e9, "b": -1}, "weight": "w"}', "", "other", 7])
        node.metadata = md
        desc.update(node=n, key=k, value=repr(md[k]))
    elif kind == "rename-node":
        n = names[rng.randrange(len(names))]
        g.nodes[n + "_renamed"] = g.nodes.pop(n)
        desc["node"] = n
    elif kind == "swap-type":
        n = names[rng.randrange(len(names))]
        node = g.nodes[n]
        shape = np.asarray(getattr(node, "output_type", {}).get("output", [1]) if
                           isinstance(getattr(node, "output_type", None), dict) else [1])
        g.nodes[n] = rng.choice([
            lambda: nir.Scale(scale=np.ones(shape)), lambda: nir.Affine(weight=np.eye(3), bias=np.zeros(3)),
            lambda: nir.Linear(weight=np.eye(2)), lambda: nir.CubaLIF(
                tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                v_threshold=np.ones(2)), lambda: nir.NIRGraph(nodes={}, edges=[])])()
        g.nodes[n].metadata = getattr(node, "metadata", {})
        desc.update(node=n, to=type(g.nodes[n]).__name__)
    return g, desc


def _check_graph(result):
    from convert import ir
    assert isinstance(result, ir.Graph), f"returned {type(result).__name__}, not an ir.Graph"
    result.validate()


def _check_network(result):
    from convert import ir
    g, t = result
    assert isinstance(g, ir.Graph) and isinstance(t, dict)
    g.validate()


def _check_checkpoint(result):
    from spikformer.model import Spikformer
    model, config, meta = result
    assert isinstance(model, Spikformer) and isinstance(meta, dict)


def _check_data(result):
    split, info = result
    x = split.x_train
    assert x.ndim == 4 and len(split.y_train) == len(x)
    assert x.numel() == 0 or (float(x.min()) >= 0.0 and float(x.max()) <= 1.0), "values outside [0, 1]"


def _check_events(result):
    import torch
    split, info = result
    T, size = EVENT_SAMPLE["T"], EVENT_SAMPLE["img_size"]
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        assert x.ndim == 5 and tuple(x.shape[1:]) == (T, 2, size, size), f"frames of shape {list(x.shape)}"
        assert len(y) == len(x) and x.dtype == torch.float32
        assert x.numel() == 0 or (float(x.min()) >= 0.0 and bool((x == x.round()).all())), "not event counts"
    assert info["value_grid"] == 1


# the model each streaming reader is opened for (spikformer.presets.SpikformerConfig fields)
STREAM_MODELS = {
    "npz": dict(img_size=8, in_channels=1, num_classes=3, embed_dim=16, num_heads=2, depth=1, T=1, pool_stages=0),
    "cifar100": dict(img_size=8, in_channels=3, num_classes=4, embed_dim=16, num_heads=2, depth=1, T=1,
                     pool_stages=0),
    "imagenet": dict(img_size=16, in_channels=3, num_classes=2, embed_dim=16, num_heads=2, depth=1, T=1,
                     pool_stages=0),
    "events": dict(img_size=EVENT_SAMPLE["img_size"], in_channels=2, num_classes=2, embed_dim=16, num_heads=2,
                   depth=1, T=EVENT_SAMPLE["T"], pool_stages=0, layout="dvs"),
}


def _stream(kind: str):
    """Opens both splits of the spec with spikformer.datasets.open_dataset and reads every sample."""
    def call(arg):
        from spikformer.data_config import OFFICIAL, RAW
        from spikformer.datasets import open_dataset
        from spikformer.presets import SpikformerConfig
        cfg = SpikformerConfig(**STREAM_MODELS[kind])
        spec = arg if kind == "events" else f"{kind}:{arg}"
        dc = OFFICIAL["dvs"] if kind == "events" else OFFICIAL["cifar"] if cfg.in_channels == 3 else RAW
        out = []
        for split in ("train", "test"):
            ds = open_dataset(spec, cfg, dc, split)
            out.append((cfg, ds, [ds[i] for i in range(len(ds))]))
        return out
    return call


def _check_stream(result):
    import torch
    for cfg, ds, samples in result:
        assert len(samples) == ds.info["n"] == len(ds)
        for x, y in samples:
            assert isinstance(x, torch.Tensor) and x.dtype == torch.float32, "not a float32 tensor"
            assert tuple(x.shape) == cfg.input_shape, f"sample of shape {list(x.shape)}, not {cfg.input_shape}"
            assert isinstance(y, int) and 0 <= y < cfg.num_classes, f"label {y!r}"
            assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0.0, "values negative or not finite"
            if ds.info["value_grid"] == 1:
                assert bool((x == x.round()).all()), "event frames that are not counts"
            else:
                assert float(x.max()) <= 1.0, "image values above 1"
            if ds.info["value_grid"] == 255:
                assert bool(((x * 255) == (x * 255).round()).all()), "8-bit images off the 1/255 grid"


def _check_cifar(result):
    x, y = result
    assert x.shape[1:] == (3, 32, 32) and len(y) == len(x)


def _load_checkpoint(path):
    from spikformer.checkpoint import load_checkpoint
    return load_checkpoint(path)


def _read_nir(path):
    from hw_backends.nir.nir_io import read_nir
    return read_nir(path)


def _from_nir(graph):
    from hw_backends.nir.nir_io import from_nir
    return from_nir(graph)


def _read_network(path):
    from hw_backends.loihi.network_file import read_network
    return read_network(path)


def _load_export(path):
    from hw_backends.loihi.runnable import load_export
    return load_export(path)


def _load_npz(path):
    from spikformer.data import load_dataset_with_info
    return load_dataset_with_info(f"npz:{path}", img_size=8, in_channels=1, seed=0)


def _load_events(spec):
    from spikformer.data import load_dataset_with_info
    return load_dataset_with_info(spec, **EVENT_SAMPLE)


def _read_cifar(path):
    from spikformer.data import read_cifar_batch
    return read_cifar_batch(Path(path))


def _errors(name):
    def get():
        if name == "checkpoint":
            from spikformer.checkpoint import CheckpointError
            return (CheckpointError,)
        if name in ("nir", "nir_graph"):
            from hw_backends.nir.nir_io import NIRReadError
            return (NIRReadError,)
        if name in ("network", "network_forged", "export"):
            from hw_backends.loihi.network_file import NetworkFileError
            return (NetworkFileError,)
        from spikformer.data import DataError
        return (DataError,)
    return get


READERS: dict[str, Reader] = {r.name: r for r in (
    Reader("checkpoint", "spikformer.checkpoint.load_checkpoint", _errors("checkpoint"), _file_case("model.pt"),
           _load_checkpoint, _check_checkpoint),
    Reader("nir", "hw_backends.nir.nir_io.read_nir", _errors("nir"), _file_case("model.nir"), _read_nir, _check_graph),
    Reader("nir_graph", "hw_backends.nir.nir_io.from_nir", _errors("nir_graph"), _nir_graph_case, _from_nir, _check_graph),
    Reader("network", "hw_backends.loihi.network_file.read_network", _errors("network"),
           _file_case("export/network.h5"), _read_network, _check_network),
    Reader("network_forged", "hw_backends.loihi.network_file.read_network", _errors("network"),
           _forged_network_case, _read_network, _check_network),
    Reader("export", "hw_backends.loihi.runnable.load_export", _errors("export"), _export_case, _load_export,
           _check_network),
    Reader("npz", "spikformer.data.load_dataset('npz:FILE')", _errors("npz"), _file_case("data.npz", "data_z.npz"),
           _load_npz, _check_data),
    Reader("cifar", "spikformer.data.read_cifar_batch", _errors("cifar"), _file_case("data_batch"), _read_cifar,
           _check_cifar),
    Reader("events", "spikformer.data.load_dataset('events:DIR')", _errors("events"), _events_case, _load_events,
           _check_events),
    Reader("npz_stream", "spikformer.datasets.open_dataset('npz:FILE')", _errors("npz"),
           _file_case("data.npz", "data_z.npz"), _stream("npz"), _check_stream),
    Reader("cifar100", "spikformer.datasets.open_dataset('cifar100:DIR')", _errors("cifar"),
           _folder_case("cifar100", ("train", "test", "meta")), _stream("cifar100"), _check_stream),
    Reader("imagenet", "spikformer.datasets.open_dataset('imagenet:DIR')", _errors("imagenet"),
           _folder_case("imagenet", IMAGENET_SAMPLE_FILES), _stream("imagenet"), _check_stream),
    Reader("events_stream", "spikformer.datasets.open_dataset('events:DIR')", _errors("events"), _events_case,
           _stream("events"), _check_stream),
)}


def _selftest(behaviour: str):
    """Readers that check the harness itself (registered only with FUZZ_READERS_SELFTEST=1, in the worker too):
    one returns, one kills its process with SIGSEGV, one hangs with SIGALRM blocked (only the watchdog ends it)."""
    def call(arg):
        if behaviour == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if behaviour == "hang":
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
            time.sleep(3600)
        return arg
    return Reader(f"selftest-{behaviour}", "harness self-test", lambda: (ValueError,),
                  lambda samples, case_dir, rng: (1, {"mutation": "none"}), call)


if os.environ.get("FUZZ_READERS_SELFTEST") == "1":
    READERS.update({r.name: r for r in (_selftest("ok"), _selftest("crash"), _selftest("hang"))})


# ------------------------------------------------------------------------------------------------ running
def case_rng(seed: int, reader: str, index: int) -> random.Random:
    return random.Random(f"fuzz:{seed}:{reader}:{index}")


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raises CaseTimeout in the main thread after `seconds` (SIGALRM; not nestable)."""
    def on_alarm(signum, frame):
        raise CaseTimeout(f"ran past {seconds:g} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def classify(reader: Reader, fn: Callable[[], object]) -> dict:
    """Runs fn() (the reader on one case) and classifies the outcome (see the module docstring)."""
    errors = reader.errors()
    try:
        result = fn()
    except CaseTimeout as e:
        return {"outcome": "timeout", "error": "CaseTimeout", "message": str(e)}
    except errors as e:
        msg = str(e)
        if not msg.strip() or "\n" in msg:
            return {"outcome": "message", "error": type(e).__name__, "message": msg[:500]}
        return {"outcome": "refused", "error": type(e).__name__, "message": msg[:300]}
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer looks for
        import traceback
        tb = traceback.extract_tb(e.__traceback__)
        where = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb[-3:]]
        return {"outcome": "exception", "error": type(e).__name__, "message": " ".join(str(e).split())[:300],
                "where": where}
    try:
        reader.check(result)
    except Exception as e:  # noqa: BLE001
        return {"outcome": "bad-result", "error": type(e).__name__, "message": " ".join(str(e).split())[:300]}
    return {"outcome": "ok"}


def run_case(reader_name: str, index: int, samples: Path, seed: int = 0, timeout: float = 30.0,
             work: Path | None = None) -> dict:
    """One case in this process: build the mutated input, run the reader under the time bound, classify."""
    reader = READERS[reader_name]
    rng = case_rng(seed, reader_name, index)
    own = work is None
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{reader_name}-")) if own else Path(work)
    case_dir = work / f"case{index}"
    case_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        arg, desc = reader.make_case(Path(samples), case_dir, rng)

        def go():
            with time_bound(timeout):
                return reader.call(arg)
        rec = classify(reader, go)
    finally:
        shutil.rmtree(case_dir if not own else work, ignore_errors=True)
    return {"reader": reader_name, "index": index, "case": desc, **rec,
            "seconds": round(time.perf_counter() - t0, 3)}


def describe_case(reader_name: str, index: int, samples: Path, seed: int = 0) -> dict:
    """The mutation of a case (rebuilt here, e.g. for a case whose worker died before reporting it)."""
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-describe-"))
    try:
        return READERS[reader_name].make_case(Path(samples), tmp, case_rng(seed, reader_name, index))[1]
    except Exception as e:  # noqa: BLE001
        return {"describe_error": repr(e)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def handled(rec: dict) -> bool:
    return rec["outcome"] in OUTCOMES_HANDLED


# ------------------------------------------------------------------------------------------------ isolation
def _worker(args) -> int:
    """Runs cases (reader:index per line on stdin) and prints one JSON line before and after each."""
    if args.mem_gb:
        import resource
        lim = int(args.mem_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    work = Path(tempfile.mkdtemp(prefix="fuzz-worker-"))
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            name, index = line.rsplit(":", 1)
            print(json.dumps({"start": [name, int(index)]}), flush=True)
            rec = run_case(name, int(index), Path(args.samples), args.seed, args.timeout, work)
            print(json.dumps({"done": rec}, default=str), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


class IsolatedRunner:
    """Feeds cases to a worker subprocess; a case that kills the worker is a crash, one that exceeds the
    watchdog (time bound + grace) a timeout; the worker is restarted either way."""

    def __init__(self, samples: Path, seed: int, timeout: float, mem_gb: float, grace: float = 60.0,
                 startup: float = 120.0):
        self.samples, self.seed, self.timeout, self.mem_gb, self.grace = samples, seed, timeout, mem_gb, grace
        self.worker = None
        self.startup = startup  # extra time for a fresh worker's first case (importing torch on a busy machine)

    def _start(self):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--samples", str(self.samples),
               "--seed", str(self.seed), "--timeout", str(self.timeout), "--mem-gb", str(self.mem_gb)]
        self.worker = LineChild(cmd, cwd=str(ROOT))
        self.fresh = True

    def _kill(self):
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def run(self, name: str, index: int) -> dict:
        if self.worker is None or self.worker.proc.poll() is not None:
            self._start()
        t0 = time.perf_counter()
        if not self.worker.send(f"{name}:{index}"):
            self._kill()
            return self.run(name, index)
        limit = self.timeout + self.grace + (self.startup if self.fresh else 0.0)
        while True:
            line = self.worker.receive(limit)
            if line is None:
                self._kill()
                return {"reader": name, "index": index, "case": describe_case(name, index, self.samples, self.seed),
                        "outcome": "timeout", "error": "watchdog",
                        "message": f"no answer within {limit:g} s; worker killed",
                        "seconds": round(time.perf_counter() - t0, 3)}
            if line is LineChild.GONE:
                rc = self.worker.proc.wait()
                self.worker = None
                sig = -rc if rc < 0 else None
                what = f"signal {signal.Signals(sig).name}" if sig else f"exit code {rc}"
                return {"reader": name, "index": index, "case": describe_case(name, index, self.samples, self.seed),
                        "outcome": "crash", "error": what,
                        "message": f"the worker died ({what}) while reading the case",
                        "seconds": round(time.perf_counter() - t0, 3)}
            msg = json.loads(line)
            if "done" in msg:
                self.fresh = False
                return msg["done"]

    def close(self):
        if self.worker is not None:
            self.worker.close(30)
            self.worker = None


# ------------------------------------------------------------------------------------------------ reports
def summarize(records: list[dict], readers: list[str], examples: int = 10) -> dict:
    out = {}
    for name in readers:
        recs = [r for r in records if r["reader"] == name]
        by_outcome = {o: 0 for o in OUTCOMES_HANDLED + OUTCOMES_UNHANDLED}
        errors, mutations = {}, {}
        for r in recs:
            by_outcome[r["outcome"]] += 1
            if r["outcome"] == "refused":
                errors[r["error"]] = errors.get(r["error"], 0) + 1
            m = r.get("case", {}).get("mutation", "?")
            mm = mutations.setdefault(m, {"cases": 0, "ok": 0, "refused": 0, "unhandled": 0})
            mm["cases"] += 1
            mm[r["outcome"] if handled(r) else "unhandled"] += 1
        bad = [r for r in recs if not handled(r)]
        out[name] = {"function": READERS[name].function, "cases": len(recs),
                     "handled": sum(1 for r in recs if handled(r)), "unhandled": len(bad),
                     "outcomes": by_outcome, "refusal_types": dict(sorted(errors.items())),
                     "by_mutation": dict(sorted(mutations.items())),
                     "max_case_seconds": max((r.get("seconds", 0.0) for r in recs), default=0.0),
                     "unhandled_examples": bad[:examples]}
    return out


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = ["# Reader fuzzing", "",
             f"{cfg['cases_per_reader']} seeded cases per reader (seed {cfg['seed']}), time bound {cfg['timeout_s']} s "
             f"per case, {'in process' if cfg['in_process'] else 'isolated worker process'}"
             f"{'' if cfg['in_process'] else ', address space limit %g GiB' % cfg['mem_gb']}. "
             "Handled = ok (correct result) or refused (documented error type, one-line message); see "
             "bench/fuzzing/fuzz_readers.py for the exact definition.", "",
             "| reader | function | cases | ok | refused | unhandled | slowest case (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["readers"].items():
        lines.append(f"| {name} | `{r['function']}` | {r['cases']} | {r['outcomes']['ok']} | "
                     f"{r['outcomes']['refused']} | {r['unhandled']} | {r['max_case_seconds']:.2f} |")
    t = result["total"]
    lines += ["", f"Total: {t['cases']} cases, {t['handled']} handled, {t['unhandled']} unhandled.", ""]
    for name, r in result["readers"].items():
        if r["unhandled_examples"]:
            lines += [f"## Unhandled: {name}", ""]
            for ex in r["unhandled_examples"]:
                lines.append(f"- case {ex['index']} ({json.dumps(ex.get('case', {}), sort_keys=True)[:200]}): "
                             f"{ex['outcome']} {ex.get('error')}: {ex.get('message', '')[:200]}")
            lines.append("")
    lines += ["## Refusals by error type", ""]
    for name, r in result["readers"].items():
        lines.append(f"- {name}: " + (", ".join(f"{k} {v}" for k, v in r["refusal_types"].items()) or "none"))
    return "\n".join(lines) + "\n"


def run_all(readers: list[str], cases: int, seed: int = 0, timeout: float = 30.0, in_process: bool = False,
            mem_gb: float = 8.0, samples: Path | None = None, progress: bool = True) -> tuple[dict, list[dict]]:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-samples-"))
    try:
        samples = Path(samples) if samples else make_samples(tmp / "samples")
        records = []
        runner = None if in_process else IsolatedRunner(samples, seed, timeout, mem_gb)
        t0 = time.perf_counter()
        try:
            for name in readers:
                for i in range(cases):
                    rec = run_case(name, i, samples, seed, timeout) if in_process else runner.run(name, i)
                    records.append(rec)
                    if progress and not handled(rec):
                        print(f"  {name} case {i}: {rec['outcome']} {rec.get('error')}: {rec.get('message', '')[:160]}",
                              file=sys.stderr, flush=True)
                    if progress and (i + 1) % 50 == 0:
                        bad = sum(1 for r in records if r["reader"] == name and not handled(r))
                        print(f"  {name}: {i + 1}/{cases} cases, {bad} unhandled "
                              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        finally:
            if runner is not None:
                runner.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(records, readers)
    total = {"cases": len(records), "handled": sum(1 for r in records if handled(r)),
             "unhandled": sum(1 for r in records if not handled(r))}
    result = {"config": {"cases_per_reader": cases, "seed": seed, "timeout_s": timeout, "in_process": in_process,
                         "mem_gb": mem_gb, "sample_model": SAMPLE_MODEL, "mutations": list(BYTE_MUTATIONS)
                         + ["json-value (json files)", "structural (nir_graph)"]},
              "readers": summary, "total": total}
    return result, records


def _rerun(a) -> int:
    """--only: the named cases, in the isolated worker (or in process), one JSON record per line."""
    cases = []
    for item in a.only.split(","):
        name, _, index = item.strip().rpartition(":")
        if name not in READERS or not index.isdigit():
            raise SystemExit(f"--only: {item!r} is not READER:INDEX with READER one of {sorted(READERS)}")
        cases.append((name, int(index)))
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-samples-"))
    try:
        samples = Path(a.samples) if a.samples else make_samples(tmp / "samples")
        runner = None if a.in_process else IsolatedRunner(samples, a.seed, a.timeout, a.mem_gb)
        try:
            recs = [run_case(n, i, samples, a.seed, a.timeout) if a.in_process else runner.run(n, i)
                    for n, i in cases]
        finally:
            if runner is not None:
                runner.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in recs:
        print(json.dumps(r, default=str, sort_keys=True))
    return 0 if all(handled(r) for r in recs) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz every reader of untrusted files with seeded mutations.")
    ap.add_argument("--cases", type=int, default=2000, help="cases per reader (default 2000)")
    ap.add_argument("--readers", default=",".join(READERS), help=f"comma-separated subset of {','.join(READERS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per case (default 30)")
    ap.add_argument("--mem-gb", type=float, default=8.0, help="address-space limit of the worker (0: none)")
    ap.add_argument("--in-process", action="store_true", help="no worker process (a crash stops the run)")
    ap.add_argument("--examples", type=int, default=10, help="unhandled examples kept per reader")
    ap.add_argument("--out", default=str(OUT), help="output directory (fuzz.json, fuzz.md)")
    ap.add_argument("--only", default=None, help="comma-separated READER:INDEX cases to re-run (prints their "
                                                 "records, writes no results)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--samples", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return _worker(a)
    if a.only:
        return _rerun(a)
    readers = [r.strip() for r in a.readers.split(",") if r.strip()]
    unknown = [r for r in readers if r not in READERS]
    if unknown:
        ap.error(f"unknown readers {unknown}; choose from {sorted(READERS)}")
    t0 = time.perf_counter()
    result, _ = run_all(readers, a.cases, a.seed, a.timeout, a.in_process, a.mem_gb, a.samples)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    from bench import provenance
    out = Path(a.out)
    provenance.write_result(out, "fuzz", result, markdown(result), __file__)
    t = result["total"]
    print(f"fuzz: {t['cases']} cases, {t['handled']} handled, {t['unhandled']} unhandled -> {out}/fuzz.json, fuzz.md")
    for name, r in result["readers"].items():
        print(f"  {name:10s} {r['cases']:6d} cases  ok {r['outcomes']['ok']:6d}  refused {r['outcomes']['refused']:6d}"
              f"  unhandled {r['unhandled']:4d}")
    return 0 if t["unhandled"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
