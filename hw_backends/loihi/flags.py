"""The conversion flags only the Loihi target reads, in every command's conversion options (the fields of
convert.options.ConversionOptions they set, with its defaults), and spk-parity's flags of its engine `lava`."""
from __future__ import annotations

from convert.options import DEFAULT_INPUT_SCALE, WEIGHT_BITS_CHOICES, ConversionOptions
from hardware.loihi.profiles import PROFILES

OPTION_FIELDS = ("weight_bits", "vth_mant", "input_scale", "hw")

DEFAULTS = ConversionOptions()


def add_loihi_arguments(g) -> None:
    """--weight-bits, --vth-mant, --input-scale and --hw on the argparse group `g`."""
    g.add_argument("--weight-bits", type=int, default=DEFAULTS.weight_bits, choices=WEIGHT_BITS_CHOICES,
                   help="loihi: 16 carries each dense weight in two 8-bit synapse groups (high and low part, more "
                        f"synapses, near-float accuracy); 8 uses one group (default {DEFAULTS.weight_bits})")
    g.add_argument("--vth-mant", type=int, default=DEFAULTS.vth_mant,
                   help="loihi: threshold mantissa of LIF layers; sets the fixed-point scale lambda = (64 vth + 1) / "
                        f"theta (default {DEFAULTS.vth_mant})")
    g.add_argument("--input-scale", type=int, default=DEFAULTS.input_scale,
                   help="loihi: graded input payload = round(x * SCALE) for x in [0, 1] (default: the training data's "
                        f"exact grid recorded in the checkpoint, e.g. 256 for the digits at 16x16, else "
                        f"{DEFAULT_INPUT_SCALE})")
    g.add_argument("--hw", default=DEFAULTS.hw, choices=sorted(PROFILES),
                   help="loihi: the hardware profile the network is placed on, every per-core limit obeyed "
                        "(compartments, synapse memory, input and output axons; docs/limits.md): loihi1 "
                        "(nengo-loihi's figures) or loihi2 (Intel's chip figures, unpublished per-core figures "
                        f"assumed) (default {DEFAULTS.hw})")


def add_engine_arguments(g) -> None:
    """spk-parity's flags of the engine `lava` on the argparse group `g`."""
    g.add_argument("--lava-timeout", type=float, default=600.0,
                   help="seconds a Lava run may take before it is killed (--engine lava; default 600)")
    g.add_argument("--lava-retries", type=int, default=1,
                   help="fresh Lava runs after a timeout (lava-nc's runtime occasionally hangs; each timeout is "
                        "reported in parity.json; default 1)")
