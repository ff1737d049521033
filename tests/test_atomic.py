"""Atomic outputs: a run that fails or is interrupted part way leaves no partial file or directory at its
destination, never damages what was there (byte for byte), and leaves no '.partial' / '.old' siblings behind.
Failures are injected inside atomic_file / atomic_dir, into the final rename, into a NIR write, into the Loihi
artifact writer and into the spk-parity, spk-report and spk-convert commands."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ground.atomic import atomic_dir, atomic_file, write_bytes

from .helpers_models import TINY, randomized_model

ROOT = Path(__file__).resolve().parents[1]


def snapshot(path: Path) -> dict:
    """{relative path: bytes} of a file or a directory tree (None for a missing path)."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else "dir") for p in sorted(path.rglob("*"))}


def disk_full_at_fsync(n: int, monkeypatch) -> list:
    """os.fsync fails with ENOSPC on its n-th call from now; returns the list of calls made."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == n:
            raise OSError(28, "No space left on device (injected)")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".partial", ".old", ".tmp")))


class Boom(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- atomic_file
@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_atomic_file_failure_keeps_the_old_file(tmp_path, exc):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old contents")
    with pytest.raises(exc):
        with atomic_file(dest) as f:
            f.write(b"new contents, half written")
            raise exc()
    assert dest.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


def test_atomic_file_failure_creates_nothing(tmp_path):
    dest = tmp_path / "sub" / "out.bin"
    with pytest.raises(Boom):
        with atomic_file(dest) as f:
            f.write(b"x" * 100_000)
            raise Boom()
    assert not dest.exists() and leftovers(tmp_path) == []


def test_atomic_file_success_replaces(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and leftovers(tmp_path) == []


def test_atomic_file_failing_rename_keeps_the_old_file(tmp_path, monkeypatch):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")

    def fail(src, dst):
        raise OSError("injected rename failure")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="injected"):
        write_bytes(dest, b"new")
    monkeypatch.undo()
    assert dest.read_bytes() == b"old" and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- atomic_dir
def _old_dir(tmp_path) -> Path:
    d = tmp_path / "out"
    (d / "sub").mkdir(parents=True)
    (d / "a.json").write_text('{"old": true}')
    (d / "sub" / "b.bin").write_bytes(bytes(range(256)))
    return d


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_atomic_dir_failure_keeps_the_old_directory(tmp_path, exc):
    d = _old_dir(tmp_path)
    before = snapshot(d)
    with pytest.raises(exc):
        with atomic_dir(d) as stage:
            (stage / "a.json").write_text('{"new": true}')
            (stage / "c.txt").write_text("half")
            raise exc()
    assert snapshot(d) == before and leftovers(tmp_path) == []


def test_atomic_dir_failure_creates_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "new") as stage:
            (stage / "x").write_text("x")
            raise Boom()
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == []


def test_atomic_dir_success_swaps_in_the_whole_directory(tmp_path):
    d = _old_dir(tmp_path)
    with atomic_dir(d) as stage:
        (stage / "new.txt").write_text("new")
    assert snapshot(d) == {"new.txt": b"new"} and leftovers(tmp_path) == []


def test_atomic_dir_failing_final_rename_restores_the_old_directory(tmp_path, monkeypatch):
    """The old directory is moved aside before the new one is renamed into place; if that last rename fails
    (or is interrupted), the old directory goes back."""
    d = _old_dir(tmp_path)
    before = snapshot(d)
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(".partial"):
            raise OSError("injected failure of the final rename")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="injected"):
        with atomic_dir(d) as stage:
            (stage / "new.txt").write_text("new")
    monkeypatch.undo()
    assert snapshot(d) == before and leftovers(tmp_path) == []


def test_atomic_dir_refuses_to_replace_a_file(tmp_path):
    f = tmp_path / "out"
    f.write_bytes(b"a file")
    with pytest.raises(FileExistsError):
        with atomic_dir(f):
            pass
    assert f.read_bytes() == b"a file" and leftovers(tmp_path) == []


_SLOW_WRITER = r"""
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even where the runner started us with SIGINT ignored
sys.path.insert(0, sys.argv[3])
from ground.atomic import atomic_dir, atomic_file
dest, kind = sys.argv[1], sys.argv[2]
if kind == "dir":
    with atomic_dir(dest) as stage:
        (stage / "a.json").write_text("new")
        print("ready", flush=True)
        time.sleep(120)
