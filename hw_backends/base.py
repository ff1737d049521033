"""The back-end interface and the registry of targets.

A target is one class with a `name`, a one-line `description` and `export(graph, model_info, out_path, options)`,
registered with `@register`. `spk-convert` loads the checkpoint, builds the IR, calls `prepare` (by default the
standard lowering with binary SSA, which every target can take), validates, and hands the result to `export`.
Adding a target is one module under `hw_backends/` that registers itself, plus one import line in
`hw_backends/__init__.py` (or a package `hw_backends/<name>/` whose `__init__` registers, tried automatically).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from spikformer.cli_support import UserError


class UnknownTargetError(UserError, ValueError):
    pass


class OutputPathError(UserError, ValueError):
    pass


class Backend:
    """Subclass, set `name`, `description` (and `output_kind`: "file" or "dir"), implement `export`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    output_kind: ClassVar[str] = "file"
    default_suffix: ClassVar[str] = ""

    @classmethod
    def add_arguments(cls, parser) -> None:
        """Add target-specific command-line options (an argparse group); their values arrive in `options`."""

    def prepare(self, frontend_graph, options: dict):
        """The graph this target exports, from the frontend graph. Default: the standard lowering (binary SSA in
        the order options['ssa_order'])."""
        from convert.passes import lower
        return lower(frontend_graph, ssa_order=options.get("ssa_order", "auto"))

    def check_output(self, out_path) -> Path:
        """Fails (one line, before any work) when `out_path` cannot be written."""
        return check_output_path(out_path, self.output_kind)

    def export(self, graph, model_info: dict, out_path, options: dict) -> dict:
        """Write the artifacts atomically; return a JSON-able summary (at least {"artifacts": [paths]})."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Backend]] = {}
_UNAVAILABLE: dict[str, str] = {}  # target packages present but failing to import: name -> reason


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: makes the target available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no target name")
    old = _REGISTRY.get(cls.name)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                                     cls.__qualname__):
        raise ValueError(f"target {cls.name!r} is registered twice ({old.__module__}.{old.__qualname__} and "
                         f"{cls.__module__}.{cls.__qualname__})")
    _REGISTRY[cls.name] = cls
    _UNAVAILABLE.pop(cls.name, None)
    return cls


def mark_unavailable(name: str, reason: str) -> None:
    if name not in _REGISTRY:
        _UNAVAILABLE[name] = reason


def list_backends() -> list[tuple[str, str]]:
    """[(name, description)] of every registered target, sorted by name."""
    return sorted((n, c.description) for n, c in _REGISTRY.items())


def get_backend(name: str) -> Backend:
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name in _UNAVAILABLE:
        raise UnknownTargetError(f"target {name!r} is installed but cannot be loaded: {_UNAVAILABLE[name]}")
    known = ", ".join(n for n, _ in list_backends()) or "none"
    raise UnknownTargetError(f"unknown target {name!r}; known targets: {known}")


def check_output_path(out_path, kind: str = "file") -> Path:
    """The output's parent must be (or be creatable as) a writable directory; a file output must not be an
    existing directory, a directory output must not be an existing file."""
    p = Path(out_path)
    if str(out_path).strip() == "":
        raise OutputPathError("empty output path")
    if kind == "file" and p.is_dir():
        raise OutputPathError(f"output {p} is a directory; give a file name such as {p / 'model.nir'}")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise OutputPathError(f"output {p} exists and is not a directory")
    parent = p.absolute().parent
    probe = parent
    while not probe.exists():  # the first existing ancestor decides whether the folders can be created
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"cannot create {p}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {p}: directory {probe} is not writable")
    return p
