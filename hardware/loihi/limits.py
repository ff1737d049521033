"""Loihi 2 limits and fixed-point ranges, each with its source. Violating a hard limit raises
`LoihiLimitError` naming the node, the limit, the value used and the value allowed."""
from __future__ import annotations

from dataclasses import dataclass

from .profiles import PROFILES

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

# --- Loihi 2 chip resources: the "loihi2" hardware profile (profiles.py; docs/limits.md, section 2, gives each
#     figure's source and status). The placement takes a profile; these names stay for code that needs Loihi 2's.
_L2 = PROFILES["loihi2"]
CORES_PER_CHIP = _L2.cores_per_chip                              # Loihi 2 neuro cores per chip (sourced)
NEURONS_PER_CORE = _L2.neurons_per_core                          # 2^20 neurons / 128 cores (derived upper bound)
SYNAPSES_PER_CHIP = 120_000_000                                  # Loihi 2: up to 120M synapses per chip (sourced)
SYNAPSE_MEMORY_BITS_PER_CORE = _L2.synapse_memory_bits_per_core  # 120M bits / 128 cores (assumption)
FAN_IN_AXONS_PER_CORE = _L2.input_axons_per_core                 # Loihi 1's figure (assumption)
FAN_OUT_AXONS_PER_CORE = _L2.output_axons_per_core               # Loihi 1's figure (assumption)
DELAY_BITS = _L2.max_delay_bits                                  # lava DelaySparse: delays up to 6 bits (0..63)
MAX_DELAY = 2 ** DELAY_BITS - 1

SOURCES = {
    "fixed_point": "lava-nc 0.10.0 PyLifModelBitAcc / PySparseModelBitAcc / weightutils",
    "chip": "hardware profiles (hardware/loihi/profiles.py, docs/limits.md section 2): loihi2 from Intel's "
            "Loihi 2 brief (2021) with the per-core figures it does not give derived or assumed, loihi1 from "
            "nengo-loihi 1.1.0 block.py",
    "delays": "lava-nc 0.10.0 PyDelaySparseModelBitAcc: 6-bit synaptic delays (0..63)",
}


class LoihiLimitError(ValueError):
    def __init__(self, node: str, limit: str, used, allowed, hint: str = ""):
        self.node, self.limit, self.used, self.allowed, self.hint = node, limit, used, allowed, hint
        super().__init__(f"{node}: {limit} exceeded: uses {used}, allowed {allowed}" + (f"; {hint}" if hint else ""))


@dataclass
class LimitWarning:
    node: str
    what: str
    detail: str

    def to_dict(self):
        return {"node": self.node, "what": self.what, "detail": self.detail}
