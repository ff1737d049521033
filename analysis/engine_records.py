"""The simulator's run as the record type every engine returns (hw_backends.engines.RunRecords), and the exact
comparison of two such records (integer against integer), so that the cross-check (analysis.engine_crosscheck)
only compares."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convert import ir
from hw_backends.engines import RunRecords


def simulator_records(sim, graph: ir.Graph, readout: str, populations: list[str]) -> RunRecords:
    """From sim.engine's result of a run that recorded `populations` and the readout."""
    steps = sim.records[readout]
    v = sim.outputs[graph.outputs()[0]]
    return RunRecords({n: sim.records[n].numpy() for n in populations},
                      steps.reshape(steps.shape[0], steps.shape[1], -1).numpy(), v.reshape(v.shape[0], -1).numpy())


@dataclass
class Differences:
    spike_mismatches: dict        # population -> differing spikes (graded: payloads)
    spikes_compared: int
    readout_step_mismatches: int  # readout v at every logical step
    readout_mismatches: int       # readout v at the last logical step
    readout_max_abs_diff: float
    prediction_differences: int   # argmax of the readout v at the last logical step


def compare(a: RunRecords, b: RunRecords) -> Differences:
    """Exact differences between two records of the same run (the populations of `b`)."""
    return Differences(
        spike_mismatches={n: int((a.spikes[n] != s).sum()) for n, s in b.spikes.items()},
        spikes_compared=int(sum(s.size for s in b.spikes.values())),
        readout_step_mismatches=int((a.readout_v_steps != b.readout_v_steps).sum()),
        readout_mismatches=int((a.readout_v != b.readout_v).sum()),
        readout_max_abs_diff=float(np.abs(a.readout_v - b.readout_v).max()),
        prediction_differences=int((a.readout_v.argmax(1) != b.readout_v.argmax(1)).sum()))
