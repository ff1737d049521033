"""The Loihi target's engine `lava` (`spk-parity --target loihi --engine lava`): the export run on lava-nc's
bit-accurate CPU models (lava_run.run_lava, an isolated process per run), started afresh after a timeout up to
`retries` times (lava-nc's runtime occasionally hangs, README "Parity"; every timeout is kept as an incident)."""
from __future__ import annotations

import numpy as np

from ..engines import HardwareEngine, RunRecords
from .lava_conventions import LavaTimeoutError
from .lava_run import run_lava
from .runnable import open_network


class LavaEngine(HardwareEngine):
    name = "lava"
    label = "Lava"

    def __init__(self, network, timeout_s: float = 600.0, retries: int = 1, pin_models: bool = True):
        """`network`: what runnable.open_network opens (a Loihi build, an export directory, a (graph, schedule)
        pair); opened, its sizes checked and its populations found once, here, before any Lava run."""
        net = open_network(network)
        super().__init__(net.graph, net.readout, net.populations)
        self.network, self.schedule = net, net.schedule
        self.timeout_s, self.retries, self.pin_models = timeout_s, retries, pin_models

    def run(self, images, record, readout_steps: bool = True, progress: bool = False) -> RunRecords:
        x = np.asarray(images, dtype=np.float64)
        for attempt in range(self.retries + 1):
            try:
                res = run_lava(self.network, x, record=record, timeout_s=self.timeout_s, progress=progress,
                               pin_models=self.pin_models, readout_steps=readout_steps)
                break
            except LavaTimeoutError as e:
                again = attempt < self.retries
                self.incidents.append({
                    "samples": int(x.shape[0]), "timeout_s": self.timeout_s, "error": str(e), "restarted": again,
                    "what": f"a Lava run of {x.shape[0]} samples timed out after {self.timeout_s:.0f} s"
                            + (" and was started again (lava-nc's runtime occasionally hangs)" if again else "")})
                if not again:
                    raise
        self.last_result = res
        self.last_facts = {"timing": res.timing, "network": res.network}
        return RunRecords(res.spikes, res.readout_v_steps, res.readout_v)
