"""Every conversion choice in one typed, immutable object, with one default each. `spk-convert`, `spk-parity`,
`spk-report` and Python users build the same network from the same options (hw_backends.conversion.convert).
The numbers are the user's choices; the hardware limits they must respect live with each back end."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ground.errors import check_positive_ints

SSA_FORMS = ("binary", "graded")           # how SSA's spike products are lowered (convert.passes)
SSA_CHOICES = ("auto",) + SSA_FORMS        # auto: the target's cheaper form (binary where it is the only one)
SSA_ORDERS = ("auto", "kv_first", "qk_first")
WEIGHTS_CHOICES = ("model", "ema")
WEIGHT_BITS_CHOICES = (8, 16)              # Loihi: one 8-bit synapse group, or a high and a low 8-bit part
DEFAULT_WEIGHT_BITS = 16
DEFAULT_VTH_MANT = 4096  # lambda * theta = 64 * 4096 + 1: 2**-18 theta resolution, |v| up to 32 theta
DEFAULT_INPUT_SCALE = 255  # 8-bit images; a checkpoint's data grid (dataset "value_grid") replaces it
DEFAULT_HW = "loihi2"      # the Loihi target's hardware profile (hardware/loihi/profiles.py knows the names)


class OptionsError(ValueError):
    pass


@dataclass(frozen=True)
class ConversionOptions:
    target: str = "nir"
    ssa: str = "auto"
    ssa_order: str = "auto"
    weight_bits: int = DEFAULT_WEIGHT_BITS
    vth_mant: int = DEFAULT_VTH_MANT
    input_scale: int | None = None  # None: the checkpoint's data grid, else DEFAULT_INPUT_SCALE
    preset: str | None = None       # architecture of a state dict (None: inferred, spikformer.architecture)
    heads: int | None = None        # --heads, --time-steps, --img-size: what a state dict's shapes do not say
    time_steps: int | None = None   # (None: not given; the checkpoint's args, a preset or the official default)
    img_size: int | None = None
    normalize: str | None = None    # --normalize: overrides the model's data config (None: not given)
    weights: str = "model"          # a training checkpoint's "state_dict" (as the official test script) or "ema"
    device: str = "cpu"             # where the checkpoint is loaded; the conversion runs in float64 on the CPU
    hw: str = DEFAULT_HW            # loihi: the hardware profile placed on (per-core limits, cores per chip)

    def __post_init__(self):
        if self.ssa not in SSA_CHOICES:
            raise OptionsError(f"unknown SSA form {self.ssa!r}; choose one of {', '.join(SSA_CHOICES)}")
        if self.ssa_order not in SSA_ORDERS:
            raise OptionsError(f"unknown SSA order {self.ssa_order!r}; choose one of {', '.join(SSA_ORDERS)}")
        if self.weights not in WEIGHTS_CHOICES:
            raise OptionsError(f"unknown weights {self.weights!r}; choose one of {', '.join(WEIGHTS_CHOICES)}")
        if self.weight_bits not in WEIGHT_BITS_CHOICES:
            raise OptionsError(f"weight bits must be one of {WEIGHT_BITS_CHOICES}, got {self.weight_bits!r}")
        check_positive_ints({"--heads": self.heads, "--time-steps": self.time_steps, "--img-size": self.img_size},
                            OptionsError)
        # vth_mant and input_scale are checked by the target that uses them, against its limits

    def with_(self, **changes) -> "ConversionOptions":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def recorded(self) -> dict:
        """What artifacts record as the conversion options (everything but the target, which they name apart)."""
        return {k: v for k, v in self.to_dict().items() if k != "target"}
