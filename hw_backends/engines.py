"""Engines other than the simulator that run a target's compiled network (`spk-parity --engine NAME`): the
interface a target's engine implements (a target hands engines out through Backend.engines, check_engine and
open_engine, base.py) and the record every engine returns, the simulator's included, so that the cross-check
(analysis/engine_crosscheck.py) only compares and names no target."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from convert import ir


def record_list(populations, readout: str, record) -> list[str]:
    """The populations to record: None (none), "all" (every one but the readout) or a list of names
    (ValueError naming those that are not populations)."""
    if record is None:
        return []
    if record == "all":
        return [p for p in populations if p != readout]
    bad = [r for r in record if r not in populations]
    if bad:
        raise ValueError(f"cannot record {bad}: not populations of the network")
    return list(record)


@dataclass
class RunRecords:
    """One engine's record of a run in logical time: spikes of every recorded population [T, B, *shape] (0/1
    spikes of a LIF population, integer payloads of a graded one), the readout's v at every logical step
    [T, B, n_out] (None where not asked for) and at the last one [B, n_out]."""
    spikes: dict
    readout_v_steps: np.ndarray | None
    readout_v: np.ndarray


class HardwareEngine:
    """A compiled network opened on one engine, ready to run batches. A subclass sets `name` (the --engine value),
    `label` (what reports call it) and `numeric` (the arithmetic of the network it runs) and implements `run`; `graph` is the network it runs (the one the
    simulator runs beside it), `populations` every population it can record (topological order, the readout
    included). `incidents`: what went wrong during its runs and was recovered from, each a dict with a one-line
    "what" (reported in parity.json, never hidden); `last_facts`: the engine's own figures of its last run
    (timing, process counts), JSON-able; `last_result`: its raw result of the last run."""
    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    numeric: ClassVar[str] = "loihi_fixed"  # the arithmetic the simulator runs `graph` in beside it

    def __init__(self, graph: ir.Graph, readout: str, populations: tuple):
        self.graph, self.readout, self.populations = graph, readout, tuple(populations)
        self.incidents: list[dict] = []
        self.last_facts: dict = {}
        self.last_result = None

    def record_list(self, record) -> list[str]:
        return record_list(self.populations, self.readout, record)

    def run(self, images: np.ndarray, record: list[str], readout_steps: bool = True,
            progress: bool = False) -> RunRecords:
        """`images` [B, ...] (the model's input layout) through the network; the populations `record` (and with
        `readout_steps` the readout's v at every logical step) recorded."""
        raise NotImplementedError
