"""The target interface and the registry of targets.

A target is one class with a `name`, a one-line `description`, `build(frontend graph, options) -> TargetBuild`
(lower, and for a chip quantise, schedule and place) and `export(build, out_path) -> summary` (write the
artifacts atomically), registered with `@register`. Adding a target is one module under `hw_backends/` that
registers itself, plus its module name in TARGET_MODULES. Every command reaches a target through
hw_backends.conversion.convert, never through this registry directly.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from convert import ir
from convert.options import ConversionOptions
from ground.errors import UserError

TARGET_MODULES = ("hw_backends.nir.target", "hw_backends.loihi.target")  # imported on first use of the registry
NUMERICS = ("float", "loihi_fixed")  # the arithmetic a built graph runs in (sim.engine.Engine's modes)


class UnknownTargetError(UserError, ValueError):
    pass


class OutputPathError(UserError, ValueError):
    pass


@dataclass
class TargetBuild:
    """What a target makes of the frontend graph."""
    lowered: ir.Graph                 # spike-only synaptic operations, float semantics
    graph: ir.Graph                   # what the target runs: `lowered`, or its quantised form
    numeric: str                      # the arithmetic of `graph`: one of NUMERICS
    ssa_form: str                     # the SSA form used (an "auto" request resolved)
    schedule: dict | None = None      # hardware timing (Loihi)
    quantization: dict | None = None  # every scale, shift and exponent chosen (Loihi)
    resources: dict | None = None     # cores, chips, per-population mapping (Loihi)
    ssa_forms: dict | None = None     # the cost of every SSA form the target can run, and which was chosen
    warnings: list = field(default_factory=list)


class Backend:
    """Subclass, set `name`, `description`, `output_kind` ("file" or "dir"), `default_suffix`, `ssa_forms`;
    implement `build` and `export`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    output_kind: ClassVar[str] = "file"
    default_suffix: ClassVar[str] = ""
    ssa_forms: ClassVar[tuple] = ("binary",)

    def build(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> TargetBuild:
        raise NotImplementedError

    def check_output(self, out_path) -> Path:
        """Fails (one line, before any work) when `out_path` cannot be written."""
        return check_output_path(out_path, self.output_kind)

    def export(self, build, out_path) -> dict:
        """Write the artifacts of a hw_backends.conversion.Build atomically; return a JSON-able summary (at least
        {"artifacts": [paths]})."""
        raise NotImplementedError

    def resolve_ssa(self, requested: str) -> str | None:
        """The SSA form for a request: None for "auto" where the target must compare its forms."""
        if requested != "auto" and requested not in self.ssa_forms:
            raise UnknownTargetError(f"target {self.name!r} runs the SSA form(s) {', '.join(self.ssa_forms)}, not "
                                     f"{requested!r}; use --ssa {' or --ssa '.join(('auto',) + self.ssa_forms)}")
        if requested == "auto":
            return self.ssa_forms[0] if len(self.ssa_forms) == 1 else None
        return requested


_REGISTRY: dict[str, type[Backend]] = {}
_UNAVAILABLE: dict[str, str] = {}  # target modules present but failing to import: name -> reason
_loaded = False


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


def _load_targets() -> None:
    """Imports every target module once; one that fails is listed as unavailable, with the reason."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in TARGET_MODULES:
        name = module.split(".")[1]
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - a broken optional target must not take the others down
            if name not in _REGISTRY:
                _UNAVAILABLE[name] = f"{type(e).__name__}: {e}"


def list_backends() -> list[tuple[str, str]]:
    """[(name, description)] of every registered target, sorted by name."""
    _load_targets()
    return sorted((n, c.description) for n, c in _REGISTRY.items())


def unavailable() -> dict[str, str]:
    """Target modules that are present but failed to import: name -> reason."""
    _load_targets()
    return dict(_UNAVAILABLE)


def get_backend(name: str) -> Backend:
    _load_targets()
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
