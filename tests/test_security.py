"""Checkpoints from strangers never run code: a file crafted to execute code when unpickled is refused by every
command that reads checkpoints (load_checkpoint, the conversion pipeline, spk-convert, spk-parity, spk-report,
spk-eval) with one line on stderr and a nonzero exit, and the payload's marker file never appears. Data files
likewise (npz object arrays need pickle and are refused; CIFAR batches use a restricted unpickler)."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spikformer.checkpoint import CheckpointError, checkpoint_bytes, load_checkpoint
from ground.errors import UserError

from .conftest import assert_one_line_error
from .helpers_models import TINY, randomized_model

ROOT = Path(__file__).resolve().parents[1]


class SystemExploit:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class OpenExploit:
    """Unpickling this calls open(marker, 'w'), which creates the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _valid_checkpoint_obj():
    model = randomized_model("digits-2-64", seed=0, **TINY)
    import io
    return torch.load(io.BytesIO(checkpoint_bytes(model, model.config, {})), weights_only=True)


def write_evil(kind: str, path: Path, marker: Path) -> Path:
    """A checkpoint whose unpickling creates `marker`. Kinds: a complete, otherwise valid spikformer checkpoint
    with the payload in its metadata (zip and legacy torch formats); a bare state dict next to the payload; a
    plain pickle of the payload; the payload calling open() instead of os.system."""
    if kind in ("zip", "legacy"):
        obj = _valid_checkpoint_obj()
        obj["metadata"] = {"note": SystemExploit(marker)}
        torch.save(obj, path, _use_new_zipfile_serialization=(kind == "zip"))
    elif kind == "state-dict":
        obj = dict(_valid_checkpoint_obj()["state_dict"])
        obj["zz_payload"] = SystemExploit(marker)
        torch.save(obj, path)
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps(SystemExploit(marker), protocol=2))
    elif kind == "open":
        obj = _valid_checkpoint_obj()
        obj["metadata"] = {"note": OpenExploit(marker)}
        torch.save(obj, path)
    else:
        raise ValueError(kind)
    return path


EVIL_KINDS = ["zip", "legacy", "state-dict", "plain-pickle", "open"]


@pytest.fixture
def evil(tmp_path):
    def make(kind):
        marker = tmp_path / f"pwned-{kind}"
        return write_evil(kind, tmp_path / f"evil-{kind}.pt", marker), marker
    return make


def test_exploits_are_real(tmp_path):
    """Control: full unpickling of each crafted file does run the payload (so the refusals below mean
    something). Runs in one subprocess so that nothing of the payloads touches this process."""
    files = []
    for kind in EVIL_KINDS:
        marker = tmp_path / f"pwned-{kind}"
        files.append((kind, write_evil(kind, tmp_path / f"evil-{kind}.pt", marker), marker))
    code = ("import pickle, sys, torch\n"
            "for kind, p in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    try:\n"
            "        pickle.load(open(p, 'rb')) if kind == 'plain-pickle' else torch.load(p, weights_only=False)\n"
            "    except Exception:\n"
            "        pass\n")
    args = [str(x) for kind, path, _ in files for x in (kind, path)]
    subprocess.run([sys.executable, "-c", code, *args], cwd=str(ROOT), check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert [kind for kind, _, marker in files if not marker.exists()] == []


@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_load_checkpoint_refuses(evil, kind):
    path, marker = evil(kind)
    for preset in (None, "digits-2-64"):
        with pytest.raises(CheckpointError) as ei:
            load_checkpoint(path, preset=preset)
        msg = str(ei.value)
        assert "\n" not in msg and "refused" in msg and "execute code" in msg, msg
        assert isinstance(ei.value, UserError)
    assert not marker.exists()


def test_conversion_pipeline_refuses(evil):
    from convert.options import ConversionOptions
    from hw_backends.conversion import convert
    path, marker = evil("zip")
    with pytest.raises(CheckpointError, match="refused"):
        convert(path, ConversionOptions())
    assert not marker.exists()


@pytest.mark.parametrize("prog,kinds", [("spk-parity", ("zip", "plain-pickle")), ("spk-report", ("legacy", "open"))])
def test_simulating_commands_refuse(prog, kinds, evil, tmp_path, cli):
    from commands import parity as parity_cli, report as report_cli
    main = {"spk-parity": parity_cli.main, "spk-report": report_cli.main}[prog]
    for kind in kinds:
        path, marker = evil(kind)
        out = tmp_path / f"{prog}-{kind}"
        rc, _, err = cli(main, [path, "--samples", "2", "--device", "cpu", "--no-progress", "-o", out])
        assert rc == 2
        assert_one_line_error(rc, err, f"{prog}: error:", "refused")
        assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("target", ["nir", "loihi"])
def test_spk_convert_refuses(evil, tmp_path, cli, target):
    from commands.convert import main
    path, marker = evil("zip")
    out = tmp_path / f"out-{target}"
    rc, _, err = cli(main, [path, "--target", target, "-o", out])
    assert rc == 2
    assert_one_line_error(rc, err, "refused")
    assert not marker.exists() and not out.exists()


def test_console_script_refuses_in_a_fresh_process(evil, tmp_path):
    """The installed entry point (a separate interpreter): exit code 2, one line, no traceback, no marker."""
    path, marker = evil("zip")
    exe = ROOT / ".venv" / "bin" / "spk-report"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "commands.report"]
    p = subprocess.run(cmd + [str(path), "--samples", "1", "--device", "cpu", "--no-progress", "-o",
                              str(tmp_path / "o")], cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert p.returncode == 2
    assert_one_line_error(p.returncode, p.stderr, "spk-report: error:", "refused")
    assert not marker.exists() and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- data files
def test_npz_with_pickled_object_array_is_refused(tmp_path):
    from spikformer.data import DataError, load_dataset
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    x = np.empty(4, dtype=object)
    x[:] = [SystemExploit(marker)] * 4
    np.savez(path, x=x, y=np.arange(4))
    with pytest.raises(DataError, match="pickle"):
        load_dataset(f"npz:{path}", 8, 1)
    assert not marker.exists()


def test_cifar_batch_with_payload_is_refused(tmp_path):
    from spikformer.data import DataError, load_dataset
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": OpenExploit(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refused"):
        load_dataset(f"cifar10:{root}", 8, 3)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- odd metadata
