"""One way to open a Loihi network for running: `open_network(source)` turns an export directory, a Loihi
CompiledNetwork, a conversion Build or a (graph, schedule) pair into a `RunnableNetwork`, checked once: its matrices
are small enough to build for Lava (lava_matrices.check_matrix_sizes, before any matrix is built) and its
populations and readout are found. The Lava runner (lava_run.run_lava) and the analysis' simulator runner
(lava_engine.LavaEngine, which analysis.engine_crosscheck runs) both start from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from convert import ir

from ..base import CompiledNetwork
from ..conversion import Build
from ..engines import record_list
from .lava_conventions import populations, readout_population
from .lava_matrices import DEFAULT_MAX_MATRIX_ENTRIES, check_matrix_sizes
from .network_file import read_export


@dataclass(frozen=True)
class RunnableNetwork:
    """A quantised, timed network whose Lava matrices fit the build limit, with its populations (topological
    order) and readout."""
    graph: ir.Graph
    schedule: dict
    populations: tuple
    readout: str

    def record_list(self, record) -> list[str]:
        return record_list(self.populations, self.readout, record)


def load_export(export_dir) -> tuple[ir.Graph, dict]:
    """(quantised graph, timing schedule) from an export directory (network.h5), checked against its
    manifest.json (network_file.read_export: every listed file present with its sha256); NetworkFileError
    otherwise."""
    return read_export(export_dir)


def open_network(source, max_matrix_entries: int = DEFAULT_MAX_MATRIX_ENTRIES) -> RunnableNetwork:
    """`source`: an export directory (str or path), a CompiledNetwork (with a schedule: the Loihi target), a
    conversion Build of the Loihi target, a (graph, schedule) pair, or a RunnableNetwork (returned as it is).
    Raises LavaGraphError for a network too big to build for Lava, or without one readout population."""
    if isinstance(source, RunnableNetwork):
        return source
    if isinstance(source, (str, os.PathLike)):
        graph, schedule = load_export(source)
    elif isinstance(source, Build):
        graph, schedule = source.target.graph, source.target.schedule
    elif isinstance(source, CompiledNetwork):
        graph, schedule = source.graph, source.schedule
    elif isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], ir.Graph):
        graph, schedule = source
    else:
        raise TypeError(f"cannot run {type(source).__name__}: an export directory, a Loihi build or a "
                        f"(graph, schedule) pair is needed")
    if schedule is None:
        raise TypeError("the build has no timing schedule (only a Loihi build runs on Lava)")
    check_matrix_sizes(graph, schedule, max_matrix_entries)  # refuse big networks before any matrix or Lava
    return RunnableNetwork(graph, schedule, tuple(populations(graph)), readout_population(graph))
