"""The spk-convert NIR file format: its identity (FORMAT, FORMAT_VERSION), its conventions, the threshold mapping
and the errors of its writer and reader (the mapping itself: ir_to_nir.py, nir_to_ir.py; files: nir_file.py).

The file follows NIR's semantics with its own time step, spike for spike with the PyTorch model (docs/nir.md):
- Time: one logical step of the model is dt = 1e-4 (graph metadata "dt"), the convention snntorch 1.0 hard-codes
  in its NIR import and export. LIF: tau = tau_model * dt, r = 1, v_leak = v_reset: forward Euler
  `v + (dt/tau) ((v_leak - v) + r I)` is SpikingJelly's `V + (X - (V - V_reset)) / tau_model`. I: r = 1/dt
  (v += I per step). Delay: steps * dt.
- Thresholds: NIR fires on v > threshold, the model on v >= threshold. Every LIF and Threshold stores the largest
  float32 below the model's threshold (`strict_threshold`): no float32 lies between the two, so for every float32
  value `v > stored` holds exactly when `v >= threshold` (proved over the values each layer can receive in
  tests/test_nir_io.py; the file runs spike for spike under a literal NIR executor in tests/test_nir_spec.py).
- Layout: token tensors (C, N) are stored as (C, Ht, Wt) on the patch grid they were flattened from (no Flatten
  node), so that the SSA's structured synapses need no grouped convolutions, which nir 1.0.8's type inference
  cannot type (`structured.py`). IR Conv1d layers over tokens become Conv2d (1x1, or the whole grid for the
  head's readout synapses).
- Input: x = pixel / 255 in [0, 1]. A model that normalises its input has the node 'input_norm' (a diagonal 1x1
  Conv2d, `ir_to_nir._input_norm`) after the Input, and the graph metadata's "input_convention" says so.
Node names are the IR names (PyTorch module paths); each NIR node's metadata holds `source` and `ir_type`.
"""
from __future__ import annotations

import numpy as np

from ground.errors import UserError

FORMAT = "spikformer-nir"
FORMAT_VERSION = 2
DT = 1e-4
TIME_CONVENTION = (
    "dt = 1e-4: one logical time step of the model is 1e-4 time units (snntorch's NIR convention); every edge "
    "delivers within the step (no per-hop latency); inputs are the analog image repeated at each of T steps "
    "(direct encoding); all state starts at zero for each sample; the readout is the I node 'head' after T steps")
LIF_MAPPING = (
    "NIR LIF tau*dv/dt = (v_leak - v) + r*I, forward Euler with step dt: v += (dt/tau)*((v_leak - v) + r*I), equals "
    "SpikingJelly's LIF (decay_input=True, hard reset) H = V + (X - (V - V_reset))/tau_model with "
    "tau = tau_model*dt, r = 1, v_leak = v_reset; reset to v_reset after a spike. I: r = 1/dt (v += I per step)")
THRESHOLD_CONVENTION = (
    "the model fires on v >= threshold, NIR on v > threshold: every LIF v_threshold and Threshold threshold is "
    "stored as the largest float32 below the model's value (no float32 lies between them), so NIR's strict "
    "comparison reproduces the model's ties; Threshold nodes are stateless per step")
LAYOUT_CONVENTION = (
    "token tensors (C, N) are stored as (C, Ht, Wt) on the patch grid (token n = h*Wt + w); the SSA's "
    "structured synapses are 1x1 Conv2d with 0/1 weights (no groups), whole-grid SumPool2d (token sums, and "
    "broadcasts with padding grid-1) and Scale nodes")
EVENT_INPUT_CONVENTION = (
    "event input: the Input node receives one frame per time step (spike counts per polarity and pixel, "
    "integrated from the event stream), not a repeated image; a count of k is k input spikes")

NORMALIZED_INPUT_CONVENTION = (
    "x = pixel / 255 in [0, 1] (raw, not normalised); the model's per-channel normalisation "
    "(x * 255 - mean255) / std255 is the node '{name}': a 1x1 Conv2d with weight 255 / std255 on the diagonal and "
    "bias -mean255 / std255 (mean255, std255: the model's float32 constants, in that node's metadata)")


class NIRExportError(UserError, ValueError):
    """The graph cannot be written as standard NIR (names the node)."""


class NIRReadError(UserError, ValueError):
    """A NIR file or graph that cannot be read back into the IR (one line)."""


def strict_threshold(value: float) -> np.float32:
    """The largest float32 below `value`: for every float32 x, `x > strict_threshold(v)` iff `x >= v`."""
    v32 = np.float32(value)
    if float(v32) != float(value):
        raise ValueError(f"threshold {value!r} is not a float32 number")
    return np.nextafter(v32, np.float32(-np.inf))


def model_threshold(stored) -> float:
    """Inverse of strict_threshold."""
    return float(np.nextafter(np.float32(stored), np.float32(np.inf)))


def one_line(e, n: int = 300) -> str:
    """An error's text on one line, cut after n characters."""
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + " ..."
