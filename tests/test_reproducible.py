"""Same input -> same bytes: converting a checkpoint twice (at different times, to different paths, in another
interpreter with another hash seed) gives byte-identical NIR and Loihi artifacts; HDF5 files carry no
timestamps; the same seed gives identical spk-parity and spk-report files, PNGs included (no tIME chunk, no
software text)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import pytest

from .helpers_models import TINY, randomized_model

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(path: Path) -> dict:
    path = Path(path)
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        out.append((kind, data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def assert_png_has_no_metadata(path: Path) -> None:
    kinds = {k for k, _ in png_chunks(Path(path).read_bytes())}
    assert b"tIME" not in kinds, f"{path} has a modification time"
    texts = [v for k, v in png_chunks(Path(path).read_bytes()) if k in (b"tEXt", b"iTXt", b"zTXt")]
    decoded = [zlib.decompress(v.split(b"\0", 2)[-1]) if k == b"zTXt" else v for k, v in
               [(k, v) for k, v in png_chunks(Path(path).read_bytes()) if k in (b"tEXt", b"iTXt", b"zTXt")]]
    assert not texts, f"{path} has text chunks {decoded}"


def h5_stored_times(path: Path) -> list[str]:
    """HDF5 objects (root group, groups, datasets) whose object header stores an access, modification, change or
    birth time (H5Oget_info: 0 where none is stored)."""
    timed = []

    def check(name, obj):
        info = h5py.h5o.get_info(obj.id)
        if any((info.atime, info.mtime, info.ctime, info.btime)):
            timed.append(name)
    with h5py.File(path, "r") as f:
        check("/", f)
        f.visititems(check)
    return timed


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from spikformer.checkpoint import save_checkpoint
    path = tmp_path_factory.mktemp("repro") / "tiny.pt"
    save_checkpoint(path, randomized_model("digits-2-64", seed=3, attn_drive=1.0, **TINY), {"dataset": "random"})
    return path


_CONVERT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from commands.convert import main
for target, out in (("nir", sys.argv[3]), ("loihi", sys.argv[4])):
    rc = main([sys.argv[2], "--target", target, "-o", out])
    if rc:
        sys.exit(rc)
"""


def test_conversion_is_byte_identical(ckpt, tmp_path, cli):
    """spk-convert twice in this process (more than a second apart, so a stored time would differ) and once in
    a fresh interpreter with another PYTHONHASHSEED (set iteration order): the same bytes every time."""
    from commands.convert import main
    digests = []
    for i in range(2):
        nir_out, loihi_out = tmp_path / f"run{i}" / "model.nir", tmp_path / f"run{i}" / "loihi"
        for target, out in (("nir", nir_out), ("loihi", loihi_out)):
            rc, _, err = cli(main, [ckpt, "--target", target, "-o", out])
            assert rc == 0, err
        digests.append((tree_digest(nir_out), tree_digest(loihi_out)))
        time.sleep(1.1)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    sub = tmp_path / "sub"
    subprocess.run([sys.executable, "-c", _CONVERT, str(ROOT), str(ckpt), str(sub / "model.nir"), str(sub / "loihi")],
                   cwd=str(ROOT), env=env, check=True, timeout=900, capture_output=True)
    digests.append((tree_digest(sub / "model.nir"), tree_digest(sub / "loihi")))
    assert digests[0] == digests[1] == digests[2]
    assert set(digests[0][1]) >= {"manifest.json", "network.h5", "quantization.json", "resources.json", "summary.md"}


def test_hdf5_files_store_no_timestamps(ckpt, tmp_path):
    from hw_backends.nir.nir_io import write_nir
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    from hw_backends.loihi.compile import compile_graph
    from hw_backends.loihi.network_file import write_network

    conv = convert(ckpt, ConversionOptions())
    write_nir(tmp_path / "m.nir", conv.lowered, conv.model_info())
    compiled = compile_graph(conv.lowered)
    write_network(tmp_path / "network.h5", compiled.graph, compiled.schedule)
    for p in (tmp_path / "m.nir", tmp_path / "network.h5"):
        assert h5_stored_times(p) == [], f"{p.name} stores object times"


def test_library_writers_ignore_the_output_path(ckpt, tmp_path):
    """The bytes do not depend on where they are written (no path or file name inside)."""
    from hw_backends.nir.nir_io import write_nir
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    conv = convert(ckpt, ConversionOptions())
    write_nir(tmp_path / "a.nir", conv.lowered, conv.model_info())
    write_nir(tmp_path / "deeper" / "b.nir", conv.lowered, conv.model_info())
    assert (tmp_path / "a.nir").read_bytes() == (tmp_path / "deeper" / "b.nir").read_bytes()


def test_parity_same_seed_same_bytes(ckpt, tmp_path, cli):
    from commands.parity import main
    outs = []
    for i in range(2):
        out = tmp_path / f"p{i}"
        rc, _, err = cli(main, [ckpt, "--samples", "3", "--seed", "4", "--device", "cpu", "--no-progress",
                                "--min-agreement", "0", "-o", out])
        assert rc == 0, err
        outs.append(out)
    a, b = tree_digest(outs[0]), tree_digest(outs[1])
    assert set(a) == {"parity.json", "parity.md", "firing_rates.png"}
    assert a == b
    assert_png_has_no_metadata(outs[0] / "firing_rates.png")
    s = json.loads((outs[0] / "parity.json").read_text())
    assert s["run"]["seed"] == 4


def test_report_same_seed_same_bytes(ckpt, tmp_path, cli):
    from analysis.render import FILES
    from commands.report import main
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        rc, _, err = cli(main, [ckpt, "--samples", "3", "--seed", "2", "--device", "cpu", "--no-progress", "-o", out])
        assert rc == 0, err
        outs.append(out)
    a, b = tree_digest(outs[0]), tree_digest(outs[1])
    assert set(a) == set(FILES) | {"attention.png", "attention.json"} and a == b
    for name in a:
        if name.endswith(".png"):
            assert_png_has_no_metadata(outs[0] / name)