def test_loadable_checkpoint_with_odd_metadata_never_crashes_a_command(tmp_path, cli):
    """weights_only checkpoints from elsewhere may carry any plain metadata (tensors, lists, numbers where we
    write strings): every command completes (or fails with one line), never with an internal error."""
    from commands.parity import main as parity
    from commands.report import main as report
    obj = _valid_checkpoint_obj()
    obj["metadata"] = {"test_accuracy": torch.tensor([0.5, 0.25]), "dataset": [1, {"spec": torch.zeros(2)}],
                       "preset": 7, "source": None, "epochs": "many"}
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    load_checkpoint(path)
    runs = [(report, [path, "--samples", "2", "--device", "cpu", "--no-progress", "-o", tmp_path / "r"]),
            (parity, [path, "--samples", "2", "--device", "cpu", "--no-progress", "--min-agreement", "0",
                      "-o", tmp_path / "p"])]
    from commands.convert import main as convert
    runs += [(convert, [path, "--target", "nir", "-o", tmp_path / "m.nir"]),
             (convert, [path, "--target", "loihi", "-o", tmp_path / "loihi"])]
    for main, argv in runs:
        rc, _, err = cli(main, argv)
        assert rc == 0, err
    from hw_backends.loihi.runnable import load_export
    load_export(tmp_path / "loihi")


def test_spk_eval_refuses(evil, cli):
    from commands.train import eval_main
    path, marker = evil("zip")
    rc, _, err = cli(eval_main, ["--checkpoint", path, "--device", "cpu"])
    assert rc == 2
    assert_one_line_error(rc, err, "spk-eval: error:", "refused")
    assert not marker.exists()


def _spy_unpickling(monkeypatch) -> list:
    """Every torch.load call, recorded (the limits must refuse before any)."""
    import spikformer.checkpoint as ck
    calls, real = [], ck.torch.load

    def spy(*a, **k):
        calls.append(a)
        return real(*a, **k)
    monkeypatch.setattr(ck.torch, "load", spy)
    return calls


@pytest.mark.parametrize("limit,what", [("MAX_CHECKPOINT_BYTES", "bytes exceeds the limit"),
                                        ("MAX_ARCHIVE_MEMBERS", "archive members exceed the limit"),
                                        ("MAX_PICKLE_BYTES", "its pickle")])
def test_a_checkpoint_beyond_a_size_limit_is_refused_before_unpickling(tmp_path, monkeypatch, cli, limit, what):
    """The file's size, the archive's member count and its pickle's size are checked before torch.load; each limit
    is tested by lowering it below a small real checkpoint (one line, naming the limit), and the checkpoint loads
    at the real limits."""
    import spikformer.checkpoint as ck
    from commands.convert import main
    from spikformer.checkpoint import save_checkpoint
    path = save_checkpoint(tmp_path / "m.pt", randomized_model("digits-2-64", **TINY))
    calls = _spy_unpickling(monkeypatch)
    load_checkpoint(path)
    assert len(calls) == 1
    calls.clear()
    import zipfile
    with zipfile.ZipFile(path) as z:
        members = z.infolist()
    small = {"MAX_CHECKPOINT_BYTES": path.stat().st_size - 1, "MAX_ARCHIVE_MEMBERS": len(members) - 1,
             "MAX_PICKLE_BYTES": max(m.file_size for m in members if m.filename.endswith(".pkl")) - 1}[limit]
    monkeypatch.setattr(ck, limit, small)
    with pytest.raises(CheckpointError, match=f"refused to load .*{what}.*{limit}"):
        load_checkpoint(path)
    assert calls == []
    rc, _, err = cli(main, [path, "-o", tmp_path / "m.nir"])
    assert_one_line_error(rc, err, "refused to load", limit)
    assert calls == [] and not (tmp_path / "m.nir").exists()


def test_a_zip_bomb_is_refused_by_its_declared_size(tmp_path, monkeypatch):
    """An archive whose members declare more uncompressed bytes than the limit (a few kB on disk: deflated
    zeros) is refused from its directory, before any member is read."""
    import zipfile

    import spikformer.checkpoint as ck
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("archive/data/0", b"\0" * (4 * 2 ** 20))
    monkeypatch.setattr(ck, "MAX_CHECKPOINT_BYTES", 2 ** 20)
    calls = _spy_unpickling(monkeypatch)
    assert path.stat().st_size < 2 ** 20
    with pytest.raises(CheckpointError, match=r"uncompressed, beyond the limit of 1,048,576"):
        load_checkpoint(path)
    assert calls == []
