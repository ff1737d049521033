"""Loihi 2 limits and fixed-point ranges, each with its source. Violating a hard limit raises
`LoihiLimitError` naming the node, the limit, the value used and the value allowed."""
from __future__ import annotations

from dataclasses import dataclass

# --- fixed-point ranges of lava-nc 0.10.0's bit-accurate process models (lava/proc/lif/models.py,
#     lava/proc/sparse/models.py, lava/utils/weightutils.py)
WEIGHT_BITS = 8                      # weights: 8-bit mantissa (clip to [-256, 255] / [0, 255])
WEIGHT_MIXED_MIN, WEIGHT_MIXED_MAX = -256, 254  # mixed sign: lowest bit dropped -> even values only
WEIGHT_POS_MAX = 255                 # excitatory-only (all >= 0): [0, 255], no bit dropped
WEIGHT_EXP_MIN, WEIGHT_EXP_MAX = -8, 7   # weight exponent range used here (Loihi 2 synapse scaling)
DECAY_MAX = 4095                     # du, dv: unsigned 12 bit
VTH_MAX = 2 ** 17 - 1                # vth: unsigned 17 bit, compared as vth << 6
BIAS_MANT_MIN, BIAS_MANT_MAX = -4096, 4095  # bias_mant: signed 13 bit
BIAS_EXP_MAX = 7                     # bias_exp: unsigned 3 bit
STATE_BITS = 24
STATE_MAX = 2 ** 23 - 1              # u wraps, v saturates at 24 bit
ACTIVATION_MAX = 2 ** 15 - 1         # a_in is an int16 port on the LIF (16-bit synaptic input on chip)
GRADED_PAYLOAD_BITS = 16             # graded input spikes (the analog image): payload kept within 16 bits, far
                                     # inside the 24-bit signed graded message of lava's ports (precision 24)
GRADED_PAYLOAD_MAX = 2 ** GRADED_PAYLOAD_BITS - 1
ACT_SHIFT = VTH_SHIFT = 6

# --- Loihi 2 chip resources (Intel Loihi 2 brief, "Taking Neuromorphic Computing to the Next Level with
#     Loihi 2", 2021; docs/limits.md, section 2). Per-core figures for Loihi 2 are not all published; where
#     only Loihi 1 figures exist (nengo-loihi block.py) they are used and marked as such.
CORES_PER_CHIP = 128                 # Loihi 2 neuro cores per chip
NEURONS_PER_CORE = 8192              # Loihi 2: up to 8192 neurons per core
SYNAPSES_PER_CHIP = 120_000_000      # Loihi 2: about 120M synapses per chip
SYNAPSE_MEMORY_BITS_PER_CORE = SYNAPSES_PER_CHIP * WEIGHT_BITS // CORES_PER_CHIP  # derived, ~7.5 Mbit
FAN_IN_AXONS_PER_CORE = 4096         # Loihi 1 (nengo-loihi block.py): input axons per core
FAN_OUT_AXONS_PER_CORE = 4096        # Loihi 1 (nengo-loihi block.py): output axons per core
DELAY_BITS = 6                       # Loihi 2: synaptic delays up to 6 bits (0..63)
MAX_DELAY = 2 ** DELAY_BITS - 1

SOURCES = {
    "fixed_point": "lava-nc 0.10.0 PyLifModelBitAcc / PySparseModelBitAcc / weightutils",
    "chip": "Intel Loihi 2 brief (2021): 128 neuro cores, up to 8192 neurons per core, ~1M neurons and "
            "~120M synapses per chip, 6-bit synaptic delays",
    "axons": "Loihi 1 per-core axon limits (nengo-loihi block.py), used because Loihi 2 figures are unpublished",
}


class LoihiLimitError(ValueError):
    def __init__(self, node: str, limit: str, used, allowed):
        self.node, self.limit, self.used, self.allowed = node, limit, used, allowed
        super().__init__(f"{node}: {limit} exceeded: uses {used}, allowed {allowed}")


@dataclass
class LimitWarning:
    node: str
    what: str
    detail: str

    def to_dict(self):
        return {"node": self.node, "what": self.what, "detail": self.detail}
