"""The graded neurons of the IR are lava's: `GradedNeuron` is lava-nc's GradedVec (emits v where |v| > vth) and
`GradedRelu` is its GradedReluVec (emits v where v > vth), both memoryless. lava-nc itself is the referee: its
fixed-point process models run on integer payloads (a RingBuffer source through an identity Dense with 24-bit
messages) in a subprocess, and the IR's float kernels (convert/kernels.py) must give the same values."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from convert import ir, kernels

LAVA_RUN = r"""
import json, sys
import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense
from lava.proc.graded.process import GradedReluVec, GradedVec
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source

x, vth = np.array(json.loads(sys.argv[1]), dtype=np.int32), int(sys.argv[2])
n, steps = x.shape
src = Source(data=x)
out = {}
procs = {"GradedVec": GradedVec, "GradedReluVec": GradedReluVec}
sinks = {}
for name, cls in procs.items():
    dense = Dense(weights=np.eye(n, dtype=np.int32), num_message_bits=24)
    neuron = cls(shape=(n,), vth=vth)
    sink = Sink(shape=(n,), buffer=steps + 2)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(neuron.a_in)
    neuron.s_out.connect(sink.a_in)
    sinks[name] = sink
src.run(condition=RunSteps(num_steps=steps + 2), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
out = {name: sink.data.get().astype(int).tolist() for name, sink in sinks.items()}
src.stop()
print(json.dumps(out))
"""


def _lava(x: np.ndarray, vth: int) -> dict:
    p = subprocess.run([sys.executable, "-c", LAVA_RUN, json.dumps(x.tolist()), str(vth)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return {k: np.array(v) for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.parametrize("vth", [0, 3])
def test_the_graded_kernels_are_lavas_graded_neurons(vth):
    rng = np.random.default_rng(vth)
    x = rng.integers(-9, 10, size=(16, 5))
    x[:4, 0] = [0, vth, -vth, vth + 1]  # the edges of both rules
    got = _lava(x, vth)
    t = torch.tensor(x.T, dtype=torch.float64)  # [steps, n]
    ours = {"GradedVec": kernels.step(ir.GradedNeuron("g", vth=float(vth)), {"in": t}, {}, kernels.ParamCache(), 0),
            "GradedReluVec": kernels.step(ir.GradedRelu("r", vth=float(vth)), {"in": t}, {}, kernels.ParamCache(), 0)}
    for name, theirs in got.items():
        # the source sends step t's column at t; the Dense delivers it one step later
        lag = next(k for k in range(theirs.shape[1] - x.shape[1] + 1)
                   if np.array_equal(theirs[:, k:k + x.shape[1]], ours[name].numpy().T))
        assert lag == 1, name
    assert not np.array_equal(ours["GradedVec"].numpy(), ours["GradedReluVec"].numpy())  # the two rules differ here
