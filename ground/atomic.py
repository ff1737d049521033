"""Atomic outputs: a failed or interrupted run leaves nothing at the destination and never damages what was
there. Files are written to a temporary sibling and renamed into place; directories are built in a temporary
sibling and swapped in only when complete. An OSError on the way (disk full, read-only file system, ...) gets a
`destination` attribute naming the path that was not written, for the one-line message of
ground.cli.run_cli."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _usual_permissions(path) -> None:
    """mkstemp/mkdtemp make private files; an output gets the permissions the umask gives."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling path for a writer that takes a file name (h5py, nir.write); on success the
    file is fsynced and renamed to `path`, on failure removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        os.close(fd)
    except OSError as e:
        mark_destination(e, path)
        raise
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        mark_destination(e, path)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """An open file whose content replaces `path` only when the block completes."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def mark_destination(e: BaseException, path) -> None:
    """Records on an OSError which output it kept from being written (the innermost writer's path wins)."""
    if isinstance(e, OSError) and getattr(e, "destination", None) is None:
        e.destination = str(path)


def write_bytes(path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty staging directory; on success it replaces `path` (an existing directory there is removed
    only after the new one is complete)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as e:
        mark_destination(e, path)
        raise
    try:
        yield stage
        _usual_permissions(stage)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(stage, path)
        except BaseException:  # put the old directory back before cleaning up
            if old is not None and not path.exists():
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        mark_destination(e, path)
        raise


def replace_files(out_dir, files: dict[str, bytes]) -> list[Path]:
    """Several files into `out_dir` as one change (other files there are kept): every file is first written
    completely to a temporary sibling, and only when all of them are written are they renamed into place, so a
    failure while writing (disk full, interrupt) leaves the earlier files untouched and no temporary files
    behind."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=out)
            staged.append((tmp, out / name))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            _usual_permissions(tmp)
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty
        raise
    return [path for _, path in staged]
