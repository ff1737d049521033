"""One record type for what the Lava runtime and the fixed-point simulator produce on the same images, so that
the cross-check (analysis.lava_crosscheck) only compares: `RunRecords.of_lava` (a lava_run.LavaResult) and
`RunRecords.of_simulator` (a sim.engine result) give the same fields in the same layout, and `compare` counts
their differences exactly (integer against integer)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convert import ir
from hw_backends.loihi.lava_run import LavaResult


@dataclass
class RunRecords:
    """One engine's record of a run in logical time: spikes of every recorded population [T, B, *shape] (0/1
    spikes of a LIF population, integer payloads of a graded one), the readout's v at every logical step
    [T, B, n_out] and at the last one [B, n_out]."""
    spikes: dict
    readout_v_steps: np.ndarray
    readout_v: np.ndarray

    @classmethod
    def of_lava(cls, res: LavaResult) -> RunRecords:
        """From a run_lava result made with readout_steps=True."""
        return cls(res.spikes, res.readout_v_steps, res.readout_v)

    @classmethod
    def of_simulator(cls, sim, graph: ir.Graph, readout: str, populations: list[str]) -> RunRecords:
        """From sim.engine's result of a run that recorded `populations` and the readout."""
        steps = sim.records[readout]
        v = sim.outputs[graph.outputs()[0]]
        return cls({n: sim.records[n].numpy() for n in populations},
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
