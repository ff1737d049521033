"""The target interface and the registry of targets.

A target is one class with a `name`, a one-line `description`, `compile(frontend graph, options) -> CompiledNetwork`
(lower, and for a chip quantise, schedule and place) and `export(build, out_path, model_info) -> summary` (write
the artifacts atomically), registered with `@register`. It also owns everything the commands and the reports say
or ask about it: its run modes, its default energy model, the flags only it reads, its console lines after an
export and its own section of the energy report (the hooks of `Backend`), so no command or analysis module
branches on a target's name. A target registers when its module is imported: the built-in ones are listed in
TARGET_MODULES, others are imported by whoever uses them or named by an installed package's entry point in the
group TARGET_ENTRY_POINTS. Every command converts through hw_backends.conversion.convert.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from convert import ir
from convert.options import ConversionOptions
from ground.errors import UserError

TARGET_MODULES = ("hw_backends.nir.target", "hw_backends.loihi.target")  # imported on first use of the registry
TARGET_ENTRY_POINTS = "spikformer_deploy.targets"  # an installed package's targets: entry points naming their modules
NUMERICS = ("float", "loihi_fixed")  # the arithmetic a built graph runs in (sim.engine.Engine's modes)


class UnknownTargetError(UserError, ValueError):
    pass


class OutputPathError(UserError, ValueError):
    pass


class ModeError(UserError, ValueError):
    pass


FLOAT_MODE = "float64 simulation of the lowered graph (reference semantics, sim.engine)"


@dataclass
class CompiledNetwork:
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
    implement `compile` and `export`. The other attributes and hooks have defaults that fit a float target."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    output_kind: ClassVar[str] = "file"
    default_suffix: ClassVar[str] = ""
    ssa_forms: ClassVar[tuple] = ("binary",)
    # spk-parity and spk-report: the --mode values it runs (Build.runnable) with what each runs, and its default
    run_modes: ClassVar[dict] = {"float": FLOAT_MODE}
    default_mode: ClassVar[str] = "float"
    # spk-report: what the report's activity is counted on, and the energy model priced without --energy-model
    report_description: ClassVar[str] = ""
    default_energy_model: ClassVar[str] = "cmos45"
    # spk-report: the key of the report section only this target fills (None: none). Every report holds the key of
    # each registered target's section, null unless that target ran in one of `report_section_modes`.
    report_section: ClassVar[str | None] = None
    report_section_modes: ClassVar[tuple] = ()
    # the ConversionOptions fields only this target reads; add_arguments gives each its flag
    option_fields: ClassVar[tuple] = ()
    # spk-parity --engine: the engines besides the simulator that run this target's network (name -> what it
    # runs; hw_backends.engines), handed out by check_engine and open_engine, their flags by add_engine_arguments
    engines: ClassVar[dict] = {}
    # the commands (program names) whose --target defaults to this target (default_target)
    default_for: ClassVar[tuple] = ()

    def compile(self, frontend: ir.Graph, options: ConversionOptions, progress: bool = False) -> CompiledNetwork:
        raise NotImplementedError

    def check_output(self, out_path) -> Path:
        """Fails (one line, before any work) when `out_path` cannot be written."""
        return check_output_path(out_path, self.output_kind)

    def export(self, build, out_path, model_info: dict) -> dict:
        """Write the artifacts of a hw_backends.conversion.Build atomically, recording `model_info`
        (Build.model_info); return a JSON-able summary (at least {"artifacts": [paths]})."""
        raise NotImplementedError

    def add_arguments(self, group) -> None:
        """The flags of `option_fields` (dest = the field) on `group` (an argparse argument group): every command's
        conversion options hold them, whichever target it runs."""

    def describe_artifacts(self, summary: dict) -> list[str]:
        """spk-convert's lines on what `export` wrote (its summary), printed after the IR's line."""
        return []

    def describe_build(self, summary: dict, out_path) -> list[str]:
        """spk-convert's lines on the target's own build choices, printed after the SSA lines."""
        return []

    def report_section_content(self, target: CompiledNetwork, graph: ir.Graph, spike_counts: dict, samples: int,
                               steps: int) -> dict:
        """The report section `report_section` of a run of `graph` (target.graph) in a mode of
        `report_section_modes`, from its per-neuron spike counts over `samples` samples of `steps` steps."""
        raise NotImplementedError

    def report_section_doc(self, section: dict, num) -> list[tuple]:
        """The filled report section as energy.md / report.html items (analysis.render): ("h2", title), ("p", text),
        ("table", header, rows); `num` formats a number as the rest of the report does."""
        return []

    def add_engine_arguments(self, group) -> None:
        """The flags of this target's `engines` on `group` (spk-parity's argument group for this target)."""

    def check_engine(self, engine: str, mode: str, args) -> None:
        """Fails (one line, before any work) unless this target has the engine `engine` and it runs `mode` with
        the flags in `args` (an argparse namespace)."""
        if engine not in self.engines:
            raise ModeError(f"--target {self.name} has no engine {engine!r}; it runs on "
                            + ", ".join(("sim",) + tuple(f"--engine {e}" for e in self.engines)))

    def open_engine(self, engine: str, network, args):
        """`network` (a Build's CompiledNetwork) opened on `engine` with the flags in `args`: a
        hw_backends.engines.HardwareEngine."""
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        """Fails (one line) when this target does not run `mode`."""
        if mode in self.run_modes:
            return
        if tuple(self.run_modes) == ("float",):
            raise ModeError(f"--target {self.name} has float semantics; use --mode float")
        raise ModeError(f"--target {self.name} runs --mode {' or '.join(self.run_modes)}, not {mode}")

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
    """Imports every target module once, the built-in ones and those of installed packages' entry points; one
    that fails is listed as unavailable, with the reason."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    loaders = [(module.split(".")[1], lambda m=module: importlib.import_module(m)) for module in TARGET_MODULES]
    loaders += [(ep.name, ep.load) for ep in importlib.metadata.entry_points(group=TARGET_ENTRY_POINTS)]
    for name, load in loaders:
        try:
            load()
        except Exception as e:  # noqa: BLE001 - a broken optional target must not take the others down
            if name not in _REGISTRY:
                _UNAVAILABLE[name] = f"{type(e).__name__}: {e}"


def list_backends() -> list[tuple[str, str]]:
    """[(name, description)] of every registered target, sorted by name."""
    _load_targets()
    return sorted((n, c.description) for n, c in _REGISTRY.items())


def backends() -> list[Backend]:
    """One instance of every registered target, sorted by name."""
    _load_targets()
    return [_REGISTRY[n]() for n in sorted(_REGISTRY)]


def run_modes() -> list[str]:
    """Every --mode some registered target runs, sorted."""
    return sorted({m for b in backends() for m in b.run_modes})


def default_target(command: str) -> str:
    """The target a command's --target defaults to: the registered target whose `default_for` names `command`."""
    names = [b.name for b in backends() if command in b.default_for]
    if len(names) != 1:
        raise RuntimeError(f"{command}: {len(names)} targets claim to be its default ({names}); exactly one must")
    return names[0]


def engine_names() -> list[str]:
    """Every --engine some registered target has, sorted."""
    return sorted({e for b in backends() for e in b.engines})


def targets_running(mode: str) -> list[str]:
    """The names of the registered targets that run `mode`, sorted."""
    return [b.name for b in backends() if mode in b.run_modes]


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