else:
    with atomic_file(dest) as f:
        f.write(b"new" * 1000)
        f.flush()
        print("ready", flush=True)
        time.sleep(120)
"""


def _interrupt(tmp_path, dest: Path, kind: str, sig: int) -> int:
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(dest), kind, str(ROOT)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(sig)
        return p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_ctrl_c_part_way_leaves_the_old_output_and_no_leftovers(tmp_path, kind):
    dest = _old_dir(tmp_path) if kind == "dir" else tmp_path / "out.bin"
    if kind == "file":
        dest.write_bytes(b"old")
    before = snapshot(dest)
    rc = _interrupt(tmp_path, dest, kind, signal.SIGINT)
    assert rc != 0
    assert snapshot(dest) == before and leftovers(tmp_path) == []


def test_kill_part_way_never_damages_the_destination(tmp_path):
    """SIGKILL cannot be cleaned up after: the temporary sibling may stay, but the destination is intact."""
    dest = _old_dir(tmp_path)
    before = snapshot(dest)
    rc = _interrupt(tmp_path, dest, "dir", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert snapshot(dest) == before
    assert all(n.startswith(".out.") for n in leftovers(tmp_path))  # only the staging directory, beside it


# ---------------------------------------------------------------------------------------------- writers
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    from spikformer.checkpoint import save_checkpoint
    path = tmp_path_factory.mktemp("atomic") / "tiny.pt"
    save_checkpoint(path, randomized_model("digits-2-64", seed=3, attn_drive=1.0, **TINY), {})
    return path, convert(path, ConversionOptions())


def test_nir_write_failure_keeps_the_old_file(tiny, tmp_path, monkeypatch):
    from hw_backends.nir import h5_writer
    from hw_backends.nir.nir_io import write_nir
    _, conv = tiny
    dest = tmp_path / "model.nir"
    dest.write_bytes(b"an older NIR file")
    real = h5_writer.write_graph

    def half_write(path, graph, *a, **k):
        real(path, graph, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(1000)
        raise Boom("disk full")
    monkeypatch.setattr(h5_writer, "write_graph", half_write)
    with pytest.raises(Boom):
        write_nir(dest, conv.lowered)
    assert dest.read_bytes() == b"an older NIR file" and leftovers(tmp_path) == []


def test_loihi_artifacts_failure_keeps_the_old_export(tiny, tmp_path, monkeypatch):
    from hw_backends.loihi import compile as loihi_compile, export
    _, conv = tiny
    compiled = loihi_compile.compile_graph(conv.lowered)
    d = _old_dir(tmp_path)
    before = snapshot(d)

    def fail(*a, **k):
        raise Boom("summary failed after network.h5, quantization.json and resources.json")
    monkeypatch.setattr(export, "summary_md", fail)
    with pytest.raises(Boom):
        with atomic_dir(d) as stage:
            export.write_artifacts(stage, compiled, conv.model_info(), {})
    assert snapshot(d) == before and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- commands
def test_spk_parity_failure_keeps_the_old_output(tiny, tmp_path, monkeypatch, cli):
    from commands import parity as parity_cli
    path, _ = tiny
    d = _old_dir(tmp_path)
    before = snapshot(d)

    def fail(summary, png):
        Path(png).write_bytes(b"\x89PNG half")
        raise Boom("plot failed")
    monkeypatch.setattr(parity_cli, "firing_rate_plot", fail)
    rc, _, err = cli(parity_cli.main, [path, "--samples", "2", "--device", "cpu", "--no-progress",
                                       "--min-agreement", "0", "-o", d])
    assert rc == 3 and "internal error" in err
    assert snapshot(d) == before and leftovers(tmp_path) == []


def test_spk_report_failure_while_writing_keeps_the_old_output(tiny, tmp_path, monkeypatch, cli):
    """The report's files are all computed before any is written; a failure while writing the third of them
    (injected into fsync) leaves every file of the earlier report as it was."""
    from commands import report as report_cli
    path, _ = tiny
    d = tmp_path / "report"
    rc, _, err = cli(report_cli.main, [path, "--samples", "2", "--device", "cpu", "--no-progress", "-o", d])
    assert rc == 0, err
    (d / "notes.txt").write_text("a file of the user's, kept")
    before = snapshot(d)
    calls = disk_full_at_fsync(3, monkeypatch)
    rc, _, err = cli(report_cli.main, [path, "--samples", "2", "--device", "cpu", "--no-progress", "--seed", "5",
                                       "-o", d])
    monkeypatch.undo()
    assert rc != 0 and len(calls) >= 3
    assert snapshot(d) == before and leftovers(tmp_path) == []


def test_spk_convert_loihi_failure_keeps_the_old_export(tiny, tmp_path, monkeypatch, cli):
    from commands import convert as convert_cli
    from hw_backends.loihi import export
    path, _ = tiny
    d = tmp_path / "loihi"
    rc, _, err = cli(convert_cli.main, [path, "--target", "loihi", "-o", d])
    assert rc == 0, err
    before = snapshot(d)
    real = export.write_network

    def half(p, g, sched):
        real(p, g, sched)
        raise Boom("failed after network.h5")
    monkeypatch.setattr(export, "write_network", half)
    rc, _, err = cli(convert_cli.main, [path, "--target", "loihi", "-o", d])
    assert rc != 0
    assert snapshot(d) == before and leftovers(tmp_path) == []


def test_spk_report_failure_while_writing_a_new_report_leaves_nothing(tiny, tmp_path, monkeypatch, cli):
    from commands import report as report_cli
    path, _ = tiny
    disk_full_at_fsync(2, monkeypatch)
    rc, _, err = cli(report_cli.main, [path, "--samples", "2", "--device", "cpu", "--no-progress",
                                       "-o", tmp_path / "new"])
    monkeypatch.undo()
    assert rc != 0 and "No space left" in err
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- disk full
@pytest.mark.parametrize("target", ["nir", "loihi"])
@pytest.mark.parametrize("existing", [False, True])
def test_spk_convert_disk_full_is_one_line_exit_2_and_writes_nothing(tiny, tmp_path, monkeypatch, cli, target,
                                                                      existing):
    """ENOSPC when the output is renamed into place (the last step of every atomic write): exit code 2, one
    line naming the destination and the reason, no partial output, an earlier output kept as it was."""
    import errno

    from commands import convert as convert_cli
    from .conftest import assert_one_line_error
    path, _ = tiny
    dest = tmp_path / ("model.nir" if target == "nir" else "loihi")
    if existing:
        rc, _, err = cli(convert_cli.main, [path, "--target", target, "-o", dest])
        assert rc == 0, err
    before = snapshot(dest)
    real = os.replace

    def replace(src, dst):  # the new output's rename fails; putting an earlier output back still works
        if Path(dst) == dest and str(src).endswith(".partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    rc, _, err = cli(convert_cli.main, [path, "--target", target, "-o", dest])
    monkeypatch.undo()
    assert rc == 2
    assert_one_line_error(rc, err, "spk-convert: error: cannot write", str(dest), "No space left on device")
    assert snapshot(dest) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("code,exit_code,needle", [
    ("ENOSPC", 2, "cannot write /out/x: No space left on device"), ("EDQUOT", 2, "cannot write /out/x: "),
    ("EROFS", 2, "cannot write /out/x: Read-only file system"), ("EACCES", 2, "cannot write /out/x: "),
    ("EPIPE", 3, "internal error: BrokenPipeError")])
def test_run_cli_maps_environment_oserrors(capsys, code, exit_code, needle):
    import argparse
    import errno

    from ground.cli import run_cli

    def main(args):
        e = OSError(getattr(errno, code), os.strerror(getattr(errno, code)), "/out/.x.1234.partial")
        e.destination = "/out/x"
        raise e
    rc = run_cli("prog", argparse.ArgumentParser(), main, [])
    err = capsys.readouterr().err
    assert rc == exit_code and len(err.strip().splitlines()) == 1 and needle in err, err
